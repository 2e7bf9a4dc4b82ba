#!/usr/bin/env bash
# HoPE 3B (arXiv 2410.21216, Appendix A Table 6) through MEGATRON-LM'S OWN training loop
# (`pretrain()`, its forward_step and datasets; tools/pretrain_hope_gpt.py builds HopeGPTModel),
# on ONE node with 8 GPUs, launched by torchrun. The same model, data, batch and schedule as
# pretrain_torchrun.sh beside it (tests/test_examples_megatron_lm.py parses both commands, each
# with its own loop's parser, and compares them); only the loop differs. One node keeps the
# paper's global batch (512 x 8192 tokens) by accumulating 64 micro-batches per step: use it to
# check memory and throughput before pretrain_megatron_lm_slurm.sbatch.
#
# How to run (inside the GPU image, see Dockerfile; it sets MEGATRON_LM_PATH):
#   1. Set DATA_BLEND_FILE and TOKENIZER_MODEL as for pretrain_torchrun.sh, and MEGATRON_LM_PATH
#      to a checkout of the Megatron-LM tag that pairs with the installed megatron-core
#      (git clone --depth 1 --branch core_v0.19.0 https://github.com/NVIDIA/Megatron-LM).
#   2. HoPE:       bash examples/3b/pretrain_megatron_lm.sh
#      RoPE twin:  POSITION_EMBEDDING_TYPE=rope bash examples/3b/pretrain_megatron_lm.sh
#   3. Short trial (stops after 50 steps): EXIT_INTERVAL=50 bash examples/3b/pretrain_megatron_lm.sh
#   4. See the command without running it: DRY_RUN=1 bash examples/3b/pretrain_megatron_lm.sh
#   Re-running the same command resumes from $RUN_DIR/checkpoints (Megatron-LM's --load). Its
#   checkpoints and hope-pretrain's interchange (README "Already on Megatron-LM?").
#
# Megatron-LM's spellings where they differ from hope-pretrain's: dropout is said explicitly
# (Megatron-LM defaults to 0.1, the paper and hope-pretrain to 0); fused RoPE is Megatron-LM's
# default (--no-rope-fusion turns it off) where hope-pretrain asks for --apply-rope-fusion.
# Megatron-LM keeps EVERY checkpoint (no --keep-last-checkpoints): 35 GB each, one per
# SAVE_INTERVAL iterations; remove old $RUN_DIR/checkpoints/iter_* yourself on a long run.
set -euo pipefail

# ---- what to change ----------------------------------------------------------------------------
POSITION_EMBEDDING_TYPE="${POSITION_EMBEDDING_TYPE:-hope}"  # hope | rope (the twin) | ab1..ab3 | none
DATA_BLEND_FILE="${DATA_BLEND_FILE:-/REPLACE/ME/rp/redpajama_data_path.txt}"  # hope-preprocess's
DATA_PATH="${DATA_PATH:-}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-/REPLACE/ME/llama-tokenizer}"  # HF Llama tokenizer dir
MEGATRON_LM_PATH="${MEGATRON_LM_PATH:-}"  # the Megatron-LM checkout (the image sets it)
# Checkpoints, logs, dataset index cache: apart from hope-pretrain's runs, to compare the loops.
RUN_DIR="${RUN_DIR:-runs/3b-${POSITION_EMBEDDING_TYPE}-megatron-lm}"
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
# More Megatron-LM flags, appended (split at spaces): --wandb-project, --fp8-format, ...
EXTRA_ARGS="${EXTRA_ARGS:-}"
# -------------------------------------------------------------------------------------------------

if [[ "${DATA_PATH:-${DATA_BLEND_FILE}} ${TOKENIZER_MODEL}" == *REPLACE/ME* ]]; then
    echo "Set DATA_BLEND_FILE (or DATA_PATH) and TOKENIZER_MODEL at the top of $0" \
         "(or export them)." >&2
    exit 1
fi
if [[ -z "${MEGATRON_LM_PATH}" ]]; then
    echo "Set MEGATRON_LM_PATH to a Megatron-LM checkout (the GPU image sets it): git clone" \
         "--depth 1 --branch core_v0.19.0 https://github.com/NVIDIA/Megatron-LM" >&2
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
# A script path, not a console script: it sits beside the examples in the checkout (and in the
# image), and `python path/to/tools/x.py` imports the installed package, not the working dir's.
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PRETRAIN_HOPE_GPT="${PRETRAIN_HOPE_GPT:-${REPO_DIR}/tools/pretrain_hope_gpt.py}"

# HoPE and its ablations take the training length L of eq. 6 (= --seq-length, said explicitly).
HOPE_ARGS=()
case "${POSITION_EMBEDDING_TYPE}" in
    hope | ab1 | ab2 | ab3) HOPE_ARGS=(--hope-train-length "${SEQ_LENGTH}") ;;
esac
TE_ARGS=()
if [[ "${TRANSFORMER_IMPL}" == transformer_engine ]]; then
    # Fused attention kernels never hold the s x s scores; TE's fused RoPE (on by default in
    # Megatron-LM) is exact for HoPE (zero frequencies: cos 1, sin 0); sequence parallelism
    # shards norms over the TP ranks.
    TE_ARGS+=(--attention-backend "${ATTENTION_BACKEND}")
    if (( TENSOR_PARALLEL > 1 )); then TE_ARGS+=(--sequence-parallel); fi
else
    TE_ARGS+=(--no-rope-fusion)  # the fused kernel is Transformer Engine's
fi

ARGS=(
    --megatron-lm-path "${MEGATRON_LM_PATH}"
    # Model: Llama-style (SwiGLU, RMSNorm, no biases, untied embeddings), Table 6's 3B column.
    --num-layers "${NUM_LAYERS}" --hidden-size "${HIDDEN_SIZE}"
    --ffn-hidden-size "${FFN_HIDDEN_SIZE}" --num-attention-heads "${NUM_ATTENTION_HEADS}"
    --seq-length "${SEQ_LENGTH}" --max-position-embeddings "${SEQ_LENGTH}"
    --swiglu --normalization RMSNorm --disable-bias-linear --untie-embeddings-and-output-weights
    --init-method-std 0.02 --hidden-dropout 0 --attention-dropout 0
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
    # Data: the index cache in the run dir; rank 0 builds it while the others wait at a barrier.
    --data-path ${DATA_PATH} --split 969,30,1  # unquoted on purpose: the blend is several words
    --data-cache-path "${RUN_DIR}/data_cache" --distributed-timeout-minutes 60
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model "${TOKENIZER_MODEL}"
    # Checkpoints and logs
    --save "${RUN_DIR}/checkpoints" --load "${RUN_DIR}/checkpoints"
    --save-interval "${SAVE_INTERVAL}"
    --eval-interval 2000 --eval-iters 10 --log-interval 1
    --tensorboard-dir "${RUN_DIR}/tensorboard" --log-throughput --log-memory-to-tensorboard
    "${TE_ARGS[@]}"
    ${EXTRA_ARGS}  # unquoted on purpose: several flags
    ${EXIT_INTERVAL:+--exit-interval "${EXIT_INTERVAL}"}
)

LAUNCH=(torchrun --standalone --nnodes 1 --nproc-per-node "${GPUS_PER_NODE}"
        "${PRETRAIN_HOPE_GPT}" "${ARGS[@]}")
if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "${LAUNCH[@]}"
    echo
    exit 0
fi

mkdir -p "${RUN_DIR}"
export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron-LM's: TP communication issued in order
"${LAUNCH[@]}" 2>&1 | tee -a "${RUN_DIR}/train.log"
