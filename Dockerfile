# GPU image for megatron-hope: training (hope-pretrain), the frequency table (hope-rope), tests.
#
#   docker build -t megatron-hope .
#   docker run --gpus all --rm -it --ipc=host -v /data:/data \
#       -v "$PWD/runs:/workspace/megatron-hope/runs" megatron-hope \
#       bash examples/125m/pretrain_torchrun.sh           # checkpoints outlive the container
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

# NGC images (25.03+) set PIP_CONSTRAINT=/etc/pip/constraint.txt, which pins every package the
# image was built with. We need transformers>=5 (rope type "proportional" for the Llama export,
# see README), whose huggingface-hub/tokenizers/safetensors may be newer than the pins: left as
# they are, pip refuses to resolve. NVIDIA's release notes say to remove the constraints of the
# packages one wants to replace, and that is all we do: the HuggingFace stack's lines go, every
# other pin (torch, numpy, Transformer Engine, apex, NCCL bindings...) stays in force for our
# install (Megatron-LM's CI image clears PIP_CONSTRAINT altogether). The build then checks that
# torch is still the image's own.
# megatron-core itself needs only torch, numpy, packaging (all in the image): --no-deps keeps
# pip from touching them; Python 3.12 resolves 0.19.x inside our tested range.
RUN set -eux; \
    torch_before="$(python -c 'import torch; print(torch.__version__)')"; \
    { grep -viE '^(transformers|tokenizers|huggingface[-_]hub|safetensors|hf[-_]xet)([^a-z0-9_-]|$)' \
        "${PIP_CONSTRAINT:-/dev/null}" || true; } > /tmp/hope-constraints.txt; \
    export PIP_CONSTRAINT=/tmp/hope-constraints.txt; \
    pip install --no-cache-dir --no-deps "megatron-core>=0.16.1,<0.20"; \
    pip install --no-cache-dir psutil tensorboard tqdm tokenizers safetensors nltk "transformers>=5" \
        zstandard orjson gigatoken sentencepiece matplotlib; \
    test "$(python -c 'import torch; print(torch.__version__)')" = "${torch_before}"

WORKDIR /workspace/megatron-hope
COPY . .
# Smoke test of what a training job imports: megatron-core and the training loop (not only the
# rope CLI), then the console scripts the examples launch. Run from / so that the installed
# package is imported, not this copy of the sources.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && cd / \
 && python -c "import megatron.core, megatron_hope.training.loop, megatron_hope.training.cli; \
import megatron_hope, transformers; assert '/workspace/' not in megatron_hope.__file__, \
megatron_hope.__file__; print('megatron-core', megatron.core.__version__, \
'transformers', transformers.__version__)" \
 && hope-pretrain --help > /dev/null \
 && hope-preprocess --help > /dev/null \
 && hope-rope --kv-channels 64 --hope-train-length 512 --json > /dev/null

# No ENTRYPOINT/CMD of our own: the NGC entrypoint runs whatever command is given (bash by
# default), so the same image serves torchrun, srun (pyxis) and interactive use.
