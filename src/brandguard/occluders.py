"""Things on top of the package that cross its outline: a finger, a price sticker, a pen, the rim of a cup.

A listing photo often shows the package held in a hand or with something lying on it. Where it covers the
package, the photo departs from every reference, in colour most of all, exactly as a mark printed on a
counterfeit does. What tells them apart is where the thing ends: print ends inside the package's outline;
a finger, a sticker stuck across the edge or a pen lying over the package continues beyond it, over the
background. :func:`find_occluder` looks for that:

1. The cells of the package that stand out from the references (the comparison's heatmap above
   :data:`brandguard.mismatch.CHANGED_Z` and :data:`STAND_OUT` times the photo's median departure) are
   grouped into connected patches; only patches that reach the band of cells along the edge of the compared
   region (:data:`EDGE_CELLS`) can be something that comes over the edge, and only those holding a cell a
   channel score is the mean of (:func:`top_cells`) can change a score.
2. The photo is warped into the product's canonical frame extended by :data:`EXTEND` of a frame on every
   side (the package in the middle, what surrounds it around) and lightly blurred. The pixels whose colour
   lies within :data:`COLOUR_TOLERANCE` (CIE Lab distance) of the patch's median colour, connected to the
   patch, are what the patch is made of: the patch *grown by its own colour*.
3. The patch is an occluder when what it is made of
   * continues beyond the package's outline (:func:`package_box`), over at least :data:`MIN_BEYOND` of the
     frame's area and at least :data:`MIN_REACH` of its side away from it (print stops at the package's
     outline, a finger or a pen goes on); or, where the package lies at the edge of the photo and that side
     of its outline is an edge seen in the photo, runs across the outline out of the photo (the photo ends
     before the thing could go on; a mark printed up to a package's edge that the photo cuts within about
     :data:`_BEYOND_GAP` search pixels of it cannot be told from that);
   * covers at most :data:`MAX_RING` of a band :data:`RING` wide around the outline (a thing crosses the
     outline somewhere; a backdrop of the colour of an edit at the package's edge surrounds the package);
   * is one simple (convex) shape where it lies over the frame (:data:`MIN_SOLIDITY`: a finger, a sticker, a
     pen; not the thing's colour running on into print of a like colour);
   * departs from the references wherever it covers the package (:data:`MIN_PURITY` of the cells it covers:
     grown into the package's own print, which matches the references, it is print, not something on top);
   * covers at most :data:`MAX_SHARE` of the package (beyond that, too little of the print is left to judge).

The detector then compares the photo again with those cells (grown by one cell: the contact shadow, the
blur of the edge) discounted in every channel, as the learned occlusion head's cells are
(:func:`brandguard.mismatch.anomaly_maps`), and says so in the prediction's notes (:data:`OCCLUDER_NOTE`).
A mark printed on the package, however large, does not continue beyond the package and stays; so does a
sticker that lies wholly inside it (its shape and colour do not tell it from printed marks; where it reads as
a price, :mod:`brandguard.stickers` leaves it out).

Example:
    >>> import numpy as np
    >>> from brandguard.occluders import find_occluder
    >>> S, G = 96, 16
    >>> photo = np.full((200, 200, 3), 120, np.uint8)                   # a grey package and table
    >>> heat = np.zeros((G, G), np.float32)
    >>> find_occluder(photo, np.eye(3), S, heat, np.ones((G, G), bool), cell=6) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from brandguard.localization import _degenerate
from brandguard.mismatch import CHANGED_Z

__all__ = ["COLOUR_TOLERANCE", "CORE", "DEPART_Z", "EDGE_CELLS", "EXTEND", "MAX_RING", "MAX_SHARE", "MIN_BEYOND",
           "MIN_PURITY", "MIN_REACH", "MIN_SOLIDITY", "OCCLUDER_NOTE", "OUTLINE_EDGE", "RING", "STAND_OUT", "Occluder",
           "find_occluder", "package_box", "top_cells"]

#: share of the canonical frame's side by which it is extended on every side to see what lies around it
EXTEND = 0.25
#: cells along the edge of the compared region a patch must reach to be something coming over the edge
EDGE_CELLS = 2
#: CIE Lab distance (blurred photo) within which a pixel counts as the patch's own colour
COLOUR_TOLERANCE = 16.0
#: area beyond the package's outline (:func:`package_box`; share of the frame's area) the patch's colour must
#: continue over ...
MIN_BEYOND = 0.001
#: ... and how far beyond it it must reach (share of the frame's side; slivers and tendrils left out)
MIN_REACH = 0.025
#: share of the package cells it covers that must depart from the references (standard deviations above
#: :data:`DEPART_Z`)
MIN_PURITY = 0.6
DEPART_Z = 2.0
#: a patch's cells depart at least this many times the photo's median departure over the package (and
#: :data:`brandguard.mismatch.CHANGED_Z`); the cells it covers, at least half that (and :data:`DEPART_Z`)
STAND_OUT = 3.0
#: width of the band around the package's outline (share of the frame's side) of which the thing's colour
#: may cover at most :data:`MAX_RING`: a finger or a pen crosses the outline somewhere, a backdrop of the
#: colour of an edit at the package's edge surrounds it
RING = 0.08
MAX_RING = 0.3
#: area over convex hull area of the thing where it lies over the frame (one simple shape)
MIN_SOLIDITY = 0.8
#: the most of the package an occluder may cover (beyond that, too little of the print is left to judge)
MAX_SHARE = 0.3
#: share of a patch's cells, those departing most, whose median colour is the thing's colour
CORE = 0.3
_DS = 2          # the extended frame is searched at half the canonical resolution
_BLUR = 1.5      # pixels (of that search): noise and JPEG blocks out of the colours
#: colour gradient (Lab units per pixel, Sobel, summed over L, a, b) of a package's outline (:func:`package_box`)
OUTLINE_EDGE = 20.0
_BEYOND_GAP = 2  # pixels (of that search) beyond the frame before anything counts as beyond it
_MIN_CELLS = 3   # a patch smaller than this is no occluder worth the name
_MIN_EDGE_RUN = 3  # pixels (of that search) along the photo's border a thing must run into beyond the outline
OCCLUDER_NOTE = ("something running on beyond the package's edge (a finger, a sticker, an object, or background the "
                 "alignment took in) left out ({share:.0%} of the package)")


@dataclass
class Occluder:
    """What :func:`find_occluder` found over a product.

    Attributes:
        cells: ``(G, G)`` bool, the comparison cells it covers (grown by one cell), to be discounted.
        share: share of the compared cells it covers.
        beyond: area of it beyond the package's outline, as a share of the canonical frame.
    """

    cells: np.ndarray
    share: float
    beyond: float

    @property
    def note(self) -> str:
        return OCCLUDER_NOTE.format(share=self.share)


def top_cells(maps: Sequence[np.ndarray | None], mask: np.ndarray, fraction: float) -> np.ndarray:
    """``(G, G)`` bool, the cells whose mean is a channel's score (:func:`brandguard.mismatch.top_mean`: the
    highest ``fraction`` of ``mask``'s cells, at least 4) in any of ``maps`` (None entries skipped)."""
    out = np.zeros(mask.shape, bool)
    n = int(mask.sum())
    if n == 0:
        return out
    k = min(n, max(4, round(fraction * n)))
    for z in maps:
        if z is None:
            continue
        vals = np.where(mask, z, -np.inf).ravel()
        out.ravel()[np.argpartition(vals, vals.size - k)[-k:]] = True
    return out & mask


def _extended_lab(image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The photo in the canonical frame extended by :data:`EXTEND` on every side, at ``1/_DS`` of its
    resolution: ``(lab (E, E, 3) float32, inside (E, E) bool, offset)`` where canonical ``x`` lies at
    ``(x + offset) / _DS``."""
    off = round(EXTEND * size)
    E = round((size + 2 * off) / _DS)
    T = np.array([[_DS, 0, -off], [0, _DS, -off], [0, 0, 1]], np.float64)
    Hx = np.asarray(H, np.float64) @ T
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    flags = cv2.INTER_AREA | cv2.WARP_INVERSE_MAP
    photo = cv2.warpPerspective(np.ascontiguousarray(img[..., :3]), Hx, (E, E), flags=flags,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpPerspective(np.ones(img.shape[:2], np.uint8), Hx, (E, E),
                                 flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0) > 0
    lab = cv2.cvtColor(cv2.GaussianBlur(photo.astype(np.float32) / 255.0, (0, 0), _BLUR), cv2.COLOR_RGB2LAB)
    return lab, inside, off


def _cells_to_ext(cells: np.ndarray, cell: int, off: int, E: int) -> np.ndarray:
    """A ``(G, G)`` cell mask as an ``(E, E)`` pixel mask of the extended frame."""
    G = cells.shape[0]
    out = np.zeros((E, E), np.uint8)
    a = off // _DS
    n = G * cell // _DS
    out[a:a + n, a:a + n] = cv2.resize(cells.astype(np.uint8), (n, n), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool)


def _ext_to_cells(px: np.ndarray, cell: int, off: int, G: int) -> np.ndarray:
    """The share of each of the ``(G, G)`` cells that an ``(E, E)`` pixel mask covers."""
    a = off // _DS
    n = G * cell // _DS
    return cv2.resize(px[a:a + n, a:a + n].astype(np.float32), (G, G), interpolation=cv2.INTER_AREA)


def package_box(lab: np.ndarray, inside: np.ndarray, off: int, size: int) -> tuple[int, int, int, int]:
    """The package's outline in the extended frame (:func:`_extended_lab` pixels), ``(x0, y0, x1, y1)``.

    The canonical frame is cut 5% wider than the product's keypoints, which usually puts its edge just
    beyond the package; but a plain part of the package without keypoints (a band along its top) can lie
    beyond it. Each side of the outline is the outermost straight edge parallel to the frame's side, from
    the frame's edge out to the extended frame's: a row (column) where the colour changes across most of
    the frame's width (the median over its middle 80% of the colour gradient, at least
    :data:`OUTLINE_EDGE` and half the strongest such row's). A finger or a sticker crosses the outline over
    a small part of it and leaves that median alone. Without such an edge the side is the frame's.
    """
    E = lab.shape[0]
    a, n = off // _DS, size // _DS
    grad_y = np.abs(np.stack([cv2.Sobel(lab[..., c], cv2.CV_32F, 0, 1, ksize=3) for c in range(3)])).sum(0)
    grad_x = np.abs(np.stack([cv2.Sobel(lab[..., c], cv2.CV_32F, 1, 0, ksize=3) for c in range(3)])).sum(0)
    mid = slice(a + n // 10, a + n - n // 10)
    rows = np.median(np.where(inside[:, mid], grad_y[:, mid], 0.0), axis=1)
    cols = np.median(np.where(inside[mid, :], grad_x[mid, :], 0.0), axis=0)

    def outermost(profile: np.ndarray, search: range) -> int | None:
        vals = profile[list(search)]
        if not len(vals):
            return None
        level = max(OUTLINE_EDGE, 0.5 * float(vals.max()))
        for i in search:  # from the outside in
            if profile[i] >= level and profile[i] >= profile[max(i - 1, 0)] and profile[i] >= profile[min(i + 1, E - 1)]:
                return i
        return None

    top = outermost(rows, range(1, a + 1))
    bottom = outermost(rows, range(E - 2, a + n - 2, -1))
    left = outermost(cols, range(1, a + 1))
    right = outermost(cols, range(E - 2, a + n - 2, -1))
    return (a if left is None else left, a if top is None else top,
            a + n if right is None else right + 1, a + n if bottom is None else bottom + 1)


def _seen_sides(box: tuple[int, int, int, int], off: int, size: int) -> tuple[bool, bool, bool, bool]:
    """Which sides of :func:`package_box`'s outline (left, top, right, bottom) are an edge seen in the photo
    rather than the canonical frame's side taken for want of one."""
    a, n = off // _DS, size // _DS
    x0, y0, x1, y1 = box
    return x0 != a, y0 != a, x1 != a + n, y1 != a + n


class _Outline(NamedTuple):
    """Masks of the extended frame around the package's outline (:func:`package_box`), made once a photo."""

    near: np.ndarray    # (E, E) bool: the outline's box grown by _BEYOND_GAP (what is not beyond it)
    over: np.ndarray    # (E, E) bool: the box shrunk by _BEYOND_GAP (what surely lies over the package)
    far: np.ndarray     # (E, E) float32: distance beyond the box, as a share of the frame's side
    ring: np.ndarray    # (E, E) bool: the band RING wide around the box, inside the photo
    area: float         # pixels of ``near``
    photo_edge: np.ndarray  # (E, E) bool: the photo's border beyond a side of the outline seen in the photo

    @classmethod
    def of(cls, box: tuple[int, int, int, int], inside: np.ndarray, size: int,
           seen: tuple[bool, bool, bool, bool] = (False, False, False, False)) -> _Outline:
        x0, y0, x1, y1 = box
        inner = np.zeros(inside.shape, np.uint8)
        inner[y0:y1, x0:x1] = 1
        k = np.ones((2 * _BEYOND_GAP + 1,) * 2, np.uint8)
        near = cv2.dilate(inner, k) > 0
        far = cv2.distanceTransform(1 - inner, cv2.DIST_L2, 3) * (_DS / size)
        edge = inside & (cv2.dilate((~inside).astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
        g = _BEYOND_GAP  # the outline's own pixels count: the photo may end right beyond it
        beyond_seen = np.zeros(inside.shape, bool)
        for s, sl in zip(seen, (np.s_[:, :x0 + g], np.s_[:y0 + g, :], np.s_[:, x1 - g:], np.s_[y1 - g:, :])):
            if s:
                beyond_seen[sl] = True
        edge &= beyond_seen
        return cls(near, cv2.erode(inner, k) > 0, far, (far > 0) & (far <= RING) & inside, float(near.sum()), edge)


_DISC5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def _grow(lab: np.ndarray, inside: np.ndarray, seed: np.ndarray,
          outline: _Outline) -> tuple[np.ndarray, float] | None:
    """The pixels of the seed's colour connected to it, when they continue beyond the package's outline and are
    one simple shape over it: ``(grown (E, E) bool, area beyond the outline as a share of the frame)``, or
    None."""
    if seed.sum() < 4:
        return None
    colour = np.median(lab[seed], axis=0)
    diff = lab - colour.astype(np.float32)
    same = (np.einsum("ijk,ijk->ij", diff, diff) < COLOUR_TOLERANCE ** 2) & inside
    same = cv2.morphologyEx(same.astype(np.uint8), cv2.MORPH_CLOSE, _DISC5) > 0
    k, comp = cv2.connectedComponents(same.astype(np.uint8), connectivity=8)
    hits = np.bincount(comp[seed], minlength=k)
    hits[0] = 0
    keep = np.nonzero(hits >= max(4, 0.1 * seed.sum()))[0]
    if not len(keep):
        return None
    grown = np.isin(comp, keep)
    outside = grown & ~outline.near
    beyond = float(outside.sum()) / outline.area
    # where the package reaches the photo's edge, a thing crossing its outline runs out of the photo before it
    # can go on beyond: it runs on as far as the photo shows
    off_photo = bool((grown & outline.photo_edge).sum() >= _MIN_EDGE_RUN)
    if beyond < MIN_BEYOND and not off_photo:
        return None
    # how far it goes on beyond the outline (slivers and tendrils of a like colour left out)
    outside = cv2.morphologyEx(outside.astype(np.uint8), cv2.MORPH_OPEN, _DISC5)
    if not off_photo and (not outside.any() or float(outline.far[outside > 0].max()) < MIN_REACH):
        return None
    # a thing over the package crosses its outline somewhere; a colour that surrounds the package (a backdrop
    # of the print's colour beside an edit at the edge) is the scene, not a thing on top
    if outline.ring.any() and float((grown & outline.ring).sum()) > MAX_RING * float(outline.ring.sum()):
        return None
    # a finger, a sticker, a pen, a cup's rim is one simple (convex) shape where it lies over the package; the
    # thing's colour running on into print of the same colour (an edited logo beside a sticker) is not
    part = cv2.morphologyEx((grown & outline.over).astype(np.uint8), cv2.MORPH_OPEN, _DISC5)  # no slivers
    contours, _ = cv2.findContours(np.ascontiguousarray(part, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for c in contours:
        area = cv2.contourArea(c)
        if area >= 16 and area < MIN_SOLIDITY * cv2.contourArea(cv2.convexHull(c)):
            return None
    return grown, beyond


def find_occluder(image: np.ndarray, H: np.ndarray, size: int, heat: np.ndarray, mask: np.ndarray, *,
                  cell: int, top: np.ndarray | None = None) -> Occluder | None:
    """Something on top of the package that crosses its outline (see the module docstring), or None.

    Args:
        image: ``(h, w, 3)`` uint8 RGB (or ``(h, w)`` grey: there it rarely finds anything, grey print and a
            grey finger look alike), the photo ``H`` was found on.
        H: ``3x3`` canonical -> photo pixels.
        size: side ``S`` of the canonical frame (pixels).
        heat: ``(G, G)`` float32 standardised departure per cell, the largest over the channels
            (``np.maximum(Comparison.structure, Comparison.colour)``).
        mask: ``(G, G)`` bool, the compared cells (``Comparison.mask``).
        cell: comparison cell (canonical pixels), ``S // G``.
        top: ``(G, G)`` bool, the cells the channel scores are the mean of (:func:`top_cells`); only a patch
            that holds one of them can change a score, the others are not looked at. None: every patch.

    Returns:
        The :class:`Occluder` (every patch that passed, together), or None.

    Raises:
        ValueError: ``image`` is not uint8.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"find_occluder expects a uint8 RGB (or grey) photo, got {image.dtype}; convert it with "
                         "brandguard.images.load_image or np.clip(x, 0, 255).astype(np.uint8)")
    G = heat.shape[0]
    H = np.asarray(H, np.float64)
    if not mask.any() or _degenerate(H):
        return None
    heat = np.asarray(heat, np.float32)
    # where authentic variation is underestimated (a kind of photo the statistics never saw) the whole package
    # departs a little: a patch is what stands out of the photo's own level
    level = float(np.median(heat[mask]))
    hot = (heat > max(CHANGED_Z, STAND_OUT * level)) & mask
    if hot.sum() < _MIN_CELLS:
        return None
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * EDGE_CELLS + 1, 2 * EDGE_CELLS + 1), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    edge = mask & ~inner
    n, labels = cv2.connectedComponents(hot.astype(np.uint8), connectivity=8)
    patches = [labels == k for k in range(1, n) if (labels == k).sum() >= _MIN_CELLS and (edge & (labels == k)).any()
               and (top is None or (top & (labels == k)).any())]
    if not patches:
        return None
    lab, inside, off = _extended_lab(image, H, size)
    E = lab.shape[0]
    box = package_box(lab, inside, off, size)
    outline = _Outline.of(box, inside, size, _seen_sides(box, off, size))
    covered = np.zeros((G, G), bool)
    beyond_total = 0.0
    for patch in patches:
        # the thing's colour: where the patch departs most (a heatmap patch is wider than the thing: cells,
        # blur), or over the whole patch (where print on the thing, a sticker's price, departs most)
        core = patch & (heat >= np.quantile(heat[patch], 1.0 - CORE))
        for seed_cells in (core, patch):
            found = _grow(lab, inside, _cells_to_ext(seed_cells, cell, off, E) & inside, outline)
            if found is None:
                continue
            grown, beyond = found
            share_cells = _ext_to_cells(grown, cell, off, G)
            over = (share_cells >= 0.5) & mask
            if not over.any():
                continue
            if over.sum() > MAX_SHARE * mask.sum():
                return None  # too much of the package is hidden (or it is the package's own colour): not judged
            purity = float((heat[over] > max(DEPART_Z, 0.5 * STAND_OUT * level)).mean())
            if purity < MIN_PURITY:
                continue
            covered |= (share_cells >= 0.3) & mask
            beyond_total += beyond
            break
    if not covered.any():
        return None
    covered = cv2.dilate(covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & mask
    share = float(covered.sum() / mask.sum())
    if share > MAX_SHARE:
        return None
    return Occluder(covered, share, beyond_total)
