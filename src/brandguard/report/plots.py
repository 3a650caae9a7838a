"""PNG plots of an evaluation: ROC curves, score histograms per label, per-edit-type bars.

Drawn with matplotlib's object-oriented API on an Agg canvas: no display is needed, and the pyplot
backend of the calling program (a notebook, say) is left alone. matplotlib is imported only when a plot
is drawn.

Example:
    >>> from brandguard.evaluation import evaluate_rows
    >>> from brandguard.report.plots import write_plots
    >>> paths = write_plots(rows, evaluate_rows(rows), "plots/")   # doctest: +SKIP
    >>> [p.name for p in paths]                                     # doctest: +SKIP
    ['roc.png', 'score_hist.png', 'per_type.png']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plots"]

_SCORED = ("authentic", "suspicious", "counterfeit")
_LABEL_COLOURS = {"authentic": "tab:green", "counterfeit": "tab:red", "unrelated": "tab:grey"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _scores(rows: Sequence[dict[str, Any]], label: str) -> np.ndarray:
    return np.array([float(r["score"]) for r in rows if r.get("label") == label], dtype=float)


def _roc(fig: Any, rows: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
    from sklearn.metrics import roc_curve

    auth, fake = _scores(rows, "authentic"), [r for r in rows if r.get("label") == "counterfeit"]
    ax = fig.add_subplot()

    def curve(rs: Sequence[dict[str, Any]], name: str, **style: Any) -> None:
        s = np.array([float(r["score"]) for r in rs])
        fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(auth)), np.ones(len(s))], np.r_[auth, s])
        ax.plot(fpr, tpr, label=name, **style)

    auroc = metrics.get("auroc")
    curve(fake, f"all counterfeits (AUROC {auroc:.3f})" if auroc is not None else "all counterfeits",
          color="black", linewidth=2.2)
    per = metrics.get("per_manipulation") or {}
    if len(per) > 1 or (per and "unspecified" not in per):
        for name, e in per.items():
            rs = [r for r in fake if str(r.get("manipulation") or "unspecified") == name]
            au = e.get("auroc")
            curve(rs, f"{name} ({au:.3f})" if au is not None else name, linewidth=1.1, alpha=0.85)
    for key, p in (metrics.get("tpr_at_fpr") or {}).items():
        if p.get("tpr") is not None:
            ax.axvline(float(key), color="grey", linestyle=":", linewidth=0.8)
            ax.plot([p["fpr_reached"]], [p["tpr"]], "o", color="black", markersize=4)
    ax.plot([0, 1], [0, 1], color="lightgrey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (authentic photos flagged)",
           ylabel="true-positive rate (counterfeits flagged)", title="ROC: authentic vs counterfeit")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)


def _hist(fig: Any, rows: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 41)
    for label, colour in _LABEL_COLOURS.items():
        # unknown/error/missing photos were never compared (their score is a placeholder 0): left out
        s = np.array([float(r["score"]) for r in rows if r.get("label") == label and r.get("verdict") in _SCORED])
        skipped = sum(1 for r in rows if r.get("label") == label) - len(s)
        if len(s):
            note = f", {skipped} unknown/unscored left out" if skipped else ""
            ax.hist(s, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=colour,
                    edgecolor=colour, linewidth=1.2, label=f"{label} (n={len(s)}{note})")
    for key, p in (metrics.get("tpr_at_fpr") or {}).items():
        if p.get("threshold") is not None:
            ax.axvline(p["threshold"], color="black", linestyle=":", linewidth=0.9)
            ax.text(p["threshold"], 0.98, f" {100 * float(key):g}% FPR", transform=ax.get_xaxis_transform(),
                    fontsize=7, va="top")
    ax.set(xlim=(0, 1), xlabel="score (0..1, higher = more likely counterfeit)", ylabel="density",
           title="score per label")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _per_type(fig: Any, metrics: dict[str, Any]) -> None:
    per = metrics.get("per_manipulation") or {}
    points = metrics.get("tpr_at_fpr") or {}
    key = "0.05" if "0.05" in points else max(points, key=float, default="")
    names = list(per)
    strengths = [s for s in ("subtle", "gross") if any(isinstance(e.get(s), dict) for e in per.values())]
    series = ["all", *strengths]
    x = np.arange(len(names))
    width = 0.8 / len(series)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (title, get) in zip(axes, (
            (f"detected at {100 * float(key):g}% FPR (one threshold)" if key else "detected",
             lambda e: (e.get("tpr_at_fpr") or {}).get(key)),
            ("AUROC vs all authentic photos", lambda e: e.get("auroc")))):
        for i, s in enumerate(series):
            vals = [get(per[n] if s == "all" else per[n].get(s) or {}) for n in names]
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [np.nan if v is None else v for v in vals],
                   width, label=s)
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.set(ylim=(0, 1.05), title=title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("share of counterfeits")
    axes[0].legend(fontsize=8)


def write_plots(rows: Sequence[dict[str, Any]], metrics: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``roc.png``, ``score_hist.png`` and ``per_type.png`` under ``out_dir``; return their paths.

    Args:
        rows: joined rows (:func:`brandguard.evaluation.join_results`).
        metrics: their figures (:func:`brandguard.evaluation.evaluate_rows`).
        out_dir: created when missing; files are replaced atomically.

    A plot that needs authentic and counterfeit photos (ROC, per type) is skipped when one is missing; the
    histogram leaves out photos without a score (verdict ``unknown``, ``error``, ``missing``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    has_both = len(_scores(rows, "authentic")) > 0 and len(_scores(rows, "counterfeit")) > 0
    if has_both:
        fig = _figure(6.4, 5.6)
        _roc(fig, rows, metrics)
        written.append(_save(fig, out / "roc.png"))
    if any(r.get("verdict") in _SCORED for r in rows):
        fig = _figure(7.0, 4.2)
        _hist(fig, rows, metrics)
        written.append(_save(fig, out / "score_hist.png"))
    if has_both and metrics.get("per_manipulation"):
        fig = _figure(max(7.0, 1.1 * len(metrics["per_manipulation"]) + 3), 4.6)
        _per_type(fig, metrics)
        written.append(_save(fig, out / "per_type.png"))
    return written
