"""The README's parameter table is the registry's truth, not a copy that drifts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from model_store.architectures.base import count_parameters
from model_store.architectures.registry import get_preset

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
