"""Calibration from authentic photos alone: the requested false-positive rate holds on fresh photos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brandguard.calibration import ChannelFusion, ScoreCalibrator, Thresholds, format_score, verdict_for
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


def test_score_tail_keeps_its_order_beyond_the_calibration_sample():
    sample = np.random.default_rng(0).exponential(size=400)
    cal = ScoreCalibrator.fit(sample)
    top = cal.knots[-1]
    # the fitted tail extrapolates: the authentic share beyond 8 (never seen in 400 photos) is about e^-8
    assert 1 / 3 < cal.tail(8.0) / np.exp(-8.0) < 3
    # 1000 distinct raw scores beyond the sample: strictly increasing scores, no ties even as printed
    raws = top + np.linspace(0.01, 18.0, 1000)
    scores = cal.score(raws)
    assert np.all(np.diff(scores) > 0) and scores.max() < 1.0
    assert len({format_score(s) for s in scores}) == 1000
    assert float(format_score(1 - 1e-9)) < float(format_score(1 - 1e-12)) < 1.0
    # far beyond what float64 can tell from 1, the tail share itself keeps decreasing
    far = top + np.geomspace(20.0, 1e6, 1000)
    assert np.all(np.diff(cal.log_tail(far)) < 0) and np.all(np.isfinite(cal.log_tail(far)))
    assert cal.raw_at(cal.score(top + 5.0)) == pytest.approx(top + 5.0, rel=1e-6)
    # a heavy tail is fitted as one (Pareto shape > 0), so a few far authentic scores do not make every
    # larger score look impossibly rare
    heavy = ScoreCalibrator.fit(np.random.default_rng(1).pareto(3.0, size=2000))
    assert 0.1 < heavy.tail_shape <= ScoreCalibrator.MAX_SHAPE
    back = ScoreCalibrator.from_dict(json.loads(json.dumps(heavy.to_dict())))
    np.testing.assert_allclose(back.score(raws), heavy.score(raws))


def test_calibrators_and_fusions_saved_before_still_load_and_score_alike():
    # dicts as indexes saved them before the Pareto tail and the per-channel margins
    old_cal = {"knots": [0.0, 0.5, 1.0, 2.0], "tail_scale": 0.25, "source": "calibration", "n": 4}
    cal = ScoreCalibrator.from_dict(old_cal)
    probs = (np.arange(4) + 0.5) / 4
    assert cal.tail_shape == 0.0
    assert cal.score(3.0) == pytest.approx(1 - (1 - probs[-1]) * np.exp(-1.0 / 0.25))
    assert cal.score(0.75) == pytest.approx(np.interp(0.75, old_cal["knots"], probs))
    old_fusion = {"loc": [1.6, 1.6, 0.0, 0.0], "scale": [0.7, 1.1, 0.05, 1.0], "tails": {"2": {"n": 12, "positive": [0.2]}}}
    fusion = ChannelFusion.from_dict(json.loads(json.dumps(old_fusion)))
    assert fusion.legacy and fusion.to_dict() == old_fusion
    assert fusion.fuse(np.array([20.0, 1.0, 0.0, np.nan])) == pytest.approx((np.log1p(20.0) - 1.6) / 0.7)


def test_a_channel_far_beyond_authentic_variation_decides():
    # heavy-tailed authentic colour scores (some authentic photos reach 40+): a photo whose colour channel is
    # three times the farthest authentic one is a takedown however typical its structure; farther scores higher
    rng = np.random.default_rng(0)
    n = 81
    authentic = np.c_[rng.lognormal(1.3, 0.6, n), rng.lognormal(1.5, 1.0, n), np.zeros(n), np.full(n, np.nan)]
    fusion = ChannelFusion.fit(authentic)
    cal = ScoreCalibrator.fit(fusion.fuse(authentic))
    typical = np.median(authentic, 0)
    scores = []
    for factor in (3.0, 10.0, 100.0):
        probe = typical.copy()
        probe[1] = factor * authentic[:, 1].max()
        assert _verdict(fusion, cal, probe, None) == "counterfeit"
        scores.append(cal.score(fusion.fuse(probe)))
    assert np.all(np.diff(scores) > 0)


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
    # every label kind, a few of each (authentic, counterfeit, unrelated): what the round trip must keep
    paths = [str(i.path) for kind in ("authentic", "counterfeit", "unrelated")
             for i in [i for i in labels if i.label == kind][:6]]
    a, b = det.predict_batch(paths), again.predict_batch(paths)
    assert len({p.verdict for p in a}) >= 2  # not a set where every verdict is the same
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
    fakes = [str(i.path) for i in labels if i.label == "counterfeit"][:10]
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
    assert "calibration in force: calibrated on " in out and " authentic photos (calibration)" in out


def _with_text(text: np.ndarray, seed: int = 0) -> np.ndarray:
    """Channel scores (structure, colour, text, learned) of authentic-like photos with the given text distances."""
    rng = np.random.default_rng(seed)
    n = len(text)
    return np.c_[rng.gamma(2, 1, n), rng.gamma(2, 0.2, n), text, np.full(n, np.nan)]


def _authentic_reads(n: int, seed: int = 0, misread_share: float = 0.0) -> list[list[tuple[int, int]]]:
    """OCR readings of authentic photos: a 6-letter brand name and a 14-letter product line, each read
    right, except a share of photos that misread one letter of some line."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.random() < misread_share)
        out.append([(k, 6), (0, 14)] if rng.random() < 0.5 else [(0, 6), (k, 14)])
    return out


def _verdict(fusion: ChannelFusion, cal: ScoreCalibrator, channels, reads) -> str:
    return verdict_for(cal.score(fusion.fuse(np.asarray(channels, np.float64), reads)), Thresholds())


@pytest.mark.parametrize("n", [20, 80, 400])
def test_misspelt_brand_name_alone_is_a_takedown_whatever_the_calibration_sample(n):
    # n authentic photos that read their lines right (as do the references): a brand name read with two or
    # three wrong letters, the rest of the package typical, reaches counterfeit at the default 1% takedown;
    # before, with 81 photos, a misspelling weighed as the top 1.2% of authentic photos and never sufficed
    authentic = _with_text(np.zeros(n), seed=n)
    reads = _authentic_reads(n, seed=n)
    refs = _authentic_reads(24, seed=1)  # the references' own readings count towards the misread rate too
    fusion = ChannelFusion.fit(authentic, reads, refs)
    cal = ScoreCalibrator.fit(fusion.fuse(authentic, reads))
    typical = np.median(authentic, 0)
    for wrong in (2, 3):
        misspelt = typical.copy()
        misspelt[2] = wrong / 6
        assert _verdict(fusion, cal, misspelt, [(wrong, 6), (0, 14)]) == "counterfeit"
        assert _verdict(fusion, cal, misspelt, None) == "counterfeit"  # the distance alone (no readings)
    # one wrong letter weighs less (authentic print is misread now and then), and less in a longer line
    one = typical.copy()
    one[2] = 1 / 6
    assert fusion.fuse(one, [(1, 6), (0, 14)]) < fusion.fuse(misspelt, [(2, 6), (0, 14)])
    assert fusion.fuse(one, [(0, 6), (1, 14)]) < fusion.fuse(one, [(1, 6), (0, 14)])


def test_misread_rate_is_learnt_from_authentic_readings():
    # authentic photos that misread often make a misread weigh less, and the share of authentic photos
    # reading as badly bounds the evidence (misreads that come in bunches, e.g. blur, are not trusted more)
    clean = ChannelFusion.fit(_with_text(np.zeros(200)), _authentic_reads(200))
    sloppy_reads = _authentic_reads(200, misread_share=0.3)
    text = np.array([max(k / L for k, L in r) for r in sloppy_reads])
    sloppy = ChannelFusion.fit(_with_text(text), sloppy_reads)
    assert sloppy.misread.rate > 5 * clean.misread.rate
    probe = np.array([0.0, 0.0, 2 / 6, np.nan])
    assert sloppy.fuse(probe, [(2, 6), (0, 14)]) < clean.fuse(probe, [(2, 6), (0, 14)])
    assert clean.fuse(np.array([0.0, 0.0, 0.0, np.nan]), [(0, 6), (0, 14)]) < 0.5  # read right: no evidence
    bunched = [[(3, 6), (0, 14)]] * 10 + _authentic_reads(190)  # 5% of authentic photos misread 3 letters
    text = np.array([max(k / L for k, L in r) for r in bunched])
    fusion = ChannelFusion.fit(_with_text(text), bunched)
    z = fusion.fuse(np.array([0.0, 0.0, 0.5, np.nan]), [(3, 6), (0, 14)])
    assert z <= -np.log10(10 / 201) + 0.01  # (+ the other channels' tie-break share)


def test_text_channel_tail_holds_on_fresh_authentic_photos():
    # 3% of authentic photos misread one letter of some line: on fresh photos, the share whose text channel
    # reaches a level is the share the fitted tail promises, within sampling error
    def draw(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.where(rng.random(n) < 0.03, rng.choice([1 / 3, 1 / 6, 1 / 12], n), 0.0)

    fusion = ChannelFusion.fit(_with_text(draw(1000, 1)))
    fresh = _with_text(draw(5000, 2), seed=3)
    fresh[:, :2] = 0.0  # isolate the text channel
    level = fusion.fuse(np.array([0.0, 0.0, 1 / 6, np.nan]))
    promised = 10.0 ** -level  # the raw score is in decades of the authentic share
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
    assert 6 <= th.weak_inliers < th.min_inliers  # half the keypoint rule, never under 6 matches
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
    assert old.min_inlier_density == 0.0 and old.dense_enough(20, 10_000)  # nor a density rule


def test_weak_matches_stay_possible_when_the_keypoint_rule_is_at_its_floor(saved_index, embedder):
    """Calibrating on small or blurred photos takes the unknown-product rule down to its floor (12): a weak match
    (half the rule, never under 6 verified matches, and the product's look) must still be possible there, not
    be capped at the rule itself."""
    index = ReferenceIndex.load(saved_index)
    index.config = index.config.with_overrides({"localization.min_inliers": 12})
    det = Detector(index, embedder)
    det.calibrate(_authentic_photos(12, seed=101), review_fpr=0.10, takedown_fpr=0.02)
    th = det.index.thresholds
    assert th.min_inliers == 12 and th.weak_similarity is not None
    assert th.weak_inliers == 6 and th.fewest_accepted == 6
    assert th.accepts(6, th.weak_similarity) and not th.accepts(5, 1.0)
    assert not th.accepts(11, th.weak_similarity - 0.01)  # the look still decides
    cold = Thresholds(min_inliers=12)
    cold.allow_weak(0.8)
    assert (cold.weak_inliers, cold.fewest_accepted) == (6, 6)
    cold.allow_weak(0.8, floor=12)  # a floor at the rule itself leaves no weak match
    assert not cold.is_weak(11) and cold.fewest_accepted == 12


def test_calibrate_sets_an_inlier_density_rule_that_keeps_the_authentic_photos(calibrated, labels):
    """Half the 1% quantile of the calibration photos' inlier density, the margin the inlier count keeps: the
    authentic listings are not sparse, and the rule is saved with the thresholds."""
    det, _ = calibrated
    th = det.index.thresholds
    assert th.min_inlier_density > 0
    auth = det.predict_batch([str(i.path) for i in labels if i.label == "authentic"])
    assert all(p.verdict != "unknown" for p in auth)
    assert min(p.inlier_density for p in auth) > th.min_inlier_density  # none sparse
    back = Thresholds.from_dict(json.loads(json.dumps(th.to_dict())))
    assert back.min_inlier_density == th.min_inlier_density
    side = 2 * th.min_inliers / th.min_inlier_density  # an outline where the density needs twice the count
    need = int(np.ceil(th.min_inlier_density * side))
    assert th.dense_enough(need, side) and not th.dense_enough(need - 1, side)
    assert th.dense_enough(need - 1) and th.dense_enough(need - 1, 0.0)  # outline unknown or degenerate: no rule


def test_fusion_fitted_before_a_channel_existed_still_scores():
    old = ChannelFusion.from_dict({"loc": [0.0, 0.0], "scale": [1.0, 1.0]})  # an index saved with 2 channels
    assert old.fuse(np.array([np.e - 1, 0.0, 0.5])) == pytest.approx(1.0)
    assert ChannelFusion().fuse(np.array([0.0, 0.0, np.nan])) == 0.0  # text not measured: ignored


@pytest.mark.parametrize("state", ["cold-start", "calibrated on 72 photos"])
def test_misspelt_brand_name_alone_reaches_counterfeit_on_an_index(state, request, saved_index, embedder):
    # an index's own default calibration (the cold start, and after calibrate): a wordmark read with two or
    # three wrong letters where the references read it right, every other channel typical, is a takedown
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.text import line_reads, normalise

    if state == "cold-start":
        det = Detector(ReferenceIndex.load(saved_index), embedder)
    else:
        det = request.getfixturevalue("calibrated")[0]
    index = det.index
    fusion = index.fusion
    assert fusion.misread is not None and fusion.misread.chars > 0  # the references' readings were counted
    m = next(m for m in index.products if m.text_lines and len(normalise(m.text_lines[0]["text"])) >= 6)
    expected = normalise(m.text_lines[0]["text"])
    typical = np.full(4, np.nan)
    for j, margin in fusion.margins.items():
        typical[j] = np.expm1(margin.raw_at(0.5))  # the median authentic photo's channel
    for wrong in (2, 3):
        read = "".join("x" if (i % 2 and i < 2 * wrong) else c for i, c in enumerate(expected))
        assert sum(a != b for a, b in zip(read, expected)) == wrong
        details = [{"expected": expected, "read": read, "confidence": 0.99, "distance": wrong / len(expected),
                    "counted": wrong / len(expected)}]
        channels = typical.copy()
        channels[2] = wrong / len(expected)
        raw = fusion.fuse(channels, line_reads(details))
        score = index.calibrator_for(m.brand).score(raw)
        assert verdict_for(score, index.thresholds) == "counterfeit", (state, wrong, expected, raw, score)
        assert det._judge(m.brand, tuple(channels), details)[2] == "counterfeit"
    assert verdict_for(index.calibrator_for(m.brand).score(fusion.fuse(typical)), index.thresholds) == "authentic"
