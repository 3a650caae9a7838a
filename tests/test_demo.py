"""The demo runs end to end on the small generated set and reports its figures."""

from __future__ import annotations

import json

import pytest


def test_small_demo_runs_end_to_end_with_finetuning(tmp_path, capsys, monkeypatch):
    """`brandguard demo --finetune` on the small set, as a user types it (tiny training settings, injected where
    the CLI calls run_demo): generation, fine-tuning with its guard, indexing, calibration, scoring, report and
    figures, for both photo models. One run covers what the plain demo and the fine-tuning demo both do."""
    import functools

    import brandguard.demo
    from brandguard.cli import main

    tiny = {"data.canonical_size": 128, "data.crop": 64, "data.global_size": 64, "data.batch_pairs": 3,
            "optim.steps_per_epoch": 2, "optim.epochs": 1, "optim.warmup_steps": 1, "runtime.device": "cpu"}
    monkeypatch.setattr(brandguard.demo, "run_demo", functools.partial(brandguard.demo.run_demo, train_overrides=tiny))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "small", "--no-progress", "--finetune"]) == 0
    printed = capsys.readouterr().out
    for words in ("AUROC", "right brand", "unknown", "per edit type"):
        assert words in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"]["counterfeit"] > 0 and metrics["n"]["authentic"] > 0
    assert metrics["brand_accuracy"] >= 0.9
    assert metrics["auroc"] > 0.7
    assert (out / "results.csv").is_file() and (out / "report.html").is_file()
    assert (out / "index" / "manifest.json").is_file()
    # every figure also under the second photo model, printed next to the demo model's
    assert "photo models" in printed and "studio-casual" in printed
    assert metrics["photo_model"] == "demo" and list(metrics["photo_models"]) == ["demo", "studio-casual"]
    second = metrics["photo_models"]["studio-casual"]
    assert second["n"] == metrics["n"] and second["auroc"] is not None and second["brand_accuracy"] is not None
    assert metrics["photo_models"]["demo"]["auroc"] == metrics["auroc"]
    assert (out / "photo-studio-casual" / "results.csv").is_file()
    assert (out / "photo-studio-casual" / "data" / "dataset.json").is_file()
    # fine-tuning: its validation set and training log, then either both pipelines on the same listings or a
    # refusal that says so
    assert (out / "val" / "labels.csv").is_file() and (out / "finetune" / "metrics.csv").is_file()
    if "pretrained" in metrics:  # the guard accepted the model
        assert "listing photos (not used in training)" in printed and "fine-tuned backbone" in printed
        assert set(metrics["pretrained"]) >= {"auroc", "tpr_1", "brand_accuracy"}
        assert metrics["finetune"]["best"].endswith("best")
        assert (out / "index-pretrained" / "manifest.json").is_file()
    else:  # refused: scored with the pretrained backbone, and said so
        assert "did not beat the pretrained backbone" in printed and "untuned pretrained backbone" in printed


def test_a_second_fine_tuning_run_replaces_only_what_a_demo_wrote(tmp_path):
    """What a re-run of ``demo --finetune`` in the same folder does with the earlier run's val/ and finetune/
    (each recognised by the file the demo writes there), and with a folder of the user's under those names."""
    from brandguard.demo import _clear_generated
    from brandguard.errors import DataError

    earlier = tmp_path / "finetune"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "config.yaml").write_text("seed: 0\n")
    (earlier / "checkpoints" / "last.safetensors").write_bytes(b"x")
    _clear_generated(earlier, "config.yaml")
    assert not earlier.exists()
    theirs = tmp_path / "val"
    theirs.mkdir()
    (theirs / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(DataError, match="not written by brandguard demo"):
        _clear_generated(theirs, "labels.csv")
    assert (theirs / "photo.jpg").read_bytes() == b"mine"
    _clear_generated(tmp_path / "absent", "labels.csv")  # nothing there: nothing to do


@pytest.mark.slow
def test_scene_demo_reports_figures_per_scene(tmp_path):
    from brandguard.demo import run_scene_demo

    lines: list[str] = []
    metrics = run_scene_demo(tmp_path / "scenes", size="small", scenes=("rotated", "thumbnail"), progress=False,
                             echo=lines.append)
    text = "\n".join(lines)
    assert set(metrics["per_scene"]) == {"rotated", "thumbnail"}
    for scene, figures in metrics["per_scene"].items():
        assert figures["n"]["authentic"] > 0 and figures["n"]["counterfeit"] > 0, scene
        assert figures["brand_accuracy"] is not None and figures["auroc"] is not None, scene
        assert scene in text
    # the evaluation's per-column figures read the scene column too
    assert set(metrics["per_column"]["scene"]) == {"rotated", "thumbnail"}
    assert "per scene" in text


def test_unknown_photo_model_is_one_line_error(tmp_path, capsys):
    from brandguard.cli import main

    assert main(["demo", "--out", str(tmp_path / "d"), "--size", "small", "--photo-model", "nope"]) == 2
    assert "studio-casual" in capsys.readouterr().err
