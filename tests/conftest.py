"""Shared fixtures: a tiny, randomly initialised mean-scale hyperprior that exercises the codec core.

It is a real model (real transforms, real rANS), just small enough for millisecond tests of the container,
codec wrapper and determinism machinery independently of any one published architecture.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from model_store.architectures.base import LearnedImageCodec, likelihoods_dict, make_entropy_models
from model_store.codec import ImageCodec, ModelIdentity
from model_store.train import TrainConfig


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Code under test may set torch's thread count (training does, with --threads): no test leaks it to the next."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load_file(relative: str, name: str) -> ModuleType:
    """A Python file of the repository that is not part of a package (``scripts/x.py``, ``docker/entrypoint.py``:
    they run as plain ``python path``) as a module named ``name``. It is registered in ``sys.modules`` because
    dataclasses look their module up while the file executes."""
    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_erstc():
    """A tiny random ERSTC in eval mode with CDF tables, and its float64 canonical copy (seed 0)."""
    import copy

    from model_store.architectures.erstc import ERSTC, ERSTC_TINY

    torch.manual_seed(0)
    model = ERSTC(ERSTC_TINY).eval()
    model.update(force=True)
    return model, copy.deepcopy(model).double()


def load_script(name: str) -> ModuleType:
    """A file of scripts/ as a module, for tests that check the release tooling's own rules and outputs."""
    return load_file(f"scripts/{name}.py", name)


class TinyHyperprior(LearnedImageCodec):
    """Mean-scale hyperprior (Minnen et al. 2018 without context), two latent slices coded in sequence."""

    pad_multiple = 64
    latent_channels = 8
    hyper_channels = 4

    def __init__(self) -> None:
        super().__init__()
        m, n = self.latent_channels, self.hyper_channels
        conv = lambda i, o, s: nn.Conv2d(i, o, 3, stride=s, padding=1)  # noqa: E731
        up = lambda i, o: nn.ConvTranspose2d(i, o, 4, stride=2, padding=1)  # noqa: E731
        self.g_a = nn.Sequential(
            conv(3, 12, 2), nn.GELU(), conv(12, 12, 2), nn.GELU(), conv(12, 12, 2), nn.GELU(), conv(12, m, 2)
        )
        self.g_s = nn.Sequential(up(m, 12), nn.GELU(), up(12, 12), nn.GELU(), up(12, 12), nn.GELU(), up(12, 3))
        self.h_a = nn.Sequential(conv(m, n, 2), nn.GELU(), conv(n, n, 2))
        self.h_s = nn.Sequential(up(n, 8), nn.GELU(), up(8, 2 * m))
        self.slice_net = nn.Conv2d(2 * m + m // 2, m, 3, padding=1)
        self.entropy_bottleneck, self.gaussian_conditional = make_entropy_models(n)

    def _params(self, hyper, first_half):
        half = self.latent_channels // 2
        if first_half is None:
            scales, means = hyper[:, :half], hyper[:, self.latent_channels : self.latent_channels + half]
            return scales.abs(), means
        out = self.slice_net(torch.cat([hyper, first_half], dim=1))
        return out[:, :half].abs(), out[:, half:]

    def code_latent(self, y, z_hat, coder, y_shape, banded=False):
        assert not banded
        hyper = self.h_s(z_hat)
        half = self.latent_channels // 2
        scales, means = self._params(hyper, None)
        first = coder.code(scales, means, None if y is None else y[:, :half])
        scales, means = self._params(hyper, first)
        second = coder.code(scales, means, None if y is None else y[:, half:])
        return torch.cat([first, second], dim=1)

    def rate_forward(self, y):
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z)
        hyper = self.h_s(z_hat)
        half = self.latent_channels // 2
        s1, m1 = self._params(hyper, None)
        y1, l1 = self.gaussian_conditional(y[:, :half], s1, m1)
        s2, m2 = self._params(hyper, y1)
        y2, l2 = self.gaussian_conditional(y[:, half:], s2, m2)
        return torch.cat([y1, y2], 1), likelihoods_dict(torch.cat([l1, l2], 1), z_lik)


def make_tiny_codec(seed: int = 0) -> ImageCodec:
    torch.manual_seed(seed)
    model = TinyHyperprior()
    model.update(force=True)
    identity = ModelIdentity("tiny-test", 1, bytes(range(32)))
    return ImageCodec(model, identity)


def natural_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture RGB image (gradients, blobs and noise), closer to a photo than flat colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            128 + 80 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) + 30 * np.sin((xx + yy) / 7.0 + 2 * c)
            for c in range(3)
        ],
        axis=-1,
    )
    noise = rng.normal(0, 8, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_codec() -> ImageCodec:
    return make_tiny_codec()


# -- training runs -----------------------------------------------------------------------------------------------------
@pytest.fixture()
def image_dirs(tmp_path):
    """A train folder of three synthetic photos and a val folder of one."""
    for split, count in (("train", 3), ("val", 1)):
        folder = tmp_path / split
        folder.mkdir()
        for i in range(count):
            Image.fromarray(natural_image(96, 128, seed=i)).save(folder / f"{i}.png")
    return tmp_path


def tiny_config(image_dirs, out, steps) -> TrainConfig:
    """A few-step tiny-STF run on ``image_dirs`` (override fields with ``dataclasses.replace``)."""
    return TrainConfig(
        arch="stf",
        preset="tiny",
        quality=2,
        out=str(out),
        train_dir=str(image_dirs / "train"),
        val_dir=str(image_dirs / "val"),
        steps=steps,
        batch_size=2,
        crop=64,
        workers=0,
        eval_every=2,
        ckpt_every=1,
        warmup_steps=1,
        threads=1,
    )
