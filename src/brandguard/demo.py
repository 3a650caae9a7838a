"""``brandguard demo``: the whole job on generated data, end to end, with its figures.

Generates demo data on real brand artwork (:mod:`brandguard.synth`), builds and saves an index of the
authentic references, scores every listing photo (CSV + HTML evidence report) and prints how well it
did against the labels. With ``finetune=True`` it first fine-tunes the backbone on the references
(:func:`brandguard.training.train`, validated on separate labelled photos), then scores the listings with
both the pretrained and the fine-tuned pipeline and prints the two side by side.

Example:
    >>> from brandguard.demo import run_demo
    >>> metrics = run_demo("brandguard-demo")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]

_COMPARED = (("AUROC", "auroc"), ("detected at 1% FPR", "tpr_1"), ("detected at 5% FPR", "tpr_5"),
             ("right brand", "brand_accuracy"), ("unrelated -> unknown", "unknown_rate_unrelated"),
             ("authentic -> unknown", "unknown_rate_authentic"))


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    pts = m.get("tpr_at_fpr") or {}
    return {"auroc": m.get("auroc"), "tpr_1": (pts.get("0.01") or {}).get("tpr"),
            "tpr_5": (pts.get("0.05") or {}).get("tpr"), **{k: m.get(k) for _, k in _COMPARED[3:]}}


def _clear_generated(path: Path, marker: str) -> None:
    """Remove a folder an earlier demo wrote (recognised by ``marker``); refuse anything else."""
    if path.exists() and any(path.iterdir()):
        if not (path / marker).is_file():
            from brandguard.errors import DataError

            raise DataError(f"{path} exists and was not written by brandguard demo; choose another --out")
        shutil.rmtree(path)


def run_demo(out_dir: str | Path = "brandguard-demo", *, seed: int = 0, artwork: str = "demo", size: str = "full",
             progress: bool = True, config: Any = None, echo: Any = print, finetune: bool = False,
             train_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate, index, score, report and evaluate. Returns the metrics (also in ``metrics.json``).

    Args:
        out_dir: everything is written here (data/, index/, results.csv, report.html, metrics.json; with
            ``finetune`` also val/, finetune/ and index-pretrained/).
        seed: data generation seed.
        artwork: ``demo`` or ``heldout`` (other real brand artwork, never used to tune brandguard).
        size: ``full`` (the published figures) or ``small`` (seconds, for tests).
        progress: progress bars.
        config: optional :class:`brandguard.config.Config`.
        echo: where the summary goes (``print`` by default).
        finetune: fine-tune on the references first (about 15 minutes on 2 CPU cores for ``full``).
        train_overrides: training config overrides (dotted keys) for ``finetune``.
    """
    from brandguard.config import Config
    from brandguard.detector import Detector
    from brandguard.evaluation import evaluate_rows, format_summary, join_results
    from brandguard.index import ReferenceIndex
    from brandguard.references import read_labels
    from brandguard.scoring import read_results, score_folder
    from brandguard.synth import make_demo_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config or Config()
    t0 = time.perf_counter()
    ds = make_demo_dataset(out / "data", seed=seed, artwork=artwork, size=size, progress=progress)
    calibration_photos = [str(i.path) for i in read_labels(ds.calibration_csv) if i.label == "authentic"]
    t1 = time.perf_counter()

    def index_and_score(index: ReferenceIndex, name: str, report: Path | None) -> tuple[dict[str, Any], Any, Any]:
        det = Detector(index)
        # thresholds from separate authentic photos (never references): a score of 0.99 means "higher than
        # 99% of authentic photos"
        calibration = det.calibrate(calibration_photos)
        index.save(out / name)
        csv_path = out / ("results.csv" if report is not None else f"results-{name}.csv")
        summary = score_folder(ds.listings_dir, det, csv_path, report=report, progress=progress)
        rows = join_results(read_results(csv_path), ds.listings_dir, ds.labels_csv)
        return evaluate_rows(rows), calibration, summary

    before: dict[str, Any] | None = None
    train_info: dict[str, Any] | None = None
    checkpoint = None
    if finetune:
        from brandguard.synth import make_validation_set
        from brandguard.training import GuardError, train

        _clear_generated(out / "val", "labels.csv")
        _clear_generated(out / "finetune", "config.yaml")
        val = make_validation_set(out / "val", seed=seed, artwork=artwork, size=size, progress=progress)
        try:
            result = train(ds.refs_dir, out / "finetune", val=val, calibration=ds.calibration_csv, progress=progress,
                           echo=echo, overrides=train_overrides)
            checkpoint = str(result.best)
            train_info = {"before": result.before, "after": result.after, "images_per_second": result.images_per_second,
                          "best": checkpoint}
        except GuardError as exc:
            echo(f"fine-tuning did not beat the pretrained backbone ({exc}); scoring with the pretrained one")
        if checkpoint is not None:
            pre_index = ReferenceIndex.build(ds.refs_dir, cfg, progress=progress)
            before, _, _ = index_and_score(pre_index, "index-pretrained", None)
    t2 = time.perf_counter()
    if checkpoint is not None:
        cfg = cfg.with_overrides({"backbone.checkpoint": checkpoint})
    index = ReferenceIndex.build(ds.refs_dir, cfg, progress=progress)
    metrics, calibration, summary = index_and_score(index, "index", out / "report.html")
    t3 = time.perf_counter()
    metrics["timing_seconds"] = {"generate": round(t1 - t0, 1), "finetune": round(t2 - t1, 1),
                                 "index_and_score": round(t3 - t2, 1), "total": round(t3 - t0, 1)}
    metrics["scoring_images_per_second"] = round(summary.images_per_second, 2)
    metrics["calibration"] = calibration
    metrics["index"] = {k: v for k, v in index.info().items() if k in ("brands", "products", "references",
                                                                         "references_compared", "backbone")}
    if before is not None:
        metrics["pretrained"] = _headline(before)
        metrics["finetune"] = train_info
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    echo("")
    backbone = "fine-tuned backbone" if checkpoint else "untuned pretrained backbone"
    echo(format_summary(metrics, title=f"brandguard demo ({artwork} artwork, seed {seed}, {backbone})"))
    if before is not None:
        pre, after = metrics["pretrained"], _headline(metrics)
        echo("")
        echo(f"{'listing photos (not used in training)':<40}{'pretrained':>12}{'fine-tuned':>12}")
        for label, key in _COMPARED:
            b, a = pre[key], after[key]
            echo(f"{label:<40}{'n/a' if b is None else f'{b:.3f}':>12}{'n/a' if a is None else f'{a:.3f}':>12}")
    tm = metrics["timing_seconds"]
    echo(f"time: generate {tm['generate']}s, " + (f"fine-tune {tm['finetune']}s, " if finetune else "")
         + f"index+score {tm['index_and_score']}s ({metrics['scoring_images_per_second']} img/s), total {tm['total']}s")
    echo(f"outputs: {out / 'results.csv'}, {out / 'report.html'}, {out / 'metrics.json'}, index in {out / 'index'}")
    return metrics
