"""Train a byte-level BPE `tokenizer.json` on JSONL / RedPajama: see `megatron_hope/data/cli.py`.

    python tools/train_tokenizer.py --input /data/redpajama/arxiv --vocab-size 32000 --output tok/
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from megatron_hope.data.cli import train_tokenizer_main

if __name__ == "__main__":
    sys.exit(train_tokenizer_main())
