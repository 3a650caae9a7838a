"""Price stickers a shop or a seller stuck on the package, read rather than guessed.

A listing photo often shows a price sticker on the package (a shop's label, a second-hand seller's tag).
Where it lies wholly inside the package's outline, its shape and colour say nothing that tells it from a
mark printed on a counterfeit (:mod:`brandguard.occluders` finds only what crosses the outline). What it
says does: a sticker carries a price, and neither the brand's print (which the references show) nor a
counterfeit's extra mark ("NEW", "100% ORIGINAL", "SALE -70%") reads as one.

:func:`find_price_sticker` looks at the patches of the package that stand out from the references (as
:func:`brandguard.occluders.find_occluder` groups them: above :data:`brandguard.mismatch.CHANGED_Z` and
:data:`brandguard.occluders.STAND_OUT` times the photo's median departure), those holding most of the cells a
channel score is the mean of first (:data:`MAX_PATCHES`, :data:`MIN_HELD`). It warps the patch and a margin
around it (:data:`PAD`; beyond the package's edge too, so a sticker cut by the edge of the frame is read
whole) from the photo at the canonical frame's resolution and, where no line is detected over the patch
there, again large enough for the text detector (:func:`detect_scale`: at least :data:`DETECT_SIDE` pixels on its shorter side,
up to 3 times the canonical resolution), detects its text lines and reads the short ones
over the patch (:data:`MAX_ASPECT`, :data:`MAX_LINES`; :meth:`brandguard.text.TextReader.detect`,
:meth:`~brandguard.text.TextReader.recognise_each`). A patch is a price sticker when a line read over it is
a price (:func:`read_price`: ``12.99``, ``3,49``, ``.99``, ``33.9``, ``49,-``, ``$12``, ``12€``; not a
measure, a date, a size, a version or a code: ``1.25 l``, ``99.9%``, ``2024.01``, ``Size 42.5``). The
sticker's extent is the line's background colour grown around it (:func:`_sticker_pixels`), never more than
:data:`REACH` line heights beyond it.

The detector compares the photo again with the sticker's cells (grown by one cell) discounted in every
channel, as it does for an occluder, and says so in the prediction's notes (:data:`STICKER_NOTE`). A
counterfeit's extra mark that does not read as a price stays; so does a price printed on the package in the
references (it does not stand out). Reading needs the ``ocr`` extra; without it nothing is looked for.

Example:
    >>> from brandguard.stickers import read_price
    >>> read_price("12.99"), read_price("SALE -70%"), read_price("1.25L")
    ('12.99', None, None)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from brandguard.localization import _degenerate
from brandguard.mismatch import CHANGED_Z

__all__ = ["DETECT_SIDE", "MAX_DETECT_SCALE", "MAX_PATCHES", "MIN_PRICE_SHARE", "PAD", "STICKER_NOTE", "PriceSticker",
           "detect_scale", "find_price_sticker", "on_a_label", "read_price"]

#: margin read around a patch, as a share of the patch's larger side (at least :data:`_MIN_PAD` pixels):
#: a heatmap patch can miss a sticker's plain corners, and the price must be read whole
PAD = 0.5
_MIN_PAD = 12
#: the price must make up at least this share of the characters of the line it is read in (a line that
#: runs on into the package's print, ``9.99he``, still counts; ``Bluetooth5.3`` does not)
MIN_PRICE_SHARE = 0.5
#: patches read at most per photo, those holding most of the cells the channel scores are the mean of first,
#: and only those holding at least :data:`MIN_HELD` of what the first holds: reading costs 30-150 ms a patch
MAX_PATCHES = 2
MIN_HELD = 0.25
#: the longest line (width over height of its upright crop) read: a price is a few characters long ...
MAX_ASPECT = 5.0
#: ... and the lines read per patch, those covering most of it first
MAX_LINES = 2
#: the most of the package a price sticker may cover
MAX_SHARE = 0.3
_MIN_CELLS = 3
#: CIE Lab distance within which a pixel has the sticker's colour (:func:`_sticker_pixels`)
COLOUR_TOLERANCE = 16.0
#: a sticker reaches at most this many of its price line's heights beyond the line on every side ...
REACH = 0.6
#: ... and covers at least the line's box grown by this share of its height on every side
BOX_MARGIN = 0.25
#: share of a comparison cell the sticker must cover to be left out there
MIN_COVER = 0.3
#: where no line is detected over a patch at the canonical frame's resolution, text is detected again on
#: the region warped at least this many pixels on its shorter side (at most :data:`MAX_DETECT_SCALE` times the
#: canonical resolution): a sticker's region can be too small for the text detector (a price sticker reading
#: ``92.9`` on a demo listing was not found at all at 216x144 pixels, and read right, confidence 0.999, from
#: twice that). Not larger in the first place: larger, the detector's line boxes are tighter, and the sticker
#: grown from them covers less of it
DETECT_SIDE = 320
MAX_DETECT_SCALE = 3.0
STICKER_NOTE = "a price sticker (read {text!r}) left out ({share:.0%} of the package)"

_CURRENCY = "$€£¥₹¢"
_CURRENCY_WORDS = r"(?:rs\.?|usd|eur|gbp|inr|kr|chf)"
_PRICE = re.compile(
    rf"(?<![\d.,])(?:{_CURRENCY_WORDS}|[{_CURRENCY}])?"
    rf"(?:\d{{1,3}}(?:,\d{{3}})+(?:\.\d{{2}})?|\d{{1,3}}(?:\.\d{{3}})+(?:,\d{{2}})?"  # 1,299.00  1.234,56
    rf"|\d{{1,4}}[.,]\d{{2}}|\d{{2,4}}[.,]\d|[.,]\d{{2}}|\d{{1,4}}[.,:]-|^\d{{2,4}}[.,]$"  # 12.99 33.9 .99 49,- 38.
    rf"|(?:(?<=[{_CURRENCY}])|(?<=rs)|(?<=rs\.)|(?<=usd)|(?<=eur)|(?<=gbp)|(?<=inr)|(?<=kr)|(?<=chf))\d{{1,4}}"
    rf"|\d{{1,4}}(?=[{_CURRENCY}]))"  # $12  12€
    rf"[{_CURRENCY}]?(?![\d])", re.IGNORECASE)
#: what after a number makes it a measure, not a price (``1.25l``, ``2.5 kg``, ``99.9%``, ``36.6°C``, ``15.6"``)
_UNIT = re.compile(r"^(?:(?:ml|l|ltr|cl|dl|g|kg|mg|oz|0z|lb|lbs|cm|mm|m|in|inch|ft|fl|v|w|kw|mah|wh|gb|tb|mb|hz|ghz"
                   r"|mhz|pcs|x|z)(?![a-z])|[%°\"'″])", re.IGNORECASE)
#: what before a number makes it a date, a size, a version or a code (``EXP 12.25``, ``Size 42.5``, ``V10.10``)
_LABEL = re.compile(r"(?:exp|bb|best ?before|lot|size|eu|us|uk|v|ver|version|sku|no|nr|gr|ref|art|model|mfg|batch)\.?:?$",
                    re.IGNORECASE)
_YEAR = re.compile(r"^(?:19|20)\d{2}[.,]")


def read_price(text: str) -> str | None:
    """The price an OCR line reads, or None.

    A price is a number with two decimals (``12.99``, ``3,49``, ``1,299.00``, ``1.234,56``), or with one and
    at least two whole digits (``33.9``: the last digit cut off; ``5.3`` is a version or a size) or none when
    it is the whole line (``38.``: the decimals cut off by the package's edge; ``EST 1886.`` and ``SPF 50.``
    are print), two decimals alone (``.99``: the units cut off), a whole number ending ``,-`` (``49,-``) or a whole number
    with a currency sign or word (``$12``, ``12€``, ``₹99``, ``Rs 99``); it must make up at least
    :data:`MIN_PRICE_SHARE` of the line's characters (spaces ignored) and be neither followed by a unit of
    measure (``1.25l``, ``2.5 kg``, ``5.3V``, ``99.9%``, ``36.6°C``, ``15.6"`` are print) nor preceded by a
    label that makes it a date, a size, a version or a code (``EXP 12.25``, ``Size 42.5``, ``V 10.10``,
    ``SKU 12.34``), nor start with a year (``2024.01``).
    """
    line = re.sub(r"\s+", "", str(text))
    if not line:
        return None
    for m in _PRICE.finditer(line):
        token = m.group(0)
        if _UNIT.match(line[m.end():]) or _LABEL.search(line[:m.start()]) or _YEAR.match(token):
            continue
        if len(token) >= MIN_PRICE_SHARE * len(line):
            return token
    return None


@dataclass
class PriceSticker:
    """What :func:`find_price_sticker` found.

    Attributes:
        cells: ``(G, G)`` bool, the comparison cells it covers (grown by one cell), to be discounted.
        share: share of the compared cells it covers.
        text: the price read on it.
    """

    cells: np.ndarray
    share: float
    text: str

    @property
    def note(self) -> str:
        return STICKER_NOTE.format(text=self.text, share=self.share)


def _read_region(image: np.ndarray, H: np.ndarray, box: tuple[float, float, float, float],
                 scale: float = 1.0) -> np.ndarray:
    """The photo inside canonical box ``(x0, y0, x1, y1)`` (pixels; it may reach beyond the frame), warped
    at ``scale`` times the canonical frame's resolution."""
    x0, y0, x1, y1 = box
    T = np.array([[1 / scale, 0, x0], [0, 1 / scale, y0], [0, 0, 1]], np.float64)
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    return cv2.warpPerspective(np.ascontiguousarray(img[..., :3]), np.asarray(H, np.float64) @ T,
                               (max(1, round(scale * (x1 - x0))), max(1, round(scale * (y1 - y0)))),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def detect_scale(region_shape: tuple[int, ...]) -> float:
    """How much larger than the canonical frame's resolution a region of ``region_shape`` is read for text
    detection: enough for :data:`DETECT_SIDE` pixels on its shorter side, between 1 and
    :data:`MAX_DETECT_SCALE`."""
    short = max(1, min(region_shape[:2]))
    return float(min(MAX_DETECT_SCALE, max(1.0, DETECT_SIDE / short)))


def _clip_box(box: Sequence[float], h: int, w: int) -> tuple[int, int, int, int]:
    """``box`` ``[x0, y0, x1, y1]`` rounded to whole pixels inside an ``h x w`` image, at least one pixel."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return max(0, x0), max(0, y0), min(w, max(x1, x0 + 1)), min(h, max(y1, y0 + 1))


def _lab(image: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` float32 CIE Lab of a uint8 RGB image, lightly blurred (sigma 1 px) against JPEG noise."""
    return cv2.cvtColor(cv2.GaussianBlur(image.astype(np.float32) / 255.0, (0, 0), 1.0), cv2.COLOR_RGB2LAB)


def _grown_colour(lab: np.ndarray, colour: np.ndarray, seed: Any) -> np.ndarray:
    """``(h, w)`` bool, the pixels within :data:`COLOUR_TOLERANCE` (CIE Lab) of ``colour``, closed across
    thin strokes, that are connected to a pixel of ``seed`` (a bool mask or an index such as a slice)."""
    near = (np.linalg.norm(lab - colour, axis=2) < COLOUR_TOLERANCE).astype(np.uint8)
    near = cv2.morphologyEx(near, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))  # across the strokes
    _, labels = cv2.connectedComponents(near, connectivity=8)
    touching = np.unique(labels[seed])
    return np.isin(labels, touching[touching > 0])


def _sticker_pixels(region: np.ndarray, line_box: list[float]) -> np.ndarray:
    """``(h, w)`` bool, the sticker a price line was read on: the pixels of the line's background colour
    (the median colour inside its box: strokes are the fewer pixels) connected to the line, within
    :data:`COLOUR_TOLERANCE` (CIE Lab) and :data:`REACH` line heights of it, filled to their convex hull,
    and at least the line's box grown by :data:`BOX_MARGIN` of its height (where the sticker has the
    package's colour, the colour says nothing of its extent)."""
    h, w = region.shape[:2]
    x0, y0, x1, y1 = _clip_box(line_box, h, w)
    lh = max(1, y1 - y0)
    m = round(BOX_MARGIN * lh)
    fallback = np.zeros((h, w), bool)
    fallback[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = True
    # a sticker is not much larger than its price: at most REACH line heights beyond the line on every side
    r = round(REACH * lh)
    bound = np.zeros((h, w), bool)
    bound[max(0, y0 - r):y1 + r, max(0, x0 - r):x1 + r] = True
    lab = _lab(region)
    colour = np.median(lab[y0:y1, x0:x1].reshape(-1, 3), axis=0)
    grown = _grown_colour(lab, colour, np.s_[y0:y1, x0:x1]) & bound
    if not grown.any():
        return fallback
    hull = cv2.convexHull(cv2.findNonZero(grown.astype(np.uint8)))
    out = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return (out.astype(bool) & bound) | fallback


#: a label or badge reaches at most this many of its line's heights beyond the line on every side
#: (:func:`on_a_label`)
LABEL_REACH = 2.5


def on_a_label(image: np.ndarray, box: Sequence[float]) -> bool:
    """Whether a text line of ``image`` is printed on a label, badge or sticker of its own: the pixels of its
    background colour (the median of a thin ring around its box) connected to that ring reach
    at most :data:`LABEL_REACH` line heights beyond the line on every side, and not the image's edge. A line
    printed on the package's own background (another brand's name on a shared template) is connected to
    most of the package.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, e.g. an aligned crop.
        box: the line's ``[x0, y0, x1, y1]`` in ``image`` pixels.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _clip_box(box, h, w)
    lh = max(1, y1 - y0)
    lab = _lab(image)
    # the background's colour: the median of a thin ring just outside the line's box (inside it, bold
    # letters can be half the pixels)
    m = max(2, round(0.15 * lh))
    ring = np.zeros((h, w), bool)
    ring[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = True
    ring[y0:y1, x0:x1] = False
    if not ring.any():
        return False
    colour = np.median(lab[ring], axis=0)
    grown = _grown_colour(lab, colour, ring)
    if not grown.any():
        return False
    ys, xs = np.nonzero(grown)
    r = LABEL_REACH * lh
    return bool(ys.min() > 0 and xs.min() > 0 and ys.max() < h - 1 and xs.max() < w - 1
                and ys.min() >= y0 - r and ys.max() <= y1 + r and xs.min() >= x0 - r and xs.max() <= x1 + r)


def _box_pixels(shape: tuple[int, ...], box: list[float]) -> np.ndarray:
    """``shape`` bool, True inside ``box`` ``[x0, y0, x1, y1]`` (pixels)."""
    out = np.zeros(shape[:2], bool)
    x0, y0, x1, y1 = (max(0, round(v)) for v in box)
    out[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = True
    return out


def _region_to_cells(pixels: np.ndarray, box: tuple[float, float, float, float], cell: int, G: int) -> np.ndarray:
    """``(G, G)`` bool, the comparison cells at least :data:`MIN_COVER` covered by ``pixels`` of a region
    read from canonical box ``box`` (its part inside the frame)."""
    S = G * cell
    frame = np.zeros((S, S), np.float32)
    ox, oy = round(box[0]), round(box[1])
    h, w = pixels.shape
    fx0, fy0, fx1, fy1 = max(0, ox), max(0, oy), min(S, ox + w), min(S, oy + h)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = pixels[fy0 - oy:fy1 - oy, fx0 - ox:fx1 - ox]
    return cv2.resize(frame, (G, G), interpolation=cv2.INTER_AREA) >= MIN_COVER


def _read_price_over(image: np.ndarray, H: np.ndarray, box: tuple[float, float, float, float], region: np.ndarray,
                     f: float, patch: np.ndarray, mask: np.ndarray, reader: Any, cell: int,
                     G: int) -> tuple[tuple[np.ndarray, str] | None, bool]:
    """``((cells, price) or None, whether any line was detected over the patch)``: the cells of a price sticker
    read over ``patch`` in canonical box ``box`` (``region`` is the photo there at the canonical resolution;
    text is detected and read at ``f`` times it), grown by one cell."""
    large = region if f == 1.0 else _read_region(image, H, box, f)
    # only the lines over the patch are read (the margin holds the package's own print too)
    found: list[tuple[int, Any, np.ndarray]] = []
    for lb_large, crop in reader.detect(large) or []:
        lb = [float(v) / f for v in lb_large]  # the region's pixels at the canonical resolution
        over = int((_region_to_cells(_box_pixels(region.shape[:2], lb), box, cell, G) & patch).sum())
        if over and crop.shape[1] <= MAX_ASPECT * crop.shape[0]:  # a price is a short line
            found.append((over, lb, crop))
    lines = [(lb, crop) for _, lb, crop in sorted(found, key=lambda t: -t[0])[:MAX_LINES]]
    for (lb, _), (text, _conf) in zip(lines, reader.recognise_each([c for _, c in lines]) if lines else []):
        price = read_price(text)
        if price is None:
            continue
        sticker = _sticker_pixels(region, lb)  # region pixels -> canonical cells
        cells = _region_to_cells(sticker, box, cell, G) & mask
        if (cells & patch).any():  # the price is read over the patch, not beside it
            return (cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & mask, price), True
    return None, bool(lines)


def find_price_sticker(image: np.ndarray, H: np.ndarray, size: int, heat: np.ndarray, mask: np.ndarray,
                       reader: Any, *, cell: int, top: np.ndarray | None = None) -> PriceSticker | None:
    """A price sticker on the package (see the module docstring), or None.

    Args:
        image: ``(h, w, 3)`` uint8 RGB (or ``(h, w)`` grey), the photo ``H`` was found on.
        H: ``3x3`` canonical -> photo pixels.
        size: side ``S`` of the canonical frame (pixels).
        heat: ``(G, G)`` float32 standardised departure per cell, the largest over the channels.
        mask: ``(G, G)`` bool, the compared cells (``Comparison.mask``).
        reader: a :class:`brandguard.text.TextReader` (anything with its ``detect`` and ``recognise_each``).
        cell: comparison cell (canonical pixels), ``S // G``.
        top: ``(G, G)`` bool, the cells the channel scores are the mean of
            (:func:`brandguard.occluders.top_cells`); only a patch that holds one of them can change a score.
            None: every patch.

    Returns:
        The :class:`PriceSticker` (every patch read as a price, together), or None.

    Raises:
        ValueError: ``image`` is not a uint8 RGB or grey photo, ``H`` not 3x3, or ``heat`` and ``mask`` not of
            one square shape.
    """
    from brandguard.occluders import STAND_OUT

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"find_price_sticker expects a uint8 RGB (or grey) photo, got {image.dtype}; convert it "
                         "with brandguard.images.load_image or np.clip(x, 0, 255).astype(np.uint8)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or image.size == 0:
        raise ValueError(f"find_price_sticker expects an (h, w, 3) RGB or (h, w) grey photo, got shape {image.shape}")
    if np.shape(H) != (3, 3):
        raise ValueError(f"find_price_sticker expects a 3x3 homography, got shape {np.shape(H)}")
    heat = np.asarray(heat, np.float32)
    if heat.ndim != 2 or heat.shape[0] != heat.shape[1] or np.shape(mask) != heat.shape:
        raise ValueError(f"find_price_sticker expects heat and mask of one (G, G) shape, got {heat.shape} and "
                         f"{np.shape(mask)}")
    mask = np.asarray(mask, bool)
    G = heat.shape[0]
    if not mask.any() or _degenerate(np.asarray(H, np.float64)):
        return None
    level = float(np.median(heat[mask]))
    hot = ((heat > max(CHANGED_Z, STAND_OUT * level)) & mask).astype(np.uint8)
    n, labels, st, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    limit = MAX_SHARE * mask.sum()
    cand = [k for k in range(1, n) if _MIN_CELLS <= st[k, cv2.CC_STAT_AREA] <= limit
            and (top is None or (top & (labels == k)).any())]
    # the patches that hold most of the cells the scores are the mean of first: only they can lower a score much
    held = {k: int((labels == k).sum() if top is None else (top & (labels == k)).sum()) for k in cand}
    cand.sort(key=lambda k: (-held[k], -float(heat[labels == k].max())))
    most = max(held.values(), default=0)
    covered = np.zeros((G, G), bool)
    prices: list[str] = []
    for k in cand[:MAX_PATCHES]:
        if held[k] < MIN_HELD * most:
            break
        x, y, w, h = (int(v) for v in st[k, :4])
        pad = max(_MIN_PAD, PAD * max(w, h) * cell)
        box = (x * cell - pad, y * cell - pad, (x + w) * cell + pad, (y + h) * cell + pad)
        patch = cv2.dilate((labels == k).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region = _read_region(image, H, box)
        # read at the canonical resolution first; where no line at all is detected over the patch there, again
        # larger (the text detector can miss a sticker's line at that size, see DETECT_SIDE)
        read, lines = _read_price_over(image, H, box, region, 1.0, patch, mask, reader, cell, G)
        larger = detect_scale(region.shape)
        if not lines and larger > 1.0:
            read, _ = _read_price_over(image, H, box, region, larger, patch, mask, reader, cell, G)
        if read is not None:
            covered |= read[0]
            prices.append(read[1])
    if not covered.any():
        return None
    share = float(covered.sum() / mask.sum())
    if share > MAX_SHARE:
        return None
    return PriceSticker(covered, share, ", ".join(prices))

