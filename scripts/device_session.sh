#!/usr/bin/env bash
# Everything one lent-GPU call does, in one command that ends inside the tool's 10-minute limit and returns
# through $OUT (at most 8 files: the logs are one file and all checkpoints share their parts).
#
#   scripts/device_session.sh PLAN MINUTES [model_store.train flags for every run...]
#   e.g. scripts/device_session.sh scripts/device_plans/bases.txt 5.75 --batch-size 16 --crop 256 --workers 1
#
# PLAN has one run a line: NAME ARCH PRESET QUALITY INIT|- [flags...] ('#' starts a comment). The runs train side
# by side on the one GPU (small presets leave most of an H100/H200 idle when alone), each time-boxed to MINUTES
# (--max-minutes: its lr decay follows the clock). The CUDA portability tests run first, alone (next to eight
# trainings they needed over 200 s and were cut after 14 of 21). Then:
#   - every run still alive MINUTES + 1 min after the start is stopped (its best.pt stays);
#   - every run's best.pt is packed (model_store.transfer: fp16, shared parts under 15.9 MiB, sha256 index);
#   - $OUT/logs.txt gathers the GPU, the tests and each run's last lines;
#   - if $BENCH_S > 0, benchmarks/codec.py --device cuda runs last (the trainings are over, so its timings are
#     the GPU's own), its JSON into $OUT and its table into logs.txt.
# Back here: python -m model_store.transfer unpack <files_at> runs, then fine-tune or `model_store.train export`.
# Before the call: scripts/device_tree.sh slim (the weights exceed the tool's 64 MiB tree); carry .whl, data/train,
# data/val, the init files, and the default model's manifest + one quality (tests/test_cuda_portability.py).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PLAN=$1 MINUTES=$2
shift 2
OUT=${OUT:-/tmp/device-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BENCH_S=${BENCH_S:-0}
TEST_S=${TEST_S:-240}
LOGS="$OUT/logs.txt"
mkdir -p "$OUT" runs
section() { printf '\n===== %s (t=%ss) =====\n' "$1" "$SECONDS" >> "$LOGS"; }

if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed" >> "$LOGS"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
section "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"; nproc; } >> "$LOGS"
$PY -c "import torch, numpy, compressai; print('torch', torch.__version__, 'numpy', numpy.__version__, 'compressai', compressai.__version__)" >> "$LOGS" 2>&1
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 20 > runs/gpu_util.txt 2>&1 &
fi

if [[ "$DEVICE" == cuda ]]; then
    timeout "$TEST_S" $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_portability.py \
        > runs/cuda_tests.txt 2>&1
    echo "exit status $?" >> runs/cuda_tests.txt
fi

names=() pids=()
deadline=$((SECONDS + $(awk -v m="$MINUTES" 'BEGIN { print int(m * 60) + 60 }')))
while read -r name arch preset quality init flags; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    init_flag=()
    [[ "$init" != "-" ]] && init_flag=(--init-from "$init")
    # shellcheck disable=SC2086  # the plan's flags are words
    $PY -m model_store.train --arch "$arch" --preset "$preset" --quality "$quality" --out "runs/$name" \
        --device "$DEVICE" --max-minutes "$MINUTES" "${init_flag[@]}" "$@" $flags > "runs/$name.log" 2>&1 &
    names+=("$name") pids+=($!)
done < "$PLAN"

alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2> /dev/null && return 0; done; return 1; }
while ((SECONDS < deadline)) && alive; do sleep 5; done
for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null && echo "stopped pid $pid at the deadline" >> "$LOGS"; done
wait "${pids[@]}" 2> /dev/null

section "pack"
$PY -m model_store.transfer pack runs "$OUT" --max-mib 15.9 >> "$LOGS" 2>&1
[[ -f runs/cuda_tests.txt ]] && { section "CUDA tests"; tail -n 40 runs/cuda_tests.txt >> "$LOGS"; }
for name in "${names[@]}"; do
    section "run $name"
    tail -c 4000 "runs/$name.log" | tr '\r' '\n' | grep -v '^$' | tail -n 12 >> "$LOGS"
    grep '"val"' "runs/$name/log.jsonl" 2> /dev/null | tail -n 3 | cut -c1-400 >> "$LOGS"
done
[[ -f runs/gpu_util.txt ]] && { section "GPU load every 20 s"; tr '\n' ' ' < runs/gpu_util.txt >> "$LOGS"; }

if ((BENCH_S > 0)); then
    section "benchmarks/codec.py --device $DEVICE"
    timeout "$BENCH_S" $PY benchmarks/codec.py --device "$DEVICE" --batch 8 --repeats 3 --threads 4 --timeout 60 \
        --references compressai:mbt2018-mean --out runs/codec_cuda >> "$LOGS" 2>&1
    cp runs/codec_cuda.json "$OUT/" 2> /dev/null
fi
section "done"
ls -la "$OUT" >> "$LOGS"
