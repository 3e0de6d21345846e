#!/usr/bin/env python3
"""Draw the Grafana dashboard (k8s/monitoring/dashboards/lic-service.json) as a PNG from a live Prometheus.

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --out dashboard.png [--minutes 15]

It runs every panel's queries over the last ``--minutes`` with ``query_range`` (Grafana's variables substituted
as "All") and lays the panels out on the dashboard's own grid: time series as lines, stats as their last value,
the batch-size heatmap as a heatmap. It is a picture of what Grafana shows, for a README or a report, made
without a Grafana server; it is not a Grafana renderer (no thresholds, overrides or links).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.promql import DASHBOARD, grafana_to_promql  # noqa: E402

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d", "#fade2a"]


def query_range(url: str, expr: str, start: float, end: float, step: float) -> List[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: Dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "").strip()
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"


def human(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for name in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or name == "TiB":
                return f"{value:.1f} {name}{suffix}"
            value /= 1024
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "reqps":
        return f"{value:.2f} req/s"
    return f"{value:.3g}"


def _axis_formatter(unit: str):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: human(v, unit))


def render(
    prometheus: str,
    out: Path,
    minutes: float = 15.0,
    step: Optional[float] = None,
    rate_interval: Optional[str] = None,
    dashboard_path: Path = DASHBOARD,
    end: Optional[float] = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    dashboard = json.loads(Path(dashboard_path).read_text())
    end = end or time.time()
    start = end - minutes * 60
    step = step or max(1.0, minutes * 60 / 240)
    values = {
        "__rate_interval": rate_interval or f"{max(int(4 * step), 60)}s",
        "__interval": f"{int(step)}s",
        "__range": f"{int(minutes * 60)}s",
    }
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.42
    fig = plt.figure(figsize=(22.0, rows * unit_h + 0.8), facecolor=BACKGROUND)
    fig.text(
        0.01, 1 - 0.35 / (rows * unit_h + 0.8), dashboard["title"], color=TEXT, fontsize=16, weight="bold", va="center"
    )
    fig.text(
        0.99,
        1 - 0.35 / (rows * unit_h + 0.8),
        time.strftime("last %%d min, to %Y-%m-%d %H:%M:%S", time.localtime(end)).replace("%d", str(int(minutes))),
        color=TEXT,
        fontsize=10,
        ha="right",
        va="center",
    )
    top = 0.8 / (rows * unit_h + 0.8)
    usable = 1 - top

    fig_w, fig_h = 22.0, rows * unit_h + 0.8

    def box(grid, pad=0.004):
        x, y, w, h = grid["x"] / 24, grid["y"] / rows, grid["w"] / 24, grid["h"] / rows
        return [x + pad, 1 - top - (y + h) * usable + pad * 2, w - 2 * pad, h * usable - pad * 3]

    def inset(rect, left=0.75, right=0.15, bottom=0.35, top_=0.35):  # margins in inches, inside the panel
        x, y, w, h = rect
        return [x + left / fig_w, y + bottom / fig_h, w - (left + right) / fig_w, h - (bottom + top_) / fig_h]

    span = end - start
    time_format = mdates.DateFormatter("%H:%M:%S" if span <= 600 else "%H:%M")

    for panel in panels:
        grid = panel["gridPos"]
        if panel["type"] == "row":
            x, y = grid["x"] / 24, 1 - top - (grid["y"] + 0.5) / rows * usable
            fig.text(x + 0.005, y, panel["title"], color=TEXT, fontsize=12, weight="bold", va="center")
            continue
        rect = box(grid)
        frame = fig.add_axes(rect)
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        frame.text(
            0.01,
            0.97,
            panel["title"],
            color=TEXT,
            fontsize=9,
            weight="bold",
            ha="left",
            va="top",
            transform=frame.transAxes,
        )
        ax = fig.add_axes(inset(rect) if panel["type"] != "stat" else rect)
        ax.set_facecolor(PANEL if panel["type"] != "stat" else "none")
        for spine in ax.spines.values():
            spine.set_color(GRID if panel["type"] != "stat" else "none")
        ax.tick_params(colors=TEXT, labelsize=7)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = []
        for target in panel.get("targets", []):
            expr = grafana_to_promql(target["expr"], values)
            for result in query_range(prometheus, expr, start, end, step):
                ts = np.array([float(t) for t, _ in result["values"]])
                vs = np.array([float(v) for _, v in result["values"]])
                series.append((target, result["metric"], ts, vs))
        if panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            last = next((s[3][np.isfinite(s[3])][-1] for s in series if np.isfinite(s[3]).any()), None)
            ax.text(
                0.5,
                0.45,
                human(last, unit) if last is not None else "No data",
                color=PALETTE[0] if last is not None else TEXT,
                fontsize=22,
                weight="bold",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            continue
        if panel["type"] == "heatmap":
            buckets = {}
            for _, labels, ts, vs in series:
                le = float("inf") if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
                buckets[le] = (ts, np.nan_to_num(vs))
            if not buckets:
                ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
                continue
            les = sorted(buckets)
            finals = [buckets[le][1][-1] for le in les]  # cumulative counts: drop buckets above the largest seen
            keep = next((i for i, v in enumerate(finals) if v >= finals[-1]), len(les) - 1)
            les = les[: keep + 1]
            length = min(len(buckets[le][1]) for le in les)
            cumulative = np.array([buckets[le][1][-length:] for le in les])
            counts = np.diff(np.vstack([np.zeros((1, length)), cumulative]), axis=0).clip(min=0)
            ts = buckets[les[0]][0][-length:]
            times = mdates.date2num([datetime.datetime.fromtimestamp(t) for t in ts])
            extent = [times[0], times[-1], 0, len(les)]
            ax.imshow(counts, aspect="auto", origin="lower", extent=extent, cmap="Oranges", interpolation="nearest")
            ax.set_yticks(np.arange(len(les)) + 0.5)
            ax.set_yticklabels(["+Inf" if math.isinf(le) else f"≤{le:g}" for le in les], fontsize=6)
            ax.xaxis.set_major_formatter(time_format)
            continue
        ax.grid(color=GRID, linewidth=0.5)
        ax.yaxis.set_major_formatter(_axis_formatter(unit))
        ax.xaxis.set_major_formatter(time_format)
        for i, (target, labels, ts, vs) in enumerate(series[:10]):
            times = mdates.date2num([datetime.datetime.fromtimestamp(t) for t in ts])
            ax.plot(
                times,
                vs,
                color=PALETTE[i % len(PALETTE)],
                linewidth=1.2,
                label=legend(target.get("legendFormat", ""), labels),
            )
        if series:
            ax.legend(
                loc="upper left", fontsize=6, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, ncol=2, framealpha=0.8
            )
            ax.set_ylim(bottom=0)
        else:
            ax.text(
                0.5,
                0.5,
                "No data" + (" (no GPU)" if "GPU" in panel["title"] else ""),
                color=TEXT,
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_yticks([])
            ax.set_xticks([])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=BACKGROUND)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    parser.add_argument("--minutes", type=float, default=15.0, help="time range ending now")
    parser.add_argument("--step", type=float, help="query resolution in seconds (default: range / 240)")
    parser.add_argument("--rate-interval", help="value of $__rate_interval (default: 4 x step, at least 1m)")
    args = parser.parse_args(argv)
    path = render(args.prometheus, args.out, args.minutes, args.step, args.rate_interval)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
