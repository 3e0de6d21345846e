"""One table that ranks every seed architecture: parameters, RD on the validation set, CPU speed, peak memory.

    python benchmarks/ranking.py --eval benchmarks/results/eval_val.json [--preset small] [--threads 1]

It joins two measurements rather than repeating them:

* rate-distortion comes from a ``python -m model_store.eval`` report on the validation set (``--eval``): the
  BD-rate of every shipped model against JPEG, WebP, AVIF and JPEG XL measured in that same run, and its bpp range;
* speed and peak memory come from ``benchmarks/codec.py``'s fresh-process measurement (768x512, random init:
  neither depends on training), so architectures without trained weights still get their cost measured.

An architecture whose preset has no shipped weights is listed with its cost and "no weights": the ranking is of
what a user can pick, and an untrained model is not a choice. Results: ``benchmarks/results/ranking.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSICAL = ("jpeg", "webp", "avif", "jxl")
sys.path.insert(0, str(ROOT))
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402


def rd_summary(report: dict, model: str) -> dict | None:
    """BD-rates and bpp/PSNR range of one model from an eval report (``None`` when it was not evaluated)."""
    curve = report["codecs"].get(model)
    if curve is None or curve["kind"] != "learned":
        return None
    points = sorted(curve["points"], key=lambda p: p["bpp"])
    return {
        "qualities": [p["quality"] for p in points],
        "bpp_range": [points[0]["bpp"], points[-1]["bpp"]],
        "psnr_range": [points[0]["psnr"], points[-1]["psnr"]],
        "bd_rate": {c: report["bd_rate"].get(model, {}).get(c) for c in CLASSICAL},
        "n_images": points[0]["n_images"],
    }


def rank_key(row: dict):
    """Shipped models first, best (lowest) BD-rate vs JPEG first; the rest by decode time."""
    bd = (row.get("rd") or {}).get("bd_rate", {}).get("jpeg")
    return (bd is None, bd if bd is not None else 0.0, row["cost"].get("dec_s", float("inf")))


def _fmt(value, spec: str = "+.1f", suffix: str = " %") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown(rows: list, report_path: str, threads: int) -> str:
    lines = [
        "# Ranking of the seed architectures (validation set RD, CPU cost)",
        "",
        f"RD from `{report_path}` (BD-rate on PSNR, negative = fewer bits than the classical codec at equal quality);",
        f"cost from `benchmarks/codec.py` in fresh processes, 768x512, {threads} thread(s), random init.",
        "",
        "| rank | model | params (M) | qualities | bpp range | BD vs JPEG | BD vs WebP | BD vs AVIF | BD vs JPEG XL "
        "| encode s | decode s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows, 1):
        rd, cost = row.get("rd"), row["cost"]
        if "error" in cost:
            timing = f"error: {cost['error']} | | "
        else:
            timing = f"{cost['enc_s']:.3f} | {cost['dec_s']:.3f} | {cost['peak_rss_mib']:.0f}"
        if rd is None:
            rd_cells = "no weights | — | — | — | — | —"
        else:
            bd = rd["bd_rate"]
            rd_cells = (
                f"{','.join(map(str, rd['qualities']))} | {rd['bpp_range'][0]:.2f}–{rd['bpp_range'][1]:.2f} | "
                + " | ".join(_fmt(bd[c]) for c in CLASSICAL)
            )
        rank = str(i) if rd is not None else "—"  # only what a user can pick is ranked
        lines.append(f"| {rank} | {row['model']} | {row['params'] / 1e6:.2f} | {rd_cells} | {timing} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval", required=True, help="model_store.eval JSON report on the validation set")
    p.add_argument("--preset", default="small")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", default=str(RESULTS / "ranking"))
    p.add_argument(
        "--costs-from",
        help="an earlier ranking.json: keep its measured costs (they change with code, not with weights) and only "
        "refresh the RD columns from --eval, e.g. for a new weights release",
    )
    args = p.parse_args()

    from benchmarks.codec import run_child
    from model_store.architectures.registry import presets

    report = json.loads(Path(args.eval).read_text())
    earlier = json.loads(Path(args.costs_from).read_text()) if args.costs_from else None
    measured = {row["model"]: row for row in earlier["ranking"]} if earlier else {}
    rows = []
    for preset in presets():
        if preset.name != args.preset:
            continue
        quality = preset.qualities[len(preset.qualities) // 2]
        if preset.key in measured:
            row = {k: measured[preset.key][k] for k in ("model", "arch", "params", "cost")}
        else:
            cost = run_child(preset.key, quality, args.repeats, args.threads, args.timeout)
            row = {"model": preset.key, "arch": preset.arch, "params": cost.pop("params", None), "cost": cost}
        if row["params"] is None:
            from model_store.architectures.base import count_parameters

            row["params"] = count_parameters(preset.build(quality))
        row["rd"] = rd_summary(report, preset.key)
        rows.append(row)
        print(preset.key, json.dumps(row), flush=True)
    rows.sort(key=rank_key)
    doc = {"eval_report": args.eval, "threads": args.threads, "preset": args.preset, "machine": machine()}
    if earlier:  # the costs were measured then, on that machine
        doc.update(threads=earlier["threads"], machine=earlier["machine"], costs_from=args.costs_from)
    doc["ranking"] = rows
    table = markdown(rows, args.eval, args.threads)
    write_results(Path(args.out), doc, table)
    print(table)


if __name__ == "__main__":
    main()
