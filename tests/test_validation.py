"""Training validates on what a user gets: real payload bytes and the decoder's reconstruction, not the estimate."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from conftest import natural_image, tiny_config

from model_store import container
from model_store.architectures.registry import create_model, get_preset, presets
from model_store.codec import ImageCodec, ModelIdentity, canonical_copy, image_to_tensor, pad_to_multiple
from model_store.errors import UncodableLatentError
from model_store.metrics import psnr
from model_store.train import build_data, train, validate

ARCHS = sorted({p.arch for p in presets()})


def tiny(arch: str):
    torch.manual_seed(0)
    return create_model(arch, "tiny", 1).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_the_encoder_knows_the_latent_every_decoder_will_reconstruct(arch):
    model = tiny(arch)
    canon = canonical_copy(model)
    canon.update(force=True)
    y = model.analysis(pad_to_multiple(torch.rand(1, 3, 64, 96), model.pad_multiple))
    payload, y_hat = canon.compress_latent_and_reconstruct(y)
    assert torch.equal(y_hat, canon.decompress_latent(payload))
    assert canon.compress_latent(y) == payload


@pytest.mark.parametrize("arch", ["tic", "stf"])
def test_decoded_validation_is_the_real_codecs_bytes_and_pixels(arch):
    model = tiny(arch)
    image = natural_image(80, 112, seed=3)
    fresh = copy.deepcopy(model)
    fresh.update(force=True)
    codec = ImageCodec(fresh, ModelIdentity(f"{arch}-tiny", 1, bytes(32)))
    stream = codec.compress(image)
    payload_bytes = len(stream) - container.header_length(stream)
    scored = validate(model, [image_to_tensor(image)], 0.01, "cpu", "decoded")
    assert scored["bpp"] == pytest.approx(8 * payload_bytes / (80 * 112), rel=1e-12)
    # the codec's output is rounded to 8 bits, validation scores the float reconstruction
    assert scored["psnr"] == pytest.approx(psnr(image, codec.decompress(stream)), abs=0.1)
    assert scored["loss"] == pytest.approx(0.01 * 255**2 * 10 ** (-scored["psnr"] / 10) + scored["bpp"], rel=1e-9)


def test_the_estimate_is_still_available_and_differs_from_the_decoded_score():
    model = tiny("tic")
    images = [image_to_tensor(natural_image(64, 64, seed=1))]
    decoded, estimate = (validate(model, images, 0.01, "cpu", m) for m in ("decoded", "estimate"))
    assert decoded["bpp"] != estimate["bpp"] and decoded["psnr"] != estimate["psnr"]


def test_validation_leaves_the_model_training_and_rejects_unknown_metrics():
    model = tiny("stf").train()
    images = [image_to_tensor(natural_image(64, 64, seed=2))]
    validate(model, images, 0.01, "cpu")
    assert model.training
    with pytest.raises(ValueError, match="decoded"):
        validate(model, images, 0.01, "cpu", "likelihood")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.0**31])
def test_a_latent_the_coder_cannot_represent_is_refused_not_coded(bad):
    """compressai's rANS escape coding never returns on NaN or int32-overflowing symbols: refuse them first."""
    model = tiny("tic")
    canon = canonical_copy(model)
    canon.update(force=True)
    y = model.analysis(pad_to_multiple(torch.rand(1, 3, 64, 64), model.pad_multiple)).detach()
    y[0, 0, 0, 0] = bad
    with pytest.raises(UncodableLatentError, match="broken or diverged"):
        canon.compress_latent(y)


def test_a_diverged_model_scores_infinitely_bad_instead_of_hanging_validation():
    model = tiny("tic")
    with torch.no_grad():
        for p in model.g_a.parameters():
            p.fill_(float("nan"))
    scored = validate(model, [image_to_tensor(natural_image(64, 64, seed=4))], 0.01, "cpu", "decoded")
    assert scored["loss"] == math.inf and scored["bpp"] == math.inf


def test_resuming_a_run_validated_with_the_estimate_rescores_its_best_with_the_decoded_metric(image_dirs, tmp_path):
    """Decoded scores read worse than estimates: comparing one with the other would keep a stale best.pt forever."""
    out = tmp_path / "run"
    cfg = tiny_config(image_dirs, out, steps=2)
    train(dataclasses.replace(cfg, val_metric="estimate"))
    before = torch.load(out / "best.pt", weights_only=False)
    train(dataclasses.replace(cfg, steps=3))
    after = torch.load(out / "best.pt", weights_only=False)
    last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    model = create_model("stf", "tiny", 2)
    model.load_state_dict(before["model"])
    _, val_images = build_data(cfg)
    rescored = validate(model, val_images, get_preset("stf", "tiny").lambdas[2], "cpu", "decoded")["loss"]
    expected = min(rescored, last["val"]["loss"])  # best is now chosen among decoded scores only
    assert after["val"]["loss"] == pytest.approx(expected, rel=1e-9)
    assert after["val"]["loss"] != pytest.approx(before["val"]["loss"], rel=1e-6)
