"""Seller overlays: a shop name or logo tiled over the whole listing photo, told from print on the package.

Sellers tile their shop name over a photo, semi-transparent and at an angle. Over the package, its strokes
are structure no authentic reference shows, exactly as an extra mark printed on a counterfeit is. What tells
them apart is where else the strokes are: an overlay repeats over the whole photo, the background included,
under the same translations (a lattice); print on the package does not continue beyond it.

:func:`find_overlay` looks for that, for a photo the comparison would flag:

1. The photo is warped into the product's canonical frame extended by one frame on every side
   (:func:`extended_structure`): the package in the middle, what surrounds it around, at the comparison's
   scale and orientation.
2. The windows of the frame that changed most (structure departure of at least
   :data:`brandguard.mismatch.CHANGED_Z`) are matched, as their difference to the closest reference
   (high-passed), against everything around the package (normalised cross-correlation; the package itself
   and every other instance of the product in the photo excluded: two units of a counterfeit repeat its
   edit). A window whose change reappears outside the package (:data:`MIN_MATCH`) gives a translation.
3. A translation (and the differences of two of them) is kept only where the background repeats under it
   too (:data:`MIN_REPEAT`, the background's correlation with itself shifted by it): a tiled overlay
   repeats everywhere, a chance match somewhere does not.
4. With at least two translations kept, a pixel of the package is under the overlay where the background
   shows a stroke at that pixel shifted by them and by the points of the lattice they span
   (:data:`LATTICE_STEPS`; the median over the copies that fall on the background, at least :data:`STROKE`
   and :data:`STROKE_OVER_TEXTURE` times the background's median level) and the photo differs from the
   reference there (:data:`STROKE`): :attr:`Overlay.mask`, grown by :data:`GROW` pixels.

The detector then fills the masked pixels from their surroundings (``cv2.inpaint``) and compares again with
them left out of the structure channel (:attr:`brandguard.mismatch.AlignedView.ignore`); the OCR reads the
crop both filled in and as it is, and the higher raw score counts (filled-in strokes can cut letters); a
misread counts where the structure that is left agrees. An edit printed on the package is not under the
lattice's strokes and stays. Measured on the demo scene set (see the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from brandguard.mismatch import CHANGED_Z, structure_map

__all__ = ["GROW", "LATTICE_STEPS", "MAX_SHARE", "MIN_MATCH", "MIN_REPEAT", "OVERLAY_MASK_NOTE", "STROKE", "STROKE_OVER_TEXTURE", "Overlay",
           "find_overlay"]

#: normalised cross-correlation a changed window's difference needs with a copy outside the package
MIN_MATCH = 0.45
#: correlation the background needs with itself under a translation for the translation to be kept
MIN_REPEAT = 0.12
#: structure units (high-passed) of a stroke, in the background copies and in the photo's difference ...
STROKE = 0.2
#: ... and, in the background copies, at least this many times the background's median level (its texture)
STROKE_OVER_TEXTURE = 3.0
#: pixels the mask is grown by (alignment tolerance of the translations)
GROW = 2
#: an overlay covering more of the package than this is not trusted (nothing of the print would be left)
MAX_SHARE = 0.45
#: the mask samples the background at the lattice's points up to this many steps along each of its two
#: shortest translations (:func:`_lattice_offsets`), not only at the kept translations themselves
LATTICE_STEPS = 3
#: the windows (canonical pixels), how many are tried, and the search's downscale
_WINDOW = 64
_WINDOWS = 8
_DS = 2
_HP_SIGMA = 3.0
_EPS = 0.02  # NCC floor (structure units squared per pixel): flat regions match nothing
_MIN_SHIFT = 24  # pixels: shorter translations are the strokes' own neighbourhood, not a repeat
OVERLAY_MASK_NOTE = "seller's overlay repeated beyond the package left out ({share:.0%} of the package)"


@dataclass
class Overlay:
    """A seller's overlay found over a product (:func:`find_overlay`).

    Attributes:
        mask: ``(S, S)`` bool, canonical pixels under the overlay (grown by :data:`GROW`).
        shifts: ``(k, 2)`` float32 translations (canonical pixels, ``(dx, dy)``) under which it repeats.
        share: share of the compared pixels that the mask covers.
        match: the best normalised cross-correlation of a changed window with a copy beyond the package.
    """

    mask: np.ndarray
    shifts: np.ndarray
    share: float
    match: float

    @property
    def note(self) -> str:
        return OVERLAY_MASK_NOTE.format(share=self.share)


def _hp(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x - cv2.GaussianBlur(x, (0, 0), _HP_SIGMA)


def _ncc_map(img: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of template ``T`` at every position of ``img`` (valid positions only),
    with a variance floor so that flat regions match nothing."""
    T = (T - T.mean()).astype(np.float32)
    h, w = T.shape
    n = float(h * w)
    cross = cv2.matchTemplate(img, T, cv2.TM_CCORR)
    H, W = cross.shape
    s1 = cv2.boxFilter(img, -1, (w, h), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[:H, :W]
    s2 = cv2.boxFilter(img * img, -1, (w, h), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[:H, :W]
    var_w = np.maximum(s2 - s1 * s1 / n, 0.0)
    return cross / np.sqrt((var_w + _EPS * n) * (float((T * T).sum()) + _EPS * n))


def _shift_corr(e: np.ndarray, ok: np.ndarray, dy: int, dx: int) -> float:
    """Correlation of ``e`` with itself shifted by ``(dy, dx)`` over pixels where both are ``ok``."""
    n0, n1 = e.shape
    ya, yb = max(0, -dy), min(n0, n0 - dy)
    xa, xb = max(0, -dx), min(n1, n1 - dx)
    if yb - ya < 8 or xb - xa < 8:
        return 0.0
    a, b = e[ya:yb, xa:xb], e[ya + dy:yb + dy, xa + dx:xb + dx]
    both = ok[ya:yb, xa:xb] & ok[ya + dy:yb + dy, xa + dx:xb + dx]
    if both.sum() < 400:
        return 0.0
    a, b = a[both], b[both]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt(((a * a).sum() + _EPS * a.size) * ((b * b).sum() + _EPS * b.size)))


def _lattice_offsets(kept: Sequence[tuple[int, int]], reach: float) -> list[tuple[int, int]]:
    """``(dy, dx)`` offsets at which a package pixel's copies of a tiled overlay lie: every kept translation
    and its opposite, and the points ``i * t1 + j * t2`` (``|i|, |j| <=`` :data:`LATTICE_STEPS`, within
    ``reach`` pixels) of the lattice spanned by the shortest kept translation ``t1`` and the shortest one not
    within 20 degrees of its direction ``t2``. A package that fills much of the photo has its nearest copies
    on the package itself; farther lattice points still reach the background."""
    offsets = [(sgn * ty, sgn * tx) for ty, tx in kept for sgn in (1, -1)]
    by_length = sorted(kept, key=lambda t: float(np.hypot(*t)))
    t1 = by_length[0]
    t2 = next((t for t in by_length[1:]
               if abs(t1[0] * t[1] - t1[1] * t[0]) > np.sin(np.deg2rad(20)) * np.hypot(*t1) * np.hypot(*t)), None)
    if t2 is None:
        return offsets
    for i in range(-LATTICE_STEPS, LATTICE_STEPS + 1):
        for j in range(-LATTICE_STEPS, LATTICE_STEPS + 1):
            v = (i * t1[0] + j * t2[0], i * t1[1] + j * t2[1])
            if (i, j) != (0, 0) and np.hypot(*v) <= reach \
                    and all(abs(v[0] - o[0]) > 3 or abs(v[1] - o[1]) > 3 for o in offsets):
                offsets.append(v)
    return offsets


def find_overlay(image: np.ndarray, H: np.ndarray, size: int, residual: np.ndarray, changed: np.ndarray,
                 valid: np.ndarray, *, cell: int, others: Sequence[np.ndarray] = ()) -> Overlay | None:
    """A seller's overlay over the product, found where the photo's changes repeat beyond the package
    (see the module docstring), or None.

    Args:
        image: ``(h, w, 3)`` uint8 RGB, the photo ``H`` was found on.
        H: ``3x3`` canonical -> photo pixels.
        size: side ``S`` of the canonical frame.
        residual: ``(S, S)`` float32, the photo's structure minus that of its closest reference
            (:func:`brandguard.mismatch.structure_map` of both).
        changed: ``(G, G)`` float32 standardised structure departure per cell (``Comparison.structure``).
        valid: ``(S, S)`` bool, canonical pixels the photo covers.
        cell: comparison cell (pixels), ``S // G``.
        others: ``(4, 2)`` outlines (photo pixels) of the photo's other instances of products: excluded
            from the search, as the package itself is.

    Returns:
        The :class:`Overlay`, or None when no change repeats beyond the package under at least two
        translations that the background repeats under too.
    """
    S, ds, w = size, _DS, _WINDOW
    h_img, w_img = image.shape[:2]
    H = np.asarray(H, np.float64)
    quad = cv2.perspectiveTransform(np.array([[[0, 0], [S, 0], [S, S], [0, S]]], np.float64), H).reshape(-1, 2)
    if not np.all(np.isfinite(quad)) or np.abs(quad).max() > 1e5:
        return None
    excluded = np.zeros((h_img, w_img), np.uint8)
    for q in [quad, *others]:
        q = np.asarray(q, np.float64).reshape(-1, 2)
        if np.all(np.isfinite(q)) and np.abs(q).max() < 1e5:
            cv2.fillPoly(excluded, [np.round(q).astype(np.int32)], 1)
    around = cv2.dilate(excluded, np.ones((9, 9), np.uint8)) == 0  # beyond every package: the overlay alone
    if around.mean() < 0.05:
        return None
    e = _hp(structure_map(image))
    r = _hp(residual)
    # the photo's difference to the reference, in photo pixels, where the overlay is a lattice
    r_img = cv2.warpPerspective(np.where(valid, r, 0.0).astype(np.float32), H, (w_img, h_img),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    e2 = cv2.resize(e, (w_img // ds, h_img // ds), interpolation=cv2.INTER_AREA)
    ar2 = cv2.resize(around.astype(np.float32), (w_img // ds, h_img // ds), interpolation=cv2.INTER_AREA)
    w2 = w // ds
    if e2.shape[0] < w2 + 2 or e2.shape[1] < w2 + 2:
        return None
    cover = cv2.boxFilter(ar2, -1, (w2, w2), normalize=True, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    allowed = cover[:e2.shape[0] - w2 + 1, :e2.shape[1] - w2 + 1] > 0.8
    if not allowed.any():
        return None
    z = changed.astype(np.float32).copy()
    G = z.shape[0]
    shifts: list[tuple[int, int]] = []
    best_match = 0.0
    for _ in range(_WINDOWS):
        k = int(np.argmax(z))
        cy, cx = divmod(k, G)
        if not z[cy, cx] >= CHANGED_Z:
            break
        z[max(0, cy - 5):cy + 6, max(0, cx - 5):cx + 6] = 0.0
        c = cv2.perspectiveTransform(np.array([[[(cx + 0.5) * cell, (cy + 0.5) * cell]]], np.float64), H)[0, 0]
        y0, x0 = round(float(c[1])) - w // 2, round(float(c[0])) - w // 2
        if y0 < 0 or x0 < 0 or y0 + w > h_img or x0 + w > w_img:
            continue
        T_full = r_img[y0:y0 + w, x0:x0 + w]
        T = cv2.resize(T_full, (w2, w2), interpolation=cv2.INTER_AREA)
        ncc = np.where(allowed, _ncc_map(e2, T), -1.0)
        j = int(np.argmax(ncc))
        my, mx = divmod(j, ncc.shape[1])
        best_match = max(best_match, float(ncc[my, mx]))
        if ncc[my, mx] < MIN_MATCH:
            continue
        Y, X = my * ds, mx * ds  # refined at full resolution around the coarse match
        ya, xa = max(0, Y - ds), max(0, X - ds)
        region = e[ya:min(h_img, Y + w + ds), xa:min(w_img, X + w + ds)]
        if region.shape[0] < w or region.shape[1] < w:
            continue
        fine = _ncc_map(region, T_full)
        fy, fx = divmod(int(np.argmax(fine)), fine.shape[1])
        shifts.append((ya + fy - y0, xa + fx - x0))
    if not shifts:
        return None
    cands: list[tuple[int, int]] = []
    for t in shifts + [(a[0] - b[0], a[1] - b[1]) for i, a in enumerate(shifts) for b in shifts[i + 1:]]:
        if np.hypot(*t) < _MIN_SHIFT:
            continue
        if t[0] < 0 or (t[0] == 0 and t[1] < 0):  # t and -t are the same repeat
            t = (-t[0], -t[1])
        if all(abs(t[0] - c[0]) > 3 or abs(t[1] - c[1]) > 3 for c in cands):
            cands.append(t)
    around2 = ar2 > 0.99
    corr = [_shift_corr(e2, around2, round(t[0] / ds), round(t[1] / ds)) for t in cands[:16]]
    kept = [t for t, c in zip(cands, corr) if c >= MIN_REPEAT]
    if len(kept) < 2:
        return None
    # each package pixel in the photo, shifted by every kept translation and its opposite, and by the lattice's
    # other points: the background there
    q = np.stack(np.meshgrid(np.arange(S, dtype=np.float64), np.arange(S, dtype=np.float64)), -1)
    p = cv2.perspectiveTransform(q.reshape(1, -1, 2), H).reshape(S, S, 2).astype(np.float32)
    mag = np.abs(e)
    ar = around.astype(np.float32)
    samples = []
    x_lo, y_lo = quad.min(0)
    x_hi, y_hi = quad.max(0)
    for ty, tx in _lattice_offsets(kept, float(np.hypot(h_img, w_img))):
        if x_hi + tx < 0 or x_lo + tx > w_img or y_hi + ty < 0 or y_lo + ty > h_img:
            continue  # the package shifted by it lies wholly outside the photo: no copy there
        mx_, my_ = p[..., 0] + tx, p[..., 1] + ty
        v = cv2.remap(mag, mx_, my_, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        ok = cv2.remap(ar, mx_, my_, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
        samples.append(np.where(ok, v, np.nan))
    stack = np.stack(samples)
    count = np.isfinite(stack).sum(0)
    with np.errstate(all="ignore"):
        med = np.nanmedian(np.where(count >= 2, stack, 0.0), axis=0)
    # a stroke stands out of the background's own texture (its median level) in the shifted samples
    level = max(STROKE, STROKE_OVER_TEXTURE * float(np.median(np.abs(e)[around])))
    strokes = (count >= 2) & (med >= level) & (np.abs(r) >= STROKE) & valid
    mask = cv2.dilate(strokes.astype(np.uint8), np.ones((2 * GROW + 1, 2 * GROW + 1), np.uint8)) > 0
    mask &= valid
    share = float(mask.sum() / max(1, valid.sum()))
    if share <= 0.0 or share > MAX_SHARE:
        return None
    return Overlay(mask, np.asarray([(tx, ty) for ty, tx in kept], np.float32), share, best_match)
