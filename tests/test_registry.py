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


def test_loaded_weights_keep_the_likelihood_floor_fp16_cannot_store(weights_root):
    """The effort search and fine-tuning run the entropy models' training pass on loaded weights: a floor of 0
    (1e-9 in fp16) would let it return an infinite rate."""
    model = load_codec("stf-tiny", 1, root=weights_root).model
    floors = [v.item() for k, v in model.state_dict().items() if k.endswith("likelihood_lower_bound.bound")]
    assert len(floors) == 2 and floors == pytest.approx([1e-9, 1e-9])


def test_loading_does_not_recompute_cdf_tables(weights_root, monkeypatch):
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    def forbidden(*args, **kwargs):
        raise AssertionError("CDF tables must come from the weights file")

    monkeypatch.setattr(EntropyBottleneck, "update", forbidden)
    monkeypatch.setattr(GaussianConditional, "update", forbidden)
    codec = load_codec("stf-tiny", 1, root=weights_root)
    img = natural_image(64, 64)
    assert codec.decompress(codec.compress(img)).shape == img.shape


def test_a_new_version_can_keep_earlier_qualities_without_copying_their_files(weights_root):
    """v2 retrains q2 and keeps v1's q1: the manifest points at v1's file; both versions resolve and load it."""
    torch.manual_seed(1)
    registry.write_model_version(
        {2: create_model("stf", "tiny", 2)}, "stf", "tiny", "v2", root=weights_root, reused={1: "v1"}
    )
    v2 = weights_root / "stf-tiny" / "v2"
    assert sorted(p.name for p in v2.glob("*.safetensors")) == ["q2.safetensors"]  # no copy of q1
    item = json.loads((v2 / "manifest.json").read_text())["qualities"]["1"]
    assert item["stored_in"] == "v1" and item["sha256"] == registry.sha256_file(
        weights_root / "stf-tiny/v1/q1.safetensors"
    )

    entry = registry.resolve("stf-tiny", 1, root=weights_root)
    assert (entry.version, entry.path) == ("v2", weights_root / "stf-tiny" / "v1" / "q1.safetensors")
    img = natural_image(40, 56)
    v1_stream = load_codec("stf-tiny", 1, root=weights_root).compress(img)  # same digest: old streams decode too
    assert load_codec("stf-tiny", 1, root=weights_root).decompress(v1_stream).shape == img.shape
    assert registry.resolve("stf-tiny", 2, root=weights_root).path.parent == v2


def test_reusing_a_quality_the_old_version_lacks_is_refused(weights_root):
    with pytest.raises(UnknownModelError, match="v1 has no q5"):
        registry.write_model_version({}, "stf", "tiny", "v2", root=weights_root, reused={5: "v1"})


@pytest.mark.parametrize("field, value", [("stored_in", "../../elsewhere"), ("file", "../v1/q1.safetensors")])
def test_weights_locations_cannot_leave_the_model_folder(weights_root, field, value):
    manifest_path = weights_root / "stf-tiny" / "v1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["qualities"]["1"][field] = value
    manifest_path.write_text(json.dumps(manifest))
    registry.refresh()
    with pytest.raises(WeightsFileError, match="plain name"):
        registry.resolve("stf-tiny", 1, root=weights_root)


def test_weights_are_found_by_the_digest_prefix_a_stream_carries(weights_root):
    entry = registry.resolve("stf-tiny", 2, root=weights_root)
    assert registry.find_by_digest(entry.digest, root=weights_root) == entry
    assert registry.find_by_digest(entry.digest[:8], root=weights_root) == entry  # format 2 stores 8 bytes
    assert registry.find_by_digest(bytes(8), root=weights_root) is None
    with pytest.raises(ValueError, match="at least 8 bytes"):
        registry.find_by_digest(entry.digest[:4], root=weights_root)


def test_a_prefix_naming_two_installed_files_is_refused_not_guessed(weights_root):
    one, two = (registry.resolve("stf-tiny", q, root=weights_root) for q in (1, 2))
    prefix = b"\xab" * 8
    forged = {one.sha256: prefix.hex() + "00" * 24, two.sha256: prefix.hex() + "11" * 24}
    for path in (weights_root / "stf-tiny" / "v1").glob("manifest.json"):
        text = path.read_text()
        for real, fake in forged.items():
            text = text.replace(real, fake)
        path.write_text(text)
    registry.refresh()
    with pytest.raises(WeightsFileError, match="names two installed files"):
        registry.find_by_digest(prefix, root=weights_root)


def test_keeping_a_kept_file_points_at_the_folder_that_holds_it(weights_root):
    """v3 keeps q1 "from v2", which itself kept it from v1: the manifest must name v1, where the file is."""
    torch.manual_seed(1)
    registry.write_model_version(
        {2: create_model("stf", "tiny", 2)}, "stf", "tiny", "v2", root=weights_root, reused={1: "v1"}
    )
    registry.write_model_version({}, "stf", "tiny", "v3", root=weights_root, reused={1: "v2", 2: "v2"})
    items = json.loads((weights_root / "stf-tiny" / "v3" / "manifest.json").read_text())["qualities"]
    assert (items["1"]["stored_in"], items["2"]["stored_in"]) == ("v1", "v2")
    assert registry.resolve("stf-tiny", 1, root=weights_root).path == weights_root / "stf-tiny/v1/q1.safetensors"


@pytest.mark.parametrize(
    "qualities,default", [([1, 3, 5, 6], 3), ([1, 2], 2), ([2, 4], 2), ([5, 8, 10], 5), ([3], 3), ([], 3)]
)
def test_the_default_quality_is_three_or_the_nearest_one_the_model_has(qualities, default):
    """One rule for every caller that names no quality (the model_store CLI, POST /compress, the service CLI);
    of two equally near, the lower: the smaller stream."""
    assert registry.DEFAULT_QUALITY == 3
    assert registry.default_quality(qualities) == default


def test_every_shipped_model_ships_the_default_quality():
    """What the README promises: without a quality, every shipped model codes at the same mid-rate point: quality
    3 of a per-λ ladder, a variable-rate model's knob code at its family's q3 λ; and its release measured it."""
    shipped = registry.shipped_models()
    assert shipped
    for model, qualities in shipped.items():
        default = registry.model_default_quality(model)
        assert default in qualities, (model, default, qualities)
        entry = registry.resolve(model, default)
        if entry.rate_knob is None:
            assert default == registry.DEFAULT_QUALITY
        else:  # the knob declares the point (erstc-small-vr: erstc-small q3's λ)
            knob = entry.rate_knob
            assert knob.default_lambda is not None and default == knob.nearest_code(knob.default_lambda)
