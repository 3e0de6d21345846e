"""scripts/cpu_run.sh: a background CPU fine-tune must yield the CPU to foreground work (tests, evaluations)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AUTOGROUPS = Path("/proc/sys/kernel/sched_autogroup_enabled")


@pytest.mark.skipif(
    not AUTOGROUPS.exists() or AUTOGROUPS.read_text().strip() != "1", reason="needs Linux scheduler autogroups"
)
def test_a_detached_run_is_niced_as_a_whole_autogroup(tmp_path):
    """setsid starts a new autogroup, and the kernel shares CPU between autogroups before `nice` applies inside
    one: only the autogroup's own nice value makes the run give way (measured: a 'niced' run took an equal share)."""
    stand_in = tmp_path / "python"
    stand_in.write_text("#!/bin/sh\nexec sleep 30\n")  # stands in for the trainer: same process, no training
    stand_in.chmod(0o755)
    out = subprocess.run(
        ["bash", "scripts/cpu_run.sh", str(tmp_path / "run"), "tic", "3", "init.pt"],
        cwd=ROOT,
        env={**os.environ, "PY": str(stand_in)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pid = int(re.search(r"pid (\d+)", out).group(1))
    try:
        deadline = time.time() + 10
        while "sleep" not in Path(f"/proc/{pid}/cmdline").read_text() and time.time() < deadline:
            time.sleep(0.05)
        assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == "19"
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        assert os.getsid(pid) == pid  # detached: survives the shell that started it
    finally:
        os.kill(pid, 9)
