#!/usr/bin/env bash
# The integer entropy path's GPU checks (issue #29), in one device call of a few minutes:
#   1. the CUDA portability tests (tests/test_cuda_portability.py; the integer path's: CPU and CUDA code a latent
#      to the same bytes, batched too);
#   2. benchmarks/integer_streams.py on the GPU: entropy encode/decode per image and whole compressions per second
#      at batch 1/8/32/64 for 768x512 (goal: >= 300 images/s compress on one H100), against the CPU float64 path.
# Run from the repository root on the lent machine (device tool):
#   run(command="OUT=$OUT bash scripts/device_integer_check.sh", carry=[...the wheels, if any...], timeout_s=540)
# It needs the installed erstc-small-vr version with an integer path (v2 on) and a few PNGs (data/val, else
# tests/assets). Results: $OUT/integer_streams_cuda.{json,md} and $OUT/cuda_tests.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-/tmp/device-out}
PY=${PY:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 || true; } > "$OUT/cuda_tests.txt"
timeout 240 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_portability.py >> "$OUT/cuda_tests.txt" 2>&1
echo "exit status $?" >> "$OUT/cuda_tests.txt"
timeout 240 $PY benchmarks/integer_streams.py --device cuda --no-rd --batches 1 8 32 64 --sizes 768x512 \
    --throughput --out "$OUT/integer_streams_cuda" > "$OUT/integer_streams_cuda.log" 2>&1
echo "exit status $?" >> "$OUT/integer_streams_cuda.log"
