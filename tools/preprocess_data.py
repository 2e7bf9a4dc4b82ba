"""Megatron-LM's `tools/preprocess_data.py`, same flags, resumable and parallel: see
`megatron_hope/data/cli.py`.

    python tools/preprocess_data.py --input /data/redpajama --output-prefix /data/rp/redpajama \
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model tokenizer.json \
        --append-eod --workers 16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from megatron_hope.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
