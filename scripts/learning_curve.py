#!/usr/bin/env python3
"""The default model's learning curve (issue 28): BD-rate against AVIF on the validation set against cumulative
training compute, from ``model_store/weights/learning_curve.json``.

    python scripts/learning_curve.py [--plot benchmarks/results/learning_curve.png] [--markdown]

Each session of the campaign appends one entry to the JSON (compute it added, the BD-rates of the default model
after it, whether it released); this script draws the curve the README shows and prints the table HISTORY.md
keeps. A session that trained but did not release repeats the last BD-rates: the curve is flat there, which is
what a plateau looks like.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
CURVE = ROOT / "model_store" / "weights" / "learning_curve.json"
PLOT = ROOT / "benchmarks" / "results" / "learning_curve.png"
CODECS = ("jpeg", "webp", "avif", "jxl")


def cumulative(sessions: List[dict]) -> List[float]:
    """Cumulative CPU-hours after each session."""
    total, out = 0.0, []
    for entry in sessions:
        total += entry["cpu_hours"]
        out.append(round(total, 2))
    return out


def markdown(doc: dict) -> str:
    rows = [
        "| session(s) | release | CPU-h added | cumulative CPU-h | GPU min | BD vs JPEG / WebP / AVIF / JPEG XL (val) | work |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry, total in zip(doc["sessions"], cumulative(doc["sessions"])):
        bd = " / ".join(f"{entry['bd_val'][c]:+.1f} %" for c in CODECS)
        rows.append(
            f"| {entry['session']} | {entry.get('release') or '-'} | {entry['cpu_hours']:.1f} | {total:.1f} | "
            f"{entry.get('gpu_minutes', 0):g} | {bd} | {entry['work']} |"
        )
    return "\n".join(rows) + "\n"


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = doc["sessions"]
    hours = cumulative(sessions)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(hours, [e["bd_val"]["avif"] for e in sessions], "-o", label="vs AVIF (libaom speed 6, 4:4:4)")
    ax.plot(hours, [e["bd_val"]["jxl"] for e in sessions], "--s", label="vs JPEG XL (effort 7)", alpha=0.7)
    for entry, h in zip(sessions, hours):
        release = entry.get("release") or ""
        if release and not release.startswith("none"):  # label new defaults only, by name ("v7", "erstc-small-vr v5")
            label = release.split(",")[0].split(" (")[0]
            ax.annotate(label, (h, entry["bd_val"]["avif"]), textcoords="offset points", xytext=(4, 4))
    ax.axhline(0, color="black", lw=0.8)
    ax.set(
        xlabel="cumulative training CPU-hours (one-core boxes)",
        ylabel="BD-rate on validation, % (lower is better)",
        title=f"the default model's beat-AVIF learning curve (now {doc['model']})",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--curve", default=str(CURVE))
    p.add_argument("--plot", default=str(PLOT))
    p.add_argument("--markdown", action="store_true", help="print the table for HISTORY.md")
    args = p.parse_args(argv)
    doc = json.loads(Path(args.curve).read_text())
    plot(doc, Path(args.plot))
    if args.markdown:
        print(markdown(doc), end="")


if __name__ == "__main__":
    main()
