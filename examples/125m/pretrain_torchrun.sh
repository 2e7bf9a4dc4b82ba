#!/usr/bin/env bash
# HoPE 125M (arXiv 2410.21216, Appendix A Table 6) on ONE node with 8 GPUs, launched by torchrun.
#
# How to run (inside the GPU image, see Dockerfile):
#   1. Set DATA_BLEND_FILE (the {prefix}_data_path.txt that hope-preprocess writes) and
#      TOKENIZER_MODEL below, or export them: a Llama tokenizer directory (32,000 tokens, as in
#      the paper).
#   2. HoPE:        bash examples/125m/pretrain_torchrun.sh
#      RoPE twin:   POSITION_EMBEDDING_TYPE=rope bash examples/125m/pretrain_torchrun.sh
#      Ablations:   POSITION_EMBEDDING_TYPE=ab1 (or ab2, ab3, none) bash examples/125m/...
#   3. Fewer GPUs:  GPUS_PER_NODE=4 bash examples/125m/pretrain_torchrun.sh  (same global batch
#      512: the loop accumulates gradients; same numbers, more time).
#   4. See the command without running it: DRY_RUN=1 bash examples/125m/pretrain_torchrun.sh
#   Re-running the same command resumes from $RUN_DIR/checkpoints (and exits at once once the
#   run has finished). Why each flag is there, and the memory estimate: examples/README.md.
#
# Paper: 12 layers, 12 heads, hidden 768 (head dim d = 64), FFN 2688, sequence 512,
# batch 64 x 8 = 512, 50k iterations, AdamW (0.9, 0.999), lr 3e-4, 2000 warm-up, clip 1.0,
# dropout 0, bf16. With d = 64, b = 1e4, L = 512 HoPE rotates 16 of 32 pairs:
#   hope-rope --kv-channels 64 --hope-train-length 512
set -euo pipefail

# ---- what to change ----------------------------------------------------------------------------
POSITION_EMBEDDING_TYPE="${POSITION_EMBEDDING_TYPE:-hope}"  # hope | rope (the twin) | ab1..ab3 | none
# The --data-path blend "W1 PREFIX1 W2 PREFIX2 ..." that hope-preprocess writes to
# {output prefix}_data_path.txt: RedPajama-1T's published mixture over the subsets it found. Or
# set DATA_PATH to a blend of your own.
DATA_BLEND_FILE="${DATA_BLEND_FILE:-/REPLACE/ME/rp/redpajama_data_path.txt}"
DATA_PATH="${DATA_PATH:-}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-/REPLACE/ME/llama-tokenizer}"  # HF Llama tokenizer dir
RUN_DIR="${RUN_DIR:-runs/125m-${POSITION_EMBEDDING_TYPE}}"  # checkpoints, logs, dataset index cache
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
TRANSFORMER_IMPL="${TRANSFORMER_IMPL:-transformer_engine}"  # or local (no TE needed)
ATTENTION_BACKEND="${ATTENTION_BACKEND:-fused}"  # TE's kernel: fused (cuDNN), flash or auto
TENSOR_PARALLEL="${TENSOR_PARALLEL:-1}"  # > 1 adds --sequence-parallel
# Sizes: the paper's (the same names shrink the run).
NUM_LAYERS="${NUM_LAYERS:-12}"
HIDDEN_SIZE="${HIDDEN_SIZE:-768}"
FFN_HIDDEN_SIZE="${FFN_HIDDEN_SIZE:-2688}"
NUM_ATTENTION_HEADS="${NUM_ATTENTION_HEADS:-12}"
SEQ_LENGTH="${SEQ_LENGTH:-512}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-64}"  # paper: 64 per GPU x 8 GPUs = 512
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-512}"
TRAIN_ITERS="${TRAIN_ITERS:-50000}"
SAVE_INTERVAL="${SAVE_INTERVAL:-2500}"  # ~9 min of training on A100s: examples/README.md
KEEP_LAST_CHECKPOINTS="${KEEP_LAST_CHECKPOINTS:-3}"
# -------------------------------------------------------------------------------------------------

if [[ "${DATA_PATH:-${DATA_BLEND_FILE}} ${TOKENIZER_MODEL}" == *REPLACE/ME* ]]; then
    echo "Set DATA_BLEND_FILE (or DATA_PATH) and TOKENIZER_MODEL at the top of $0" \
         "(or export them)." >&2
    exit 1
fi
if [[ -z "${DATA_PATH}" ]]; then
    if [[ ! -f "${DATA_BLEND_FILE}" ]]; then
        echo "DATA_BLEND_FILE ${DATA_BLEND_FILE} does not exist: run hope-preprocess" \
             "(examples/slurm_preprocess) or set DATA_PATH." >&2
        exit 1
    fi
    DATA_PATH="$(< "${DATA_BLEND_FILE}")"
fi

# HoPE and its ablations take the training length L of eq. 6 (= --seq-length, said explicitly).
HOPE_ARGS=()
case "${POSITION_EMBEDDING_TYPE}" in
    hope | ab1 | ab2 | ab3) HOPE_ARGS=(--hope-train-length "${SEQ_LENGTH}") ;;
esac
TE_ARGS=()
if [[ "${TRANSFORMER_IMPL}" == transformer_engine ]]; then
    # Fused attention kernels never hold the s x s scores; TE's fused RoPE is exact for HoPE
    # (zero frequencies: cos 1, sin 0); sequence parallelism shards norms over the TP ranks.
    TE_ARGS+=(--attention-backend "${ATTENTION_BACKEND}" --apply-rope-fusion)
    if (( TENSOR_PARALLEL > 1 )); then TE_ARGS+=(--sequence-parallel); fi
fi

ARGS=(
    # Model: Llama-style (SwiGLU, RMSNorm, no biases, untied embeddings), Table 6's 125M column.
    --num-layers "${NUM_LAYERS}" --hidden-size "${HIDDEN_SIZE}"
    --ffn-hidden-size "${FFN_HIDDEN_SIZE}" --num-attention-heads "${NUM_ATTENTION_HEADS}"
    --seq-length "${SEQ_LENGTH}" --max-position-embeddings "${SEQ_LENGTH}"
    --swiglu --normalization RMSNorm --disable-bias-linear --untie-embeddings-and-output-weights
    --init-method-std 0.02
    --position-embedding-type "${POSITION_EMBEDDING_TYPE}" --rotary-base 10000 "${HOPE_ARGS[@]}"
    # Parallelism and memory: Adam's state sharded over DP, its communication overlapped;
    # selective recompute of core attention.
    --tensor-model-parallel-size "${TENSOR_PARALLEL}"
    --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather
    --recompute-granularity selective
    # Optimisation: Appendix A. min-lr, cosine decay and weight decay are not in the paper.
    --micro-batch-size "${MICRO_BATCH_SIZE}" --global-batch-size "${GLOBAL_BATCH_SIZE}"
    --train-iters "${TRAIN_ITERS}"
    --lr 3e-4 --min-lr 3e-5 --lr-decay-style cosine --lr-warmup-iters 2000
    --adam-beta1 0.9 --adam-beta2 0.999 --weight-decay 0.1 --clip-grad 1.0
    --bf16 --transformer-impl "${TRANSFORMER_IMPL}" --seed 1234
    # Data: the index cache on the shared run dir (rank 0 builds it while the others wait at a
    # barrier: allow the first job an hour for that; later jobs read the cache).
    --data-path ${DATA_PATH} --split 969,30,1  # unquoted on purpose: the blend is several words
    --data-cache-path "${RUN_DIR}/data_cache" --distributed-timeout-minutes 60
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model "${TOKENIZER_MODEL}"
    # Checkpoints and logs
    --save "${RUN_DIR}/checkpoints" --load "${RUN_DIR}/checkpoints"
    --save-interval "${SAVE_INTERVAL}" --keep-last-checkpoints "${KEEP_LAST_CHECKPOINTS}"
    --eval-interval 1000 --eval-iters 20 --log-interval 10
    --tensorboard-dir "${RUN_DIR}/tensorboard"
    "${TE_ARGS[@]}"
)

# The console script, not `python -m`: from the repository root `python -m` would import the
# checkout in the working directory instead of the installed package.
LAUNCH=(torchrun --standalone --nnodes 1 --nproc-per-node "${GPUS_PER_NODE}" --no-python
        hope-pretrain "${ARGS[@]}")
if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "${LAUNCH[@]}"
    echo
    exit 0
fi

mkdir -p "${RUN_DIR}"
export CUDA_DEVICE_MAX_CONNECTIONS=1  # TP communication must be issued in order
"${LAUNCH[@]}" 2>&1 | tee -a "${RUN_DIR}/train.log"
