"""Portable symbol coding: index computation matches compressai's, CRCs catch divergence."""

from __future__ import annotations

import torch
from compressai.entropy_models import GaussianConditional
from compressai.models.base import get_scale_table

from model_store.entropy.coding import GaussianSymbolDecoder, GaussianSymbolEncoder, _CdfTables


def gaussian() -> GaussianConditional:
    g = GaussianConditional(None)
    g.update_scale_table(get_scale_table(), force=True)
    return g.double()


def test_scale_indexes_equal_compressai_build_indexes_including_table_boundaries():
    g = gaussian()
    table = g.scale_table
    scales = torch.cat(
        [torch.logspace(-3, 3, 5000, dtype=torch.float64), table, table * (1 + 1e-12), table * (1 - 1e-12)]
    ).reshape(1, 1, -1)
    assert torch.equal(_CdfTables(g).indexes(scales), g.build_indexes(scales))


def test_groups_decode_back_in_the_order_they_were_coded():
    g = gaussian()
    torch.manual_seed(0)
    groups = [
        (torch.rand(1, 4, 3, 5, dtype=torch.float64) * 5 + 0.2, torch.randn(1, 4, 3, 5, dtype=torch.float64))
        for _ in range(4)
    ]
    ys = [torch.randn(1, 4, 3, 5, dtype=torch.float64) * 4 for _ in groups]
    enc = GaussianSymbolEncoder(g)
    encoded = [enc.code(s, m, y) for (s, m), y in zip(groups, ys)]
    dec = GaussianSymbolDecoder(g, enc.finish())
    decoded = [dec.code(s, m) for s, m in groups]
    dec.verify(enc.index_crc)
    for a, b in zip(encoded, decoded):
        assert torch.equal(a, b)


def test_far_outliers_survive_escape_coding():
    g = gaussian()
    scales = torch.full((1, 1, 1, 4), 0.2, dtype=torch.float64)
    y = torch.tensor([[[[500.0, -900.0, 0.2, 3.0]]]], dtype=torch.float64)
    enc = GaussianSymbolEncoder(g)
    y_hat = enc.code(scales, None, y)
    assert torch.equal(GaussianSymbolDecoder(g, enc.finish()).code(scales, None), y_hat)
    assert y_hat.flatten().tolist() == [500.0, -900.0, 0.0, 3.0]
