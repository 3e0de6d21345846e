"""The default model's learning curve (issue 28): a complete record per session, and the plot the README shows."""

from __future__ import annotations

import json

from conftest import load_script

learning_curve = load_script("learning_curve")


def test_every_session_records_its_compute_and_the_four_bd_rates():
    doc = json.loads(learning_curve.CURVE.read_text())
    from model_store import registry

    assert doc["model"] == registry.default_model()
    for entry in doc["sessions"]:
        assert entry["cpu_hours"] >= 0 and set(entry["bd_val"]) == set(learning_curve.CODECS), entry
        assert entry["work"] and entry["date"]
    hours = learning_curve.cumulative(doc["sessions"])
    assert hours == sorted(hours) and hours[-1] == round(sum(e["cpu_hours"] for e in doc["sessions"]), 2)


def test_the_script_draws_the_curve_and_prints_the_history_table(tmp_path, capsys):
    out = tmp_path / "curve.png"
    learning_curve.main(["--plot", str(out), "--markdown"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out.splitlines()
    doc = json.loads(learning_curve.CURVE.read_text())
    assert len(table) == 2 + len(doc["sessions"])
    (v5,) = [row for row in table if "| v5 |" in row]
    assert "+48.7 %" in v5  # erstc-small v5's BD-rate against AVIF on the validation set (README, Models)
