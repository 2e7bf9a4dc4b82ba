#!/usr/bin/env bash
# HoPE 3B (arXiv 2410.21216, Appendix A Table 6) on ONE node with 8 GPUs, launched by torchrun.
# The paper used 256 A100s (see pretrain_slurm.sbatch); one node keeps the paper's global batch of
# 512 sequences x 8192 tokens by accumulating 64 micro-batches per step, so it is ~32x slower per
# iteration: use it to check memory and throughput before the Slurm run, or lower --train-iters.
#
# How to run (from the repository root, inside the GPU image, see Dockerfile):
#   1. Set DATA_PATH and TOKENIZER_MODEL below (or export them).
#   2. HoPE:       bash examples/3b/pretrain_torchrun.sh
#      RoPE twin:  POSITION_EMBEDDING_TYPE=rope bash examples/3b/pretrain_torchrun.sh
#   3. Short trial: EXIT_INTERVAL=50 bash examples/3b/pretrain_torchrun.sh (stops after 50 steps).
#   Re-running the same command resumes from $RUN_DIR/checkpoints.
#
# Paper: 34 layers, 16 heads, hidden 2048 (head dim d = 128), FFN 8704, sequence 8192,
# batch 2 x 256 = 512, 120k iterations, AdamW (0.9, 0.999), lr 3e-4, 2000 warm-up, clip 1.0,
# dropout 0, bf16. With d = 128, b = 1e4, L = 8192 HoPE rotates 50 of 64 pairs:
#   hope-rope --kv-channels 128 --hope-train-length 8192
set -euo pipefail

# ---- what to change ----------------------------------------------------------------------------
POSITION_EMBEDDING_TYPE="${POSITION_EMBEDDING_TYPE:-hope}"  # hope | rope (the twin) | ab1..ab3 | none
# Blend "W1 PREFIX1 W2 PREFIX2 ...", prefixes without .bin/.idx (tools/preprocess_data.py output).
DATA_PATH="${DATA_PATH:-0.5 /REPLACE/ME/redpajama/common_crawl_text_document 0.5 /REPLACE/ME/redpajama/c4_text_document}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-/REPLACE/ME/llama-tokenizer}"  # HF Llama tokenizer dir
RUN_DIR="${RUN_DIR:-runs/3b-${POSITION_EMBEDDING_TYPE}}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
TENSOR_PARALLEL="${TENSOR_PARALLEL:-2}"  # 8 GPUs = TP 2 x DP 4
EXIT_INTERVAL="${EXIT_INTERVAL:-}"        # empty: run to --train-iters
TRANSFORMER_IMPL="${TRANSFORMER_IMPL:-transformer_engine}"
# -------------------------------------------------------------------------------------------------

SEQ_LENGTH=8192
MICRO_BATCH_SIZE=2  # paper: 2 per data-parallel rank

if [[ "${DATA_PATH} ${TOKENIZER_MODEL}" == *REPLACE/ME* ]]; then
    echo "Set DATA_PATH and TOKENIZER_MODEL at the top of $0 (or export them)." >&2
    exit 1
fi

# HoPE and its ablations take the training length L of eq. 6 (= --seq-length, said explicitly).
HOPE_ARGS=()
case "${POSITION_EMBEDDING_TYPE}" in
    hope | ab1 | ab2 | ab3) HOPE_ARGS=(--hope-train-length "${SEQ_LENGTH}") ;;
esac
EXTRA_ARGS=()
if [[ "${TRANSFORMER_IMPL}" == transformer_engine ]]; then
    # TE's fused rotary kernel: zero frequencies give cos = 1, sin = 0, so HoPE's
    # position-independent pairs pass through it unchanged.
    EXTRA_ARGS+=(--apply-rope-fusion)
    # Sequence parallelism shards norms and dropout over TP ranks (TE layers only).
    EXTRA_ARGS+=(--sequence-parallel)
fi
if [[ -n "${EXIT_INTERVAL}" ]]; then
    EXTRA_ARGS+=(--exit-interval "${EXIT_INTERVAL}")
fi

ARGS=(
    # Model: Llama-style (SwiGLU, RMSNorm, no biases, untied embeddings), Table 6's 3B column.
    --num-layers 34 --hidden-size 2048 --ffn-hidden-size 8704 --num-attention-heads 16
    --seq-length "${SEQ_LENGTH}" --max-position-embeddings "${SEQ_LENGTH}"
    --swiglu --normalization RMSNorm --disable-bias-linear --untie-embeddings-and-output-weights
    --init-method-std 0.02
    --position-embedding-type "${POSITION_EMBEDDING_TYPE}" --rotary-base 10000 "${HOPE_ARGS[@]}"
    # Parallelism: TP inside the node; the distributed optimizer shards Adam's state over DP.
    --tensor-model-parallel-size "${TENSOR_PARALLEL}" --pipeline-model-parallel-size 1
    --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather
    # Memory: selective recompute (core attention) + sequence parallelism. Megatron-LM's estimate,
    # printed before the first step: 30.2 GiB per GPU at TP 2 (see examples/README.md).
    --recompute-granularity selective
    # Optimisation: Appendix A. min-lr, cosine decay and weight decay are not in the paper.
    --micro-batch-size "${MICRO_BATCH_SIZE}" --global-batch-size 512 --train-iters 120000
    --lr 3e-4 --min-lr 3e-5 --lr-decay-style cosine --lr-warmup-iters 2000
    --adam-beta1 0.9 --adam-beta2 0.999 --weight-decay 0.1 --clip-grad 1.0
    --bf16 --transformer-impl "${TRANSFORMER_IMPL}" --seed 1234
    # Data
    --data-path ${DATA_PATH} --split 969,30,1  # unquoted on purpose: the blend is several words
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model "${TOKENIZER_MODEL}"
    # Checkpoints and logs
    --save "${RUN_DIR}/checkpoints" --load "${RUN_DIR}/checkpoints" --save-interval 500
    --eval-interval 2000 --eval-iters 10 --log-interval 1
    --tensorboard-dir "${RUN_DIR}/tensorboard" --log-throughput --log-memory-to-tensorboard
    "${EXTRA_ARGS[@]}"
)

mkdir -p "${RUN_DIR}"
export CUDA_DEVICE_MAX_CONNECTIONS=1  # TP communication must be issued in order
torchrun --standalone --nnodes 1 --nproc-per-node "${GPUS_PER_NODE}" \
    -m megatron_hope.training.cli "${ARGS[@]}" 2>&1 | tee -a "${RUN_DIR}/train.log"
