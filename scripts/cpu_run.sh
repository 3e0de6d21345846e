#!/usr/bin/env bash
# Start one time-boxed CPU fine-tune detached, niced, on one core (the recipe the CPU runs in the README use):
#   scripts/cpu_run.sh OUT ARCH QUALITY INIT_CHECKPOINT [extra model_store.train flags...]
# e.g. scripts/cpu_run.sh runs/s10-tic-q7m tic 7 runs/s9-tic-q8/best.pt --quantizer mixed
# Progress: runs/OUT/log.jsonl (the .log next to it is the progress bar). Run it again to resume (last.pt wins).
# Env: MINUTES (box, default 50), PY (default .venv/bin/python), PRESET (default small).
# --compile (torch.compile, 1.48x steps per CPU-hour on erstc-small-vr; pass --no-compile to turn it off) costs
# ~2 CPU-minutes at each start (less once inductor's cache in /tmp holds the kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
OUT=$1 ARCH=$2 QUALITY=$3 INIT=$4
shift 4
PY=${PY:-.venv/bin/python}
mkdir -p "$(dirname "$OUT")"
# setsid gives the run its own scheduler autogroup (Linux, sched_autogroup_enabled=1), and the kernel shares CPU
# between autogroups before `nice` ranks processes inside one: a merely niced run still took an equal share from
# the foreground (tests, evaluations). So the new session nices its own autogroup, then becomes the trainer.
OMP_NUM_THREADS=1 setsid nohup bash -c '{ echo 19 > /proc/self/autogroup; } 2>/dev/null; exec nice -n 19 "$@"' _ \
    "$PY" -m model_store.train --arch "$ARCH" --preset "${PRESET:-small}" \
    --quality "$QUALITY" --out "$OUT" --init-from "$INIT" --lr 3e-4 --warmup-steps 200 --max-minutes "${MINUTES:-50}" \
    --batch-size 8 --crop 128 --threads 1 --workers 0 --steps 40000 --decay-at 0.8 --eval-every 500 \
    --ckpt-every 250 --max-val-images 4 --amp --compile "$@" > "$OUT.log" 2>&1 &
PID=$!
echo "started $OUT (pid $PID): tail runs' log.jsonl for progress"
