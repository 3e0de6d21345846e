"""Entropy coding shared by every architecture: portable Gaussian symbol coding on top of compressai's rANS."""

from model_store.entropy.coding import (
    CANONICAL_DTYPE,
    GaussianSymbolCoder,
    GaussianSymbolDecoder,
    GaussianSymbolEncoder,
)

__all__ = ["CANONICAL_DTYPE", "GaussianSymbolCoder", "GaussianSymbolDecoder", "GaussianSymbolEncoder"]
