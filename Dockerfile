# GPU image for megatron-hope: training (hope-pretrain, or Megatron-LM's own loop through
# tools/pretrain_hope_gpt.py), the frequency table (hope-rope), tests.
#
#   docker build -t megatron-hope .
#   docker run --gpus all --rm -it --ipc=host -v /data:/data \
#       -v "$PWD/runs:/workspace/megatron-hope/runs" megatron-hope \
#       bash examples/125m/pretrain_torchrun.sh           # checkpoints outlive the container
#   # Megatron-LM's own loop (pretrain(), its forward_step and datasets) with HoPE: the image
#   # holds the Megatron-LM tag that pairs with its megatron-core (MEGATRON_LM_PATH=/opt/megatron-lm)
#   docker run --gpus all --rm -it --ipc=host -v /data:/data \
#       -v "$PWD/runs:/workspace/megatron-hope/runs" megatron-hope \
#       torchrun --nproc-per-node 8 tools/pretrain_hope_gpt.py \
#       --position-embedding-type hope --hope-train-length 4096 <your pretrain_gpt.py flags>
#   # (or: ... megatron-hope bash examples/125m/pretrain_megatron_lm.sh, with DATA_BLEND_FILE and
#   #  TOKENIZER_MODEL passed by -e; examples/README.md)
#   docker run --rm megatron-hope python -m pytest -q tests/test_examples_megatron_lm.py
#   #  (the examples' commands through this Megatron-LM's parser and validate_args; no GPU needed)
#   enroot import dockerd://megatron-hope   # -> megatron-hope.sqsh for Slurm + pyxis
#                                           #    (CONTAINER_IMAGE in the sbatch examples)
#
# Base: NGC PyTorch 25.12 (PyTorch 2.10, CUDA 13.1, Python 3.12). The base tag must match the
# cluster's driver: every NGC release is built on one CUDA version, and 25.12's CUDA 13.1 needs an
# R580 or newer driver. `nvidia-smi` on a compute node prints the driver and the newest CUDA it
# supports; pick a tag whose CUDA is not newer (NGC's PyTorch release notes list each tag's CUDA
# and driver) and pass it: --build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:YY.MM-py3. Any 25.xx tag
# has Python 3.12 and so megatron-core 0.19.x. NVIDIA's Transformer Engine and apex come
# preinstalled and built against the image's own torch/CUDA: they are NOT pip-installed here.
# (PyPI's `apex` is an unrelated package, and transformer-engine's torch extension only builds
# where CUDA is present.)
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.12-py3
FROM ${BASE_IMAGE}

# Megatron-LM's training loop (`megatron/training`, `pretrain_gpt.py`, `gpt_builders.py`) comes
# from a Megatron-LM tag; megatron-core from PyPI, in the release line the tag was cut from:
# core_vX.Y.Z <-> megatron-core X.Y.* (the pin below is derived from the tag, so the two change
# together: --build-arg MEGATRON_LM_REF=core_v0.16.1 would need a Python 3.11 base, every
# megatron-core from 0.17 on requires 3.12). Tested pairs: TESTED_TAGS in
# megatron_hope/integrations/launcher.py; tests/test_dockerfile.py checks this file against it.
ARG MEGATRON_LM_REF=core_v0.19.0

# NGC images (25.03+) set PIP_CONSTRAINT=/etc/pip/constraint.txt, which pins every package the
# image was built with. We need transformers>=5 (rope type "proportional" for the Llama export,
# see README), whose huggingface-hub/tokenizers/safetensors may be newer than the pins: left as
# they are, pip refuses to resolve. NVIDIA's release notes say to remove the constraints of the
# packages one wants to replace, and that is all we do: the HuggingFace stack's lines go, every
# other pin (torch, numpy, Transformer Engine, apex, NCCL bindings...) stays in force for our
# install (Megatron-LM's CI image clears PIP_CONSTRAINT altogether). The build then checks that
# torch is still the image's own.
# megatron-core itself needs only torch, numpy, packaging (all in the image): --no-deps keeps
# pip from touching them. Megatron-LM's loop adds pyyaml (megatron.core.quantization) and, on
# rank 0 at start-up, `make` of the dataset helpers (pybind11; see the Makefile step below).
RUN set -eux; \
    mcore_series="${MEGATRON_LM_REF#core_v}"; mcore_series="${mcore_series%.*}"; \
    torch_before="$(python -c 'import torch; print(torch.__version__)')"; \
    { grep -viE '^(transformers|tokenizers|huggingface[-_]hub|safetensors|hf[-_]xet)([^a-z0-9_-]|$)' \
        "${PIP_CONSTRAINT:-/dev/null}" || true; } > /tmp/hope-constraints.txt; \
    export PIP_CONSTRAINT=/tmp/hope-constraints.txt; \
    pip install --no-cache-dir --no-deps "megatron-core==${mcore_series}.*"; \
    pip install --no-cache-dir psutil tensorboard tqdm tokenizers safetensors nltk "transformers>=5" \
        zstandard orjson gigatoken sentencepiece matplotlib pyyaml pybind11; \
    test "$(python -c 'import torch; print(torch.__version__)')" = "${torch_before}"

# The Megatron-LM checkout, shallow, at the tag (the network exists at build time only).
# Megatron-LM's initialize makes rank 0 run `make -C <megatron/core/datasets>` of the megatron-core
# it imports (ours, from the wheel: tools/pretrain_hope_gpt.py imports it before the checkout).
# The wheel ships the helpers compiled but not their Makefile, so make would fail and stop the
# run: the tag's Makefile goes beside them, and the build runs that same make (it finds the
# helpers up to date, or rebuilds them with this image's compiler), so a run never compiles.
RUN set -eux; \
    git clone --depth 1 --branch "${MEGATRON_LM_REF}" https://github.com/NVIDIA/Megatron-LM \
        /opt/megatron-lm; \
    git -C /opt/megatron-lm log -1 --format="Megatron-LM ${MEGATRON_LM_REF} at %H"; \
    datasets="$(python -c 'import os, megatron.core.datasets as d; print(os.path.dirname(d.__file__))')"; \
    cp /opt/megatron-lm/megatron/core/datasets/Makefile "${datasets}/Makefile"
ENV MEGATRON_LM_PATH=/opt/megatron-lm

WORKDIR /workspace/megatron-hope
COPY . .
# Smoke test of what a training job imports: megatron-core and the training loop (not only the
# rope CLI), then the console scripts the examples launch. Run from / so that the installed
# package is imported, not this copy of the sources. Then Megatron-LM's loop as
# tools/pretrain_hope_gpt.py meets it: the launcher finds the checkout through MEGATRON_LM_PATH,
# megatron.training and pretrain_gpt.py come from there (not from the wheel, which carries its
# own megatron/training since 0.19), megatron-core's release line is the tag's, and rank 0's
# `make` of the dataset helpers succeeds. No GPU needed. (`pretrain_hope_gpt.py --help` is no
# test: core_v0.19.0's own help text has a stray "%" and argparse raises on printing it.)
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && cd / \
 && python -c "import megatron.core, megatron_hope.training.loop, megatron_hope.training.cli; \
import megatron_hope, transformers; assert '/workspace/' not in megatron_hope.__file__, \
megatron_hope.__file__; print('megatron-core', megatron.core.__version__, \
'transformers', transformers.__version__)" \
 && hope-pretrain --help > /dev/null \
 && hope-preprocess --help > /dev/null \
 && hope-rope --kv-channels 64 --hope-train-length 512 --json > /dev/null \
 && python -c "import sys, megatron.core; from megatron_hope.integrations import launcher; \
folder = launcher.find_megatron_lm(None); sys.path.insert(0, str(folder)); \
import megatron.training.training, pretrain_gpt, gpt_builders, model_provider; \
assert megatron.training.__file__.startswith(str(folder)), megatron.training.__file__; \
series = '.'.join(megatron.core.__version__.split('.')[:2]); \
assert '${MEGATRON_LM_REF}'.startswith('core_v' + series + '.'), (series, '${MEGATRON_LM_REF}'); \
from megatron.core.datasets.utils import compile_helpers; compile_helpers(); \
print('Megatron-LM', folder, 'with megatron-core', megatron.core.__version__, \
'(tested pair)' if launcher.TESTED_TAGS.get(series) == '${MEGATRON_LM_REF}' else '(untested pair)')"

# No ENTRYPOINT/CMD of our own: the NGC entrypoint runs whatever command is given (bash by
# default), so the same image serves torchrun, srun (pyxis) and interactive use.
