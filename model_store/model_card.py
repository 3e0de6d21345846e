"""Write measured RD points into a shipped model's manifest and render its MODEL_CARD.md.

    python -m model_store.model_card model_store/weights/wacnn-small/v0 --eval benchmarks/results/eval_val.json

The numbers come from ``model_store.eval`` (real compress/decompress, actual bytes), never from the training
loss's likelihood estimate, so the card and the manifest say what a user will get.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

from model_store import registry
from model_store.architectures.registry import get_preset


def rd_points_from_eval(report: Dict, model_id: str) -> Dict[int, Dict]:
    points = report["codecs"].get(model_id, {}).get("points", [])
    return {
        int(p["quality"]): {k: p[k] for k in ("bpp", "psnr", "ms_ssim", "enc_s", "dec_s", "n_images")} for p in points
    }


OPERATING_POINTS = "## Operating points (validation set, real bitstreams)"


def retired_note(manifest: Dict) -> Optional[str]:
    """The card's line about files retired from the tree (model_store/retirement.py), or None."""
    retired = {q: item["retired"] for q, item in manifest["qualities"].items() if item.get("retired")}
    if not retired:
        return None
    qualities = ", ".join(f"q{q}" for q in sorted(retired, key=int))
    commits = ", ".join(sorted({r["commit"][:12] for r in retired.values()}))
    return (
        f"**Retired.** The files of {qualities} are superseded by newer versions and were retired from the tree "
        f"(git commit {commits} holds them); streams made with them get `weights_retired` until restored with "
        f"`{registry.restore_command(manifest['model'], manifest['version'])}`."
    )


def add_retired_note(folder: Path) -> None:
    """Put :func:`retired_note` into an existing card where :func:`render` would (a card is not re-rendered here:
    that needs the evaluation report it was made from)."""
    card_path, manifest = folder / "MODEL_CARD.md", json.loads((folder / "manifest.json").read_text())
    note = retired_note(manifest)
    if note is None or not card_path.exists():
        return
    lines = [line for line in card_path.read_text().split("\n") if not line.startswith("**Retired.**")]
    at = lines.index(OPERATING_POINTS) if OPERATING_POINTS in lines else len(lines)
    card_path.write_text("\n".join(lines[:at] + [note, ""] + lines[at:]).replace("\n\n\n", "\n\n"))


def render(manifest: Dict, report: Optional[Dict]) -> str:
    preset = get_preset(manifest["arch"], manifest["preset"])
    lines: List[str] = [
        f"# {manifest['model']} {manifest['version']}",
        "",
        f"Architecture `{preset.arch}`, preset `{preset.name}`: {preset.description}.",
        "",
    ]
    if manifest.get("notes"):
        lines += [f"**Status.** {manifest['notes']}", ""]
    if preset.departures:
        lines += [f"**Not the paper configuration.** {preset.departures}.", ""]
    note = retired_note(manifest)
    if note:
        lines += [note, ""]
    lines += [
        OPERATING_POINTS,
        "",
        "| quality | λ | bpp | PSNR (dB) | MS-SSIM | encode s | decode s | file | sha256 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for q, item in sorted(manifest["qualities"].items(), key=lambda kv: int(kv[0])):
        rd = item.get("rd") or {}
        fmt = lambda key, spec: format(rd[key], spec) if rd.get(key) is not None else "–"  # noqa: E731
        where = f", kept from {item['stored_in']}" if "stored_in" in item else ""
        lines.append(
            f"| {q} | {item['lambda']:.4g} | {fmt('bpp', '.4f')} | {fmt('psnr', '.2f')} | {fmt('ms_ssim', '.4f')} | "
            f"{fmt('enc_s', '.2f')} | {fmt('dec_s', '.2f')} | {item['file']} ({item['bytes'] / 2**20:.1f} MiB{where}) | "
            f"`{item['sha256'][:16]}…` |"
        )
    if report:
        bd = report.get("bd_rate", {}).get(manifest["model"], {})
        if bd:
            lines += [
                "",
                "BD-rate (PSNR) against classical codecs measured in the same run (negative = fewer bits):",
                "",
            ]
            measured = sum(1 for item in manifest["qualities"].values() if item.get("rd"))
            missing = "no overlap" if measured >= 2 else "n/a (one operating point: a BD-rate needs a curve)"
            lines += [
                f"- vs {anchor}: {value:+.1f} %" if value is not None else f"- vs {anchor}: {missing}"
                for anchor, value in sorted(bd.items())
            ]
        env = report.get("environment", {})
        lines += [
            "",
            f"Measured by `python -m model_store.eval` ({env.get('git_commit', '?')}) on "
            f"{len(report.get('images', []))} validation images.",
        ]
    recipe = manifest.get("recipe", {})
    lines += ["", "## Training recipe", "", "```json", json.dumps(recipe, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def update(folder: Path, eval_json: Optional[Path]) -> None:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    report = json.loads(eval_json.read_text()) if eval_json else None
    if report:
        for q, rd in rd_points_from_eval(report, manifest["model"]).items():
            if str(q) in manifest["qualities"]:
                manifest["qualities"][str(q)]["rd"] = rd
        manifest["bd_rate_psnr"] = report.get("bd_rate", {}).get(manifest["model"], {})
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (folder / "MODEL_CARD.md").write_text(render(manifest, report))
    registry.refresh()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--eval", type=Path, default=None, help="JSON written by python -m model_store.eval --json")
    args = p.parse_args()
    update(args.folder, args.eval)
    print(args.folder / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
