"""scripts/device_tree.sh: the shipped weights can be kept off the device tool's 64 MiB tree and put back exactly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_tree.sh"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "device_tree.sh")
    weights = tmp_path / "model_store" / "weights" / "m" / "v1"
    weights.mkdir(parents=True)
    (weights / "q1.safetensors").write_bytes(bytes(3 << 20))
    (tmp_path / "code.py").write_text("print('hi')\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def run(repo: Path, verb: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/device_tree.sh", verb], cwd=repo, capture_output=True, text=True)


def test_slim_keeps_the_files_on_disk_but_out_of_what_travels_and_restore_undoes_it(repo):
    before = git(repo, "ls-files")
    slim = run(repo, "slim")
    assert slim.returncode == 0, slim.stderr
    assert "0.0 MiB would travel" in slim.stdout  # 3 MiB of weights no longer counted
    assert "weights" not in git(repo, "ls-files") + git(repo, "ls-files", "--others", "--exclude-standard")
    assert (repo / "model_store" / "weights" / "m" / "v1" / "q1.safetensors").exists()

    restored = run(repo, "restore")
    assert restored.returncode == 0, restored.stderr
    assert git(repo, "ls-files") == before
    assert git(repo, "status", "--porcelain") == ""  # nothing staged, nothing left in the ignore list's effect
    assert "/model_store/weights/" not in (repo / ".git" / "info" / "exclude").read_text()


def test_slim_refuses_when_other_changes_are_staged(repo):
    (repo / "code.py").write_text("print('changed')\n")
    git(repo, "add", "code.py")
    result = run(repo, "slim")
    assert result.returncode == 1 and "staged" in result.stderr
    assert "model_store/weights/m/v1/q1.safetensors" in git(repo, "ls-files")
