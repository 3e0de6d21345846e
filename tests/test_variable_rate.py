"""Variable-rate models (issue #27): one set of weights, a 1..levels quality knob, QVRF-style latent gains."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import image_dirs, natural_image, tiny_config  # noqa: F401  (image_dirs is a fixture)

from model_store.architectures.erstc import ERSTC, ERSTC_SMALL_KNOB, ERSTC_TINY, ERSTC_TINY_KNOB
from model_store.architectures.registry import create_model, get_preset
from model_store.architectures.variable_rate import KnobTable, RateKnob
from model_store.codec import canonical_copy
from model_store.train import rd_loss, train


def tiny_vr(seed: int = 0):
    """A tiny random variable-rate ERSTC in eval mode with CDF tables, and its canonical float64 copy."""
    torch.manual_seed(seed)
    model = create_model("erstc", "tiny-vr", 1).eval()
    model.update(force=True)
    return model, canonical_copy(model)


# -- the scale -------------------------------------------------------------------------------------------------------
def test_the_knob_spans_the_per_lambda_ladder_in_255_log_spaced_codes():
    ladder = get_preset("erstc", "small").lambdas
    knob = get_preset("erstc", "small-vr").rate_knob
    assert knob is ERSTC_SMALL_KNOB and knob.levels == 255
    assert knob.code_lambda(1) == pytest.approx(ladder[1]) and knob.code_lambda(255) == pytest.approx(ladder[10])
    ratios = [knob.code_lambda(k + 1) / knob.code_lambda(k) for k in range(1, 255)]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] < 1.025  # even steps of ~2 % in λ
    assert [knob.nearest_code(knob.code_lambda(k)) for k in knob.codes] == list(knob.codes)
    assert knob.nearest_code(1e-9) == 1 and knob.nearest_code(10.0) == 255


@pytest.mark.parametrize("bad", [0, 256, 1.5, True, "3"])
def test_a_code_off_the_scale_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        ERSTC_SMALL_KNOB.check_code(bad)


def test_gains_start_at_the_square_root_of_the_lambda_ratio_and_grow_with_the_code():
    knob = ERSTC_SMALL_KNOB
    table = KnobTable(knob, latent_channels=3, bias_channels=5).double()
    for code in (1, 40, 128, 200, 255):
        point = table.at_code(code)
        expected = math.sqrt(knob.code_lambda(code) / knob.reference_lambda)
        assert torch.allclose(point.gain, torch.full((3,), expected, dtype=torch.float64), rtol=1e-6)
        assert not point.bias.any()  # zero-initialised: a fine-tune starts exactly at its per-λ file
    gains = [float(table.at_code(k).gain[0]) for k in knob.codes]
    assert all(b > a for a, b in zip(gains, gains[1:]))


def test_interpolation_weights_are_a_partition_of_unity_clamped_at_the_ends():
    table = KnobTable(ERSTC_TINY_KNOB, 2, 2)
    positions = torch.tensor([-5.0, -0.1, 0.0, 0.37, 0.5, 1.0, 1.1, 7.0])
    w = table.weights(positions)
    assert torch.allclose(w.sum(1), torch.ones(len(positions)))
    assert ((w > 0).sum(1) <= 2).all() and (w >= 0).all()
    assert torch.equal(w[0], w[1]) and torch.equal(w[-1], w[-2])  # beyond the training range: the end anchors


# -- the model ----------------------------------------------------------------------------------------------------
def test_at_the_reference_lambda_the_variable_rate_model_is_its_per_lambda_file():
    """Fine-tuning starts where the per-λ file was: gains of 1 and a zero bias change nothing."""
    knob = dataclasses.replace(ERSTC_TINY_KNOB, reference_lambda=ERSTC_TINY_KNOB.code_lambda(5))
    torch.manual_seed(0)
    fixed = ERSTC(ERSTC_TINY).eval()
    variable = ERSTC(ERSTC_TINY).add_rate_knob(knob).eval()
    variable.load_state_dict(fixed.state_dict(), strict=False)
    x = torch.rand(2, 3, 64, 64)
    out_fixed = fixed(x)
    out_variable = variable(x, knob=torch.full((2,), knob.position(5)))
    assert torch.allclose(out_variable["x_hat"], out_fixed["x_hat"], atol=1e-5)
    assert torch.allclose(out_variable["likelihoods"]["y"], out_fixed["likelihoods"]["y"], atol=1e-5)


def test_every_code_decodes_bit_exactly_and_more_code_means_more_bytes():
    model, canon = tiny_vr()
    y = model.analysis(torch.from_numpy(natural_image(128, 128)).permute(2, 0, 1)[None].float() / 255)
    sizes = []
    for code in ERSTC_TINY_KNOB.codes:
        payload, y_hat = canon.compress_latent_and_reconstruct(y, knob=code)
        assert payload.knob == code
        assert torch.equal(canon.decompress_latent(payload), y_hat)
        sizes.append(len(payload.y_string))
    assert sizes == sorted(sizes) and sizes[-1] > 2 * sizes[0]


@torch.no_grad()
def test_the_coded_latent_lies_on_the_knobs_grid():
    """ŷ = symbol / a + μ: the finer the grid (higher code), the closer ŷ is to y."""
    model, canon = tiny_vr()
    y = model.analysis(torch.rand(1, 3, 64, 64)).double()
    errors = []
    for code in (1, 16):
        _, y_hat = canon.compress_latent_and_reconstruct(y, knob=code)
        a = canon.knob_table.at_code(code).gain[:, None, None]
        assert float((y_hat - y).abs().mul(a).max()) <= 0.5 + 1e-9  # |round(u) - u| ≤ ½ on the scaled grid
        errors.append(float((y_hat - y).abs().mean()))
    assert errors[1] < errors[0]


def test_a_variable_rate_model_needs_a_code_and_a_per_lambda_model_refuses_one():
    model, canon = tiny_vr()
    y = model.analysis(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="needs a quality knob"):
        canon.compress_latent(y)
    with pytest.raises(ValueError, match="not an integer in 1..16"):
        canon.compress_latent(y, knob=17)
    fixed = canonical_copy(ERSTC(ERSTC_TINY).eval())
    fixed.update(force=True)
    with pytest.raises(ValueError, match="takes no quality knob"):
        fixed.compress_latent(y, knob=3)


def test_one_model_serves_every_code_of_the_preset():
    preset = get_preset("erstc", "tiny-vr")
    assert preset.qualities == list(ERSTC_TINY_KNOB.codes)
    assert preset.lambdas[16] == pytest.approx(ERSTC_TINY_KNOB.lambda_high)
    assert create_model("erstc", "tiny-vr", 1).rate_knob == create_model("erstc", "tiny-vr", 16).rate_knob


# -- training -------------------------------------------------------------------------------------------------------
def test_per_image_lambdas_weigh_each_image_at_its_own_rate_point():
    x = torch.rand(2, 3, 16, 16)
    out = {"x_hat": x + 0.01 * torch.randn_like(x), "likelihoods": {"y": torch.rand(2, 4, 2, 2) * 0.9 + 0.05}}
    same = rd_loss(out, x, torch.tensor([0.01, 0.01]))
    assert same["loss"] == pytest.approx(float(rd_loss(out, x, 0.01)["loss"]), rel=1e-6)
    apart = rd_loss(out, x, torch.tensor([0.001, 0.1]))
    low, high = rd_loss(out, x, 0.001)["loss"], rd_loss(out, x, 0.1)["loss"]
    assert float(low) < float(apart["loss"]) < float(high)


def test_balanced_training_weighs_each_crop_by_its_lambda_relative_to_the_reference():
    knob = ERSTC_SMALL_KNOB
    ref = knob.reference_lambda
    weights = knob.balance_weights(torch.tensor([ref, ref / 4, ref * 4]), 0.5)
    assert weights.tolist() == pytest.approx([1.0, 2.0, 0.5])
    x = torch.rand(2, 3, 16, 16)
    out = {"x_hat": x + 0.05 * torch.randn_like(x), "likelihoods": {"y": torch.rand(2, 4, 2, 2) * 0.9 + 0.05}}
    lambdas = torch.tensor([0.001, 0.1])
    each = [
        float(
            rd_loss(
                {k: v[i : i + 1] if k == "x_hat" else {"y": v["y"][i : i + 1]} for k, v in out.items()},
                x[i : i + 1],
                float(lambdas[i]),
            )["loss"]
        )
        for i in range(2)
    ]
    balanced = rd_loss(out, x, lambdas, torch.tensor([3.0, 0.5]))
    assert float(balanced["loss"]) == pytest.approx((3.0 * each[0] + 0.5 * each[1]) / 2, rel=1e-5)


def test_a_variable_rate_run_trains_every_code_and_validates_at_the_knobs_codes(image_dirs, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = dataclasses.replace(tiny_config(image_dirs, out, steps=2), arch="erstc", preset="tiny-vr", quality=1)
    train(cfg)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val = records[-1]["val"]
    assert set(val["levels"]) == {str(c) for c in ERSTC_TINY_KNOB.validation_codes}
    low, high = val["levels"]["1"], val["levels"]["16"]
    assert low["bpp"] < high["bpp"]
    assert val["loss"] == pytest.approx(math.sqrt(low["loss"] * high["loss"]))  # the geometric mean
    trained = torch.load(out / "last.pt", weights_only=False)["model"]
    assert "knob_table.log_gain" in trained and "knob_table.param_bias" in trained
    with pytest.raises(ValueError, match="draws λ per crop"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "other"), lmbda=0.01))


def test_knob_positions_for_training_reach_past_both_ends_of_the_served_range():
    knob = RateKnob(train_margin=0.1)
    torch.manual_seed(0)
    positions = knob.sample_positions(20_000)
    assert float(positions.min()) < -0.09 and float(positions.max()) > 1.09
    assert float(positions.min()) >= -0.1 and float(positions.max()) <= 1.1


# -- the codec ------------------------------------------------------------------------------------------------------
def vr_codec(quality: int = 8):
    from model_store.codec import ImageCodec, ModelIdentity

    model, _ = tiny_vr()
    return ImageCodec(model, ModelIdentity("erstc-tiny-vr", quality, bytes(range(32))))


def test_the_header_carries_the_code_and_any_code_decodes_with_the_same_weights():
    from model_store import container

    codec = vr_codec()
    img = natural_image(70, 90)
    streams = {q: codec.compress(img, quality=q) for q in (1, 8, 16)}
    assert codec.compress(img) == streams[8]  # the codec's own quality is its default
    for q, stream in streams.items():
        assert container.parse_header(stream).quality == q
        assert vr_codec(quality=3).decompress(stream).shape == img.shape  # another default, same weights
    assert len(streams[1]) < len(streams[8]) < len(streams[16])


def test_knob_streams_are_identical_across_batch_sizes_and_thread_counts():
    codec = vr_codec()
    images = [natural_image(64, 80, seed) for seed in range(3)]
    torch.set_num_threads(1)  # conftest's autouse fixture restores the thread count
    one = [codec.compress(img, quality=11) for img in images]
    one_pixels = [codec.decompress(s) for s in one]
    torch.set_num_threads(2)
    assert codec.compress_batch(images, quality=11) == one
    for a, b in zip(codec.decompress_batch(one), one_pixels):
        assert (a == b).all()


def test_a_code_off_the_scale_or_a_knob_for_a_per_lambda_codec_is_a_clear_error():
    from model_store.errors import UnknownModelError

    codec = vr_codec()
    with pytest.raises(UnknownModelError, match="not an integer in 1..16"):
        codec.compress(natural_image(32, 32), quality=17)


def test_the_effort_search_works_at_the_codes_own_lambda():
    codec = vr_codec()
    img = natural_image(64, 64)
    plain, searched = codec.compress(img, quality=4), codec.compress(img, effort=1, quality=4)
    assert codec.rd_cost(img, searched) <= codec.rd_cost(img, plain)
    assert codec.lambda_of(4) == pytest.approx(ERSTC_TINY_KNOB.code_lambda(4))


# -- shipping -------------------------------------------------------------------------------------------------------
def test_an_exported_variable_rate_version_is_one_file_that_serves_every_code(image_dirs, tmp_path):  # noqa: F811
    from model_store import container, registry
    from model_store.codec import codec_for_stream, load_codec
    from model_store.train import export

    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config(image_dirs, out, steps=1), arch="erstc", preset="tiny-vr", quality=1))
    root = tmp_path / "weights"
    ckpt = str(out / "last.pt")
    folder = export("erstc", "tiny-vr", "v1", {1: ckpt, 8: ckpt, 16: ckpt}, root=str(root))
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [registry.VARIABLE_RATE_FILE]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variable_rate"] == {"levels": 16} and sorted(manifest["qualities"]) == ["1", "16", "8"]
    assert registry.shipped_models(root)["erstc-tiny-vr"] == [1, 8, 16]  # what the release measured
    unlisted = registry.resolve("erstc-tiny-vr", 7, root=root)  # any code resolves to the one file
    assert not unlisted.listed and unlisted.lmbda == pytest.approx(ERSTC_TINY_KNOB.code_lambda(7))
    img = natural_image(64, 64)
    stream = load_codec("erstc-tiny-vr", 7, root=root).compress(img, quality=5)
    assert container.parse_header(stream).quality == 5
    decoder = codec_for_stream(stream, root=root)
    assert decoder.identity.digest.hex() == manifest["qualities"]["1"]["sha256"]
    assert decoder.decompress(stream).shape == img.shape


def test_a_variable_rate_version_refuses_two_different_weights(image_dirs, tmp_path):  # noqa: F811
    from model_store.train import export

    runs = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        cfg = dataclasses.replace(tiny_config(image_dirs, out, steps=1), arch="erstc", preset="tiny-vr", quality=1)
        train(dataclasses.replace(cfg, seed=seed))
        runs.append(str(out / "last.pt"))
    with pytest.raises(ValueError, match="one file"):
        export("erstc", "tiny-vr", "v1", {1: runs[0], 8: runs[0], 16: runs[1]}, root=str(tmp_path / "weights"))


def test_a_release_must_list_the_default_code_and_is_told_which_it_is(image_dirs, tmp_path):  # noqa: F811
    """GET /v1/models shows the default quality's measured numbers, so a release that did not measure the default
    code (it moves with the code span) is refused before anything is written."""
    from model_store.train import export

    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config(image_dirs, out, steps=1), arch="erstc", preset="tiny-vr", quality=1))
    with pytest.raises(ValueError, match="list the default code 8"):
        export("erstc", "tiny-vr", "v1", {1: str(out / "last.pt"), 16: str(out / "last.pt")}, root=str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
