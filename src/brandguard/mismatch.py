"""Local comparison of an aligned photo with its product's authentic references.

Both the photo and the references are warped into the product's canonical frame, so a pixel at a given
place shows the same part of the package in all of them. Two channels are compared there:

* **structure**: grey levels, lightly blurred and normalised by their local mean and contrast (so lighting
  and exposure cancel), compared pixel by pixel at a resolution that shows letters and logo outlines
  (a misspelt wordmark, a wrong font, a mirrored, distorted, moved or look-alike logo, missing parts,
  extra marks);
* **colour**: the mean colour of each cell, white-balanced on the parts the reference shows as neutral
  (white, grey, black print), compared in Lab chroma (a recoloured logo, a changed packaging colour).

Each channel keeps, per cell, the distance to the *closest* authentic reference, then standardises it by
how much the references differ from each other there (leave-one-out statistics). The result is a heatmap
of where the photo departs from every authentic reference (in standard deviations) and one score per
channel: the mean of its highest cells.

Example:
    >>> import numpy as np
    >>> from brandguard.mismatch import make_view
    >>> v = make_view(np.zeros((96, 96, 3), np.uint8), np.ones((96, 96), bool), cell=6)
    >>> v.colors.shape
    (16, 16, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CHANNELS",
    "AlignedView",
    "NormalStats",
    "ProductBank",
    "anomaly_maps",
    "channel_scores",
    "closest_references",
    "distance_maps",
    "fit_normal_stats",
    "make_view",
    "top_mean",
    "upsample_to_photo",
]

_BLUR = 1.5      # pixels (canonical frame): removes noise and JPEG blocks before comparing structure
_WINDOW = 15     # pixels: local mean/contrast window of the structure normalisation
_NEUTRAL_CHROMA = 12.0  # Lab chroma under which a reference cell counts as neutral (white balance)


@dataclass
class AlignedView:
    """One photo in a product's canonical frame.

    Attributes:
        structure: ``(S, S)`` float32 locally normalised grey levels.
        valid: ``(S, S)`` bool, pixels that came from inside the photo.
        colors: ``(G, G, 3)`` float32 mean RGB (0..1) per cell.
        cell_valid: ``(G, G)`` bool, cells fully inside the photo.
    """

    structure: np.ndarray
    valid: np.ndarray
    colors: np.ndarray
    cell_valid: np.ndarray


def make_view(crop: np.ndarray, valid: np.ndarray, cell: int = 6) -> AlignedView:
    """Prepare an aligned crop for comparison (see the module docstring)."""
    S = crop.shape[0]
    G = S // cell
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), _BLUR)
    mu = cv2.blur(grey, (_WINDOW, _WINDOW))
    sd = np.sqrt(np.maximum(cv2.blur(grey * grey, (_WINDOW, _WINDOW)) - mu * mu, 0.0))
    structure = (grey - mu) / (sd + 8.0)
    colors = cv2.resize(crop.astype(np.float32) / 255.0, (G, G), interpolation=cv2.INTER_AREA)
    cv = cv2.resize(valid.astype(np.float32), (G, G), interpolation=cv2.INTER_AREA) > 0.99
    return AlignedView(structure.astype(np.float32), valid.astype(bool), colors.astype(np.float32), cv)


@dataclass
class ProductBank:
    """The aligned authentic references of one product (the rows of :class:`AlignedView`, stacked).

    Attributes:
        structure: ``(n, S, S)`` float16; valid: ``(n, S, S)`` bool; colors: ``(n, G, G, 3)`` float32;
        cell_valid: ``(n, G, G)`` bool.
    """

    structure: np.ndarray
    valid: np.ndarray
    colors: np.ndarray
    cell_valid: np.ndarray

    def __len__(self) -> int:
        return int(self.structure.shape[0])

    @classmethod
    def from_views(cls, views: list[AlignedView]) -> ProductBank:
        return cls(np.stack([v.structure for v in views]).astype(np.float16), np.stack([v.valid for v in views]),
                   np.stack([v.colors for v in views]), np.stack([v.cell_valid for v in views]))

    def view(self, i: int) -> AlignedView:
        return AlignedView(self.structure[i].astype(np.float32), self.valid[i], self.colors[i], self.cell_valid[i])

    def select(self, rows: list[int]) -> ProductBank:
        return ProductBank(self.structure[rows], self.valid[rows], self.colors[rows], self.cell_valid[rows])

    def concat(self, other: ProductBank) -> ProductBank:
        if len(self) == 0:
            return other
        return ProductBank(*(np.concatenate([a, b]) for a, b in zip(
            (self.structure, self.valid, self.colors, self.cell_valid),
            (other.structure, other.valid, other.colors, other.cell_valid))))


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0.0, 1.0).astype(np.float32), cv2.COLOR_RGB2LAB)


def closest_references(view: AlignedView, bank: ProductBank, k: int, exclude: int | None = None) -> list[int]:
    """The ``k`` references whose structure is closest to the photo overall (all of them when ``k`` <= 0)."""
    rows = [i for i in range(len(bank)) if i != exclude]
    if k <= 0 or len(rows) <= k:
        return rows
    means = []
    for i in rows:
        both = bank.valid[i] & view.valid
        d = np.abs(view.structure - bank.structure[i].astype(np.float32))
        means.append(float(d[both].mean()) if both.any() else np.inf)
    return [rows[j] for j in np.argsort(means, kind="stable")[:k]]


def distance_maps(view: AlignedView, bank: ProductBank, cell: int = 6, exclude: int | None = None,
                  k: int = 0) -> tuple[np.ndarray, np.ndarray]:
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

    Returns:
        ``(structure, colour)`` distances, each ``(G, G)`` float32; NaN where no reference covers a cell.
    """
    G = view.colors.shape[0]
    best_s = np.full(view.structure.shape, np.inf, np.float32)
    best_c = np.full((G, G), np.inf, np.float32)
    k3 = np.ones((3, 3), np.uint8)
    for i in closest_references(view, bank, k, exclude):
        d = np.abs(view.structure - bank.structure[i].astype(np.float32))
        best_s = np.minimum(best_s, np.where(bank.valid[i], d, np.inf))
        ref_rgb, ref_ok = bank.colors[i], bank.cell_valid[i] & view.cell_valid
        ref_lab = _lab(ref_rgb)
        neutral = (np.hypot(ref_lab[..., 1], ref_lab[..., 2]) < _NEUTRAL_CHROMA) & (ref_lab[..., 0] > 20) & ref_ok
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
    d_s = np.where(covered & view.cell_valid, pooled, np.nan).astype(np.float32)
    d_c = np.where(best_c < 1e2, best_c, np.nan).astype(np.float32)
    return d_s, d_c


@dataclass
class NormalStats:
    """Per-cell statistics of authentic-vs-authentic distances (leave-one-out over the references).

    Attributes:
        mu_s, sigma_s: median and spread of the structure distance, ``(G, G)``.
        mu_c, sigma_c: the same for the colour distance.
        region: ``(G, G)`` bool, the cells the product covers in most references.
    """

    mu_s: np.ndarray
    sigma_s: np.ndarray
    mu_c: np.ndarray
    sigma_c: np.ndarray
    region: np.ndarray


def _robust(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            overall = float(np.nanmedian(stack)) if np.isfinite(stack).any() else 0.1
            mu = np.nanmedian(stack, axis=0)
            sd = np.nanstd(stack, axis=0) if stack.shape[0] >= 3 else np.full(stack.shape[1:], np.nan)
            floor = float(np.nanmedian(sd)) if np.isfinite(sd).any() else 0.5 * overall
    mu = np.where(np.isfinite(mu), mu, overall)
    floor = max(floor, 0.25 * overall, 1e-3)
    sd = np.where(np.isfinite(sd), np.maximum(sd, floor), floor)
    return cv2.GaussianBlur(mu.astype(np.float32), (3, 3), 0), cv2.GaussianBlur(sd.astype(np.float32), (3, 3), 0)


def fit_normal_stats(bank: ProductBank, cell: int = 6, k: int = 0) -> tuple[NormalStats, list[tuple[np.ndarray, np.ndarray]]]:
    """Leave-one-out distances of each reference to the others, and their per-cell statistics.

    Returns:
        ``(stats, loo)`` where ``loo[i]`` are reference i's ``(structure, colour)`` distance maps.
    """
    n = len(bank)
    loo = [distance_maps(bank.view(i), bank, cell, exclude=i, k=k) for i in range(n)]
    region = bank.cell_valid.mean(0) >= 0.5
    if n >= 2:
        mu_s, sd_s = _robust(np.stack([m[0] for m in loo]))
        mu_c, sd_c = _robust(np.stack([m[1] for m in loo]))
    else:  # one reference: no spread to learn from; generic scales
        shape = bank.colors.shape[1:3]
        mu_s, sd_s = np.full(shape, 0.3, np.float32), np.full(shape, 0.1, np.float32)
        mu_c, sd_c = np.full(shape, 0.05, np.float32), np.full(shape, 0.05, np.float32)
    return NormalStats(mu_s, sd_s, mu_c, sd_c, region), loo


def anomaly_maps(d_s: np.ndarray, d_c: np.ndarray, stats: NormalStats,
                 q_cell_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised departure per cell and channel (0 = as typical as authentic), each ``(G, G)`` float32."""
    mask = stats.region & q_cell_valid
    out = []
    for d, mu, sd in ((d_s, stats.mu_s, stats.sigma_s), (d_c, stats.mu_c, stats.sigma_c)):
        z = np.where(np.isfinite(d), (d - mu) / sd, 0.0).astype(np.float32)
        z = cv2.GaussianBlur(z, (3, 3), 0)
        out.append(np.where(mask, np.maximum(z, 0.0), 0.0).astype(np.float32))
    return out[0], out[1]


def top_mean(z: np.ndarray, mask: np.ndarray, fraction: float = 0.01) -> float:
    """Mean of the highest ``fraction`` of cells inside ``mask`` (at least 4 cells)."""
    vals = z[mask]
    if vals.size == 0:
        return 0.0
    k = min(vals.size, max(4, round(fraction * vals.size)))
    return float(np.mean(np.partition(vals, vals.size - k)[-k:]))


#: Names of the channel scores, in the order of :func:`channel_scores` and ``Prediction.channels``.
CHANNELS = ("structure", "colour", "text")


def channel_scores(z_s: np.ndarray, z_c: np.ndarray, mask: np.ndarray, top_fraction: float = 0.01,
                   text: float = float("nan")) -> tuple[float, float, float]:
    """The channel scores of one comparison (see :data:`CHANNELS`).

    Structure and colour: the mean of each heatmap's worst cells. Text: the largest OCR text distance to
    the reference lines (:mod:`brandguard.text`), NaN when the check is off or nothing could be read.
    """
    return top_mean(z_s, mask, top_fraction), top_mean(z_c, mask, top_fraction), float(text)


def upsample_to_photo(zmap: np.ndarray, H: np.ndarray, size: int, photo_shape: tuple[int, int]) -> np.ndarray:
    """Bring a canonical-frame cell map into photo pixels (zeros outside the product)."""
    big = cv2.resize(zmap, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.warpPerspective(big, H, (photo_shape[1], photo_shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
