"""Keypoints a listing photo keeps: a background texture (a checkerboard, tiles, a printed fabric) must not
take SIFT's whole budget, or the product is never found."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import brandguard.localization as loc
from brandguard import accel
from brandguard.localization import detect_keypoints, repeated_keypoints


def _checkerboard(shape: tuple[int, int], square: int) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.repeat((((yy // square) + (xx // square)) % 2 * 215 + 20).astype(np.uint8)[..., None], 3, axis=2)


def _on_checkerboard(photo: np.ndarray, quad: np.ndarray, square: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The photo with everything outside ``quad`` (the product's outline) replaced by a checkerboard."""
    inside = np.zeros(photo.shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, np.round(quad).astype(np.int32), 1)
    out = np.where(inside[..., None].astype(bool), photo, _checkerboard(photo.shape[:2], square))
    return np.ascontiguousarray(out), inside.astype(bool)


def test_repeated_keypoints_are_the_texture_not_a_few_units():
    rng = np.random.default_rng(0)
    texture = np.tile(rng.normal(size=(1, 128)), (40, 1)) + rng.normal(scale=0.005, size=(40, 128))
    units = np.repeat(rng.normal(size=(30, 128)), 3, axis=0)  # 30 keypoints of a product, 3 units of it
    desc = np.abs(np.vstack([texture, units])).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    rep = repeated_keypoints(desc)
    assert rep[:40].all() and not rep[40:].any()
    assert not repeated_keypoints(desc[:20]).any()  # 19 look-alikes: under the default count of 24


@pytest.fixture(scope="module")
def on_checkerboard(detector, labels):
    """Authentic listings (found on their own photo) whose background is replaced by a checkerboard."""
    from brandguard.images import load_image

    out = []
    for item in [i for i in labels if i.label == "authentic"][:6]:
        p = detector.predict(str(item.path))
        if p.verdict == "unknown" or p.quad is None:
            continue
        photo = load_image(str(item.path))
        scale = photo.shape[1] / max(1, p.heatmap.shape[1]) if p.heatmap is not None else 1.0
        img, inside = _on_checkerboard(photo, p.quad * scale)
        if inside.mean() < 0.6:  # enough background for the texture to matter
            out.append((item, img, inside))
    assert out, "no authentic listing of the small data set shows enough background"
    return out


def test_a_checkerboard_background_leaves_the_product_its_keypoints(on_checkerboard, monkeypatch):
    _, img, inside = on_checkerboard[0]

    def share_on_product() -> float:
        kp = detect_keypoints(img, 512, 800)
        px = np.clip(np.round(kp.xy).astype(int), 0, [img.shape[1] - 1, img.shape[0] - 1])
        return float(inside[px[:, 1], px[:, 0]].mean())

    kept = share_on_product()
    monkeypatch.setattr(loc, "REPEAT_SHARE", 2.0)  # SIFT's strongest 800 as they come
    plain = share_on_product()
    assert plain < 0.1 and kept > 0.4, (plain, kept)  # measured: 0.7% and 54%


def test_a_product_on_a_checkerboard_background_is_found(detector, on_checkerboard, monkeypatch):
    found = [detector.predict(img) for _, img, _ in on_checkerboard]
    right = [p.brand == item.brand and p.product == item.product for (item, _, _), p in zip(on_checkerboard, found)]
    assert sum(right) >= max(1, len(right) - 1), [p.verdict for p in found]
    monkeypatch.setattr(loc, "REPEAT_SHARE", 2.0)
    assert all(detector.predict(img).verdict == "unknown" for _, img, _ in on_checkerboard[:2])


def _clutter(shape: tuple[int, int], seed: int, count: int = 6000) -> np.ndarray:
    """A busy background that does not repeat: random high-contrast rectangles and discs (a cluttered shelf,
    a desk), so SIFT's strongest keypoints are spread over it rather than copies of one texture."""
    rng = np.random.default_rng(seed)
    out = np.full((*shape, 3), 128, np.uint8)
    for _ in range(count):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0]))
        r = int(rng.integers(3, 14))
        if rng.random() < 0.5:
            cv2.rectangle(out, (x, y), (x + r, y + int(rng.integers(3, 14))), c, -1)
        else:
            cv2.circle(out, (x, y), r, c, -1)
    return out


@pytest.fixture(scope="module")
def on_clutter(detector, labels):
    """Authentic listings shrunk to half size in the middle of a cluttered background."""
    from brandguard.images import load_image

    out = []
    for k, item in enumerate([i for i in labels if i.label == "authentic"][:6]):
        photo = load_image(str(item.path))
        h, w = photo.shape[:2]
        img = _clutter((h, w), k)
        small = cv2.resize(photo, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        img[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = small
        out.append((item, img))
    return out


def test_a_product_on_a_cluttered_background_is_searched_again_with_more_keypoints(detector, on_clutter,
                                                                                    monkeypatch):
    from brandguard.detector import Detector

    need = detector.index.thresholds.min_inliers
    found = [detector.predict(img) for _, img in on_clutter]
    right = [p.product == item.product and p.verdict != "unknown" for (item, _), p in zip(on_clutter, found)]
    assert all(right), [(p.verdict, p.inliers) for p in found]
    monkeypatch.setattr(Detector, "_search_more_keypoints", lambda self, ok, aligns, prepared: aligns)
    budget = [detector.predict(img) for _, img in on_clutter]
    # SIFT's 800 strongest, mostly on the clutter: fewer verified matches than the rule needs on some photos
    # (measured: one of the six, 29 -> 41 matches with the second search; 27 of 36 start it)
    assert sum(p.inliers < need for p in budget) >= 1 and all(p.inliers >= need for p in found), \
        ([p.inliers for p in budget], [p.inliers for p in found])


def test_a_photo_whose_product_is_found_is_detected_once(detector, labels, monkeypatch):

    calls = []
    real = accel.detect_keypoints

    def counting(image, side, n):
        calls.append(n)
        return real(image, side, n)

    monkeypatch.setattr(accel, "detect_keypoints", counting)
    item = next(i for i in labels if i.label == "authentic")
    p = detector.predict(str(item.path))
    assert p.verdict != "unknown" and calls == [detector.config.localization.query_keypoints]


def _fake_keypoints(n: int) -> loc.Keypoints:
    rng = np.random.default_rng(n)
    desc = np.abs(rng.normal(size=(n, 128))).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return loc.Keypoints(rng.uniform(0, 500, (n, 2)).astype(np.float32), desc, np.ones(n, np.float32))


@pytest.mark.parametrize("first, second_product, searched, accepted", [
    (30, 0, True, True),    # near product 0 (30 of 36: within a quarter of the rule), verified on the second search
    (30, 1, True, False),   # the second search verifies another product: a look-alike's chance matches, refused
    (20, 0, False, False),  # too far from the rule to search again (look-alikes went 19-25 -> 39-45 in a review)
])
def test_the_second_search_only_confirms_the_product_the_first_came_close_to(
        detector, monkeypatch, first, second_product, searched, accepted):
    from brandguard.localization import Alignment

    need = detector.index.thresholds.min_inliers
    assert need == 36  # the case numbers above are for the default rule
    near = Alignment(0, first, np.eye(3), 0.5)
    verified = Alignment(second_product, need + 5, np.eye(3), 0.6)
    calls = []
    monkeypatch.setattr(accel, "detect_keypoints", lambda image, side, n: calls.append(n) or _fake_keypoints(n))
    monkeypatch.setattr(detector.index, "localize_instances", lambda kps, shapes, k: [([verified], verified)])
    monkeypatch.setattr(detector, "_refine", lambda prepared, acc, best: (acc, best))
    n = detector.config.localization.query_keypoints
    prepared = [(np.zeros((480, 640, 3), np.uint8), _fake_keypoints(n), None)]
    out = detector._search_more_keypoints([0], [([], near)], prepared)
    assert calls == ([2 * n] if searched else [])
    assert out[0] == (([verified], verified) if accepted else ([], near))
    # a photo whose every keypoint was kept (the budget did not run out) is never searched again
    calls.clear()
    few = [(prepared[0][0], _fake_keypoints(n - 1), None)]
    assert detector._search_more_keypoints([0], [([], near)], few) == [([], near)] and calls == []


def test_ransac_finds_a_homography_among_nine_outliers_in_ten():
    """A listing photo's tentative matches with a product can be only about 10% inliers (clutter, a small
    product, a second search with 1,600 keypoints). RANSAC must then still draw a sample of four inliers:
    with 2,000 samples it did for 19 of these 40 seeded match sets, with today's budget for all."""
    from brandguard.localization import estimate_homography

    H = np.array([[0.9, 0.12, 40.0], [-0.08, 1.1, 25.0], [2e-4, -1e-4, 1.0]])
    found = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        src = rng.uniform(0, 384, (1000, 2))
        p = np.c_[src, np.ones(len(src))] @ H.T
        dst = p[:, :2] / p[:, 2:] + rng.normal(0, 0.7, (len(src), 2))
        inlier = rng.random(len(src)) < 0.10
        dst[~inlier] = rng.uniform(0, 500, ((~inlier).sum(), 2))
        est, mask = estimate_homography(src, dst, 4.0)
        found += est is not None and (mask & inlier).sum() >= 0.9 * inlier.sum() and (mask & ~inlier).sum() < 20
    assert found >= 38


def test_a_product_outvoted_by_chance_matches_of_another_is_still_verified(small_index):
    """Heavy sensor noise matches the dots of a dotted logo all over a photo: that product leads the vote with
    chance matches, and the product the photo shows, with far fewer votes, must still be verified whenever its
    votes could reach the fewest verified matches that identify a product (a weak match's 6 here)."""
    import dataclasses

    from brandguard.localization import Keypoints

    index = small_index
    a, b = index.products[0], index.products[1]
    rng = np.random.default_rng(5)
    shape = (480, 640, 3)
    # product b, seen through a homography that puts its frame in the middle of the photo: 9 true matches,
    # fewer than the rule (12) but enough for a weak match (6)
    H = np.array([[0.8, 0.1, 150.0], [-0.05, 0.85, 60.0], [1e-4, 5e-5, 1.0]])
    rows_b = b.kp_start + rng.choice(len(b.kp_xy), 9, replace=False)
    xy_b = cv2.perspectiveTransform(index._local_xy[rows_b][None].astype(np.float64), H)[0]
    # product a: 120 chance matches scattered over the photo, no geometry in common
    rows_a = a.kp_start + rng.choice(len(a.kp_xy), 120, replace=True)
    xy_a = rng.uniform([0, 0], [640, 480], (120, 2))
    xy = np.vstack([xy_b, xy_a]).astype(np.float32)
    kp = Keypoints(xy, np.zeros((len(xy), 128), np.float32), np.ones(len(xy), np.float32))
    idx = np.r_[rows_b, rows_a][:, None].astype(np.int64)
    pid = index._local_pid[idx]
    passed = np.ones(len(xy), bool)

    def verify(**rules):
        index.thresholds = dataclasses.replace(saved, **rules)
        return index._verify(kp, shape, pid, idx, passed, passed[:, None], passed, 4)

    saved = index.thresholds
    try:
        found = verify(min_inliers=12, weak_inliers=6, weak_similarity=0.5)
        assert found is not None and found.product_id == 1 and found.sane and found.inliers == 9
        # without weak matches 9 votes cannot reach the rule: not worth a RANSAC behind a far stronger leader
        found = verify(min_inliers=12, weak_inliers=0, weak_similarity=None)
        assert found is None or found.product_id == 0
    finally:
        index.thresholds = saved
