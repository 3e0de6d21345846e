#!/usr/bin/env python3
"""Recompute the sha256 of every shipped weights file and compare it with its manifest.

    python scripts/verify_weights.py [WEIGHTS_ROOT] [--allow-empty] [--quiet]

WEIGHTS_ROOT defaults to ``$LIC_WEIGHTS_ROOT`` or ``model_store/weights``. The layout is the model store's
(``<model>/<version>/manifest.json`` listing ``qualities -> {file, sha256, bytes}``, optional ``default.json``).
A file whose entry says ``retired`` (superseded, kept in git history: model_store/retirement.py) may be absent.
Exit status: 0 when every file matches, 1 on any mismatch, missing file or malformed manifest, 2 when there is
nothing to verify (no manifest at all, unless ``--allow-empty``). The Docker builds run it on the weights they
bake in, so an image never ships weights that differ from what their manifest (and every bitstream header) says.

Only the standard library is used: it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import List

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "model_store" / "weights"
REQUIRED_KEYS = ("model", "version", "arch", "preset", "qualities")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(root: Path, log=print) -> List[str]:
    """Every problem found under ``root`` (an empty list means all files match); ``log`` gets one line per file."""
    problems: List[str] = []
    manifests = sorted(root.glob("*/*/manifest.json"))
    models = set()
    for manifest_path in manifests:
        where = manifest_path.relative_to(root)
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{where}: unreadable manifest ({exc})")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in manifest]
        if missing:
            problems.append(f"{where}: manifest lacks {', '.join(missing)}")
            continue
        folder = manifest_path.parent
        if (folder.parent.name, folder.name) != (str(manifest["model"]), str(manifest["version"])):
            problems.append(
                f"{where}: says model {manifest['model']!r} version {manifest['version']!r} "
                f"but lives in {folder.parent.name}/{folder.name}"
            )
        models.add(manifest["model"])
        if not manifest["qualities"]:
            problems.append(f"{where}: lists no qualities")
        for quality, item in sorted(manifest["qualities"].items(), key=lambda kv: int(kv[0])):
            name = item.get("file", "")
            stored_in = str(item.get("stored_in", folder.name))  # a file kept unchanged from an earlier version
            path = folder.parent / stored_in / name
            label = f"{manifest['model']}/{manifest['version']} q{quality} {name}"
            expected = str(item.get("sha256", "")).lower()
            if stored_in != folder.name:
                label += f" (stored in {stored_in})"
            if not name or Path(name).name != name or Path(stored_in).name != stored_in or ".." in (name, stored_in):
                problems.append(f"{label}: file and stored_in must be plain names inside the model folder")
                continue
            retired = item.get("retired")
            if not path.is_file() and isinstance(retired, dict) and retired.get("commit") and retired.get("path"):
                # superseded and kept in git history (model_store/retirement.py); a restored one is verified below
                log(f"retired  {expected[:16]}  {label} (git {str(retired['commit'])[:12]})")
                continue
            if not path.is_file():
                problems.append(f"{label}: missing")
                continue
            actual = sha256_file(path)
            if actual != expected:
                problems.append(f"{label}: sha256 {actual} but the manifest says {expected or '(none)'}")
                continue
            size = path.stat().st_size
            if "bytes" in item and int(item["bytes"]) != size:
                problems.append(f"{label}: {size} bytes but the manifest says {item['bytes']}")
                continue
            log(f"ok  {actual[:16]}  {label}")
    default = root / "default.json"
    if default.exists():
        try:
            name = json.loads(default.read_text())["model"]
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"default.json: unreadable ({exc})")
        else:
            if name not in models:
                problems.append(f"default.json names {name!r}, which has no manifest")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(os.environ.get("LIC_WEIGHTS_ROOT") or DEFAULT_ROOT))
    parser.add_argument("--allow-empty", action="store_true", help="exit 0 when there are no manifests at all")
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: weights root {args.root} is not a directory", file=sys.stderr)
        return 2
    if not any(args.root.glob("*/*/manifest.json")):
        print(
            f"{'warning' if args.allow_empty else 'error'}: no <model>/<version>/manifest.json under {args.root}",
            file=sys.stderr,
        )
        return 0 if args.allow_empty else 2
    problems = verify(args.root, log=(lambda line: None) if args.quiet else print)
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    if problems:
        print(f"error: {len(problems)} problem(s) in {args.root}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"all weights under {args.root} match their manifests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
