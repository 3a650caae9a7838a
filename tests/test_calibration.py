"""Calibration from authentic photos alone: the requested false-positive rate holds on fresh photos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brandguard.calibration import ChannelFusion, ScoreCalibrator, Thresholds, verdict_for
from brandguard.detector import Detector
from brandguard.errors import DataError
from brandguard.index import ReferenceIndex


def _authentic_photos(n_per_product: int, seed: int) -> list[np.ndarray]:
    """New listing-style photos of the small demo set's own products (never references)."""
    from brandguard.synth import photograph, product_designs, render_package

    known, _ = product_designs("demo", seed=0, size="small")
    rng = np.random.default_rng(seed)
    out = []
    for design in known:
        pkg = render_package(design)
        out += [photograph(pkg, rng, "listing")[0] for _ in range(n_per_product)]
    return out


@pytest.fixture(scope="module")
def calibrated(saved_index, embedder):
    det = Detector(ReferenceIndex.load(saved_index), embedder)
    summary = det.calibrate(_authentic_photos(12, seed=101), review_fpr=0.10, takedown_fpr=0.02)
    return det, summary


def test_score_calibrator_is_monotone_and_invertible():
    cal = ScoreCalibrator.fit(np.random.default_rng(0).normal(size=400))
    raws = np.linspace(-5, 8, 200)
    scores = cal.score(raws)
    assert np.all(np.diff(scores) >= 0) and scores.min() >= 0 and scores.max() <= 1
    for s in (0.05, 0.5, 0.95, 0.999):
        assert cal.score(cal.raw_at(s)) == pytest.approx(s, abs=1e-6)
    assert verdict_for(0.999, Thresholds(0.95, 0.99)) == "counterfeit"
    assert verdict_for(0.96, Thresholds(0.95, 0.99)) == "suspicious"
    assert verdict_for(0.5, Thresholds(0.95, 0.99)) == "authentic"


def test_fusion_standardises_each_channel():
    rng = np.random.default_rng(0)
    scores = np.c_[rng.gamma(2, 2, 300), rng.gamma(2, 0.2, 300)]
    fusion = ChannelFusion.fit(scores)
    raw = fusion.fuse(scores)
    # an authentic-like pair sits near the middle of the fused distribution
    assert abs(fusion.fuse(np.median(scores, 0))) < 0.5
    assert fusion.fuse(np.array([100.0, 0.0])) > np.quantile(raw, 0.99)  # either channel can raise it
    assert fusion.fuse(np.array([0.0, 10.0])) > np.quantile(raw, 0.99)


def test_cold_start_calibration_reaches_the_requested_fpr_on_fresh_photos(calibrated):
    det, summary = calibrated
    assert summary["used"] >= 60 and det.index.calibrator.source == "calibration"
    fresh = det.predict_batch(_authentic_photos(12, seed=202))
    known = [p for p in fresh if p.verdict != "unknown"]
    assert len(known) >= 0.9 * len(fresh)
    flagged = np.mean([p.verdict in ("suspicious", "counterfeit") for p in known])
    takedowns = np.mean([p.verdict == "counterfeit" for p in known])
    n = len(known)
    # the review threshold was set at 10% FPR: within three binomial standard errors on fresh photos
    assert abs(flagged - 0.10) <= 3 * np.sqrt(0.10 * 0.90 / n) + 1 / n
    assert takedowns <= 0.02 + 3 * np.sqrt(0.02 * 0.98 / n) + 1 / n


def test_calibrated_index_round_trips_with_the_same_verdicts(calibrated, tmp_path, embedder, labels):
    det, _ = calibrated
    det.index.save(tmp_path / "idx")
    again = Detector(ReferenceIndex.load(tmp_path / "idx"), embedder)
    assert again.index.calibrator.source == "calibration"
    assert again.index.thresholds.to_dict() == det.index.thresholds.to_dict()
    paths = [str(i.path) for i in labels]
    a, b = det.predict_batch(paths), again.predict_batch(paths)
    assert [p.verdict for p in a] == [p.verdict for p in b]
    assert np.allclose([p.score for p in a], [p.score for p in b])
    info = again.index.info()
    assert info["calibration"]["source"] == "calibration" and "global_takedown_raw" in info["calibration"]


def test_calibration_refuses_reference_photos(saved_index, embedder, small_dataset):
    det = Detector(ReferenceIndex.load(saved_index), embedder)
    refs = [str(p) for p in sorted(small_dataset.refs_dir.rglob("*.jpg"))[:12]]
    with pytest.raises(DataError, match="references"):
        det.calibrate(refs)


def test_calibration_needs_enough_photos(saved_index, embedder):
    det = Detector(ReferenceIndex.load(saved_index), embedder)
    with pytest.raises(DataError, match="at least 10"):
        det.calibrate(_authentic_photos(1, seed=5))


def test_counterfeit_examples_report_expected_detection(saved_index, embedder, labels):
    det = Detector(ReferenceIndex.load(saved_index), embedder)
    fakes = [str(i.path) for i in labels if i.label == "counterfeit"]
    summary = det.calibrate(_authentic_photos(4, seed=303), counterfeit=fakes)
    assert 0.0 <= summary["expected_detection"] <= 1.0
    assert "authentic_flagged" in summary


def test_cli_calibrate_and_info(saved_index, tmp_path, small_dataset, capsys):
    import shutil

    from brandguard.cli import main

    idx = tmp_path / "idx"
    shutil.copytree(saved_index, idx)
    assert main(["calibrate", str(idx), "--authentic", str(small_dataset.calibration_csv), "--fpr", "0.05",
                 "--review-fpr", "0.2", "--device", "cpu"]) == 0
    assert '"takedown": 0.95' in capsys.readouterr().out
    assert main(["index", "info", str(idx)]) == 0
    out = capsys.readouterr().out
    assert "calibration" in out and "'source': 'calibration'" in out


def _with_text(text: np.ndarray, seed: int = 0) -> np.ndarray:
    """Channel scores (structure, colour, text, learned) of authentic-like photos with the given text distances."""
    rng = np.random.default_rng(seed)
    n = len(text)
    return np.c_[rng.gamma(2, 1, n), rng.gamma(2, 0.2, n), text, np.full(n, np.nan)]


def test_text_channel_counts_as_the_share_of_authentic_photos_reading_as_far():
    # 80 calibration photos that all read their wordmark right: a misread of one letter in three is as
    # unusual as the top 1/82 of authentic photos (2.25 units), not the 5.7 a spread floor of 0.05 gave,
    # so one misread of a short authentic wordmark cannot outrank every counterfeit
    fusion = ChannelFusion.fit(_with_text(np.zeros(80)))
    misread = fusion.fuse(np.array([0.0, 0.0, 1 / 3, np.nan]))
    assert misread == pytest.approx(2.25, abs=0.01)
    assert fusion.fuse(np.array([0.0, 0.0, 0.0, np.nan])) < 0.5  # read right: no evidence
    assert fusion.fuse(np.array([50.0, 0.0, 1 / 3, np.nan])) > misread  # strong structure evidence still counts
    # misreads among the authentic photos: a distance counts by how many of them read at least as far
    text = np.zeros(200)
    text[:6] = [0.1, 0.1, 0.2, 0.2, 0.2, 0.5]
    fusion = ChannelFusion.fit(_with_text(text))
    z = [fusion.fuse(np.array([0.0, 0.0, d, np.nan])) for d in (0.1, 0.2, 0.5, 0.9)]
    assert np.all(np.diff(z) > 0)  # farther reads are rarer
    from statistics import NormalDist

    assert z[1] == pytest.approx(-NormalDist().inv_cdf((4 + 1) / 202), abs=1e-6)  # 4 of 200 read >= 0.2


def test_text_channel_tail_holds_on_fresh_authentic_photos():
    # 3% of authentic photos misread one letter of some line: on fresh photos, the share whose text channel
    # reaches a level is the share the fitted tail promises, within sampling error
    from statistics import NormalDist

    def draw(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.where(rng.random(n) < 0.03, rng.choice([1 / 3, 1 / 6, 1 / 12], n), 0.0)

    fusion = ChannelFusion.fit(_with_text(draw(1000, 1)))
    fresh = _with_text(draw(5000, 2), seed=3)
    fresh[:, :2] = 0.0  # isolate the text channel
    level = fusion.fuse(np.array([0.0, 0.0, 1 / 6, np.nan]))
    promised = 1 - NormalDist().cdf(level)
    reached = np.mean(fusion.fuse(fresh) >= level - 1e-9)
    assert abs(reached - promised) <= 3 * np.sqrt(promised * (1 - promised) / 5000) + 1e-3


def test_fusion_round_trips_with_its_text_tail():
    text = np.r_[np.zeros(50), [0.25, 0.5]]
    fusion = ChannelFusion.fit(_with_text(text))
    back = ChannelFusion.from_dict(json.loads(json.dumps(fusion.to_dict())))
    probe = _with_text(np.array([0.0, 0.1, 0.25, 0.4, 1.0]), seed=9)
    np.testing.assert_allclose(back.fuse(probe), fusion.fuse(probe))


def test_weak_match_rule_is_calibrated_and_keeps_unrelated_products_unknown(calibrated, labels):
    det, _ = calibrated
    th = det.index.thresholds
    assert th.weak_similarity is not None and 0.0 < th.weak_similarity < 1.0
    assert 12 <= th.weak_inliers < th.min_inliers or th.min_inliers <= 12
    unrel = [str(i.path) for i in labels if i.label == "unrelated"]
    with_rule = [p.verdict == "unknown" for p in det.predict_batch(unrel)]
    saved, th.weak_similarity = th.weak_similarity, None
    try:
        without = [p.verdict == "unknown" for p in det.predict_batch(unrel)]
    finally:
        th.weak_similarity = saved
    assert sum(with_rule) >= sum(without) - 1  # at most one unrelated photo more is taken for a known product
    back = Thresholds.from_dict(json.loads(json.dumps(th.to_dict())))
    assert (back.weak_inliers, back.weak_similarity) == (th.weak_inliers, th.weak_similarity)
    old = Thresholds.from_dict({"review": 0.95, "takedown": 0.99, "min_inliers": 20})  # saved before weak matches
    assert old.weak_similarity is None and not old.accepts(19, 1.0) and old.accepts(20)


def test_fusion_fitted_before_a_channel_existed_still_scores():
    old = ChannelFusion.from_dict({"loc": [0.0, 0.0], "scale": [1.0, 1.0]})  # an index saved with 2 channels
    assert old.fuse(np.array([np.e - 1, 0.0, 0.5])) == pytest.approx(1.0)
    assert ChannelFusion().fuse(np.array([0.0, 0.0, np.nan])) == 0.0  # text not measured: ignored
