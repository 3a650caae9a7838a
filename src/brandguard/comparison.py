"""The one comparison: an aligned view against its product's aligned references.

Everything that is calibrated is computed by :func:`compare`, and everything that is scored too: the
detector calls it for a listing photo, the index calls it for its authentic evidence (a reference left out
of its own bank, a simulated listing photo of a reference, see :mod:`brandguard.listing_conditions`). So
the authentic channel scores the calibration learns from are, by construction, what a listing photo gets.

One call:

1. distance maps of the view to the closest references (:func:`brandguard.mismatch.distance_maps`);
2. standardised by the product's authentic statistics (:func:`brandguard.mismatch.anomaly_maps`), discounted
   where the learned occlusion head sees something on top of the package, and, where thin structure changes
   cover the whole package (a seller's watermark tiled over the photo), scaled down to what stands out of
   them (:func:`brandguard.mismatch.discount_overlay`); the share of the package whose print changed is kept
   (``Comparison.changed``: another edition or product rather than a counterfeit edit when it is large);
3. the text channel: the share of misspelt characters in each of the product's reference lines as the OCR
   reads them (:func:`brandguard.text.misspelt_count`: a span covered by a finger or a sticker is unread,
   not misspelt), kept only where the structure channel agrees that the strokes changed there (OCR misreads
   blurred but authentic print; a misspelling also changes its strokes), less so for a confident letter swap
   in a line every reference reads alike (:func:`brandguard.text.confident_swap`);
4. channel scores (:data:`brandguard.mismatch.CHANNELS`) and a cell heatmap.

Example:
    >>> import numpy as np
    >>> from brandguard.config import CompareConfig
    >>> from brandguard.mismatch import ProductBank, fit_normal_stats, make_view
    >>> views = [make_view(np.full((96, 96, 3), 100 + i, np.uint8), np.ones((96, 96), bool)) for i in range(3)]
    >>> bank = ProductBank.from_views(views)
    >>> stats, _ = fit_normal_stats(bank)
    >>> c = compare(views[0], bank, stats, CompareConfig(), exclude=0)
    >>> len(c.channels), c.heatmap.shape
    (4, (16, 16))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brandguard.config import CompareConfig
from brandguard.mismatch import (
    AlignedView,
    NormalStats,
    ProductBank,
    anomaly_maps,
    changed_share,
    channel_scores,
    discount_overlay,
    distance_maps,
    kept_cells,
    occlusion_cells,
    white_balance_cells,
)

__all__ = ["EDITION_NOTE", "EDITION_SHARE", "OTHER_BRAND_NOTE", "OTHER_NAME_NOTE", "OTHER_PRODUCT_NOTE", "OVERLAY_NOTE",
           "SPARSE_NOTE", "SPARSE_OTHER_NOTE", "SWAP_SUPPORT",
           "TEXT_SUPPORT", "WEAK_OTHER_NOTE", "Comparison", "DistanceMaps", "compare", "line_support",
           "reference_text_details"]

#: structure evidence (90th percentile of the structure heatmap in a line's box, standard deviations) a text
#: misread needs before it counts: OCR misreads blurred but authentic print, a misspelling also changes strokes
TEXT_SUPPORT = 4.0

#: the weaker structure evidence a confident, full-length letter swap in a line the references read alike
#: needs (:func:`brandguard.text.confident_swap`): the OCR evidence is strong, some stroke change still
SWAP_SUPPORT = 2.0

#: share of the package whose print changed from which another edition or product (a flavour, a promotional
#: edition) is likelier than a counterfeit edit (see ``Comparison.differs_widely``)
EDITION_SHARE = 0.5
EDITION_NOTE = "differs in large areas: another edition or product?"
#: a reference line read confidently as another name (:func:`brandguard.text.reads_other_name`)
OTHER_NAME_NOTE = "reads another name: another product?"
#: a reference line reads another name and none reads what the references read
#: (:func:`brandguard.text.reads_other_product`; see ``Comparison.other_product``)
OTHER_PRODUCT_NOTE = "reads another name, none of this product's: a product the index does not hold"
#: the photo reads another brand's name as large as this one's, and nowhere this one's (:func:`brandguard.text.other_brand_reading`);
#: the note reads ``reads 'FILA': `` followed by this
OTHER_BRAND_NOTE = "another brand's name, as large as this one's, and none of this one's: a product the index does not hold"
OVERLAY_NOTE = "text or marks over the whole photo (a seller's watermark?) discounted"
#: a sparse match (``Thresholds.sparse``: fewer keypoint matches than ``min_inlier_density`` for the size of its
#: outline, and an aligned look unlike the product's; a wrong outline through a few marks another product
#: shares?): compared, never a takedown
SPARSE_NOTE = ("few keypoint matches for the size of its outline, and it does not look like the product: not a "
               "takedown, a person decides")
#: a sparse match whose print also differs from the references in large areas (``Comparison.differs_widely``)
SPARSE_OTHER_NOTE = ("few keypoint matches for the size of its outline, it does not look like the product and its "
                     "print differs in large areas: a product the index does not hold")
#: a weak match (``Thresholds.accepts``: fewer keypoint matches than ``min_inliers``, identified by its aligned
#: look) whose print differs from the references in large areas (``Comparison.differs_widely``)
WEAK_OTHER_NOTE = ("few keypoint matches, identified by its look alone, and its print differs in large areas: a "
                   "product the index does not hold")

#: ``(structure, colour, learned)`` distance maps, each ``(G, G)`` float32 (learned None without descriptors)
DistanceMaps = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


@dataclass
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        channels: one score per :data:`brandguard.mismatch.CHANNELS` (standard deviations above authentic
            variation in the worst cells; text: OCR distance 0..1; NaN where not measured).
        structure, colour: ``(G, G)`` float32 standardised departure per cell (0 = typical).
        learned: the same for the learned channel, or None.
        heatmap: ``(G, G)`` float32, the largest channel per cell, misread text lines painted in (in fused
            units when a ``text_units`` function was given).
        mask: ``(G, G)`` bool, the cells that were scored.
        distances: the distance maps the departures were computed from.
        text_details: per reference line ``{text, read, confidence, distance, box}`` after the structure gate.
        overlay: the level (standard deviations) of text or marks tiled over the whole photo, by which the
            structure map was scaled down (:func:`brandguard.mismatch.discount_overlay`); 0.0 when none was seen.
        changed: share (0..1) of the compared region whose print changed (structure above
            :data:`brandguard.mismatch.CHANGED_Z`, before the overlay discount: it only ever lowers a verdict,
            see :attr:`differs_widely`).
        notes: what a reviewer should know about this comparison (:data:`OVERLAY_NOTE`, :data:`EDITION_NOTE`,
            :data:`OTHER_NAME_NOTE`, :data:`OTHER_PRODUCT_NOTE`).
    """

    channels: tuple[float, float, float, float]
    structure: np.ndarray
    colour: np.ndarray
    learned: np.ndarray | None
    heatmap: np.ndarray
    mask: np.ndarray
    distances: DistanceMaps
    text_details: list[dict[str, Any]] = field(default_factory=list)
    overlay: float = 0.0
    changed: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def differs_widely(self) -> bool:
        """Whether the print differs from every reference over so large an area (:data:`EDITION_SHARE` of the
        package) that another edition or product is likelier than a counterfeit edit, or a product line reads
        another name (:data:`OTHER_NAME_NOTE`): a verdict resting on it should go to a person
        (``suspicious``), not to a takedown."""
        return self.changed >= EDITION_SHARE or OTHER_NAME_NOTE in self.notes

    @property
    def other_product(self) -> bool:
        """Whether the photo's text names another product, and nothing it reads names this one
        (:data:`OTHER_PRODUCT_NOTE`, :func:`brandguard.text.reads_other_product`): another brand's product
        that shares this one's layout, or a sibling the index does not hold; the verdict is ``unknown``."""
        return OTHER_PRODUCT_NOTE in self.notes


def compare(view: AlignedView, bank: ProductBank, stats: NormalStats, settings: CompareConfig, *,
            exclude: int | None = None, text_details: Sequence[dict[str, Any]] | None = None,
            distances: DistanceMaps | None = None,
            text_units: Callable[[float], float] | None = None) -> Comparison:
    """Compare one aligned view with a product's references (see the module docstring).

    Args:
        view: the photo (or reference) in the product's canonical frame (:func:`brandguard.mismatch.make_view`).
        bank: the product's aligned references.
        stats: the product's authentic statistics.
        settings: ``cell``, ``references_compared`` and ``top_fraction`` are used.
        exclude: a bank row to leave out (a reference compared with the others, or a simulated photo of it).
        text_details: the OCR reading of the product's reference lines in this view
            (:func:`brandguard.text.text_mismatch` for a photo, :func:`reference_text_details` for a
            reference): ``[{distance, box, ...}]`` with ``box`` in canonical pixels; None or empty: no text
            channel (NaN).
        distances: the distance maps of this very view and bank when the caller already computed them (the
            index computes them once for its statistics); None computes them here.
        text_units: maps a text distance to heatmap units (e.g. through the index's channel fusion); None
            leaves misread lines out of the heatmap.

    Returns:
        A :class:`Comparison`.
    """
    cell = settings.cell
    if distances is None:
        distances = distance_maps(view, bank, cell, exclude=exclude, k=settings.references_compared,
                                  region=white_balance_cells(stats.region, settings.white_balance))
    d_s, d_c, d_l = distances
    G = view.cell_valid.shape[0]
    occ = occlusion_cells(view.occlusion, G)
    z_s, z_c, z_l = anomaly_maps(d_s, d_c, stats, view.cell_valid, d_l, occ)
    mask = stats.region & view.cell_valid
    kept = kept_cells(view)  # where an overlay was left out, the cells that still count under a text line
    changed = changed_share(z_s, mask)  # print that differs: another edition or product?
    overlay = 0.0
    if settings.overlay_discount:  # text tiled over the whole photo: only what stands out counts
        z_s, overlay = discount_overlay(z_s, mask)
    notes = []
    if overlay > 0:
        notes.append(OVERLAY_NOTE)
    if changed >= EDITION_SHARE:
        notes.append(EDITION_NOTE)
    details = [dict(d) for d in (text_details or [])]
    text = float("nan")
    if details:
        from brandguard.text import confident_swap, other_name_lines, reads_other_product

        other = other_name_lines(details)  # before the structure gate: what the OCR read, as read
        if reads_other_product(details):
            notes.append(OTHER_PRODUCT_NOTE)
        supported = []
        for d, named in zip(details, other):  # a misspelling also changes strokes: keep a misread where structure agrees
            if named:
                d["distance"] = float("nan")  # another name, not a misspelling: no text evidence either way
                if OTHER_NAME_NOTE not in notes:
                    notes.append(OTHER_NAME_NOTE)
            need = SWAP_SUPPORT if confident_swap(d) else TEXT_SUPPORT  # a sure misspelling needs less
            if line_support(z_s, d["box"], cell, kept) < need and np.isfinite(d["distance"]):
                d["distance"] = 0.0
            supported.append(d["distance"])
        finite = [v for v in supported if np.isfinite(v)]
        text = max(finite) if finite else float("nan")
    channels = channel_scores(z_s, z_c, mask, settings.top_fraction, text, z_l)
    heat = np.maximum(z_s, z_c) if z_l is None else np.maximum(np.maximum(z_s, z_c), z_l)
    if text_units is not None:
        for d in details:  # a misread line lights up its box
            if np.isfinite(d["distance"]) and d["distance"] > 0:
                zt = float(text_units(float(d["distance"])))
                x0, y0, x1, y1 = (int(v) // cell for v in d["box"])
                heat[y0:y1 + 1, x0:x1 + 1] = np.maximum(heat[y0:y1 + 1, x0:x1 + 1], zt)
    return Comparison(channels, z_s, z_c, z_l, heat.astype(np.float32), mask, distances, details,
                      overlay=overlay, changed=changed, notes=tuple(notes))


def line_support(structure: np.ndarray, box: Sequence[float], cell: int, kept: np.ndarray | None = None) -> float:
    """The structure evidence under a text line, which a misread there needs (:data:`TEXT_SUPPORT`, or
    :data:`SWAP_SUPPORT` for a confident letter swap) before it counts.

    Args:
        structure: ``(G, G)`` standardised structure departure per cell (``Comparison.structure``).
        box: the line's ``[x0, y0, x1, y1]`` in canonical pixels.
        cell: cell size in canonical pixels.
        kept: ``(G, G)`` bool cells that still count where part of the view was left out (a seller's overlay,
            :func:`brandguard.mismatch.kept_cells`): the percentile is taken over those of the box when it has
            any; None: every cell.

    Returns:
        The 90th percentile of ``structure`` over the cells the box touches, in standard deviations; NaN when
        it touches none (a misread there is then kept as read).
    """
    x0, y0, x1, y1 = (int(v) // cell for v in box)
    box_z = structure[y0:y1 + 1, x0:x1 + 1]
    if kept is not None and box_z.size and kept[y0:y1 + 1, x0:x1 + 1].any():
        box_z = box_z[kept[y0:y1 + 1, x0:x1 + 1]]
    return float(np.quantile(box_z, 0.9)) if box_z.size else float("nan")


def reference_text_details(own: Sequence[dict[str, Any]], lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """How a reference's own OCR reading compares with its product's reference lines, in the form of
    :func:`brandguard.text.text_mismatch` details (so that :func:`compare` treats it like a photo's).

    Args:
        own: the lines read in the aligned reference (``{text, box, confidence}``, canonical pixels).
        lines: the product's reference lines (:func:`brandguard.text.reference_lines`).

    Returns:
        One entry per reference line that the reference reads confidently at the same place: the smallest
        misspelling distance (:func:`brandguard.text.misspelt_distance`) among its readings there; lines it
        does not read (or reads mostly covered) are left out.
    """
    from brandguard.text import MIN_CONFIDENCE, _iou, misspelt_distance

    out = []
    for ref in lines:
        same = [(misspelt_distance(ref["text"], ln["text"]), ln) for ln in own
                if _iou(ln["box"], ref["box"]) > 0.3 and ln["confidence"] >= MIN_CONFIDENCE]
        same = [(d, ln) for d, ln in same if np.isfinite(d)]  # a mostly covered reading reads nothing
        if same:
            dist, best = min(same, key=lambda t: t[0])
            out.append({"text": ref["text"], "read": best["text"], "confidence": best["confidence"],
                        "distance": dist, "box": list(ref["box"])})
    return out
