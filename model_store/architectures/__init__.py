"""Architecture families (one module each) and the preset registry."""

from model_store.architectures.base import LatentPayload, LearnedImageCodec
from model_store.architectures.registry import Preset, architectures, create_model, get_preset, presets, register

__all__ = [
    "LatentPayload",
    "LearnedImageCodec",
    "Preset",
    "architectures",
    "create_model",
    "get_preset",
    "presets",
    "register",
]
