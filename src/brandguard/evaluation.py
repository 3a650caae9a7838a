"""Figures on a labelled set: separation of counterfeits from authentic photos, brand accuracy, open set.

Works on results rows (``score`` CSV) joined with a ``labels.csv`` (see shared/DESIGN.md). Metrics use
scikit-learn.

Example:
    >>> from brandguard.evaluation import evaluate_rows
    >>> rows = [{"label": "authentic", "score": "0.1", "verdict": "authentic", "brand": "a", "pred_brand": "a"},
    ...         {"label": "counterfeit", "score": "0.9", "verdict": "counterfeit", "brand": "a", "pred_brand": "a"}]
    >>> evaluate_rows(rows)["auroc"]
    1.0
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brandguard.references import read_labels

__all__ = ["join_results", "evaluate_rows", "format_summary"]

FLAGGED = ("suspicious", "counterfeit")


def join_results(results: Sequence[dict[str, str]], results_root: str | Path, labels_csv: str | Path) -> list[dict[str, Any]]:
    """Join score rows (paths relative to ``results_root``) with labels; one dict per labelled photo.

    Each dict has the label columns (``label``, ``brand``, ``product``, extra columns) and the prediction
    (``verdict``, ``score``, ``pred_brand``, ``pred_product``). Labelled photos without a row are kept with
    verdict ``missing``.
    """
    root = Path(results_root).resolve()
    by_path = {str((root / r["path"]).resolve()): r for r in results}
    out = []
    for item in read_labels(labels_csv):
        r = by_path.get(str(item.path), {})
        out.append({"path": str(item.path), "label": item.label, "brand": item.brand, "product": item.product,
                    **item.extra, "verdict": r.get("verdict", "missing"), "score": float(r.get("score") or 0.0),
                    "pred_brand": r.get("brand", ""), "pred_product": r.get("product", "")})
    return out


def _auroc(y: list[int], s: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def evaluate_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Figures of joined rows (see :func:`join_results`).

    Returns a dict with: ``n`` per label; ``verdicts`` per label; ``auroc`` (score, authentic vs counterfeit);
    ``brand_accuracy`` (authentic and counterfeit photos whose predicted brand is right, when the
    ``brand`` column is present); ``unknown_rate_unrelated`` and ``unknown_rate_authentic``;
    ``flag_rate_authentic``; per ``manipulation``: ``detection_rate`` (flagged share) and ``auroc`` against
    all authentic photos, also split by ``strength`` when present.
    """
    auth = [r for r in rows if r["label"] == "authentic"]
    fake = [r for r in rows if r["label"] == "counterfeit"]
    unrel = [r for r in rows if r["label"] == "unrelated"]
    res: dict[str, Any] = {"n": {"authentic": len(auth), "counterfeit": len(fake), "unrelated": len(unrel)}}
    res["verdicts"] = {lab: dict(Counter(r["verdict"] for r in rows if r["label"] == lab))
                       for lab in ("authentic", "counterfeit", "unrelated")}
    a_s = [float(r["score"]) for r in auth]
    res["auroc"] = _auroc([0] * len(auth) + [1] * len(fake), a_s + [float(r["score"]) for r in fake])
    known = [r for r in auth + fake if r.get("brand")]
    res["brand_accuracy"] = float(np.mean([r["pred_brand"] == r["brand"] for r in known])) if known else float("nan")
    res["unknown_rate_unrelated"] = float(np.mean([r["verdict"] == "unknown" for r in unrel])) if unrel else float("nan")
    res["unknown_rate_authentic"] = float(np.mean([r["verdict"] == "unknown" for r in auth])) if auth else float("nan")
    res["flag_rate_authentic"] = float(np.mean([r["verdict"] in FLAGGED for r in auth])) if auth else float("nan")
    res["detection_rate"] = float(np.mean([r["verdict"] in FLAGGED for r in fake])) if fake else float("nan")
    per: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in fake:
        m = r.get("manipulation") or "unspecified"
        groups[(m, "")].append(r)
        if r.get("strength"):
            groups[(m, r["strength"])].append(r)
    for (m, strength), rs in sorted(groups.items()):
        entry = per.setdefault(m, {})
        fig = {"n": len(rs), "detection_rate": float(np.mean([r["verdict"] in FLAGGED for r in rs])),
               "auroc": _auroc([0] * len(auth) + [1] * len(rs), a_s + [float(r["score"]) for r in rs])}
        if strength:
            entry[strength] = fig
        else:
            entry.update(fig)
    res["per_manipulation"] = per
    return res


def _pct(x: float) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}%"


def format_summary(m: dict[str, Any], title: str = "brandguard evaluation") -> str:
    """A readable multi-line table of :func:`evaluate_rows` figures."""
    lines = [title, "=" * len(title)]
    n = m["n"]
    lines.append(f"photos: {n['authentic']} authentic, {n['counterfeit']} counterfeit, {n['unrelated']} unrelated")
    for lab in ("authentic", "counterfeit", "unrelated"):
        v = m["verdicts"].get(lab, {})
        lines.append(f"  {lab:<12} -> " + ", ".join(f"{k}: {c}" for k, c in sorted(v.items())))
    au = m["auroc"]
    lines.append(f"AUROC (score, authentic vs counterfeit): {au:.4f}" if not math.isnan(au) else "AUROC: n/a")
    lines.append(f"right brand (authentic + counterfeit):   {_pct(m['brand_accuracy'])}")
    lines.append(f"unrelated products flagged unknown:      {_pct(m['unknown_rate_unrelated'])}")
    lines.append(f"authentic photos flagged unknown:        {_pct(m['unknown_rate_authentic'])}")
    lines.append(f"authentic photos flagged (false alarms): {_pct(m['flag_rate_authentic'])}")
    lines.append(f"counterfeits flagged (all edits):        {_pct(m['detection_rate'])}")
    if m["per_manipulation"]:
        lines.append("per edit type:      n  detected   AUROC   | subtle det. | gross det.")
        for name, e in m["per_manipulation"].items():
            sub, gro = e.get("subtle", {}), e.get("gross", {})
            lines.append(f"  {name:<20} {e['n']:>3}  {_pct(e['detection_rate'])}   {e['auroc']:.3f}  |"
                         f"   {_pct(sub.get('detection_rate', float('nan')))}    |  {_pct(gro.get('detection_rate', float('nan')))}")
    return "\n".join(lines)
