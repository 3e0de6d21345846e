"""Grow a wider model from a trained narrower one (training toolchain, never used at run time).

Why: the default model's CPU-hours must carry over when the campaign decides that it needs more channels (issue
"beat AVIF": erstc-small's 96 latent channels look capacity-bound at high rates). Starting a wider preset from
scratch would throw those hours away; loading only the tensors whose shapes match (``--init-from``'s plain rule)
leaves every layer that touches the widened dimension at random init, which wrecks the start.

The rule here: every checkpoint tensor is embedded into the model's (wider) tensor, and the slots that are new are
chosen so that the wider model starts as close to the narrow one as its layers allow:

* A widened dimension is split into groups of ``unit.old`` channels that land at the start of groups of
  ``unit.new`` channels. With the unit set to the CAM head width (M / heads), each latent channel keeps its
  place *relative to its head*, and every tensor that is a concatenation of M-sized parts (σ and μ in 2M, ψ and φ
  in 4M, q/k/v in 3M) maps each part consistently, so attention heads stay heads and σ_i still belongs to y_i.
  A dimension whose old size is not a whole number of groups (hidden widths like 10M/3) keeps its old values in
  its leading slots.
* New *output* slots start at zero (rows of Linear/Conv, columns of ConvTranspose, every new slot of a vector:
  biases, norm gains), so the new latent channels are exactly 0, cost ~0 bits (σ at its lower bound, μ = 0) and
  the old channels see the old function. New *input* slots keep their random init, so gradients reach the zero
  rows and the new channels can start carrying information (all-zero on both sides would never move).

What is not preserved exactly: LayerNorms over a widened dimension now average over the extra zero channels, so
the grown model starts near, not at, the narrow model's rate-distortion; its step 0 in ``log.jsonl`` says how near.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class WidenUnit:
    """Channel group sizes that map one to one when a dimension widens: ``old`` channels -> the first ``old`` of
    ``new``. For ERSTC/TIC latents: the CAM head width, M / cam_heads (erstc-small: 24; M 96 -> 192: 24:48)."""

    old: int
    new: int

    @classmethod
    def parse(cls, text: str) -> "WidenUnit":
        old, sep, new = text.partition(":")
        if not sep or not old.isdigit() or not new.isdigit() or not 0 < int(old) <= int(new):
            raise ValueError(f"--widen-unit takes OLD:NEW channel counts with 0 < OLD <= NEW, got {text!r}")
        return cls(int(old), int(new))


def _dim_index(old: int, new: int, unit: WidenUnit) -> Tensor:
    """Where each of the ``old`` indices of one dimension goes among the ``new`` ones."""
    idx = torch.arange(old)
    if old == new:
        return idx
    groups = old // unit.old
    if old % unit.old == 0 and new == groups * unit.new:
        return (idx // unit.old) * unit.new + idx % unit.old
    return idx  # not made of whole groups: keep the old values in the leading slots


def _output_dim(module: nn.Module, param_name: str, ndim: int) -> int:
    """The dimension of a parameter that indexes its module's output features (-1: every dimension, vectors)."""
    if ndim == 1:
        return -1
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and param_name == "weight":
        return 1
    return 0


def embed(old: Tensor, fresh: Tensor, unit: WidenUnit, out_dim: int) -> Tensor:
    """``old`` placed inside a tensor shaped like ``fresh``: new output slots zero, new input slots from ``fresh``."""
    if old.ndim != fresh.ndim or any(o > n for o, n in zip(old.shape, fresh.shape)):
        raise ValueError(f"cannot widen a {tuple(old.shape)} tensor into {tuple(fresh.shape)}")
    result = fresh.detach().clone()
    if out_dim == -1:
        result.zero_()
    elif old.shape[out_dim] != fresh.shape[out_dim]:
        kept = _dim_index(old.shape[out_dim], fresh.shape[out_dim], unit)
        new_rows = torch.ones(fresh.shape[out_dim], dtype=torch.bool)
        new_rows[kept] = False
        result.index_fill_(out_dim, new_rows.nonzero().flatten(), 0.0)
    index = torch.meshgrid(*[_dim_index(o, n, unit) for o, n in zip(old.shape, fresh.shape)], indexing="ij")
    result[index] = old.to(result.dtype)
    return result


def widen_state(model: nn.Module, state: Dict[str, Tensor], unit: WidenUnit) -> Dict[str, Tensor]:
    """``state`` with every parameter whose shape differs from the model's embedded into it (module docstring);
    everything else passes through unchanged: buffers are derived tables (CDFs, which compressai's entropy
    modules resize on load and export recomputes) and names the model lacks are reported by the loader."""
    own = dict(model.named_parameters())
    out = dict(state)
    for name, old in state.items():
        if name not in own or own[name].shape == old.shape:
            continue
        module_name, _, param_name = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        out[name] = embed(old, own[name], unit, _output_dim(module, param_name, old.ndim))
    return out


def widened_names(model: nn.Module, state: Dict[str, Tensor]) -> List[str]:
    """Names of the checkpoint parameters that differ in shape from the model's (what ``widen_state`` embeds)."""
    own = dict(model.named_parameters())
    return sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
