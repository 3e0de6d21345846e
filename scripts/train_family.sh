#!/usr/bin/env bash
# Train one model family: a base quality from scratch, then every other quality fine-tuned from it.
# Same command on CPU and CUDA; every run resumes from its last checkpoint, so re-running continues.
#
#   scripts/train_family.sh ARCH PRESET BASE_Q "OTHER_QS" BASE_STEPS FINETUNE_STEPS [extra train.py flags...]
#   e.g. scripts/train_family.sh wacnn small 3 "1 2 4 5 6" 40000 10000 --batch-size 16 --crop 256 --amp
#
# On a GPU machine with no internet (see README "Training on a lent GPU"), start it detached:
#   setsid nohup scripts/train_family.sh ... > runs/family.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=$1 PRESET=$2 BASE=$3 OTHERS=$4 BASE_STEPS=$5 FT_STEPS=$6
shift 6
PY=${PY:-.venv/bin/python}
run() { echo "runs/${ARCH}-${PRESET}-q$1"; }
$PY -m model_store.train --arch "$ARCH" --preset "$PRESET" --quality "$BASE" --steps "$BASE_STEPS" \
    --out "$(run "$BASE")" "$@"
for q in $OTHERS; do
    $PY -m model_store.train --arch "$ARCH" --preset "$PRESET" --quality "$q" --steps "$FT_STEPS" \
        --warmup-steps 0 --init-from "$(run "$BASE")/best.pt" --out "$(run "$q")" "$@"
done
