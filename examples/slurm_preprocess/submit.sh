#!/bin/bash
# Submit the array (TASKS tasks, default 64) and the merge that waits for all of it to succeed.
#   RP=/data/redpajama OUT=/data/rp/redpajama TOK=tok/tokenizer.json bash submit.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p logs
array=$(sbatch --parsable --export=ALL --array=0-$(( ${TASKS:-64} - 1 )) "$here/preprocess_array.sbatch")
merge=$(sbatch --parsable --export=ALL --dependency=afterok:"$array" "$here/merge.sbatch")
echo "array job $array, merge job $merge"
