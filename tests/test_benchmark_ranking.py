"""The architecture ranking joins the validation-set eval report with measured cost, and ranks what users can pick."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a package at the repository root, not an installed one
    sys.path.insert(0, str(ROOT))

from benchmarks import ranking  # noqa: E402

REPORT = {
    "codecs": {
        "wacnn-small": {
            "kind": "learned",
            "points": [
                {"quality": 5, "bpp": 0.34, "psnr": 31.1, "n_images": 10},
                {"quality": 1, "bpp": 0.14, "psnr": 28.9, "n_images": 10},
            ],
        },
        "jpeg": {"kind": "classical", "points": []},
    },
    "bd_rate": {"wacnn-small": {"jpeg": -13.4, "webp": 50.7, "avif": 165.5, "jxl": 60.0}},
}


def test_rd_summary_reads_bd_rates_and_the_bpp_range_of_a_shipped_model():
    rd = ranking.rd_summary(REPORT, "wacnn-small")
    assert rd["qualities"] == [1, 5]  # sorted by rate
    assert rd["bpp_range"] == [0.14, 0.34]
    assert rd["bd_rate"] == {"jpeg": -13.4, "webp": 50.7, "avif": 165.5, "jxl": 60.0}


def test_models_without_weights_or_classical_codecs_have_no_rd_row():
    assert ranking.rd_summary(REPORT, "tic-small") is None
    assert ranking.rd_summary(REPORT, "jpeg") is None


def test_shipped_models_rank_first_best_bd_rate_first_then_by_decode_time():
    rows = [
        {"model": "slow-untrained", "params": 1, "cost": {"dec_s": 0.9}, "rd": None},
        {"model": "worse", "params": 1, "cost": {"dec_s": 0.1}, "rd": {"bd_rate": {"jpeg": 5.0}}},
        {"model": "fast-untrained", "params": 1, "cost": {"dec_s": 0.2}, "rd": None},
        {"model": "better", "params": 1, "cost": {"dec_s": 0.5}, "rd": {"bd_rate": {"jpeg": -10.0}}},
    ]
    assert [r["model"] for r in sorted(rows, key=ranking.rank_key)] == [
        "better",
        "worse",
        "fast-untrained",
        "slow-untrained",
    ]


def test_markdown_marks_untrained_models_and_formats_bd_rates():
    rd = ranking.rd_summary(REPORT, "wacnn-small")
    cost = {"enc_s": 0.7, "dec_s": 0.74, "peak_rss_mib": 1113.0}
    rows = [
        {"model": "wacnn-small", "params": 5_731_571, "cost": cost, "rd": rd},
        {"model": "tic-small", "params": 1_850_000, "cost": {"error": "timed out after 9 s"}, "rd": None},
    ]
    table = ranking.markdown(rows, "eval.json", threads=1)
    assert "| 1 | wacnn-small | 5.73 | 1,5 | 0.14–0.34 | -13.4 % | +50.7 % | +165.5 % | +60.0 % |" in table
    assert "| — | tic-small | 1.85 | no weights |" in table and "timed out" in table


def test_the_committed_ranking_matches_the_committed_eval_report():
    """benchmarks/results/ranking.json was built from the eval report it names: numbers cannot drift apart."""
    doc = json.loads((ROOT / "benchmarks" / "results" / "ranking.json").read_text())
    report = json.loads((ROOT / doc["eval_report"]).read_text())
    for row in doc["ranking"]:
        assert row["rd"] == ranking.rd_summary(report, row["model"])


def test_a_new_weights_release_refreshes_the_rd_columns_and_keeps_the_measured_costs(tmp_path, monkeypatch):
    committed = ROOT / "benchmarks" / "results" / "ranking.json"
    report = tmp_path / "eval.json"
    report.write_text(json.dumps(REPORT))
    argv = ["ranking.py", "--eval", str(report), "--costs-from", str(committed), "--out", str(tmp_path / "r")]
    monkeypatch.setattr(sys, "argv", argv)
    ranking.main()  # measures nothing: every small preset has a cost in the committed file
    doc = json.loads((tmp_path / "r.json").read_text())
    before = {row["model"]: row for row in json.loads(committed.read_text())["ranking"]}
    for row in doc["ranking"]:
        assert row["cost"] == before[row["model"]]["cost"] and row["params"] == before[row["model"]]["params"]
        assert row["rd"] == ranking.rd_summary(REPORT, row["model"])
    assert doc["ranking"][0]["rd"]["bd_rate"]["jpeg"] == -13.4
