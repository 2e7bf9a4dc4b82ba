"""Convert checkpoints between Megatron (hope-pretrain) and HuggingFace; see `hope-convert -h`.

    python tools/convert_checkpoint.py --load-dir runs/hope/checkpoints --save-dir runs/hope/hf
    python tools/convert_checkpoint.py --load-dir runs/hope/checkpoints --save-dir hf-phi3 \
        --target phi3
    python tools/convert_checkpoint.py --from-hf --load-dir runs/hope/hf --save-dir runs/hope/mc
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_hope.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
