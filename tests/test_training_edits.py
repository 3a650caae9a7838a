"""brandguard.training.edits: counterfeit-style edits of canonical-frame photos, made on the fly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from brandguard.errors import DataError
from brandguard.training.edits import EDIT_NAMES, STRENGTHS, PhotoEdit, apply_photo_edit, random_photo_edit

S = 192
BORDER = 10
LOGO_RGB = (200, 30, 40)


def _crop(size: int = S, text: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Light-blue packaging with a red asymmetric logo, a small dark mark and a black text row, plus noise."""
    f = size / S
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (170, 200, 235)
    # an "F": no mirror symmetry, about a quarter of the frame
    mark = np.array(
        [[0, 0], [52, 0], [52, 11], [16, 11], [16, 22], [41, 22], [41, 33], [16, 33], [16, 52], [0, 52]]
    )
    cv2.fillPoly(img, [np.round((mark + (42, 34)) * f).astype(np.int32)], LOGO_RGB, cv2.LINE_AA)
    cv2.circle(img, (round(140 * f), round(60 * f)), round(12 * f), (20, 40, 110), -1, cv2.LINE_AA)
    if text:
        cv2.putText(
            img,
            "BRANDX",
            (round(36 * f), round(150 * f)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.8 * f,
            (0, 0, 0),
            max(1, round(2 * f)),
            cv2.LINE_AA,
        )
    noise = np.random.default_rng(seed).normal(0, 2.0, img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    valid = np.zeros((size, size), bool)
    b = round(BORDER * f)
    valid[b:-b, b:-b] = True
    img[~valid] = (90, 90, 90)  # what a warp puts outside the photo: must stay as it is
    return img, valid


CROP, VALID = _crop()
# another "product": rotated, other colours, the border reflected as a warp does
DONOR = np.ascontiguousarray(np.rot90(_crop(seed=1)[0])[BORDER:-BORDER, BORDER:-BORDER, ::-1])
DONOR = cv2.copyMakeBorder(DONOR, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_REFLECT)


def _edit(name: str, strength: str, seed: int = 0, donor: np.ndarray | None = None) -> PhotoEdit:
    return apply_photo_edit(CROP, VALID, name, strength, np.random.default_rng(seed), donor)


def _energy(e: PhotoEdit) -> float:
    return float(np.abs(e.image.astype(np.int16) - CROP).sum())


def test_names_match_the_design_edits() -> None:
    from brandguard.synth import EDITS

    assert EDIT_NAMES == tuple(EDITS)  # the demo generator's edits, same names and order
    assert STRENGTHS == ("subtle", "gross")


@pytest.mark.parametrize("strength", STRENGTHS)
@pytest.mark.parametrize("name", EDIT_NAMES)
def test_every_edit_changes_only_what_its_mask_says(name: str, strength: str) -> None:
    e = _edit(name, strength, donor=DONOR)
    assert (e.name, e.strength) == (name, strength)
    assert e.image.shape == CROP.shape and e.image.dtype == np.uint8
    assert e.mask.shape == VALID.shape and e.mask.dtype == bool
    assert e.mask.sum() >= 20, "the edit changed (almost) nothing"
    assert not (e.mask & ~VALID).any(), "the mask leaves the valid area"
    assert not np.array_equal(e.image, CROP)
    assert np.array_equal(e.image[~e.mask], CROP[~e.mask]), "pixels outside the mask changed"
    # the mask is where the change is visible, not the whole box
    assert (np.abs(e.image.astype(np.int16) - CROP).max(2)[e.mask] > 12).mean() > 0.2
    again = _edit(name, strength, donor=DONOR)
    assert np.array_equal(again.image, e.image) and np.array_equal(again.mask, e.mask), "not deterministic"


@pytest.mark.parametrize(
    "name", ["recolored_logo", "moved_logo", "packaging_color", "extra_mark", "missing_part"]
)
def test_other_seeds_give_other_edits(name: str) -> None:
    images = [_edit(name, "gross", seed).image for seed in range(4)]
    assert any(not np.array_equal(images[0], im) for im in images[1:])


@pytest.mark.parametrize("name", ["recolored_logo", "packaging_color", "extra_mark", "missing_part"])
def test_gross_changes_more_than_subtle(name: str) -> None:
    seeds = range(6)
    subtle = [_edit(name, "subtle", s) for s in seeds]
    gross = [_edit(name, "gross", s) for s in seeds]
    assert np.mean([_energy(e) for e in gross]) > 1.3 * np.mean([_energy(e) for e in subtle])
    if name in ("extra_mark", "missing_part"):
        assert np.mean([e.mask.sum() for e in gross]) > 1.5 * np.mean([e.mask.sum() for e in subtle])


def test_extra_mark_covers_the_documented_share_of_the_face() -> None:
    for strength, lo, hi in (("subtle", 0.02, 0.07), ("gross", 0.10, 0.24)):
        shares = [_edit("extra_mark", strength, s).mask.sum() / VALID.sum() for s in range(4)]
        assert lo < np.mean(shares) < hi, (strength, shares)


@pytest.mark.parametrize("strength", STRENGTHS)
def test_packaging_color_changes_hue_and_keeps_luminance(strength: str) -> None:
    e = _edit("packaging_color", strength, 3)
    lab0 = cv2.cvtColor(CROP.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[e.mask]
    lab1 = cv2.cvtColor(e.image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[e.mask]
    assert e.mask.sum() > 0.5 * VALID.sum(), "the packaging is most of the face"
    dL = np.abs(lab1[:, 0] - lab0[:, 0]).mean()
    dab = np.hypot(*(lab1[:, 1:] - lab0[:, 1:]).T).mean()
    assert dL < 4.0 and dab > 3 * dL, (dL, dab)
    # the logo's red stays red
    red = (np.abs(CROP.astype(int) - LOGO_RGB).max(2) < 30) & VALID
    assert np.abs(e.image[red].astype(int) - CROP[red]).mean() < 10


@pytest.mark.parametrize("seed", range(3))
def test_mirrored_logo_flips_an_asymmetric_mark(seed: int) -> None:
    crop, valid = _crop(text=False)
    red0 = np.abs(crop.astype(int) - LOGO_RGB).max(2) < 40
    e = apply_photo_edit(crop, valid, "mirrored_logo", "subtle", np.random.default_rng(seed))
    red1 = np.abs(e.image.astype(int) - LOGO_RGB).max(2) < 40
    assert e.mask.sum() > 100
    iou = (red0 & red1).sum() / (red0 | red1).sum()
    assert iou < 0.8, "the mark did not change"
    assert 0.7 < red1.sum() / red0.sum() < 1.3, "a mirror keeps the amount of ink"


def test_lookalike_uses_the_donor() -> None:
    with_donor = _edit("lookalike_logo", "gross", 1, donor=DONOR)
    alone = _edit("lookalike_logo", "gross", 1)
    assert with_donor.mask.any() and alone.mask.any()
    assert not np.array_equal(with_donor.image, alone.image)


def test_random_photo_edit_draws_names_and_strengths() -> None:
    seen = set()
    for seed in range(12):
        e = random_photo_edit(CROP, VALID, np.random.default_rng(seed), names=("extra_mark", "moved_logo"))
        assert e.name in ("extra_mark", "moved_logo") and e.strength in STRENGTHS
        seen.add((e.name, e.strength))
    assert len(seen) >= 3
    a = random_photo_edit(CROP, VALID, np.random.default_rng(5), donor=DONOR)
    b = random_photo_edit(CROP, VALID, np.random.default_rng(5), donor=DONOR)
    assert a.name == b.name and np.array_equal(a.image, b.image)


def test_edit_weights_set_the_odds_of_each_edit() -> None:
    names = ("extra_mark", "moved_logo")
    only = [random_photo_edit(CROP, VALID, np.random.default_rng(s), names=names, weights={"moved_logo": 0}).name
            for s in range(6)]
    assert set(only) == {"extra_mark"}
    draws = [random_photo_edit(CROP, VALID, np.random.default_rng(s), names=names, weights={"extra_mark": 4}).name
             for s in range(40)]
    assert 0.65 < draws.count("extra_mark") / len(draws) < 0.95  # 4:1 odds -> 80 %
    with pytest.raises(DataError, match="unknown edit.*'recolour'.*packaging_color"):
        random_photo_edit(CROP, VALID, np.random.default_rng(0), weights={"recolour": 2})
    with pytest.raises(DataError, match="weight 0"):
        random_photo_edit(CROP, VALID, np.random.default_rng(0), names=names, weights={n: 0 for n in names})


@pytest.mark.parametrize("size", [128, 320])
def test_other_frame_sizes(size: int) -> None:
    crop, valid = _crop(size)
    for name in EDIT_NAMES:
        e = apply_photo_edit(crop, valid, name, "gross", np.random.default_rng(0))
        assert e.mask.any(), name
        assert np.array_equal(e.image[~e.mask], crop[~e.mask])


def test_uniform_crop_does_not_fail() -> None:
    crop = np.full((S, S, 3), 200, np.uint8)
    valid = np.ones((S, S), bool)
    for name in EDIT_NAMES:
        e = apply_photo_edit(crop, valid, name, "subtle", np.random.default_rng(0))
        assert np.array_equal(e.image[~e.mask], crop[~e.mask])
    assert apply_photo_edit(crop, valid, "extra_mark", "gross", np.random.default_rng(0)).mask.any()


def test_bad_name_lists_the_names() -> None:
    with pytest.raises(DataError) as err:
        _edit("recoloured_logo", "subtle")
    assert all(n in str(err.value) for n in EDIT_NAMES)
    with pytest.raises(ValueError, match="extra_mark"):
        random_photo_edit(CROP, VALID, np.random.default_rng(0), names=("extra_mark", "nope"))


@pytest.mark.parametrize(
    ("crop", "valid", "strength", "rng", "match"),
    [
        (CROP, VALID, "medium", np.random.default_rng(0), "subtle"),
        (CROP.astype(np.float32), VALID, "subtle", np.random.default_rng(0), "uint8"),
        (CROP[:, :-1], VALID, "subtle", np.random.default_rng(0), "square"),
        (CROP, VALID[:-1], "subtle", np.random.default_rng(0), "valid"),
        (CROP, VALID.astype(np.float64), "subtle", np.random.default_rng(0), "bool"),
        (CROP, VALID, "subtle", 0, "Generator"),
    ],
)
def test_bad_inputs_say_what_was_expected(
    crop: object, valid: object, strength: str, rng: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        apply_photo_edit(crop, valid, "extra_mark", strength, rng)  # type: ignore[arg-type]


def test_tiny_valid_area_raises() -> None:
    valid = np.zeros((S, S), bool)
    valid[:20, :20] = True  # about 1 % of the frame
    with pytest.raises(DataError, match="valid"):
        apply_photo_edit(CROP, valid, "extra_mark", "gross", np.random.default_rng(0))
