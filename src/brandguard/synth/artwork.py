"""Real brand artwork for the synthetic data: Simple Icons logos (CC0) and the DejaVu fonts of matplotlib.

Simple Icons draws every logo as one ``<path d=...>`` in a 24x24 view box. We parse it with ``svg.path``,
sample its curves into polygons once per icon, and fill them with OpenCV at 4x supersampling. Fill rule is
nonzero winding where it matters (icons whose subpaths overlap with the same orientation) and the faster
even-odd rule elsewhere; both give the same result on most icons.

Example:
    >>> from brandguard.synth.artwork import icon_mask, list_brands
    >>> mask = icon_mask(list_brands("demo")[0], 64)
    >>> mask.shape, mask.dtype.name
    ((64, 64), 'float32')
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError

__all__ = [
    "ARTWORK_POOLS",
    "FONTS",
    "Icon",
    "font_path",
    "get_icon",
    "icon_mask",
    "icon_polygons",
    "icon_shape_mask",
    "list_brands",
    "render_icon",
    "shape_similarity",
]

ARTWORK_POOLS = ("demo", "unrelated", "heldout", "heldout_unrelated", "lookalike")

_ASSETS = Path(str(resources.files(__package__) / "assets"))

#: Font keys -> file names inside matplotlib's ``mpl-data/fonts/ttf``.
FONTS: dict[str, str] = {
    "sans": "DejaVuSans.ttf",
    "sans-bold": "DejaVuSans-Bold.ttf",
    "sans-oblique": "DejaVuSans-Oblique.ttf",
    "sans-boldoblique": "DejaVuSans-BoldOblique.ttf",
    "sans-cm": "cmss10.ttf",
    "serif": "DejaVuSerif.ttf",
    "serif-bold": "DejaVuSerif-Bold.ttf",
    "serif-bolditalic": "DejaVuSerif-BoldItalic.ttf",
    "serif-cm": "cmr10.ttf",
    "serif-stix-bold": "STIXGeneralBol.ttf",
    "serif-stix-italic": "STIXGeneralBolIta.ttf",
    "mono": "DejaVuSansMono.ttf",
    "mono-bold": "DejaVuSansMono-Bold.ttf",
}


@dataclass(frozen=True)
class Icon:
    """One Simple Icons logo.

    Attributes:
        slug: Simple Icons slug, also the file name ``icons/<slug>.svg``.
        title: The brand's name as Simple Icons spells it.
        hex: Official brand colour, ``RRGGBB``.
        pool: Which fixed pool the brand belongs to (see :data:`ARTWORK_POOLS`).
        category: Product category used to invent packaging (``sportswear``, ``drink``...).
    """

    slug: str
    title: str
    hex: str
    pool: str
    category: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """Brand colour as an ``(r, g, b)`` tuple of 0..255 ints."""
        return (int(self.hex[0:2], 16), int(self.hex[2:4], 16), int(self.hex[4:6], 16))


@functools.lru_cache(maxsize=1)
def _catalogue() -> dict[str, Icon]:
    with open(_ASSETS / "icons.json", encoding="utf-8") as fh:
        data = json.load(fh)
    return {
        e["slug"]: Icon(e["slug"], e["title"], e["hex"].upper(), e["pool"], e["category"])
        for e in data["icons"]
    }


def list_brands(artwork: str = "demo") -> list[str]:
    """Slugs of the brands in one artwork pool, in a fixed order.

    Args:
        artwork: ``"demo"``, ``"unrelated"``, ``"heldout"``, ``"heldout_unrelated"``, ``"lookalike"`` (icons
            only ever swapped in as look-alike logos) or ``"all"``.

    Returns:
        Sorted list of Simple Icons slugs.

    Raises:
        DataError: For an unknown pool name.

    Example:
        >>> "heldout" in ARTWORK_POOLS and len(list_brands("demo")) >= 20
        True
    """
    cat = _catalogue()
    if artwork == "all":
        return sorted(cat)
    if artwork not in ARTWORK_POOLS:
        raise DataError(
            f"unknown artwork pool {artwork!r}; expected one of {', '.join(ARTWORK_POOLS)} or 'all'"
        )
    return sorted(s for s, ic in cat.items() if ic.pool == artwork)


def get_icon(slug: str) -> Icon:
    """Metadata of one bundled icon; raises :class:`DataError` for a slug that is not bundled."""
    try:
        return _catalogue()[slug]
    except KeyError:
        raise DataError(
            f"icon {slug!r} is not bundled with brandguard.synth; known: {len(_catalogue())} icons"
        ) from None


# ---------------------------------------------------------------------------------------------------------
# SVG path -> polygons
# ---------------------------------------------------------------------------------------------------------


def _svg_path_d(slug: str) -> str:
    text = (_ASSETS / "icons" / f"{slug}.svg").read_text(encoding="utf-8")
    found = re.findall(r'<path[^>]*\sd="([^"]+)"', text)
    if not found:
        raise DataError(f"icon {slug!r}: no <path d=...> in its SVG")
    return " ".join(found)


def _subpaths_from_d(d: str, density: float = 6.0) -> list[np.ndarray]:
    from svg.path import Close, Line, Move, parse_path

    path = parse_path(d)
    polys: list[np.ndarray] = []
    cur: list[complex] = []

    def flush() -> None:
        if len(cur) >= 3:
            polys.append(np.array([[p.real, p.imag] for p in cur], dtype=np.float64))
        cur.clear()

    for seg in path:
        if isinstance(seg, Move):
            flush()
            cur.append(seg.end)
            continue
        if isinstance(seg, (Line, Close)):
            if not cur:
                cur.append(seg.start)
            cur.append(seg.end)
            if isinstance(seg, Close):
                flush()
            continue
        if not cur:
            cur.append(seg.start)
        try:
            length = float(seg.length(error=1e-3, min_depth=3))
        except (ArithmeticError, ValueError):  # pragma: no cover - degenerate segment
            length = abs(seg.end - seg.start)
        n = int(min(200, max(4, np.ceil(length * density))))
        for t in np.linspace(0.0, 1.0, n + 1)[1:]:
            cur.append(seg.point(float(t)))
    flush()
    return polys


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@functools.cache
def icon_polygons(slug: str) -> tuple[tuple[np.ndarray, ...], tuple[float, float, float, float], bool]:
    """Polygons of an icon in its 24x24 view box.

    Returns:
        ``(polygons, bbox, nonzero)``: the closed subpaths as ``(N, 2)`` float arrays, the tight bounding box
        ``(x0, y0, x1, y1)`` in view-box units, and whether the icon needs the nonzero fill rule (its
        even-odd and nonzero fills differ).
    """
    polys = _subpaths_from_d(_svg_path_d(slug))
    if not polys:
        raise DataError(f"icon {slug!r}: its path has no closed area")
    allp = np.concatenate(polys)
    bbox = (
        float(allp[:, 0].min()),
        float(allp[:, 1].min()),
        float(allp[:, 0].max()),
        float(allp[:, 1].max()),
    )
    tup = tuple(polys)
    # decide the fill rule once, at a modest size
    m_eo = _fill(tup, np.diag([4.0, 4.0]), np.zeros(2), (96, 96), nonzero=False)
    m_nz = _fill(tup, np.diag([4.0, 4.0]), np.zeros(2), (96, 96), nonzero=True)
    nonzero = bool(
        np.abs(m_eo.astype(np.int16) - m_nz.astype(np.int16)).sum() > 0.03 * 255 * max(1, m_nz.sum() / 255)
    )
    return tup, bbox, nonzero


def _fill(
    polys: tuple[np.ndarray, ...], lin: np.ndarray, off: np.ndarray, shape: tuple[int, int], nonzero: bool
) -> np.ndarray:
    """Fill transformed polygons (``p' = lin @ p + off``) into a uint8 mask of ``shape`` (h, w)."""
    shift = 3
    scale = float(1 << shift)
    pts = [np.round(((p @ lin.T) + off) * scale).astype(np.int32) for p in polys]
    h, w = shape
    if not nonzero:
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, pts, 255, lineType=cv2.LINE_8, shift=shift)
        return m
    wind = np.zeros((h, w), np.int16)
    tmp = np.zeros((h, w), np.uint8)
    for p, q in zip(polys, pts):
        sign = 1 if _signed_area(p) > 0 else -1
        x0, y0 = np.maximum(q.min(0) // int(scale), 0)
        x1, y1 = np.minimum(q.max(0) // int(scale) + 2, [w, h])
        if x1 <= x0 or y1 <= y0:
            continue
        cv2.fillPoly(tmp, [q], 1, lineType=cv2.LINE_8, shift=shift)
        wind[y0:y1, x0:x1] += sign * tmp[y0:y1, x0:x1].astype(np.int16)
        tmp[y0:y1, x0:x1] = 0
    return np.where(wind != 0, 255, 0).astype(np.uint8)


def render_icon(slug: str, matrix: np.ndarray, shape: tuple[int, int], supersample: int = 4) -> np.ndarray:
    """Rasterise an icon under a 2x3 affine map from view-box units to output pixels.

    Args:
        slug: Icon slug.
        matrix: ``2x3`` affine matrix (view-box coordinates -> output pixel coordinates, pixel centres at
            integer + 0.5).
        shape: Output ``(height, width)``.
        supersample: Supersampling factor per axis.

    Returns:
        ``float32`` coverage mask in ``[0, 1]`` of the given shape.
    """
    polys, _, nonzero = icon_polygons(slug)
    h, w = shape
    s = float(supersample)
    lin = np.asarray(matrix, np.float64)[:, :2] * s
    off = np.asarray(matrix, np.float64)[:, 2] * s
    big = _fill(polys, lin, off, (h * supersample, w * supersample), nonzero)
    small = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


@functools.lru_cache(maxsize=512)
def icon_mask(slug: str, size: int) -> np.ndarray:
    """The icon in its whole 24x24 view box at ``size x size`` pixels (``float32`` coverage in ``[0, 1]``).

    The returned array is cached and shared: do not modify it in place.
    """
    k = size / 24.0
    m = render_icon(slug, np.array([[k, 0, 0], [0, k, 0]]), (size, size))
    m.flags.writeable = False
    return m


@functools.lru_cache(maxsize=512)
def icon_shape_mask(slug: str, size: int = 64) -> np.ndarray:
    """The icon stretched to fill a ``size x size`` square (its aspect normalised away), for shape comparison."""
    _, (x0, y0, x1, y1), _ = icon_polygons(slug)
    sx, sy = size / max(x1 - x0, 1e-6), size / max(y1 - y0, 1e-6)
    m = render_icon(slug, np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]]), (size, size))
    m.flags.writeable = False
    return m


def icon_aspect(slug: str) -> float:
    """Width / height of the icon's tight bounding box."""
    _, (x0, y0, x1, y1), _ = icon_polygons(slug)
    return (x1 - x0) / max(y1 - y0, 1e-6)


def shape_similarity(a: str, b: str) -> float:
    """How alike two logos look in outline: mask IoU after aspect normalisation, damped by aspect mismatch.

    Returns:
        A number in ``[0, 1]``; 1 for identical icons.
    """
    ma, mb = icon_shape_mask(a) > 0.5, icon_shape_mask(b) > 0.5
    iou = float((ma & mb).sum()) / max(1.0, float((ma | mb).sum()))
    ra, rb = icon_aspect(a), icon_aspect(b)
    return iou * float(min(ra, rb) / max(ra, rb)) ** 0.5


def mirror_iou(slug: str, size: int = 96) -> float:
    """IoU of an icon's mask with its left-right mirror (1.0 for a symmetric logo)."""
    m = icon_shape_mask(slug, size) > 0.5
    f = m[:, ::-1]
    return float((m & f).sum()) / max(1.0, float((m | f).sum()))


@functools.cache
def font_path(key: str) -> str:
    """Absolute path of a bundled matplotlib font, by key of :data:`FONTS` (or a file name)."""
    import matplotlib

    name = FONTS.get(key, key)
    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not p.is_file():
        raise DataError(f"font {name!r} not found in matplotlib's data ({p.parent})")
    return str(p)
