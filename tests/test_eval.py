"""Metrics, Bjøntegaard deltas, classical codecs and the evaluation CLI (classical codecs only, so it stays fast)."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from model_store import classical, metrics
from model_store import eval as evaluation

ANCHOR = [(0.15, 27.0), (0.25, 29.0), (0.40, 31.0), (0.65, 33.0), (1.00, 35.0), (1.50, 37.0)]

# Two realistic curves (a JPEG-like and a WebP-like sweep measured on sample photos) and their deltas as computed
# by the reference implementation, the `bjontegaard` PyPI package 1.3.0 (FAU-LMS), with require_matching_points=False.
JPEG_LIKE = [
    (0.148, 23.85),
    (0.259, 26.50),
    (0.436, 28.70),
    (0.588, 29.87),
    (0.830, 31.36),
    (1.147, 32.91),
    (1.720, 35.14),
]
WEBP_LIKE = [(0.164, 26.74), (0.225, 27.79), (0.374, 29.76), (0.654, 32.47), (0.881, 34.05), (1.750, 37.52)]
REFERENCE_DELTAS = {  # method: (BD-rate %, BD-PSNR dB)
    "pchip": (-36.50883153522252, 2.102626502644361),
    "cubic": (-36.650087847758215, 2.097109825467183),
}


def scaled(curve, rate_factor=1.0, psnr_offset=0.0):
    return [(r * rate_factor, q + psnr_offset) for r, q in curve]


def synthetic_photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients, a few soft-edged blobs, fine texture and sensor-like noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([90 + 100 * xx + 30 * c * yy for c in range(3)], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1, 3) * [h / max(h, w), w / max(h, w), 0.3]
        blob = 1 / (1 + np.exp(((yy - cy) ** 2 + (xx - cx) ** 2 - r**2) * 400))
        img += blob[..., None] * rng.uniform(-70, 70, 3)
    img += 12 * np.sin(xx * 90 + yy * 40)[..., None] * rng.uniform(0.3, 1, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------------
# BD-rate / BD-PSNR
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["pchip", "cubic"])
@pytest.mark.parametrize("factor", [0.8, 1.25, 0.5])
def test_bd_rate_of_a_uniformly_scaled_curve_is_the_scale(method, factor):
    # Shifting log-rate by a constant shifts both the PCHIP interpolant and a cubic fit by exactly that constant.
    assert metrics.bd_rate(ANCHOR, scaled(ANCHOR, factor), method) == pytest.approx((factor - 1) * 100, abs=1e-9)


def test_bd_rate_identical_curves_is_zero():
    assert metrics.bd_rate(ANCHOR, ANCHOR) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_uses_only_the_overlap_and_ignores_point_order():
    # log-rate linear in PSNR: PCHIP reproduces a straight line exactly, so a sub-range of it is the same line.
    line = [(0.1 * 10 ** ((q - 27.0) / 20.0), q) for q in (27.0, 29.0, 31.0, 33.0, 35.0, 37.0)]
    test = scaled(line[2:], 0.8)[::-1]  # covers only the upper part of the anchor's PSNR range, reversed
    assert metrics.bd_rate(line, test) == pytest.approx(-20.0, abs=1e-9)
    assert metrics.bd_rate(line[::-1], scaled(line, 0.8)) == pytest.approx(-20.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_psnr_of_a_shifted_curve_is_the_shift(method):
    assert metrics.bd_psnr(ANCHOR, scaled(ANCHOR, psnr_offset=0.5), method) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("method", sorted(REFERENCE_DELTAS))
def test_bd_matches_the_reference_implementation(method):
    rate, psnr = REFERENCE_DELTAS[method]
    assert metrics.bd_rate(JPEG_LIKE, WEBP_LIKE, method) == pytest.approx(rate, abs=1e-9)
    assert metrics.bd_psnr(JPEG_LIKE, WEBP_LIKE, method) == pytest.approx(psnr, abs=1e-9)


def test_bd_of_disjoint_curves_is_nan_with_a_warning():
    far = scaled(ANCHOR, 0.01, psnr_offset=20.0)  # no shared PSNR range, no shared rate range
    with pytest.warns(metrics.NoOverlapWarning, match="do not overlap"):
        assert math.isnan(metrics.bd_rate(ANCHOR, far))
    with pytest.warns(metrics.NoOverlapWarning):
        assert math.isnan(metrics.bd_psnr(ANCHOR, far))


def test_bd_rejects_curves_it_cannot_fit():
    with pytest.raises(ValueError, match="needs >= 4"):
        metrics.bd_rate(ANCHOR[:3], ANCHOR[:3], method="cubic")
    with pytest.raises(ValueError, match="positive"):
        metrics.bd_rate([(0.0, 30.0), (1.0, 35.0)], ANCHOR)
    with pytest.raises(ValueError, match="method"):
        metrics.bd_rate(ANCHOR, ANCHOR, method="linear")


# ------------------------------------------------------------------------------------------------------------------
# Pixel metrics
# ------------------------------------------------------------------------------------------------------------------
def test_psnr_on_known_arrays():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert metrics.psnr(a, a) == math.inf
    assert metrics.psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25))
    one_channel = a.copy()
    one_channel[..., 1] += 3  # MSE over all channels = 9 / 3
    assert metrics.psnr(a, one_channel) == pytest.approx(10 * math.log10(255**2 / 3))
    # uint8 inputs must not wrap around: 0 vs 255 is the worst case, exactly 0 dB.
    assert metrics.psnr(np.zeros_like(a), np.full_like(a, 255)) == pytest.approx(0.0)


def test_ms_ssim_identity_and_small_images():
    img = synthetic_photo(176, 176, seed=1)
    assert metrics.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    assert 0.8 < metrics.ms_ssim(img, noisy) < 1.0
    with pytest.warns(RuntimeWarning, match="MS-SSIM needs"):
        assert math.isnan(metrics.ms_ssim(img[:64, :64], img[:64, :64]))


def test_bpp():
    assert metrics.bpp(1000, 100, 80) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.bpp(10, 0, 5)


# ------------------------------------------------------------------------------------------------------------------
# Classical codecs
# ------------------------------------------------------------------------------------------------------------------
AVAILABLE = [name for name, cls in classical.CLASSICAL_CODECS.items() if cls.is_available()]


@pytest.mark.parametrize("name", AVAILABLE)
def test_classical_round_trip_is_lossy_with_sane_rate(name):
    img = synthetic_photo(128, 160, seed=2)
    cls = classical.CLASSICAL_CODECS[name]
    codec = classical.classical_codec(name, cls.default_qualities[len(cls.default_qualities) // 2])
    data = codec.compress(img)
    out = codec.decompress(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    rate = metrics.bpp(len(data), *img.shape[:2])
    assert 0.05 < rate < 6.0, rate  # lossless (e.g. WebP's default) would be ~10+ bpp here
    assert 25.0 < metrics.psnr(img, out) < 60.0


@pytest.mark.parametrize("name", AVAILABLE)
def test_default_sweep_spends_more_bits_at_higher_quality(name):
    img = synthetic_photo(96, 128, seed=3)
    sizes = [len(codec.compress(img)) for codec in classical.sweep(name)]
    assert sizes == sorted(sizes), sizes


def test_classical_codec_rejects_bad_input_and_names():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        classical.JpegCodec(50).compress(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="unknown classical codec"):
        classical.classical_codec("bpg", 30)


# ------------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for seed, size in ((10, (176, 192)), (11, (168, 200))):  # >= 161 px a side so MS-SSIM is defined
        Image.fromarray(synthetic_photo(*size, seed=seed)).save(folder / f"img{seed}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _strict_json(text: str):
    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_cli_classical_only_writes_documented_outputs(image_dir, tmp_path, capsys):
    codecs = ["jpeg", "webp"]  # the fast ones; every codec has its own round-trip test above
    out_json, out_csv, out_png = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    rc = evaluation.main(
        [
            str(image_dir),
            "--no-learned",
            "--classical",
            *codecs,
            "--quiet",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--plot",
            str(out_png),
        ]
    )
    assert rc == 0
    report = _strict_json(out_json.read_text())
    assert set(report) >= {"images", "codecs", "bd_rate", "environment"}
    assert [img["name"] for img in report["images"]] == ["img10.png", "img11.png"]
    assert set(report["codecs"]) == set(codecs)
    for name, entry in report["codecs"].items():
        assert entry["kind"] == "classical"
        assert len(entry["points"]) == len(classical.CLASSICAL_CODECS[name].default_qualities)
        for point in entry["points"]:
            assert set(point) == {"quality", "bpp", "psnr", "ms_ssim", "enc_s", "dec_s", "n_images"}
            assert point["n_images"] == 2 and point["bpp"] > 0 and point["psnr"] > 15
            assert 0 < point["ms_ssim"] <= 1 and point["enc_s"] >= 0 and point["dec_s"] >= 0
    # Classical codecs are compared with JPEG for context; every entry is a number or null, never NaN.
    assert set(report["bd_rate"]) == set(codecs) - {"jpeg"}
    assert all(set(row) == {"jpeg"} for row in report["bd_rate"].values())
    with open(out_csv) as f:
        assert len(list(csv.DictReader(f))) == sum(len(e["points"]) for e in report["codecs"].values())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "BD-rate" in capsys.readouterr().out


def test_cli_limit_and_unknown_model(image_dir, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    evaluation.main(
        [
            str(image_dir),
            "--no-learned",
            "--classical",
            "jpeg",
            "--limit",
            "1",
            "--quiet",
            "--no-ms-ssim",
            "--json",
            str(out_json),
        ]
    )
    report = _strict_json(out_json.read_text())
    assert len(report["images"]) == 1 and report["codecs"]["jpeg"]["points"][0]["ms_ssim"] is None
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        evaluation.main([str(image_dir), "--model", "no-such-model", "--no-classical", "--quiet"])
    assert exc.value.code == 2
    assert "no-such-model" in capsys.readouterr().err


def test_bd_table_pairs_learned_models_with_every_classical_codec():
    curve = lambda name, kind, f: evaluation.CodecCurve(  # noqa: E731
        name, kind, points=[evaluation.RDPoint(i, r * f, q, 0.9, 0, 0, 1) for i, (r, q) in enumerate(ANCHOR)]
    )
    curves = [curve("mine", "learned", 0.5), curve("jpeg", "classical", 1.0), curve("avif", "classical", 0.8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = evaluation.bd_table(curves)
    assert table["mine"]["jpeg"] == pytest.approx(-50.0)
    assert table["mine"]["avif"] == pytest.approx(-37.5)
    assert table["avif"] == {"jpeg": pytest.approx(-20.0)}


def test_reference_curves_have_sources_and_monotone_points():
    curves = evaluation.load_reference_curves()
    assert curves, "reference_curves.json is missing"
    for name, ref in curves.items():
        assert ref["source"].startswith("https://github.com/"), name
        assert len(ref["bpp"]) == len(ref["psnr"]) >= 4
        assert ref["bpp"] == sorted(ref["bpp"]) and ref["psnr"] == sorted(ref["psnr"])


@pytest.mark.filterwarnings("ignore:BD-rate tiny-test")  # one distinct point: random weights ignore quality
def test_cli_learned_path_with_a_stand_in_model(image_dir, tmp_path, monkeypatch, tiny_codec, capsys):
    """The learned-model branch end to end, with conftest's tiny random-weight codec standing in for shipped weights."""
    loaded = []

    def load_codec(name, quality, device="cpu"):
        loaded.append((name, quality, device))
        return tiny_codec

    monkeypatch.setattr(evaluation, "_learned_api", lambda: (load_codec, lambda: {"tiny-test": [1, 2, 3]}))
    out_json = tmp_path / "r.json"
    evaluation.main([str(image_dir), "--qualities", "1", "3", "--classical", "jpeg", "--limit", "1", "--quiet",
                     "--no-ms-ssim", "--json", str(out_json)])  # fmt: skip
    report = _strict_json(out_json.read_text())
    assert loaded == [("tiny-test", 1, "cpu"), ("tiny-test", 3, "cpu")]
    assert report["codecs"]["tiny-test"]["kind"] == "learned"
    assert [p["quality"] for p in report["codecs"]["tiny-test"]["points"]] == [1, 3]
    assert list(report["bd_rate"]["tiny-test"]) == ["jpeg"]  # random weights: the value itself may be null
    capsys.readouterr()
    with pytest.raises(SystemExit):
        evaluation.main([str(image_dir), "--qualities", "7", "--no-classical", "--quiet"])
    assert "qualities [7]" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:BD-rate tiny-test")  # one point per curve: no BD-rate to compute
def test_each_encoder_effort_is_its_own_curve_compared_with_effort_0(image_dir, tmp_path, monkeypatch, tiny_codec):
    """``--effort 0 1``: a ``MODEL@e1`` curve made by effort-1 encoding, and its BD-rate against plain ``MODEL``."""
    efforts = []

    class Recording:
        def compress(self, img, effort=0):
            efforts.append(effort)
            return tiny_codec.compress(img)

        def decompress(self, data):
            return tiny_codec.decompress(data)

    monkeypatch.setattr(evaluation, "_learned_api", lambda: (lambda *a, **k: Recording(), lambda: {"tiny-test": [1]}))
    jobs = evaluation.learned_jobs(None, None, "cpu", efforts=(0, 1))
    assert [(j.name, j.settings["effort"]) for j in jobs] == [("tiny-test", 0), ("tiny-test@e1", 1)]
    evaluation.main([str(image_dir), "--effort", "0", "1", "--no-classical", "--limit", "1", "--quiet",
                     "--no-ms-ssim", "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert set(efforts) == {0, 1}
    curve = lambda name, f: evaluation.CodecCurve(  # noqa: E731
        name, "learned", points=[evaluation.RDPoint(i, r * f, q, 0.9, 0, 0, 1) for i, (r, q) in enumerate(ANCHOR)]
    )
    assert evaluation.bd_table([curve("m", 1.0), curve("m@e1", 0.9)])["m@e1"] == {"m": pytest.approx(-10.0)}
