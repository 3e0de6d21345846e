"""Growing a wider preset from a trained narrower one (model_store.widen): the CPU-hours carry over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model_store import registry
from model_store.architectures.registry import create_model
from model_store.codec import image_to_tensor
from model_store.image_io import open_image
from model_store.train import load_weights_only
from model_store.widen import WidenUnit, embed, widen_state

ASSETS = Path(__file__).parent / "assets"


def test_a_widened_linear_layer_computes_the_old_outputs_and_zero_in_the_new_ones():
    torch.manual_seed(0)
    narrow, wide = nn.Linear(4, 4), nn.Linear(8, 8)
    state = widen_state(wide, narrow.state_dict(), WidenUnit(2, 4))
    wide.load_state_dict(state)
    x_old = torch.randn(3, 4)
    x_new = torch.zeros(3, 8)
    x_new[:, [0, 1, 4, 5]] = x_old  # groups of 2 land at the start of groups of 4
    out = wide(x_new)
    assert torch.allclose(out[:, [0, 1, 4, 5]], narrow(x_old), atol=1e-6)
    assert torch.equal(out[:, [2, 3, 6, 7]], torch.zeros(3, 4))  # new outputs start at exactly zero
    assert wide.weight[[2, 3, 6, 7]].abs().sum() == 0 and wide.weight[:, 2].abs().sum() > 0  # inputs keep init


def test_a_dimension_that_is_not_whole_groups_keeps_its_values_in_the_leading_slots():
    old, fresh = torch.arange(5.0), torch.ones(9)
    assert embed(old, fresh, WidenUnit(2, 4), out_dim=-1).tolist() == [0, 1, 2, 3, 4, 0, 0, 0, 0]
    transposed = nn.ConvTranspose2d(2, 4, 3)  # weight (in, out, k, k): its outputs are dimension 1
    grown = embed(torch.ones(2, 2, 3, 3), transposed.weight, WidenUnit(1, 2), out_dim=1)
    assert grown[:, [1, 3]].abs().sum() == 0 and (grown[:, [0, 2]] == 1).all()


@pytest.mark.parametrize("text", ["24", "48:24", "a:b", "0:4"])
def test_a_bad_widen_unit_is_refused(text):
    with pytest.raises(ValueError, match="widen-unit"):
        WidenUnit.parse(text)


def test_erstc_wide_grown_from_a_shipped_small_file_reconstructs_the_same_image_and_new_channels_cost_nothing():
    entry = registry.resolve("erstc-small", 3)
    small = create_model("erstc", "small", 3)
    load_weights_only(small, str(entry.path))
    wide = create_model("erstc", "wide", 3)
    load_weights_only(wide, str(entry.path), widen="24:48")
    x = image_to_tensor(open_image(ASSETS / "val_citrus_384x256.png"))[None, :, :128, :128]
    small.eval(), wide.eval()
    with torch.no_grad():
        out_small, out_wide = small(x), wide(x)
    assert torch.allclose(out_wide["x_hat"], out_small["x_hat"], atol=1e-5)
    bits = -torch.log2(out_wide["likelihoods"]["y"]).sum(dim=(0, 2, 3))
    new_channels = (torch.arange(192) % 48) >= 24
    assert bits[new_channels].sum() < 1e-3 * bits.sum()
    bpp = lambda out: sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / x[0, 0].numel()  # noqa: E731
    assert np.isclose(float(bpp(out_wide)), float(bpp(out_small)), rtol=0.3)  # near, not at: CAM LayerNorms
