"""Tiled transforms (model_store.tiling): bounded memory, the same streams and pixels as the whole-image
transforms, no seams, and decoded pixels that do not depend on the thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_store import registry
from model_store.codec import bits_per_pixel, load_codec
from model_store.image_io import open_image
from model_store.metrics import psnr
from model_store.tiling import Span, TileGrid, spans, tiles

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = registry.shipped_models()
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no shipped weights")
#: One grid so large that every test image is one tile: the whole-image transform.
WHOLE = TileGrid(core=10**6, halo=0, large_core=10**6)
#: Small tiles, so a 768x512 photo is cut into 2 x 3 of them (every border kind: top, inner, bottom).
SMALL = TileGrid(core=16, halo=8)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """768x512 of real photo content: the citrus validation crop and its mirror images, 2 x 2."""
    crop = open_image(ASSETS / "val_citrus_384x256.png")
    top = np.concatenate([crop, crop[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def _codec(model: str, grid: TileGrid):
    codec = load_codec(model, SHIPPED[model][0])
    codec.tile_grid = grid.aligned(codec.model.pad_multiple // codec.model.latent_stride)
    return codec


def test_tiles_partition_the_latent_and_depend_on_its_size_only():
    for length in (1, 23, 24, 25, 47, 100, 257):
        cut = spans(length, 16, 8)
        kept = [i for s in cut for i in range(s.keep_start, s.keep_stop)]
        assert kept == list(range(length))  # every latent kept exactly once, in order
        assert all(s.start <= s.keep_start and s.keep_stop <= s.stop for s in cut)
        assert all(s.start == max(0, s.keep_start - 8) and s.stop == min(length, s.keep_stop + 8) for s in cut)
    assert spans(24, 16, 8) == [Span(0, 24, 0, 24)]  # fits in core + halo: one tile, no halo to waste
    grid = TileGrid()
    assert tiles(188, 250, grid) == tiles(188, 250, grid)  # nothing else (threads, batch, memory) enters
    assert len(tiles(32, 48, grid)) == 2 and len(tiles(188, 250, grid)) == 4 * 3  # 512 px tiles; 1024 px above


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_tiled_transforms_give_the_whole_image_stream_and_pixels(model, photo):
    """The 128 px halo covers every shipped transform's receptive field: the latent is the untiled one up to
    float rounding, so the stream is (practically) the same, and the decoded picture has the same quality."""
    tiled, whole = _codec(model, SMALL), _codec(model, WHOLE)
    assert len(tiles(32, 48, tiled.tile_grid)) > 1
    y_tiled, y_whole = tiled.analyse([photo]), whole.analyse([photo])
    assert (y_tiled - y_whole).abs().max() < 1e-3
    h, w = photo.shape[:2]
    s_tiled, s_whole = tiled.encode_latent(y_tiled[0], h, w), whole.encode_latent(y_whole[0], h, w)
    assert abs(len(s_tiled) - len(s_whole)) <= 0.005 * len(s_whole)
    y_hat, header = whole.decode_latent(s_whole)  # exact on every path: only the synthesis differs
    (decoded_tiled,), (decoded_whole,) = tiled.synthesise([y_hat], [header]), whole.synthesise([y_hat], [header])
    assert abs(psnr(decoded_tiled, photo) - psnr(decoded_whole, photo)) < 0.05
    assert np.abs(decoded_tiled.astype(int) - decoded_whole).max() <= 1
    assert bits_per_pixel(s_tiled, h, w) == pytest.approx(bits_per_pixel(s_whole, h, w), rel=0.005)


def _seam_ratio(decoded: np.ndarray, original: np.ndarray, borders: list, axis: int) -> float:
    """Mean jump of the coding error across tile borders over its mean jump across every other line: a visible
    seam is an error step along the border (ratio well above 1)."""
    error = decoded.astype(float) - original
    steps = np.abs(np.diff(error, axis=axis)).mean(axis=tuple(a for a in range(3) if a != axis))
    at_border = np.array([b - 1 for b in borders])
    elsewhere = np.setdiff1d(np.arange(steps.size), at_border)
    return float(steps[at_border].mean() / steps[elsewhere].mean())


def test_tile_borders_leave_no_seam(photo):
    codec = _codec(registry.default_model(), SMALL)
    decoded = codec.decompress(codec.compress(photo))
    cut = tiles(32, 48, codec.tile_grid)
    rows = sorted({r.keep_start * 16 for r, _ in cut} - {0})
    cols = sorted({c.keep_start * 16 for _, c in cut} - {0})
    assert rows and cols
    assert _seam_ratio(decoded, photo, rows, axis=0) < 1.25
    assert _seam_ratio(decoded, photo, cols, axis=1) < 1.25


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_decoded_pixels_do_not_depend_on_the_thread_count(model, photo):
    """Each tile runs with one intra-op thread, so a replica with 1, 2 or 4 threads serves the same bytes
    (before tiling, erstc-small decoded this photo's stream differently at 1 and 2 threads)."""
    codec = _codec(model, TileGrid())
    y_hat, header = codec.decode_latent(codec.compress(photo))  # the latent is exact (tests/test_golden_streams)
    decoded = {}
    for threads in (1, 2, 4):
        torch.set_num_threads(threads)
        (decoded[threads],) = codec.synthesise([y_hat], [header])
    assert np.array_equal(decoded[1], decoded[2]) and np.array_equal(decoded[1], decoded[4])
