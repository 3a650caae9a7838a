"""The one comparison (brandguard.comparison): what the index calibrates is what the detector scores."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

import brandguard.detector as detector_mod
import brandguard.index as index_mod
from brandguard import comparison
from brandguard.config import Config
from brandguard.localization import Alignment, warp_to_canonical
from brandguard.mismatch import CHANNELS, ProductBank, fit_normal_stats, make_view

S, CELL = 96, 6


def test_index_statistics_and_detector_call_the_same_comparison():
    assert index_mod.compare is comparison.compare
    assert detector_mod.compare is comparison.compare


def test_a_reference_gets_the_same_channel_scores_from_the_index_and_from_the_detector(small_index, embedder):
    from brandguard.images import load_image

    pid = next(p for p, m in enumerate(small_index.products) if len(m.bank) >= 3)
    m = small_index.products[pid]
    i = 1
    # the index's own view of reference i: compared with the product's other references (leave-one-out)
    stored = m.loo_scores[i]
    # the detector's view of the same aligned photo, scored against the same other references
    others = [r for r in range(len(m.bank)) if r != i]
    without = dataclasses.replace(m, bank=m.bank.select(others), global_vecs=m.global_vecs[others],
                                  bank_refs=[m.bank_refs[r] for r in others], text_lines=[])
    copy = object.__new__(type(small_index))
    copy.__dict__.update(small_index.__dict__)
    copy.products = [without if p == pid else q for p, q in enumerate(small_index.products)]
    det = detector_mod.Detector(copy, embedder)
    ref = m.refs[m.bank_refs[i]]
    H = np.asarray(ref.H, np.float64)
    image = load_image(ref.path, max_side=small_index.config.localization.max_side)
    crop, valid = warp_to_canonical(image, H, small_index.config.localization.canonical_size)
    g = embedder.embed_global([crop])[0]
    pred = det._compare("ref", image, Alignment(pid, 100, H, 1.0, True), g, crop, valid)
    text = CHANNELS.index("text")
    for j, name in enumerate(CHANNELS):
        if j == text or not np.isfinite(stored[j]):
            continue
        # identical up to the float16 the bank stores aligned references in
        assert pred.channels[j] == pytest.approx(stored[j], rel=0.02, abs=0.02), name
    assert np.isfinite(stored[0]) and np.isfinite(pred.channels[0])


def _package(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S]
    img = np.stack([120 + 60 * np.sin(xx / 9.0), 90 + 50 * np.cos(yy / 7.0), 160 + 0 * xx], -1).astype(np.float32)
    img[30:60, 20:70] = (230, 40, 40)
    return np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)


def test_a_misread_counts_only_where_the_strokes_changed(rng):
    bank = ProductBank.from_views([make_view(_package(rng), np.ones((S, S), bool), CELL) for _ in range(4)])
    stats, _ = fit_normal_stats(bank, CELL)
    settings = Config().compare
    misread = [{"text": "ACME", "read": "ACNE", "confidence": 0.95, "distance": 0.25, "box": [20, 30, 70, 60]}]
    same = comparison.compare(make_view(_package(rng), np.ones((S, S), bool), CELL), bank, stats, settings,
                              text_details=misread)
    assert same.channels[CHANNELS.index("text")] == 0.0  # blurred authentic print misread: not evidence
    edited = _package(rng)
    edited[32:58, 22:68] = np.where((np.arange(46) // 3 % 2 == 0)[None, :, None], 20, 240)
    changed = comparison.compare(make_view(edited, np.ones((S, S), bool), CELL), bank, stats, settings,
                                 text_details=misread)
    assert changed.channels[CHANNELS.index("text")] == pytest.approx(0.25)
    assert changed.heatmap.shape == (S // CELL, S // CELL)


@pytest.mark.slow
def test_products_with_one_or_two_references_get_sane_verdicts(small_dataset, embedder, labels, tmp_path):
    """A one-reference product used to call gross counterfeits authentic (score 0), a two-reference one every
    authentic photo counterfeit: both now lean on what the other products teach."""
    from brandguard.detector import Detector
    from brandguard.index import ReferenceIndex

    products = sorted({(i.brand, i.product) for i in labels if i.label == "counterfeit"
                       and i.extra.get("strength") == "gross"
                       and any(a.label == "authentic" and (a.brand, a.product) == (i.brand, i.product) for a in labels)})
    assert len(products) >= 2
    thin = {products[0]: 1, products[1]: 2}
    refs = tmp_path / "refs"
    for folder in sorted(small_dataset.refs_dir.glob("*/*")):
        key = (folder.parent.name, folder.name)
        keep = sorted(folder.glob("*.jpg"))[:thin.get(key, 99)]
        (refs / key[0] / key[1]).mkdir(parents=True)
        for f in keep:
            shutil.copy(f, refs / key[0] / key[1] / f.name)
    cfg = Config().with_overrides({"compare.text_check": "off"})
    index = ReferenceIndex.build(refs, cfg, embedder=embedder)
    assert index.calibrator.source.startswith("cold-start")
    det = Detector(index, embedder)
    checked = 0
    for key in thin:
        mine = [i for i in labels if (i.brand, i.product) == key]
        auth = [i for i in mine if i.label == "authentic"]
        gross = [i for i in mine if i.label == "counterfeit" and i.extra.get("strength") == "gross"]
        pa = [p for p in det.predict_batch([str(i.path) for i in auth]) if p.verdict != "unknown"]
        pg = [p for p in det.predict_batch([str(i.path) for i in gross]) if p.verdict != "unknown"]
        assert pa and pg, key
        # an authentic photo is never taken down; the gross counterfeit stands out above every authentic photo
        assert all(p.verdict != "counterfeit" for p in pa), (key, [p.score for p in pa])
        assert max(p.score for p in pg) > max(p.score for p in pa), key
        assert max(p.score for p in pg) > 0.9, (key, [p.score for p in pg])  # no longer 0.000
        checked += 1
    assert checked == 2
