"""Run g_a and g_s over overlapping tiles, so memory is bounded by the tile, not by the photo.

Why: the transforms see the whole image at once. A 12 MP phone photo needed 4.4 GB of peak memory to compress on
the CPU, a 50 MP one would need ~15 GB; a service that admits such uploads must bound it.

How, and why the result matches the untiled transform::

        latent columns  0 ......... core ......... 2·core ......... 3·core ...
        tile 1          [=== keep ===|halo]
        tile 2                  [halo|=== keep ===|halo]
        tile 3                                [halo|=== keep ===]

The grid lives in *latent* units (``core`` latent rows/columns kept per tile, ``halo`` more of context on each side
that is computed and thrown away). Every tile border is a multiple of ``pad_multiple / stride`` latents, so each
tile is cut exactly on the window grid of every Swin stage: a window sees the same pixels in the tile as in the
whole image, and only positions within reach of the tile's own border (shifted-window masks, zero padding of
convolutions) see different context. Those lie in the halo, which is discarded. The halo of 8 latents (128 px)
covers the receptive field of every shipped transform (changing pixels 128 px away moves no latent), so the
tiled latents equal the whole-image ones up to float rounding, and the streams are the same
(``tests/test_tiling.py``, every shipped model).

Memory: the caller reads each tile from the uint8 image and writes each kept piece into the uint8 output
(:func:`apply_tiled` takes a reader and a writer), so only tiles are ever in float. Time: tiles along an axis are
cut to equal sizes (:func:`balanced_core`) and run side by side on worker threads.

Determinism: the grid is a function of the image size only (never of memory, threads or batch), so an encoder
and a decoder anywhere cut the same tiles, and every tile runs with one intra-op thread (:func:`fixed_threads`),
which makes decoded pixels independent of the thread count (oneDNN's kernels split their sums by the number of
threads, which moved erstc-small's decoded pixels by one level between 1 and 2 threads).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from model_store import cancellation


@dataclass(frozen=True)
class TileGrid:
    """Tile sizes in latent units (one latent = ``stride`` pixels, 16 for every model here).

    ``core`` latents are kept per tile and ``halo`` more are computed on each side: 8 latents (128 px) cover the
    receptive field of every shipped transform, so tiles reproduce the untiled latents exactly (float rounding
    aside; tests/test_tiling.py). Small tiles split a photo across threads but recompute more halo; images whose
    latent has a side above ``large_from`` use ``large_core`` (recomputed area 2.1x -> 1.4x for a 12 MP photo).
    Defaults: 512 px tiles up to ~1.5 MP, 1024 px above; a 1024 px tile with its halo peaks at ~0.4 GB in
    erstc-small's transforms (benchmarks/results/large_images.md).
    """

    core: int = 32
    halo: int = 8
    large_core: int = 64
    large_from: int = 96
    #: tile borders fall on multiples of this (latent units): the model's window grid, set by :meth:`aligned`
    multiple: int = 1

    def __post_init__(self) -> None:
        if min(self.core, self.large_core) < 1 or self.halo < 0:
            raise ValueError(f"a tile grid needs cores >= 1 and halo >= 0, got {self}")

    def aligned(self, latent_multiple: int) -> "TileGrid":
        """The grid rounded up so tile borders fall on the model's window grid (``pad_multiple / stride``)."""
        up = lambda n: -(-n // latent_multiple) * latent_multiple  # noqa: E731
        return TileGrid(up(self.core), up(self.halo), up(self.large_core), self.large_from, latent_multiple)

    def core_for(self, height: int, width: int) -> int:
        """The kept tile size for a latent of ``height`` x ``width``: a function of the image size only."""
        return self.large_core if max(height, width) > self.large_from else self.core


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in latent units: compute ``[start, stop)``, keep ``[keep_start, keep_stop)``."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def spans(length: int, core: int, halo: int) -> List[Span]:
    """The tiles covering ``length`` latents along one axis (one tile when it fits in core + halo)."""
    if length <= core + halo:
        return [Span(0, length, 0, length)]
    out = []
    for keep_start in range(0, length, core):
        keep_stop = min(keep_start + core, length)
        out.append(Span(max(0, keep_start - halo), min(length, keep_stop + halo), keep_start, keep_stop))
    return out


def balanced_core(length: int, core: int, halo: int, multiple: int) -> int:
    """The kept size that cuts ``length`` into as many tiles as ``core`` would, of (nearly) equal sizes.

    Why: tiles run side by side, so the largest one is the critical path; 48 latents cut 32 + 16 take as long
    as 32 + 8 of halo, cut 24 + 24 only as long as 24 + 8. Rounded up to ``multiple`` (the window grid)."""
    if length <= core + halo:
        return core
    count = -(-length // core)
    return -(-(-(-length // count)) // multiple) * multiple


def axis_spans(height: int, width: int, grid: TileGrid) -> Tuple[List[Span], List[Span]]:
    """(row spans, column spans) of the tiles of a latent of ``height`` x ``width``."""
    core = grid.core_for(height, width)
    rows = spans(height, balanced_core(height, core, grid.halo, grid.multiple), grid.halo)
    cols = spans(width, balanced_core(width, core, grid.halo, grid.multiple), grid.halo)
    return rows, cols


def tiles(height: int, width: int, grid: TileGrid) -> List[Tuple[Span, Span]]:
    """The (rows, columns) spans of every tile of a latent of ``height`` x ``width``, row-major."""
    rows, cols = axis_spans(height, width, grid)
    return [(r, c) for r in rows for c in cols]


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads on this thread, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: ``read(rows, cols)``: the transform's input for a tile, rows/columns as slices in input units
Reader = Callable[[slice, slice], Tensor]
#: ``write(rows, cols, piece)``: store a tile's kept output at rows/columns (slices in output units)
Writer = Callable[[slice, slice, Tensor], None]


def apply_tiled(
    transform: Callable[[Tensor], Tensor],
    read: Reader,
    write: Writer,
    latent_size: Tuple[int, int],
    grid: TileGrid,
    in_per_latent: int,
    out_per_latent: int,
    workers: int = 1,
    after_tile: Optional[Callable[[], None]] = None,
) -> None:
    """``transform`` over the tiles of a latent of ``latent_size``, each tile's kept part handed to ``write``.

    The caller reads and writes, so neither side needs the whole picture in float: the codec reads tiles from
    the uint8 image (padding them as it goes) and writes decoded tiles straight into the uint8 output, which keeps
    the peak memory at the tiles' plus the 3 bytes per pixel of the image itself.
    ``in_per_latent`` / ``out_per_latent``: pixels per latent unit on the input and the output side (16 and 1
    for g_a, 1 and 16 for g_s). Tiles run one at a time, or on ``workers`` threads, always with one intra-op
    thread each (the result is the same either way: each tile is one fixed computation). Between tiles the
    current request's cancellation is checked (:mod:`model_store.cancellation`). ``after_tile`` runs on the
    worker once a tile's output is written and its intermediates are freed (the codec trims the heap there on
    large photos: each worker thread's allocator arena kept what its tiles freed, which doubled the peak).
    """
    cut = tiles(*latent_size, grid)
    token = cancellation.current()
    grad = torch.is_grad_enabled()  # thread-local, like the token: a worker thread would record autograd graphs

    def units(start: int, stop: int, per_latent: int) -> slice:
        return slice(start * per_latent, stop * per_latent)

    def run(tile: Tuple[Span, Span]) -> None:
        rows, cols = tile
        with cancellation.bound(token), torch.set_grad_enabled(grad):
            cancellation.check()
            piece = transform(
                read(units(rows.start, rows.stop, in_per_latent), units(cols.start, cols.stop, in_per_latent))
            )
        top, left = rows.keep_start - rows.start, cols.keep_start - cols.start
        kept = piece[
            ...,
            units(top, top + rows.keep_stop - rows.keep_start, out_per_latent),
            units(left, left + cols.keep_stop - cols.keep_start, out_per_latent),
        ]
        write(
            units(rows.keep_start, rows.keep_stop, out_per_latent),
            units(cols.keep_start, cols.keep_stop, out_per_latent),
            kept,
        )
        if after_tile is not None:
            del piece, kept
            after_tile()

    if workers <= 1 or len(cut) == 1:
        with fixed_threads(1):
            for tile in cut:
                run(tile)
    else:
        with ThreadPoolExecutor(min(workers, len(cut)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            list(pool.map(run, cut))


def default_workers() -> int:
    """Tiles run side by side: as many as the intra-op threads torch would otherwise use on this thread."""
    return max(1, torch.get_num_threads())
