"""Portable Gaussian symbol coding: one rANS string per latent, encoder and decoder driven by the same loop.

Why this exists (CompressAI issues #279 / #309): rANS decodes correctly only when the decoder feeds it exactly
the scale indexes the encoder used. Those indexes come from neural networks (hyper synthesis, context model,
parameter nets) whose float results change with batch size, thread count and device. One flipped index
desynchronises the stream and the image becomes garbage. We design that out in three ways:

1. The *entropy-parameter path* (everything between the transmitted ``z_hat`` and the coder inputs) runs on the
   CPU, one image at a time, in float64 (:data:`CANONICAL_DTYPE`), on both sides. A float64 difference large
   enough to move a scale across a table boundary needs ~1e-15 relative error exactly at the boundary.
2. Encoder and decoder run the *same* schedule code: an architecture writes one ``code_latent(y, z_hat, coder)``
   loop, and ``coder`` is either a :class:`GaussianSymbolEncoder` (knows ``y``) or a
   :class:`GaussianSymbolDecoder` (reads symbols from the stream). Both return the same ``y_hat`` for every
   step, so context models see identical inputs on both sides by construction.
3. Both sides fold every scale index into a CRC32. The encoder stores it in the container; the decoder compares
   after decoding and raises :class:`~model_store.errors.CoderMismatchError` instead of returning garbage.
   Scale indexes alone miss a divergence in the *means* (the symbols decode fine, ŷ = symbol + μ comes out
   slightly off, and so does every pixel). Where ŷ is exact on every machine (the integer entropy path), coders
   made with ``cover_latents`` also fold each decoded latent, on its fixed-point grid, into the same CRC
   (:meth:`GaussianSymbolEncoder.fold_latents`; the stream says so with ``container.FLAG_LATENT_CRC``). The
   float64 path leaves them out: its means may differ in the last bit between machines, which moves no symbol
   and no pixel, and must not fail a decode.

Symbol convention (same as CompressAI): ``symbol = round(y - mean)``, ``y_hat = symbol + mean``; values outside
a CDF's support are escape-coded by the rANS coder itself.
"""

from __future__ import annotations

import zlib
from typing import List, Optional, Protocol

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import GaussianConditional
from torch import Tensor

from model_store import cancellation
from model_store.errors import CoderMismatchError, UncodableLatentError

CANONICAL_DTYPE = torch.float64
"""Precision of the entropy-parameter path on both sides of the channel."""


class _CdfTables:
    """The Gaussian conditional's integer CDF tables as Python lists, converted once per coder."""

    def __init__(self, gaussian: GaussianConditional):
        if gaussian.quantized_cdf.numel() == 0:
            raise RuntimeError("GaussianConditional has no CDF tables: load weights with their tables or update()")
        self.gaussian = gaussian
        self.cdf_length = gaussian.cdf_length.reshape(-1).int().tolist()
        # rows are zero-padded to the longest CDF; the coder reads only cdf_length entries of each, and
        # converting the padding on every call was a third of the wavefront decoder's time
        self.cdf = [row[:n] for row, n in zip(gaussian.quantized_cdf.tolist(), self.cdf_length)]
        self.offset = gaussian.offset.reshape(-1).int().tolist()

    def indexes(self, scales: Tensor) -> Tensor:
        """Same indexes as ``GaussianConditional.build_indexes`` in one pass instead of 63.

        compressai starts at ``len(table) - 1`` and subtracts one for every ``table[:-1]`` entry ``>= scale``,
        which for a sorted table is the count of entries ``< scale``: a left-sided ``searchsorted``.
        """
        bounded = self.gaussian.lower_bound_scale(scales)
        table = self.gaussian.scale_table[:-1].to(bounded.dtype)
        return torch.searchsorted(table, bounded.contiguous(), side="left").to(torch.int32)


#: Largest |symbol| the codec will hand to the rANS coder. A trained model's centred latents stay within a few
#: hundred; beyond 2**30 compressai's escape coding overflows int32 and never terminates (NaN casts to INT_MIN),
#: so anything near that is a broken model, refused with a typed error instead of a hang.
SYMBOL_LIMIT = 2.0**20


def check_codable(values: Tensor, what: str) -> None:
    """Raise UncodableLatentError unless every value is finite and within ``SYMBOL_LIMIT``."""
    if values.numel() and not bool((values.abs() <= SYMBOL_LIMIT).all()):  # NaN compares false: caught too
        raise UncodableLatentError(
            f"{what} has non-finite values or values beyond +/-{SYMBOL_LIMIT:g}: the model is broken or diverged"
        )


def _crc_indexes(crc: int, indexes: Tensor) -> int:
    return zlib.crc32(np.ascontiguousarray(indexes.reshape(-1).numpy(), dtype="<i4").tobytes(), crc)


def _crc_latents(crc: int, fixed: Tensor) -> int:
    """Fold integer-valued latents (float64 on a fixed-point grid, ``|v| < 2^53``) in as little-endian int64."""
    return zlib.crc32(np.ascontiguousarray(fixed.detach().cpu().reshape(-1).numpy(), dtype="<i8").tobytes(), crc)


class _CoderCheck:
    """The running coder CRC both coders keep: every scale index, and with ``cover_latents`` every decoded latent
    too (see the module docstring, point 3)."""

    def __init__(self, cover_latents: bool):
        self.cover_latents = cover_latents
        self.index_crc = 0

    def fold_latents(self, fixed: Tensor) -> None:
        """Fold one group's decoded latents, as exact integers (the integer path's fixed-point ŷ), in coding order;
        a no-op for a coder whose stream does not cover them."""
        if self.cover_latents:
            self.index_crc = _crc_latents(self.index_crc, fixed)


class GaussianSymbolCoder(Protocol):
    """What an architecture's ``code_latent`` loop talks to; see the module docstring."""

    def code(self, scales: Tensor, means: Optional[Tensor], y: Optional[Tensor]) -> Tensor:
        """Code (or decode) one group of latent values and return their reconstruction ``y_hat``.

        ``scales`` and ``means`` have the group's shape; ``y`` is the encoder's exact values (``None`` on the
        decoder side, where the values come from the stream instead).
        """
        ...

    def fold_latents(self, fixed: Tensor) -> None:
        """Fold a group's decoded latents (exact integers) into the coder CRC when the stream covers them."""
        ...

    @property
    def is_encoder(self) -> bool: ...


class GaussianSymbolEncoder(_CoderCheck):
    """Collects groups in coding order and flushes them as one rANS string.

    Symbols and indexes are buffered in Python lists and handed to the rANS coder in batches of at least
    ``batch_symbols``: the coder converts the CDF tables on every call, which for a 141-step wavefront cost more
    than the coding itself, while one call for a whole 50 MP photo kept ~19 M list entries (300 MB) alive. The
    coder buffers what it is given (6 bytes a symbol) and encodes everything at :meth:`finish`, so the string is
    the same however the calls are cut.
    """

    is_encoder = True

    def __init__(self, gaussian: GaussianConditional, batch_symbols: int = 1 << 20, cover_latents: bool = False):
        super().__init__(cover_latents)
        self._tables = _CdfTables(gaussian)
        self._rans = BufferedRansEncoder()
        self._batch_symbols = batch_symbols
        self._symbols: List[int] = []
        self._indexes: List[int] = []
        self.symbol_count = 0

    def code(self, scales: Tensor, means: Optional[Tensor], y: Optional[Tensor]) -> Tensor:
        cancellation.check()  # one group is one wavefront step / slice / chunk: an abandoned request stops here
        if y is None:
            raise ValueError("the encoder needs the latent values y")
        indexes = self._tables.indexes(scales)
        centred = y if means is None else y - means
        check_codable(centred, "the latent")
        symbols = torch.round(centred).to(torch.int32)
        self._symbols.extend(symbols.reshape(-1).tolist())
        self._indexes.extend(indexes.reshape(-1).tolist())
        self.index_crc = _crc_indexes(self.index_crc, indexes)
        self.symbol_count += symbols.numel()
        if len(self._symbols) >= self._batch_symbols:
            self._hand_over()
        y_hat = symbols.to(scales.dtype)
        return y_hat if means is None else y_hat + means

    def _hand_over(self) -> None:
        if not self._symbols:
            return
        t = self._tables
        self._rans.encode_with_indexes(self._symbols, self._indexes, t.cdf, t.cdf_length, t.offset)
        self._symbols, self._indexes = [], []

    def finish(self) -> bytes:
        self._hand_over()
        return self._rans.flush()


class GaussianSymbolDecoder(_CoderCheck):
    """Reads groups back from one rANS string in the order the encoder wrote them."""

    is_encoder = False

    def __init__(self, gaussian: GaussianConditional, data: bytes, cover_latents: bool = False):
        super().__init__(cover_latents)
        self._tables = _CdfTables(gaussian)
        self._rans = RansDecoder()
        self._rans.set_stream(data)

    def code(self, scales: Tensor, means: Optional[Tensor], y: Optional[Tensor] = None) -> Tensor:
        cancellation.check()
        indexes = self._tables.indexes(scales)
        # The coder converts every CDF row it is given on every call; a wavefront step uses only a few rows,
        # so hand it just those (remapped). Same CDFs, same symbols, a fraction of the conversion cost.
        used, local = torch.unique(indexes.reshape(-1), return_inverse=True)
        rows = used.tolist()
        values = self._rans.decode_stream(
            local.tolist(),
            [self._tables.cdf[r] for r in rows],
            [self._tables.cdf_length[r] for r in rows],
            [self._tables.offset[r] for r in rows],
        )
        self.index_crc = _crc_indexes(self.index_crc, indexes)
        y_hat = torch.tensor(values, dtype=scales.dtype).reshape(scales.shape)
        return y_hat if means is None else y_hat + means

    def verify(self, expected_crc: int) -> None:
        """Fail loudly if this side derived different coder inputs than the encoder."""
        if self.index_crc != expected_crc:
            raise CoderMismatchError(
                "entropy-coder inputs differ from the encoder's (coder CRC "
                f"{self.index_crc:08x} != {expected_crc:08x}); the stream cannot be decoded faithfully here"
            )
