"""Occluders (brandguard.occluders): a finger, a sticker or a pen over the package's edge is found where its
colour continues beyond the package and left out; print on the package, up to its edge, is not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from printed_card import card as _card
from printed_card import predict_with

from brandguard import comparison
from brandguard.config import CompareConfig
from brandguard.localization import warp_to_canonical
from brandguard.mismatch import ProductBank, fit_normal_stats, make_view
from brandguard.occluders import MAX_SHARE, find_occluder

S, CELL = 384, 6
W, H_IMG = 760, 600
SKIN = (224, 172, 140)


def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.6, 1.0)) * rng.uniform(0.95, 1.05)
    return np.clip(out + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)


def _placement(scale: float = 0.75, angle: float = 6.0) -> np.ndarray:
    """Canonical -> photo pixels: the card turned by ``angle`` degrees, ``scale`` times its size, centred."""
    a = np.deg2rad(angle)
    R = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([W / 2, H_IMG / 2]) - R @ np.array([S / 2, S / 2])
    return np.array([[R[0, 0], R[0, 1], t[0]], [R[1, 0], R[1, 1], t[1]], [0, 0, 1.0]])


def _photo(card: np.ndarray, Hc: np.ndarray, rng: np.random.Generator,
           over: list[tuple[np.ndarray, tuple[int, int, int]]] = ()) -> np.ndarray:
    """The card on a wooden table, with ``over``: ``(mask in photo pixels, colour)`` things lying on top."""
    low = cv2.resize(rng.uniform(90, 150, (12, 15, 3)).astype(np.float32), (W, H_IMG), interpolation=cv2.INTER_CUBIC)
    img = np.clip(low + 10 * np.sin(np.arange(H_IMG, dtype=np.float32) / 7.0)[:, None, None], 0, 255)
    warped = cv2.warpPerspective(card.astype(np.float32), Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones((S, S), np.float32), Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)[..., None]
    img = img * (1 - inside) + warped * inside
    for mask, colour in over:
        m = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)[..., None]
        shade = 0.9 + 0.1 * cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 8.0)[..., None]
        img = img * (1 - m) + np.float32(colour) * shade * m
    return _camera(img, rng)


def _to_photo(Hc: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    return cv2.perspectiveTransform(np.array([pts], np.float64), Hc).reshape(-1, 2)


def _finger(Hc: np.ndarray, width: float = 50.0) -> np.ndarray:
    """A finger coming over the card's right edge from outside (canonical x 300 -> 560), in photo pixels."""
    (x0, y0), (x1, y1) = _to_photo(Hc, [(300.0, 230.0), (560.0, 250.0)])
    mask = np.zeros((H_IMG, W), np.uint8)
    cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, int(width * 0.75))
    return mask


def _printed_band(card: np.ndarray, text: bool = True) -> np.ndarray:
    """A counterfeit's extra mark printed along the card's right edge, in a colour close to the finger's."""
    out = card.copy()
    cv2.rectangle(out, (300, 200), (S - 1, 270), SKIN, -1)
    if text:
        cv2.putText(out, "NEW", (310, 248), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (160, 20, 20), 3)
    return out


@pytest.fixture(scope="module")
def bank_and_stats() -> tuple[ProductBank, object]:
    rng = np.random.default_rng(3)
    views = [make_view(_camera(_card(), rng), np.ones((S, S), bool), CELL) for _ in range(4)]
    bank = ProductBank.from_views(views)
    return bank, fit_normal_stats(bank, CELL, k=0, margin=3)[0]


def _judge(bank_and_stats, photo: np.ndarray, Hc: np.ndarray):
    """``(comparison, occluder, comparison again with it left out)`` as the detector runs them."""
    bank, stats = bank_and_stats
    settings = CompareConfig(margin=3, cell=CELL)
    crop, valid = warp_to_canonical(photo, Hc, S)
    view = make_view(crop, valid, CELL)
    res = comparison.compare(view, bank, stats, settings)
    occ = find_occluder(photo, Hc, S, np.maximum(res.structure, res.colour), res.mask, cell=CELL)
    again = None
    if occ is not None:
        view.occlusion = occ.cells.astype(np.float16)
        again = comparison.compare(view, bank, stats, settings, distances=res.distances)
    return res, occ, again


def test_a_finger_over_the_edge_is_found_and_left_out(bank_and_stats):
    Hc = _placement()
    finger = _finger(Hc)
    photo = _photo(_card(), Hc, np.random.default_rng(31), [(finger, SKIN)])
    res, occ, again = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0  # the finger alone would flag the honest photo
    assert occ is not None and 0.01 < occ.share <= MAX_SHARE and occ.beyond > 0.0
    assert occ.note.startswith("something running on beyond the package's edge")
    # the cells under the finger (canonical frame) are the ones left out, and hardly any others
    under = cv2.warpPerspective(finger, Hc, (S, S), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    G = S // CELL
    under_cells = cv2.resize(under.astype(np.float32), (G, G), interpolation=cv2.INTER_AREA) > 0.5
    assert occ.cells[under_cells & res.mask].mean() > 0.9
    far = ~cv2.dilate(under_cells.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert occ.cells[far].mean() < 0.02
    assert max(again.channels[:2]) < 0.3 * max(res.channels[:2])  # and the photo compares as authentic print


def test_print_up_to_the_edge_of_the_package_is_not_an_occluder(bank_and_stats):
    Hc = _placement()
    photo = _photo(_printed_band(_card()), Hc, np.random.default_rng(32))
    res, occ, _ = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0 and occ is None


def test_print_running_on_beyond_the_frame_is_not_an_occluder(bank_and_stats):
    # the canonical frame is cut around the product's keypoints: a plain part of the package without keypoints
    # can lie beyond it (here the card goes on 12% further right, and a printed band runs on to its edge)
    wide = np.full((S, int(S * 1.12), 3), 232, np.uint8)
    wide[:, :S] = _printed_band(_card(), text=False)
    wide[200:271, S:] = SKIN
    Hc = _placement()
    photo = _photo(np.zeros((S, S, 3), np.uint8), Hc, np.random.default_rng(36))
    warped = cv2.warpPerspective(wide, Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)
    on_card = cv2.warpPerspective(np.ones(wide.shape[:2], np.uint8), Hc, (W, H_IMG), flags=cv2.INTER_NEAREST) > 0
    photo[on_card] = _camera(warped, np.random.default_rng(37))[on_card]
    res, occ, _ = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0 and occ is None


def _on_backdrop(photo: np.ndarray, Hc: np.ndarray, colour: tuple[int, int, int], seed: int) -> np.ndarray:
    """``photo`` with everything around the card replaced by a plain backdrop of ``colour``."""
    card = cv2.warpPerspective(np.ones((S, S), np.uint8), Hc, (W, H_IMG), flags=cv2.INTER_NEAREST) > 0
    plain = _camera(np.full(photo.shape, colour, np.uint8), np.random.default_rng(seed))
    out = photo.copy()
    out[~card] = plain[~card]
    return out


@pytest.mark.parametrize("edit", ["band", "top_strip", "corner"])
def test_an_edit_at_the_edge_in_the_colour_of_the_backdrop_is_not_an_occluder(bank_and_stats, edit):
    # the edit's colour runs on beyond the package here too, but all round it: the backdrop, not a thing on top
    Hc = _placement()
    card, colour = _card(), SKIN
    if edit == "band":
        card = _printed_band(card, text=False)
    elif edit == "top_strip":
        colour = (30, 120, 60)
        card[:50, 150:330] = colour
    else:
        colour = (200, 30, 40)
        cv2.circle(card, (S - 1, S - 1), 70, colour, -1)
    photo = _on_backdrop(_photo(card, Hc, np.random.default_rng(38)), Hc, colour, 39)
    res, occ, _ = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0 and occ is None


def test_find_occluder_refuses_a_photo_that_is_not_uint8(bank_and_stats):
    Hc = _placement()
    photo = _photo(_card(), Hc, np.random.default_rng(31), [(_finger(Hc), SKIN)])
    heat = np.zeros((S // CELL, S // CELL), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        find_occluder(photo.astype(np.float32) / 255.0, Hc, S, heat, np.ones_like(heat, bool), cell=CELL)


def test_a_sticker_wholly_inside_the_package_is_not_an_occluder(bank_and_stats):
    Hc = _placement()
    (cx, cy), = _to_photo(Hc, [(260.0, 300.0)])
    sticker = np.zeros((H_IMG, W), np.uint8)
    cv2.rectangle(sticker, (int(cx - 35), int(cy - 20)), (int(cx + 35), int(cy + 20)), 1, -1)
    photo = _photo(_card(), Hc, np.random.default_rng(33), [(sticker, (255, 230, 60))])
    res, occ, _ = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0 and occ is None  # nothing tells it from a printed mark: a person decides


def test_a_printed_edit_beside_a_finger_still_counts(bank_and_stats):
    Hc = _placement()
    edited = _card()
    cv2.circle(edited, (110 * 2, 60 * 2), 52, (40, 160, 60), -1)  # the red logo recoloured green
    photo = _photo(edited, Hc, np.random.default_rng(34), [(_finger(Hc), SKIN)])
    clean = _photo(_card(), Hc, np.random.default_rng(34), [(_finger(Hc), SKIN)])
    _, occ, again = _judge(bank_and_stats, photo, Hc)
    _, occ_clean, again_clean = _judge(bank_and_stats, clean, Hc)
    assert occ is not None and occ_clean is not None
    logo = np.zeros((S // CELL, S // CELL), bool)
    logo[(120 - 52) // CELL:(120 + 52) // CELL, (220 - 52) // CELL:(220 + 52) // CELL] = True
    assert not occ.cells[logo].any()  # the recoloured logo is not left out with the finger
    assert again.channels[1] > 4 * max(again_clean.channels[1], 1.0)


def test_an_occluder_covering_much_of_the_package_is_not_trusted(bank_and_stats):
    Hc = _placement()
    (x0, y0), (x1, y1) = _to_photo(Hc, [(120.0, -100.0), (560.0, 420.0)])
    hand = np.zeros((H_IMG, W), np.uint8)
    cv2.rectangle(hand, (int(min(x0, x1)), int(min(y0, y1))), (int(max(x0, x1)), int(max(y0, y1))), 1, -1)
    photo = _photo(_card(), Hc, np.random.default_rng(35), [(hand, SKIN)])
    res, occ, _ = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0 and occ is None


@pytest.fixture(scope="module")
def occluded_pairs(small_dataset):
    """Seeded listing photos of the small data set's first products, each with a finger, a price sticker or an
    object over the package's edge (the synthetic photographer's occluders): (design, authentic photo, photo of
    the same package with its logo recoloured, taken with the same occluder)."""
    from brandguard.synth import render_package
    from brandguard.synth.dataset import RENDER_SCALE, SIZES, _products
    from brandguard.synth.edits import EDITS
    from brandguard.synth.photo_models import Shot, _shoot

    shot = Shot(long_side=(640, 800), aspects=(4 / 3, 3 / 4), coverage=(0.25, 0.4), max_rotation=10.0,
                perspective=0.05, centred=False, backgrounds=("granite", "carpet", "room"), occlusion=1.0,
                jpeg=(85, 92))
    known, _ = _products("demo", 0, SIZES["small"])
    out = []
    for i, d in enumerate(known[:6]):
        auth, _ = _shoot(render_package(d, RENDER_SCALE), np.random.default_rng(500 + i), shot)
        fake_design = EDITS["recolored_logo"](d, "gross", np.random.default_rng(600 + i))
        fake, _ = _shoot(render_package(fake_design, RENDER_SCALE), np.random.default_rng(500 + i), shot)
        out.append((d, auth, fake))
    return out


def test_the_detector_leaves_an_occluder_out_and_still_flags_a_recoloured_logo(detector, occluded_pairs):
    photos = [w[1] for w in occluded_pairs] + [w[2] for w in occluded_pairs]
    on = detector.predict_batch(photos)
    off = predict_with(detector, photos, {"compare.occluders": False})
    n = len(occluded_pairs)
    for (d, _, _), p in zip(occluded_pairs, on[:n]):
        assert (p.brand, p.product) == (d.brand, d.product_slug)
    found = [any(note.startswith("something running on beyond") for note in p.notes) for p in on[:n]]
    assert sum(found) >= n // 3
    assert all(p.raw_score <= q.raw_score + 1e-6 for p, q in zip(on, off))  # it only ever takes evidence away
    assert sum(q.raw_score - p.raw_score for p, q in zip(on[:n], off[:n])) > 1.0  # ... from honest photos
    # a recoloured logo beside the same occluder still counts: each counterfeit scores about as high as its
    # authentic twin or higher, and more of them stand out of it once the occluder no longer does
    assert all(f.raw_score >= a.raw_score - 0.05 for a, f in zip(on[:n], on[n:]))
    apart = [sum(f.raw_score > a.raw_score + 0.3 for a, f in zip(r[:n], r[n:])) for r in (on, off)]
    assert apart[0] > apart[1]


def _cut_right(photo: np.ndarray, Hc: np.ndarray, sliver: int) -> np.ndarray:
    """``photo`` cut ``sliver`` pixels beyond the card's right edge (a package at the edge of the photo)."""
    right = int(np.ceil(_to_photo(Hc, [(S, 0.0), (S, S)])[:, 0].max()))
    return np.ascontiguousarray(photo[:, :right + sliver])


@pytest.mark.parametrize("sliver", [3, 8])
def test_a_pen_running_out_of_the_photo_over_the_edge_is_an_occluder(bank_and_stats, sliver):
    """The package lies at the edge of the photo: a pen over its edge runs out of the photo before it can go
    on beyond the package, and is still left out."""
    Hc = _placement(angle=0.0)
    photo = _cut_right(_photo(_card(), Hc, np.random.default_rng(41), [(_finger(Hc, 24.0), (200, 40, 160))]), Hc, sliver)
    res, occ, again = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0
    assert occ is not None and occ.share <= MAX_SHARE
    assert max(again.channels[:2]) < 0.3 * max(res.channels[:2])


@pytest.mark.parametrize("sliver", [0, 8])
def test_print_up_to_the_edge_of_a_package_at_the_edge_of_the_photo_is_not_an_occluder(bank_and_stats, sliver):
    """Print stops at the package's edge, which the photo shows (a sliver of table beyond it) or where the
    photo ends: nothing runs on beyond an edge the photo shows, so it is compared. (Cut 3 pixels beyond the
    edge, about 2 pixels of the occluder search, it cannot be told from a thing running out of the photo:
    README, "What it cannot tell".)"""
    Hc = _placement(angle=0.0)
    photo = _cut_right(_photo(_printed_band(_card()), Hc, np.random.default_rng(42)), Hc, sliver)
    res, occ, _ = _judge(bank_and_stats, photo, Hc)
    assert max(res.channels[:2]) > 8.0 and occ is None
