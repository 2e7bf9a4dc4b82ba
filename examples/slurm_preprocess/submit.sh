#!/bin/bash
# Submit the array (TASKS tasks, default 64) and the merge that waits for all of it to succeed.
#   RP=/data/redpajama OUT=/data/rp/redpajama TOK=tok/tokenizer.json bash submit.sh
# Resubmitting failed tasks: see preprocess_array.sbatch (same NUM_TASKS, then a new merge).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tasks=${TASKS:-64}
mkdir -p logs
array=$(sbatch --parsable --export=ALL,NUM_TASKS="$tasks" --array=0-$(( tasks - 1 )) \
    "$here/preprocess_array.sbatch")
merge=$(sbatch --parsable --export=ALL --dependency=afterok:"$array" "$here/merge.sbatch")
echo "array job $array ($tasks tasks: NUM_TASKS=$tasks for any resubmission), merge job $merge"
