#!/usr/bin/env bash
# HoPE 125M (arXiv 2410.21216, Appendix A Table 6) on ONE node with 8 GPUs, launched by torchrun.
#
# How to run (from the repository root, inside the GPU image, see Dockerfile):
#   1. Set DATA_PATH and TOKENIZER_MODEL below (or export them) to your .bin/.idx prefixes and a
#      Llama tokenizer directory (32,000 tokens, as in the paper).
#   2. HoPE:        bash examples/125m/pretrain_torchrun.sh
#      RoPE twin:   POSITION_EMBEDDING_TYPE=rope bash examples/125m/pretrain_torchrun.sh
#      Ablations:   POSITION_EMBEDDING_TYPE=ab1 (or ab2, ab3, none) bash examples/125m/...
#   3. Fewer GPUs:  GPUS_PER_NODE=4 bash examples/125m/pretrain_torchrun.sh  (same global batch
#      512: the loop accumulates gradients; same numbers, more time).
#   Re-running the same command resumes from $RUN_DIR/checkpoints.
#
# Paper: 12 layers, 12 heads, hidden 768 (head dim d = 64), FFN 2688, sequence 512,
# batch 64 x 8 = 512, 50k iterations, AdamW (0.9, 0.999), lr 3e-4, 2000 warm-up, clip 1.0,
# dropout 0, bf16. With d = 64, b = 1e4, L = 512 HoPE rotates 16 of 32 pairs:
#   hope-rope --kv-channels 64 --hope-train-length 512
set -euo pipefail

# ---- what to change ----------------------------------------------------------------------------
POSITION_EMBEDDING_TYPE="${POSITION_EMBEDDING_TYPE:-hope}"  # hope | rope (the twin) | ab1..ab3 | none
# Blend "W1 PREFIX1 W2 PREFIX2 ...", prefixes without .bin/.idx (tools/preprocess_data.py output).
DATA_PATH="${DATA_PATH:-1.0 /REPLACE/ME/redpajama/arxiv_text_document}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-/REPLACE/ME/llama-tokenizer}"  # HF Llama tokenizer dir
RUN_DIR="${RUN_DIR:-runs/125m-${POSITION_EMBEDDING_TYPE}}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
TRANSFORMER_IMPL="${TRANSFORMER_IMPL:-transformer_engine}"  # or local (no TE needed)
# -------------------------------------------------------------------------------------------------

SEQ_LENGTH=512
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-64}"  # paper: 64 per GPU x 8 GPUs = 512

if [[ "${DATA_PATH} ${TOKENIZER_MODEL}" == *REPLACE/ME* ]]; then
    echo "Set DATA_PATH and TOKENIZER_MODEL at the top of $0 (or export them)." >&2
    exit 1
fi

# HoPE and its ablations take the training length L of eq. 6 (= --seq-length, said explicitly).
HOPE_ARGS=()
case "${POSITION_EMBEDDING_TYPE}" in
    hope | ab1 | ab2 | ab3) HOPE_ARGS=(--hope-train-length "${SEQ_LENGTH}") ;;
esac

ARGS=(
    # Model: Llama-style (SwiGLU, RMSNorm, no biases, untied embeddings), Table 6's 125M column.
    --num-layers 12 --hidden-size 768 --ffn-hidden-size 2688 --num-attention-heads 12
    --seq-length "${SEQ_LENGTH}" --max-position-embeddings "${SEQ_LENGTH}"
    --swiglu --normalization RMSNorm --disable-bias-linear --untie-embeddings-and-output-weights
    --init-method-std 0.02
    --position-embedding-type "${POSITION_EMBEDDING_TYPE}" --rotary-base 10000 "${HOPE_ARGS[@]}"
    # Optimisation: Appendix A. min-lr, cosine decay and weight decay are not in the paper.
    --micro-batch-size "${MICRO_BATCH_SIZE}" --global-batch-size 512 --train-iters 50000
    --lr 3e-4 --min-lr 3e-5 --lr-decay-style cosine --lr-warmup-iters 2000
    --adam-beta1 0.9 --adam-beta2 0.999 --weight-decay 0.1 --clip-grad 1.0
    --bf16 --transformer-impl "${TRANSFORMER_IMPL}" --seed 1234
    # Data
    --data-path ${DATA_PATH} --split 969,30,1  # unquoted on purpose: the blend is several words
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model "${TOKENIZER_MODEL}"
    # Checkpoints and logs
    --save "${RUN_DIR}/checkpoints" --load "${RUN_DIR}/checkpoints" --save-interval 1000
    --eval-interval 1000 --eval-iters 20 --log-interval 10
    --tensorboard-dir "${RUN_DIR}/tensorboard"
)

mkdir -p "${RUN_DIR}"
export CUDA_DEVICE_MAX_CONNECTIONS=1
torchrun --standalone --nnodes 1 --nproc-per-node "${GPUS_PER_NODE}" \
    -m megatron_hope.training.cli "${ARGS[@]}" 2>&1 | tee -a "${RUN_DIR}/train.log"
