#!/usr/bin/env bash
# Create ./.venv and install the project with its test extras. Idempotent; safe to re-run.
# torch/torchvision are pinned to the releases this project is tested with (a CUDA build that also runs on CPU);
# installing them first keeps pip from resolving a different torch for compressai.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" "numpy<2"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import compressai, torch; print('ready: torch', torch.__version__, 'compressai', compressai.__version__)"
