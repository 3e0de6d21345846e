"""Images in, container bytes out (and back): the one place that pads, batches, codes and crops.

::

    uint8 HxWx3 ──pad_to_multiple──▶ x ──analysis (batched, device, fp32)──▶ y
        y[i] ──canonical copy (CPU, float64, one image)──▶ LatentPayload ──container.pack──▶ bytes
    bytes ──container.unpack + header checks──▶ LatentPayload ──canonical copy──▶ y_hat[i]
        y_hat (batched) ──synthesis (device, fp32)──▶ x_hat ──crop, round──▶ uint8 HxWx3

The split into ``analyse`` / ``encode_latent`` and ``decode_latent`` / ``synthesise`` is what the service's
batching uses: the network passes run batched on the device while rANS coding runs per image on CPU threads.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model_store import cancellation, container, heap, metrics
from model_store.architectures.base import LatentPayload, LearnedImageCodec
from model_store.entropy.coding import CANONICAL_DTYPE
from model_store.entropy.integer import IntegerPathError
from model_store.errors import (
    BitstreamError,
    ImageInputError,
    UncodableLatentError,
    UnknownModelError,
    WeightsMismatchError,
)
from model_store.image_io import ImageLimits, check_dimensions
from model_store.refine import RefineConfig, effort_config, refine_latent
from model_store.tiling import TileGrid, apply_tiled, default_workers


def pad_amounts(height: int, width: int, multiple: int) -> Tuple[int, int]:
    """Rows and columns to add so both sides become multiples of ``multiple``."""
    return (-height) % multiple, (-width) % multiple


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right edges (cheaper to code than zeros; the decoder crops them away)."""
    pad_bottom, pad_right = pad_amounts(x.shape[-2], x.shape[-1], multiple)
    if pad_bottom == 0 and pad_right == 0:
        return x
    return F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")


def check_rgb_array(image: np.ndarray) -> None:
    """Refuse anything but the HxWx3 uint8 RGB arrays the codec works on."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageInputError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")


def image_to_tensor(image: np.ndarray) -> Tensor:
    check_rgb_array(image)
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)


def tensor_to_image(x: Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def canonical_copy(model: LearnedImageCodec) -> LearnedImageCodec:
    """The CPU float64 copy that runs the entropy-parameter path (everything but the heavy transforms)."""
    heavy = {name: model._modules[name] for name in model.heavy_modules if name in model._modules}
    try:
        for name in heavy:
            model._modules[name] = None
        clone = copy.deepcopy(model)
    finally:
        model._modules.update(heavy)
    return clone.to(device="cpu", dtype=CANONICAL_DTYPE).eval()


@dataclass(frozen=True)
class ModelIdentity:
    """What a stream's header says about the weights that made it."""

    model_id: str
    quality: int
    digest: bytes


class ImageCodec:
    """A loaded (model, quality) that turns RGB arrays into container streams and back.

    A variable-rate model (:mod:`model_store.architectures.variable_rate`) codes at any code of its knob: the
    identity's quality is only its default, ``compress(..., quality=k)`` picks another, the header's quality byte
    carries the code, and the decoder reads every code with the same weights.
    """

    def __init__(
        self,
        model: LearnedImageCodec,
        identity: ModelIdentity,
        device: str = "cpu",
        limits: ImageLimits = ImageLimits(),
        batch_invariant: bool = True,
        lmbda: Optional[float] = None,
        format_version: int = container.FORMAT_VERSION,
        tile_grid: TileGrid = TileGrid(),
        tile_workers: Optional[int] = None,
        banded_hyper: bool = True,
        latent_crc: bool = True,
    ):
        if format_version not in container.WRITABLE_VERSIONS:
            raise ValueError(
                f"format version {format_version} cannot be written (known: {container.WRITABLE_VERSIONS})"
            )
        self.identity = identity
        #: the container version streams are written in: the newest by default; an older one while some decoders
        #: in a fleet have not been upgraded yet (every decoder reads every older version)
        self.format_version = format_version
        #: large images get the banded hyper layout (``container.FLAG_BANDED_HYPER``: bounded memory); off while a
        #: fleet still has decoders that predate the flag (they refuse such streams)
        self.banded_hyper = banded_hyper
        #: integer-path streams fold the decoded latents into the coder CRC (``container.FLAG_LATENT_CRC``); off
        #: while a fleet still has decoders that predate the flag
        self.latent_crc = latent_crc
        #: the λ the weights were trained for: what encoder-side refinement (``effort``) optimises
        self.lmbda = lmbda
        self.batch_invariant = batch_invariant
        self.device = torch.device(device)
        self.limits = limits
        self.model = model.to(self.device).float().eval()
        self.canonical = canonical_copy(self.model)
        if self.canonical.integer_entropy is not None:  # exact anywhere: it runs (batched) where the model does
            self.canonical.integer_entropy = self.canonical.integer_entropy.to(self.device)
        #: the quality scale of a variable-rate model, None for a per-λ one
        self.rate_knob = self.model.rate_knob
        if self.rate_knob is not None:
            self.rate_knob.check_code(identity.quality)
        #: g_a / g_s run over this grid of tiles (:mod:`model_store.tiling`): bounded memory, and decoded pixels
        #: that do not depend on the thread count. Part of what a stream decodes to: change it only with the
        #: format (every decoder must cut the same tiles).
        self.tile_grid = tile_grid.aligned(self.model.pad_multiple // self.model.latent_stride)
        #: tiles computed side by side (default: this thread's torch thread count when the work starts)
        self.tile_workers = tile_workers
        _check_cancellation_between_layers(self.model)

    @classmethod
    def from_registry(
        cls, model: Optional[str], quality: int, device: str = "cpu", root: Optional[Path] = None, **kwargs
    ) -> "ImageCodec":
        from model_store import registry

        entry = registry.resolve(model, quality, root=root or registry.WEIGHTS_ROOT)
        return cls.from_entry(entry, device=device, **kwargs)

    @classmethod
    def from_entry(cls, entry, device: str = "cpu", **kwargs) -> "ImageCodec":
        """The codec of one installed weights file (a ``registry.WeightsEntry``, any version), sha256 checked."""
        from model_store import registry

        identity = ModelIdentity(entry.model_id, entry.quality, entry.digest)
        kwargs.setdefault("lmbda", entry.lmbda)
        return cls(registry.load_model(entry), identity, device=device, **kwargs)

    @property
    def pad_multiple(self) -> int:
        return self.model.pad_multiple

    # -- encoder ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def analyse(self, images: Sequence[np.ndarray]) -> Tensor:
        """g_a over same-sized images, tile by tile (:mod:`model_store.tiling`); the latents on the CPU (float32).

        Tiles are read from the uint8 images and padded as they are read (replicating the last row and column,
        as :func:`pad_to_multiple` does), so no float copy of a whole photo is ever made."""
        shapes = {img.shape for img in images}
        if len(shapes) != 1:
            raise ValueError(f"a batch must hold images of one size, got {sorted(shapes)}")
        h, w = images[0].shape[:2]
        check_dimensions(w, h, self.limits)
        for image in images:
            check_rgb_array(image)
        pad_bottom, pad_right = pad_amounts(h, w, self.pad_multiple)
        stride = self.model.latent_stride
        latent = ((h + pad_bottom) // stride, (w + pad_right) // stride)
        out = []
        for group in self._groups(len(images)):
            # (n, H, W, 3) uint8; one image is viewed, not copied (a 50 MP photo is 150 MB)
            pixels = _view_of(
                np.stack([images[i] for i in group]) if len(group) > 1 else np.ascontiguousarray(images[group[0]])[None]
            )
            y = torch.empty(len(group), self.model.latent_channels, *latent)

            def read(rows: slice, cols: slice) -> Tensor:
                r = torch.arange(rows.start, rows.stop).clamp_(max=h - 1)
                c = torch.arange(cols.start, cols.stop).clamp_(max=w - 1)
                tile = pixels.index_select(1, r).index_select(2, c).permute(0, 3, 1, 2)
                return tile.to(self.device).float().div_(255.0)

            def write(rows: slice, cols: slice, piece: Tensor) -> None:
                y[..., rows, cols] = piece.float().cpu()

            apply_tiled(
                self.model.analysis, read, write, latent, self.tile_grid, stride, 1, self._workers(), _trimmer(h * w)
            )
            out.append(y)
        return torch.cat(out)

    def _workers(self) -> int:
        return self.tile_workers or default_workers()

    def _groups(self, n: int) -> List[List[int]]:
        """Which images of a batch go through the heavy transforms together.

        Convolution and attention kernels (oneDNN, cuDNN) pick batch-size-dependent algorithms, which moves
        float results by ~1e-6: enough to flip ``round(y - μ)`` for a few of the ~200k latents of a photo (a
        different, equally valid stream) or a decoded pixel by one level. The contract is that a batch gives the
        same bytes and pixels as one-by-one, so by default each image gets its own call; batching still pays
        off in the queueing, the thread-pool entropy coding and the Python overhead it amortises.
        ``batch_invariant=False`` runs the transforms batched for GPU throughput, at the cost of that contract.
        """
        return [list(range(n))] if not self.batch_invariant else [[i] for i in range(n)]

    def quality_of(self, quality: Optional[int]) -> int:
        """The quality a call codes at: this codec's own unless ``quality`` names another code of a variable-rate
        model's knob; a per-λ codec has exactly one (a different one is an UnknownModelError, not ignored)."""
        if quality is None or quality == self.identity.quality:
            return self.identity.quality
        if self.rate_knob is None:
            raise UnknownModelError(
                f"{self.identity.model_id} q{self.identity.quality} codes at its own quality only, not q{quality}"
            )
        try:
            return self.rate_knob.check_code(quality)
        except ValueError as exc:
            raise UnknownModelError(f"{self.identity.model_id}: {exc}") from None

    def lambda_of(self, quality: int) -> Optional[float]:
        """The λ a stream of ``quality`` is coded for (what ``effort`` and ``rd_cost`` weigh)."""
        return self.rate_knob.code_lambda(quality) if self.rate_knob is not None else self.lmbda

    def encode_latent(self, y: Tensor, height: int, width: int, quality: Optional[int] = None) -> bytes:
        """Entropy-code one latent (``(C, h, w)`` or ``(1, C, h, w)``) into a complete container stream;
        ``quality``: a variable-rate model's knob code (default: the codec's own quality)."""
        return self.encode_latent_and_reconstruct(y, height, width, quality)[0]

    @torch.no_grad()
    def encode_latent_and_reconstruct(
        self, y: Tensor, height: int, width: int, quality: Optional[int] = None
    ) -> Tuple[bytes, Tensor]:
        """``encode_latent`` and the ŷ ``(1, C, h, w)`` (canonical dtype) every decoder of the stream will get:
        the coding loop gives both sides the same values, so checking a stream's pixels needs no decode."""
        return self.encode_latents_and_reconstruct([y], height, width, [quality])[0]

    def encode_latents(
        self, ys: Sequence[Tensor], height: int, width: int, qualities: Optional[Sequence[Optional[int]]] = None
    ) -> List[bytes]:
        """:meth:`encode_latent` of several same-sized images (one quality each, default the codec's own) in one
        coding loop where the model batches entropy coding (``batches_entropy_coding``): the same streams as one
        by one, in less time per image."""
        return [stream for stream, _ in self.encode_latents_and_reconstruct(ys, height, width, qualities)]

    @torch.no_grad()
    def encode_latents_and_reconstruct(
        self, ys: Sequence[Tensor], height: int, width: int, qualities: Optional[Sequence[Optional[int]]] = None
    ) -> List[Tuple[bytes, Tensor]]:
        qualities = [self.quality_of(q) for q in (qualities if qualities is not None else [None] * len(ys))]
        knobs = [q if self.rate_knob is not None else None for q in qualities]
        latents = [y.reshape(1, *y.shape[-3:]) for y in ys]
        if self.canonical.batches_entropy_coding:
            coded = self.canonical.compress_latents_and_reconstruct(latents, self.banded_hyper, knobs, self.latent_crc)
        else:
            coded = [
                self.canonical.compress_latent_and_reconstruct(y, allow_banded=self.banded_hyper, knob=k)
                for y, k in zip(latents, knobs)
            ]
        return [(self._pack(payload, height, width, q), y_hat) for (payload, y_hat), q in zip(coded, qualities)]

    def _pack(self, payload: LatentPayload, height: int, width: int, quality: int) -> bytes:
        pad_bottom, pad_right = pad_amounts(height, width, self.pad_multiple)
        header = container.StreamHeader(
            model_id=self.identity.model_id,
            weights_digest=self.identity.digest,
            quality=quality,
            height=height,
            width=width,
            pad_bottom=pad_bottom,
            pad_right=pad_right,
            latent_shapes=(payload.z_shape, payload.y_shape),
            payload_lengths=(len(payload.z_string), len(payload.y_string)),
            coder_crc=payload.index_crc,
            payload_crc=0,
            flags=(container.FLAG_BANDED_HYPER if payload.banded_hyper else 0)
            | (container.FLAG_LATENT_CRC if payload.latent_crc else 0),
        )
        return container.pack(header, [payload.z_string, payload.y_string], version=self.format_version)

    def compress_batch(
        self, images: Sequence[np.ndarray], effort: int = 0, quality: Optional[int] = None
    ) -> List[bytes]:
        """Streams for same-sized images; ``effort`` > 0 searches for better latents first (slower encoding,
        same decoder; see :mod:`model_store.refine`); ``quality``: a variable-rate model's knob code."""
        config = effort_config(effort)  # refuse a bad effort before the network pass
        quality = self.quality_of(quality)
        if config.steps and self.lambda_of(quality) is None:
            raise ValueError("effort > 0 needs the λ these weights were trained for (ImageCodec(lmbda=...))")
        y = self.analyse(images)
        h, w = images[0].shape[:2]
        heap.trim_after_large(h * w)  # the tile workers' freed arenas, before the entropy path allocates its own
        streams = self.encode_latents(list(y), h, w, [quality] * len(images))
        if config.steps:
            streams = [
                self._refined(img, y[i : i + 1], s, config, quality) for i, (img, s) in enumerate(zip(images, streams))
            ]
        return streams

    def _refined(self, image: np.ndarray, y: Tensor, plain: bytes, config: RefineConfig, quality: int) -> bytes:
        """The searched stream of one image, or ``plain`` if the search did not lower the real cost. One image
        at a time, like the transforms, so a batch gives the same bytes as one-by-one."""
        h, w = image.shape[:2]
        x = pad_to_multiple(image_to_tensor(image)[None].to(self.device), self.pad_multiple)
        knob = quality if self.rate_knob is not None else None
        latent = refine_latent(self.model, x, y, h, w, self.lambda_of(quality), config, knob=knob)
        try:
            searched = self.encode_latent(latent.cpu(), h, w, quality)
        except (IntegerPathError, UncodableLatentError):
            # a search that ran away (latents far outside anything g_a makes) leaves the integer path's exact
            # range or the coder's symbol range: that candidate cannot be coded, the analysis latent's stream can
            return plain
        return min((plain, searched), key=lambda stream: self.rd_cost(image, stream))

    def rd_cost(self, image: np.ndarray, stream: bytes, decoded: Optional[np.ndarray] = None) -> float:
        """The weights' objective ``λ·MSE(8-bit) + bpp`` of a real stream of ``image`` (at the λ of the stream's
        quality), decoded as any decoder would decode it (pass ``decoded`` when the caller already has it)."""
        if decoded is None:
            decoded = self.decompress(stream)
        lmbda = self.lambda_of(container.parse_header(stream).quality)
        return lmbda * metrics.mse(decoded, image) + bits_per_pixel(stream, *image.shape[:2])

    def compress(self, image: np.ndarray, effort: int = 0, quality: Optional[int] = None) -> bytes:
        return self.compress_batch([image], effort=effort, quality=quality)[0]

    # -- decoder ---------------------------------------------------------------------------------------------
    def check_header(self, header: container.StreamHeader) -> None:
        """Everything that can be refused before decoding: identity, limits, shape consistency."""
        same_quality = header.quality == self.identity.quality or (
            self.rate_knob is not None and self.rate_knob.has_code(header.quality)
        )
        if header.model_id != self.identity.model_id or not same_quality:
            raise UnknownModelError(
                f"stream was made by {header.model_id} q{header.quality}; "
                f"this codec is {self.identity.model_id} q{self.identity.quality}"
            )
        if not header.names_weights(self.identity.digest):
            raise WeightsMismatchError(
                f"stream was made by {header.model_id} q{header.quality} with weights "
                f"{header.weights_digest.hex()[:12]}…, loaded weights are {self.identity.digest.hex()[:12]}…"
            )
        check_dimensions(header.width, header.height, self.limits)
        expected_pad = pad_amounts(header.height, header.width, self.pad_multiple)
        if (header.pad_bottom, header.pad_right) != expected_pad:
            raise BitstreamError("padding in the header does not match the model's multiple")
        z_shape, y_shape = self.model.expected_shapes(*header.padded_size)
        if tuple(header.latent_shapes) != (z_shape, y_shape):
            raise BitstreamError(
                f"latent shapes {header.latent_shapes} do not match the image size (expected {(z_shape, y_shape)})"
            )
        if header.banded_hyper and not self.model.hyper_bands_needed(*z_shape[1:]):
            raise BitstreamError(f"the banded-hyper flag is set, but {header.model_id} codes this size whole")

    def decode_latent(self, data: bytes) -> Tuple[Tensor, container.StreamHeader]:
        """Parse, check and entropy-decode one stream; returns ``y_hat`` (1, C, h, w) float32 and its header."""
        return self.decode_latents([data])[0]

    @torch.no_grad()
    def decode_latents(self, streams: Sequence[bytes]) -> List[Tuple[Tensor, container.StreamHeader]]:
        """:meth:`decode_latent` of several streams, streams of one latent layout in one coding loop where the
        model batches entropy coding. Any bad stream fails the call (decode one by one to tell which)."""
        payloads, headers = [], []
        for data in streams:
            self.check_header(container.parse_header(data))
            stream = container.unpack(data)
            header = stream.header
            headers.append(header)
            payloads.append(
                LatentPayload(
                    z_string=stream.payloads[0],
                    y_string=stream.payloads[1],
                    z_shape=header.latent_shapes[0],
                    y_shape=header.latent_shapes[1],
                    index_crc=header.coder_crc,
                    banded_hyper=header.banded_hyper,
                    knob=header.quality if self.rate_knob is not None else None,
                    latent_crc=header.latent_crc,
                )
            )
        groups: dict = {}
        for i, payload in enumerate(payloads):
            key = (
                (payload.y_shape, payload.z_shape, payload.banded_hyper) if self.canonical.batches_entropy_coding else i
            )
            groups.setdefault(key, []).append(i)
        y_hats: List[Optional[Tensor]] = [None] * len(payloads)
        for indices in groups.values():
            try:
                decoded = self.canonical.decompress_latents([payloads[i] for i in indices])
            except (RuntimeError, ValueError, IndexError) as exc:  # rANS refusing a forged payload
                raise BitstreamError(f"payload could not be entropy-decoded: {exc}") from None
            for i, y_hat in zip(indices, decoded):
                y_hats[i] = y_hat.float()
        return [(y_hat, header) for y_hat, header in zip(y_hats, headers)]  # type: ignore[misc]

    @torch.no_grad()
    def synthesise(self, y_hats: Sequence[Tensor], headers: Sequence[container.StreamHeader]) -> List[np.ndarray]:
        """g_s over same-shaped latents, tile by tile, each tile rounded to 8 bits and cropped to its image's
        size straight into the uint8 output (no float copy of a whole photo). A variable-rate model's g_s is
        conditioned on each image's code (the header's quality) where it has a synthesis modulation."""
        y = torch.cat(list(y_hats))
        codes = [hd.quality for hd in headers] if self.rate_knob is not None else None
        images = [np.empty((hd.height, hd.width, 3), np.uint8) for hd in headers]
        stride = self.model.latent_stride
        for group in self._groups(len(images)):
            y_group = y[group].to(self.device)

            def read(rows: slice, cols: slice) -> Tensor:
                return y_group[..., rows, cols]

            def write(rows: slice, cols: slice, piece: Tensor) -> None:
                for k, i in enumerate(group):
                    height, width = images[i].shape[:2]
                    if rows.start < height and cols.start < width:
                        kept = piece[k, :, : height - rows.start, : width - cols.start]
                        images[i][rows.start : rows.start + kept.shape[1], cols.start : cols.start + kept.shape[2]] = (
                            tensor_to_image(kept)
                        )

            def synthesis(tile: Tensor, knob=None if codes is None else [codes[i] for i in group]) -> Tensor:
                return self.model.synthesis(tile, knob)

            latent = tuple(y_group.shape[-2:])
            pixels = max(hd.width * hd.height for hd in headers)
            apply_tiled(synthesis, read, write, latent, self.tile_grid, 1, stride, self._workers(), _trimmer(pixels))
        return images

    def decompress_batch(self, streams: Sequence[bytes]) -> List[np.ndarray]:
        decoded = self.decode_latents(streams)
        heap.trim_after_large(max((h.width * h.height for _, h in decoded), default=0))  # before g_s's tile threads
        groups: dict = {}
        for i, (y_hat, _) in enumerate(decoded):
            groups.setdefault(tuple(y_hat.shape), []).append(i)
        out: List[Optional[np.ndarray]] = [None] * len(streams)
        for indices in groups.values():
            images = self.synthesise([decoded[i][0] for i in indices], [decoded[i][1] for i in indices])
            for i, img in zip(indices, images):
                out[i] = img
        return out  # type: ignore[return-value]

    def decompress(self, data: bytes) -> np.ndarray:
        return self.decompress_batch([data])[0]


def _trimmer(pixels: int) -> Optional[Callable[[], None]]:
    """What a tile worker runs after each tile of a large photo: give the heap back (:mod:`model_store.heap`).
    Measured at 50 MP: the synthesis peaked at 2.0 GiB above idle with ~1.1 GiB live, the rest kept by arenas."""
    return heap.trim_heap if pixels >= heap.TRIM_FROM_PIXELS else None


def _view_of(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory. Read-only arrays (Pillow's) are fine: the codec never writes to its
    input, so torch's warning about non-writable arrays does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


@functools.lru_cache(maxsize=None)
def decoder_kind(device: str) -> Tuple[str, bool]:
    """(what decoded pixels depend on besides the stream, whether one such decoder always gives the same bytes).

    On a CPU each tile runs with one intra-op thread, so pixels do not depend on batch size, thread count or
    process; they may depend on the instruction set oneDNN dispatches to and on the torch build, which the kind
    names. CUDA kernels (cuDNN's algorithm choice, atomics) give no such promise: not byte-stable.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        return f"cpu/{torch.backends.cpu.get_cpu_capability()}/torch-{torch.__version__}", True
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return f"{dev.type}/{name}/torch-{torch.__version__}", False


def _check_cancellation_between_layers(model: LearnedImageCodec) -> None:
    """Let an abandoned request stop inside a tile too: every top-level layer of g_a / g_s checks the thread's
    cancellation token before it runs (a no-op when none is bound). A large tile takes about a second on one
    core; between layers the wait for a stop is a fraction of that."""
    for name in model.heavy_modules:
        module = model._modules.get(name)
        for layer in module.children() if module is not None else ():
            layer.register_forward_pre_hook(lambda *_: cancellation.check())


def load_codec(model: Optional[str], quality: int, device: str = "cpu", root: Optional[Path] = None) -> ImageCodec:
    """Load a shipped (model, quality); ``model=None`` is the default model."""
    return ImageCodec.from_registry(model, quality, device=device, root=root)


def codec_for_stream(data: bytes, device: str = "cpu", root: Optional[Path] = None) -> ImageCodec:
    """The codec that can decode ``data``: the installed weights, of whatever version, whose sha256 the header
    names (streams outlive weight upgrades); the newest version of its model and quality if none match, so the
    decoder then refuses it with a clear :class:`WeightsMismatchError`."""
    from model_store import registry

    header = container.parse_header(data)
    root = root or registry.WEIGHTS_ROOT
    entry = registry.find_by_digest(header.weights_digest, root=root)
    if entry is None or not entry.serves(header.model_id, header.quality):
        return load_codec(header.model_id, header.quality, device=device, root=root)
    return ImageCodec.from_entry(entry, device=device)


def bits_per_pixel(stream: bytes, height: int, width: int) -> float:
    return 8.0 * len(stream) / float(height * width) if height * width else math.nan
