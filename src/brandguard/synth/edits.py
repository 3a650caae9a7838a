"""Counterfeit-style edits of a package design.

Each edit is a function ``(design, strength, rng) -> design`` where ``strength`` is ``"subtle"`` (visible to a
careful human comparing with the real product at listing resolution) or ``"gross"`` (obvious). They change
only what their name says; everything else of the design stays as it was.

=====================  ==========================================  ==============================================
edit                   subtle                                      gross
=====================  ==========================================  ==============================================
recolored_logo         hue rotated 25-40 deg (grey logos: tinted)  hue rotated 90-180 deg (grey logos: vivid)
mirrored_logo          logo mirrored                               logo and wordmark mirrored
distorted_logo         15-20 % stretch, squash or shear            38-45 % stretch, squash or shear
misspelled_wordmark    one letter -> look-alike ('Adibas')         two edits: swapped letters + a replacement
wrong_font             similar sans / other weight                 serif, mono or italic
lookalike_logo         most similar other icon (mask IoU)          a dissimilar other icon
missing_part           15-25 % of the logo's ink erased            40-60 % erased
moved_logo             shifted 8-12 % of the width, or x0.8        shifted 22-28 %, or x0.55
packaging_color        background hue 20-30 deg (grey: tinted)     background hue 90-180 deg (grey: vivid)
extra_mark             badge/star/tag, 3-5 % of the face           sticker, 12-20 % of the face
=====================  ==========================================  ==============================================

Example:
    >>> import numpy as np
    >>> from brandguard.synth import EDITS, make_design
    >>> d = make_design("adidas", 0)
    >>> EDITS["mirrored_logo"](d, "subtle", np.random.default_rng(0)).logo.mirrored
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..errors import DataError
from .artwork import get_icon, icon_aspect, icon_shape_mask, list_brands, shape_similarity
from .design import (
    BLACK,
    RGB,
    WHITE,
    MarkSpec,
    PackageDesign,
    _hsv,
    _rgb,
    contrast,
    logo_box,
    shift_hue,
)

__all__ = ["EDITS", "STRENGTHS", "apply_edit"]

STRENGTHS = ("subtle", "gross")

Edit = Callable[[PackageDesign, str, np.random.Generator], PackageDesign]


def _check(strength: str) -> bool:
    if strength not in STRENGTHS:
        raise DataError(f"edit strength must be 'subtle' or 'gross', got {strength!r}")
    return strength == "subtle"


def _recolor(c: RGB, subtle: bool, rng: np.random.Generator, lo: float, hi: float, glo: float = 90.0) -> RGB:
    _h, s, v = _hsv(c)
    if s > 0.2 and v > 0.15:
        deg = rng.uniform(lo, hi) if subtle else rng.uniform(glo, 180.0)
        return shift_hue(c, deg * rng.choice([-1.0, 1.0]))
    hue = rng.random()
    if subtle:  # grey/white/black: a clear but muted tint
        if v > 0.6:
            return _rgb(hue, rng.uniform(0.22, 0.3), v * 0.97)
        return _rgb(hue, rng.uniform(0.6, 0.75), max(v, 0.32))
    return _rgb(hue, rng.uniform(0.75, 0.95), rng.uniform(0.7, 0.9))


# ---------------------------------------------------------------------------------------------------------


def recolored_logo(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Change the logo's colour (hue rotation; a tint or a vivid colour for grey logos)."""
    subtle = _check(strength)
    bg = d.logo.plate[1] if d.logo.plate else d.background[0]
    new = d.logo.color
    for _ in range(8):
        new = _recolor(d.logo.color, subtle, rng, 25.0, 40.0)
        if contrast(new, bg) >= 1.6 and new != d.logo.color:
            break
    return replace(d, logo=replace(d.logo, color=new))


def mirrored_logo(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Mirror the logo left-right (gross: the wordmark too)."""
    subtle = _check(strength)
    out = replace(d, logo=replace(d.logo, mirrored=not d.logo.mirrored))
    if not subtle:
        out = replace(out, wordmark=replace(d.wordmark, mirrored=not d.wordmark.mirrored))
    return out


def _fit_inside(d: PackageDesign, margin: float = 0.01) -> PackageDesign:
    """Shrink the logo about its centre until it lies inside the face."""
    for _ in range(20):
        x0, y0, x1, y1 = logo_box(d)
        W, H = d.width, d.height
        if x0 >= margin * W and y0 >= margin * H and x1 <= (1 - margin) * W and y1 <= (1 - margin) * H:
            return d
        d = replace(d, logo=replace(d.logo, width=d.logo.width * 0.93))
    return d


def distorted_logo(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Stretch, squash or shear the logo anisotropically (subtle 15-20 %, gross 38-45 %)."""
    subtle = _check(strength)
    a = float(rng.uniform(0.15, 0.20) if subtle else rng.uniform(0.38, 0.45))
    mode = str(rng.choice(["stretch_x", "stretch_y", "squash_x", "shear"]))
    lg = d.logo
    if mode == "stretch_x":
        lg = replace(lg, stretch_x=lg.stretch_x * (1 + a))
    elif mode == "stretch_y":
        lg = replace(lg, stretch_y=lg.stretch_y * (1 + a))
    elif mode == "squash_x":
        lg = replace(lg, stretch_x=lg.stretch_x * (1 - a))
    else:
        lg = replace(lg, shear=lg.shear + a * float(rng.choice([-1.0, 1.0])))
    return _fit_inside(replace(d, logo=lg))


# look-alike letters of about the same width, so a subtle misspelling does not reflow the wordmark
_LOOKALIKE_LOWER = {
    "a": "o",
    "b": "d",
    "c": "e",
    "d": "b",
    "e": "c",
    "f": "t",
    "g": "q",
    "h": "n",
    "i": "l",
    "k": "x",
    "l": "i",
    "m": "rn",
    "n": "h",
    "o": "a",
    "p": "q",
    "q": "p",
    "s": "z",
    "t": "f",
    "u": "v",
    "v": "u",
    "w": "vv",
    "x": "k",
    "y": "v",
    "z": "s",
}
_LOOKALIKE_UPPER = {
    "B": "D",
    "C": "G",
    "D": "O",
    "E": "F",
    "F": "E",
    "G": "C",
    "I": "l",
    "K": "X",
    "O": "Q",
    "P": "R",
    "Q": "O",
    "R": "P",
    "U": "V",
    "V": "U",
    "W": "VV",
    "X": "K",
    "Y": "V",
}


def _lookalike(ch: str) -> str | None:
    return _LOOKALIKE_LOWER.get(ch) or _LOOKALIKE_UPPER.get(ch)


def _replace_one(text: str, rng: np.random.Generator, avoid: frozenset[int] = frozenset()) -> tuple[str, int]:
    pos = [i for i, ch in enumerate(text) if _lookalike(ch) and i not in avoid]
    interior = [i for i in pos if 0 < i < len(text) - 1]
    pool = interior if interior and rng.random() < 0.8 else pos
    if not pool:
        return text, -1
    i = int(rng.choice(pool))
    return text[:i] + str(_lookalike(text[i])) + text[i + 1 :], i


def misspell(text: str, strength: str, rng: np.random.Generator) -> str:
    """Misspell a brand name: one look-alike letter (subtle) or swapped letters plus a replacement (gross)."""
    subtle = _check(strength)
    if subtle:
        out, _ = _replace_one(text, rng)
        return out if out != text else text + text[-1]
    # gross: swap two adjacent distinct letters, then replace another letter
    pairs = [
        i
        for i in range(len(text) - 1)
        if text[i].isalpha() and text[i + 1].isalpha() and text[i] != text[i + 1]
    ]
    out = text
    touched: set[int] = set()
    if pairs:
        i = int(rng.choice(pairs))
        out = out[:i] + out[i + 1] + out[i] + out[i + 2 :]
        touched = {i, i + 1}
    out2, j = _replace_one(out, rng, frozenset(touched))
    if j < 0 or out2 == text:
        out2, _ = _replace_one(out, rng)
    if out2 == text or sum(a != b for a, b in zip(out2, text)) < 2:
        out2 = out2 + out2[-1]
    return out2


def misspelled_wordmark(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Misspell the wordmark (subtle: one look-alike letter; gross: two edits)."""
    return replace(d, wordmark=replace(d.wordmark, text=misspell(d.wordmark.text, strength, rng)))


_SUBTLE_FONTS = {
    "sans-bold": ["sans", "sans-cm"],
    "sans": ["sans-bold", "sans-cm"],
    "sans-boldoblique": ["sans-oblique", "sans-bold"],
    "sans-oblique": ["sans-boldoblique"],
    "serif-bold": ["serif", "serif-stix-bold"],
    "serif": ["serif-bold", "serif-cm"],
}
_GROSS_FONTS = {
    "sans": ["serif-bold", "serif-bolditalic", "mono-bold", "serif-stix-italic", "serif-cm"],
    "serif": ["mono-bold", "sans-boldoblique", "mono"],
}


def wrong_font(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Set the wordmark in another font (subtle: a similar sans or weight; gross: serif, mono or italic)."""
    subtle = _check(strength)
    cur = d.wordmark.font
    if subtle:
        choices = _SUBTLE_FONTS.get(cur, ["sans-bold", "sans"])
    else:
        choices = _GROSS_FONTS["serif" if cur.startswith("serif") else "sans"]
    choices = [c for c in choices if c != cur] or ["mono-bold"]
    font = str(rng.choice(choices))
    out = replace(d, wordmark=replace(d.wordmark, font=font))
    if not subtle:
        out = replace(
            out, product_line=replace(d.product_line, font="serif" if not cur.startswith("serif") else "mono")
        )
    return out


def _similar_icons(slug: str) -> list[tuple[float, str]]:
    # stay within the artwork family (demo or held-out) so held-out data never shows a demo icon
    pool = get_icon(slug).pool
    family = ("heldout", "heldout_unrelated") if pool.startswith("heldout") else ("demo", "unrelated")
    others = [s for p in (*family, "lookalike") for s in list_brands(p) if s != slug]
    return sorted(((shape_similarity(slug, s), s) for s in others), reverse=True)


def lookalike_logo(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Swap in another brand's icon (subtle: one of the three most similar in shape; gross: a dissimilar one)."""
    subtle = _check(strength)
    ranked = _similar_icons(d.logo.slug)
    pool = ranked[:3] if subtle else ranked[len(ranked) // 2 :]
    new = pool[int(rng.integers(len(pool)))][1]
    # keep the bounding-box area of the original logo
    w = d.logo.width * math.sqrt(icon_aspect(new) / icon_aspect(d.logo.slug))
    lg = replace(d.logo, slug=new, width=float(w), mirrored=False, erase=None)
    return _fit_inside(replace(d, logo=lg))


def _erase_region(
    slug: str, frac: float, rng: np.random.Generator, subtle: bool
) -> tuple[str, float, float, float, float]:
    """An erase region (icon-box normalised coords) removing about ``frac`` of the icon's ink."""
    n = 96
    m = np.asarray(icon_shape_mask(slug, n), np.float64)
    total = m.sum()
    u = (np.arange(n) + 0.5) / n
    modes = ["side", "disc", "band"] if subtle else ["side", "disc"]
    mode = str(rng.choice(modes))
    if mode == "disc":
        ys, xs = np.nonzero(m > 0.5)
        k = int(rng.integers(len(ys)))
        cx, cy = u[xs[k]], u[ys[k]]
        # the disc radius is relative to the larger side of the box; shape masks are aspect-normalised
        asp = icon_aspect(slug)
        rx_per_r = max(asp, 1.0) / asp
        ry_per_r = max(asp, 1.0)
        X, Y = np.meshgrid(u, u)
        lo, hi = 0.0, 1.5
        for _ in range(30):
            r = (lo + hi) / 2
            inside = ((X - cx) / (r * rx_per_r)) ** 2 + ((Y - cy) / (r * ry_per_r)) ** 2 <= 1
            f = m[inside].sum() / total
            lo, hi = (r, hi) if f < frac else (lo, r)
        if hi < 0.6:
            return ("disc", float(cx), float(cy), float(hi), 0.0)
        mode = "side"
    if mode == "band":
        horizontal = bool(rng.random() < 0.5)
        prof = m.sum(1 if horizontal else 0) / total  # ink per row (horizontal band) or column
        c = float(rng.uniform(0.3, 0.7))
        lo, hi = 0.0, 1.0
        for _ in range(30):
            half = (lo + hi) / 2
            f = prof[(u > c - half) & (u < c + half)].sum()
            lo, hi = (half, hi) if f < frac else (lo, half)
        a, b = c - hi, c + hi
        return ("rect", -0.05, a, 1.05, b) if horizontal else ("rect", a, -0.05, b, 1.05)
    side = str(rng.choice(["left", "right", "top", "bottom"]))
    axis = 0 if side in ("left", "right") else 1
    prof = m.sum(axis) / total  # ink per column (left/right) or per row
    cum = np.cumsum(prof if side in ("left", "top") else prof[::-1])
    k = int(np.searchsorted(cum, frac))
    t = (k + 1) / n
    if side == "left":
        return ("rect", -0.05, -0.05, t, 1.05)
    if side == "right":
        return ("rect", 1 - t, -0.05, 1.05, 1.05)
    if side == "top":
        return ("rect", -0.05, -0.05, 1.05, t)
    return ("rect", -0.05, 1 - t, 1.05, 1.05)


def missing_part(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Leave out part of the logo (subtle 15-25 % of its ink, gross 40-60 %)."""
    subtle = _check(strength)
    frac = float(rng.uniform(0.15, 0.25) if subtle else rng.uniform(0.40, 0.60))
    return replace(d, logo=replace(d.logo, erase=_erase_region(d.logo.slug, frac, rng, subtle)))


def moved_logo(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Move the logo (subtle 8-12 % of the width, gross 22-28 %) or rescale it (x0.8 / x0.55)."""
    subtle = _check(strength)
    if rng.random() < 0.5:
        dist = float(rng.uniform(0.08, 0.12) if subtle else rng.uniform(0.22, 0.28))
        angles = rng.permutation(8) * (math.pi / 4)
        for a in angles:
            dx, dy = dist * math.cos(a), dist * math.sin(a) * d.width / d.height
            cand = replace(d, logo=replace(d.logo, cx=d.logo.cx + dx, cy=d.logo.cy + dy))
            x0, y0, x1, y1 = logo_box(cand)
            if (
                x0 >= 0.01 * d.width
                and x1 <= 0.99 * d.width
                and y0 >= 0.01 * d.height
                and y1 <= 0.99 * d.height
            ):
                return cand
    f = 0.8 if subtle else 0.55
    return replace(d, logo=replace(d.logo, width=d.logo.width * f))


def packaging_color(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Change the packaging colours (background hue: subtle 20-30 deg, gross 90-180 deg)."""
    subtle = _check(strength)
    _h, s, v = _hsv(d.background[0])
    if s > 0.15 and v > 0.12:
        deg = float(rng.uniform(20, 30) if subtle else rng.uniform(90, 180)) * float(rng.choice([-1.0, 1.0]))
        new = tuple(shift_hue(c, deg) for c in d.background)
    else:
        hue = rng.random()
        if subtle:
            base = _rgb(hue, 0.2, v * 0.97) if v > 0.6 else _rgb(hue, 0.55, max(v, 0.28))
        else:
            base = _rgb(hue, rng.uniform(0.6, 0.85), rng.uniform(0.55, 0.8))
        rest = tuple(c if _hsv(c)[1] > 0.15 else shift_hue(base, 20) for c in d.background[1:])
        new = (base, *rest)
    return replace(d, background=new)  # type: ignore[arg-type]


_SMALL_TEXTS = ("NEW", "ORIGINAL", "100%", "TOP", "HOT", "SALE", "BEST")
_BIG_TEXTS = (
    "ORIGINAL\nQUALITY",
    "SALE\n-70%",
    "GENUINE\nPRODUCT",
    "BEST\nPRICE",
    "100%\nAUTHENTIC",
    "NEW\nFORMULA",
)
_MARK_COLORS: tuple[RGB, ...] = (
    (230, 30, 40),
    (255, 200, 0),
    (20, 140, 60),
    (255, 120, 0),
    (200, 160, 60),
    (30, 90, 200),
)


def extra_mark(d: PackageDesign, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Add a mark the real product does not have (subtle: small badge 3-5 % of the face; gross: sticker 12-20 %)."""
    subtle = _check(strength)
    color = _MARK_COLORS[int(rng.integers(len(_MARK_COLORS)))]
    text_color = BLACK if _hsv(color)[2] > 0.8 and color[1] > 150 else WHITE
    if subtle:
        area = float(rng.uniform(0.03, 0.05))
        kind = str(rng.choice(["badge", "star", "tag"]))
        text = str(rng.choice(_SMALL_TEXTS))
        if kind == "tag":
            aspect, size = 2.2, math.sqrt(area)
        else:
            aspect, size = 1.0, math.sqrt(area / (math.pi / 4) / (0.85 if kind == "star" else 1.0))
    else:
        area = float(rng.uniform(0.12, 0.20))
        kind, text = "sticker", str(rng.choice(_BIG_TEXTS))
        aspect = float(rng.uniform(1.1, 1.8))
        size = math.sqrt(area)
    # half extents as fractions of width / height
    side = size * math.sqrt(d.width * d.height)
    hx = side / 2 * math.sqrt(aspect) / d.width
    hy = side / 2 / math.sqrt(aspect) / d.height
    lx0, ly0, lx1, ly1 = logo_box(d)
    best, best_ov = (0.5, 0.5), float("inf")
    for _ in range(12):
        cx = float(rng.uniform(hx + 0.03, 1 - hx - 0.03)) if hx < 0.47 else 0.5
        cy = float(rng.uniform(hy + 0.03, 1 - hy - 0.03)) if hy < 0.47 else 0.5
        ox = max(0.0, min(lx1, (cx + hx) * d.width) - max(lx0, (cx - hx) * d.width))
        oy = max(0.0, min(ly1, (cy + hy) * d.height) - max(ly0, (cy - hy) * d.height))
        ov = ox * oy
        if subtle and ov < best_ov:  # a small badge sits beside the logo, as a real one would
            best, best_ov = (cx, cy), ov
        elif not subtle:
            best = (cx, cy)
            break
    mark = MarkSpec(
        kind=kind,
        cx=best[0],
        cy=best[1],
        size=float(size),
        color=color,
        text=text,
        text_color=text_color,
        aspect=float(aspect),
    )
    return replace(d, marks=(*d.marks, mark))


EDITS: dict[str, Edit] = {
    "recolored_logo": recolored_logo,
    "mirrored_logo": mirrored_logo,
    "distorted_logo": distorted_logo,
    "misspelled_wordmark": misspelled_wordmark,
    "wrong_font": wrong_font,
    "lookalike_logo": lookalike_logo,
    "missing_part": missing_part,
    "moved_logo": moved_logo,
    "packaging_color": packaging_color,
    "extra_mark": extra_mark,
}


def apply_edit(design: PackageDesign, name: str, strength: str, rng: np.random.Generator) -> PackageDesign:
    """Apply the edit called ``name`` (a key of :data:`EDITS`); raises :class:`DataError` for an unknown one.

    Example:
        >>> import numpy as np
        >>> from brandguard.synth import make_design
        >>> d = make_design("nike", 0)
        >>> apply_edit(d, "wrong_font", "gross", np.random.default_rng(1)).wordmark.font != d.wordmark.font
        True
    """
    try:
        fn = EDITS[name]
    except KeyError:
        raise DataError(f"unknown edit {name!r}; known: {', '.join(EDITS)}") from None
    return fn(design, strength, rng)
