#!/usr/bin/env bash
# Everything one lent-GPU call should do, in one command that fits its 10-minute limit and returns through $OUT.
#
#   scripts/device_session.sh MINUTES ARCH PRESET INIT "QUALITIES" [extra model_store.train flags...]
#   e.g. scripts/device_session.sh 2 wacnn small model_store/weights/wacnn-small/v2/q3.safetensors "3 1 5 6" \
#            --batch-size 16 --crop 256 --workers 8 --amp --lr 1e-4
#
# 1. installs the carried wheels (.whl/: compressai, pytorch-msssim) into /tmp/site;
# 2. runs the CUDA portability tests (tests/test_cuda_portability.py) -> $OUT/cuda_tests.txt;
# 3. trains each quality for MINUTES (time-boxed: --max-minutes, the lr decay follows the clock), each one
#    initialised from INIT (a shipped .safetensors or a checkpoint; "-" trains from scratch);
# 4. packs every run's best.pt into $OUT (model_store.transfer: fp16, parts under 15 MiB, sha256 index).
# Back here: python -m model_store.transfer unpack <files_at> runs, then `model_store.train export`.
# Before the call: scripts/device_tree.sh slim (the weights exceed the tool's 64 MiB tree); carry .whl, data, INIT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MINUTES=$1 ARCH=$2 PRESET=$3 INIT=$4 QUALITIES=$5
shift 5
OUT=${OUT:-/tmp/device-out}
PY=${PY:-python3}
mkdir -p "$OUT" runs
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed" > "$OUT/error.txt"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"; } > "$OUT/gpu.txt"
timeout 150 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_portability.py > "$OUT/cuda_tests.txt" 2>&1
for q in $QUALITIES; do
    init=()
    [[ "$INIT" != "-" ]] && init=(--init-from "$INIT")
    $PY -m model_store.train --arch "$ARCH" --preset "$PRESET" --quality "$q" --out "runs/$ARCH-$PRESET-q$q" \
        --steps 1000000 --max-minutes "$MINUTES" --warmup-steps 0 "${init[@]}" "$@" \
        > "runs/$ARCH-$PRESET-q$q.log" 2>&1 || echo "q$q failed: see its log" >> "$OUT/error.txt"
    tail -c 2000 "runs/$ARCH-$PRESET-q$q.log" >> "$OUT/train_tail.txt"
done
$PY -m model_store.transfer pack runs "$OUT" >> "$OUT/train_tail.txt" 2>&1
ls -la "$OUT"
