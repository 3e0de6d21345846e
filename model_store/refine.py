"""Encoder-side latent refinement: spend encoding time to get a better stream out of the same decoder.

g_a is *amortised*: one forward pass has to serve every image, so for a given photo the latent it outputs is not
the one that minimises the training objective ``λ·255²·MSE + bpp`` for that photo. Searching for a better latent
needs only what every decoder already has (g_s and the entropy model), so the result is an ordinary stream: same
container, same weights, same decoder, bit-exact as always. Only encoding gets slower. (Campos et al., "Content
adaptive optimization for neural image compression", CVPR-W 2019; Yang et al., "Improving inference for neural
image compression", NeurIPS 2020.) The gap is largest for an undertrained encoder, which is what CPU-trained
weights are.

The search is gradient descent on ``y`` (Adam, cosine-decayed step) under the training proxies: additive uniform
noise for the rate terms (the entropy models in training mode) and straight-through rounding for the latent the
synthesis sees, with the reconstruction clamped to [0, 1] as the decoder clamps it and the distortion counted on
the image's own pixels only (the padding is cropped away by the decoder). ``z`` follows from ``y`` through h_a, as
in ordinary encoding.

Two guarantees a user relies on:

* **never worse**: the codec codes both latents and keeps the stream with the lower *real* cost (its actual
  bytes, and the 8-bit pixels a decoder makes of it; :meth:`model_store.codec.ImageCodec.rd_cost`), so effort > 0
  cannot lose to effort 0 on the weights' own objective. The proxy is not enough for that: a too-long step can
  lower the proxy while the real cost rises a little.
* **repeatable**: the noise comes from a fixed seed in a forked RNG, so the same image, weights and effort give
  the same bytes on the same machine, and nothing else in the process sees its RNG move.

Efforts are named levels (like cjxl's ``-e`` or avifenc's ``--speed``), so callers do not tune step sizes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

import torch
from torch import Tensor

from model_store.architectures.base import LearnedImageCodec, total_bpp


@dataclass(frozen=True)
class RefineConfig:
    """One effort level: how many gradient steps on the latent, and the peak step size."""

    steps: int
    lr: float = 0.02
    seed: int = 0


#: effort -> search; 0 is plain g_a (the fast default). Chosen on 384x256 crops of three validation photos at q1
#: and q6 with wacnn-small v3 (real streams): 10 steps at 0.02 saved 0-9 % of the real cost (λ·MSE + bpp), steps of
#: 0.03+ often diverged at q1 (the latents of low qualities are small), 30 steps at 0.01-0.02 saved 1-13 %.
EFFORTS: Dict[int, RefineConfig] = {
    0: RefineConfig(steps=0),
    1: RefineConfig(steps=10, lr=0.02),
    2: RefineConfig(steps=30, lr=0.015),
    3: RefineConfig(steps=100, lr=0.01),
}
MAX_EFFORT = max(EFFORTS)


def effort_config(effort: int) -> RefineConfig:
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {sorted(EFFORTS)}, got {effort!r}")
    return EFFORTS[effort]


def _rd_proxy(
    model: LearnedImageCodec, y: Tensor, x: Tensor, height: int, width: int, lmbda: float, knob: Optional[Tensor]
) -> Tensor:
    """The training objective ``λ·255²·MSE + bpp`` of latent ``y`` under the proxies, for the unpadded
    ``height x width`` top-left of ``x`` (``knob``: a variable-rate model's position, ``(1,)``)."""
    y_hat, likelihoods = model.rate_forward(y) if knob is None else model.rate_forward(y, knob=knob)
    x_hat = model.synthesis(y_hat, knob)[..., :height, :width].clamp(0.0, 1.0)
    mse = torch.mean((x_hat - x[..., :height, :width]) ** 2)
    return lmbda * 255.0**2 * mse + total_bpp(likelihoods, height * width)


def _straight_through(inputs: Tensor, mode: str, means=None) -> Tensor:
    """Replacement for the entropy models' ``quantize``: noise for the rate proxy, straight-through rounding where
    a reconstruction is asked for (TIC/ERSTC ask for ``dequantize`` to build the latent g_s sees)."""
    if mode == "noise":
        return inputs + torch.empty_like(inputs).uniform_(-0.5, 0.5)
    centred = inputs - means if means is not None else inputs
    if mode == "symbols":  # integer symbols carry no gradient anyway: keep compressai's meaning
        return torch.round(centred).int()
    rounded = centred + (torch.round(centred) - centred).detach()
    return rounded + means if means is not None else rounded


@contextmanager
def _differentiable_rate(model: LearnedImageCodec) -> Iterator[None]:
    """Entropy models in training mode with a differentiable quantiser, restored afterwards.

    The transforms stay in eval mode (no stochastic depth or dropout). Callers must not share ``model`` with
    another thread meanwhile; the service runs every network pass on one thread per device.
    """
    modules = (model.entropy_bottleneck, model.gaussian_conditional)
    was_training = [m.training for m in modules]
    for m in modules:
        m.train()
        m.quantize = _straight_through  # instance attribute shadows the method
    try:
        yield
    finally:
        for m, training in zip(modules, was_training):
            del m.quantize
            m.train(training)


def refine_latent(
    model: LearnedImageCodec,
    x: Tensor,
    y: Tensor,
    height: int,
    width: int,
    lmbda: float,
    config: RefineConfig,
    knob: Optional[int] = None,
) -> Tensor:
    """The searched latent of one image (callers compare it with ``y`` on real streams, see module docstring).

    ``x`` is the padded image ``(1, 3, H, W)`` on the model's device, ``y`` its analysis ``(1, C, h, w)``; the
    model is left as it was (no gradients stored on its parameters, its modes restored). ``knob``: the code a
    variable-rate model codes at (``lmbda`` is then that code's λ).
    """
    if x.dim() != 4 or x.size(0) != 1 or y.size(0) != 1:
        raise ValueError("refine_latent works on one image at a time")
    x = x.float()
    latent = y.to(x.device, torch.float32).clone()
    if config.steps <= 0:
        return latent
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    position = None if knob is None else torch.tensor([model.rate_knob.position(knob)], device=x.device)
    latent.requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=config.lr)
    with torch.enable_grad(), torch.random.fork_rng(devices=devices), _differentiable_rate(model):
        torch.manual_seed(config.seed)
        for step in range(config.steps):
            for group in optimiser.param_groups:
                group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
            loss = _rd_proxy(model, latent, x, height, width, lmbda, position)
            (latent.grad,) = torch.autograd.grad(loss, [latent])
            optimiser.step()
    return latent.detach()
