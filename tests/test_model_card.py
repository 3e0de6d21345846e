"""Model cards: measured RD points go into the manifest the registry serves, and the card says what was shipped."""

from __future__ import annotations

import json

import pytest
import torch

from model_store import model_card, registry
from model_store.architectures.registry import create_model


def point(quality: int, bpp: float, psnr: float) -> dict:
    return {"quality": quality, "bpp": bpp, "psnr": psnr, "ms_ssim": 0.9, "enc_s": 0.1, "dec_s": 0.2, "n_images": 2}


@pytest.fixture()
def release(tmp_path):
    """stf-tiny v1 (q1, q2) and v2 (retrained q2, q1 kept from v1), and an eval report measuring v2."""
    torch.manual_seed(0)
    registry.write_model_version(
        {q: create_model("stf", "tiny", q) for q in (1, 2)}, "stf", "tiny", "v1", root=tmp_path
    )
    registry.write_model_version(
        {2: create_model("stf", "tiny", 2)}, "stf", "tiny", "v2", root=tmp_path, reused={1: "v1"}
    )
    report = {
        "codecs": {"stf-tiny": {"kind": "learned", "points": [point(1, 0.2, 27.0), point(2, 0.4, 29.5)]}},
        "bd_rate": {"stf-tiny": {"jpeg": -5.0, "webp": 12.5}},
        "images": [{"name": "a.png"}, {"name": "b.png"}],
        "environment": {"git_commit": "abc123"},
    }
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps(report))
    yield tmp_path / "stf-tiny" / "v2", eval_json
    registry.refresh()


def test_measured_points_land_in_the_manifest_the_service_reads(release):
    folder, eval_json = release
    model_card.update(folder, eval_json)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["qualities"]["2"]["rd"]["bpp"] == 0.4 and manifest["qualities"]["1"]["rd"]["psnr"] == 27.0
    assert manifest["bd_rate_psnr"] == {"jpeg": -5.0, "webp": 12.5}
    entry = registry.resolve("stf-tiny", 2, root=folder.parent.parent)
    assert entry.rd["psnr"] == 29.5  # what GET /v1/models reports as "validation"


def test_the_card_names_the_departures_the_points_and_where_each_file_lives(release):
    folder, eval_json = release
    model_card.update(folder, eval_json)
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith("# stf-tiny v2")
    assert "**Not the paper configuration.**" in card
    assert "| 1 | 0.0018 | 0.2000 | 27.00 |" in card and "kept from v1" in card
    assert "| 2 | 0.0035 | 0.4000 | 29.50 |" in card and card.count("kept from") == 1
    assert "- vs jpeg: -5.0 %" in card and "on 2 validation images" in card


def test_a_one_quality_release_says_why_it_has_no_bd_rate(tmp_path):
    """One operating point is not a curve: the card must not claim the rates merely failed to overlap."""
    registry.write_model_version({3: create_model("stf", "tiny", 3)}, "stf", "tiny", "v1", root=tmp_path)
    report = {
        "codecs": {"stf-tiny": {"kind": "learned", "points": [point(3, 0.23, 29.6)]}},
        "bd_rate": {"stf-tiny": {"jpeg": None}},
        "images": [{"name": "a.png"}],
    }
    (tmp_path / "eval.json").write_text(json.dumps(report))
    try:
        model_card.update(tmp_path / "stf-tiny" / "v1", tmp_path / "eval.json")
    finally:
        registry.refresh()  # update() cached the scratch root's manifest: later tests must not see it
    card = (tmp_path / "stf-tiny" / "v1" / "MODEL_CARD.md").read_text()
    assert "- vs jpeg: n/a (one operating point: a BD-rate needs a curve)" in card and "no overlap" not in card
