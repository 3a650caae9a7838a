"""``brandguard demo``: the whole job on generated data, end to end, with its figures.

Generates demo data on real brand artwork (:mod:`brandguard.synth`), builds and saves an index of the
authentic references, scores every listing photo (CSV + HTML evidence report) and prints how well it
did against the labels.

Example:
    >>> from brandguard.demo import run_demo
    >>> metrics = run_demo("brandguard-demo")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]


def run_demo(out_dir: str | Path = "brandguard-demo", *, seed: int = 0, artwork: str = "demo", size: str = "full",
             progress: bool = True, config: Any = None, echo: Any = print) -> dict[str, Any]:
    """Generate, index, score, report and evaluate. Returns the metrics (also in ``metrics.json``).

    Args:
        out_dir: everything is written here (data/, index/, results.csv, report.html, metrics.json).
        seed: data generation seed.
        artwork: ``demo`` or ``heldout`` (other real brand artwork, never used to tune brandguard).
        size: ``full`` (the published figures) or ``small`` (seconds, for tests).
        progress: progress bars.
        config: optional :class:`brandguard.config.Config`.
        echo: where the summary goes (``print`` by default).
    """
    from brandguard.detector import Detector
    from brandguard.evaluation import evaluate_rows, format_summary, join_results
    from brandguard.index import ReferenceIndex
    from brandguard.scoring import read_results, score_folder
    from brandguard.synth import make_demo_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = make_demo_dataset(out / "data", seed=seed, artwork=artwork, size=size, progress=progress)
    t1 = time.perf_counter()
    index = ReferenceIndex.build(ds.refs_dir, config, progress=progress)
    det = Detector(index)
    # thresholds from separate authentic photos (never references): a score of 0.99 means "higher than
    # 99% of authentic photos"
    from brandguard.references import read_labels

    calibration = det.calibrate([str(i.path) for i in read_labels(ds.calibration_csv) if i.label == "authentic"])
    index.save(out / "index")
    t2 = time.perf_counter()
    summary = score_folder(ds.listings_dir, det, out / "results.csv", report=out / "report.html", progress=progress)
    t3 = time.perf_counter()
    rows = join_results(read_results(out / "results.csv"), ds.listings_dir, ds.labels_csv)
    metrics = evaluate_rows(rows)
    metrics["timing_seconds"] = {"generate": round(t1 - t0, 1), "index": round(t2 - t1, 1),
                                 "score": round(t3 - t2, 1), "total": round(t3 - t0, 1)}
    metrics["scoring_images_per_second"] = round(summary.images_per_second, 2)
    metrics["calibration"] = calibration
    metrics["index"] = {k: v for k, v in index.info().items() if k in ("brands", "products", "references",
                                                                         "references_compared", "backbone")}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    echo("")
    echo(format_summary(metrics, title=f"brandguard demo ({artwork} artwork, seed {seed}, untuned pretrained backbone)"))
    tm = metrics["timing_seconds"]
    echo(f"time: generate {tm['generate']}s, index {tm['index']}s, score {tm['score']}s "
         f"({metrics['scoring_images_per_second']} img/s), total {tm['total']}s")
    echo(f"outputs: {out / 'results.csv'}, {out / 'report.html'}, {out / 'metrics.json'}, index in {out / 'index'}")
    return metrics
