"""Training stand-ins for rounding: the reference's noise proxy by default, "mixed" where an architecture offers it.

"mixed" keeps the noise proxy for the rate but hands the synthesis exactly what the decoder will hand it,
``round(y - μ) + μ``, and the context model ``round(y)``, both with straight-through gradients.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import tiny_config

from model_store.architectures.registry import create_model
from model_store.train import train

CAM_ARCHS = ("tic", "tic_plus", "erstc")


def recorded_rate_forward(model, y):
    """Run ``rate_forward`` and return (y_hat, what the context model saw, the means it predicted)."""
    seen = {}
    original = model.entropy_params_map

    def spy(hyper, context_input, *knob_bias):
        scales, means = original(hyper, context_input, *knob_bias)
        seen.update(context_input=context_input.detach().clone(), means=means.detach().clone())
        return scales, means

    model.entropy_params_map = spy
    y_hat, _ = model.rate_forward(y)
    return y_hat, seen["context_input"], seen["means"]


def latent(model, seed=0):
    torch.manual_seed(seed)
    return (3 * torch.randn(1, model.latent_channels, 4, 4)).requires_grad_(True)


@pytest.mark.parametrize("arch", CAM_ARCHS)
def test_mixed_training_feeds_the_synthesis_the_decoders_values_with_a_straight_through_gradient(arch):
    model = create_model(arch, "tiny", 1).train()
    model.training_quantizer = "mixed"
    y = latent(model)
    y_hat, context_input, means = recorded_rate_forward(model, y)
    assert torch.equal(context_input, torch.round(y.detach()))  # μ is unknown before the context runs
    symbols = (y_hat.detach() - means).double()
    assert torch.allclose(symbols, symbols.round(), atol=1e-4)  # y_hat = integer + μ, as the decoder builds it
    assert torch.equal(symbols.round(), torch.round(y.detach() - means).double())
    y_hat.sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))  # straight-through: rounding is invisible to the gradient


@pytest.mark.parametrize("arch", CAM_ARCHS)
def test_noise_training_is_the_default_and_the_references_proxy(arch):
    model = create_model(arch, "tiny", 1).train()
    assert model.training_quantizer == "noise" and model.training_quantizers == ("noise", "mixed")
    y = latent(model)
    y_hat, context_input, _ = recorded_rate_forward(model, y)
    offsets = (y_hat - y).detach()
    assert torch.equal(context_input, y_hat.detach())  # the context and the synthesis see the same noisy latent
    assert offsets.abs().max() <= 0.5 and offsets.abs().min() > 0  # uniform noise, not rounding


@pytest.mark.parametrize("arch", CAM_ARCHS)
def test_the_quantizer_setting_changes_nothing_outside_training(arch):
    model = create_model(arch, "tiny", 1).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        noise = model(x)
        model.training_quantizer = "mixed"
        mixed = model(x)
    assert torch.equal(noise["x_hat"], mixed["x_hat"])
    assert all(torch.equal(noise["likelihoods"][k], mixed["likelihoods"][k]) for k in ("y", "z"))


def test_a_run_trains_with_the_quantizer_it_asks_for_and_records_it(image_dirs, tmp_path):
    out = tmp_path / "mixed"
    cfg = dataclasses.replace(tiny_config(image_dirs, out, steps=2), arch="tic", quality=1, quantizer="mixed")
    train(cfg)
    assert json.loads((out / "config.json").read_text())["quantizer"] == "mixed"
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 2


def test_an_architecture_without_the_mode_refuses_it_before_training(image_dirs, tmp_path):
    cfg = dataclasses.replace(tiny_config(image_dirs, tmp_path / "stf", steps=2), quantizer="mixed")
    with pytest.raises(ValueError, match="stf trains with noise only"):
        train(cfg)
    assert not (tmp_path / "stf" / "last.pt").exists()
