"""Quality of the shipped weights, on validation crops that were never trained on (tests/assets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from model_store import registry
from model_store.codec import bits_per_pixel, load_codec
from model_store.image_io import open_image
from model_store.metrics import psnr

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = registry.shipped_models()
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no shipped weights")


#: The rule scripts/release.sh gates a release with (scripts/ladder_check.py), so the gate and these tests agree.
ladder_faults = load_script("ladder_check").ladder_faults


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return open_image(ASSETS / "val_citrus_384x256.png")


def test_a_default_model_is_declared_and_shipped():
    assert registry.default_model() in SHIPPED


def test_every_shipped_file_matches_its_manifest_digest():
    for model, qualities in SHIPPED.items():
        for q in qualities:
            entry = registry.resolve(model, q)
            assert registry.sha256_file(entry.path) == entry.sha256


def test_tracked_weights_stay_within_the_repository_budget():
    """Every weights file in the tree counts, except retired ones an operator restored from git history (they
    are not tracked: model_store/retirement.py)."""
    from model_store import retirement

    restored = {f.path for f in retirement.weights_files().values() if f.retired}
    total = sum(p.stat().st_size for p in registry.WEIGHTS_ROOT.rglob("*.safetensors") if p not in restored)
    assert total <= registry.WEIGHTS_BUDGET_MIB * 2**20


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_every_quality_ladder_rises_on_the_whole_validation_set(model):
    """A client who asks for a higher quality gets more bits AND a better picture: a release whose q7 is as good as
    its q8 at fewer bits would sell q8 for nothing. Read from the RD points each manifest records (measured by
    model_store.eval on the 10 validation photos when the version shipped)."""
    entries = [registry.resolve(model, q) for q in SHIPPED[model]]
    assert all(e.rd for e in entries), f"{model}: a shipped quality has no measured RD point"
    points = [{"quality": q, "bpp": e.rd["bpp"], "psnr": e.rd["psnr"]} for q, e in zip(SHIPPED[model], entries)]
    assert ladder_faults(points, min_gain_db=0.05) == []


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_every_shipped_model_reconstructs_a_validation_photo(image, model):
    points = []
    for q in SHIPPED[model]:
        codec = load_codec(model, q)
        stream = codec.compress(image)
        out = codec.decompress(stream)
        points.append({"quality": q, "bpp": bits_per_pixel(stream, *image.shape[:2]), "psnr": psnr(image, out)})
    for point in points:
        assert 0.02 < point["bpp"] < 2.0
        assert point["psnr"] > 24.0  # random weights give < 12 dB
    assert ladder_faults(points, 0.0) == []  # higher quality: more bits and a better picture


def test_streams_name_the_shipped_weights(image):
    from model_store import container

    model = registry.default_model()
    q = SHIPPED[model][0]
    header = container.parse_header(load_codec(model, q).compress(image))
    assert header.model_id == model and header.names_weights(registry.resolve(model, q).digest)
