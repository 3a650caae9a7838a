"""Counterfeit-style edits of authentic reference photos, made on the fly for training.

The edits work on a photo already warped into the product's square canonical frame (an ``(S, S, 3)`` uint8
RGB crop plus the ``(S, S)`` bool mask of the pixels that came from inside the photo). They need no design
information: the logo, print and wordmark are found from the pixels (edge density, colour that differs from
the local background, rows of glyph-sized strokes), so they work on any brand's real reference photos. Each
returns the edited crop and the mask of the pixels it changed visibly; every other pixel is left exactly as
it was. They mirror the design-level edits of the demo generator (``brandguard.synth.edits``):

===================  ============================================  ===========================================
edit                 subtle                                        gross
===================  ============================================  ===========================================
recolored_logo       ink hue rotated 25-40 deg (grey ink: tinted)  hue rotated 90-180 deg (grey ink: vivid)
mirrored_logo        a salient box mirrored left-right             a bigger box mirrored, or flipped both ways
distorted_logo       15-20 % stretch, squash or shear              38-45 % stretch, squash or shear
misspelled_wordmark  one glyph replaced by another of its row      two replacements, or two glyphs swapped
wrong_font           strokes 1 px bolder or thinner                2-3 px bolder/thinner, or italic shear
lookalike_logo       a mark of similar shape (donor photo)         another mark (donor photo)
missing_part         15-25 % of the ink erased                     40-60 % erased
moved_logo           shifted 8-12 % of S, or scaled x0.8           shifted 22-28 %, or scaled x0.55
packaging_color      background hue 20-30 deg (grey: tinted)       background hue 90-180 deg (grey: vivid)
extra_mark           badge/star/sticker/tag on 3-5 % of the face   12-20 % of the face
===================  ============================================  ===========================================

Erased ink is filled with the box's background (a plane fitted to the box border, with the border's noise).
Hues are rotated in CIE Lab, which keeps the luminance (tinting black ink lifts it a little so that the
colour shows). ``lookalike_logo`` takes its new mark from ``donor`` (a crop of another product) when given,
else from elsewhere in the same crop, rotated or flipped. On a crop with nothing to edit (a uniform one, say)
the logo edits may change nothing: check ``edit.mask.any()``. An edit takes about 1-10 ms on a 384 x 384
crop on one CPU core (the first call of a process also initialises OpenCV's tables).

Example:
    >>> import cv2
    >>> import numpy as np
    >>> from brandguard.training.edits import apply_photo_edit
    >>> crop = np.full((128, 128, 3), 230, np.uint8)
    >>> _ = cv2.circle(crop, (50, 60), 18, (200, 30, 40), -1)
    >>> _ = cv2.putText(crop, "ACME", (30, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    >>> valid = np.ones((128, 128), bool)
    >>> edit = apply_photo_edit(crop, valid, "recolored_logo", "gross", np.random.default_rng(0))
    >>> edit.image.shape, edit.mask.shape, bool(edit.mask.any())
    ((128, 128, 3), (128, 128), True)
    >>> bool((edit.image[~edit.mask] == crop[~edit.mask]).all())
    True
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..errors import DataError

__all__ = ["EDIT_NAMES", "STRENGTHS", "PhotoEdit", "apply_photo_edit", "check_edit_weights", "random_photo_edit"]

STRENGTHS: tuple[str, ...] = ("subtle", "gross")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (end exclusive)

_GRID = 64  # side of the low-resolution saliency map
_VISIBLE = 12  # max channel difference (after a 3x3 blur) that counts as a visible change
_MIN_VALID = 0.05  # least fraction of the crop that must be valid
_ATTEMPTS = 3  # tries (other boxes, other random choices) when an edit changed too little
_MARK_WORDS = ("NEW", "SALE", "-30%", "100%", "BIO", "TOP", "PROMO", "XXL", "HOT", "FREE", "ORIG", "+1")


@dataclass(frozen=True)
class PhotoEdit:
    """An edited crop and where it changed.

    Attributes:
        image: ``(S, S, 3)`` uint8, the edited crop.
        mask: ``(S, S)`` bool, the pixels the edit changed visibly (inside ``valid``, dilated by 1 px);
            ``image`` equals the input crop everywhere else.
        name: the edit (one of :data:`EDIT_NAMES`).
        strength: ``"subtle"`` or ``"gross"``.
    """

    image: np.ndarray
    mask: np.ndarray
    name: str
    strength: str


# --------------------------------------------------------------------------------------------- helpers


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    return type(a).__name__


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _box_sums(ii: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sums of all ``h x w`` windows from an integral image, indexed by their top-left corner."""
    return ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]


def _clip_box(box: Sequence[float], size: int) -> Box:
    x0, y0, x1, y1 = (round(v) for v in box)
    return max(0, x0), max(0, y0), min(size, x1), min(size, y1)


def _iou(b: Box, others: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(b[2], others[:, 2]) - np.maximum(b[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(b[3], others[:, 3]) - np.maximum(b[1], others[:, 1]), 0, None)
    inter = ix * iy
    area = (b[2] - b[0]) * (b[3] - b[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1)


def _vivid(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _lab(rgb_u8_or_f: np.ndarray) -> np.ndarray:
    """RGB (uint8 or float 0..255) -> float32 Lab (L 0..100, a/b about -128..127)."""
    return cv2.cvtColor(rgb_u8_or_f.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def _rgb(lab: np.ndarray) -> np.ndarray:
    """float32 Lab -> float32 RGB 0..255."""
    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * np.float32(255)


def _rotate_ab(lab: np.ndarray, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    a, b = lab[..., 1], lab[..., 2]
    out = lab.copy()
    out[..., 1] = c * a - s * b
    out[..., 2] = s * a + c * b
    return out


@dataclass(frozen=True)
class _Row:
    """A text-like row: its box and the x-ranges of its glyph-sized components, left to right."""

    box: Box
    glyphs: tuple[tuple[int, int], ...]


@dataclass
class _Layer:
    """A box split into a smooth background (a plane) and a soft ink alpha."""

    box: Box
    patch: np.ndarray  # float32 (h, w, 3), 0..255
    alpha: np.ndarray  # float32 (h, w), 0..1, clean ink mask
    mix: np.ndarray  # float32 (h, w), share of ink in each pixel, fringe included (for recolouring)
    coef: np.ndarray  # (3, 3): background colour = coef[0] + coef[1] * u + coef[2] * v
    sigma: float  # noise of the background (0..255 units)
    grow: int = 1  # px the ink's blurred fringe reaches past ``alpha``

    @cached_property
    def cover(self) -> np.ndarray:
        """``alpha`` dilated over the ink's fringe: what to erase so that no ghost outline stays."""
        k = 2 * self.grow + 1
        return cv2.dilate(self.alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))

    def background(self, box: Box, rng: np.random.Generator | None = None) -> np.ndarray:
        """The background plane over ``box`` (image coordinates), with its noise when ``rng`` is given."""
        x0, y0, x1, y1 = self.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        sx, sy = max(x1 - x0, 1), max(y1 - y0, 1)
        u = ((np.arange(box[0], box[2], dtype=np.float32) + 0.5 - cx) / sx)[None, :, None]
        v = ((np.arange(box[1], box[3], dtype=np.float32) + 0.5 - cy) / sy)[:, None, None]
        c = self.coef.astype(np.float32)
        out = c[0] + c[1] * u + c[2] * v
        if rng is not None and self.sigma > 0.5:
            out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(self.sigma)
        return out.astype(np.float32)


def _fit_plane(patch: np.ndarray, vpatch: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust per-channel plane through the border ring of ``patch``; returns (coef, noise sigma)."""
    h, w = patch.shape[:2]
    b = 2 if min(h, w) >= 12 else 1
    ring = np.zeros((h, w), bool)
    ring[:b] = ring[-b:] = True
    ring[:, :b] = ring[:, -b:] = True
    ring &= vpatch
    if ring.sum() < 8:
        ring = vpatch if vpatch.sum() >= 8 else np.ones((h, w), bool)
    ys, xs = np.nonzero(ring)
    X = np.stack([np.ones(len(xs)), (xs + 0.5 - w / 2) / w, (ys + 0.5 - h / 2) / h], 1)
    Y = patch[ys, xs].astype(np.float64)
    coef = np.linalg.lstsq(X, Y, rcond=None)[0]
    res = np.abs(Y - X @ coef).max(1)
    keep = res <= max(3.0 * float(np.median(res)), 6.0)
    if 8 <= keep.sum() < len(keep):
        coef = np.linalg.lstsq(X[keep], Y[keep], rcond=None)[0]
    resid = np.abs(Y[keep] - X[keep] @ coef) if keep.sum() >= 8 else np.abs(Y - X @ coef)
    sigma = float(min(1.4826 * np.median(resid), 6.0))
    return coef, sigma


def _ink_alpha(patch: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(alpha, mix) of the pixels that differ from the background; None when nothing stands out.

    ``alpha`` is a clean ink mask (0 on the ink's blurred fringe); ``mix`` is the linear share of ink in
    each pixel (fringe included), for recolouring.
    """
    d = np.sqrt(cv2.transform((patch - bg) ** 2, np.ones((1, 3), np.float32)))
    hi = float(np.percentile(d, 99))
    if hi < 24.0:
        return None
    lo = max(10.0, 0.2 * hi)
    top = max(lo + 12.0, 0.55 * hi)
    alpha = np.clip((d - lo) * np.float32(1 / (top - lo)), 0.0, 1.0)
    mix = np.clip((d - 6.0) * np.float32(1 / (top - 6.0)), 0.0, 1.0)
    return alpha, mix


# --------------------------------------------------------------------------------------------- analysis


class _Scene:
    """Lazily computed analysis of one crop: edges, salient boxes, text-like rows."""

    def __init__(self, img: np.ndarray, valid: np.ndarray, donor: np.ndarray | None = None) -> None:
        self.img = img
        self.valid = valid
        self.size = img.shape[0]
        self.donor = donor

    @cached_property
    def grey(self) -> np.ndarray:
        return cv2.cvtColor(self.img, cv2.COLOR_RGB2GRAY)

    @cached_property
    def valid_u8(self) -> np.ndarray:
        return self.valid.astype(np.uint8)

    @cached_property
    def valid_inner(self) -> np.ndarray:
        r = max(2, self.size // 96)
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1))
        return cv2.erode(self.valid_u8, k).astype(bool)

    @cached_property
    def valid_integral(self) -> np.ndarray:
        return cv2.integral(self.valid_u8)

    def valid_frac(self, box: Box) -> float:
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            return 0.0
        ii = self.valid_integral
        return float(ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / ((x1 - x0) * (y1 - y0))

    @cached_property
    def edges(self) -> np.ndarray:
        """uint8 0/1: strong gradients inside the (eroded) valid area."""
        gx = cv2.convertScaleAbs(cv2.Sobel(self.grey, cv2.CV_16S, 1, 0))
        gy = cv2.convertScaleAbs(cv2.Sobel(self.grey, cv2.CV_16S, 0, 1))
        return ((cv2.max(gx, gy) > 48) & self.valid_inner).astype(np.uint8)

    @cached_property
    def small(self) -> np.ndarray:
        return cv2.resize(self.img, (_GRID, _GRID), interpolation=cv2.INTER_AREA)

    @cached_property
    def edge_density(self) -> np.ndarray:
        return cv2.resize(self.edges.astype(np.float32), (_GRID, _GRID), interpolation=cv2.INTER_AREA)

    @cached_property
    def saliency(self) -> tuple[np.ndarray, np.ndarray]:
        """(saliency, fully valid) maps on the ``_GRID``-square grid: edge density or off-median colour."""
        G = _GRID
        ed = self.edge_density
        small = self.small.copy()
        vs = cv2.resize(self.valid.astype(np.float32), (G, G), interpolation=cv2.INTER_AREA)
        full = (vs >= 0.99).astype(np.float32)
        inside = vs > 0.5
        if inside.any():
            small[~inside] = small[inside].mean(0).astype(np.uint8)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
        dist = np.sqrt(((lab.astype(np.float32) - cv2.medianBlur(lab, 31)) ** 2).sum(2))
        sal = np.maximum(np.minimum(ed * 3.0, 1.0), np.clip((dist - 12.0) / 30.0, 0.0, 1.0))
        return (sal * full).astype(np.float32), full

    @cached_property
    def candidates(self) -> list[tuple[float, Box]]:
        """Salient boxes (10-40 % of S per side, inside valid) with their scores, best first.

        A box scores high when its core is salient and its border ring is not (it encloses a whole mark),
        times its side (bigger marks first); overlapping boxes are suppressed.
        """
        G, S = _GRID, self.size
        sal, full = self.saliency
        ii, vi = cv2.integral(sal), cv2.integral(full)
        sides = sorted({max(3, round(f * G)) for f in (0.10, 0.14, 0.19, 0.25, 0.32, 0.40)})
        found: list[np.ndarray] = []
        for h in sides:
            for w in sides:
                if max(h, w) > 3 * min(h, w):
                    continue
                r = max(1, round(0.12 * min(h, w)))
                tot = _box_sums(ii, h, w)
                core = _box_sums(ii, h - 2 * r, w - 2 * r)[r : r + G - h + 1, r : r + G - w + 1]
                ca = (h - 2 * r) * (w - 2 * r)
                score = core / ca - 1.5 * (tot - core) / (h * w - ca)
                score[_box_sums(vi, h, w) < 0.98 * h * w] = -1.0
                ys, xs = np.nonzero(score > 0.1)
                if len(ys):
                    prior = math.sqrt(h * w) / G
                    found.append(np.stack([score[ys, xs] * prior, xs, ys, xs + w, ys + h], 1))
        if not found:
            return []
        cand = np.concatenate(found)
        s = cand[:, 0].copy()
        boxes = cand[:, 1:]
        out: list[tuple[float, Box]] = []
        best = float(s.max())
        while len(out) < 8:
            i = int(np.argmax(s))
            if s[i] < 0.3 * best:
                break
            b = boxes[i]
            out.append((float(s[i]), _clip_box(b * (S / G), S)))
            s[_iou(tuple(b), boxes) > 0.3] = -np.inf
        return out

    def fallback_box(self) -> Box:
        """A box of 30 % of S in the centre of the valid area, shrunk until it is (mostly) valid."""
        S = self.size
        ys, xs = np.nonzero(self.valid[::4, ::4])
        cy, cx = (ys.mean() * 4 + 2, xs.mean() * 4 + 2) if len(ys) else (S / 2, S / 2)
        side = 0.3 * S
        while True:
            box = _clip_box((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), S)
            if self.valid_frac(box) >= 0.9 or side <= 0.1 * S:
                return box
            side *= 0.85

    def pick_box(self, rng: np.random.Generator) -> Box:
        """A salient box, drawn with probability growing with its saliency (the centre box if none)."""
        cands = self.candidates
        if not cands:
            return self.fallback_box()
        w = np.array([c[0] for c in cands]) ** 2
        return cands[int(rng.choice(len(cands), p=w / w.sum()))][1]

    @cached_property
    def text_rows(self) -> list[_Row]:
        """Rows of at least three glyph-sized ink components, side by side at the same height.

        Ink is what is darker (or lighter) than the local median by 32 grey levels; both polarities count.
        """
        S = self.size
        q = max(1, S // 96)
        small = cv2.resize(self.grey, (S // q, S // q), interpolation=cv2.INTER_AREA)
        med = cv2.resize(
            cv2.medianBlur(small, max(5, round(0.2 * S / q) | 1)), (S, S), interpolation=cv2.INTER_LINEAR
        )
        k = max(5, round(0.03 * S) | 1)
        inner = cv2.erode(self.valid_u8, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))).astype(bool)
        rows: list[_Row] = []
        for ink in (cv2.subtract(med, self.grey) > 32, cv2.subtract(self.grey, med) > 32):
            rows += self._rows_of((ink & inner).astype(np.uint8))
        rows.sort(key=lambda r: (r.box[1], r.box[0]))
        return rows

    def _rows_of(self, ink: np.ndarray) -> list[_Row]:
        """Group the glyph-sized components of a binary ink map into rows."""
        S = self.size
        _n, _lab, stats, _c = cv2.connectedComponentsWithStats(ink, connectivity=8)
        x, y, w, h, a = stats[1:].astype(np.float64).T
        keep = (h >= max(5.0, 0.02 * S)) & (h <= 0.16 * S) & (w <= 2.5 * h) & (a >= 0.08 * w * h)
        idx = np.nonzero(keep)[0][:400]
        if len(idx) < 3:
            return []
        x, y, w, h = x[idx], y[idx], w[idx], h[idx]
        ov = np.minimum((y + h)[:, None], (y + h)[None]) - np.maximum(y[:, None], y[None])
        hm = np.minimum(h[:, None], h[None])
        hM = np.maximum(h[:, None], h[None])
        gap = np.maximum(x[:, None] - (x + w)[None], x[None] - (x + w)[:, None])
        link = (ov >= 0.5 * hm) & (hM <= 2.2 * hm) & (gap <= hM)
        parent = list(range(len(idx)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j in zip(*np.nonzero(np.triu(link, 1)), strict=True):
            parent[find(int(i))] = find(int(j))
        groups: dict[int, list[int]] = {}
        for i in range(len(idx)):
            groups.setdefault(find(i), []).append(i)
        rows = []
        for g in groups.values():
            if len(g) < 3:
                continue
            g = sorted(g, key=lambda i: x[i])
            box = _clip_box((min(x[g]), min(y[g]), max(x[g] + w[g]), max(y[g] + h[g])), S)
            rows.append(_Row(box, tuple((int(x[i]), int(x[i] + w[i])) for i in g)))
        return rows

    def pick_row(self, rng: np.random.Generator) -> _Row:
        """A text-like row (weighted by its number of glyphs), else a horizontal band of a salient box."""
        rows = self.text_rows
        if rows:
            w = np.array([len(r.glyphs) for r in rows], float)
            return rows[int(rng.choice(len(rows), p=w / w.sum()))]
        x0, y0, x1, y1 = self.pick_box(rng)
        hb = max(6, (y1 - y0) // 3)
        yc = (y0 + y1) // 2
        ya = max(0, yc - hb // 2)
        glyphs = tuple((gx, gx + hb) for gx in range(x0, x1 - hb + 1, hb))
        return _Row((x0, ya, x1, min(self.size, ya + hb)), glyphs)

    def layer(self, box: Box) -> _Layer | None:
        """Split ``box`` into background plane and ink; None when nothing in it stands out."""
        x0, y0, x1, y1 = box
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        patch = self.img[y0:y1, x0:x1].astype(np.float32)
        coef, sigma = _fit_plane(patch, self.valid[y0:y1, x0:x1])
        zero = np.zeros(patch.shape[:2], np.float32)
        lay = _Layer(box, patch, zero, zero, coef, sigma)
        am = _ink_alpha(patch, lay.background(box))
        if am is None:
            return None
        lay.alpha, lay.mix = am
        lay.grow = 1 if self.size < 320 else 2
        return lay

    @cached_property
    def donor_scene(self) -> _Scene | None:
        if self.donor is None:
            return None
        return _Scene(self.donor, np.ones(self.donor.shape[:2], bool))


# --------------------------------------------------------------------------------------------- edits

_Result = tuple[Box, np.ndarray]  # touched box, new uint8 content of that box
_EditFn = Callable[[_Scene, bool, np.random.Generator], "_Result | None"]


def _affine_move(sc: _Scene, lay: _Layer, M: np.ndarray, rng: np.random.Generator) -> _Result:
    """Erase the layer's ink (background fill) and paste it back transformed by the 2x3 affine ``M``."""
    x0, y0, x1, y1 = lay.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
    tc = corners @ M[:, :2].T + M[:, 2]
    region = _clip_box(
        (
            min(x0, math.floor(tc[:, 0].min()) - 1),
            min(y0, math.floor(tc[:, 1].min()) - 1),
            max(x1, math.ceil(tc[:, 0].max()) + 1),
            max(y1, math.ceil(tc[:, 1].max()) + 1),
        ),
        sc.size,
    )
    rx0, ry0, rx1, ry1 = region
    P = sc.img[ry0:ry1, rx0:rx1].astype(np.float32)
    E = np.zeros(P.shape[:2], np.float32)
    E[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] = lay.cover
    fill = lay.background(region, rng)
    erased = P + E[..., None] * (fill - P)
    Mr = M.astype(np.float64).copy()
    Mr[:, 2] = M[:, :2] @ np.array([rx0, ry0], np.float64) + M[:, 2] - np.array([rx0, ry0], np.float64)
    size = (rx1 - rx0, ry1 - ry0)
    WP = cv2.warpAffine(P, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # paste with the ink's fringe too (it carries the ink's own anti-aliasing); the erased fringe is refilled
    WA = cv2.warpAffine(E, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = erased + WA[..., None] * (WP - erased)
    return region, _to_u8(out)


def _about(cx: float, cy: float, A: np.ndarray) -> np.ndarray:
    """2x3 affine applying the 2x2 ``A`` about the point (cx, cy)."""
    c = np.array([cx, cy])
    return np.hstack([A, (c - A @ c)[:, None]])


def _box_layer(sc: _Scene, rng: np.random.Generator) -> _Layer | None:
    return sc.layer(sc.pick_box(rng))


def _recolored_logo(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    lay = _box_layer(sc, rng)
    if lay is None:
        return None
    lab = _lab(lay.patch)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    ink = lay.alpha > 0.5
    if not ink.any():
        return None
    chromatic = (chroma > 22) & (lab[..., 0] > 8)
    if chromatic[ink].mean() >= 0.3:
        c = float(np.median(chroma[ink & chromatic]))
        deg = rng.uniform(25, 40) if subtle else rng.uniform(90, 180)
        deg = max(deg, min(math.degrees(2 * math.asin(min(1.0, 16 / (2 * c)))), 60.0))
        new = _rotate_ab(lab, deg * rng.choice([-1.0, 1.0]))
        weight = lay.mix * np.clip((chroma - 12) / 10, 0, 1)
    else:  # grey, black or white ink: tint it
        hue = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(28, 40) if subtle else rng.uniform(55, 75)
        new = lab.copy()
        L = lab[..., 0]
        if float(np.median(L[ink])) < 55:
            new[..., 0] = np.maximum(L, 35.0 if subtle else rng.uniform(45, 60))
        elif not subtle:
            new[..., 0] = np.minimum(L, rng.uniform(60, 80))
        new[..., 1] = r * math.cos(hue)
        new[..., 2] = r * math.sin(hue)
        weight = lay.mix
    out = lab + weight[..., None] * (new - lab)
    return lay.box, _to_u8(_rgb(out))


def _mirrored_logo(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    both = not subtle and rng.random() < 0.5
    best: tuple[float, _Layer] | None = None
    for _ in range(4):  # prefer a mark that is not symmetric
        box = sc.pick_box(rng)
        if not subtle and not both:  # a bigger box
            x0, y0, x1, y1 = box
            cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, 0.675 * (x1 - x0), 0.675 * (y1 - y0)
            big = _clip_box((cx - hw, cy - hh, cx + hw, cy + hh), sc.size)
            box = big if sc.valid_frac(big) >= 0.95 else box
        lay = sc.layer(box)
        if lay is None:
            continue
        a = lay.alpha
        flipped = a[::-1, ::-1] if both else a[:, ::-1]
        asym = float(np.abs(a - flipped).sum()) / max(float(a.sum()), 1.0)
        if best is None or asym > best[0]:
            best = (asym, lay)
        if asym >= 0.3:
            break
    if best is None:
        return None
    lay = best[1]
    x0, y0, x1, y1 = lay.box
    A = np.array([[-1.0, 0.0], [0.0, -1.0 if both else 1.0]])
    return _affine_move(sc, lay, _about((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, A), rng)


def _distorted_logo(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    lay = _box_layer(sc, rng)
    if lay is None:
        return None
    a = rng.uniform(0.15, 0.20) if subtle else rng.uniform(0.38, 0.45)
    mode = int(rng.integers(6))
    A = np.eye(2)
    if mode < 4:  # stretch or squash, along x or y
        A[mode // 2, mode // 2] = 1 + a if mode % 2 == 0 else 1 - a
    else:  # shear
        A[mode - 4, 5 - mode] = a * rng.choice([-1.0, 1.0])
    x0, y0, x1, y1 = lay.box
    return _affine_move(sc, lay, _about((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, A), rng)


def _misspelled_wordmark(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    row = sc.pick_row(rng)
    if len(row.glyphs) < 2:
        return None
    S = sc.size
    y0, y1 = max(0, row.box[1] - 1), min(S, row.box[3] + 1)
    hb = y1 - y0
    img = sc.img
    band = img[y0:y1].copy()
    centres = [(g0 + g1) // 2 for g0, g1 in row.glyphs]
    n = len(centres)

    def start(i: int, wd: int) -> int:
        return int(np.clip(centres[i] - wd // 2, 0, S - wd))

    def source_for(t: int, wd: int, avoid: set[int]) -> int | None:
        tx = start(t, wd)
        for s in rng.permutation(n):
            s = int(s)
            if s == t or s in avoid or abs(start(s, wd) - tx) < wd // 2:
                continue
            sx = start(s, wd)
            diff = np.abs(img[y0:y1, tx : tx + wd].astype(np.int16) - img[y0:y1, sx : sx + wd]).mean()
            if diff > 10:
                return s
        return None

    touched: list[int] = []
    swap = not subtle and rng.random() < 0.5
    targets = [int(t) for t in rng.permutation(n)]
    done = 0
    used: set[int] = set()
    for t in targets:
        if t in used:
            continue
        wd = int(np.clip(round(rng.uniform(0.6, 1.0) * hb), 3, S))
        s = source_for(t, wd, used)
        if s is None:
            continue
        tx, sx = start(t, wd), start(s, wd)
        band[:, tx : tx + wd] = img[y0:y1, sx : sx + wd]
        touched += [tx, tx + wd]
        used |= {t, s} if swap else {t}
        if swap:
            band[:, sx : sx + wd] = img[y0:y1, tx : tx + wd]
            touched += [sx, sx + wd]
        done += 1
        if done >= (1 if subtle or swap else 2):
            break
    if not touched:
        return None
    rx0, rx1 = min(touched), max(touched)
    return (rx0, y0, rx1, y1), band[:, rx0:rx1]


def _wrong_font(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    row = sc.pick_row(rng)
    x0, y0, x1, y1 = row.box
    px = 1 if subtle else int(rng.integers(2, 4))
    italic = not subtle and rng.random() < 0.35
    pad = px + 3
    lay = sc.layer(_clip_box((x0 - pad, y0 - pad, x1 + pad, y1 + pad), sc.size))
    if lay is None:
        return None
    if italic:
        k = rng.uniform(0.2, 0.3)
        bx0, by0, bx1, by1 = lay.box
        return _affine_move(
            sc, lay, _about((bx0 + bx1) / 2, (by0 + by1) / 2, np.array([[1.0, -k], [0.0, 1.0]])), rng
        )
    ink = lay.alpha > 0.5
    if ink.sum() < 6:
        return None
    dt = cv2.distanceTransform(ink.astype(np.uint8), cv2.DIST_L2, 3)
    stroke = 2.0 * float(np.percentile(dt[ink], 90))
    thinner = stroke >= 4 * px + 2 and rng.random() < 0.4
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    a2 = cv2.erode(lay.alpha, ker) if thinner else cv2.dilate(lay.alpha, ker)
    colour = np.median(lay.patch[lay.alpha > 0.8] if (lay.alpha > 0.8).any() else lay.patch[ink], axis=0)
    fill = lay.background(lay.box, rng)
    new = fill + a2[..., None] * (colour.astype(np.float32) - fill)
    changed = np.abs(a2 - lay.alpha) > 0.03
    out = np.where(changed[..., None], new, lay.patch)
    return lay.box, _to_u8(out)


def _crop_ink(lay: _Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The layer's patch, alpha and mix, cropped to the ink's bounding box (plus its fringe)."""
    ys, xs = np.nonzero(lay.alpha > 0.3)
    if len(ys) < 6:
        return None
    g = lay.grow
    h, w = lay.alpha.shape
    ya, yb, xa, xb = (
        max(0, ys.min() - g),
        min(h, ys.max() + 1 + g),
        max(0, xs.min() - g),
        min(w, xs.max() + 1 + g),
    )
    return lay.patch[ya:yb, xa:xb], lay.alpha[ya:yb, xa:xb], lay.mix[ya:yb, xa:xb]


def _features(alpha: np.ndarray) -> np.ndarray:
    h, w = alpha.shape
    return np.array([math.log(w / h), 3.0 * float(alpha.mean())])


def _lookalike_logo(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    tbox = sc.pick_box(rng)
    tl = sc.layer(tbox)
    x0, y0, x1, y1 = tbox
    if tl is None:  # nothing to replace: paste a mark on the plain box
        P = sc.img[y0:y1, x0:x1].astype(np.float32)
        coef, sigma = _fit_plane(P, sc.valid[y0:y1, x0:x1])
        zero = np.zeros(P.shape[:2], np.float32)
        tl = _Layer(tbox, P, zero, zero, coef, sigma)
        tw, th = 0.7 * (x1 - x0), 0.7 * (y1 - y0)
        tfeat = None
    else:
        tc = _crop_ink(tl)
        tw, th = (tc[1].shape[1], tc[1].shape[0]) if tc else (x1 - x0, y1 - y0)
        tfeat = _features(tc[1]) if tc else None
    sources: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ds = sc.donor_scene
    if ds is not None:
        top = ds.candidates[0][0] if ds.candidates else 0.0
        for score, b in ds.candidates[:4]:
            if score < 0.5 * top:
                break
            lay = ds.layer(b)
            c = _crop_ink(lay) if lay is not None else None
            if c is not None:
                sources.append(c)
    own = not sources
    if own:  # other salient regions of the same crop, rotated / flipped below
        for _s, b in sc.candidates:
            if min(b[2], x1) > max(b[0], x0) and min(b[3], y1) > max(b[1], y0):
                continue  # overlaps the target
            lay = sc.layer(b)
            c = _crop_ink(lay) if lay is not None else None
            if c is not None:
                sources.append(c)
        tc0 = _crop_ink(tl)
        if tc0 is not None:
            sources.append(tc0)  # last resort: the target itself, rotated
    if not sources:
        return None
    order = [int(i) for i in rng.permutation(len(sources))]
    if tfeat is not None and len(sources) > 1:
        dist = [float(np.abs(_features(sources[i][1]) - tfeat).sum()) for i in range(len(sources))]
        ranked = sorted(range(len(sources)), key=lambda i: dist[i])
        order = ranked if subtle else [i for i in order if i != ranked[0]] + ranked[:1]
    P = tl.patch
    fill = tl.background(tbox, rng)
    erased = P + tl.cover[..., None] * (fill - P)
    result: _Result | None = None
    for i in order[:4]:
        sp, sa, sm = sources[i]
        if own:  # rotate / flip (the target itself always rotated)
            k = int(rng.integers(1, 4)) if i == len(sources) - 1 else int(rng.integers(0, 4))
            sp, sa, sm = np.rot90(sp, k), np.rot90(sa, k), np.rot90(sm, k)
            if rng.random() < 0.5:
                sp, sa, sm = sp[:, ::-1], sa[:, ::-1], sm[:, ::-1]
        sh, sw = sa.shape
        scale = min(math.sqrt(tw * th / (sw * sh)), (x1 - x0) / sw, (y1 - y0) / sh) * rng.uniform(0.9, 1.0)
        nw = min(max(2, round(sw * scale)), x1 - x0)
        nh = min(max(2, round(sh * scale)), y1 - y0)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rp = cv2.resize(np.ascontiguousarray(sp), (nw, nh), interpolation=interp)
        ra = cv2.resize(np.ascontiguousarray(sa), (nw, nh), interpolation=interp)
        rm = cv2.resize(np.ascontiguousarray(sm), (nw, nh), interpolation=interp)
        ox, oy = (x1 - x0 - nw) // 2, (y1 - y0 - nh) // 2
        out = erased.copy()
        sub = out[oy : oy + nh, ox : ox + nw]
        out[oy : oy + nh, ox : ox + nw] = sub + rm[..., None] * (rp - sub)
        result = tbox, _to_u8(out)
        newa = np.zeros_like(tl.alpha)
        newa[oy : oy + nh, ox : ox + nw] = ra
        if np.abs(newa - tl.alpha).mean() >= 0.04:  # a different mark: done
            break
    return result


def _missing_part(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    lay = _box_layer(sc, rng)
    if lay is None:
        return None
    ink = lay.alpha > 0.5
    ys, xs = np.nonzero(ink)
    if len(ys) < 20:
        return None
    f = rng.uniform(0.15, 0.25) if subtle else rng.uniform(0.40, 0.60)
    h, w = ink.shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # a half-plane
        t = rng.uniform(0, 2 * math.pi)
        proj = gx * math.cos(t) + gy * math.sin(t)
        thr = float(np.quantile(proj[ys, xs], 1 - f))
        part = np.clip(proj - thr + 0.5, 0, 1)
    else:  # a blob around one ink pixel
        i = int(rng.integers(len(ys)))
        dist = np.hypot(gx - xs[i], gy - ys[i])
        thr = float(np.quantile(dist[ys, xs], f))
        part = np.clip(thr - dist + 0.5, 0, 1)
    e = (lay.cover * part)[..., None]
    out = lay.patch + e * (lay.background(lay.box, rng) - lay.patch)
    return lay.box, _to_u8(out)


def _moved_logo(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    lay = _box_layer(sc, rng)
    if lay is None:
        return None
    S = sc.size
    x0, y0, x1, y1 = lay.box
    if rng.random() < 0.5:
        d = (rng.uniform(0.08, 0.12) if subtle else rng.uniform(0.22, 0.28)) * S
        t0 = rng.uniform(0, 2 * math.pi)
        for t in t0 + np.arange(16) * (2 * math.pi / 16):
            dx, dy = d * math.cos(t), d * math.sin(t)
            dest = (round(x0 + dx), round(y0 + dy), round(x1 + dx), round(y1 + dy))
            if (
                dest[0] >= 0
                and dest[1] >= 0
                and dest[2] <= S
                and dest[3] <= S
                and sc.valid_frac(dest) >= 0.97
            ):
                return _affine_move(sc, lay, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), rng)
    s = (0.8 if subtle else 0.55) * rng.uniform(0.97, 1.03)
    return _affine_move(sc, lay, _about((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, s * np.eye(2)), rng)


def _packaging_color(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    x, y, w, h = cv2.boundingRect(sc.valid_u8)
    region = (x, y, x + w, y + h)
    V = sc.valid[y : y + h, x : x + w]
    # the packaging colour: the commonest colour of the low-detail, valid cells of the saliency grid
    small = _lab(sc.small)
    _sal, full = sc.saliency
    low = (sc.edge_density < 0.02) & (full > 0)
    if low.sum() < 8:
        low = full > 0
    samp = small[low]
    q = np.floor(samp / np.array([10.0, 6.0, 6.0], np.float32)).astype(np.int64)
    key = (q[:, 0] * 64 + q[:, 1] + 32) * 64 + q[:, 2] + 32
    _vals, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    L0, a0, b0 = (float(v) for v in np.median(samp[inv.ravel() == int(np.argmax(counts))], axis=0))
    # full resolution in 8-bit Lab (L * 2.55, a + 128, b + 128): fast; rounding stays far under visible
    lab = cv2.cvtColor(sc.img[y : y + h, x : x + w], cv2.COLOR_RGB2Lab).astype(np.float32)
    lab -= np.array([0.0, 128.0, 128.0], np.float32)
    dl = lab - np.array([L0 * 2.55, a0, b0], np.float32)
    d = np.sqrt(cv2.transform(dl * dl, np.array([[(0.5 / 2.55) ** 2, 1.0, 1.0]], np.float32)))
    wgt = np.clip(1 - (d - 10) * np.float32(1 / 14), 0, 1) * V
    C0 = math.hypot(a0, b0)
    if C0 >= 35:
        deg = rng.uniform(20, 30) if subtle else rng.uniform(90, 180)
        deg = max(deg, min(math.degrees(2 * math.asin(min(1.0, 15 / (2 * C0)))), 45.0))
        t = math.radians(deg * rng.choice([-1.0, 1.0]))
        c, s = math.cos(t), math.sin(t)
        delta = cv2.transform(lab, np.array([[0, 0, 0], [0, c - 1, -s], [0, s, c - 1]], np.float32))
        delta *= wgt[..., None]
    else:  # grey, white or pale packaging: tint it
        hue = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(18, 26) if subtle else rng.uniform(40, 60)
        delta = wgt[..., None] * np.array([0.0, r * math.cos(hue), r * math.sin(hue)], np.float32)
    lab += delta
    lab += np.array([0.0, 128.0, 128.0], np.float32)
    return region, cv2.cvtColor(_to_u8(lab), cv2.COLOR_Lab2RGB)


def _extra_mark(sc: _Scene, subtle: bool, rng: np.random.Generator) -> _Result | None:
    S = sc.size
    area = float(sc.valid.sum()) * (rng.uniform(0.03, 0.05) if subtle else rng.uniform(0.12, 0.20))
    kind = ("badge", "star", "sticker", "tag")[int(rng.integers(4))]
    if kind == "star":
        n = int(rng.integers(5, 9))
        q = rng.uniform(0.45, 0.6)
        R = math.sqrt(area / (n * q * math.sin(math.pi / n)))
        hx = hy = R
    elif kind == "tag":
        ar = rng.uniform(1.8, 3.0)
        hy = math.sqrt(area / ar) / 2
        hx = ar * hy
    else:
        R = math.sqrt(area / math.pi)
        hx = hy = R
    hx, hy = min(hx, S / 2 - 2), min(hy, S / 2 - 2)
    best, best_f = (S / 2, S / 2), -1.0
    for _ in range(40):
        cx = rng.uniform(hx + 1, S - hx - 1)
        cy = rng.uniform(hy + 1, S - hy - 1)
        f = sc.valid_frac(_clip_box((cx - hx, cy - hy, cx + hx, cy + hy), S))
        if f > best_f:
            best, best_f = (cx, cy), f
        if f >= 0.97:
            break
    cx, cy = best
    region = _clip_box((cx - hx - 3, cy - hy - 3, cx + hx + 3, cy + hy + 3), S)
    rx0, ry0, rx1, ry1 = region
    canvas = np.ascontiguousarray(sc.img[ry0:ry1, rx0:rx1].copy())
    fillc = _vivid(rng)
    dark = int(rng.integers(0, 60))
    outline = (dark, dark, dark) if rng.random() < 0.7 else (255, 255, 255)
    lum = 0.299 * fillc[0] + 0.587 * fillc[1] + 0.114 * fillc[2]
    ink = (255, 255, 255) if lum < 140 else (int(rng.integers(0, 50)),) * 3
    th = 1 if S < 256 else 2
    sh = 4  # sub-pixel bits for the drawing calls
    f = 1 << sh
    c = (int((cx - rx0) * f), int((cy - ry0) * f))
    if kind in ("badge", "sticker"):
        cv2.circle(canvas, c, int(R * f), fillc, -1, cv2.LINE_AA, sh)
        cv2.circle(canvas, c, int(R * f), outline, th, cv2.LINE_AA, sh)
        if kind == "badge":
            cv2.circle(canvas, c, int(0.78 * R * f), ink, th, cv2.LINE_AA, sh)
    elif kind == "star":
        t0 = rng.uniform(0, 2 * math.pi)
        ang = t0 + np.arange(2 * n) * math.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, R, q * R)
        xy = np.stack([cx - rx0 + rad * np.cos(ang), cy - ry0 + rad * np.sin(ang)], 1)
        pts = [(xy * f).astype(np.int32)]
        cv2.fillPoly(canvas, pts, fillc, cv2.LINE_AA, sh)
        cv2.polylines(canvas, pts, True, outline, th, cv2.LINE_AA, sh)
    else:
        p0 = (int((cx - rx0 - hx) * f), int((cy - ry0 - hy) * f))
        p1 = (int((cx - rx0 + hx) * f), int((cy - ry0 + hy) * f))
        cv2.rectangle(canvas, p0, p1, fillc, -1, cv2.LINE_AA, sh)
        cv2.rectangle(canvas, p0, p1, outline, th, cv2.LINE_AA, sh)
    if kind != "star" or rng.random() < 0.5:
        word = _MARK_WORDS[int(rng.integers(len(_MARK_WORDS)))]
        font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)[
            int(rng.integers(3))
        ]
        boxw, boxh = (1.5 * hx, 1.0 * hy) if kind == "tag" else (1.1 * hx, 0.6 * hy)
        thick = max(1, round(min(boxw, boxh) / 14))
        (tw, tht), _b = cv2.getTextSize(word, font, 1.0, thick)
        scale = min(boxw / max(tw, 1), boxh / max(tht, 1))
        if scale * tht >= 5:
            (tw, tht), _b = cv2.getTextSize(word, font, scale, thick)
            org = (int(cx - rx0 - tw / 2), int(cy - ry0 + tht / 2))
            cv2.putText(canvas, word, org, font, scale, ink, thick, cv2.LINE_AA)
    return region, canvas


_EDITS: dict[str, _EditFn] = {  # same names and order as brandguard.synth.EDITS
    "recolored_logo": _recolored_logo,
    "mirrored_logo": _mirrored_logo,
    "distorted_logo": _distorted_logo,
    "misspelled_wordmark": _misspelled_wordmark,
    "wrong_font": _wrong_font,
    "lookalike_logo": _lookalike_logo,
    "missing_part": _missing_part,
    "moved_logo": _moved_logo,
    "packaging_color": _packaging_color,
    "extra_mark": _extra_mark,
}
#: The edit names, in the order of the demo generator's design-level edits.
EDIT_NAMES: tuple[str, ...] = tuple(_EDITS)


# --------------------------------------------------------------------------------------------- public API


def _check_crop(crop: object, what: str) -> np.ndarray:
    if not (
        isinstance(crop, np.ndarray)
        and crop.dtype == np.uint8
        and crop.ndim == 3
        and crop.shape[2] == 3
        and crop.shape[0] == crop.shape[1]
    ):
        raise DataError(f"{what} must be a square (S, S, 3) uint8 RGB array, got {_describe(crop)}")
    if crop.shape[0] < 32:
        raise DataError(f"{what} must be at least 32 x 32 pixels (the canonical frame), got {crop.shape[:2]}")
    return np.ascontiguousarray(crop)


def _check_inputs(
    crop: object, valid: object, rng: object, donor: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    crop = _check_crop(crop, "crop")
    S = crop.shape[0]
    if not (
        isinstance(valid, np.ndarray)
        and valid.shape == (S, S)
        and (valid.dtype == bool or valid.dtype == np.uint8)
    ):
        raise DataError(
            f"valid must be an ({S}, {S}) bool array (the crop's pixels from inside the photo), "
            f"got {_describe(valid)}"
        )
    valid = np.ascontiguousarray(valid != 0)
    frac = float(valid.mean())
    if frac < _MIN_VALID:
        raise DataError(
            f"valid covers {frac:.1%} of the crop; an edit needs at least {_MIN_VALID:.0%} of the "
            "canonical frame to come from inside the photo (is the photo aligned?)"
        )
    if not isinstance(rng, np.random.Generator):
        raise DataError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {_describe(rng)}"
        )
    if donor is not None:
        donor = _check_crop(donor, "donor")
        if donor.shape[0] != S:
            donor = cv2.resize(
                donor, (S, S), interpolation=cv2.INTER_AREA if donor.shape[0] > S else cv2.INTER_LINEAR
            )
    return crop, valid, donor


def _finish(crop: np.ndarray, valid: np.ndarray, res: _Result) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the visible changes (inside valid, dilated by 1 px); return (image, mask)."""
    (x0, y0, x1, y1), new = res
    old = crop[y0:y1, x0:x1]
    d0, d1, d2 = cv2.split(cv2.absdiff(new, old))
    diff = cv2.max(cv2.max(d0, d1), d2)
    vis = (cv2.blur(diff, (3, 3)) > _VISIBLE) | (diff > 4 * _VISIBLE)
    vis = cv2.dilate(vis.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) & valid[y0:y1, x0:x1]
    image = crop.copy()
    np.copyto(image[y0:y1, x0:x1], new, where=vis[..., None])
    mask = np.zeros(valid.shape, bool)
    mask[y0:y1, x0:x1] = vis
    return image, mask


def apply_photo_edit(
    crop: np.ndarray,
    valid: np.ndarray,
    name: str,
    strength: str,
    rng: np.random.Generator,
    donor: np.ndarray | None = None,
) -> PhotoEdit:
    """Apply the counterfeit-style edit ``name`` at ``strength`` to a canonical-frame crop.

    Args:
        crop: ``(S, S, 3)`` uint8 RGB photo warped into the product's canonical frame.
        valid: ``(S, S)`` bool (or uint8 0/1), the pixels that came from inside the photo; edits stay inside.
        name: one of :data:`EDIT_NAMES`.
        strength: ``"subtle"`` or ``"gross"``.
        rng: all randomness comes from it (same seed, same edit).
        donor: optional square uint8 crop of another product (resized to S if needed); ``lookalike_logo``
            takes its replacement mark from it, otherwise from elsewhere in ``crop`` (rotated / flipped).

    Returns:
        The edited crop and the mask of the visibly changed pixels. The mask may be empty when the crop
        has nothing the edit could change (e.g. a uniform crop).

    Raises:
        DataError: unknown name or strength, bad shapes or dtypes, or ``valid`` under 5 % of the crop.
    """
    if name not in _EDITS:
        raise DataError(f"unknown edit {name!r}; expected one of: {', '.join(EDIT_NAMES)}")
    if strength not in STRENGTHS:
        raise DataError(f"edit strength must be 'subtle' or 'gross', got {strength!r}")
    crop, valid, donor = _check_inputs(crop, valid, rng, donor)
    sc = _Scene(crop, valid, donor)
    fn = _EDITS[name]
    min_px = max(12, int(0.001 * crop.shape[0] ** 2))
    best: tuple[np.ndarray, np.ndarray, int] | None = None
    for _ in range(_ATTEMPTS):
        res = fn(sc, strength == "subtle", rng)
        if res is None:
            continue
        image, mask = _finish(crop, valid, res)
        n = int(mask.sum())
        if best is None or n > best[2]:
            best = (image, mask, n)
        if n >= min_px:
            break
    if best is None:
        return PhotoEdit(crop.copy(), np.zeros(valid.shape, bool), name, strength)
    return PhotoEdit(best[0], best[1], name, strength)


def check_edit_weights(weights: Mapping[str, float]) -> None:
    """Raise :class:`DataError` unless ``weights`` maps known edit names to finite weights >= 0."""
    unknown = [n for n in weights if n not in _EDITS]
    if unknown:
        raise DataError(f"unknown edit(s) {', '.join(map(repr, unknown))} in edit weights; expected some of: "
                        f"{', '.join(EDIT_NAMES)}")
    bad = {n: w for n, w in weights.items() if not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0}
    if bad:
        raise DataError(f"edit weights must be numbers >= 0, got {bad}")


def random_photo_edit(
    crop: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    donor: np.ndarray | None = None,
    names: Sequence[str] = EDIT_NAMES,
    weights: Mapping[str, float] | None = None,
) -> PhotoEdit:
    """Apply an edit drawn from ``names`` (uniformly, or in proportion to ``weights``: name -> relative
    weight, missing names weigh 1), subtle or gross with equal odds.

    See :func:`apply_photo_edit`; raises :class:`DataError` for an empty ``names``, an unknown name or
    weights that are negative or all zero.
    """
    names = tuple(names)
    if not names:
        raise DataError(f"names must hold at least one edit name; expected some of: {', '.join(EDIT_NAMES)}")
    unknown = [n for n in names if n not in _EDITS]
    if unknown:
        raise DataError(
            f"unknown edit(s) {', '.join(map(repr, unknown))}; expected some of: {', '.join(EDIT_NAMES)}"
        )
    if not isinstance(rng, np.random.Generator):
        raise DataError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {_describe(rng)}"
        )
    if weights:
        check_edit_weights(weights)
        p = np.array([float(weights.get(n, 1.0)) for n in names])
        if p.sum() <= 0:
            raise DataError(f"edit weights {dict(weights)} give every edit of {list(names)} weight 0")
        name = names[int(rng.choice(len(names), p=p / p.sum()))]
    else:
        name = names[int(rng.integers(len(names)))]
    strength = STRENGTHS[int(rng.integers(2))]
    return apply_photo_edit(crop, valid, name, strength, rng, donor)
