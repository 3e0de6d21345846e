"""The integer entropy path's arithmetic (issue #29): exact in float64 whatever the order, blocking, batch, threads
or backend, and guarded: what is not an integer in range is an error, never a value."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from model_store.entropy.integer import (
    EXACT_LIMIT,
    IntegerLayerNorm,
    IntegerLinear,
    IntegerPathError,
    IntegerTable,
    check_integral,
    check_range,
    deferred_checks,
    exact_product,
    floor_div,
    half_step,
    integer_softmax,
    isqrt,
    quantize_weight,
    round_shift,
    shift_down_,
)

rng = random.Random(0)


def ints(*shape, bits: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2 ** (bits - 1)) + 1, 2 ** (bits - 1), shape, generator=g).double()


# -- the exact primitives ---------------------------------------------------------------------------------------------
def test_round_shift_is_integer_rounding_half_up():
    values = [rng.randrange(-(2**51), 2**51) for _ in range(2000)] + [5, -5, 6, -6, 7, -7, 2**51 - 1]
    for bits in (1, 3, 12, 30):
        got = round_shift(torch.tensor(values, dtype=torch.float64), bits).tolist()
        assert got == [(v + 2 ** (bits - 1)) >> bits for v in values]  # floor((v + half) / 2^bits), in Python ints


def test_a_rescale_with_the_half_folded_in_ahead_rounds_like_round_shift():
    values = torch.tensor([rng.randrange(-(2**51), 2**51) for _ in range(2000)] + [5, -5, 6, -6], dtype=torch.float64)
    for bits in (0, 1, 3, 12, 30):
        assert torch.equal(shift_down_(values + half_step(bits), bits), round_shift(values, bits))
    assert round_shift(values, 0) is values  # no shift, no work
    for bad in (round_shift, lambda t, b: half_step(b)):
        with pytest.raises(ValueError, match="shift must be >= 0"):
            bad(values, -1)


def test_floor_div_floors_negative_and_near_integer_quotients_exactly():
    b = [rng.randrange(1, 2**20) for _ in range(3000)]
    a = [rng.randrange(-(2**50), 2**50) for _ in b]
    # quotients just below an integer, of both signs: k·b - 1 (floor k - 1, never k)
    a += [k * d - 1 for k, d in zip((rng.randrange(-(2**32), 2**32) for _ in range(1000)), b)]
    b += b[:1000]
    got = floor_div(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)).tolist()
    assert got == [x // y for x, y in zip(a, b)]


def test_isqrt_is_exact_next_to_perfect_squares():
    roots = [rng.randrange(0, 2**26) for _ in range(2000)] + [2**26 - 1, 2**26 - 2, 2**25]
    values = [r * r + d for r in roots for d in (-1, 0, 1) if r * r + d >= 0] + [2**52 - 1]
    got = isqrt(torch.tensor(values, dtype=torch.float64)).tolist()
    assert got == [math.isqrt(v) for v in values]


def test_a_weight_is_quantised_to_a_power_of_two_scale_within_its_bits():
    w = torch.randn(40, 30) * 0.3
    w_int, shift = quantize_weight(w, 16)
    assert float(w_int.abs().max()) < 2**15 and float(w_int.abs().max()) >= 2**14  # the largest scale that fits
    assert torch.allclose(w_int / 2.0**shift, w.double(), atol=0.5 * 2.0**-shift)


# -- exactness of a layer, whatever computes it -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def layer():
    weight, bias = ints(64, 384, bits=16, seed=1), ints(64, bits=30, seed=2)
    return IntegerLinear(weight, bias, shift=14, input_bound=2.0**15)


def reference(layer: IntegerLinear, x: torch.Tensor) -> list:
    """The same layer in Python integers (arbitrary precision): the ground truth."""
    w, b = [[int(v) for v in row] for row in layer.weight.tolist()], [int(v) for v in layer.bias.tolist()]
    out = []
    for row in x.tolist():
        acc = [sum(int(a) * c for a, c in zip(row, wr)) + bi for wr, bi in zip(w, b)]
        out.append([(v + 2 ** (layer.shift - 1)) >> layer.shift for v in acc])
    return out


def test_a_layer_equals_integer_arithmetic(layer):
    x = ints(5, 384, bits=16, seed=3)
    assert layer(x).tolist() == reference(layer, x)


def test_a_layer_derives_its_fast_kernel_from_the_stored_numbers_and_follows_a_replaced_weight(layer):
    x = ints(5, 384, bits=16, seed=5)
    before = layer(x)
    layer.weight = -layer.weight  # what loading a stored table or moving to a device does: a new tensor
    assert layer(x).tolist() == reference(layer, x) != before.tolist()
    layer.weight = -layer.weight
    assert torch.equal(layer(x), before)


def test_a_layer_gives_the_same_integers_for_any_batch_thread_count_order_or_blocking(layer):
    x = ints(257, 384, bits=16, seed=4)
    whole = layer(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(layer(x), whole)
        torch.set_num_threads(max(2, threads))
        assert torch.equal(layer(x), whole)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.cat([layer(row[None]) for row in x]), whole)  # one image at a time
    order = torch.randperm(384, generator=torch.Generator().manual_seed(5))  # channels in another order
    permuted = IntegerLinear(layer.weight[:, order], layer.bias, layer.shift, layer.input_bound)
    assert torch.equal(permuted(x[:, order]), whole)
    cuts = sorted(rng.sample(range(1, 384), 6))  # partial sums over random chunks, added in reverse
    acc = sum(reversed([x[:, a:b] @ layer.weight[:, a:b].t() for a, b in zip([0] + cuts, cuts + [384])])) + layer.bias
    assert torch.equal(round_shift(acc, layer.shift), whole)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(layer(x), whole)


def test_a_convolution_as_unfold_and_matmul_equals_the_backends_convolution_on_integers():
    x = ints(2, 24, 13, 17, bits=12, seed=6)
    w = ints(32, 24, 3, 3, bits=12, seed=7)
    conv = F.conv2d(x, w, padding=1)
    cols = F.unfold(x, 3, padding=1)  # (B, 24·9, L): a copy, exact
    unfolded = (w.flatten(1) @ cols).reshape(2, 32, 13, 17)
    assert torch.equal(conv, unfolded)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(F.conv2d(x, w, padding=1), conv)


def test_float32_would_not_be_exact_and_the_guard_refuses_it(layer):
    """The negative control: the same sums in float32 depend on the blocking, and the guard stops them at the door."""
    x = ints(64, 384, bits=16, seed=8)
    x32, w32 = x.float(), layer.weight.float()
    whole = x32 @ w32.t()
    chunked = sum(x32[:, i : i + 48] @ w32[:, i : i + 48].t() for i in range(0, 384, 48))
    assert not torch.equal(whole, chunked)  # float32 rounds partial sums: order-dependent
    with pytest.raises(IntegerPathError, match="expected torch.float64"):
        layer(x32)


@pytest.mark.parametrize("bad", [lambda x: x * 4, lambda x: x.masked_fill(x > 0, float("nan"))])
def test_a_layer_refuses_inputs_outside_the_range_its_exactness_was_proven_for(layer, bad):
    with pytest.raises(IntegerPathError, match="exceeds the exact range"):
        layer(bad(ints(3, 384, bits=16, seed=9)))


def test_non_integers_are_refused_where_values_enter_or_leave_the_path():
    """Inside the path every value is an integer by construction (only its range is checked there); what enters
    (ẑ, decoded latents) and what leaves (σ, μ) is checked integral as well."""
    x = ints(3, 384, bits=16, seed=9)
    assert check_integral(x, 2.0**16, "x") is x
    with pytest.raises(IntegerPathError, match="not an integer"):
        check_integral(x + 0.5, 2.0**16, "x")
    with pytest.raises(IntegerPathError, match="not an integer"):
        check_integral(x.masked_fill(x > 0, float("nan")), 2.0**16, "x")


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda x: check_integral(x + 0.5, 2.0**16, "x"), "x: a value is not an integer"),
        (lambda x: check_integral(x.masked_fill(x > 0, float("nan")), 2.0**16, "x"), "not an integer"),
        (lambda x: check_range(x * 8, 2.0**16, "x"), "exceeds the exact range"),
        (lambda x: exact_product(x / 3, "product"), "matmul kernel is not exact"),
    ],
)
def test_deferred_checks_catch_what_the_immediate_ones_catch_at_verify(bad, match):
    """Inside ``deferred_checks`` nothing is read on the host until ``verify``; then the first failed check raises
    the error the immediate check would have raised, and a clean span passes."""
    x = ints(3, 384, bits=16, seed=9)
    with deferred_checks() as guard:
        assert check_integral(x, 2.0**16, "x") is x and check_range(x, 2.0**16, "x") is x
        guard.verify()
        bad(x)  # recorded, not raised
        assert len(guard.entries) >= 1
        with pytest.raises(IntegerPathError, match=match):
            guard.verify()
    with pytest.raises(IntegerPathError, match=match):  # a normal exit verifies what is left
        with deferred_checks():
            bad(x)


def test_layer_norm_headroom_computed_on_the_device_matches_the_host_rule():
    """Deferred, LayerNorm picks σ's extra bits per image from device tensors; the values, around the threshold
    where the bits drop and with images of different sizes in one call, are the host rule's."""
    layer = IntegerLayerNorm.of(torch.nn.LayerNorm(48), 8)
    blocks = [ints(20, 48, bits=b, seed=20 + b) for b in (14, 18, 19, 22)]
    blocks[1][0, 0], blocks[2][0, 0] = 2.0**17 - 1, 2.0**17  # just below / at the 8-bit threshold
    x = torch.cat(blocks)
    immediate = layer(x, groups=4)
    with deferred_checks():
        deferred = layer(x, groups=4)
        uniform = layer(blocks[0], groups=1)
    assert torch.equal(deferred, immediate) and torch.equal(uniform, layer(blocks[0]))
    with pytest.raises(IntegerPathError, match="leaves the exact range"):
        with deferred_checks():
            layer(x * 2**9, groups=4)


def test_weights_that_could_overflow_the_exact_range_are_refused_when_the_layer_is_built():
    with pytest.raises(IntegerPathError, match="beyond the exact range"):
        IntegerLinear(ints(8, 4096, bits=24), None, shift=20, input_bound=2.0**24)
    with pytest.raises(IntegerPathError, match="not an integer"):
        IntegerLinear(ints(8, 16, bits=8) + 0.25, None, shift=4, input_bound=2.0**8)


# -- tables -----------------------------------------------------------------------------------------------------------
def test_a_table_holds_an_integer_function_flat_below_its_range_and_linear_or_flat_above():
    gelu = IntegerTable.of(F.gelu, low=-6 * 256, high=6 * 256, in_frac=8, out_frac=8, identity_above=True)
    x = torch.arange(-3000, 3000, dtype=torch.float64)
    out = gelu(x)
    check_integral(out, EXACT_LIMIT, "gelu")
    expected = torch.round(F.gelu(x * 2.0**-8) * 2.0**8)
    assert torch.equal(out, expected)  # below: GELU is 0 to the step; above: the identity to the step
    assert float(gelu.values[0]) == 0.0
    exp = IntegerTable.of(torch.exp, low=-16 * 256, high=0, in_frac=8, out_frac=15)
    assert float(exp(torch.tensor([-(10**6)], dtype=torch.float64))) == 0.0  # flat below
    assert float(exp(torch.tensor([5.0], dtype=torch.float64))) == 2.0**15  # clamped above: exp(0)
    with pytest.raises(ValueError, match="one scale"):
        IntegerTable.of(F.gelu, -8, 8, in_frac=2, out_frac=4, identity_above=True)


# -- LayerNorm, softmax and the context model ---------------------------------------------------------------------------
def test_layer_norm_follows_the_float_one_to_a_few_steps_and_each_row_is_its_own():
    norm = torch.nn.LayerNorm(48)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    frac = 8
    layer = IntegerLayerNorm.of(norm, frac)
    x = ints(300, 48, bits=14, seed=10)
    out = layer(x)
    check_integral(out, EXACT_LIMIT, "layer norm")
    with torch.no_grad():
        expected = norm(x.float() * 2.0**-frac).double() * 2.0**frac
    assert float((out - expected).abs().max()) <= 3.0  # steps of 2^-8
    assert torch.equal(torch.cat([layer(row[None]) for row in x]), out)


def test_layer_norm_judges_its_headroom_per_image_of_a_batched_call():
    """σ gets fewer extra bits where the values are large; an image with large values must not take them from the
    rows of the images batched with it (``groups``), whatever the input's layout."""
    norm = torch.nn.LayerNorm(48)
    layer = IntegerLayerNorm.of(norm, 8)
    quiet, loud = ints(40, 48, bits=14, seed=12), ints(40, 48, bits=22, seed=13)  # loud: |x| up to 2^21, extra < 8
    alone = [layer(quiet), layer(loud)]
    batched = layer(torch.cat([quiet, loud]), groups=2)
    assert torch.equal(batched, torch.cat(alone))
    assert not torch.equal(layer(torch.cat([quiet, loud]))[:40], alone[0])  # judged over both: the quiet rows change
    maps = torch.stack([quiet, loud]).reshape(2, 5, 8, 48)  # (B, H, W, C), as a full-map CAM call holds them
    assert torch.equal(layer(maps, groups=2), torch.stack(alone).reshape(2, 5, 8, 48))
    with pytest.raises(IntegerPathError, match="leave the exact range"):
        layer(torch.cat([quiet, loud * 2**6]), groups=2)


def test_softmax_rows_sum_to_the_output_scale_and_follow_the_float_softmax():
    frac = 8
    exp = IntegerTable.of(torch.exp, -16 << frac, 0, frac, 15)
    logits = ints(200, 25, bits=12, seed=11)
    p = integer_softmax(logits, exp, 15)
    assert float((p.sum(-1) - 2.0**15).abs().max()) <= 25  # one rounding per entry
    expected = torch.softmax(logits * 2.0**-frac, -1) * 2.0**15
    assert float((p - expected).abs().max()) <= 2.0**15 * 0.01


@pytest.fixture(scope="module")
def cams():
    from model_store.architectures.registry import create_model
    from model_store.entropy.integer_nets import IntegerCAM

    torch.manual_seed(0)
    model = create_model("erstc", "tiny", 1).eval().double()
    return model.context_prediction, IntegerCAM.of(model.context_prediction, frac=8, weight_bits=12)


def test_the_integer_context_model_follows_the_float_one(cams):
    cam, integer = cams
    y_hat = torch.round(torch.randn(1, cam.dim, 9, 11, dtype=torch.float64) * 6)
    with torch.no_grad():
        expected = cam(y_hat)
    got = integer(y_hat * 2.0**8) * 2.0**-8
    assert float((got - expected).abs().max()) < 0.05 * float(expected.abs().max())


def test_the_integer_context_model_gives_the_same_integers_for_any_batch_or_thread_count(cams):
    _, integer = cams
    y_hat = torch.round(torch.randn(3, integer.cam.dim, 7, 10, dtype=torch.float64) * 6) * 2.0**8
    together = integer(y_hat)
    alone = torch.cat([integer(y_hat[i : i + 1]) for i in range(3)])
    assert torch.equal(together, alone)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert torch.equal(integer(y_hat), together)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(IntegerPathError, match="not an integer"):
        integer(y_hat + 0.5)


# -- h_s: convolutions and SwinV2 groups ----------------------------------------------------------------------------------
@pytest.mark.parametrize("transposed", [False, True])
def test_a_convolution_or_transposed_convolution_as_unfold_and_one_integer_layer_equals_the_float_one(transposed):
    from model_store.entropy.integer_nets import IntegerConv2d

    torch.manual_seed(1)
    kind = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    extra = {"output_padding": 1} if transposed else {}
    conv = kind(6, 5, kernel_size=3, stride=2, padding=1, **extra).double()
    with torch.no_grad():  # weights on a 2^-6 grid that 12 bits hold exactly: the layer's only rounding is its output's
        conv.weight.copy_(torch.round(conv.weight * 64) / 64)
        conv.bias.copy_(torch.round(conv.bias * 64) / 64)
    x = torch.round(torch.randn(2, 6, 7, 9, dtype=torch.float64) * 4) * 2.0**8
    got = IntegerConv2d(conv, frac=8, weight_bits=12)(x)
    with torch.no_grad():
        expected = conv(x * 2.0**-8) * 2.0**8
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 0.5  # round-half-up of an exact sum


@pytest.fixture(scope="module")
def tiny_erstc():
    from model_store.architectures.registry import create_model

    torch.manual_seed(0)
    return create_model("erstc", "tiny", 1).eval().double()


def test_the_integer_hyper_synthesis_converges_to_the_float_one_and_is_batch_invariant(tiny_erstc):
    """A random tiny model's activations are small (its attention branches a few steps of 2^-8): the error must
    shrink with more fractional bits, and at 12 be a small fraction of the output."""
    from model_store.entropy.integer_nets import IntegerHyperSynthesis, to_fixed

    z_hat = torch.round(torch.randn(2, tiny_erstc.h_s[0].in_channels, 3, 5, dtype=torch.float64) * 3)
    with torch.no_grad():
        expected = tiny_erstc.h_s(z_hat)
    errors = {}
    for frac, bits in ((8, 12), (12, 16)):
        h_s = IntegerHyperSynthesis.of(tiny_erstc.h_s, frac=frac, weight_bits=bits)
        got = h_s(to_fixed(z_hat, frac))
        errors[frac] = float((got * 2.0**-frac - expected).abs().max())
        assert torch.equal(torch.cat([h_s(to_fixed(z_hat[i : i + 1], frac)) for i in range(2)]), got)
    assert errors[12] < errors[8] / 4
    assert errors[12] < 0.02 * float(expected.abs().max())
