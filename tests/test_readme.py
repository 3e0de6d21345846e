"""The README's parameter table is the registry's truth, not a copy that drifts; its quick start works as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import natural_image

from model_store.architectures.base import count_parameters
from model_store.architectures.registry import get_preset
from model_store.image_io import encode_image, open_image
from service import media

pytest_plugins = ("service_fixtures",)

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(
    r"^\| `(?P<arch>[a-z_]+)-(?P<preset>[a-z]+)` \| (?:yes|no) \| (?P<lo>\d+)–(?P<hi>\d+) \| (?P<a>[\d,]+) \| (?P<b>[\d,]+) \|$"
)
ROWS = [m.groupdict() for m in map(ROW.match, README.read_text().splitlines()) if m]
BIG = {("stf", "paper"), ("wacnn", "paper"), ("zigzag", "paper")}


def test_readme_lists_every_family_in_three_presets():
    assert {(r["arch"], r["preset"]) for r in ROWS} >= {
        (a, p) for a in ("tic", "tic_plus", "stf", "wacnn", "zigzag", "erstc") for p in ("paper", "small", "tiny")
    }


def _check(row) -> None:
    preset = get_preset(row["arch"], row["preset"])
    lo, hi = int(row["lo"]), int(row["hi"])
    assert (lo, hi) == (preset.qualities[0], preset.qualities[-1])
    assert count_parameters(preset.build(lo)) == int(row["a"].replace(",", ""))
    assert count_parameters(preset.build(hi)) == int(row["b"].replace(",", ""))


@pytest.mark.parametrize(
    "row", [r for r in ROWS if (r["arch"], r["preset"]) not in BIG], ids=lambda r: f"{r['arch']}-{r['preset']}"
)
def test_readme_parameter_count_matches_the_model(row):
    _check(row)


@pytest.mark.slow
@pytest.mark.parametrize(
    "row", [r for r in ROWS if (r["arch"], r["preset"]) in BIG], ids=lambda r: f"{r['arch']}-{r['preset']}"
)
def test_readme_parameter_count_matches_the_big_paper_models(row):
    _check(row)


# -- what a newcomer runs first ----------------------------------------------------------------------------------
TEXT = README.read_text()
CURL = [line for line in TEXT.splitlines() if line.startswith("curl ")]
DEFAULT_URL = "http://127.0.0.1:8000"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_curl_examples_compress_and_decompress_a_photo_on_a_real_server(server, tmp_path):
    """The two curl lines of the quick start, as written, against a running server (only the URL differs)."""
    compress, decompress = CURL
    assert "Content-Type: image/png" in compress and "/compress" in compress
    assert f"Content-Type: {media.BITSTREAM}" in decompress and "/decompress" in decompress
    photo = natural_image(40, 56, seed=7)
    (tmp_path / "photo.png").write_bytes(encode_image(photo, "PNG"))
    headers = ""
    for line in CURL:
        run = subprocess.run(
            shlex.split(line.replace(DEFAULT_URL, server.url)), cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        headers += run.stdout
    assert "x-quality:" in headers.lower() and "application/octet-stream" in headers
    assert open_image(tmp_path / "back.png").shape == photo.shape


def test_readme_says_how_to_run_the_service_pick_its_port_and_when_it_is_ready():
    quick_start = TEXT.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for needed in (".venv/bin/python -m service", "LIC_PORT=", "make serve PORT=", "/health/ready", "503"):
        assert needed in quick_start, needed


def test_readme_deploy_section_tells_podman_users_to_keep_the_healthcheck():
    deploy = TEXT.split("## Deploy", 1)[1]
    assert "podman build --format docker" in deploy and "HEALTHCHECK" in deploy
