#!/usr/bin/env bash
# Build the wheelhouse that benchmarks/gpu_acceptance.sh installs on a GPU machine without network.
#
#   bash benchmarks/build_gpu_wheelhouse.sh            # on a machine that reaches PyPI
#   -> .gpu-wheelhouse/ (ignored by git; the `device` tool's `carry` takes it along)
#
# The lent GPU machine (../shared/FACTS.md) has Python 3.12, torch 2.11 (cu130), transformers,
# tokenizers, safetensors, sentencepiece, tensorboard, tqdm, matplotlib, psutil and pytest. What
# megatron-hope needs beyond that is downloaded here as manylinux/py3 wheels for Python 3.12,
# without dependencies (the ones that machine already has would only add weight). The whole
# folder must stay under 60 MiB: one `carry` moves at most 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.gpu-wheelhouse}
PYTHON=${PYTHON:-python3}
LIMIT_MIB=60
# megatron-core 0.19.x is the release line of the Python 3.12 lane; the rest are megatron-hope's
# requirements (setup.py) and their own, minus what the GPU machine has.
PACKAGES=(
  "megatron-core>=0.19,<0.20"
  nltk regex joblib click
  orjson zstandard
  gigatoken awkward awkward-cpp typer shellingham rich markdown-it-py mdurl pygments
  pytest-timeout
)
rm -rf "$OUT.partial"
mkdir -p "$OUT.partial"
"$PYTHON" -m pip download -q --only-binary :all: --no-deps --python-version 3.12 \
  --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$OUT.partial" "${PACKAGES[@]}"
size_kib=$(du -sk "$OUT.partial" | cut -f1)
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "wheelhouse is $((size_kib / 1024)) MiB, over the ${LIMIT_MIB} MiB a carry allows" >&2
  exit 1
fi
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"  # whole or absent: never a half-downloaded folder under the real name
echo "wheelhouse $OUT: $(ls "$OUT" | wc -l) wheels, $((size_kib / 1024)) MiB"
ls "$OUT"
