"""Resolution follows the product, not the photo: large and wide photos, several units, tiny products."""

from __future__ import annotations

import numpy as np
import pytest

from brandguard.images import load_image


def _canvas(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plain, slightly noisy background of a listing photo (seeded)."""
    base = rng.integers(150, 240, 3)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def authentic_case(detector, labels):
    """An authentic photo of the small data set that the detector calls authentic as it is, and its
    prediction."""
    items = [i for i in labels if i.label == "authentic"][:6]
    preds = detector.predict_batch([str(i.path) for i in items])
    cases = [(i, p) for i, p in zip(items, preds) if p.verdict == "authentic"]
    assert cases, "no authentic photo of the small data set is called authentic"
    return cases[0]


def test_a_product_pasted_unchanged_into_a_wide_photo_is_authentic_at_full_detail(detector, authentic_case, rng):
    """An authentic product at native resolution in a 4x wider listing photo: the working copy holds it at a
    quarter of its size, the comparison must not."""
    item, alone = authentic_case
    photo = load_image(item.path)
    h, w = photo.shape[:2]
    wide = _canvas(rng, h, 4 * max(h, w))
    x = wide.shape[1] - w - 37
    wide[:, x:x + w] = photo
    p = detector.predict(wide)
    assert p.brand == item.brand and p.product == item.product
    assert p.verdict == "authentic", (p.verdict, p.score, p.notes)
    # compared at the product's own detail, not at the working copy's (a quarter of it)
    assert p.product_side == pytest.approx(alone.product_side, rel=0.1)
    assert abs(p.raw_score - alone.raw_score) < 0.75
    # the heatmap and outline stay in working-copy pixels
    assert p.heatmap is not None and max(p.heatmap.shape) == detector.config.localization.max_side
    assert p.quad is not None and p.quad[:, 0].min() >= x * p.heatmap.shape[1] / wide.shape[1] - 20


def test_two_units_side_by_side_are_two_instances(detector, authentic_case, rng):
    item, alone = authentic_case
    assert alone.instances == 1
    photo = load_image(item.path)
    h, w = photo.shape[:2]
    two = _canvas(rng, h, 2 * w + 40)
    two[:, :w] = photo
    two[:, w + 40:] = photo
    p = detector.predict(two)
    assert p.brand == item.brand and p.instances == 2
    assert p.verdict in ("authentic", "suspicious")  # never a takedown of two authentic units
    assert p.heatmap is not None and p.heatmap.shape == load_image(two, max_side=640).shape[:2]


def test_a_product_too_small_to_judge_gets_a_note_and_no_takedown(detector, labels):
    """With the size rules raised above every product, a takedown becomes a review with a note, and a
    far-too-small product is unknown (the rule, independent of the sizes the small data set holds)."""
    import copy

    from brandguard.calibration import Thresholds
    from brandguard.detector import Detector

    index = copy.copy(detector.index)  # its own thresholds: every compared photo would be a takedown
    index.thresholds = Thresholds.from_dict({**detector.index.thresholds.to_dict(), "review": 0.0, "takedown": 0.0})
    strict = Detector(index, index.embedder)
    fakes = [i for i in labels if i.label == "counterfeit"]
    taken = []
    for start in range(0, len(fakes), 4):  # a few at a time: one taken-down counterfeit is enough
        chunk = fakes[start:start + 4]
        taken = [(i, p) for i, p in zip(chunk, strict.predict_batch([str(i.path) for i in chunk]))
                 if p.verdict == "counterfeit"]
        if taken:
            break
    assert taken, "no counterfeit of the small data set is compared"
    item, p = taken[0]
    assert p.product_side >= detector.config.localization.min_product_side
    assert not any("too small" in n for n in p.notes)
    small = Detector(index, index.embedder)
    small.config = detector.config.with_overrides({"localization.min_product_side": 100_000})
    q = small.predict(str(item.path))
    assert q.verdict == "suspicious" and q.score == pytest.approx(p.score)
    assert any(n.startswith(f"product only {q.product_side:.0f} px: too small to judge") for n in q.notes)
    small.config = detector.config.with_overrides({"localization.min_product_side": 100_000,
                                                   "localization.unknown_product_side": 100_000})
    u = small.predict(str(item.path))
    assert u.verdict == "unknown" and u.score == 0.0 and any("far too small" in n for n in u.notes)


def test_load_photo_keeps_the_working_copy_of_load_image_and_the_full_resolution():
    from brandguard.images import load_photo

    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (300, 2400, 3), dtype=np.uint8)
    p = load_photo(wide, max_side=640, full_side=4096)
    assert np.array_equal(p.image, load_image(wide, max_side=640)) and p.full.shape == wide.shape
    assert p.scale == pytest.approx(2400 / 640)
    small = load_photo(wide[:, :600], max_side=640, full_side=4096)
    assert small.full is small.image and small.scale == 1.0  # one decode, the very same pixels
    capped = load_photo(wide, max_side=640, full_side=1200)
    assert capped.full.shape[:2] == (150, 1200)


def test_the_aligned_crop_is_taken_at_full_detail():
    """The product is 640 px in a 2560-px photo (160 px in the working copy): its crop must match an
    area-averaged reduction of the full photo, not an upsampled working copy; a photo no larger than the
    working copy is cropped as before."""
    import cv2

    from brandguard.localization import crop_canonical, resize_transform, warp_to_canonical

    rng = np.random.default_rng(5)
    fine = cv2.GaussianBlur(rng.integers(0, 256, (640, 2560, 3), dtype=np.uint8), (0, 0), 2.0)
    work = load_image(fine, max_side=640)
    S, side = 384, 640  # the product: the left 640 px of the full photo
    H_full = resize_transform(side / S, side / S)  # canonical -> full pixels (pixel centres at integers)
    H = np.linalg.inv(resize_transform(fine.shape[1] / work.shape[1], fine.shape[0] / work.shape[0])) @ H_full
    truth = cv2.resize(fine[:side, :side], (S, S), interpolation=cv2.INTER_AREA).astype(float)
    full_crop, valid = crop_canonical(work, fine, H, S)
    old_crop, _ = warp_to_canonical(work, H, S)
    err_full = np.abs(full_crop.astype(float) - truth)[8:-8, 8:-8].mean()
    err_old = np.abs(old_crop.astype(float) - truth)[8:-8, 8:-8].mean()
    assert valid.all() and err_full < 0.5 * err_old, (err_full, err_old)
    same, _ = crop_canonical(work, work, H, S)
    assert np.array_equal(same, old_crop)


def test_support_mask_keeps_what_the_matches_vouch_for():
    """Only the hull of the inlier keypoints (grown by the margin) is compared; too few or clustered matches
    leave the whole frame compared, and margin 0 switches the restriction off."""
    from brandguard.localization import support_mask

    rng = np.random.default_rng(0)
    left = np.c_[rng.uniform(20, 180, 60), rng.uniform(20, 360, 60)]  # matches on the left half of a 384 frame
    m = support_mask(left, 384, margin=24)
    assert m is not None and m.shape == (384, 384)
    assert m[200, 100] and not m[200, 330]  # inside the hull compared, the far right (curving away) not
    assert m[200, 195]  # grown by the margin
    assert support_mask(left[:5], 384, margin=24) is None  # too few matches to bound anything
    assert support_mask(left, 384, margin=0) is None
    assert support_mask(np.c_[rng.uniform(100, 110, 40), rng.uniform(100, 110, 40)], 384, margin=8) is None


def test_sensor_noise_is_measured_where_it_is_white_and_scaled_into_the_frame():
    """A 96-px product with noise of 8 grey levels, enlarged 4 times into the 384-px frame: its grains are 4
    px wide there, which a measure on the crop misses; the measure on the photo, scaled by the enlargement,
    sizes the blur (brandguard.mismatch.noise_blur) to them. A product shown larger than the frame keeps its
    photo's level."""
    import cv2

    from brandguard.localization import crop_canonical, estimate_noise, resize_transform, source_noise
    from brandguard.mismatch import noise_blur

    rng = np.random.default_rng(9)
    S = 384
    photo = np.full((200, 200, 3), 150, np.uint8)
    cv2.putText(photo, "LOGO", (55, 105), cv2.FONT_HERSHEY_DUPLEX, 1.0, (20, 20, 20), 2)
    noisy = np.clip(photo + rng.normal(0, 8.0, photo.shape[:2])[..., None], 0, 255).astype(np.uint8)
    H = np.array([[1.0, 0.0, 52.0], [0.0, 1.0, 52.0], [0.0, 0.0, 1.0]]) @ resize_transform(96 / S, 96 / S)
    crop, valid, noise = crop_canonical(noisy, noisy, H, S, with_noise=True)
    assert np.array_equal(crop, crop_canonical(noisy, noisy, H, S)[0])
    assert abs(noise / 4.0 - 8.0) < 1.6  # the photo's level, times the enlargement
    assert estimate_noise(crop, valid) < 0.5 * noise  # what the crop alone would have said
    assert noise_blur(noise) > 2 * noise_blur(estimate_noise(crop, valid))
    big = cv2.resize(noisy, (800, 800), interpolation=cv2.INTER_NEAREST)  # shown larger than the frame
    H_big = resize_transform(800 / S, 800 / S)
    assert abs(source_noise(big, H_big, S, scales=(1,)) - estimate_noise(big)) < 1e-6


def test_grain_that_jpeg_and_sharpening_leave_is_measured_at_the_scale_it_has():
    """Noise correlated over a few pixels (ISO noise under JPEG compression) reads as almost none at pixel
    scale, where JPEG flattens its 8x8 blocks; measured at 2 pixels too where the references show no print
    (source_noise's NOISE_SCALES, flat_print), it gets a blur that cleans it, wherever the product starts.
    White noise reads about the same at both scales; a clean package, even one printed all over with small
    text, reads as none (averaged print would read as strong noise: it is left out; print finer than the
    structure map's blur still counts as flat, see the README's limits)."""
    import cv2

    from brandguard.localization import NOISE_SCALES, flat_print, resize_transform, source_noise
    from brandguard.mismatch import noise_blur, structure_map

    assert NOISE_SCALES == (1, 2)
    rng = np.random.default_rng(9)
    S, side = 384, 120  # the product enlarged 3.2 times into the frame

    def at(offset: int) -> np.ndarray:  # canonical -> photo, the product's box starting at `offset`
        return np.array([[1.0, 0, 20 + offset], [0, 1.0, 20 + offset], [0, 0, 1.0]]) @ resize_transform(side / S, side / S)

    card = np.full((side, side, 3), 150, np.uint8)
    cv2.putText(card, "LOGO", (22, 70), cv2.FONT_HERSHEY_DUPLEX, 0.9, (20, 20, 20), 2)
    ref = structure_map(cv2.resize(card, (S, S), interpolation=cv2.INTER_LINEAR))
    flat = flat_print(ref[None])
    assert 0.3 < flat.mean() < 0.95  # around the word: print; the rest of the card: flat
    def grainy(offset: int) -> np.ndarray:  # the card at `offset`, then grain, then JPEG's 8x8 grid
        photo = np.full((200, 200, 3), 150, np.uint8)
        photo[20 + offset:20 + offset + side, 20 + offset:20 + offset + side] = card
        noisy = np.clip(photo + np.random.default_rng(offset).normal(0, 10.0, photo.shape), 0, 255)
        _, buf = cv2.imencode(".jpg", noisy.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 40])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    pixel = source_noise(grainy(0), at(0), S, flat, scales=(1,))
    both = [source_noise(grainy(o), at(o), S, flat) for o in range(4)]
    assert max(both) < 1.25 * min(both)  # wherever the product starts on JPEG's 8x8 grid
    assert noise_blur(pixel) < 1.0 < noise_blur(min(both))  # the grain needs a blur the pixel scale misses
    assert source_noise(grainy(0), at(0), S) == pytest.approx(pixel)  # no flat print given: the pixel scale only
    photo = np.full((200, 200, 3), 150, np.uint8)
    photo[20:20 + side, 20:20 + side] = card

    white = np.clip(photo + rng.normal(0, 6.0, photo.shape[:2])[..., None], 0, 255).astype(np.uint8)
    for odd in (0, 1):  # an odd-sized region too
        H = at(0) @ resize_transform((side + odd) / side, (side + odd) / side)
        assert source_noise(white, H, S, flat) == pytest.approx(source_noise(white, H, S, flat, scales=(1,)), rel=0.15)
    assert source_noise(photo, at(0), S, flat) < 1.0  # clean

    # a clean package printed all over with small text: no flat print to measure on, no noise, no blur
    dense = np.full((side, side, 3), 235, np.uint8)
    for y in range(6, side, 7):
        cv2.putText(dense, "ingredients sugar milk", (1, y), cv2.FONT_HERSHEY_PLAIN, 0.45, (30, 30, 30), 1)
    dense_flat = flat_print(structure_map(cv2.resize(dense, (S, S), interpolation=cv2.INTER_LINEAR))[None])
    clean = np.full((200, 200, 3), 235, np.uint8)
    clean[20:20 + side, 20:20 + side] = dense
    assert noise_blur(source_noise(clean, at(0), S, dense_flat)) == 0.0
