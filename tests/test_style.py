"""Style is a CI gate, not a habit: the code passes the linter and the formatter exactly as pyproject.toml configures
them (120 columns, isort order, no unused names), so a diff never mixes a change with someone else's reflow."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Every folder that holds the project's Python (docker/ has the container's entrypoint and health check).
SOURCES = ["model_store", "service", "benchmarks", "scripts", "tests", "docker"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_code_passes_ruff_as_configured(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *SOURCES], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"`ruff {' '.join(command)}` found:\n{result.stdout}{result.stderr}"
