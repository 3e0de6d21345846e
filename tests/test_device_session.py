"""scripts/device_session.sh: one lent-GPU call trains a plan of runs side by side and returns them through a
channel of at most 8 files (here on the CPU, tiny presets, seconds of training)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import natural_image
from PIL import Image

from model_store.transfer import unpack

ROOT = Path(__file__).resolve().parents[1]
PLAN = """# name  arch preset quality init flags
a-stf   stf  tiny   2  -  --lr 1e-3
b-tic   tic  tiny   3  -  --lr 1e-3 --warmup-steps 1
"""


@pytest.mark.slow
def test_a_plan_trains_side_by_side_and_comes_back_in_few_files(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "device_session.sh", tmp_path / "scripts")
    (tmp_path / "model_store").symlink_to(ROOT / "model_store")
    for split, count in (("train", 2), ("val", 1)):
        (tmp_path / split).mkdir()
        for i in range(count):
            Image.fromarray(natural_image(96, 128, seed=i)).save(tmp_path / split / f"{i}.png")
    (tmp_path / "plan.txt").write_text(PLAN)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", PY=sys.executable, BENCH_S="0", OMP_NUM_THREADS="1")
    flags = ["--train-dir", str(tmp_path / "train"), "--val-dir", str(tmp_path / "val"), "--batch-size", "2",
             "--crop", "64", "--workers", "0", "--steps", "4", "--eval-every", "2", "--ckpt-every", "2",
             "--max-val-images", "1", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(["bash", "scripts/device_session.sh", "plan.txt", "0.5", *flags], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"logs.txt", "transfer.json", "runs.part00"} <= set(files)
    logs = (out / "logs.txt").read_text()
    assert "===== run a-stf" in logs and "===== run b-tic" in logs
    restored = unpack(out, tmp_path / "back")
    assert [p.parent.name for p in restored] == ["a-stf", "b-tic"]


@pytest.mark.parametrize("plan", sorted((ROOT / "scripts" / "device_plans").glob("*.txt")), ids=lambda p: p.name)
def test_every_committed_plan_names_real_presets_and_qualities(plan):
    """A plan is read on a machine that costs by the minute: a typo there (ERSTC has no quality 8) is a lost run."""
    from model_store.architectures.registry import get_preset

    rows = [line.split() for line in plan.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rows, "empty plan"
    assert len({row[0] for row in rows}) == len(rows), "run names must be unique"
    for name, arch, preset, quality, init, *flags in rows:
        assert int(quality) in get_preset(arch, preset).lambdas, f"{name}: {arch}-{preset} has no quality {quality}"
        assert init == "-" or init.startswith((".device/", "runs/", "model_store/")), f"{name}: init {init}"
