#!/usr/bin/env bash
# One acceptance command for a GPU machine: install, run the `gpu` tests, benchmark, PASS/FAIL.
#
#   bash benchmarks/build_gpu_wheelhouse.sh               # once, where PyPI is reachable
#   bash benchmarks/gpu_acceptance.sh                      # on the GPU machine, no network needed
#   PYTHON=.venv312/bin/python bash benchmarks/gpu_acceptance.sh --dry-run   # CPU rehearsal
#
# With the `device` tool (the wheelhouse is ignored by git, so it travels by `carry`):
#   run(command="bash benchmarks/gpu_acceptance.sh", carry=[".gpu-wheelhouse"], timeout_s=570)
#
# What it does, within 8 minutes on one H200:
#   1. installs the wheelhouse (megatron-core 0.19.x and what megatron-hope needs beyond the
#      machine's torch/transformers) into a private folder with pip --no-index, and imports it;
#   2. runs the tests marked `gpu` (tests/gpu, and the GPU tests of tests/megatron): hope-pretrain
#      on CUDA vs the CPU losses, bf16, export verification on CUDA; with Transformer Engine also
#      the TE spec, fused RoPE, FP8 and HopeHybridModel (skipped, and said so, without TE);
#   3. benchmarks a ~1B HoPE model at L=4096 against its RoPE twin (ms/iter, tokens/s, TFLOP/s,
#      MFU, HoPE/RoPE ratio);
#   4. prints a PASS/FAIL table and exits non-zero if anything failed.
# --dry-run runs the same steps on a machine without CUDA: the `gpu` tests' "GPU" runs take the
# CPU shim and the benchmark uses a tiny model, so installation, plumbing and reporting are proven
# before device time is spent. Logs, JUnit XML and the benchmark JSON go to $OUT (the device tool's
# output folder) or a temporary folder.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_acceptance.sh: unknown argument $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-.gpu-wheelhouse}
REPORT_DIR=${OUT:-$(mktemp -d /tmp/gpu-acceptance.XXXXXX)}
SITE=$(mktemp -d /tmp/gpu-acceptance-site.XXXXXX)
TEST_SECONDS=${TEST_SECONDS:-300}
BENCH_SECONDS=${BENCH_SECONDS:-200}
mkdir -p "$REPORT_DIR"
started=$SECONDS
STEPS=()
RESULTS=()
DETAILS=()
record() { STEPS+=("$1"); RESULTS+=("$2"); DETAILS+=("$3"); echo "--- $1: $2 ($3)"; }

# 1. Installation: only from the wheelhouse, never the network.
if [ ! -d "$WHEELHOUSE" ]; then
  record install FAIL "no $WHEELHOUSE: run benchmarks/build_gpu_wheelhouse.sh where PyPI is reachable"
else
  if "$PYTHON" -m pip install -q --no-index --no-deps --disable-pip-version-check \
      --target "$SITE" "$WHEELHOUSE"/*.whl >"$REPORT_DIR/install.log" 2>&1; then
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if imported=$("$PYTHON" - 2>>"$REPORT_DIR/install.log" <<'EOF'
import megatron.core, torch, transformers, megatron_hope, gigatoken, nltk, orjson, zstandard
te = "yes"
try:
    import transformer_engine  # noqa: F401
except ImportError:
    te = "no"
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"torch {torch.__version__}, megatron-core {megatron.core.__version__}, transformers "
      f"{transformers.__version__}, TE {te}, {device}")
EOF
    ); then
      record install PASS "$imported"
    else
      record install FAIL "imports failed, see $REPORT_DIR/install.log"
    fi
  else
    record install FAIL "pip failed, see $REPORT_DIR/install.log"
  fi
fi

# 2. The gpu tests.
if [ "${RESULTS[0]}" = PASS ]; then
  [ "$DRY_RUN" = 1 ] && export MEGATRON_HOPE_GPU_DRY_RUN=1
  timeout "$TEST_SECONDS" "$PYTHON" -m pytest -m gpu tests/gpu tests/megatron/test_rotary.py \
    -q -rs -p no:cacheprovider --junitxml "$REPORT_DIR/gpu-tests.xml" >"$REPORT_DIR/gpu-tests.log" 2>&1
  status=$?
  summary=$(tail -1 "$REPORT_DIR/gpu-tests.log" | sed 's/=//g; s/^ *//; s/ *$//')
  if [ "$status" = 124 ]; then
    record gpu-tests FAIL "timed out after ${TEST_SECONDS} s"
  elif [ "$status" = 0 ]; then
    record gpu-tests PASS "$summary"
  else
    record gpu-tests FAIL "$summary; see $REPORT_DIR/gpu-tests.log"
  fi
  grep -E "^SKIPPED" "$REPORT_DIR/gpu-tests.log" | sed 's/^/    /'
else
  record gpu-tests FAIL "not run: installation failed"
fi

# 3. The benchmark.
if [ "${RESULTS[0]}" = PASS ]; then
  bench_flags=(--json "$REPORT_DIR/throughput.json")
  [ "$DRY_RUN" = 1 ] && bench_flags+=(--dry-run)
  timeout "$BENCH_SECONDS" "$PYTHON" benchmarks/bench_gpu_throughput.py "${bench_flags[@]}" \
    >"$REPORT_DIR/throughput.log" 2>&1
  status=$?
  if [ "$status" = 0 ]; then
    record benchmark PASS "$(grep -E 'HOPE/ROPE' "$REPORT_DIR/throughput.log" | tail -1)"
  else
    record benchmark FAIL "exit $status; see $REPORT_DIR/throughput.log"
  fi
  grep -vE "^(WARNING|  warnings.warn|.*UserWarning)" "$REPORT_DIR/throughput.log" | tail -8 | sed 's/^/    /'
else
  record benchmark FAIL "not run: installation failed"
fi

# 4. The table.
failed=0
echo
echo "gpu acceptance$([ "$DRY_RUN" = 1 ] && echo " (DRY RUN: no GPU was used)") in $((SECONDS - started)) s"
printf '%-10s %-5s %s\n' step result details
for i in "${!STEPS[@]}"; do
  printf '%-10s %-5s %s\n' "${STEPS[$i]}" "${RESULTS[$i]}" "${DETAILS[$i]}"
  [ "${RESULTS[$i]}" = PASS ] || failed=1
done
echo "reports: $REPORT_DIR"
rm -rf "$SITE"
exit "$failed"
