"""Names -> presets -> model builders (timm's ``create_model`` shape).

An architecture family registers each preset once, in its own module::

    register(Preset(arch="tic", name="small", qualities=..., lambdas=..., build=lambda q: TIC(cfg_for(q))))

Presets are data (typed configs + λ table), so adding one is a registration, not new code paths.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from model_store.architectures.base import LearnedImageCodec, count_parameters
from model_store.architectures.variable_rate import RateKnob
from model_store.entropy.integer import IntegerPrecision
from model_store.errors import UnknownModelError

#: Modules that register presets on import (one per architecture family).
FAMILY_MODULES: Tuple[str, ...] = (
    "model_store.architectures.stf",
    "model_store.architectures.tic",
    "model_store.architectures.zigzag",
    "model_store.architectures.erstc",
)


@dataclass(frozen=True)
class Preset:
    """One named configuration of an architecture, with its rate-distortion operating points.

    ``lambdas`` maps quality (1 = lowest rate) to the MSE Lagrangian λ of the loss ``λ·255²·MSE + bpp``.
    ``build(quality)`` returns a randomly initialised model for that quality (widths may depend on quality,
    as in TIC's low/high-rate (N, M) split). A variable-rate preset (``rate_knob`` set) builds one model for all
    its qualities, which are the knob's codes (:mod:`model_store.architectures.variable_rate`).
    """

    arch: str
    name: str
    lambdas: Mapping[int, float]
    build: Callable[[int], LearnedImageCodec]
    description: str = ""
    is_paper: bool = False
    departures: str = ""  # how a small preset departs from the paper (goes to the model card)
    extra: Mapping[str, object] = field(default_factory=dict)
    rate_knob: Optional[RateKnob] = None
    #: Where a new export of this variable-rate preset spreads its codes (:attr:`RateKnob.code_span`; the file
    #: stores it, so files exported before keep theirs). None: the knob's own, positions 0..1.
    served_code_span: Optional[Tuple[float, float]] = None
    #: Files exported from this preset carry an integer entropy path of this precision (issue #29,
    #: :mod:`model_store.entropy.integer_coding`) and are coded on it; None: the float64 path.
    integer_entropy: Optional[IntegerPrecision] = None

    @property
    def served_knob(self) -> Optional[RateKnob]:
        """The knob a new export of this preset serves: :attr:`rate_knob` with :attr:`served_code_span` (None for
        a per-λ preset). The one place export, training's ``served_bottom`` and benchmarks read it from."""
        if self.rate_knob is None or self.served_code_span is None:
            return self.rate_knob
        return self.rate_knob.with_code_span(self.served_code_span)

    @property
    def qualities(self) -> List[int]:
        return sorted(self.lambdas)

    @property
    def key(self) -> str:
        return f"{self.arch}-{self.name}"


_PRESETS: Dict[Tuple[str, str], Preset] = {}
_loaded = False


def register(preset: Preset) -> Preset:
    key = (preset.arch, preset.name)
    if key in _PRESETS:
        raise ValueError(f"preset {preset.key} registered twice")
    _PRESETS[key] = preset
    return preset


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a family still being written must not break the others
            if exc.name != module:
                raise


def presets() -> List[Preset]:
    _load_families()
    return [p for _, p in sorted(_PRESETS.items())]


def architectures() -> List[str]:
    return sorted({p.arch for p in presets()})


def get_preset(arch: str, preset: str) -> Preset:
    _load_families()
    try:
        return _PRESETS[(arch, preset)]
    except KeyError:
        known = ", ".join(p.key for p in presets())
        raise UnknownModelError(f"unknown architecture/preset {arch}-{preset}; known: {known}") from None


def create_model(arch: str, preset: str, quality: int) -> LearnedImageCodec:
    """A randomly initialised model (weights come from :mod:`model_store.registry`)."""
    spec = get_preset(arch, preset)
    if quality not in spec.lambdas:
        raise UnknownModelError(f"{spec.key} has qualities {spec.qualities}, not {quality}")
    model = spec.build(quality)
    model.integer_precision = spec.integer_entropy
    return model


def parameter_count(arch: str, preset: str, quality: int) -> int:
    return count_parameters(create_model(arch, preset, quality))
