"""The hyperprior's share of the entropy parameters, ``ψ = h_s(ẑ)`` through the first parameter conv, row by row.

Why this exists: the coding loop needs, at every latent position, the hyperprior half of the first 1x1
entropy-parameter conv (``hyper_term``, :class:`~model_store.entropy.causal_context.PositionParams`). Computed for
the whole map at once that is ψ (2M float64 per position) plus ``hyper_term`` (10M/3 per position) plus h_s's own
intermediates: ~1.5 GB for a 50 MP photo on erstc-small, which alone broke the service's memory bound for large
uploads. The wavefront only reads the rows it is coding, so the hyperprior can be produced in bands of rows just
ahead of the front and dropped behind it.

Two layouts, named in the stream (``container.FLAG_BANDED_HYPER``) because they round differently:

* **whole map** (every stream without the flag, i.e. every stream made before it existed): ``h_s`` over the whole
  hyper-latent, one GEMM for ``hyper_term``; exactly the computation older decoders run.
* **banded**: the hyper-latent is cut by :data:`HYPER_BAND_GRID` (a function of its size only, like the transform
  tiles of :mod:`model_store.tiling`): ``h_s`` runs per tile with ``halo`` hyper-latents of context on each side,
  tiles of one grid row form a band, and each band gets its own ``hyper_term`` GEMM when the coding front first
  reaches it. ψ matches the whole-map one to float rounding (the tiles sit on the window grid of every h_s stage;
  tests/test_hyper_bands.py), so the model sees what it was trained on, but the last bits differ, hence the flag.
  An image whose hyper-latent fits one tile computes the same numbers either way and is written without the flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from model_store import cancellation
from model_store.tiling import TileGrid, axis_spans, tiles

#: Hyper-latent units (64 px) every tile border falls on: 256 px, a multiple of the window grid of every h_a / h_s
#: stage here (window 4 or 8 at stride 32, 4 at stride 16). Cut off this grid, TIC's ψ moved by up to 2.3.
HYPER_TILE_MULTIPLE = 4
#: The banded layout's tiles: 32 hyper-latents (2048 px) kept, 8 of context each side (4 were too few for
#: TIC+'s h_s: ψ moved by 2e-5; from 6 on it equals the whole map's). Measured at 12 MP: the bands' h_s costs 1.3x
#: the whole map's (24 kept: 1.7x). Part of the banded layout's definition: changing it changes the coder inputs
#: of banded streams, so it would need a new flag.
HYPER_BAND_GRID = TileGrid(core=32, halo=8, large_core=32, large_from=0, multiple=HYPER_TILE_MULTIPLE)
#: h_a's tiles (encoder only, so free to change): the same geometry.
HYPER_ANALYSIS_GRID = HYPER_BAND_GRID


def hyper_grid(model: nn.Module, grid: TileGrid) -> TileGrid:
    """``grid`` aligned to ``model``'s window grid at the hyper-latent's stride as well."""
    return grid.aligned(math.lcm(HYPER_TILE_MULTIPLE, max(1, model.pad_multiple // model.hyper_stride)))


def band_grid(model: nn.Module) -> TileGrid:
    """:data:`HYPER_BAND_GRID` for ``model``."""
    return hyper_grid(model, HYPER_BAND_GRID)


def needs_bands(model: nn.Module, z_height: int, z_width: int) -> bool:
    """True when the banded layout differs from the whole map (more than one tile), i.e. when the flag is set."""
    return len(tiles(z_height, z_width, band_grid(model))) > 1


@dataclass
class _Band:
    first_row: int  # latent rows [first_row, stop_row)
    stop_row: int
    term: Optional[Tensor] = None  # ((stop_row - first_row) * w, E1) once computed


class HyperTerm:
    """``hyper_term`` rows of the positions a coding step asks for, in the whole-map or the banded layout."""

    def __init__(
        self,
        h_s: Callable[[Tensor], Tensor],
        term: Union[Tensor, Callable[[Tensor], Tensor]],
        z_hat: Tensor,
        y_shape: Tuple[int, int, int],
        grid: Optional[TileGrid],
    ):
        """``term``: the first parameter conv's ψ half ``(E1, 2M)`` (the float path: ``ψ @ term.T``) or a function
        of ψ's rows ``(P, 2M)`` (the integer path's exact accumulator); ``grid``: the banded layout's
        :func:`band_grid`, or ``None`` for the whole map."""
        self.h_s = h_s
        self.term = (lambda psi: psi @ term.t()) if isinstance(term, Tensor) else term
        self.z_hat = z_hat
        c, self.h, self.w = y_shape
        self.psi_channels = 2 * c
        self.per_z = self.h // z_hat.shape[-2] if z_hat.shape[-2] else 1
        self.whole: Optional[Tensor] = None
        self.bands: List[_Band] = []
        if grid is not None:
            self.row_spans, self.col_spans = axis_spans(z_hat.shape[-2], z_hat.shape[-1], grid)  # a band: a row span
            self.bands = [_Band(r.keep_start * self.per_z, r.keep_stop * self.per_z) for r in self.row_spans]
            self._band_of_row = torch.empty(self.h, dtype=torch.long, device=z_hat.device)
            for k, band in enumerate(self.bands):
                self._band_of_row[band.first_row : band.stop_row] = k
        else:
            psi = h_s(z_hat)
            self._check(psi, self.h, self.w)
            self.whole = self.term(psi[0].flatten(1).t())  # (H*W, E1): one GEMM, as every older decoder runs it

    def _check(self, psi: Tensor, h: int, w: int) -> None:
        if tuple(psi.shape[1:]) != (self.psi_channels, h, w):
            raise ValueError(f"hyper synthesis gives {tuple(psi.shape[1:])}, expected {(self.psi_channels, h, w)}")

    def rows(self, positions: Tensor) -> Tensor:
        """``(P, E1)`` hyper terms at flat latent ``positions``."""
        if self.whole is not None:
            return self.whole.index_select(0, positions)
        which = self._band_of_row.index_select(0, positions // self.w)
        out = None
        for k in torch.unique(which).tolist():
            band = self._computed(k)
            mask = which == k
            local = positions[mask] - band.first_row * self.w
            part = band.term.index_select(0, local)  # type: ignore[union-attr]
            if out is None:
                out = part.new_empty(positions.numel(), part.shape[1])
            out[mask] = part
        return out  # type: ignore[return-value]

    def release_above(self, row: int) -> None:
        """Drop the bands that lie wholly above latent ``row`` (no later step reads them)."""
        for band in self.bands:
            if band.stop_row <= row:
                band.term = None

    def _computed(self, k: int) -> _Band:
        band = self.bands[k]
        if band.term is None:
            cancellation.check()
            rows = self.row_spans[k]
            psi = self.z_hat.new_empty(1, self.psi_channels, band.stop_row - band.first_row, self.w)
            for cols in self.col_spans:
                piece = self.h_s(self.z_hat[..., rows.start : rows.stop, cols.start : cols.stop])
                self._check(piece, (rows.stop - rows.start) * self.per_z, (cols.stop - cols.start) * self.per_z)
                top, left = (rows.keep_start - rows.start) * self.per_z, (cols.keep_start - cols.start) * self.per_z
                height, width = band.stop_row - band.first_row, (cols.keep_stop - cols.keep_start) * self.per_z
                psi[..., :, cols.keep_start * self.per_z : cols.keep_stop * self.per_z] = piece[
                    ..., top : top + height, left : left + width
                ]
            band.term = self.term(psi[0].flatten(1).t())
        return band
