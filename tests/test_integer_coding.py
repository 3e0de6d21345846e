"""The integer entropy path in the coding loop (issue #29): streams that do not depend on batch, threads or machine.

A variable-rate ERSTC exported with ``integer_entropy`` carries its integer networks and tables in the weights file;
loaded, it codes every wavefront step on them, and a batch of same-sized images shares each step. What these tests
pin down: the bytes of a stream are the bytes that image gets alone, with 1 or 2 threads, in a fresh process; the
numbers come from the file (change a stored table and the streams change); a path that would compute a non-integer
or leave its exact range raises instead of writing a stream; files without tables keep the float64 path.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import natural_image

from model_store.architectures.registry import create_model
from model_store.codec import canonical_copy
from model_store.entropy.integer import IntegerPathError
from model_store.entropy.integer_coding import IntegerEntropyPath, has_integer_state
from model_store.errors import CoderMismatchError
from model_store.layers.cam import wavefront_schedule
from model_store.registry import export_state, load_state

CODES = (1, 9, 16)


@pytest.fixture(scope="module")
def exported():
    """A tiny random variable-rate ERSTC as a loader sees it after export: (stored state, the loaded model)."""
    torch.manual_seed(0)
    state = export_state(create_model("erstc", "tiny-vr", 1).eval())
    loaded = create_model("erstc", "tiny-vr", 1).eval()
    load_state(loaded, state)
    return state, loaded


@pytest.fixture(scope="module")
def tiny(exported):
    state, model = exported
    return state, canonical_copy(model)


@pytest.fixture(scope="module")
def latents(exported):
    """g_a of three different photo-like images (canonical dtype)."""
    _, model = exported
    with torch.no_grad():
        return [
            model.g_a(torch.from_numpy(natural_image(128, 192, seed=s)).permute(2, 0, 1)[None].float() / 255).double()
            for s in range(3)
        ]


def encode(canon, ys, codes):
    return [payload for payload, _ in canon.compress_latents_and_reconstruct(ys, knobs=codes)]


def test_an_exported_variable_rate_file_carries_its_integer_path_and_a_loader_codes_on_it(tiny):
    state, canon = tiny
    assert has_integer_state(state)
    assert isinstance(canon.integer_entropy, IntegerEntropyPath) and canon.batches_entropy_coding
    # integers stored as integers, in the smallest dtype; only the knob's gains are not integers
    stored = {k: v for k, v in state.items() if k.startswith("integer_entropy.")}
    assert stored["integer_entropy.net.layers.0.weight"].dtype == torch.int16
    assert [k for k, v in stored.items() if v.is_floating_point() and v.numel() > 1] == ["integer_entropy.knob_gains"]


def test_a_file_without_tables_keeps_the_float64_path():
    torch.manual_seed(0)
    model = create_model("erstc", "tiny", 1).eval()
    state = export_state(model)
    assert not has_integer_state(state)
    loaded = create_model("erstc", "tiny", 1).eval()
    load_state(loaded, state)
    assert loaded.integer_entropy is None and not canonical_copy(loaded).batches_entropy_coding


def test_round_trip_is_exact_at_every_code(tiny, latents):
    _, canon = tiny
    for code in CODES:
        payload, y_hat = canon.compress_latents_and_reconstruct([latents[0]], knobs=[code])[0]
        assert torch.equal(canon.decompress_latent(payload), y_hat)
        assert y_hat.shape == latents[0].shape and (y_hat - latents[0]).abs().max() < 2.0


def test_a_batch_codes_every_image_as_it_would_be_coded_alone(tiny, latents):
    """Mixed codes in one batch; encoder and decoder batches of 3 equal the streams and latents of batches of 1."""
    _, canon = tiny
    codes = [CODES[0], CODES[2], CODES[1]]
    alone = [encode(canon, [y], [c])[0] for y, c in zip(latents, codes)]
    batched = encode(canon, latents, codes)
    assert [p.y_string for p in batched] == [p.y_string for p in alone]
    assert [p.index_crc for p in batched] == [p.index_crc for p in alone]
    decoded = canon.decompress_latents(batched)
    for payload, y_hat in zip(alone, decoded):
        assert torch.equal(canon.decompress_latent(payload), y_hat)


def test_streams_do_not_depend_on_the_thread_count(tiny, latents):
    _, canon = tiny
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = encode(canon, latents[:2], [CODES[1]] * 2)
        torch.set_num_threads(2)
        two = encode(canon, latents[:2], [CODES[1]] * 2)
    finally:
        torch.set_num_threads(before)
    assert [p.y_string for p in one] == [p.y_string for p in two]


def test_a_fresh_process_decodes_the_same_latent(tiny, latents, tmp_path):
    state, canon = tiny
    payload, y_hat = canon.compress_latents_and_reconstruct([latents[0]], knobs=[CODES[1]])[0]
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"payload": payload}, tmp_path / "payload.pt")
    script = f"""
import torch
from safetensors.torch import load_file
from model_store.architectures.registry import create_model
from model_store.codec import canonical_copy
from model_store.registry import load_state
torch.set_num_threads(2)
model = create_model("erstc", "tiny-vr", 1).eval()
load_state(model, load_file({str(tmp_path / "model.safetensors")!r}))
payload = torch.load({str(tmp_path / "payload.pt")!r}, weights_only=False)["payload"]
torch.save(canonical_copy(model).decompress_latent(payload), {str(tmp_path / "y_hat.pt")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert torch.equal(torch.load(tmp_path / "y_hat.pt"), y_hat)


def test_the_numbers_come_from_the_file_not_from_this_machine(tiny, latents):
    """Changing a stored table (the parameter net's GELU, by a quarter) changes the streams: a loader uses what is
    stored, not what its own ``erf`` would give."""
    state, canon = tiny
    expected = encode(canon, latents[:1], [CODES[1]])[0].y_string
    altered = dict(state)
    key = "integer_entropy.net.gelu.values"
    altered[key] = state[key] + 64
    model = create_model("erstc", "tiny-vr", 1).eval()
    load_state(model, altered)
    assert encode(canonical_copy(model), latents[:1], [CODES[1]])[0].y_string != expected


def test_what_the_path_derives_for_speed_is_not_stored(tiny, latents):
    """Coding fills the path's derived layouts (a transposed kernel, folded rounding halves); the stored state is
    still exactly the file's numbers."""
    state, canon = tiny
    encode(canon, latents[:1], [CODES[0]])
    stored = {k: v for k, v in state.items() if k.startswith("integer_entropy.")}
    again = canon.integer_entropy.state()
    assert set(again) == set(stored) and all(torch.equal(again[k], stored[k]) for k in stored)


def test_tables_that_do_not_fit_the_architecture_are_refused(tiny):
    state, _ = tiny
    broken = {k: v for k, v in state.items() if k != "integer_entropy.cam.qkv.weight"}
    with pytest.raises(ValueError, match="do not match the architecture"):
        load_state(create_model("erstc", "tiny-vr", 1).eval(), broken)


def test_a_perturbed_kernel_is_caught_by_the_guard_and_makes_no_stream(tiny, latents):
    """The negative control: a parameter-net weight that is not an integer (as a float kernel would be) gives
    non-integer entropy parameters; the guard raises instead of coding them."""
    state, _ = tiny
    model = create_model("erstc", "tiny-vr", 1).eval()
    load_state(model, state)
    canon = canonical_copy(model)
    canon.integer_entropy.net.layers[2].weight[0, 0] += 0.5
    with pytest.raises(IntegerPathError, match="not an integer"):
        encode(canon, latents[:1], [CODES[1]])


def test_deferred_checks_code_the_same_streams_and_still_stop_a_bad_kernel(tiny, latents):
    """The GPU form of the guard (one host read per wavefront step), forced on the CPU: the same bytes and latents
    as per-operation checks, and the negative control still raises before any stream exists."""
    state, canon = tiny
    codes = [CODES[0], CODES[2]]
    immediate = encode(canon, latents[:2], codes)
    model = create_model("erstc", "tiny-vr", 1).eval()
    load_state(model, state)
    deferred = canonical_copy(model)
    deferred.integer_entropy.defer_checks = True
    assert [p.y_string for p in encode(deferred, latents[:2], codes)] == [p.y_string for p in immediate]
    assert torch.equal(deferred.decompress_latent(immediate[1]), canon.decompress_latent(immediate[1]))
    deferred.integer_entropy.net.layers[2].weight[0, 0] += 0.5
    with pytest.raises(IntegerPathError, match="not an integer"):
        encode(deferred, latents[:1], [CODES[1]])


def test_the_integer_path_codes_in_wavefront_order_only(tiny, latents):
    from model_store.entropy.causal_context import raster_serial_encode

    _, canon = tiny
    with pytest.raises(ValueError, match="wavefront order only"):
        raster_serial_encode(canon, latents[0])


def test_a_batch_mate_with_large_latents_does_not_change_an_image_s_stream(tiny, latents):
    """LayerNorm keeps extra bits for σ only while ``4^extra (2 max|x|)²`` fits the exact range; the headroom is
    judged per image, so an image whose latents are large (|ŷ| past 512 costs σ a bit in the CAM's first norm) does
    not change what its batch mates' rows compute: a service batch mixes strangers' uploads."""
    _, canon = tiny
    large = latents[1] / latents[1].abs().max() * 3000.0
    alone = encode(canon, [latents[0]], [CODES[1]])[0]
    batched = encode(canon, [latents[0], large], [CODES[1], CODES[1]])
    assert batched[0].y_string == alone.y_string and batched[0].index_crc == alone.index_crc
    assert torch.equal(canon.decompress_latents([batched[0], batched[1]])[0], canon.decompress_latent(alone))


def one_mean_off_at_the_last_step(state, latent):
    """A decoder whose parameter net gives one mean one fixed-point step off, at the last wavefront step only (no
    later step reads that latent, so every scale index stays the encoder's): the divergence the LayerNorm headroom
    bug produced, in its quietest form."""
    model = create_model("erstc", "tiny-vr", 1).eval()
    load_state(model, state)
    canon = canonical_copy(model)
    path = canon.integer_entropy
    h, w = latent.shape[-2:]
    steps = len(wavefront_schedule(h, w, canon.context_prediction.block_len))
    honest, calls = path.parameters, []

    def parameters(hyper_acc, context):
        scales, means = honest(hyper_acc, context)
        calls.append(1)
        if len(calls) % steps == 0:  # each decode's last step
            means = means.clone()
            means[-1, 0] += 1
        return scales, means

    path.parameters = parameters
    return canon


def test_the_coder_crc_covers_the_decoded_latents_so_a_diverging_mean_is_an_error(tiny, latents):
    """The coder CRC used to cover the scale indexes only: a decoder whose means drift (here by one fixed-point step
    where no later index depends on it) returned a different ŷ without a word. Integer-path streams now fold every
    decoded latent into the CRC too (``container.FLAG_LATENT_CRC``), so the same drift is a CoderMismatchError.
    Streams written without the flag (every stream before it) decode exactly as before."""
    state, canon = tiny
    payload, y_hat = canon.compress_latents_and_reconstruct([latents[0]], knobs=[CODES[1]])[0]
    assert payload.latent_crc and torch.equal(canon.decompress_latent(payload), y_hat)
    with pytest.raises(CoderMismatchError, match="differ from the encoder's"):
        one_mean_off_at_the_last_step(state, latents[0]).decompress_latent(payload)

    # what encoders wrote before the flag, and what LIC_LATENT_CRC=false writes while a fleet has such decoders
    legacy, legacy_y_hat = canon.compress_latents_and_reconstruct([latents[0]], knobs=[CODES[1]], latent_crc=False)[0]
    assert not legacy.latent_crc and legacy.y_string == payload.y_string and legacy.index_crc != payload.index_crc
    assert torch.equal(canon.decompress_latent(legacy), y_hat) and torch.equal(legacy_y_hat, y_hat)
    drifted = one_mean_off_at_the_last_step(state, latents[0]).decompress_latent(legacy)  # what the flag closes
    assert (drifted != y_hat).sum() == 1


def test_a_stream_that_covers_latents_is_refused_by_a_model_coding_without_the_integer_path(tiny, latents):
    """The float64 path cannot promise the fixed-point ŷ the CRC covers: a clear refusal, not a CRC mismatch."""
    state, canon = tiny
    payload = encode(canon, latents[:1], [CODES[0]])[0]
    model = create_model("erstc", "tiny-vr", 1).eval()
    load_state(model, state)
    float_path = canonical_copy(model)
    float_path.integer_entropy = None
    with pytest.raises(ValueError, match="covers the integer entropy path's latents"):
        float_path.decompress_latent(payload)
