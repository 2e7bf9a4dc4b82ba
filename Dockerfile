# GPU image for megatron-hope: training (hope-pretrain), the frequency table (hope-rope), tests.
#
#   docker build -t megatron-hope .
#   docker run --gpus all --rm -it --ipc=host -v /data:/data megatron-hope \
#       bash examples/125m/pretrain_torchrun.sh
#   enroot import dockerd://megatron-hope   # -> megatron-hope.sqsh for Slurm + pyxis
#
# Base: NGC PyTorch 25.12 (PyTorch 2.10, CUDA 13.1, Python 3.12; needs an R580+ driver). Any
# recent tag works (--build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:YY.MM-py3); pick an older one
# for older drivers. NVIDIA's Transformer Engine and apex come preinstalled and built against the
# image's own torch/CUDA: they are NOT pip-installed here. (PyPI's `apex` is an unrelated package,
# and transformer-engine's torch extension only builds where CUDA is present.)
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.12-py3
FROM ${BASE_IMAGE}

# NGC images (25.03+) pin their packages in /etc/pip/constraint.txt; --no-deps keeps pip
# from touching the image's torch/numpy. megatron-core itself needs only torch, numpy, packaging,
# all in the image; Python 3.12 resolves 0.19.x inside our tested range.
RUN pip install --no-cache-dir --no-deps "megatron-core>=0.16.1,<0.20" \
 && pip install --no-cache-dir psutil tensorboard tqdm tokenizers safetensors nltk "transformers>=5" \
        zstandard orjson gigatoken sentencepiece matplotlib

WORKDIR /workspace/megatron-hope
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && hope-rope --kv-channels 64 --hope-train-length 512 --json > /dev/null

# No ENTRYPOINT/CMD of our own: the NGC entrypoint runs whatever command is given (bash by
# default), so the same image serves torchrun, srun (pyxis) and interactive use.
