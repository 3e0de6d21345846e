"""Move training checkpoints off a lent GPU machine through a small return channel, and put them back together.

    python -m model_store.transfer pack runs/ OUT_DIR [--max-mib 15]     # on the device, into $OUT
    python -m model_store.transfer unpack IN_DIR runs/                     # here, before `model_store.train export`

Why: the device returns at most 8 files of 16 MiB each, and a training checkpoint (float32 weights + two Adam
states) is ~4x the size of the weights. ``pack`` keeps what export and fine-tuning need (the model state as fp16,
the step, the validation loss) from each run's ``best.pt``, the run's config in its index, and cuts all runs, one
after another, into as few parts under the size cap as they fit (the channel also counts files); ``unpack`` joins
the parts, checks their sha256 (a part lost or cut on the way is
an error, never a silently broken checkpoint) and writes ``<run>/best.pt`` that :func:`model_store.train.export` and
``--init-from`` accept. The optimiser state is dropped on purpose: a transferred run is exported or fine-tuned,
not resumed bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

INDEX = "transfer.json"
MIB = 1 << 20


class TransferError(RuntimeError):
    """The parts in a folder do not reassemble into what ``pack`` wrote."""


def slim_checkpoint(path: Path) -> Tuple[bytes, Optional[dict]]:
    """A run's checkpoint reduced to fp16 model state + step and validation result (serialised), and the config
    the run was trained with (inside the checkpoint for last.pt, beside it in config.json for best.pt)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    slim = {"model": state, "step": ckpt.get("step"), "val": ckpt.get("val"), "best_val": ckpt.get("best_val")}
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    config_file = path.parent / "config.json"
    config = ckpt.get("config") or (json.loads(config_file.read_text()) if config_file.exists() else None)
    return buffer.getvalue(), config


def pack(runs_dir: Path, out_dir: Path, max_mib: float = 15.0, checkpoint: str = "best.pt") -> Dict:
    """Write every run's slim checkpoint into one byte stream cut into parts of at most ``max_mib`` MiB, plus an
    index; returns the index.

    All runs share the parts (a run starts where the previous one ends) because the return channel counts
    *files* as well as bytes: six small runs would otherwise cost six files, however small.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = int(max_mib * MIB)
    index: Dict = {"checkpoint": checkpoint, "parts": [], "runs": {}}
    blob = bytearray()
    for ckpt_path in sorted(runs_dir.glob(f"*/{checkpoint}")):
        run = ckpt_path.parent.name
        data, config = slim_checkpoint(ckpt_path)
        index["runs"][run] = {
            "offset": len(blob),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "config": config,  # unpack writes it as config.json: export records it as the recipe
        }
        blob += data
    for i in range(0, len(blob), limit):
        name = f"runs.part{len(index['parts']):02d}"
        (out_dir / name).write_bytes(blob[i : i + limit])
        index["parts"].append(name)
    (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


def unpack(in_dir: Path, runs_dir: Path) -> List[Path]:
    """Reassemble every run listed in ``in_dir``'s index into ``runs_dir/<run>/<checkpoint>``; returns the paths.

    Every run is checked (size and sha256) before anything is written: a lost or cut part writes nothing.
    """
    index_path = in_dir / INDEX
    if not index_path.exists():
        raise TransferError(f"{in_dir} has no {INDEX}: not a folder written by `pack`")
    index = json.loads(index_path.read_text())
    missing = [p for p in index["parts"] if not (in_dir / p).exists()]
    if missing:
        raise TransferError(f"missing parts {missing}")
    blob = b"".join((in_dir / p).read_bytes() for p in index["parts"])
    checked = {}
    for run, info in sorted(index["runs"].items()):
        data = blob[info["offset"] : info["offset"] + info["bytes"]]
        if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise TransferError(f"run {run}: parts do not add up to the packed checkpoint (sha256 differs)")
        checked[run] = data
    written = []
    for run, data in checked.items():
        target = runs_dir / run / index["checkpoint"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        config = index["runs"][run].get("config")
        if config and not (target.parent / "config.json").exists():
            (target.parent / "config.json").write_text(json.dumps(config, indent=2))
        written.append(target)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_store.transfer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="every run's best.pt (fp16, no optimiser), in shared parts under --max-mib")
    a.add_argument("runs", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--max-mib", type=float, default=15.0)
    a.add_argument("--checkpoint", default="best.pt")
    b = sub.add_parser("unpack", help="join and verify the parts, write <runs>/<run>/best.pt")
    b.add_argument("parts", type=Path)
    b.add_argument("runs", type=Path)
    args = p.parse_args(argv)
    if args.command == "pack":
        index = pack(args.runs, args.out, args.max_mib, args.checkpoint)
        for run, info in index["runs"].items():
            print(f"{run}: {info['bytes'] / MIB:.1f} MiB")
        print(f"{len(index['parts'])} part(s) in {args.out}")
        return 0
    try:
        for path in unpack(args.parts, args.runs):
            print(path)
    except TransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
