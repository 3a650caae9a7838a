"""Figures on a labelled set: separation of counterfeits from authentic photos, brand accuracy, open set.

Works on results rows (``score`` CSV) joined with a ``labels.csv`` (see shared/DESIGN.md). Metrics come
from scikit-learn; every figure that cannot be computed (a class is missing) is ``None``, so the result
is strict JSON (:func:`write_metrics`).

Example:
    >>> from brandguard.evaluation import evaluate_rows
    >>> rows = [{"label": "authentic", "score": "0.1", "verdict": "authentic", "brand": "a", "pred_brand": "a"},
    ...         {"label": "counterfeit", "score": "0.9", "verdict": "counterfeit", "brand": "a", "pred_brand": "a"}]
    >>> evaluate_rows(rows)["auroc"]
    1.0
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brandguard.errors import DataError
from brandguard.images import list_images
from brandguard.references import LABELS, LabelledItem, read_labels
from brandguard.storage import atomic_write_text

if TYPE_CHECKING:
    from brandguard.detector import Detector

__all__ = ["DEFAULT_FPRS", "VERDICTS", "evaluate_folder", "evaluate_rows", "format_summary", "join_results",
           "write_metrics"]

FLAGGED = ("suspicious", "counterfeit")
#: Column order of the confusion matrix (``missing``: a labelled photo without a results row, added when seen).
VERDICTS = ("authentic", "suspicious", "counterfeit", "unknown", "error")
#: Target false-positive rates (share of authentic photos flagged) of the operating points reported.
DEFAULT_FPRS = (0.01, 0.05)
#: Row keys that are predictions or bookkeeping, never broken down by (see ``per_column``).
_NOT_CATEGORIES = {"path", "label", "score", "verdict", "similarity", "inliers", "error", "reference"}
_MAX_CATEGORIES = 50


def join_results(results: Sequence[dict[str, str]], results_root: str | Path, labels_csv: str | Path) -> list[dict[str, Any]]:
    """Join score rows (paths relative to ``results_root``) with labels; one dict per labelled photo.

    Each dict has the label columns (``label``, ``brand``, ``product``, extra columns) and the prediction
    (``verdict``, ``score`` 0..1, ``similarity`` 0..1, ``pred_brand``, ``pred_product``, and ``inliers``
    when the results carry it). Labelled photos without a row are kept with verdict ``missing``.
    """
    return _join(results, results_root, read_labels(labels_csv))


def _join(results: Sequence[dict[str, str]], results_root: str | Path, items: Sequence[LabelledItem]) -> list[dict[str, Any]]:
    root = Path(results_root).resolve()
    by_path = {os.path.realpath(root / r["path"]): r for r in results}  # never raises on a link loop
    out = []
    for item in items:
        r = by_path.get(str(item.path), {})
        row = {"path": str(item.path), "label": item.label, "brand": item.brand, "product": item.product,
               **item.extra, "verdict": r.get("verdict", "missing"), "score": float(r.get("score") or 0.0),
               "similarity": float(r.get("similarity") or 0.0),
               "pred_brand": r.get("brand", ""), "pred_product": r.get("product", "")}
        if r.get("inliers") not in (None, ""):
            row["inliers"] = int(float(r["inliers"]))
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------- figures

def _fpr_key(fpr: float) -> str:
    return f"{fpr:g}"


def _mean(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def _auroc(y: Sequence[int], s: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(y)) < 2:
        return None
    return float(roc_auc_score(y, s))


def _average_precision(y: Sequence[int], s: Sequence[float]) -> float | None:
    from sklearn.metrics import average_precision_score

    if len(set(y)) < 2:
        return None
    return float(average_precision_score(y, s))


def _operating_points(neg: Sequence[float], pos: Sequence[float], fprs: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Per target FPR: the ROC point with the highest TPR whose FPR does not exceed the target.

    A photo is flagged when ``score >= threshold``. ``threshold`` is None where only "flag nothing" meets
    the target (or a class is missing, then every figure is None).
    """
    from sklearn.metrics import roc_curve

    if not len(neg) or not len(pos):
        return {_fpr_key(f): {"tpr": None, "fpr_reached": None, "threshold": None} for f in fprs}
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    fpr, tpr, thr = roc_curve(y, np.r_[neg, pos], drop_intermediate=False)
    out = {}
    for target in fprs:
        i = int(np.flatnonzero(fpr <= target + 1e-12)[-1])  # fpr is non-decreasing; fpr[0] == 0
        t = float(thr[i])
        out[_fpr_key(target)] = {"tpr": float(tpr[i]), "fpr_reached": float(fpr[i]),
                                 "threshold": t if math.isfinite(t) else None}
    return out


def _tpr_at(scores: Sequence[float], threshold: float | None) -> float | None:
    if not len(scores):
        return None
    if threshold is None:
        return 0.0
    return float(np.mean(np.asarray(scores, dtype=float) >= threshold))


def _group_figures(rs: Sequence[dict[str, Any]], auth_scores: Sequence[float],
                   points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counterfeit subset ``rs`` against all authentic photos, at the global operating points."""
    s = [float(r["score"]) for r in rs]
    y = [0] * len(auth_scores) + [1] * len(s)
    return {"n": len(rs),
            "auroc": _auroc(y, list(auth_scores) + s),
            "average_precision": _average_precision(y, list(auth_scores) + s),
            "tpr_at_fpr": {k: _tpr_at(s, p["threshold"]) if p["tpr"] is not None else None
                           for k, p in points.items()},
            "detection_rate": _mean([r["verdict"] in FLAGGED for r in rs])}


def _category_columns(rows: Sequence[dict[str, Any]], fake: Sequence[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in _NOT_CATEGORIES and not k.startswith("pred_"):
                cols.setdefault(k, None)
    out = []
    for c in cols:
        values = {str(r.get(c, "")) for r in fake} - {""}
        if 2 <= len(values) <= _MAX_CATEGORIES:
            out.append(c)
    return out


def _clean(x: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def evaluate_rows(rows: Sequence[dict[str, Any]], fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, Any]:
    """Figures of joined rows (see :func:`join_results`); strict-JSON-ready (no NaN: None instead).

    Scores are "higher = more counterfeit"; the positive class is ``counterfeit``, the negative class
    ``authentic``; ``unrelated`` photos only enter the open-set figures.

    Returns a dict with:
        ``n`` (photos per label), ``n_total``; ``verdicts`` (verdict counts per label); ``confusion``
        (label -> verdict -> count, verdicts in :data:`VERDICTS` order); ``auroc`` and
        ``average_precision`` (score, authentic vs counterfeit); ``tpr_at_fpr``: per target FPR
        (keys ``"0.01"``, ``"0.05"``) the best ``tpr`` whose ``fpr_reached`` does not exceed the target,
        and the score ``threshold`` (flag when ``score >= threshold``) chosen on the ROC curve;
        ``brand_accuracy`` and ``product_accuracy`` (authentic + counterfeit photos whose predicted brand
        / brand and product are right); ``open_set_auroc`` (``similarity``, known products vs unrelated);
        ``unknown_rate_unrelated`` / ``_authentic`` / ``_counterfeit``; ``flag_rate_authentic``;
        ``detection_rate`` (counterfeits flagged ``suspicious`` or ``counterfeit``);
        ``per_column``: for each categorical column with 2..50 values among counterfeits (e.g.
        ``manipulation``, ``strength``, ``brand``), per value: ``n``, ``auroc`` and
        ``average_precision`` against all authentic photos, ``tpr_at_fpr`` at the *global* thresholds
        (the same operating point for every type), ``detection_rate``, and where authentic photos share
        the value, ``n_authentic`` and ``flag_rate_authentic``;
        ``per_manipulation``: the same figures per edit type, with one sub-dict per ``strength``
        (e.g. ``subtle``, ``gross``).

    Example:
        >>> rows = [{"label": "authentic", "score": 0.2, "verdict": "authentic"},
        ...         {"label": "counterfeit", "score": 0.7, "verdict": "suspicious"}]
        >>> evaluate_rows(rows)["tpr_at_fpr"]["0.01"]["tpr"]
        1.0
    """
    for i, r in enumerate(rows):
        if r.get("label") not in LABELS:
            raise DataError(f"row {i}: label {r.get('label')!r} is not one of {', '.join(LABELS)}")
    auth = [r for r in rows if r["label"] == "authentic"]
    fake = [r for r in rows if r["label"] == "counterfeit"]
    unrel = [r for r in rows if r["label"] == "unrelated"]
    res: dict[str, Any] = {"n": {"authentic": len(auth), "counterfeit": len(fake), "unrelated": len(unrel)},
                           "n_total": len(rows), "fprs": [float(f) for f in fprs]}
    res["verdicts"] = {lab: dict(Counter(r["verdict"] for r in rows if r["label"] == lab)) for lab in LABELS}
    seen = {r["verdict"] for r in rows}
    columns = list(VERDICTS) + sorted(seen - set(VERDICTS))
    res["confusion"] = {lab: {v: res["verdicts"][lab].get(v, 0) for v in columns} for lab in LABELS}

    a_s = [float(r["score"]) for r in auth]
    f_s = [float(r["score"]) for r in fake]
    y = [0] * len(a_s) + [1] * len(f_s)
    res["auroc"] = _auroc(y, a_s + f_s)
    res["average_precision"] = _average_precision(y, a_s + f_s)
    points = _operating_points(a_s, f_s, fprs)
    res["tpr_at_fpr"] = points

    known = auth + fake
    with_brand = [r for r in known if r.get("brand")]
    with_product = [r for r in known if r.get("brand") and r.get("product")]
    res["brand_accuracy"] = _mean([r.get("pred_brand", "") == r["brand"] for r in with_brand])
    res["product_accuracy"] = _mean([(r.get("pred_brand", ""), r.get("pred_product", ""))
                                     == (r["brand"], r["product"]) for r in with_product])
    res["open_set_auroc"] = _auroc([1] * len(known) + [0] * len(unrel),
                                   [float(r.get("similarity") or 0.0) for r in known + unrel])
    res["unknown_rate_unrelated"] = _mean([r["verdict"] == "unknown" for r in unrel])
    res["unknown_rate_authentic"] = _mean([r["verdict"] == "unknown" for r in auth])
    res["unknown_rate_counterfeit"] = _mean([r["verdict"] == "unknown" for r in fake])
    res["flag_rate_authentic"] = _mean([r["verdict"] in FLAGGED for r in auth])
    res["detection_rate"] = _mean([r["verdict"] in FLAGGED for r in fake])

    per_column: dict[str, dict[str, Any]] = {}
    for col in _category_columns(rows, fake):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in fake:
            if str(r.get(col, "")):
                groups[str(r[col])].append(r)
        entry = {}
        for value, rs in sorted(groups.items()):
            fig = _group_figures(rs, a_s, points)
            same = [r for r in auth if str(r.get(col, "")) == value]
            if same:
                fig["n_authentic"] = len(same)
                fig["flag_rate_authentic"] = _mean([r["verdict"] in FLAGGED for r in same])
            entry[value] = fig
        per_column[col] = entry
    res["per_column"] = per_column

    per: dict[str, dict[str, Any]] = {}
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in fake:
        by_type[str(r.get("manipulation") or "unspecified")].append(r)
    for m, rs in sorted(by_type.items()):
        entry = _group_figures(rs, a_s, points)
        by_strength: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            if r.get("strength"):
                by_strength[str(r["strength"])].append(r)
        for strength, srs in sorted(by_strength.items()):
            if strength not in entry:  # never shadow a figure's key
                entry[strength] = _group_figures(srs, a_s, points)
        per[m] = entry
    res["per_manipulation"] = per
    return _clean(res)


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write ``metrics`` as strict JSON (no NaN), atomically (temporary file, then rename)."""
    out = Path(path)
    text = json.dumps(_clean(metrics), indent=2, allow_nan=False, default=str)
    atomic_write_text(out, text + "\n")
    return out


def evaluate_folder(labels_csv: str | Path, detector: Detector, *, results_csv: str | Path | None = None,
                    plots_dir: str | Path | None = None, progress: bool = False,
                    fprs: Sequence[float] = DEFAULT_FPRS, allow_missing: bool = False,
                    overwrite: bool = False) -> dict[str, Any]:
    """Score a labelled folder, join the results with its labels and return :func:`evaluate_rows` figures.

    Every photo under the labels file's folder is scored (:func:`brandguard.scoring.score_folder`); only
    the photos listed in it are evaluated. The labels are checked before anything is scored.

    Args:
        labels_csv: a ``labels.csv`` or the folder that holds one.
        detector: a loaded :class:`~brandguard.detector.Detector`.
        results_csv: keep the per-photo results here (default: a temporary file, deleted afterwards).
        plots_dir: also write PNG plots here (:func:`brandguard.report.plots.write_plots`); their paths go
            to ``metrics["plots"]``.
        progress: show a progress bar while scoring.
        fprs: target false-positive rates of the reported operating points.
        allow_missing: leave out (with a warning) labelled paths that name no file, instead of refusing.
        overwrite: replace ``results_csv`` when it already holds rows (otherwise refused).

    Raises:
        DataError: the labels file is unreadable, lists a path twice, or (unless ``allow_missing``) lists
            a path that names no file; ``results_csv`` already holds rows.

    Example:
        >>> import brandguard as bg
        >>> m = evaluate_folder("listings/labels.csv", bg.load("idx/"), plots_dir="plots/")  # doctest: +SKIP
        >>> m["tpr_at_fpr"]["0.05"]["tpr"]                                                 # doctest: +SKIP
        0.91
    """
    from brandguard.scoring import read_results, score_folder

    labels = Path(labels_csv)
    labels = labels / "labels.csv" if labels.is_dir() else labels
    items = read_labels(labels, missing="warn" if allow_missing else "error")  # before any photo is scored
    if not items:
        raise DataError(f"{labels} lists no photo to evaluate")
    listed = {os.path.realpath(p) for p in list_images(labels.parent)}  # realpath: never raises on a link loop
    _refuse_unscored([i for i in items if str(i.path) not in listed], labels, "before scoring")
    with tempfile.TemporaryDirectory(prefix="brandguard-eval-") as tmp:
        out_csv = Path(results_csv) if results_csv is not None else Path(tmp) / "results.csv"
        score_folder(labels.parent, detector, out_csv, progress=progress, overwrite=overwrite)
        rows = _join(read_results(out_csv), labels.parent, items)
    _refuse_unscored([i for i, r in zip(items, rows) if r["verdict"] == "missing"], labels, "after scoring")
    metrics = evaluate_rows(rows, fprs=fprs)
    if plots_dir is not None:
        from brandguard.report.plots import write_plots

        metrics["plots"] = [str(p) for p in write_plots(rows, metrics, plots_dir)]
    return metrics


def _refuse_unscored(unscored: Sequence[LabelledItem], labels: Path, when: str) -> None:
    """Refuse labelled photos that the scoring of the labels folder does not reach (never counted silently
    as ``missing``): outside the folder (``../other/x.jpg``), hidden, reached only through a link that leaves
    the folder, or not named like a photo."""
    if not unscored:
        return
    shown = ", ".join(str(i.path) for i in unscored[:3]) + (" ..." if len(unscored) > 3 else "")
    raise DataError(f"{labels} labels {len(unscored)} file(s) that scoring its folder {labels.parent} does not "
                    f"reach ({when}): {shown}; evaluate scores the photos inside the labels file's folder (not "
                    "hidden, named .jpg/.jpeg/.png/.webp/.bmp/.tif/.gif): move them into it or fix their paths")


# ----------------------------------------------------------------------------------------------- table

def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_summary(m: dict[str, Any], title: str = "brandguard evaluation") -> str:
    """A readable aligned table of :func:`evaluate_rows` figures, for a terminal."""
    lines = [title, "=" * len(title)]
    n = m["n"]
    lines.append(f"photos: {n['authentic']} authentic, {n['counterfeit']} counterfeit, {n['unrelated']} unrelated")

    def row(label: str, value: str, note: str = "") -> None:
        lines.append(f"  {label:<40}{value:>7}{'  ' + note if note else ''}")

    lines.append("")
    lines.append("authentic vs counterfeit (score)")
    row("AUROC", _num(m.get("auroc")))
    row("average precision", _num(m.get("average_precision")))
    for key, p in (m.get("tpr_at_fpr") or {}).items():
        coarse = 0 < n["authentic"] * float(key) < 1
        row(f"detected at {100 * float(key):g}% FPR", _pct(p["tpr"]),
            f"(FPR reached {_pct(p['fpr_reached']).strip()}, score >= {_num(p['threshold']).strip()}"
            + (f"; only {n['authentic']} authentic photos: too few for this FPR)" if coarse else ")"))
    lines.append("")
    lines.append("verdicts")
    row("counterfeits flagged (all edits)", _pct(m.get("detection_rate")))
    row("authentic photos flagged (false alarms)", _pct(m.get("flag_rate_authentic")))
    row("right brand (authentic + counterfeit)", _pct(m.get("brand_accuracy")))
    row("right product", _pct(m.get("product_accuracy")))
    lines.append("")
    lines.append("open set (similarity, known products vs unrelated)")
    row("AUROC", _num(m.get("open_set_auroc")))
    row("unrelated products -> unknown", _pct(m.get("unknown_rate_unrelated")))
    row("authentic photos -> unknown", _pct(m.get("unknown_rate_authentic")))
    row("counterfeits -> unknown", _pct(m.get("unknown_rate_counterfeit")))

    confusion = m.get("confusion")
    if confusion:
        cols = [c for c in next(iter(confusion.values()))]
        width = max(11, *(len(c) + 1 for c in cols))
        lines.append("")
        lines.append("confusion (label \\ verdict)")
        lines.append("  " + " " * 12 + "".join(f"{c:>{width}}" for c in cols))
        for lab, counts in confusion.items():
            lines.append(f"  {lab:<12}" + "".join(f"{counts.get(c, 0):>{width}}" for c in cols))

    points = m.get("tpr_at_fpr") or {}
    key = "0.05" if "0.05" in points else max(points, key=float, default="")
    at = f"@{100 * float(key):g}%FPR" if key else ""

    def tpr(e: Any) -> float | None:
        return (e.get("tpr_at_fpr") or {}).get(key) if isinstance(e, dict) else None

    names = [str(k) for k in m.get("per_manipulation") or {}]
    names += [str(v) for e in (m.get("per_column") or {}).values() for v in e]
    w = min(28, max([20, *map(len, names)]))
    head = f"  {'':<{w}} {'n':>4} {'AUROC':>6} {'det.' + at:>12}"
    per = m.get("per_manipulation") or {}
    if per:
        lines.append("")
        lines.append(f"per edit type (det.{at}: one threshold for every type; verdict det.: flagged share)")
        lines.append(head + f" {'subtle':>7} {'gross':>7} {'verdict det.':>13}")
        for name, e in per.items():
            sub, gro = e.get("subtle"), e.get("gross")
            lines.append(f"  {name[:w]:<{w}} {e['n']:>4} {_num(e.get('auroc')):>6} {_pct(tpr(e)):>12} "
                         f"{_pct(tpr(sub)) if sub else '':>7} {_pct(tpr(gro)) if gro else '':>7} "
                         f"{_pct(e.get('detection_rate')):>13}")
    for col, entry in (m.get("per_column") or {}).items():
        if col == "manipulation":
            continue
        lines.append("")
        lines.append(f"per {col} (counterfeits of that {col} vs all authentic photos)")
        lines.append(head + f" {'verdict det.':>13} {'false alarms':>13}")
        for value, e in entry.items():
            fa = _pct(e["flag_rate_authentic"]) if "flag_rate_authentic" in e else ""
            lines.append(f"  {value[:w]:<{w}} {e['n']:>4} {_num(e.get('auroc')):>6} {_pct(tpr(e)):>12} "
                         f"{_pct(e.get('detection_rate')):>13} {fa:>13}")
    return "\n".join(lines)
