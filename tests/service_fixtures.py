"""Harness for the service tests: a temporary weights root holding a tiny real model, and real uvicorn servers.

The weights root is built the way shipped weights are (``registry.write_model_version``), from a test preset of
:class:`conftest.TinyHyperprior`, so the service under test knows nothing about tests. Servers run in a background
thread on a random free port of 127.0.0.1 and are always shut down.

Test modules use it with ``pytest_plugins = ("service_fixtures",)``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from conftest import TinyHyperprior, natural_image

from model_store import registry
from model_store.architectures.erstc import ERSTC_TINY_KNOB
from model_store.architectures.registry import Preset, create_model, register
from model_store.codec import ImageCodec
from model_store.image_io import encode_image
from service.app import create_app
from service.client import LicClient
from service.process import ServiceProcess
from service.server import uvicorn_config
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
ARCH, PRESET = "tinytest", "t"
MODEL = f"{ARCH}-{PRESET}"
QUALITIES = (1, 2)
_registered = False


def register_test_preset() -> None:
    """Register the ``tinytest-t`` preset (once per process)."""
    global _registered
    if not _registered:
        register(Preset(arch=ARCH, name=PRESET, lambdas={1: 0.01, 2: 0.02}, build=lambda q: TinyHyperprior()))
        _registered = True


def build_weights_root(root: Path, seed: int = 0) -> Path:
    """Export randomly initialised tiny models for qualities 1 and 2 as ``<root>/tinytest-t/1/``."""
    register_test_preset()
    models = {}
    for quality in QUALITIES:
        torch.manual_seed(seed * 100 + quality)
        model = TinyHyperprior()
        with torch.no_grad():  # untrained latents are ~0.03 and all round to 0: every stream would be the same
            model.g_a[-1].weight.mul_(100.0)
            model.g_a[-1].bias.mul_(100.0)
        models[quality] = model
    # q1 carries validation RD points in its manifest (values made up for the test), q2 none
    rd = {1: {"bpp": 0.5, "psnr": 21.5, "ms_ssim": 0.81, "n_images": 3}}
    registry.write_model_version(models, ARCH, PRESET, "1", root=root, rd_points=rd)
    return root


def local_codec(root: Path, quality: int) -> ImageCodec:
    """The same (model, quality) as a server would load from ``root``, in this process (for byte comparisons)."""
    registry.refresh()
    entry = registry.resolve(MODEL, quality, root=root)
    return ImageCodec.from_entry(entry)


def png(h: int, w: int, seed: int = 0) -> bytes:
    return encode_image(natural_image(h, w, seed), "PNG")


def distinct_images(n: int, h: int, w: int) -> List[np.ndarray]:
    """``n`` different crops of one large natural image (their streams differ, unlike noise-only variations)."""
    cols = 16
    step = max(h, w)
    big = natural_image(step * (n // cols + 1) + h, step * cols + w)
    return [np.ascontiguousarray(big[(i // cols) * step :][:h, (i % cols) * step :][:, :w]) for i in range(n)]


def settings_for(root: Path, **overrides) -> ServiceSettings:
    """Settings for a small, fast test server (keyword overrides win; LIC_* env vars are ignored)."""
    values = dict(
        weights_root=root,
        models={MODEL: list(QUALITIES)},
        device="cpu",
        max_batch_size=8,
        max_batch_delay_ms=20,
        queue_size=64,
        max_body_bytes=256 * 1024,
        max_pixels=256 * 256,
        coding_threads=2,
        drain_timeout_s=5,
        request_timeout_s=30,
    )
    values.update(overrides)
    return ServiceSettings.model_validate(values)


class ServerThread:
    """A real uvicorn server for one app, in a daemon thread, on a free port; a context manager."""

    def __init__(self, settings: ServiceSettings, wait_ready: bool = True):
        self.app = create_app(settings)
        self.settings = settings
        self.wait_ready = wait_ready
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn_config(self.app, settings, log_level="warning")
        self.server = uvicorn.Server(config)
        self.exit_code = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except SystemExit as exc:  # uvicorn exits when the app's startup fails
            self.exit_code = exc.code

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self):
        return self.app.state.service

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        if self.wait_ready:
            with httpx.Client(base_url=self.url) as http:
                while http.get("/health/ready").status_code != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError("test server did not become ready")
                    time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def server_process(root: Path, env: Optional[Dict[str, str]] = None, models: Optional[dict] = None) -> ServiceProcess:
    """The real entry point, ``python -m service``, in a child process serving ``root`` (with the test preset
    registered first, as an installed model family would be); use it as a context manager."""
    preload = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import service_fixtures; "
    preload += "service_fixtures.register_test_preset()"
    settings = {
        "LIC_WEIGHTS_ROOT": str(root),
        "LIC_MODELS": json.dumps(models or {MODEL: [1]}),
        "LIC_DEVICE": "cpu",
        **(env or {}),
    }
    return ServiceProcess(settings, preload=preload)


@contextlib.contextmanager
def running(root: Path, **overrides) -> Iterator[ServerThread]:
    with ServerThread(settings_for(root, **overrides)) as server:
        yield server


#: the variable-rate test model (a tiny random ERSTC with a 16-code knob and an integer entropy path)
VR = "erstc-tiny-vr"


def build_variable_rate_root(root: Path) -> Path:
    """:func:`build_weights_root` plus :data:`VR` exported the way shipped weights are (codes 1 and 16 listed)."""
    build_weights_root(root)
    torch.manual_seed(0)
    model = create_model("erstc", "tiny-vr", 1).eval()
    levels = ERSTC_TINY_KNOB.levels
    rd = {1: {"bpp": 0.2, "psnr": 24.0, "ms_ssim": 0.8, "n_images": 3}, levels: {"bpp": 1.1, "psnr": 29.0}}
    registry.write_model_version({1: model, levels: model}, "erstc", "tiny-vr", "1", root=root, rd_points=rd)
    registry.refresh()
    return root


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def weights_root(tmp_path_factory) -> Path:
    return build_weights_root(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def vr_root(tmp_path_factory) -> Path:
    return build_variable_rate_root(tmp_path_factory.mktemp("vr-weights"))


@pytest.fixture(scope="session")
def server(weights_root) -> Iterator[ServerThread]:
    """The shared server (default test settings); tests that need other settings start their own."""
    with running(weights_root) as srv:
        yield srv


@pytest.fixture()
def client(server) -> Iterator[LicClient]:
    with LicClient(server.url, timeout=30) as c:
        yield c


@pytest.fixture()
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
