"""A knob-conditioned synthesis (issue #27): g_s of a variable-rate model scaled and shifted per channel by the code.

What a user relies on: a model without it, or with it untrained, decodes exactly as before (old files keep their
pixels); a file that has it carries it, and a loader builds it from the file; every decoder conditions g_s on the
stream's own code (the header's quality), image by image, so a batch of mixed codes gives each image the pixels
it gets alone; training moves it; continuing a file that has it without it is refused, never silently dropped.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import image_dirs, natural_image, tiny_config  # noqa: F401  (image_dirs is a fixture)

from model_store.architectures.registry import create_model
from model_store.architectures.variable_rate import SynthesisModulation
from model_store.codec import ImageCodec, ModelIdentity
from model_store.registry import MODULATION_PREFIX, export_state, load_state
from model_store.train import load_weights_only, train

DIGEST = bytes(range(32))


def tiny(modulated: bool, seed: int = 0, trained: bool = False):
    """A tiny random variable-rate ERSTC (eval, CDF tables), optionally with a modulation; ``trained``: its
    tables set to random values, as training would leave them."""
    torch.manual_seed(seed)
    model = create_model("erstc", "tiny-vr", 1)
    if modulated:
        model.add_synthesis_modulation()
        if trained:
            with torch.no_grad():
                model.synthesis_modulation.log_scale.normal_(0.0, 0.3)
                model.synthesis_modulation.shift.normal_(0.0, 0.3)
    model.eval().update(force=True)
    return model


def codec_of(model) -> ImageCodec:
    return ImageCodec(model, ModelIdentity("erstc-tiny-vr", 8, DIGEST))


def test_an_untrained_modulation_decodes_exactly_as_the_plain_synthesis():
    plain, untrained = codec_of(tiny(False)), codec_of(tiny(True))
    img = natural_image(64, 80)
    for code in (1, 9, 16):
        stream = plain.compress(img, quality=code)
        assert untrained.compress(img, quality=code) == stream  # the encoder never runs g_s
        assert (untrained.decompress(stream) == plain.decompress(stream)).all()


def test_a_trained_modulation_conditions_the_pixels_on_the_streams_own_code():
    plain, trained = tiny(False), tiny(True, trained=True)
    y_hat = torch.randn(2, 16, 4, 5)
    with torch.no_grad():
        assert not torch.equal(trained.synthesis(y_hat, 1), trained.synthesis(y_hat, 16))
        assert torch.equal(plain.synthesis(y_hat, 1), plain.synthesis(y_hat, 16))  # no module: the knob is unused
    codec = codec_of(trained)
    img = natural_image(64, 80)
    low, high = codec.compress(img, quality=2), codec.compress(img, quality=15)
    alone = [codec.decompress(low), codec.decompress(high)]
    for a, b in zip(codec.decompress_batch([low, high]), alone):  # mixed codes in one batch: each its own
        assert (a == b).all()
    assert not (codec_of(plain).decompress(low) == alone[0]).all()


def test_the_file_carries_the_modulation_and_a_loader_builds_it():
    trained = tiny(True, trained=True)
    state = export_state(trained)
    assert {k for k in state if k.startswith(MODULATION_PREFIX)} == {
        "synthesis_modulation.log_scale",
        "synthesis_modulation.shift",
    }
    loaded = create_model("erstc", "tiny-vr", 1)
    load_state(loaded, state)
    assert isinstance(loaded.synthesis_modulation, SynthesisModulation)
    assert torch.equal(loaded.synthesis_modulation.log_scale, trained.synthesis_modulation.log_scale)
    plain = create_model("erstc", "tiny-vr", 1)
    load_state(plain, export_state(tiny(False)))
    assert plain._modules.get("synthesis_modulation") is None  # a file without it: the plain g_s, as before


def test_only_a_variable_rate_model_with_a_modulated_architecture_takes_one():
    with pytest.raises(ValueError, match="no knob-conditioned synthesis"):
        create_model("erstc", "tiny", 1).add_synthesis_modulation()
    model = tiny(True, trained=True)
    with pytest.raises(ValueError, match="pass the code"):
        model.synthesis(torch.zeros(1, 16, 4, 4))
    with pytest.raises(ValueError, match="2 knob codes for a batch of 1"):
        model.synthesis(torch.zeros(1, 16, 4, 4), [1, 2])


def test_training_moves_the_modulation_and_a_modulated_file_is_not_continued_without_it(image_dirs, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = dataclasses.replace(
        tiny_config(image_dirs, out, steps=2), arch="erstc", preset="tiny-vr", quality=1, synthesis_modulation=True
    )
    train(cfg)
    trained = torch.load(out / "last.pt", weights_only=False)["model"]
    assert trained["synthesis_modulation.log_scale"].abs().sum() > 0  # it got gradients and moved off zero
    with pytest.raises(ValueError, match="train it with --synthesis-modulation"):
        load_weights_only(create_model("erstc", "tiny-vr", 1), str(out / "last.pt"))
