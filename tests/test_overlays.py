"""Seller overlays (brandguard.overlays): a shop name tiled over the whole photo is found where it repeats
beyond the package and left out; print on the package, and a counterfeit's repeated edit, are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from printed_card import card as _card
from printed_card import predict_with

from brandguard import comparison
from brandguard.config import CompareConfig
from brandguard.localization import warp_to_canonical
from brandguard.mismatch import ProductBank, closest_references, fit_normal_stats, make_view
from brandguard.overlays import find_overlay

S, CELL = 384, 6
W, H_IMG = 760, 600


def _extra_mark(card: np.ndarray) -> np.ndarray:
    out = card.copy()
    cv2.circle(out, (280, 250), 40, (250, 200, 20), -1)
    cv2.putText(out, "NEW", (248, 262), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (160, 20, 20), 3)
    return out


def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.6, 1.0)) * rng.uniform(0.92, 1.08)
    return np.clip(out + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)


def _placement(cx: float, cy: float, scale: float = 0.75, angle: float = 6.0) -> np.ndarray:
    """Canonical -> photo pixels: the card turned by ``angle`` degrees, ``scale`` times its size, centred."""
    a = np.deg2rad(angle)
    R = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([cx, cy]) - R @ np.array([S / 2, S / 2])
    return np.array([[R[0, 0], R[0, 1], t[0]], [R[1, 0], R[1, 1], t[1]], [0, 0, 1.0]])


def _background(rng: np.random.Generator) -> np.ndarray:
    """A table top: soft blotches and a wood-like grain."""
    low = cv2.resize(rng.uniform(90, 170, (12, 15, 3)).astype(np.float32), (W, H_IMG), interpolation=cv2.INTER_CUBIC)
    grain = 12 * np.sin(np.arange(H_IMG, dtype=np.float32) / 7.0)[:, None, None]
    return np.clip(low + grain + rng.normal(0, 3, (H_IMG, W, 3)), 0, 255)


def _tiled_text(rng: np.random.Generator) -> np.ndarray:
    """The seller's layer: a shop name tiled in brick rows over the whole photo (0..1)."""
    layer = np.zeros((H_IMG, W), np.uint8)
    for row, y in enumerate(range(20, H_IMG + 60, 78)):
        for x in range(-240 + (row % 2) * 120, W + 240, 250):
            cv2.putText(layer, "@shop.example", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    return layer.astype(np.float32) / 255.0


def _photo(cards: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
           watermark: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(photo, overlay layer)``: the cards placed by their homographies on a table, the seller's text over all."""
    img = _background(rng)
    for card, Hc in cards:
        warped = cv2.warpPerspective(card.astype(np.float32), Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)
        inside = cv2.warpPerspective(np.ones((S, S), np.float32), Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)[..., None]
        img = img * (1 - inside) + warped * inside
    layer = _tiled_text(rng) if watermark else np.zeros((H_IMG, W), np.float32)
    a = 0.4 * layer[..., None]
    return _camera(np.clip(img * (1 - a) + 245 * a, 0, 255), rng), layer


@pytest.fixture(scope="module")
def bank_and_stats() -> tuple[ProductBank, object]:
    rng = np.random.default_rng(3)
    views = [make_view(_camera(_card(), rng), np.ones((S, S), bool), CELL) for _ in range(4)]
    bank = ProductBank.from_views(views)
    return bank, fit_normal_stats(bank, CELL, k=0, margin=3)[0]


def _judge(bank_and_stats, photo: np.ndarray, Hc: np.ndarray, others=()):
    """``(comparison, overlay, comparison again without the overlay)`` as the detector runs them."""
    bank, stats = bank_and_stats
    settings = CompareConfig(margin=3, cell=CELL)
    crop, valid = warp_to_canonical(photo, Hc, S)
    view = make_view(crop, valid, CELL)
    res = comparison.compare(view, bank, stats, settings)
    best = closest_references(view, bank, 1)[0]
    residual = view.structure - bank.structure[best].astype(np.float32)
    ov = find_overlay(photo, Hc, S, residual, res.structure, valid & bank.valid[best], cell=CELL, others=others)
    again = None
    if ov is not None:
        cleaned = cv2.inpaint(crop, ov.mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        again = comparison.compare(make_view(cleaned, valid, CELL, ignore=ov.mask), bank, stats, settings)
    return res, ov, again


def test_a_tiled_shop_name_is_found_beyond_the_package_and_left_out(bank_and_stats):
    Hc = _placement(W / 2, H_IMG / 2)
    photo, _ = _photo([(_card(), Hc)], np.random.default_rng(21), watermark=True)
    clean, _ = _photo([(_card(), Hc)], np.random.default_rng(21), watermark=False)  # the same photo without it
    res, ov, again = _judge(bank_and_stats, photo, Hc)
    assert res.channels[0] > 8.0  # the tiled text alone would flag the honest photo
    assert ov is not None and len(ov.shifts) >= 2 and 0.02 < ov.share < 0.45
    assert ov.note.startswith("seller's overlay")
    (a, _), (b, _) = warp_to_canonical(photo, Hc, S), warp_to_canonical(clean, Hc, S)
    seen = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1)  # what the text changed over the package
    assert ov.mask[seen > 25].mean() > 0.6  # most of the text that shows is left out ...
    near = cv2.dilate((seen > 5).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert ov.mask[~near].mean() < 0.05  # ... and hardly anything else
    assert again.channels[0] < 0.5 * res.channels[0]  # ... and the photo compares as authentic print does


def test_print_on_the_package_is_not_an_overlay(bank_and_stats):
    rng = np.random.default_rng(22)
    Hc = _placement(W / 2, H_IMG / 2)
    photo, _ = _photo([(_extra_mark(_card()), Hc)], rng, watermark=False)
    res, ov, _ = _judge(bank_and_stats, photo, Hc)
    assert res.channels[0] > 8.0 and ov is None


def test_an_extra_mark_under_the_shop_name_still_stands_out(bank_and_stats):
    rng = np.random.default_rng(23)
    Hc = _placement(W / 2, H_IMG / 2)
    plain, _ = _photo([(_card(), Hc)], rng, watermark=True)
    _, _, plain_again = _judge(bank_and_stats, plain, Hc)
    photo, _ = _photo([(_extra_mark(_card()), Hc)], rng, watermark=True)
    _, ov, again = _judge(bank_and_stats, photo, Hc)
    assert ov is not None
    mark = np.zeros((S, S), np.uint8)
    cv2.circle(mark, (280, 250), 40, 1, -1)
    assert ov.mask[mark > 0].mean() < 0.3  # only where the shop name crosses the badge
    assert again.channels[0] > 3 * plain_again.channels[0]


def test_two_units_of_a_counterfeit_do_not_make_an_overlay(bank_and_stats):
    rng = np.random.default_rng(24)
    H1, H2 = _placement(0.27 * W, H_IMG / 2, 0.5, 3.0), _placement(0.73 * W, H_IMG / 2, 0.5, 3.0)
    photo, _ = _photo([(_extra_mark(_card()), H1), (_extra_mark(_card()), H2)], rng, watermark=False)
    other = cv2.perspectiveTransform(np.array([[[0, 0], [S, 0], [S, S], [0, S]]], np.float64), H2).reshape(-1, 2)
    res, ov, _ = _judge(bank_and_stats, photo, H1, others=[other])
    assert res.channels[0] > 8.0 and ov is None


def test_the_mask_samples_the_overlay_lattice_beyond_the_kept_translations():
    """Copies of a tiled overlay lie at every point of its lattice: a package filling much of the photo has its
    nearest copies on itself, farther lattice points reach the background (``_lattice_offsets``)."""
    from brandguard.overlays import LATTICE_STEPS, _lattice_offsets

    kept = [(70, 150), (0, 300)]  # brick rows 70 px apart, names every 300 px, offset half a name
    offsets = _lattice_offsets(kept, reach=2000.0)
    assert {(70, 150), (-70, -150), (0, 300), (0, -300)} <= set(offsets)  # the kept translations, both signs
    assert {(140, 300), (140, 0), (-70, 150), (210, 450)} <= set(offsets)  # other lattice points
    assert len(offsets) == len(set(offsets)) == (2 * LATTICE_STEPS + 1) ** 2 - 1
    assert all(np.hypot(*v) <= 400 for v in _lattice_offsets(kept, reach=400.0))
    # translations along one direction span no lattice: only themselves
    assert sorted(_lattice_offsets([(0, 300), (0, 600)], reach=2000.0)) == [(0, -600), (0, -300), (0, 300), (0, 600)]


@pytest.fixture(scope="module")
def watermarked(small_dataset, scene_pairs):
    """Seeded watermark-scene photos of the small data set's first products: (design, authentic photo, photo
    of the same package with a gross extra mark), the seller's name tiled over both."""
    return scene_pairs("watermark", 4, 300)


def test_the_detector_leaves_a_tiled_shop_name_out_and_still_flags_a_printed_mark(detector, watermarked):
    photos = [w[1] for w in watermarked] + [w[2] for w in watermarked]
    on = detector.predict_batch(photos)
    off = predict_with(detector, photos, {"compare.seller_overlays": False})
    n = len(watermarked)
    for (d, _, _), p in zip(watermarked, on[:n]):
        assert (p.brand, p.product) == (d.brand, d.product_slug)
    assert any(note.startswith("seller's overlay") for p in on[:n] for note in p.notes)
    assert sum(p.is_flagged for p in on[:n]) < sum(p.is_flagged for p in off[:n])
    assert all(p.raw_score <= q.raw_score + 1e-6 for p, q in zip(on[:n], off[:n]))
    assert sum(p.is_flagged for p in on[n:]) == sum(p.is_flagged for p in off[n:]) > 0
