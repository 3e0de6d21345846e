"""What every benchmark writes: one JSON document and one Markdown table side by side in ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """The facts a reader needs to compare two runs: CPU, core count, Python, load when the numbers were taken."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": round(os.getloadavg()[0], 2),
    }


def write_results(out: Path, doc: dict, markdown: str) -> None:
    """``<out>.json`` and ``<out>.md`` (``out`` without suffix, or with one that is replaced)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
