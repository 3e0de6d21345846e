"""A variable-rate weights version may spread its knob codes over another span of the trained positions (issue #27:
the knob's bottom has to reach ~0.1 bpp). The span is part of the file: a stream's code means what it meant to
the encoder, older files (no span) keep 0..1, and a file and manifest that disagree are refused, never decoded."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import natural_image
from safetensors.torch import load_file

from model_store import registry
from model_store.architectures.erstc import ERSTC_SMALL_KNOB, ERSTC_SMALL_VR_CODE_SPAN, ERSTC_TINY_KNOB
from model_store.architectures.registry import create_model, get_preset
from model_store.architectures.variable_rate import RateKnob
from model_store.codec import codec_for_stream, load_codec
from model_store.errors import WeightsFileError

SPAN = (-0.1, 1.0)


def tiny_vr(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("erstc", "tiny-vr", 1).eval()


def export(root, span=None, version="v1"):
    return registry.write_model_version(
        {1: tiny_vr(), 16: tiny_vr()}, "erstc", "tiny-vr", version, root=root, code_span=span
    )


# -- the scale --------------------------------------------------------------------------------------------------------
def test_a_span_puts_code_1_and_the_top_code_at_its_ends_with_even_steps_between():
    knob = ERSTC_SMALL_KNOB.with_code_span(SPAN)
    assert knob.position(1) == pytest.approx(-0.1) and knob.position(255) == pytest.approx(1.0)
    assert knob.code_lambda(1) == pytest.approx(ERSTC_SMALL_KNOB.lambda_at(-0.1))
    assert knob.code_lambda(1) < ERSTC_SMALL_KNOB.code_lambda(1) and knob.code_lambda(255) == pytest.approx(0.36)
    ratios = [knob.code_lambda(k + 1) / knob.code_lambda(k) for k in range(1, 255)]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] < 1.03  # still ~2 % of λ a code
    assert [knob.nearest_code(knob.code_lambda(k)) for k in knob.codes] == list(knob.codes)
    # the default code moves so that a caller who names no quality still gets the ladder's default λ
    assert knob.code_lambda(knob.default_code) == pytest.approx(knob.default_lambda, rel=0.015)
    assert knob.default_code != ERSTC_SMALL_KNOB.default_code


@pytest.mark.parametrize("span", [(-0.2, 1.0), (0.0, 1.2), (0.5, 0.5), (1.0, 0.0)])
def test_a_span_outside_the_trained_positions_or_not_increasing_is_refused(span):
    with pytest.raises(ValueError, match="code span"):
        RateKnob(train_margin=0.1, code_span=span)


def test_the_default_models_preset_serves_the_bottom_of_the_trained_range():
    preset = get_preset("erstc", "small-vr")
    assert preset.served_code_span == ERSTC_SMALL_VR_CODE_SPAN == (-preset.rate_knob.train_margin, 1.0)
    assert preset.rate_knob.code_span == (0.0, 1.0)  # training validates on the scale it always did


def test_the_span_moves_codes_only_not_what_a_position_does():
    model = tiny_vr()
    before = model.knob_table(torch.tensor([0.3]))
    model.use_code_span(SPAN)
    after = model.knob_table(torch.tensor([0.3]))
    assert torch.equal(before.gain, after.gain) and torch.equal(before.bias, after.bias)
    assert model.rate_knob.code_span == SPAN and model.knob_table.knob is model.rate_knob


# -- the file and the manifest -------------------------------------------------------------------------------------------
def test_an_export_stores_its_span_in_the_file_and_the_manifest_and_a_loader_uses_it(tmp_path):
    folder = export(tmp_path, SPAN)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variable_rate"] == {"levels": 16, "code_span": list(SPAN)}
    state = load_file(str(folder / registry.VARIABLE_RATE_FILE))
    assert state[registry.CODE_SPAN_KEY].dtype == torch.float64 and state[registry.CODE_SPAN_KEY].tolist() == list(SPAN)
    entry = registry.resolve("erstc-tiny-vr", 1, root=tmp_path)
    assert entry.rate_knob == ERSTC_TINY_KNOB.with_code_span(SPAN) and entry.lmbda == pytest.approx(
        entry.rate_knob.code_lambda(1)
    )
    assert registry.load_model(entry).rate_knob == entry.rate_knob


def test_without_a_span_the_file_and_manifest_are_as_before(tmp_path):
    folder = export(tmp_path)
    assert json.loads((folder / "manifest.json").read_text())["variable_rate"] == {"levels": 16}
    assert registry.CODE_SPAN_KEY not in load_file(str(folder / registry.VARIABLE_RATE_FILE))
    assert registry.load_model(registry.resolve("erstc-tiny-vr", 1, root=tmp_path)).rate_knob == ERSTC_TINY_KNOB


def test_a_spread_codes_stream_codes_at_the_spans_position_and_decodes_bit_exactly(tmp_path):
    export(tmp_path, SPAN)
    codec = load_codec("erstc-tiny-vr", 1, root=tmp_path)
    bottom = codec.model.knob_table(torch.tensor([-0.1], dtype=torch.float32)).gain[0]
    assert torch.allclose(codec.model.integer_entropy.knob_gains[0].float(), bottom)  # what code 1 codes with
    img = natural_image(64, 80, seed=3)
    stream = codec.compress(img, quality=1)
    decoder = codec_for_stream(stream, root=tmp_path)  # a fresh load, from the file
    assert decoder.model.rate_knob.code_span == SPAN
    assert torch.equal(torch.as_tensor(decoder.decompress(stream)), torch.as_tensor(codec.decompress(stream)))


def test_a_file_whose_span_was_changed_after_export_is_refused(tmp_path):
    """The integer path stores every code's gains as the export computed them; a span edited afterwards would code
    every latent on the wrong grid, so the loader compares them."""
    folder = export(tmp_path, SPAN)
    path = folder / registry.VARIABLE_RATE_FILE
    state = load_file(str(path))
    state[registry.CODE_SPAN_KEY] = torch.tensor([-0.05, 1.0], dtype=torch.float64)
    model = create_model("erstc", "tiny-vr", 1).eval()
    with pytest.raises(WeightsFileError, match="per-code gains do not match"):
        registry.load_state(model, state)
    del state[registry.CODE_SPAN_KEY]  # stripped: the gains were computed at -0.1
    with pytest.raises(WeightsFileError, match="per-code gains do not match"):
        registry.load_state(create_model("erstc", "tiny-vr", 1).eval(), state)


def test_a_manifest_that_disagrees_with_its_file_is_refused(tmp_path):
    folder = export(tmp_path, SPAN)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["variable_rate"]["code_span"] = [0.0, 1.0]
    manifest_path.write_text(json.dumps(manifest))
    registry.refresh()
    try:
        with pytest.raises(WeightsFileError, match="spreads its knob codes"):
            registry.load_model(registry.resolve("erstc-tiny-vr", 1, root=tmp_path))
    finally:
        registry.refresh()


def test_a_span_on_a_per_lambda_export_is_refused(tmp_path):
    with pytest.raises(ValueError, match="per-λ"):
        registry.write_model_version(
            {1: create_model("erstc", "tiny", 1)}, "erstc", "tiny", "v1", root=tmp_path, code_span=SPAN
        )


def test_a_file_without_a_span_resets_a_model_that_held_one():
    """A file without the key means 0..1: loading it into a model that held another span must not keep that one
    (the float64 path has no stored gains to catch it)."""
    state = registry.export_state(tiny_vr())
    model = tiny_vr()
    model.use_code_span(SPAN)
    registry.load_state(model, {k: v for k, v in state.items() if not k.startswith("integer_entropy.")})
    assert model.rate_knob.code_span == (0.0, 1.0)


@pytest.mark.parametrize("bad", [[-0.1, 1.0, 5.0], [-0.5, 1.0], ["a", 1.0], 3])
def test_a_malformed_manifest_span_is_a_weights_error(tmp_path, bad):
    folder = export(tmp_path, SPAN)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["variable_rate"]["code_span"] = bad
    (folder / "manifest.json").write_text(json.dumps(manifest))
    registry.refresh()
    try:
        with pytest.raises(WeightsFileError, match="bad code_span"):
            registry.resolve("erstc-tiny-vr", 1, root=tmp_path)
    finally:
        registry.refresh()


def test_an_export_refuses_to_overwrite_a_span_the_model_already_holds(tmp_path):
    model = tiny_vr()
    model.use_code_span((-0.05, 1.0))
    with pytest.raises(ValueError, match="say which one"):
        registry.write_model_version({1: model}, "erstc", "tiny-vr", "v1", root=tmp_path, code_span=SPAN)


def test_training_validation_also_scores_the_served_bottom_outside_its_loss():
    from model_store.train import validate_rate_knob

    model = tiny_vr()
    model.update(force=True)
    images = [torch.from_numpy(natural_image(64, 64, seed=1)).permute(2, 0, 1).float() / 255]
    plain = validate_rate_knob(model, images, torch.device("cpu"))
    served = validate_rate_knob(model, images, torch.device("cpu"), served_code_span=SPAN)
    assert "served_bottom" not in plain and served["loss"] == plain["loss"]  # runs stay comparable
    assert served["served_bottom"]["bpp"] <= plain["levels"]["1"]["bpp"]  # a coarser grid than code 1 at 0..1
    assert model.rate_knob.code_span == (0.0, 1.0)  # and the model is left on the training scale
