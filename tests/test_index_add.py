"""Adding a product to a built index: the others keep their statistics (within the documented tolerance of the
pooled prior), the search structures are appended to, and refitting gives the index a build in one go gives."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import brandguard.index as index_module
from brandguard.index import ReferenceIndex, pool_prior, prior_drift, prior_entry
from brandguard.mismatch import AuthenticPrior
from brandguard.references import ReferenceItem

STATS = ("mu_s", "sigma_s", "mu_c", "sigma_c")


def _same(a: dict, b: dict) -> bool:
    """Two ``to_dict()`` results equal, numbers to 1e-9 relative."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if x != pytest.approx(y, rel=1e-9, abs=1e-12):
                return False
        elif isinstance(x, list) and x and isinstance(x[0], float):
            if not np.allclose(x, y, rtol=1e-9, atol=1e-12):
                return False
        elif x != y:
            return False
    return True


def _copy(index: ReferenceIndex, keep) -> ReferenceIndex:
    """A new index of shallow copies of ``index``'s products that ``keep`` accepts (fitted anew on creation)."""
    return ReferenceIndex(index.config, index.backbone_info, [copy.copy(m) for m in index.products if keep(m)])


def test_pooled_prior_from_entries_is_the_pool_of_the_evidence(small_index):
    pairs = [(m.evidence, m.stats.region) for m in small_index.products]
    assert sum(e.sources >= 2 for e, _ in pairs) >= 2  # the pool really pools
    for part in (pairs, pairs[:2], pairs[:1], []):
        want, got = AuthenticPrior.pool(part), pool_prior([prior_entry(e, r) for e, r in part])
        np.testing.assert_array_equal(want.level, got.level)
        np.testing.assert_array_equal(want.ratio, got.ratio)
        assert want.products == got.products


@pytest.mark.slow
def test_adding_a_product_keeps_the_others_and_refit_equals_a_build_in_one_go(small_index, embedder, monkeypatch):
    held = small_index.products[-1].key
    one_go = _copy(small_index, lambda m: True)
    grown = _copy(small_index, lambda m: m.key != held)
    grown._embedder = embedder
    before = {m.key: m.stats for m in grown.products}
    rows_before = grown._global.ntotal
    items = [ReferenceItem(Path(r.path), *held.split("/")) for m in small_index.products if m.key == held for r in m.refs]
    calibrator, fusion = grown.calibrator, grown.fusion
    # the pooled prior moves with a product, and the calibration sample grows; with tolerances above those moves
    # (as in a large catalogue) nothing else is refitted
    monkeypatch.setattr(index_module, "PRIOR_TOLERANCE", 10.0)
    monkeypatch.setattr(index_module, "CALIBRATION_GROWTH", 1.0)
    assert grown.add(items) == len(items)
    assert grown.prior is not None and grown.prior is not one_go.prior
    for m in grown.products:
        if m.key != held:
            assert m.stats is before[m.key]  # not refitted: the same statistics object
        else:
            assert m.calibration_scores is not None and len(m.calibration_scores) > 0  # fitted, stored for later
    assert grown.calibrator is calibrator and grown.fusion is fusion and grown.calibration_lag >= 1
    # ... and they differ from the build in one go by at most the prior's move
    drift = prior_drift(one_go.prior, grown.prior)
    ref = {m.key: m for m in one_go.products}
    for m in grown.products:
        for name in STATS:
            a, b = getattr(m.stats, name), getattr(ref[m.key].stats, name)
            assert np.all(np.abs(a - b) <= drift * np.abs(b) + 1e-5), (m.key, name)
    # the global search was appended to, and finds each product's references as the build in one go does
    assert grown._global.ntotal == rows_before + sum(m.compared for m in grown.products if m.key == held)
    assert grown._global.ntotal == one_go._global.ntotal
    for m in grown.products:
        hits = grown.search_global(m.global_vecs, k=1)
        assert [grown.products[h[0][0]].key for h in hits] == [m.key] * m.compared
    # refitting under the prior pooled now gives the index built in one go
    grown.refit_statistics()
    np.testing.assert_array_equal(grown.prior.level, one_go.prior.level)
    np.testing.assert_array_equal(grown.prior.ratio, one_go.prior.ratio)
    for m in grown.products:
        r = ref[m.key]
        for name in STATS:
            np.testing.assert_allclose(getattr(m.stats, name), getattr(r.stats, name), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(m.loo_scores, r.loo_scores, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(m.calibration_scores, r.calibration_scores, rtol=1e-6, atol=1e-9)
    assert grown.calibrator.source == one_go.calibrator.source
    np.testing.assert_allclose(grown.calibrator.knots, one_go.calibrator.knots, rtol=1e-6)
    assert _same(grown.thresholds.to_dict(), one_go.thresholds.to_dict())


def test_a_reloaded_index_refits_nothing_when_nothing_changed(small_index, saved_index, tmp_path):
    loaded = ReferenceIndex.load(saved_index)
    assert loaded.prior is not None and all(m.calibration_scores is not None for m in loaded.products)
    np.testing.assert_array_equal(loaded.prior.level, small_index.prior.level)
    loaded.refit_default_calibration()
    assert not any("stats" in m.__dict__ for m in loaded.products)  # still read from the file: nothing refitted
    assert _same(loaded.calibrator.to_dict(), small_index.calibrator.to_dict())
    assert _same(loaded.thresholds.to_dict(), small_index.thresholds.to_dict())
    # `brandguard index refit` fits everything under the prior pooled now (the same prior: nothing was added)
    import shutil

    from brandguard.cli import main

    idx = tmp_path / "idx"
    shutil.copytree(saved_index, idx)
    assert main(["index", "refit", str(idx)]) == 0
    refitted = ReferenceIndex.load(idx)
    np.testing.assert_array_equal(refitted.prior.level, small_index.prior.level)
    assert refitted.calibrator.source == small_index.calibrator.source and refitted.calibration_lag == 0
