#!/usr/bin/env bash
# HoPE 3B (arXiv 2410.21216, Appendix A Table 6) on ONE node with 8 GPUs, launched by torchrun.
# The paper used 256 A100s (see pretrain_slurm.sbatch); one node keeps the paper's global batch of
# 512 sequences x 8192 tokens by accumulating 64 micro-batches per step, so it is ~32x slower per
# iteration: use it to check memory and throughput before the Slurm run, or lower --train-iters.
#
# How to run (inside the GPU image, see Dockerfile):
#   1. Set DATA_BLEND_FILE (the {prefix}_data_path.txt that hope-preprocess writes) and
#      TOKENIZER_MODEL below, or export them.
#   2. HoPE:       bash examples/3b/pretrain_torchrun.sh
#      RoPE twin:  POSITION_EMBEDDING_TYPE=rope bash examples/3b/pretrain_torchrun.sh
#   3. Short trial: EXIT_INTERVAL=50 bash examples/3b/pretrain_torchrun.sh (stops after 50 steps).
#   4. See the command without running it: DRY_RUN=1 bash examples/3b/pretrain_torchrun.sh
#   Re-running the same command resumes from $RUN_DIR/checkpoints (and exits at once once the
#   run has finished). Why each flag is there, and the memory estimate: examples/README.md.
#
# Paper: 34 layers, 16 heads, hidden 2048 (head dim d = 128), FFN 8704, sequence 8192,
# batch 2 x 256 = 512, 120k iterations, AdamW (0.9, 0.999), lr 3e-4, 2000 warm-up, clip 1.0,
# dropout 0, bf16. With d = 128, b = 1e4, L = 8192 HoPE rotates 50 of 64 pairs:
#   hope-rope --kv-channels 128 --hope-train-length 8192
set -euo pipefail

# ---- what to change ----------------------------------------------------------------------------
POSITION_EMBEDDING_TYPE="${POSITION_EMBEDDING_TYPE:-hope}"  # hope | rope (the twin) | ab1..ab3 | none
# The --data-path blend "W1 PREFIX1 W2 PREFIX2 ..." that hope-preprocess writes to
# {output prefix}_data_path.txt: RedPajama-1T's published mixture over the subsets it found. Or
# set DATA_PATH to a blend of your own.
DATA_BLEND_FILE="${DATA_BLEND_FILE:-/REPLACE/ME/rp/redpajama_data_path.txt}"
DATA_PATH="${DATA_PATH:-}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-/REPLACE/ME/llama-tokenizer}"  # HF Llama tokenizer dir
RUN_DIR="${RUN_DIR:-runs/3b-${POSITION_EMBEDDING_TYPE}}"  # checkpoints, logs, dataset index cache
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
TRANSFORMER_IMPL="${TRANSFORMER_IMPL:-transformer_engine}"  # or local (no TE needed)
ATTENTION_BACKEND="${ATTENTION_BACKEND:-fused}"  # TE's kernel: fused (cuDNN), flash or auto
TENSOR_PARALLEL="${TENSOR_PARALLEL:-2}"  # 8 GPUs = TP 2 x DP 4; > 1 adds --sequence-parallel
EXIT_INTERVAL="${EXIT_INTERVAL:-}"        # empty: run to --train-iters
# Sizes: the paper's (the same names shrink the run).
NUM_LAYERS="${NUM_LAYERS:-34}"
HIDDEN_SIZE="${HIDDEN_SIZE:-2048}"
FFN_HIDDEN_SIZE="${FFN_HIDDEN_SIZE:-8704}"
NUM_ATTENTION_HEADS="${NUM_ATTENTION_HEADS:-16}"
SEQ_LENGTH="${SEQ_LENGTH:-8192}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-2}"  # paper: 2 per data-parallel rank
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-512}"
TRAIN_ITERS="${TRAIN_ITERS:-120000}"
SAVE_INTERVAL="${SAVE_INTERVAL:-50}"  # ~1 hour of training on 8 A100s: examples/README.md
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
    # Model: Llama-style (SwiGLU, RMSNorm, no biases, untied embeddings), Table 6's 3B column.
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
    --eval-interval 2000 --eval-iters 10 --log-interval 1
    --tensorboard-dir "${RUN_DIR}/tensorboard" --log-throughput --log-memory-to-tensorboard
    "${TE_ARGS[@]}"
    ${EXIT_INTERVAL:+--exit-interval "${EXIT_INTERVAL}"}
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
