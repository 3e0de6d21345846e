"""ModelPool: one warm :class:`~model_store.codec.ImageCodec` per configured (model, quality), and one per
variable-rate model, which serves every code of its quality knob (the code travels with each request).

An instance is *ready* only after a real compress + decompress round trip on its device (the first pass
allocates buffers, picks kernels and touches every CDF table, so the first user request is not the slow one).
Loading happens off the event loop; until every instance is ready ``/health/ready`` answers 503 and requests
for an instance that is still loading get 503 ``not_ready``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from model_store import registry
from model_store.architectures.variable_rate import RateKnob
from model_store.codec import ImageCodec
from model_store.container import StreamHeader
from model_store.image_io import ImageLimits
from service.errors import BadParameter, NotReady, UnknownModel, UnknownWeights, WeightsMismatch
from service.settings import ServiceSettings

log = logging.getLogger("service.pool")

LOADING, READY, FAILED = "loading", "ready", "failed"

#: The ``quality`` label of a variable-rate model's instance in metrics: its requests use any of up to 255 codes,
#: and a label value per code would multiply every series by that (the code used is in its own histogram).
KNOB_LABEL = "knob"


@dataclass
class Instance:
    """One (model, quality) of the pool and where it is in its life."""

    entry: registry.WeightsEntry
    device: str
    state: str = LOADING
    codec: Optional[ImageCodec] = None
    error: Optional[str] = None
    load_seconds: Optional[float] = None

    @property
    def key(self) -> Tuple[str, int]:
        """(model, quality); a variable-rate model's one instance has its knob's default code as quality."""
        return self.entry.model_id, self.entry.quality

    @property
    def knob(self) -> Optional[RateKnob]:
        """The quality knob of a variable-rate model (None: a per-λ model, one quality per instance)."""
        return self.entry.rate_knob

    @property
    def label(self) -> str:
        """The instance's ``quality`` label in metrics (:data:`KNOB_LABEL` for a variable-rate model)."""
        return KNOB_LABEL if self.knob is not None else str(self.entry.quality)

    @property
    def ready(self) -> bool:
        return self.state == READY

    def describe(self, entry: Optional[registry.WeightsEntry] = None) -> dict:
        """This instance as ``GET /v1/models`` lists it; ``entry``: one of a variable-rate model's measured codes."""
        entry = entry or self.entry
        return {
            "quality": entry.quality,
            "state": self.state,
            "device": self.device,
            "weights_sha256": entry.sha256,
            "version": entry.version,
            "lambda": entry.lmbda,
            "validation": validation_rd(entry.rd),
            "load_seconds": self.load_seconds,
            **({"error": self.error} if self.error else {}),
        }


def validation_rd(rd: dict) -> Optional[dict]:
    """What a client can expect from a quality: the manifest's validation-set averages, or None if unmeasured."""
    if not rd or "bpp" not in rd or "psnr" not in rd:
        return None
    return {"bpp": rd["bpp"], "psnr": rd["psnr"], "ms_ssim": rd.get("ms_ssim"), "images": rd.get("n_images")}


def warm_up_image(multiple: int) -> np.ndarray:
    """A deterministic textured image two pad-multiples wide (touches every layer and entropy table)."""
    side = 2 * multiple
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    rng = np.random.default_rng(0)
    img = np.stack([128 + 90 * np.sin(xx / (9.0 + c) + yy / 13.0) for c in range(3)], axis=-1)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


@dataclass
class ModelPool:
    """The warm instances, their readiness, and lookups by request parameters or by stream header."""

    settings: ServiceSettings
    instances: Dict[Tuple[str, int], Instance] = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.limits = ImageLimits(max_pixels=self.settings.max_pixels, max_pixels_setting="LIC_MAX_PIXELS")
        self.legacy: "OrderedDict[bytes, Instance]" = OrderedDict()  # weights digest -> instance, LRU order
        self.tile_workers = self.settings.tile_threads or os.cpu_count() or 1
        self._served: Optional[Tuple[tuple, Dict[str, List[int]]]] = None  # (instance keys, served())

    def configure(self) -> None:
        """Resolve the configured (model, quality) pairs against the weights root (raises on unknown names)."""
        registry.refresh()
        self._served = None  # the registry may have changed
        self.device = self.settings.resolved_device()
        root = self.settings.weights_root
        for model, quality in self.settings.instances():
            entry = registry.resolve(model, quality, root=root)
            if entry.rate_knob is not None:  # one instance for every code, made at the knob's default code
                if self.variable_rate(model) is not None:
                    continue
                entry = registry.resolve(model, entry.rate_knob.default_code, root=root)
            self.instances[(model, entry.quality)] = Instance(entry=entry, device=self.device)

    def load_all(self, after_warm_up: Optional[Callable[[Instance, ImageCodec], None]] = None) -> None:
        """Load and warm every instance (blocking: call it from a worker thread). A failure marks one instance.
        ``after_warm_up(instance, codec)`` runs before the instance is marked ready (the service prices its work
        there, so no request is admitted unpriced)."""
        for inst in self.instances.values():
            t0 = time.monotonic()
            try:
                codec = ImageCodec.from_entry(
                    inst.entry,
                    device=inst.device,
                    limits=self.limits,
                    batch_invariant=self.settings.batch_invariant,
                    format_version=self.settings.stream_format_version,
                    banded_hyper=self.settings.banded_hyper,
                    latent_crc=self.settings.latent_crc,
                    tile_workers=self.tile_workers,
                )
                image = warm_up_image(codec.pad_multiple)
                if codec.decompress(codec.compress(image)).shape != image.shape:
                    raise RuntimeError("warm-up round trip changed the image size")
                if after_warm_up is not None:
                    after_warm_up(inst, codec)
            except Exception as exc:  # one broken instance must not hide the others
                log.exception("loading %s q%d failed", *inst.key)
                inst.state, inst.error = FAILED, f"{type(exc).__name__}: {exc}"
                continue
            inst.codec, inst.state = codec, READY
            inst.load_seconds = round(time.monotonic() - t0, 3)
            log.info("%s q%d ready on %s in %.2f s", *inst.key, inst.device, inst.load_seconds)

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.instances) and all(inst.ready for inst in self.instances.values())

    def count(self, state: str) -> int:
        return sum(inst.state == state for inst in self.instances.values())

    def variable_rate(self, model: str) -> Optional[Instance]:
        """The instance of ``model`` if it is a variable-rate model served here."""
        return next((i for (m, _), i in self.instances.items() if m == model and i.knob is not None), None)

    def served(self) -> Dict[str, List[int]]:
        """model -> qualities served (a variable-rate model: the codes its release measured). Read-only: built once
        per set of instances (every request asks, and listing a variable-rate model's codes walks the registry's
        255 entries: ~1 ms a request)."""
        keys = tuple(sorted(self.instances))
        if self._served is None or self._served[0] != keys:
            out: Dict[str, List[int]] = {}
            for model, quality in keys:
                inst = self.instances[(model, quality)]
                out.setdefault(model, []).extend(self._listed(inst) if inst.knob is not None else [quality])
            self._served = (keys, out)
        return self._served[1]

    def served_description(self) -> Dict[str, object]:
        """model -> its qualities as error messages name them: the list, or ``"1..255"`` for a variable-rate model."""
        out: Dict[str, object] = {}
        for model, qualities in self.served().items():
            variable = self.variable_rate(model)
            out[model] = f"1..{variable.knob.levels}" if variable is not None else qualities
        return out

    def _listed(self, inst: Instance) -> List[int]:
        return registry.shipped_models(self.settings.weights_root).get(inst.key[0], [])

    @property
    def default_model(self) -> str:
        served = self.served()
        shipped_default = registry.default_model(self.settings.weights_root)
        return shipped_default if shipped_default in served else next(iter(served))

    def default_quality(self, model: str) -> int:
        """What a request for ``model`` that names no quality gets: a variable-rate model's knob default, else the
        registry's rule over the served qualities."""
        inst = self.variable_rate(model)
        return inst.knob.default_code if inst is not None else registry.default_quality(self.served()[model])

    def describe(self) -> dict:
        models = {}
        for (model, _), inst in sorted(self.instances.items()):
            info = models.setdefault(
                model,
                {
                    "model": model,
                    "arch": inst.entry.arch,
                    "preset": inst.entry.preset,
                    "default_quality": self.default_quality(model),
                    "variable_rate": _knob_info(inst.knob),
                    "qualities": [],
                },
            )
            if inst.knob is None:
                info["qualities"].append(inst.describe())
                continue
            root = self.settings.weights_root
            for code in self._listed(inst):
                info["qualities"].append(inst.describe(registry.resolve(model, code, root=root)))
        return {"default_model": self.default_model if self.instances else None, "models": list(models.values())}

    # -- lookups -------------------------------------------------------------------------------------------------
    def get(self, model: Optional[str], quality: Optional[int]) -> Tuple[Instance, int]:
        """The instance a request names and the quality it codes at (no model: the default model; no quality: the
        model's default quality; a variable-rate model: any code of its knob); 404 for a model not served here,
        400 for a quality, each listing the choices."""
        served = self.served()
        model = model or self.default_model
        if model not in served:
            raise UnknownModel(f"model {model!r} is not served here; served models: {json.dumps(sorted(served))}")
        if quality is None:
            quality = self.default_quality(model)
        variable = self.variable_rate(model)
        if variable is not None:
            if not variable.knob.has_code(quality):
                raise BadParameter(
                    f"quality must be an integer in 1..{variable.knob.levels} for the variable-rate model {model!r}, "
                    f"got {quality}"
                )
            return self._ready(variable), quality
        if quality not in served[model]:
            raise BadParameter(f"quality must be one of {json.dumps(served[model])} for model {model!r}, got {quality}")
        return self._ready(self.instances[(model, quality)]), quality

    def served_for_stream(self, header: StreamHeader) -> Optional[Instance]:
        """The warm instance whose weights made this stream, if one is served (503 while it is loading)."""
        inst = self._serving(header)
        if inst is None or not header.names_weights(inst.entry.digest):
            return None
        return self._ready(inst)

    def weights_for_stream(self, header: StreamHeader) -> registry.WeightsEntry:
        """The weights on disk, of any version, that made this stream; 409 when there are none."""
        entry = registry.find_by_digest(header.weights_digest, root=self.settings.weights_root)
        if entry is not None and entry.serves(header.model_id, header.quality):
            return entry
        digest = header.weights_digest.hex()[:12]
        served = self._serving(header)
        if served is not None:
            raise WeightsMismatch(
                f"the stream was made by {header.model_id} q{header.quality} with weights {digest}…, which are "
                f"neither served nor installed here (served: version {served.entry.version})"
            )
        raise UnknownWeights(
            f"the stream was made by {header.model_id} q{header.quality} (weights {digest}…), which this server "
            f"neither serves nor has installed; served: {json.dumps(self.served())}"
        )

    def _serving(self, header: StreamHeader) -> Optional[Instance]:
        """The configured instance for a stream's (model, quality): its model's one variable-rate instance, or the
        per-λ instance of that quality (loading or not, whichever weights it has)."""
        return self.variable_rate(header.model_id) or self.instances.get((header.model_id, header.quality))

    def load_legacy(self, entry: registry.WeightsEntry) -> Instance:
        """Load (blocking) the weights of an older version or unserved quality, keeping the most recent
        ``legacy_instances`` in memory so a burst of old streams does not reload them each time."""
        key = entry.digest
        if key in self.legacy:
            self.legacy.move_to_end(key)
            return self.legacy[key]
        t0 = time.monotonic()
        codec = ImageCodec.from_entry(
            entry, device=self.device, limits=self.limits, batch_invariant=True, tile_workers=self.tile_workers
        )
        inst = Instance(entry=entry, device=self.device, state=READY, codec=codec)
        inst.load_seconds = round(time.monotonic() - t0, 3)
        self.legacy[key] = inst
        while len(self.legacy) > self.settings.legacy_instances:
            self.legacy.popitem(last=False)
        log.info("loaded %s q%d version %s for an older stream", entry.model_id, entry.quality, entry.version)
        return inst

    def _ready(self, inst: Instance) -> Instance:
        if inst.state == FAILED:
            raise NotReady(f"{inst.key[0]} q{inst.key[1]} failed to load: {inst.error}")
        if not inst.ready:
            raise NotReady(f"{inst.key[0]} q{inst.key[1]} is still loading; retry shortly")
        return inst


def _knob_info(knob: Optional[RateKnob]) -> Optional[dict]:
    """A variable-rate model's scale as ``GET /v1/models`` describes it (None for a per-λ model)."""
    if knob is None:
        return None
    # the λ its codes 1 and `levels` stand for: a weights version may spread its codes over part of the trained
    # scale's margin (RateKnob.code_span), so these are not the scale's lambda_low / lambda_high
    return {"levels": knob.levels, "lambda_low": knob.code_lambda(1), "lambda_high": knob.code_lambda(knob.levels)}
