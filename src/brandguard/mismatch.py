"""Local comparison of an aligned photo with its product's authentic references.

Both the photo and the references are warped into the product's canonical frame, so a pixel at a given
place shows the same part of the package in all of them. Two channels are compared there:

* **structure**: grey levels, lightly blurred and normalised by their local mean and contrast (so lighting
  and exposure cancel), compared pixel by pixel at a resolution that shows letters and logo outlines
  (a misspelt wordmark, a wrong font, a mirrored, distorted, moved or look-alike logo, missing parts,
  extra marks); a photo whose sensor noise that blur would not clean is compared, with each reference, at
  the coarser blur the noise needs (:func:`noise_blur`, :func:`structure_difference`), so the flat parts of
  a package do not light up with noise;
* **colour**: the mean colour of each cell, white-balanced on the parts of the product the reference shows
  as neutral (white, grey, black print; ``compare.white_balance``), compared in Lab chroma (a recoloured logo, a changed packaging colour);
* **learned** (fine-tuned backbones only): dense descriptors trained by ``brandguard train`` to stay put
  between authentic photos and to move where a counterfeiter edits the package, compared by cosine with a
  one-cell tolerance for misalignment. The same backbone also says where something lies on top of the
  package (a finger, a price sticker, glare): every channel's departure is discounted there.

Each channel keeps, per cell, the distance to the *closest* authentic reference, then standardises it by
how much authentic listing photos depart there: learnt from simulated listing photos of the references
(:class:`AuthenticEvidence`, :func:`authentic_stats`, pooled across products by :class:`AuthenticPrior`), or
from the references compared with each other (leave-one-out, :func:`fit_normal_stats`) without them. The result is a heatmap
of where the photo departs from every authentic reference (in standard deviations) and one score per
channel: the mean of its highest cells. A few cells along the edge of the frame are not scored
(``compare.margin``): alignment is never exact there, so the scene behind the package shows in some photos
and in no reference.

Example:
    >>> import numpy as np
    >>> from brandguard.mismatch import make_view
    >>> v = make_view(np.zeros((96, 96, 3), np.uint8), np.ones((96, 96), bool), cell=6)
    >>> v.colors.shape
    (16, 16, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from brandguard.localization import Surface, estimate_noise, surface_offsets

__all__ = [
    "CHANGED_Z",
    "CHANNELS",
    "EVIDENCE_CHANNELS",
    "NOISE_TARGET",
    "AlignedView",
    "AuthenticEvidence",
    "AuthenticPrior",
    "NormalStats",
    "ProductBank",
    "anomaly_maps",
    "authentic_stats",
    "changed_share",
    "channel_scores",
    "closest_references",
    "discount_overlay",
    "distance_maps",
    "fit_normal_stats",
    "hue_shift",
    "kept_cells",
    "learned_distance",
    "make_view",
    "noise_blur",
    "occlusion_cells",
    "overlay_spread",
    "scored_region",
    "structure_difference",
    "top_mean",
    "upsample_to_photo",
    "white_balance_cells",
]

_BLUR = 1.5      # pixels (canonical frame): removes noise and JPEG blocks before comparing structure
_WINDOW = 15     # pixels: local mean/contrast window of the structure normalisation
_MIN_KEPT = 0.25  # share of a cell's pixels the structure channel needs outside AlignedView.ignore
_NEUTRAL_CHROMA = 12.0  # Lab chroma under which a reference cell counts as neutral (white balance)


@dataclass
class AlignedView:
    """One photo in a product's canonical frame.

    Attributes:
        structure: ``(S, S)`` float32 locally normalised grey levels.
        valid: ``(S, S)`` bool, pixels that came from inside the photo.
        colors: ``(G, G, 3)`` float32 mean RGB (0..1) per cell.
        cell_valid: ``(G, G)`` bool, cells fully inside the photo.
        feats: ``(g, g, D)`` float16 learned descriptors (stride 8), or None without a fine-tuned backbone.
        occlusion: ``(g, g)`` float16 probability that something lies on top of the package, or None.
        noise: sensor noise of the photo in grey levels of the frame (see :func:`make_view`); 0.0 unknown.
        ignore: ``(S, S)`` bool pixels left out of the structure channel (a seller's overlay over the package,
            :func:`brandguard.overlays.find_overlay`), or None.
    """

    structure: np.ndarray
    valid: np.ndarray
    colors: np.ndarray
    cell_valid: np.ndarray
    feats: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    noise: float = 0.0
    ignore: np.ndarray | None = None


#: residual sensor noise (grey levels) the structure comparison tolerates after its blur; photos noisier than
#: that are compared, with their references, at a coarser blur (see :func:`noise_blur`)
NOISE_TARGET = 1.0
_MAX_BLUR = 4.0


def noise_blur(noise: float) -> float:
    """Extra Gaussian blur (canonical pixels) that brings a photo with ``noise`` grey levels of sensor noise to
    :data:`NOISE_TARGET` after the structure blur: 0.0 for photos the standard ``_BLUR`` already cleans.

    White noise of standard deviation ``s`` has ``s / (2 sqrt(pi) t)`` left after a Gaussian of ``t`` pixels.
    Both the photo and the references it is compared with get the same extra blur, so print is compared at
    the detail the noisier of the two can show, and flat areas do not light up with noise.
    """
    total = noise / (2.0 * np.sqrt(np.pi) * NOISE_TARGET)
    if not total > _BLUR:  # NaN too: an unmeasured noise changes nothing
        return 0.0
    return float(np.sqrt(min(total, _MAX_BLUR) ** 2 - _BLUR ** 2))


def _grey(crop: np.ndarray) -> np.ndarray:
    # uint8 crops (the pipeline's) are converted to grey in uint8, as they always were
    return cv2.cvtColor(np.ascontiguousarray(crop, np.uint8 if crop.dtype == np.uint8 else np.float32),
                        cv2.COLOR_RGB2GRAY)


def _normalise(grey: np.ndarray) -> np.ndarray:
    grey = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), _BLUR)
    mu = cv2.blur(grey, (_WINDOW, _WINDOW))
    sd = np.sqrt(np.maximum(cv2.blur(grey * grey, (_WINDOW, _WINDOW)) - mu * mu, 0.0))
    return (grey - mu) / (sd + 8.0)


def structure_map(crop: np.ndarray) -> np.ndarray:
    """The structure channel's map of a crop: grey, blurred by ``_BLUR`` (1.5 px), minus its local mean and
    divided by its local contrast (``_WINDOW`` 15 px, plus 8 grey levels): ``(S, S)`` float32, what
    :attr:`AlignedView.structure` and :attr:`ProductBank.structure` hold (lighting and shading divided out).

    Args:
        crop: ``(S, S, 3)`` RGB, uint8 (or float in 0..255).
    """
    return _normalise(_grey(crop)).astype(np.float32)


def kept_cells(view: AlignedView) -> np.ndarray | None:
    """``(G, G)`` bool, the cells whose structure still counts when part of the view is left out
    (:attr:`AlignedView.ignore`: at least ``_MIN_KEPT`` of their pixels kept); None when nothing is left out."""
    if view.ignore is None:
        return None
    G = view.cell_valid.shape[0]
    return cv2.resize((~view.ignore).astype(np.float32), (G, G), interpolation=cv2.INTER_AREA) >= _MIN_KEPT


def make_view(crop: np.ndarray, valid: np.ndarray, cell: int = 6, feats: np.ndarray | None = None,
              occlusion: np.ndarray | None = None, noise: float | None = None,
              ignore: np.ndarray | None = None) -> AlignedView:
    """Prepare an aligned crop for comparison (see the module docstring).

    Args:
        crop: ``(S, S, 3)`` uint8 RGB in the canonical frame; valid: ``(S, S)`` bool.
        cell: comparison cell (pixels); feats, occlusion: see :class:`AlignedView`.
        noise: the crop's sensor noise in grey levels of the frame, as
            :func:`brandguard.localization.source_noise` measures it on the photo the crop was warped from
            (a product enlarged into the frame carries grains a measure on the crop misses); None measures
            it on the crop (:func:`brandguard.localization.estimate_noise`).
        ignore: ``(S, S)`` bool pixels to leave out of the structure channel (see :class:`AlignedView`).
    """
    S = crop.shape[0]
    G = S // cell
    grey = _grey(crop)
    noise = estimate_noise(grey, valid) if noise is None else float(noise)
    structure = _normalise(grey)
    colors = cv2.resize(crop.astype(np.float32) / 255.0, (G, G), interpolation=cv2.INTER_AREA)
    cv = _cells(valid, G)
    return AlignedView(structure.astype(np.float32), valid.astype(bool), colors.astype(np.float32), cv,
                       None if feats is None else np.asarray(feats, np.float16),
                       None if occlusion is None else np.asarray(occlusion, np.float16), noise,
                       None if ignore is None else np.asarray(ignore, bool))


@dataclass
class ProductBank:
    """The aligned authentic references of one product (the rows of :class:`AlignedView`, stacked).

    Attributes:
        structure: ``(n, S, S)`` float16; valid: ``(n, S, S)`` bool; colors: ``(n, G, G, 3)`` float32;
        cell_valid: ``(n, G, G)`` bool; feats: ``(n, g, g, D)`` float16 and occlusion ``(n, g, g)`` float16,
        or None (no fine-tuned backbone); noise: ``(n,)`` float32 each reference's sensor noise (grey levels
        of the frame), or None (banks saved before it was measured: noise-free).
    """

    structure: np.ndarray
    valid: np.ndarray
    colors: np.ndarray
    cell_valid: np.ndarray
    feats: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    noise: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.structure.shape[0])

    @classmethod
    def from_views(cls, views: list[AlignedView]) -> ProductBank:
        learned = bool(views) and all(v.feats is not None and v.occlusion is not None for v in views)
        feats = np.stack([v.feats for v in views]).astype(np.float16) if learned else None  # type: ignore[misc]
        occ = np.stack([v.occlusion for v in views]).astype(np.float16) if learned else None  # type: ignore[misc]
        return cls(np.stack([v.structure for v in views]).astype(np.float16), np.stack([v.valid for v in views]),
                   np.stack([v.colors for v in views]), np.stack([v.cell_valid for v in views]), feats, occ,
                   np.array([v.noise for v in views], np.float32))

    def noise_of(self, i: int) -> float:
        """Reference ``i``'s estimated sensor noise (grey levels; 0.0 in indexes saved without it)."""
        return 0.0 if self.noise is None else float(self.noise[i])

    def view(self, i: int) -> AlignedView:
        return AlignedView(self.structure[i].astype(np.float32), self.valid[i], self.colors[i], self.cell_valid[i],
                           None if self.feats is None else self.feats[i],
                           None if self.occlusion is None else self.occlusion[i], self.noise_of(i))

    def select(self, rows: list[int]) -> ProductBank:
        return ProductBank(self.structure[rows], self.valid[rows], self.colors[rows], self.cell_valid[rows],
                           None if self.feats is None else self.feats[rows],
                           None if self.occlusion is None else self.occlusion[rows],
                           None if self.noise is None else self.noise[rows])

    def concat(self, other: ProductBank) -> ProductBank:
        if len(self) == 0:
            return other
        both = self.feats is not None and other.feats is not None and self.occlusion is not None \
            and other.occlusion is not None
        feats = np.concatenate([self.feats, other.feats]) if both else None  # type: ignore[list-item]
        occ = np.concatenate([self.occlusion, other.occlusion]) if both else None  # type: ignore[list-item]
        noise = np.concatenate([[self.noise_of(i) for i in range(len(self))],
                                [other.noise_of(i) for i in range(len(other))]]).astype(np.float32)
        return ProductBank(np.concatenate([self.structure, other.structure]), np.concatenate([self.valid, other.valid]),
                           np.concatenate([self.colors, other.colors]),
                           np.concatenate([self.cell_valid, other.cell_valid]), feats, occ, noise)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0.0, 1.0).astype(np.float32), cv2.COLOR_RGB2LAB)


def hue_shift(colors: np.ndarray, ref_colors: np.ndarray, ok: np.ndarray, min_chroma: float = 15.0) -> float:
    """How far a photo's package hue moved from a reference's, in degrees (signed).

    The chroma-weighted median of the per-cell hue difference (Lab) over the cells the reference shows in
    colour (chroma > ``min_chroma``); NaN when fewer than 10 such cells. ``scripts/colour_shift.py`` uses it
    to compare what lighting and cameras do to authentic photos with what a packaging-colour edit does.

    Args:
        colors, ref_colors: ``(G, G, 3)`` mean RGB (0..1) per cell of the photo and of the reference.
        ok: ``(G, G)`` bool, cells to use.
    """
    q, r = _lab(colors), _lab(ref_colors)
    chroma = np.hypot(r[..., 1], r[..., 2])
    sel = ok & (chroma > min_chroma)
    if sel.sum() < 10:
        return float("nan")
    d = np.degrees(np.arctan2(q[..., 2], q[..., 1]) - np.arctan2(r[..., 2], r[..., 1]))[sel]
    d = (d + 180.0) % 360.0 - 180.0
    w = chroma[sel]
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(w[order])
    return float(d[order][np.searchsorted(cum, 0.5 * cum[-1])])


def structure_difference(view: AlignedView, bank: ProductBank, i: int,
                         cache: dict[float, np.ndarray] | None = None) -> np.ndarray:
    """``(S, S)`` float32 absolute difference of the photo's structure and reference ``i``'s, both at the
    extra blur the noisier of the two needs (:func:`noise_blur`); ``cache`` keeps the photo's blurred
    structure per blur between references."""
    extra = noise_blur(max(view.noise, bank.noise_of(i)))
    ref = bank.structure[i].astype(np.float32)
    if extra <= 0.3:
        return np.abs(view.structure - ref)
    cache = {} if cache is None else cache
    if extra not in cache:
        cache[extra] = cv2.GaussianBlur(view.structure, (0, 0), extra)
    return np.abs(cache[extra] - cv2.GaussianBlur(ref, (0, 0), extra))


def closest_references(view: AlignedView, bank: ProductBank, k: int, exclude: int | None = None,
                       cache: dict[float, np.ndarray] | None = None) -> list[int]:
    """The ``k`` references whose structure is closest to the photo overall (all of them when ``k`` <= 0);
    ``cache``: see :func:`structure_difference`."""
    rows = [i for i in range(len(bank)) if i != exclude]
    if k <= 0 or len(rows) <= k:
        return rows
    means = []
    cache = {} if cache is None else cache
    for i in rows:
        both = bank.valid[i] & view.valid
        d = structure_difference(view, bank, i, cache)
        means.append(float(d[both].mean()) if both.any() else np.inf)
    return [rows[j] for j in np.argsort(means, kind="stable")[:k]]


def learned_distance(q: np.ndarray, r: np.ndarray, r_valid: np.ndarray) -> np.ndarray:
    """``1 - cosine`` of each query descriptor with the best-matching reference descriptor among the 3x3
    cells around the same place (one cell of misalignment tolerated); ``inf`` where the reference has none.

    Args:
        q, r: ``(g, g, D)`` L2-normalised descriptors of the photo and of one reference.
        r_valid: ``(g, g)`` bool, reference cells inside its photo.
    """
    g = q.shape[0]
    qf = q.astype(np.float32)
    rp = np.pad(r.astype(np.float32), ((1, 1), (1, 1), (0, 0)))
    best = np.full(q.shape[:2], -1.0, np.float32)
    for dy in range(3):
        for dx in range(3):
            best = np.maximum(best, np.einsum("ijc,ijc->ij", qf, rp[dy:dy + g, dx:dx + q.shape[1]]))
    return np.where(r_valid, 1.0 - best, np.inf).astype(np.float32)


def _cells(mask: np.ndarray, g: int) -> np.ndarray:
    return cv2.resize(mask.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA) > 0.99


def distance_maps(view: AlignedView, bank: ProductBank, cell: int = 6, exclude: int | None = None,
                  k: int = 0, region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-cell distance of one aligned photo to the closest authentic reference, per channel.

    Args:
        view: the photo (see :func:`make_view`).
        bank: the product's references.
        cell: cell size in canonical pixels.
        exclude: a reference to leave out (leave-one-out statistics).
        k: compare with the ``k`` references closest to the photo overall (0: all): a few whole references
            rather than a pixel-wise mix of all of them, in which noise somewhere always matches a small
            change (on the demo listings this triples detection at 1% FPR; subtle packaging-colour changes
            suffer a little).
        region: ``(G, G)`` bool, the product's scored cells (:func:`scored_region`): the photo is white-balanced
            on the cells the reference shows neutral *there*; None: every cell both show. Outside it the
            canonical frame can hold the reference's backdrop (a studio shot's white margin), which the photo
            shows as its own background: balancing a listing photo's green table against a reference's
            white margin doubled every channel and lit a whole package up in colour.

    Returns:
        ``(structure, colour, learned)`` distances, each ``(G, G)`` float32, NaN where no reference covers a
        cell; ``learned`` is None unless both the photo and the bank carry learned descriptors.
    """
    G = view.colors.shape[0]
    best_s = np.full(view.structure.shape, np.inf, np.float32)
    best_c = np.full((G, G), np.inf, np.float32)
    use_l = view.feats is not None and bank.feats is not None
    best_l = np.full(view.feats.shape[:2], np.inf, np.float32) if use_l else None  # type: ignore[union-attr]
    k3 = np.ones((3, 3), np.uint8)
    blurred: dict[float, np.ndarray] = {}  # the photo's structure at each extra blur, shared by both loops
    for i in closest_references(view, bank, k, exclude, blurred):
        if best_l is not None:
            g = best_l.shape[0]
            best_l = np.minimum(best_l, learned_distance(view.feats, bank.feats[i], _cells(bank.valid[i], g)))  # type: ignore[index, arg-type]
        d = structure_difference(view, bank, i, blurred)
        best_s = np.minimum(best_s, np.where(bank.valid[i], d, np.inf))
        ref_rgb, ref_ok = bank.colors[i], bank.cell_valid[i] & view.cell_valid
        ref_lab = _lab(ref_rgb)
        neutral = (np.hypot(ref_lab[..., 1], ref_lab[..., 2]) < _NEUTRAL_CHROMA) & (ref_lab[..., 0] > 20) & ref_ok
        if region is not None:
            neutral &= region
        q = view.colors
        if neutral.sum() >= 0.03 * neutral.size:  # white balance on what the reference shows as neutral
            gains = np.median(ref_rgb[neutral], 0) / np.maximum(np.median(q[neutral], 0), 1e-3)
            q = q * np.clip(gains, 0.5, 2.0)
        dc = (((_lab(q)[..., 1:] - ref_lab[..., 1:]) / 20.0) ** 2).sum(-1)
        dc = np.where(ref_ok, dc, 1e3).astype(np.float32)
        dc = cv2.erode(dc, k3)  # tolerate one cell of misalignment
        best_c = np.minimum(best_c, dc)
    pooled = cv2.resize(np.where(np.isfinite(best_s), best_s, 0.0), (G, G), interpolation=cv2.INTER_AREA)
    covered = cv2.resize(np.isfinite(best_s).astype(np.float32), (G, G), interpolation=cv2.INTER_AREA) > 0.99
    if view.ignore is not None:  # the mean over the pixels kept; a cell mostly left out says nothing
        keep = (~view.ignore).astype(np.float32)
        kept = cv2.resize(keep, (G, G), interpolation=cv2.INTER_AREA)
        pooled = cv2.resize(np.where(np.isfinite(best_s), best_s, 0.0) * keep, (G, G),
                            interpolation=cv2.INTER_AREA) / np.maximum(kept, 1e-6)
        covered &= kept >= _MIN_KEPT
    d_s = np.where(covered & view.cell_valid, pooled, np.nan).astype(np.float32)
    d_c = np.where(best_c < 1e2, best_c, np.nan).astype(np.float32)
    d_l = None
    if best_l is not None:
        ok = np.isfinite(best_l) & _cells(view.valid, best_l.shape[0])
        up = cv2.resize(np.where(ok, best_l, 0.0), (G, G), interpolation=cv2.INTER_LINEAR)
        ok_up = cv2.resize(ok.astype(np.float32), (G, G), interpolation=cv2.INTER_LINEAR) > 0.99
        d_l = np.where(ok_up & view.cell_valid, up, np.nan).astype(np.float32)
    return d_s, d_c, d_l


@dataclass
class NormalStats:
    """Per-cell statistics of authentic-vs-authentic distances (leave-one-out over the references).

    Attributes:
        mu_s, sigma_s: median and spread of the structure distance, ``(G, G)``.
        mu_c, sigma_c: the same for the colour distance.
        region: ``(G, G)`` bool, the cells the product covers in most references.
        mu_l, sigma_l: the same for the learned distance, or None (no learned descriptors).
    """

    mu_s: np.ndarray
    sigma_s: np.ndarray
    mu_c: np.ndarray
    sigma_c: np.ndarray
    region: np.ndarray
    mu_l: np.ndarray | None = None
    sigma_l: np.ndarray | None = None


def nan_median(a: np.ndarray, axis: int | None = None) -> Any:
    """``np.nanmedian(a, axis)``, NaN where a slice holds no number, **without a RuntimeWarning**.

    numpy warns about an all-NaN slice through the ``warnings`` module, whose filters
    (``warnings.catch_warnings``) are process-wide and not thread-safe: the index build's threads must
    neither raise nor silence warnings. Only the slices that hold a number are handed to numpy, so the
    values are numpy's own, bit for bit (each slice is reduced on its own).

    Args:
        a: float array.
        axis: the axis reduced, or None (the whole array: a float).
    """
    a = np.asarray(a)
    if axis is None:
        return float(np.nanmedian(a)) if (~np.isnan(a)).any() else float("nan")
    return _over_slices_with_numbers(np.nanmedian, a, axis)


def nan_std(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.nanstd(a, axis)`` (ddof 0), NaN where a slice holds no number, without a RuntimeWarning (see
    :func:`nan_median`). Equal to numpy's to float rounding, not bit for bit: numpy's sums run in another order
    over the slices kept than over the whole array (at most about 2e-7 relative in float32)."""
    return _over_slices_with_numbers(np.nanstd, np.asarray(a), axis)


def _over_slices_with_numbers(reduce: Any, a: np.ndarray, axis: int) -> np.ndarray:
    """``reduce(a, axis=axis)`` (a numpy nan-reduction) of the slices holding a number; NaN for the others."""
    moved = np.moveaxis(a, axis, 0)
    ok = (~np.isnan(moved)).any(0)
    out = np.full(moved.shape[1:], np.nan, a.dtype if a.dtype.kind == "f" else np.float64)
    if ok.any():
        out[ok] = reduce(moved[:, ok], axis=0)
    return out


def _robust(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        overall = float(np.nanmedian(stack)) if np.isfinite(stack).any() else 0.1
        mu = nan_median(stack, axis=0)
        sd = nan_std(stack, axis=0) if stack.shape[0] >= 3 else np.full(stack.shape[1:], np.nan)
        floor = float(np.nanmedian(sd)) if np.isfinite(sd).any() else 0.5 * overall
    mu = np.where(np.isfinite(mu), mu, overall)
    floor = max(floor, 0.25 * overall, 1e-3)
    sd = np.where(np.isfinite(sd), np.maximum(sd, floor), floor)
    return cv2.GaussianBlur(mu.astype(np.float32), (3, 3), 0), cv2.GaussianBlur(sd.astype(np.float32), (3, 3), 0)


def white_balance_cells(region: np.ndarray, white_balance: str) -> np.ndarray | None:
    """The cells :func:`distance_maps` balances a photo's colours on, given the product's scored ``region`` and
    ``compare.white_balance``: the region for ``product``, None (every cell) for ``frame``. The index's
    statistics, its simulated listing photos and scoring all take it from here, so they compare alike."""
    return region if white_balance == "product" else None


def fit_normal_stats(bank: ProductBank, cell: int = 6, k: int = 0, margin: int = 0,
                     white_balance: str = "product"
                     ) -> tuple[NormalStats, list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]]:
    """Leave-one-out distances of each reference to the others, and their per-cell statistics.

    Args:
        bank, cell, k: see :func:`distance_maps`.
        margin: cells along each edge of the canonical frame left out of the scored ``region``: a few pixels
            of alignment error put the scene behind the package (a table, a hand) there, which no reference
            shows.
        white_balance: ``product`` balances colours on the neutral cells of the scored region, ``frame`` on
            any (``compare.white_balance``, see :func:`distance_maps`).

    Returns:
        ``(stats, loo)`` where ``loo[i]`` are reference i's ``(structure, colour, learned)`` distance maps.
    """
    n = len(bank)
    region = scored_region(bank, margin)
    loo = [distance_maps(bank.view(i), bank, cell, exclude=i, k=k, region=white_balance_cells(region, white_balance))
           for i in range(n)]
    if n >= 2:
        mu_s, sd_s = _robust(np.stack([m[0] for m in loo]))
        mu_c, sd_c = _robust(np.stack([m[1] for m in loo]))
        mu_l, sd_l = _robust(np.stack([m[2] for m in loo])) if bank.feats is not None else (None, None)
    else:  # one reference: no spread to learn from; generic scales
        shape = bank.colors.shape[1:3]
        mu_s, sd_s = np.full(shape, 0.3, np.float32), np.full(shape, 0.1, np.float32)
        mu_c, sd_c = np.full(shape, 0.05, np.float32), np.full(shape, 0.05, np.float32)
        mu_l, sd_l = (np.full(shape, 0.2, np.float32), np.full(shape, 0.1, np.float32)) if bank.feats is not None \
            else (None, None)
    return NormalStats(mu_s, sd_s, mu_c, sd_c, region, mu_l, sd_l), loo


def occlusion_cells(occlusion: np.ndarray | None, G: int) -> np.ndarray | None:
    """A ``(g, g)`` occlusion probability map brought to the ``(G, G)`` comparison cells (None stays None)."""
    if occlusion is None:
        return None
    return np.clip(cv2.resize(occlusion.astype(np.float32), (G, G), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def anomaly_maps(d_s: np.ndarray, d_c: np.ndarray, stats: NormalStats, q_cell_valid: np.ndarray,
                 d_l: np.ndarray | None = None,
                 occlusion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Standardised departure per cell and channel (0 = as typical as authentic), each ``(G, G)`` float32.

    Args:
        occlusion: optional ``(G, G)`` probability that something lies on top of the package
            (:func:`occlusion_cells`); every channel is multiplied by ``1 - occlusion``.

    Returns:
        ``(structure, colour, learned)``; ``learned`` is None when ``d_l`` or its statistics are missing.
    """
    mask = stats.region & q_cell_valid
    keep = 1.0 if occlusion is None else (1.0 - occlusion).astype(np.float32)
    todo = [(d_s, stats.mu_s, stats.sigma_s), (d_c, stats.mu_c, stats.sigma_c)]
    if d_l is not None and stats.mu_l is not None:
        todo.append((d_l, stats.mu_l, stats.sigma_l))
    out = []
    for d, mu, sd in todo:
        z = np.where(np.isfinite(d) & mask, (d - mu) / sd, 0.0).astype(np.float32)  # nothing leaks in from outside
        z = cv2.GaussianBlur(z, (3, 3), 0)
        out.append(np.where(mask, np.maximum(z, 0.0) * keep, 0.0).astype(np.float32))
    return out[0], out[1], (out[2] if len(out) > 2 else None)


def top_mean(z: np.ndarray, mask: np.ndarray, fraction: float = 0.01) -> float:
    """Mean of the highest ``fraction`` of cells inside ``mask`` (at least 4 cells)."""
    vals = z[mask]
    if vals.size == 0:
        return 0.0
    k = min(vals.size, max(4, round(fraction * vals.size)))
    return float(np.mean(np.partition(vals, vals.size - k)[-k:]))


#: standard deviations above authentic variation from which a cell counts as changed (area measures below)
CHANGED_Z = 3.0
#: structure changes spread over at least this share of the package's blocks are a tiled overlay (a seller's
#: watermark over the whole photo), not an edit of the print
OVERLAY_SPREAD = 0.5
#: ... and no block has more than this share of its cells changed (an edited logo fills its blocks)
OVERLAY_PEAK = 0.9
#: under a tiled overlay, structure departures are divided by this quantile of the photo's own structure map
OVERLAY_QUANTILE = 0.9
_BLOCKS = 8  # the package is split into _BLOCKS x _BLOCKS blocks to tell spread changes from local ones


def overlay_spread(z_s: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """How a photo's structure changes are spread over the package, split into :data:`_BLOCKS` x
    :data:`_BLOCKS` blocks.

    Returns:
        ``(spread, peak)``: the share of blocks in which at least 3% of the cells changed (near 1 for text
        tiled over the whole photo, low for an edit of the print), and the largest share of changed cells in
        one block (thin strokes of tiled text never fill a block; an edited logo does).
    """
    G = z_s.shape[0]
    b = G // _BLOCKS
    if b == 0 or not mask.any():
        return 0.0, 0.0
    n = b * _BLOCKS
    hit = ((z_s[:n, :n] > CHANGED_Z) & mask[:n, :n]).reshape(_BLOCKS, b, _BLOCKS, b).mean((1, 3))
    inside = mask[:n, :n].reshape(_BLOCKS, b, _BLOCKS, b).mean((1, 3)) > 0.5
    if not inside.any():
        return 0.0, 0.0
    return float((hit[inside] > 0.03).mean()), float(hit[inside].max())


def discount_overlay(z_s: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Structure departures scaled down under a tiled overlay.

    Where structure changed all over the package in thin strokes (:func:`overlay_spread`: spread >=
    :data:`OVERLAY_SPREAD`, no block :data:`OVERLAY_PEAK` changed; e.g. a shop name tiled over the photo),
    strokes of the overlay and strokes of an edit look alike; the map is divided by the overlay's own level
    (its :data:`OVERLAY_QUANTILE` quantile, in units of :data:`CHANGED_Z`), so only what stands out of that
    clutter keeps weight and the colour and text channels carry the decision there. Elsewhere the map is
    returned unchanged.

    Returns:
        ``(z_s, level)``: the (scaled) map and the overlay's level in standard deviations (0.0 when no
        overlay was seen).
    """
    spread, peak = overlay_spread(z_s, mask)
    if spread < OVERLAY_SPREAD or peak >= OVERLAY_PEAK:
        return z_s, 0.0
    level = float(np.quantile(z_s[mask], OVERLAY_QUANTILE))
    if level <= CHANGED_Z:
        return z_s, 0.0
    return (z_s * (CHANGED_Z / level)).astype(np.float32), level


def changed_share(z: np.ndarray, mask: np.ndarray) -> float:
    """Share of the cells in ``mask`` above :data:`CHANGED_Z` (0.0 when ``mask`` is empty)."""
    return float((z[mask] > CHANGED_Z).mean()) if mask.any() else 0.0


#: Names of the channel scores, in the order of :func:`channel_scores` and ``Prediction.channels``.
CHANNELS = ("structure", "colour", "text", "learned")


def channel_scores(z_s: np.ndarray, z_c: np.ndarray, mask: np.ndarray, top_fraction: float = 0.01,
                   text: float = float("nan"), z_l: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """The channel scores of one comparison (see :data:`CHANNELS`).

    Structure, colour and learned: the mean of each heatmap's worst cells (learned: NaN without a
    fine-tuned backbone). Text: the largest OCR text distance to the reference lines
    (:mod:`brandguard.text`), NaN when the check is off or nothing could be read.
    """
    learned = top_mean(z_l, mask, top_fraction) if z_l is not None else float("nan")
    return top_mean(z_s, mask, top_fraction), top_mean(z_c, mask, top_fraction), float(text), learned


def upsample_to_photo(zmap: np.ndarray, H: np.ndarray, size: int, photo_shape: tuple[int, int],
                      surface: Surface | None = None) -> np.ndarray:
    """Bring a canonical-frame cell map into photo pixels (zeros outside the product); ``surface``: the
    cylinder the crop was taken through (:class:`brandguard.localization.Surface`), so a wrapped label's
    heat lands where its print is (the offsets inverted to first order)."""
    big = cv2.resize(zmap, (size, size), interpolation=cv2.INTER_LINEAR)
    if surface is not None:
        off = surface_offsets(surface, size)
        g = np.arange(size, dtype=np.float32)
        mx, my = np.meshgrid(g, g)
        big = cv2.remap(big, mx - off[..., 0], my - off[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=0)
    return cv2.warpPerspective(big, H, (photo_shape[1], photo_shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Authentic variation under listing conditions (cold start), pooled across products

#: channels whose distance maps the authentic evidence keeps: structure, colour, learned
EVIDENCE_CHANNELS = 3
#: a product's own spread counts as much as the pooled one at this many reference photos
_SHRINK_SOURCES = 2.0
#: a cell's own spread counts as much as its product's level at this many simulated photos
_SHRINK_SAMPLES = 6.0
#: what authentic variation looks like when no product of the index teaches anything (structure, colour,
#: learned: median distance and spread of simulated listing photos of the demo references)
_GENERIC_LEVEL = np.array([[0.45, 0.08, 0.25], [0.12, 0.06, 0.08]], np.float32)
#: a product that adds nothing to the pooled prior (fewer than two references with simulated photos)
_NO_ENTRY = np.zeros((0, 2, EVIDENCE_CHANNELS), np.float32)


@dataclass
class AuthenticEvidence:
    """How simulated listing photos of a product's references depart from the product's other references.

    Attributes:
        cross: ``(m, 3, G, G)`` float32 distance maps (structure, colour, learned; NaN where not measured) of
            simulated photos compared with the product's *other* references, as a listing photo would be
            compared; ``m`` is 0 for a product with a single reference.
        cross_source: ``(m,)`` int, the reference (position in ``ProductModel.refs``) each was simulated from.
        cross_valid: ``(m, G, G)`` bool, the cells inside each simulated photo.
        own: ``(k, 3, G, G)`` float32, simulated photos compared with the very reference they were made from
            (listing conditions alone, without the differences between reference photos); kept whole only
            for products without ``cross`` (``k`` = 0 otherwise).
        own_source: ``(k,)`` int; own_valid: ``(k, G, G)`` bool, as for ``cross``.
        own_level: ``(2, 3)`` float32, median over the product's cells of the per-cell median (row 0) and
            spread (row 1) of the ``own`` maps: how much listing conditions alone move this product.
    """

    cross: np.ndarray
    cross_source: np.ndarray
    cross_valid: np.ndarray
    own: np.ndarray
    own_source: np.ndarray
    own_valid: np.ndarray
    own_level: np.ndarray

    @property
    def sources(self) -> int:
        """How many distinct references the cross comparisons come from."""
        return len(np.unique(self.cross_source))

    def keep_sources(self, refs: set[int]) -> AuthenticEvidence:
        """The evidence of the references in ``refs`` only (a bank that dropped references drops theirs)."""
        c = np.isin(self.cross_source, list(refs))
        o = np.isin(self.own_source, list(refs))
        return AuthenticEvidence(self.cross[c], self.cross_source[c], self.cross_valid[c], self.own[o],
                                 self.own_source[o], self.own_valid[o], self.own_level)

    def concat(self, other: AuthenticEvidence) -> AuthenticEvidence:
        """Both evidences; ``own`` maps are dropped once there are cross comparisons (the level is kept)."""
        cross = np.concatenate([self.cross, other.cross])
        keep_own = len(cross) == 0
        own = np.concatenate([self.own, other.own]) if keep_own else self.own[:0]
        own_src = np.concatenate([self.own_source, other.own_source]) if keep_own else self.own_source[:0]
        own_valid = np.concatenate([self.own_valid, other.own_valid]) if keep_own else self.own_valid[:0]
        level = other.own_level if not np.isfinite(self.own_level).any() else (
            self.own_level if not np.isfinite(other.own_level).any() else np.fmax(self.own_level, other.own_level))
        return AuthenticEvidence(cross, np.concatenate([self.cross_source, other.cross_source]),
                                 np.concatenate([self.cross_valid, other.cross_valid]), own, own_src, own_valid,
                                 level.astype(np.float32))

    @classmethod
    def empty(cls, G: int) -> AuthenticEvidence:
        z4, z3 = np.zeros((0, EVIDENCE_CHANNELS, G, G), np.float32), np.zeros((0, G, G), bool)
        return cls(z4, np.zeros(0, np.int64), z3, z4.copy(), np.zeros(0, np.int64), z3.copy(),
                   np.full((2, EVIDENCE_CHANNELS), np.nan, np.float32))

    @classmethod
    def from_comparisons(cls, cross: list[tuple[int, np.ndarray, DistanceStack]],
                         own: list[tuple[int, np.ndarray, DistanceStack]], G: int,
                         region: np.ndarray | None = None) -> AuthenticEvidence:
        """Evidence from ``(source, cell_valid, (d_s, d_c, d_l))`` comparisons of simulated photos."""
        def stack(rows: list[tuple[int, np.ndarray, DistanceStack]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if not rows:
                return (np.zeros((0, EVIDENCE_CHANNELS, G, G), np.float32), np.zeros(0, np.int64),
                        np.zeros((0, G, G), bool))
            maps = np.stack([np.stack([d[0], d[1], d[2] if d[2] is not None else np.full((G, G), np.nan)])
                             for _, _, d in rows])
            maps = maps.astype(np.float16).astype(np.float32)  # the precision an index stores them in
            return maps, np.array([s for s, _, _ in rows], np.int64), np.stack([v for _, v, _ in rows])

        c, cs, cv = stack(cross)
        o, os_, ov = stack(own)
        reg = np.ones((G, G), bool) if region is None else region
        level = np.stack(_level(o, reg)) if len(o) else np.full((2, EVIDENCE_CHANNELS), np.nan, np.float32)
        if len(c):
            o, os_, ov = o[:0], os_[:0], ov[:0]
        return cls(c, cs, cv, o, os_, ov, level.astype(np.float32))


#: ``(structure, colour, learned)`` distance maps of one comparison (learned None without descriptors)
DistanceStack = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def _cellwise(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell median and spread (std; NaN with fewer than 3 samples) of ``(m, C, G, G)`` maps."""
    mu = nan_median(maps, axis=0)
    sd = nan_std(maps, axis=0) if len(maps) >= 3 else np.full(maps.shape[1:], np.nan)
    return mu.astype(np.float32), sd.astype(np.float32)


def _level(maps: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median over ``region`` cells of the per-cell median and spread, per channel: ``((C,), (C,))``."""
    mu, sd = _cellwise(maps)
    return (np.array([nan_median(m[region]) if region.any() else np.nan for m in mu], np.float32),
            np.array([nan_median(s[region]) if region.any() else np.nan for s in sd], np.float32))


@dataclass
class AuthenticPrior:
    """What the products of an index teach about authentic variation under listing conditions.

    Attributes:
        level: ``(2, 3)`` median over products of their typical distance (row 0) and spread (row 1), per
            channel (structure, colour, learned).
        ratio: ``(2, 3)`` how much larger the distance and the spread to *other* references are than to the
            reference a simulated photo was made from (median over products): turns a one-reference
            product's own evidence into an estimate of its variation.
        products: how many products it was pooled from (0: generic values).
    """

    level: np.ndarray
    ratio: np.ndarray
    products: int

    @staticmethod
    def entry(evidence: AuthenticEvidence, region: np.ndarray) -> np.ndarray:
        """One product's share of the pool: ``(2, 2, 3)`` float32, its level (typical distance, spread; per
        evidence channel) and the ratio of that level to its own-reference level; ``(0, 2, 3)`` for a product
        with cross comparisons from fewer than two references (the pool leaves it out). The level is computed
        once per region and kept on the evidence, so pooling again after adding a product costs the new
        product's level only.
        """
        if evidence.sources < 2:
            return _NO_ENTRY
        cache = evidence.__dict__.setdefault("_levels", {})
        key = np.asarray(region, bool).tobytes()
        if key not in cache:
            cache[key] = _level(evidence.cross, region)
        level = np.stack(cache[key])
        return np.stack([level, level / np.where(evidence.own_level > 0, evidence.own_level, np.nan)]).astype(np.float32)

    @classmethod
    def from_entries(cls, entries: Sequence[np.ndarray]) -> AuthenticPrior:
        """The prior pooled from the products' :meth:`entry` values (medians over the products that count;
        generic values where none does), without reading any product's evidence: milliseconds at 100,000
        products. A median, so it has no running sum."""
        rows = [e for e in entries if len(e)]
        if not rows:
            return cls(_GENERIC_LEVEL.copy(), np.full((2, EVIDENCE_CHANNELS), 2.0, np.float32), 0)
        table = np.stack(rows)
        level, ratio = nan_median(table[:, 0], 0), nan_median(table[:, 1], 0)
        level = np.where(np.isfinite(level), level, _GENERIC_LEVEL)
        ratio = np.where(np.isfinite(ratio), np.maximum(ratio, 1.0), 2.0)
        return cls(level.astype(np.float32), ratio.astype(np.float32), len(rows))

    @classmethod
    def pool(cls, evidence: list[tuple[AuthenticEvidence, np.ndarray]]) -> AuthenticPrior:
        """Pool ``(evidence, region)`` of every product; products with cross comparisons from at least two
        references count. Generic values where none does."""
        return cls.from_entries([cls.entry(ev, region) for ev, region in evidence])


def authentic_stats(evidence: AuthenticEvidence, region: np.ndarray, prior: AuthenticPrior,
                    leave_out: int | None = None) -> NormalStats:
    """Per-cell authentic statistics from simulated listing photos, shrunk towards the product's level and
    the level towards the pooled prior (a product with few references leans on what the others teach).

    Args:
        evidence: the product's :class:`AuthenticEvidence`.
        region: ``(G, G)`` bool, the product's scored cells.
        prior: pooled over the index's products (:meth:`AuthenticPrior.pool`).
        leave_out: a reference whose simulated photos are left out (cross-fitted calibration scores).

    Returns:
        :class:`NormalStats` (``mu_l``/``sigma_l`` None when no learned distances were measured).
    """
    if len(evidence.cross):
        keep = evidence.cross_source != leave_out
        maps, sources = evidence.cross[keep], len(np.unique(evidence.cross_source[keep]))
        scale = np.ones((2, EVIDENCE_CHANNELS), np.float32)
    else:  # one reference: its own listing variation, scaled by what the other products teach
        keep = evidence.own_source != leave_out
        maps, sources = evidence.own[keep], 0
        scale = prior.ratio
    G = region.shape[0]
    if len(maps):
        mu_c, sd_c = _cellwise(maps)
        mu_c, sd_c = mu_c * scale[0][:, None, None], sd_c * scale[1][:, None, None]
        lv_mu, lv_sd = _level(maps, region)
        lv_mu, lv_sd = lv_mu * scale[0], lv_sd * scale[1]
    else:
        mu_c = sd_c = np.full((EVIDENCE_CHANNELS, G, G), np.nan, np.float32)
        lv_mu = lv_sd = np.full(EVIDENCE_CHANNELS, np.nan, np.float32)
    w = sources / (sources + _SHRINK_SOURCES)
    lv_mu = np.where(np.isfinite(lv_mu), w * lv_mu + (1 - w) * prior.level[0], prior.level[0])
    lv_sd = np.where(np.isfinite(lv_sd), w * lv_sd + (1 - w) * prior.level[1], prior.level[1])
    v = len(maps) / (len(maps) + _SHRINK_SAMPLES)
    out = []
    for j in range(EVIDENCE_CHANNELS):
        mu = np.where(np.isfinite(mu_c[j]), v * mu_c[j] + (1 - v) * lv_mu[j], lv_mu[j])
        sd2 = np.where(np.isfinite(sd_c[j]), v * sd_c[j] ** 2 + (1 - v) * lv_sd[j] ** 2, lv_sd[j] ** 2)
        sd = np.maximum(np.sqrt(sd2), max(0.5 * float(lv_sd[j]), 0.25 * float(lv_mu[j]), 1e-3))
        out.append((cv2.GaussianBlur(mu.astype(np.float32), (3, 3), 0),
                    cv2.GaussianBlur(sd.astype(np.float32), (3, 3), 0)))
    learned = len(maps) > 0 and bool(np.isfinite(maps[:, 2]).any())
    return NormalStats(out[0][0], out[0][1], out[1][0], out[1][1], region,
                       out[2][0] if learned else None, out[2][1] if learned else None)


def scored_region(bank: ProductBank, margin: int = 0) -> np.ndarray:
    """``(G, G)`` bool, the cells the product covers in most references, less ``margin`` cells at each edge.

    Raises:
        ValueError: the margin leaves nothing to score.
    """
    region = bank.cell_valid.mean(0) >= 0.5
    if margin > 0:
        if 2 * margin >= region.shape[0] - 1:
            raise ValueError(f"margin of {margin} cells leaves nothing of a {region.shape[0]}-cell frame to score; "
                             "use a smaller compare.margin")
        inner = np.zeros_like(region)
        inner[margin:-margin, margin:-margin] = True
        region &= inner
    return region
