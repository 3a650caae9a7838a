"""Evaluation figures agree with scikit-learn, pick honest operating points, and serialize as strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from brandguard.evaluation import evaluate_rows, format_summary, join_results, write_metrics

TYPES = ("logo_swap", "misspelling", "colour_shift")


def synthetic_rows(seed: int = 0, n_auth: int = 300, n_fake_per: int = 40, n_unrel: int = 50) -> list[dict]:
    """Authentic scores low, counterfeit scores higher (subtle less so than gross), ties included."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_auth):
        score = float(np.round(rng.beta(2, 6), 2))  # rounded: ties between and within classes
        rows.append({"path": f"a{i}.jpg", "label": "authentic", "brand": f"b{i % 3}", "product": "p",
                     "manipulation": "none", "strength": "", "score": score, "similarity": rng.uniform(0.6, 1.0),
                     "verdict": "counterfeit" if score > 0.6 else "suspicious" if score > 0.5 else "authentic",
                     "pred_brand": f"b{i % 3}", "pred_product": "p"})
    for t, name in enumerate(TYPES):
        for i in range(n_fake_per):
            strength = "subtle" if i % 2 else "gross"
            shift = (1.0 + t) * (0.6 if strength == "subtle" else 1.6)
            score = float(np.round(1 / (1 + np.exp(-(rng.normal(-1.2, 1.0) + shift))), 2))
            rows.append({"path": f"f{t}_{i}.jpg", "label": "counterfeit", "brand": f"b{i % 3}", "product": "p",
                         "manipulation": name, "strength": strength, "score": score,
                         "similarity": rng.uniform(0.5, 1.0),
                         "verdict": "counterfeit" if score > 0.6 else "suspicious" if score > 0.5 else "authentic",
                         "pred_brand": f"b{i % 3}" if i % 7 else "b9", "pred_product": "p"})
    for i in range(n_unrel):
        sim = rng.uniform(0.2, 0.7)
        rows.append({"path": f"u{i}.jpg", "label": "unrelated", "brand": "", "product": "",
                     "manipulation": "unrelated", "strength": "", "score": 0.0, "similarity": sim,
                     "verdict": "unknown" if sim < 0.5 else "authentic", "pred_brand": "", "pred_product": ""})
    return rows


def brute_force_tpr_at(neg: np.ndarray, pos: np.ndarray, target: float) -> tuple[float, float]:
    """Best TPR over every threshold "score >= t" whose FPR does not exceed the target."""
    best = (0.0, 0.0)
    for t in np.unique(np.r_[neg, pos]):
        fpr, tpr = float(np.mean(neg >= t)), float(np.mean(pos >= t))
        if fpr <= target and tpr > best[0]:
            best = (tpr, fpr)
    return best


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows()


@pytest.fixture(scope="module")
def metrics(rows):
    return evaluate_rows(rows)


def test_headline_figures_agree_with_scikit_learn(rows, metrics):
    known = [r for r in rows if r["label"] != "unrelated"]
    y = [int(r["label"] == "counterfeit") for r in known]
    s = [r["score"] for r in known]
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert metrics["average_precision"] == pytest.approx(average_precision_score(y, s))
    y_open = [int(r["label"] != "unrelated") for r in rows]
    assert metrics["open_set_auroc"] == pytest.approx(roc_auc_score(y_open, [r["similarity"] for r in rows]))
    fakes = [r for r in rows if r["label"] == "counterfeit"]
    assert metrics["brand_accuracy"] == pytest.approx(np.mean([r["pred_brand"] == r["brand"] for r in known]))
    assert metrics["detection_rate"] == pytest.approx(np.mean([r["verdict"] != "authentic" for r in fakes]))
    unrel = [r for r in rows if r["label"] == "unrelated"]
    assert metrics["unknown_rate_unrelated"] == pytest.approx(np.mean([r["verdict"] == "unknown" for r in unrel]))


@pytest.mark.parametrize("target", [0.01, 0.05])
def test_tpr_at_fpr_is_the_best_point_within_the_target(rows, metrics, target):
    neg = np.array([r["score"] for r in rows if r["label"] == "authentic"])
    pos = np.array([r["score"] for r in rows if r["label"] == "counterfeit"])
    p = metrics["tpr_at_fpr"][f"{target:g}"]
    assert p["fpr_reached"] <= target
    tpr, fpr = brute_force_tpr_at(neg, pos, target)
    assert p["tpr"] == pytest.approx(tpr)
    assert p["fpr_reached"] == pytest.approx(fpr)
    # the threshold reproduces the point
    assert np.mean(neg >= p["threshold"]) == pytest.approx(p["fpr_reached"])
    assert np.mean(pos >= p["threshold"]) == pytest.approx(p["tpr"])


def test_per_type_figures_use_the_global_threshold(rows, metrics):
    per_col = metrics["per_column"]
    assert set(per_col["manipulation"]) == set(TYPES)
    assert set(per_col["strength"]) == {"subtle", "gross"}
    assert "brand" in per_col and "path" not in per_col and "verdict" not in per_col
    neg = [r["score"] for r in rows if r["label"] == "authentic"]
    thr = metrics["tpr_at_fpr"]["0.05"]["threshold"]
    for name in TYPES:
        pos = [r["score"] for r in rows if r.get("manipulation") == name]
        e = metrics["per_manipulation"][name]
        assert e["n"] == len(pos) == per_col["manipulation"][name]["n"]
        assert e["auroc"] == pytest.approx(roc_auc_score([0] * len(neg) + [1] * len(pos), neg + pos))
        assert e["tpr_at_fpr"]["0.05"] == pytest.approx(np.mean(np.array(pos) >= thr))
        assert e["subtle"]["n"] + e["gross"]["n"] == e["n"]
        assert "detection_rate" in e["subtle"] and "auroc" in e["gross"]
    # gross edits are easier in this synthetic set
    gross, subtle = per_col["strength"]["gross"], per_col["strength"]["subtle"]
    assert gross["auroc"] > subtle["auroc"]


def test_confusion_matrix_counts_every_photo(rows, metrics):
    conf = metrics["confusion"]
    assert sum(sum(v.values()) for v in conf.values()) == metrics["n_total"] == len(rows)
    assert list(conf["authentic"])[:5] == ["authentic", "suspicious", "counterfeit", "unknown", "error"]
    for lab, counts in conf.items():
        assert sum(counts.values()) == metrics["n"][lab]


def test_json_is_strict_when_a_class_is_missing(tmp_path):
    only_auth = [r for r in synthetic_rows(seed=1) if r["label"] == "authentic"]
    m = evaluate_rows(only_auth)
    text = json.dumps(m, allow_nan=False)  # raises on NaN/inf
    assert m["auroc"] is None and m["average_precision"] is None and m["open_set_auroc"] is None
    assert m["tpr_at_fpr"]["0.05"] == {"tpr": None, "fpr_reached": None, "threshold": None}
    assert m["detection_rate"] is None and m["per_manipulation"] == {}
    assert json.loads(text)["n"]["authentic"] == len(only_auth)
    assert json.loads(write_metrics(m, tmp_path / "m.json").read_text()) == json.loads(text)
    assert "n/a" in format_summary(m)
    json.dumps(evaluate_rows([]), allow_nan=False)


def test_summary_table_shows_operating_points_and_types(metrics):
    text = format_summary(metrics, title="synthetic")
    for words in ("AUROC", "average precision", "1% FPR", "5% FPR", "FPR reached", "right brand", "unknown",
                  "confusion", "per edit type", "subtle", "gross", *TYPES):
        assert words in text, words


def test_join_results_reads_similarity(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label,brand,product,manipulation\n"
                                         "a.jpg,authentic,b,p,none\nc.jpg,counterfeit,b,p,logo_swap\n"
                                         "gone.jpg,authentic,b,p,none\n")
    results = [{"path": "a.jpg", "verdict": "authentic", "score": "0.1", "brand": "b", "product": "p",
                "similarity": "0.9"},
               {"path": "c.jpg", "verdict": "counterfeit", "score": "0.95", "brand": "b", "product": "p",
                "similarity": "0.8"}]
    rows = join_results(results, tmp_path, tmp_path / "labels.csv")
    assert [r["similarity"] for r in rows] == [0.9, 0.8, 0.0]
    assert rows[1]["manipulation"] == "logo_swap" and rows[2]["verdict"] == "missing"
    m = evaluate_rows(rows)
    assert m["confusion"]["authentic"]["missing"] == 1 and m["product_accuracy"] == pytest.approx(2 / 3)


def test_plots_are_written_as_png(rows, metrics, tmp_path):
    from brandguard.report.plots import write_plots

    paths = write_plots(rows, metrics, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["per_type.png", "roc.png", "score_hist.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024
    only_auth = [r for r in rows if r["label"] == "authentic"]
    assert [p.name for p in write_plots(only_auth, evaluate_rows(only_auth), tmp_path / "p2")] == ["score_hist.png"]
