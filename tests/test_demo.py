"""The demo runs end to end on the small generated set and reports its figures."""

from __future__ import annotations

import json


def test_small_demo_runs_end_to_end(tmp_path, capsys):
    from brandguard.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "small", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for words in ("AUROC", "right brand", "unknown", "per edit type"):
        assert words in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"]["counterfeit"] > 0 and metrics["n"]["authentic"] > 0
    assert metrics["brand_accuracy"] >= 0.9
    assert metrics["auroc"] > 0.7
    assert (out / "results.csv").is_file() and (out / "report.html").is_file()
    assert (out / "index" / "manifest.json").is_file()
