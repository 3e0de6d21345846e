"""Shipped-weights registry: manifests resolve, digests are enforced, stored CDF tables are used as stored."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import natural_image
from model_store import registry
from model_store.architectures.registry import create_model
from model_store.codec import load_codec
from model_store.errors import UnknownModelError, WeightsFileError


@pytest.fixture()
def weights_root(tmp_path):
    torch.manual_seed(0)
    models = {q: create_model("stf", "tiny", q) for q in (1, 2)}
    registry.write_model_version(models, "stf", "tiny", "v1", root=tmp_path, recipe={"note": "random init"})
    yield tmp_path
    registry.refresh()


def test_manifest_lists_every_quality_with_sha256_and_lambda(weights_root):
    manifest = json.loads((weights_root / "stf-tiny" / "v1" / "manifest.json").read_text())
    assert sorted(manifest["qualities"]) == ["1", "2"]
    for q, item in manifest["qualities"].items():
        assert item["sha256"] == registry.sha256_file(weights_root / "stf-tiny" / "v1" / item["file"])
        assert item["lambda"] == registry.preset_lambda("stf", "tiny", int(q))
    assert registry.shipped_models(weights_root) == {"stf-tiny": [1, 2]}


def test_unknown_model_and_quality_name_what_exists(weights_root):
    with pytest.raises(UnknownModelError, match="stf-tiny"):
        registry.resolve("nope", 1, root=weights_root)
    with pytest.raises(UnknownModelError, match=r"\[1, 2\]"):
        registry.resolve("stf-tiny", 9, root=weights_root)


def test_tampered_weights_file_is_refused_at_load_time(weights_root):
    path = weights_root / "stf-tiny" / "v1" / "q1.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="sha256"):
        load_codec("stf-tiny", 1, root=weights_root)


def test_missing_weights_file_is_a_clear_error(weights_root):
    (weights_root / "stf-tiny" / "v1" / "q2.safetensors").unlink()
    with pytest.raises(WeightsFileError, match="missing"):
        load_codec("stf-tiny", 2, root=weights_root)


def test_stored_parameters_are_fp16_and_cdf_tables_int32(weights_root):
    from safetensors.torch import load_file

    state = load_file(str(weights_root / "stf-tiny" / "v1" / "q1.safetensors"))
    model = create_model("stf", "tiny", 1)
    params = {n for n, _ in model.named_parameters()}
    assert all(state[n].dtype == torch.float16 for n in params)
    cdfs = [k for k in state if k.endswith("_quantized_cdf")]
    assert cdfs and all(state[k].dtype == torch.int32 and state[k].numel() > 0 for k in cdfs)


def test_loading_does_not_recompute_cdf_tables(weights_root, monkeypatch):
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    def forbidden(*args, **kwargs):
        raise AssertionError("CDF tables must come from the weights file")

    monkeypatch.setattr(EntropyBottleneck, "update", forbidden)
    monkeypatch.setattr(GaussianConditional, "update", forbidden)
    codec = load_codec("stf-tiny", 1, root=weights_root)
    img = natural_image(64, 64)
    assert codec.decompress(codec.compress(img)).shape == img.shape
