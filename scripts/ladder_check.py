"""Refuse a release whose quality ladder does not rise, before anything is installed.

    python scripts/ladder_check.py REPORT.json MODEL [--min-gain-db DB]

REPORT.json is a ``model_store.eval --json`` report. Every next quality of MODEL must spend more bits *and* give a
better RGB PSNR, by more than ``--min-gain-db``. tests/test_shipped_models.py calls ``ladder_faults`` itself after a
release (on the test photo, and with 0.05 dB on the validation set's manifest RD points), so gate and test agree.
scripts/release.sh runs it on the test photo right after the export (seconds) and on the validation report before it
installs, so a quality that sells more bits for no better picture stops the release instead of failing the tests
once it is in the tree.
Exit status 1 names the offending step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Sequence


def ladder_faults(points: Sequence[dict], min_gain_db: float) -> List[str]:
    """One line per step of the ladder (points in quality order) that does not rise in both bpp and PSNR."""
    faults = []
    for low, high in zip(points, points[1:]):
        if not (high["bpp"] > low["bpp"] and high["psnr"] > low["psnr"] + min_gain_db):
            faults.append(
                f"q{low['quality']} -> q{high['quality']}: {low['bpp']:.3f} -> {high['bpp']:.3f} bpp, "
                f"{low['psnr']:.2f} -> {high['psnr']:.2f} dB (needs more bits and > +{min_gain_db} dB)"
            )
    return faults


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("model")
    parser.add_argument("--min-gain-db", type=float, default=0.0)
    args = parser.parse_args(argv)
    points = sorted(json.loads(args.report.read_text())["codecs"][args.model]["points"], key=lambda p: p["quality"])
    faults = ladder_faults(points, args.min_gain_db)
    for fault in faults:
        print(f"ladder: {args.model} {fault}", file=sys.stderr)
    if not faults:
        print(f"ladder: {args.model} rises over q{', q'.join(str(p['quality']) for p in points)} ({args.report.name})")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
