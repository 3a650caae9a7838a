"""``brandguard demo``: the whole job on generated data, end to end, with its figures.

Generates demo data on real brand artwork (:mod:`brandguard.synth`), builds and saves an index of the
authentic references, scores every listing photo (CSV + HTML evidence report) and prints how well it
did against the labels. With ``finetune=True`` it first fine-tunes the backbone on the references
(:func:`brandguard.training.train`, validated on separate labelled photos), then scores the listings with
both the pretrained and the fine-tuned pipeline and prints the two side by side.

Every figure is measured under two photo models (:data:`brandguard.synth.PHOTO_MODELS`): ``demo``, the one
designs are decided on, and ``studio-casual`` (another photographer: packshot references on white, casual
phone listings), which nobody tunes on. The second runs on its own data, index and calibration photos in
``photo-studio-casual/`` and is printed next to the first; the figures of both are in ``metrics.json``
under ``photo_models``.

Example:
    >>> from brandguard.demo import run_demo
    >>> metrics = run_demo("brandguard-demo")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PHOTO_MODELS", "format_photo_models", "format_scenes", "run_demo", "run_scene_demo",
           "scene_figures"]

#: Photo models ``brandguard demo`` measures by default: the first is the main one (data/, index/,
#: results.csv, report.html at the top of the output folder), the others go to ``photo-<name>/``.
DEFAULT_PHOTO_MODELS = ("demo", "studio-casual")
#: Counterfeit listings per edit type and unrelated listings of every photo model but the first, at size
#: ``full`` (half the main model's; authentic listings and calibration photos stay as many).
SECOND_MODEL_PER_EDIT, SECOND_MODEL_UNRELATED = 12, 30

_COMPARED = (("AUROC", "auroc"), ("detected at 1% FPR", "tpr_1"), ("detected at 5% FPR", "tpr_5"),
             ("right brand", "brand_accuracy"), ("unrelated -> unknown", "unknown_rate_unrelated"),
             ("authentic -> unknown", "unknown_rate_authentic"))
_MORE = (("authentic flagged (false alarms)", "flag_rate_authentic"), ("counterfeits flagged", "detection_rate"),
         ("right product", "product_accuracy"), ("open-set AUROC (similarity)", "open_set_auroc"))


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


def _cell(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_photo_models(per_model: dict[str, dict[str, Any]]) -> str:
    """One column per photo model: headline figures, then AUROC per edit type.

    Args:
        per_model: ``{photo model name: evaluate_rows(...) metrics}``, in column order.
    """
    names = list(per_model)
    w = max(14, *(len(n) + 2 for n in names))
    lines = [f"{'figure (listing photos)':<40}" + "".join(f"{n:>{w}}" for n in names)]
    counts = ["/".join(str((m.get("n") or {}).get(k, 0)) for k in ("authentic", "counterfeit", "unrelated"))
              for m in per_model.values()]
    lines.append(f"{'authentic / counterfeit / unrelated':<40}" + "".join(f"{c:>{w}}" for c in counts))
    for label, key in _COMPARED + _MORE:
        lines.append(f"{label:<40}" + "".join(f"{_cell(_headline(m).get(key, m.get(key))):>{w}}"
                                                for m in per_model.values()))
    edits = list(next(iter(per_model.values())).get("per_manipulation") or {})
    if edits:
        lines.append("AUROC per edit type")
        for e in edits:
            lines.append(f"  {e:<38}" + "".join(
                f"{_cell(((m.get('per_manipulation') or {}).get(e) or {}).get('auroc')):>{w}}"
                for m in per_model.values()))
    return "\n".join(lines)


def run_demo(out_dir: str | Path = "brandguard-demo", *, seed: int = 0, artwork: str = "demo", size: str = "full",
             progress: bool = True, config: Any = None, echo: Any = print, finetune: bool = False,
             train_overrides: dict[str, Any] | None = None,
             photo_models: Sequence[str] = DEFAULT_PHOTO_MODELS) -> dict[str, Any]:
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
        photo_models: names in :data:`brandguard.synth.PHOTO_MODELS`. The first is the main one (its data,
            index, results.csv and report.html at the top of ``out_dir``; fine-tuning trains on its
            references); every other one gets its own data, index (same backbone and config, fine-tuned
            weights included) and calibration photos in ``out_dir/photo-<name>/``, is scored the same
            way, and is printed next to the first (at size ``full`` with half the counterfeit and unrelated
            listings: 120 authentic, 120 counterfeit, 30 unrelated). ``metrics.json`` holds the main
            model's figures at the top level and every model's under ``photo_models``.

    Raises:
        DataError: for an unknown photo model or an output folder holding other data.
    """
    from brandguard.config import Config
    from brandguard.detector import Detector
    from brandguard.errors import DataError
    from brandguard.evaluation import evaluate_rows, format_summary, join_results
    from brandguard.index import ReferenceIndex
    from brandguard.references import read_labels
    from brandguard.scoring import read_results, score_folder
    from brandguard.synth import get_photo_model, make_demo_dataset

    models = [get_photo_model(n).name for n in photo_models]
    if not models or len(set(models)) != len(models):
        raise DataError(f"photo_models must name at least one photo model, each once; got {list(photo_models)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config or Config()
    t0 = time.perf_counter()
    ds = make_demo_dataset(out / "data", seed=seed, artwork=artwork, size=size, progress=progress,
                           photo_model=models[0])
    t1 = time.perf_counter()

    def index_and_score(index: ReferenceIndex, name: str, report: Path | None, data: Any = None,
                        where: Path = out) -> tuple[dict[str, Any], Any, Any]:
        data = data or ds
        det = Detector(index)
        # thresholds from separate authentic photos (never references): a score of 0.99 means "higher than
        # 99% of authentic photos"
        calibration_photos = [str(i.path) for i in read_labels(data.calibration_csv) if i.label == "authentic"]
        calibration = det.calibrate(calibration_photos)
        index.save(where / name)
        csv_path = where / ("results.csv" if report is not None or where != out else f"results-{name}.csv")
        summary = score_folder(data.listings_dir, det, csv_path, report=report, progress=progress, overwrite=True)
        rows = join_results(read_results(csv_path), data.listings_dir, data.labels_csv)
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
    metrics["photo_model"] = models[0]
    per_model: dict[str, dict[str, Any]] = {models[0]: {k: v for k, v in metrics.items() if k != "photo_model"}}
    for name in models[1:]:
        t4 = time.perf_counter()
        where = out / f"photo-{name}"
        where.mkdir(parents=True, exist_ok=True)
        # the checking models get half the counterfeit and unrelated listings of the full size (120
        # authentic, 120 counterfeit, 30 unrelated), to keep the whole demo within a few minutes
        fewer = {"per_edit": SECOND_MODEL_PER_EDIT, "unrelated": SECOND_MODEL_UNRELATED} if size == "full" else {}
        other = make_demo_dataset(where / "data", seed=seed, artwork=artwork, size=size, progress=progress,
                                  photo_model=name, **fewer)
        other_index = ReferenceIndex.build(other.refs_dir, cfg, progress=progress)
        m, other_calibration, other_summary = index_and_score(other_index, "index", None, other, where)
        m["timing_seconds"] = {"total": round(time.perf_counter() - t4, 1)}
        m["scoring_images_per_second"] = round(other_summary.images_per_second, 2)
        m["calibration"] = other_calibration
        per_model[name] = m
    metrics["photo_models"] = per_model
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    echo("")
    backbone = "fine-tuned backbone" if checkpoint else "untuned pretrained backbone"
    echo(format_summary(metrics, title=f"brandguard demo ({artwork} artwork, {models[0]} photo model, seed {seed}, "
                                      f"{backbone})"))
    if len(models) > 1:
        echo("")
        echo(f"photo models (each with its own references, calibration photos and listings; designs are decided "
             f"on '{models[0]}' only)")
        echo(format_photo_models(per_model))
    if before is not None:
        pre, after = metrics["pretrained"], _headline(metrics)
        echo("")
        echo(f"{'listing photos (not used in training)':<40}{'pretrained':>12}{'fine-tuned':>12}")
        for label, key in _COMPARED:
            b, a = pre[key], after[key]
            echo(f"{label:<40}{'n/a' if b is None else f'{b:.3f}':>12}{'n/a' if a is None else f'{a:.3f}':>12}")
    tm = metrics["timing_seconds"]
    echo(f"time: generate {tm['generate']}s, " + (f"fine-tune {tm['finetune']}s, " if finetune else "")
         + f"index+score {tm['index_and_score']}s ({metrics['scoring_images_per_second']} img/s), total {tm['total']}s"
         + "".join(f"; photo model {n}: {per_model[n]['timing_seconds']['total']}s" for n in models[1:]))
    echo(f"outputs: {out / 'results.csv'}, {out / 'report.html'} (with its {out / 'report_files'}/), "
         f"{out / 'metrics.json'}, index in {out / 'index'}")
    return metrics


#: Per-scene figures: (column title, key of :func:`brandguard.evaluation.evaluate_rows`'s result).
_SCENE_FIGURES = (("AUROC", "auroc"), ("right brand", "brand_accuracy"), ("auth->unknown", "unknown_rate_authentic"),
                  ("false alarms", "flag_rate_authentic"), ("fakes flagged", "detection_rate"),
                  ("unrel->unknown", "unknown_rate_unrelated"))


def scene_figures(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Figures of each ``scene`` of joined rows, each scene measured on its own photos only.

    Args:
        rows: rows of :func:`brandguard.evaluation.join_results` with a ``scene`` column.

    Returns:
        ``{scene: {"n": {label: count}, "auroc": scene counterfeits vs scene authentic photos,
        "brand_accuracy", "unknown_rate_authentic", "unknown_rate_unrelated", "flag_rate_authentic",
        "detection_rate"}}`` (values in 0..1, ``None`` where a scene lacks the photos), scenes sorted.
    """
    from brandguard.evaluation import evaluate_rows

    by_scene: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_scene.setdefault(str(r.get("scene") or "unspecified"), []).append(r)
    out = {}
    for scene, rs in sorted(by_scene.items()):
        m = evaluate_rows(rs)
        out[scene] = {"n": m["n"], **{key: m.get(key) for _, key in _SCENE_FIGURES}}
    return out


def format_scenes(per_scene: dict[str, dict[str, Any]]) -> str:
    """A table of :func:`scene_figures`: one row per scene."""
    lines = [f"{'scene':<16}{'auth/fake/unrel':>16}" + "".join(f"{t:>15}" for t, _ in _SCENE_FIGURES)]
    for scene, f in per_scene.items():
        n = f["n"]
        counts = f"{n['authentic']}/{n['counterfeit']}/{n['unrelated']}"
        lines.append(f"{scene:<16}{counts:>16}" + "".join(f"{_cell(f.get(k)):>15}" for _, k in _SCENE_FIGURES))
    return "\n".join(lines)


def run_scene_demo(out_dir: str | Path = "brandguard-demo-scenes", *, seed: int = 0, artwork: str = "demo",
                   size: str = "full", scenes: Sequence[str] | None = None, progress: bool = True,
                   config: Any = None, echo: Any = print) -> dict[str, Any]:
    """The demo on listing photos staged in scenes (:mod:`brandguard.synth.scenes`), with figures per scene.

    Generates :func:`brandguard.synth.make_scene_dataset` (the demo data set's references and calibration
    photos; listings in every scene), builds the index, calibrates on the calibration photos, scores the
    listings (CSV + HTML report) and prints the overall summary and one row per scene.

    Args:
        out_dir: data/, index/, results.csv, report.html and metrics.json are written here.
        seed, artwork, size, progress, config, echo: as for :func:`run_demo`.
        scenes: which scenes (default: every one of :data:`brandguard.synth.scenes.SCENES`).

    Returns:
        The metrics (also in ``metrics.json``), with ``per_scene`` from :func:`scene_figures`.
    """
    from brandguard.config import Config
    from brandguard.detector import Detector
    from brandguard.evaluation import evaluate_rows, format_summary, join_results
    from brandguard.index import ReferenceIndex
    from brandguard.references import read_labels
    from brandguard.scoring import read_results, score_folder
    from brandguard.synth.scenes import SCENES, make_scene_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = make_scene_dataset(out / "data", seed=seed, artwork=artwork, size=size,
                            scenes=tuple(scenes) if scenes else SCENES, progress=progress)
    t1 = time.perf_counter()
    index = ReferenceIndex.build(ds.refs_dir, config or Config(), progress=progress)
    det = Detector(index)
    calibration = det.calibrate([str(i.path) for i in read_labels(ds.calibration_csv) if i.label == "authentic"])
    index.save(out / "index")
    csv_path = out / "results.csv"
    summary = score_folder(ds.listings_dir, det, csv_path, report=out / "report.html", progress=progress,
                           overwrite=True)
    rows = join_results(read_results(csv_path), ds.listings_dir, ds.labels_csv)
    metrics = evaluate_rows(rows)
    metrics["per_scene"] = scene_figures(rows)
    metrics["calibration"] = calibration
    metrics["timing_seconds"] = {"generate": round(t1 - t0, 1), "index_and_score": round(time.perf_counter() - t1, 1)}
    metrics["scoring_images_per_second"] = round(summary.images_per_second, 2)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    echo("")
    echo(format_summary(metrics, title=f"brandguard demo --scenes ({artwork} artwork, seed {seed})"))
    echo("")
    echo("per scene (each scene's counterfeits against its own authentic photos; every scene shares the index "
         "and the calibration)")
    echo(format_scenes(metrics["per_scene"]))
    tm = metrics["timing_seconds"]
    echo(f"time: generate {tm['generate']}s, index+score {tm['index_and_score']}s "
         f"({metrics['scoring_images_per_second']} img/s)")
    echo(f"outputs: {csv_path}, {out / 'report.html'}, {out / 'metrics.json'}, index in {out / 'index'}")
    return metrics
