"""Shipped weights: ``(model, quality)`` -> preset + fp16 safetensors file + sha256, from per-version manifests.

On-disk layout (Triton-like, one folder per model and version)::

    model_store/weights/
        default.json                      {"model": "<model id>"}: what the service and CLI use by default
        <model id>/<version>/manifest.json   arch, preset, qualities -> {file, sha256, bytes, lambda, rd}, recipe
        <model id>/<version>/q<N>.safetensors   fp16 parameters + int32 CDF tables (computed once at export)
        <model id>/<version>/model.safetensors  a variable-rate model's one file for every knob code
        <model id>/<version>/MODEL_CARD.md

A model id is ``<arch>-<preset>`` (e.g. ``stf-small``). The sha256 in the manifest is checked when a file is
loaded and is written into every bitstream header, so a stream made with other weights is refused by name.

A variable-rate model (a preset with a ``rate_knob``) ships one file; its manifest says ``"variable_rate":
{"levels": N}`` (plus ``"code_span": [low, high]`` where the file spreads its codes over another span of the
knob's positions than 0..1, :attr:`RateKnob.code_span`; the file stores the same span under :data:`CODE_SPAN_KEY`,
and a loader refuses the pair if they differ) and lists under ``qualities`` the codes its release measured (all
naming that file). Every code ``1..N`` resolves to the file; :func:`shipped_models` reports the listed ones (what
evaluation and the ladder of served qualities use).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch
from safetensors.torch import load_file, save

from model_store.architectures.base import LearnedImageCodec
from model_store.architectures.registry import create_model, get_preset
from model_store.architectures.variable_rate import RateKnob
from model_store.entropy.integer_coding import STATE_PREFIX as INTEGER_STATE_PREFIX
from model_store.entropy.integer_coding import IntegerEntropyPath
from model_store.errors import UnknownModelError, WeightsFileError, WeightsRetiredError

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
STORED_FLOAT_DTYPE = torch.float16
#: Every weights file the tree carries. Raised from 150 to 300 MiB (the most issue #8 allows) when a second
#: architecture shipped. Stored streams name their weights by digest, so no file is ever lost: a file that no
#: newest version serves any more is *retired* instead (model_store/retirement.py: its bytes stay in git history,
#: its manifest entries stay, a restore command brings it back), which keeps the budget for served weights.
WEIGHTS_BUDGET_MIB = 300


@dataclass(frozen=True)
class WeightsEntry:
    """One shipped (model, quality): where its weights are and what they must hash to."""

    model_id: str
    arch: str
    preset: str
    version: str
    quality: int
    path: Path
    sha256: str
    lmbda: float
    #: RD measured on the validation set when the weights shipped (bpp, psnr, ms_ssim, n_images; {} if none)
    rd: dict = field(default_factory=dict, compare=False, hash=False)
    #: {"commit", "path"} when the file was retired from the tree (model_store/retirement.py), else None
    retired: Optional[dict] = field(default=None, compare=False, hash=False)
    #: False for a variable-rate model's codes its manifest does not list (resolvable, not reported as shipped)
    listed: bool = field(default=True, compare=False, hash=False)
    #: A variable-rate file's code span (manifest ``variable_rate.code_span``; None: the knob's default, 0..1)
    code_span: Optional[tuple] = field(default=None, compare=False, hash=False)

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.sha256)

    @property
    def rate_knob(self) -> Optional[RateKnob]:
        """The quality knob of a variable-rate model's weights, with their code span (None for a per-λ file)."""
        knob = get_preset(self.arch, self.preset).rate_knob
        return knob.with_code_span(self.code_span) if knob is not None and self.code_span is not None else knob

    def serves(self, model_id: str, quality: int) -> bool:
        """Whether these weights decode a stream whose header names ``(model_id, quality)``: the same model at this
        quality, or, for a variable-rate model, at any code of its knob."""
        if model_id != self.model_id:
            return False
        knob = self.rate_knob
        return quality == self.quality or (knob is not None and knob.has_code(quality))


def _manifests(root: Path) -> List[dict]:
    found = []
    for manifest_path in sorted(root.glob("*/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        manifest["_dir"] = manifest_path.parent
        found.append(manifest)
    return found


def weights_path(version_dir: Path, item: dict) -> Path:
    """Where a manifest's quality entry keeps its file: its own version folder, or ``stored_in`` a sibling one.

    A release that keeps some qualities of an earlier one unchanged says ``"stored_in": "v1"`` instead of
    carrying a second copy: same bytes, same sha256, so streams of either version find them, and the repository's
    weight budget pays for each file once. Both names must be plain (no path can leave the model's folder).
    """
    name, stored_in = str(item.get("file", "")), str(item.get("stored_in", version_dir.name))
    for part in (name, stored_in):
        if not part or Path(part).name != part or part in (".", ".."):
            raise WeightsFileError(f"{version_dir}: weights location {stored_in}/{name} is not a plain name")
    return version_dir.parent / stored_in / name


def _code_span(value, manifest: dict) -> Optional[tuple]:
    """A manifest's ``variable_rate.code_span`` as a checked pair (None where it has none)."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
        knob = get_preset(manifest["arch"], manifest["preset"]).rate_knob
        if knob is None:
            raise ValueError("the preset has no knob")
        knob.with_code_span((low, high))  # checks the span against the knob's trained positions
    except (TypeError, ValueError) as e:
        raise WeightsFileError(f"{manifest['model']} {manifest['version']}: bad code_span {value!r} ({e})") from None
    return (low, high)


def _entries(manifest: dict) -> Dict[int, WeightsEntry]:
    variable = manifest.get("variable_rate")
    span = _code_span(variable.get("code_span"), manifest) if variable else None

    def entry(quality: int, item: dict, lmbda: float, listed: bool = True) -> WeightsEntry:
        return WeightsEntry(
            model_id=manifest["model"],
            arch=manifest["arch"],
            preset=manifest["preset"],
            version=manifest["version"],
            quality=quality,
            path=weights_path(manifest["_dir"], item),
            sha256=item["sha256"],
            lmbda=lmbda,
            rd=dict(item.get("rd") or {}) if listed else {},
            retired=item.get("retired"),
            listed=listed,
            code_span=span,
        )

    listed = {int(q): entry(int(q), item, float(item["lambda"])) for q, item in manifest["qualities"].items()}
    if not variable or not listed:
        return listed
    files = {(e.path, e.sha256) for e in listed.values()}
    if len(files) != 1:
        raise WeightsFileError(f"{manifest['model']} {manifest['version']}: a variable-rate model ships one file")
    item = next(iter(manifest["qualities"].values()))
    knob = next(iter(listed.values())).rate_knob
    if knob is None or int(variable["levels"]) != knob.levels:
        raise WeightsFileError(f"{manifest['model']} {manifest['version']}: the preset has no knob of that scale")
    every = {code: entry(code, item, knob.code_lambda(code), listed=False) for code in knob.codes}
    return {**every, **listed}


@lru_cache(maxsize=None)
def _all_versions(root: Path = WEIGHTS_ROOT) -> Dict[str, Dict[str, Dict[int, WeightsEntry]]]:
    """model id -> version -> quality -> entry, every version on disk."""
    found: Dict[str, Dict[str, Dict[int, WeightsEntry]]] = {}
    for manifest in _manifests(root):
        found.setdefault(manifest["model"], {})[manifest["version"]] = _entries(manifest)
    return found


def _version_key(version: str):
    """ "v10" after "v9", "2" after "1"; other names after numbered ones, alphabetically."""
    number = version.lstrip("vV")
    return (0, int(number), "") if number.isdigit() else (1, 0, version)


def _index(root: Path = WEIGHTS_ROOT) -> Dict[str, Dict[int, WeightsEntry]]:
    """model id -> quality -> entry of the newest version (numeric versions compare as numbers)."""
    return {model: versions[max(versions, key=_version_key)] for model, versions in _all_versions(root).items()}


def shipped_models(root: Path = WEIGHTS_ROOT) -> Dict[str, List[int]]:
    """Model ids that ship weights, with their qualities (a variable-rate model's listed codes)."""
    return {model: sorted(q for q, e in entries.items() if e.listed) for model, entries in _index(root).items()}


def default_model(root: Path = WEIGHTS_ROOT) -> str:
    path = root / "default.json"
    if path.exists():
        return json.loads(path.read_text())["model"]
    shipped = shipped_models(root)
    if not shipped:
        raise UnknownModelError("no shipped weights found under " + str(root))
    return sorted(shipped)[0]


#: The quality a caller who names none gets (``python -m model_store compress``, ``POST /compress`` without
#: ``quality``, ``python -m service compress`` without ``--quality``): a mid-rate point that every shipped model
#: has, 0.23-0.31 bpp at 30.3-33.2 dB on the validation photos (README, Models).
DEFAULT_QUALITY = 3


def default_quality(qualities: Iterable[int]) -> int:
    """The quality used when none is named, among ``qualities`` (a model's shipped ladder, or the part of it a
    server serves): :data:`DEFAULT_QUALITY`, else the nearest one, the lower of two equally near (the smaller
    stream). With no qualities at all it is :data:`DEFAULT_QUALITY`, so resolving it reports what is missing."""
    return min(sorted(set(qualities)), key=lambda q: abs(q - DEFAULT_QUALITY), default=DEFAULT_QUALITY)


def model_default_quality(model: Optional[str] = None, root: Path = WEIGHTS_ROOT) -> int:
    """What a caller who names ``model`` (None: the default model) but no quality gets: a variable-rate model's
    :attr:`~model_store.architectures.variable_rate.RateKnob.default_code` (its listed codes are only what its release
    measured), else :func:`default_quality` of the shipped ladder."""
    model = model or default_model(root)
    entries = _index(root).get(model, {})
    knob = next(iter(entries.values())).rate_knob if entries else None
    return knob.default_code if knob is not None else default_quality(shipped_models(root).get(model, []))


def resolve(model: Optional[str], quality: int, root: Path = WEIGHTS_ROOT) -> WeightsEntry:
    """Find the weights of ``(model, quality)``; ``model=None`` means the default model."""
    model = model or default_model(root)
    index = _index(root)
    if model not in index:
        raise UnknownModelError(f"unknown model {model!r}; shipped models: {sorted(index) or 'none'}")
    if quality not in index[model]:
        raise UnknownModelError(f"model {model!r} has qualities {sorted(index[model])}, not {quality}")
    return index[model][quality]


#: the shortest sha256 prefix a lookup accepts (container format 2 stores 8 bytes)
MIN_DIGEST_PREFIX = 8


def find_by_digest(digest: bytes, root: Path = WEIGHTS_ROOT) -> Optional[WeightsEntry]:
    """The entry, of any version on disk, whose weights hash to ``digest`` (how old streams find old weights).

    ``digest`` is a full sha256 or a prefix of at least 8 bytes, as a stream header carries it. Versions that keep
    a file (``stored_in``) share its digest and its weights, so any of them serves; two *different* files under
    one prefix would be ambiguous and raise instead of picking one.
    """
    if len(digest) < MIN_DIGEST_PREFIX:
        raise ValueError(f"a weights digest prefix needs at least {MIN_DIGEST_PREFIX} bytes, got {len(digest)}")
    found: Optional[WeightsEntry] = None
    for versions in _all_versions(root).values():
        for entries in versions.values():
            for entry in entries.values():
                if entry.digest.startswith(digest):
                    if found is not None and found.digest != entry.digest:
                        raise WeightsFileError(
                            f"weights digest prefix {digest.hex()} names two installed files "
                            f"({found.model_id} {found.version} q{found.quality}, "
                            f"{entry.model_id} {entry.version} q{entry.quality}); install one of them only"
                        )
                    found = found or entry
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def restore_command(model_id: str, version: str) -> str:
    """How an operator brings back a retired version's files (model_store/retirement.py); every message that
    refuses retired weights names it, so a client's 410 says what to run."""
    return f"python -m model_store.retirement restore {model_id} {version}"


def load_model(entry: WeightsEntry) -> LearnedImageCodec:
    """Build the architecture and load its shipped weights (float32 in memory), checking the sha256 first."""
    if not entry.path.exists() and entry.retired:
        raise WeightsRetiredError(
            f"{entry.model_id} {entry.version} q{entry.quality} (weights {entry.sha256[:12]}…) was superseded and "
            f"retired from this install; git commit {entry.retired['commit'][:12]} keeps it: restore it with "
            f"`{restore_command(entry.model_id, entry.version)}`"
        )
    if not entry.path.exists():
        raise WeightsFileError(f"weights file for {entry.model_id} q{entry.quality} is missing: {entry.path.name}")
    actual = sha256_file(entry.path)
    if actual != entry.sha256:
        raise WeightsFileError(
            f"weights file {entry.path.name} of {entry.model_id} has sha256 {actual[:12]}…, "
            f"the manifest says {entry.sha256[:12]}…"
        )
    model = create_model(entry.arch, entry.preset, entry.quality)
    load_state(model, load_file(str(entry.path)))
    if model.rate_knob != entry.rate_knob:
        raise WeightsFileError(
            f"{entry.model_id} {entry.version}: the file spreads its knob codes over "
            f"{model.rate_knob.code_span}, the manifest says {entry.rate_knob.code_span}"
        )
    return model.eval()


def float_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A stored state as the model holds it: fp16 parameters become float32, integer CDF tables stay as stored."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


#: Constant buffers whose value fp16 cannot hold: compressai's likelihood floor (1e-9) rounds to 0 in fp16, and
#: a zero floor lets a training-mode forward pass (fine-tuning, the effort search) return an infinite rate.
#: Coding never reads them (rANS uses the CDF tables), so restoring them changes no stream.
FP16_LOST_CONSTANTS = ("likelihood_lower_bound.bound",)


def with_model_constants(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with :data:`FP16_LOST_CONSTANTS` taken from ``model`` (as constructed) instead of the file."""
    own = model.state_dict()
    return {k: (own[k].clone() if k.endswith(FP16_LOST_CONSTANTS) and k in own else v) for k, v in state.items()}


#: Keys of a knob-conditioned synthesis (``LearnedImageCodec.add_synthesis_modulation``): a file that has them
#: gets the module, one without decodes with the plain g_s, as it always did.
MODULATION_PREFIX = "synthesis_modulation."


def lacks_stored_modulation(model: LearnedImageCodec, state: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds a synthesis modulation that ``model`` has not got (yet)."""
    return any(k.startswith(MODULATION_PREFIX) for k in state) and model._modules.get("synthesis_modulation") is None


def with_optional_modules(model: LearnedImageCodec, state: Dict[str, torch.Tensor]) -> LearnedImageCodec:
    """``model`` with the optional modules ``state`` holds weights for (its synthesis modulation), added as
    initialised so that loading ``state`` fills them. Why the file decides: the modules are optional per version,
    and a loader must build what the file was trained with, not what a preset says today."""
    if lacks_stored_modulation(model, state):
        model.add_synthesis_modulation()
    return model


#: A variable-rate file's :attr:`RateKnob.code_span` (float64 ``[low, high]``), stored only where it is not the
#: default 0..1, so every file exported before it existed means what it meant.
CODE_SPAN_KEY = "rate_knob.code_span"


def load_state(model: LearnedImageCodec, state: Dict[str, torch.Tensor]) -> None:
    """Load a stored state (fp16 parameters become float32; CDF tables stay as stored, never recomputed); a file
    with an integer entropy path gets it exactly as stored (:mod:`model_store.entropy.integer_coding`), one with a
    synthesis modulation gets that module (:func:`with_optional_modules`), one with a code span gets it
    (:data:`CODE_SPAN_KEY`; the integer path's stored per-code gains must agree with it)."""
    integer = {k: v for k, v in state.items() if k.startswith(INTEGER_STATE_PREFIX)}
    span = state.get(CODE_SPAN_KEY)
    state = {k: v for k, v in state.items() if k not in integer and k != CODE_SPAN_KEY}
    if span is not None and (model.rate_knob is None or span.shape != (2,)):
        raise WeightsFileError(f"a code span {span.tolist()} for a model without a knob of that kind")
    if model.rate_knob is not None:  # a file without a span means 0..1, whatever the model held before
        try:
            model.use_code_span(span.double().tolist() if span is not None else RateKnob.code_span)
        except ValueError as e:
            raise WeightsFileError(f"the file's code span {span.tolist()} is not one its knob allows ({e})") from None
    with_optional_modules(model, state)
    model.load_state_dict(with_model_constants(model, float_state(state)))
    model.integer_entropy = IntegerEntropyPath.from_state(model, integer) if integer else None
    if model.integer_entropy is not None:
        try:
            model.integer_entropy.check_knob(model)
        except ValueError as e:
            raise WeightsFileError(str(e)) from None


def export_state(model: LearnedImageCodec) -> Dict[str, torch.Tensor]:
    """Round parameters to fp16 FIRST, then compute CDF tables from the rounded values.

    The order matters: the tables must describe exactly the parameters a loader will see, so a loader uses the
    stored tables as they are (no recomputation, no float drift between machines). Parameters are stored as
    fp16; float buffers (the Gaussian scale table, bounds) stay float32 because the CDF tables were built from
    their float32 values; integer CDF tables are int32.
    """
    params = {name for name, _ in model.named_parameters()}
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(p.to(STORED_FLOAT_DTYPE).float())
    model.update(force=True)
    out = {}
    if model.integer_precision is not None:  # quantised from the fp16 values a loader will see, stored as computed
        model.integer_entropy = IntegerEntropyPath.of(model, model.integer_precision)
        out.update(model.integer_entropy.state())
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if k in params:
            out[k] = v.to(STORED_FLOAT_DTYPE)
        elif v.is_floating_point():
            out[k] = v.float()
        else:
            out[k] = v.to(torch.int32)
    knob = model.rate_knob
    if knob is not None and knob.code_span != RateKnob.code_span:
        out[CODE_SPAN_KEY] = torch.tensor(knob.code_span, dtype=torch.float64)
    return out


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors serialises ``__metadata__`` from a Rust ``HashMap``, whose order is seeded per process, so two
    exports of one checkpoint differed in the header alone about half the time, and streams name weights by their
    sha256. The header is re-written sorted and space-padded to 8 bytes (the format's alignment); tensor offsets are
    relative to the data block, which stays byte-for-byte.
    """
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.dumps(json.loads(blob[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + blob[8 + size :]


def save_weights(model: LearnedImageCodec, path: Path, metadata: Optional[Dict[str, str]] = None) -> str:
    """Write fp16 safetensors with CDF tables, byte-reproducibly; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_safetensors(save(export_state(model), metadata=metadata or {})))
    path.chmod(0o644)  # safetensors writes 0600; images run the service as a non-root user
    return sha256_file(path)


def preset_lambda(arch: str, preset: str, quality: int) -> float:
    return float(get_preset(arch, preset).lambdas[quality])


def refresh() -> None:
    """Forget cached manifests (after an export wrote new weights)."""
    _all_versions.cache_clear()


def write_model_version(
    models: Dict[int, LearnedImageCodec],
    arch: str,
    preset: str,
    version: str,
    root: Path = WEIGHTS_ROOT,
    recipe: Optional[dict] = None,
    rd_points: Optional[Dict[int, dict]] = None,
    reused: Optional[Dict[int, str]] = None,
    code_span: Optional[tuple] = None,
) -> Path:
    """Export ``quality -> model`` as ``<root>/<arch>-<preset>/<version>/`` with fp16 files and a manifest.

    ``reused`` lists qualities taken unchanged from an earlier installed version (``quality -> that version``):
    the manifest points at their files (``stored_in``) instead of writing copies. ``code_span``: a variable-rate
    version's :attr:`RateKnob.code_span` (None: the preset's).
    """
    model_id = f"{arch}-{preset}"
    folder = root / model_id / version
    knob = get_preset(arch, preset).rate_knob
    if knob is not None:
        return _write_variable_rate_version(models, arch, preset, version, root, recipe, rd_points, reused, code_span)
    if code_span is not None:
        raise ValueError(f"{model_id} is a per-λ preset: it has no knob codes to spread")
    qualities = {}
    for quality, old_version in sorted((reused or {}).items()):
        if quality in models:
            raise ValueError(f"q{quality} is both newly exported and reused from {old_version}")
        old = _all_versions(root).get(model_id, {}).get(old_version, {}).get(quality)
        if old is None:
            raise UnknownModelError(f"{model_id} {old_version} has no q{quality} to reuse")
        if old.retired and not old.path.is_file():
            raise WeightsRetiredError(
                f"{model_id} {old_version} q{quality} is retired; restore it first "
                f"({restore_command(model_id, old_version)}) to serve it again"
            )
        qualities[str(quality)] = {
            "file": old.path.name,
            "stored_in": old.path.parent.name,  # where the file lives: @v3 of a file v3 kept from v1 is v1
            "sha256": old.sha256,
            "bytes": old.path.stat().st_size,
            "lambda": old.lmbda,
            "rd": (rd_points or {}).get(quality, {}),
        }
    for quality, model in sorted(models.items()):
        name = f"q{quality}.safetensors"
        digest = save_weights(model, folder / name, metadata={"model": model_id, "quality": str(quality)})
        qualities[str(quality)] = {
            "file": name,
            "sha256": digest,
            "bytes": (folder / name).stat().st_size,
            "lambda": preset_lambda(arch, preset, quality),
            "rd": (rd_points or {}).get(quality, {}),
        }
    return _write_manifest(
        folder,
        {
            "model": model_id,
            "arch": arch,
            "preset": preset,
            "version": version,
            "qualities": qualities,
            "recipe": recipe or {},
        },
    )


def _write_manifest(folder: Path, manifest: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)  # a release may reuse every file and write none
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    refresh()
    return folder


#: a variable-rate version's one weights file
VARIABLE_RATE_FILE = "model.safetensors"


def _write_variable_rate_version(
    models: Dict[int, LearnedImageCodec],
    arch: str,
    preset: str,
    version: str,
    root: Path,
    recipe: Optional[dict],
    rd_points: Optional[Dict[int, dict]],
    reused: Optional[Dict[int, str]],
    code_span: Optional[tuple] = None,
) -> Path:
    """A variable-rate model's version: one file, the manifest listing ``models``' codes (the measured ones), the
    codes spread over ``code_span`` (None: the preset's :attr:`~Preset.served_knob`)."""
    if reused:
        raise ValueError("a variable-rate version ships its one file; it cannot reuse per-quality files")
    if not models:
        raise ValueError("a variable-rate version needs its model (and the codes to list)")
    first, *others = models.values()
    state = first.state_dict()
    for other in others:
        if other is not first and any(not torch.equal(v, state[k]) for k, v in other.state_dict().items()):
            raise ValueError("a variable-rate version ships one file: every listed code must name the same weights")
    model_id = f"{arch}-{preset}"
    folder = root / model_id / version
    span = tuple(code_span) if code_span is not None else get_preset(arch, preset).served_knob.code_span
    for model in models.values():  # set on the models themselves: export_state computes the integer tables from it
        held = model.rate_knob.code_span
        if held != RateKnob.code_span and held != span:
            raise ValueError(f"a model holds code span {held}, the export asks for {span}: say which one")
        model.use_code_span(span)
    knob = first.rate_knob
    digest = save_weights(first, folder / VARIABLE_RATE_FILE, metadata={"model": model_id, "levels": str(knob.levels)})
    size = (folder / VARIABLE_RATE_FILE).stat().st_size
    qualities = {
        str(code): {
            "file": VARIABLE_RATE_FILE,
            "sha256": digest,
            "bytes": size,
            "lambda": knob.code_lambda(knob.check_code(code)),
            "rd": (rd_points or {}).get(code, {}),
        }
        for code in sorted(models)
    }
    manifest = {"model": model_id, "arch": arch, "preset": preset, "version": version, "qualities": qualities}
    variable: dict = {"levels": knob.levels}
    if knob.code_span != RateKnob.code_span:
        variable["code_span"] = list(knob.code_span)
    manifest.update(variable_rate=variable, recipe=recipe or {})
    return _write_manifest(folder, manifest)
