"""The entropy path of a large photo in bounded memory: h_a in tiles, the hyperprior in bands (a stream flag), the
CAM's features in a ring of rows, the symbol buffer handed to the coder in batches; and what stays exactly as it was.

Whatever changes where numbers are kept must not change the numbers: the ring and the batched coder give the same
bytes (checked here against the whole-map layout), and streams that predate the band flag decode as before
(tests/test_golden_streams.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_erstc

from model_store import container, registry
from model_store.codec import bits_per_pixel, load_codec
from model_store.entropy import hyper_bands
from model_store.entropy.causal_context import hyper_weight
from model_store.entropy.coding import GaussianSymbolEncoder
from model_store.errors import BitstreamError
from model_store.image_io import open_image
from model_store.layers.cam import live_rows, wavefront_schedule
from model_store.metrics import psnr
from model_store.tiling import TileGrid

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = registry.shipped_models()
CAM_MODELS = sorted(m for m in SHIPPED if m.split("-")[0] in ("erstc", "tic", "tic_plus"))
#: Bands of 4 hyper-latents (256 px) with the shipped halo, so a 1536x1024 photo (a 16 x 24 hyper-latent) has 4 x 6.
SMALL_BANDS = TileGrid(core=4, halo=8, large_core=4, large_from=0, multiple=4)
needs_weights = pytest.mark.skipif(not SHIPPED, reason="no shipped weights")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """768x512 of real photo content: the citrus validation crop and its mirror images, 2 x 2."""
    crop = open_image(ASSETS / "val_citrus_384x256.png")
    top = np.concatenate([crop, crop[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


@pytest.fixture(scope="module")
def big_photo(photo) -> np.ndarray:
    """1536x1024: the 768x512 photo mirrored 2 x 2 again."""
    top = np.concatenate([photo, photo[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


@pytest.fixture(scope="module")
def tiny():
    """Tiny random ERSTC (float64 canonical copy with CDF tables) and the latent of a tall image."""
    model, canon = tiny_erstc()
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, 512, 128))
    return canon, y


def test_the_header_flags_round_trip_and_unknown_flags_are_refused():
    header = container.StreamHeader("erstc-small", bytes(32), 5, 64, 64, 0, 0, ((64, 1, 1), (96, 4, 4)), (0, 0), 7, 0)
    for version in container.WRITABLE_VERSIONS:
        plain = container.parse_header(container.pack(header, [b"z", b"y"], version=version))
        assert not plain.banded_hyper and not plain.latent_crc
        for flags in (container.FLAG_BANDED_HYPER, container.FLAG_LATENT_CRC):
            flagged = container.parse_header(
                container.pack(dataclasses.replace(header, flags=flags), [b"z", b"y"], version)
            )
            assert (flagged.banded_hyper, flagged.latent_crc) == (flags == 0x01, flags == 0x02)
        banded = container.pack(dataclasses.replace(header, flags=container.FLAG_BANDED_HYPER), [b"z", b"y"], version)
        forged = bytearray(banded)
        forged[5] |= 0x04
        with pytest.raises(BitstreamError, match="unknown header flags"):
            container.parse_header(bytes(forged))
    with pytest.raises(ValueError, match="unknown header flags"):
        container.pack(dataclasses.replace(header, flags=0x80), [b"z", b"y"])


def test_the_symbol_encoder_writes_the_same_string_however_its_batches_are_cut(tiny):
    canon, _ = tiny
    torch.manual_seed(1)
    groups = [(torch.rand(n, 8) * 3 + 0.2, torch.randn(n, 8), torch.randn(n, 8) * 4) for n in (5, 1, 9, 3)]
    strings = []
    for batch in (1 << 20, 7, 1):
        encoder = GaussianSymbolEncoder(canon.gaussian_conditional, batch_symbols=batch)
        for scales, means, y in groups:
            encoder.code(scales.double(), means.double(), y.double())
        strings.append((encoder.finish(), encoder.index_crc))
    assert strings[0] == strings[1] == strings[2]


def test_the_feature_ring_holds_fewer_rows_than_the_latent_and_codes_the_same_bytes(tiny, monkeypatch):
    canon, y = tiny
    h, w = y.shape[-2:]
    ring = live_rows(wavefront_schedule(h, w), w)
    assert ring < h  # a tall latent: the wavefront only ever reads a few rows above its own
    payload = canon.compress_latent(y)
    assert canon.decompress_latent(payload).shape == (1, *y.shape[1:])
    monkeypatch.setattr("model_store.entropy.causal_context.live_rows", lambda steps, w, block_len: h)
    assert canon.compress_latent(y) == payload  # every row kept: the layout before the ring


def test_live_rows_covers_what_every_later_step_reads():
    """Brute force on small shapes: a row written at step t may only replace one that no step >= t reads."""
    for h, w in ((9, 4), (6, 11), (12, 3)):
        steps = wavefront_schedule(h, w)
        ring = live_rows(steps, w)
        for t, positions in enumerate(steps):
            written = max(int(p) // w for s in steps[: t + 1] for p in s)
            read = min(int(p) // w for s in steps[t:] for p in s) - 2
            assert written - ring < read


@needs_weights
@pytest.mark.parametrize("model", CAM_MODELS)
@torch.no_grad()
def test_the_banded_hyperprior_equals_the_whole_map_to_rounding(model, big_photo):
    """Tiles on h_s's window grid with 4 hyper-latents of context: ψ and its parameter-conv term per band are
    the whole map's (to float64 rounding), so the model codes a banded stream as well as a whole one."""
    codec = load_codec(model, SHIPPED[model][0])
    canon = codec.canonical
    y = codec.analyse([big_photo])
    z = canon.hyper_analysis(y.double())
    z_hat = canon.entropy_bottleneck.decompress([canon.entropy_bottleneck.compress(z)[0]], z.shape[-2:])
    shape = tuple(y.shape[1:])
    grid = hyper_bands.hyper_grid(canon, SMALL_BANDS)
    whole = hyper_bands.HyperTerm(canon.h_s, hyper_weight(canon), z_hat, shape, None)
    banded = hyper_bands.HyperTerm(canon.h_s, hyper_weight(canon), z_hat, shape, grid)
    assert len(banded.bands) > 1 and len(banded.col_spans) > 1
    positions = torch.arange(shape[1] * shape[2])
    a, b = whole.rows(positions), banded.rows(positions)
    assert (a - b).abs().max() <= 1e-9 * a.abs().max()
    banded.release_above(banded.bands[1].stop_row)
    assert banded.bands[0].term is None and banded.bands[1].term is None and banded.bands[2].term is not None


@needs_weights
def test_banded_streams_carry_the_flag_and_decode_like_whole_map_ones(big_photo, monkeypatch):
    photo = big_photo
    monkeypatch.setattr(hyper_bands, "HYPER_BAND_GRID", SMALL_BANDS)
    codec = load_codec(registry.default_model(), registry.default_quality(SHIPPED[registry.default_model()]))
    banded = codec.compress(photo)
    codec.banded_hyper = False
    whole = codec.compress(photo)
    assert container.parse_header(banded).banded_hyper and not container.parse_header(whole).banded_hyper
    h, w = photo.shape[:2]
    assert bits_per_pixel(banded, h, w) == pytest.approx(bits_per_pixel(whole, h, w), rel=0.005)
    assert abs(psnr(codec.decompress(banded), photo) - psnr(codec.decompress(whole), photo)) < 0.05


@needs_weights
def test_a_band_flag_on_a_size_the_model_codes_whole_is_refused(photo):
    """Small images are never banded (both layouts compute the same numbers there), so a flag there is forged."""
    codec = load_codec(registry.default_model(), registry.default_quality(SHIPPED[registry.default_model()]))
    stream = codec.compress(photo)
    parsed = container.unpack(stream)
    assert not parsed.header.banded_hyper
    forged = container.pack(
        dataclasses.replace(parsed.header, flags=container.FLAG_BANDED_HYPER),
        list(parsed.payloads),
        version=parsed.header.version,
    )
    with pytest.raises(BitstreamError, match="banded"):
        codec.decompress(forged)


@needs_weights
@pytest.mark.parametrize("model", sorted(SHIPPED))
@torch.no_grad()
def test_tiled_hyper_analysis_gives_the_whole_map_z(model, big_photo, monkeypatch):
    """Only the encoder runs h_a, so tiles need not match the whole map bit for bit; on the window grid with 8
    hyper-latents of context they do to rounding, so z (and the rate) stays what the model was trained on."""
    codec = load_codec(model, SHIPPED[model][0])
    y = codec.analyse([big_photo])
    whole = codec.canonical.hyper_analysis_tiled(y)  # the 16 x 24 hyper-latent fits one default tile
    monkeypatch.setattr(hyper_bands, "HYPER_ANALYSIS_GRID", SMALL_BANDS)
    tiled = codec.canonical.hyper_analysis_tiled(y)
    assert tiled.shape == whole.shape and tiled.dtype == torch.float64
    assert (tiled - whole).abs().max() <= 1e-9 * whole.abs().max()
