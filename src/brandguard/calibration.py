"""Turning raw mismatch scores into a calibrated 0..1 score and verdicts.

The calibrated score of a photo is the share of authentic photos whose raw score is lower (an empirical
CDF of authentic scores, smoothed, with an exponential tail beyond the highest authentic score). It
therefore means the same for every brand: a score of 0.99 is higher than 99% of authentic photos, so the
``counterfeit`` threshold at ``1 - takedown_fpr`` flags about ``takedown_fpr`` of authentic photos.
Authentic scores come from the references themselves (leave-one-out) at build time, or from separate
authentic photos with ``brandguard calibrate``.

Example:
    >>> import numpy as np
    >>> from brandguard.calibration import ScoreCalibrator
    >>> cal = ScoreCalibrator.fit(np.random.default_rng(0).normal(size=500))
    >>> round(cal.score(0.0), 1)
    0.5
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["ChannelFusion", "ScoreCalibrator", "Thresholds", "verdict_for"]

_NORMAL = NormalDist()


@dataclass
class ScoreCalibrator:
    """Monotone map from raw scores to 0..1 built from authentic raw scores.

    Attributes:
        knots: sorted authentic raw scores (at most 512 quantiles kept).
        tail_scale: raw-score scale of the exponential tail above the highest knot.
        source: where the authentic scores came from (``references-loo`` or ``calibration``).
        n: how many authentic scores it was fitted on.
    """

    knots: np.ndarray
    tail_scale: float
    source: str = "references-loo"
    n: int = 0

    @classmethod
    def fit(cls, authentic_raw: np.ndarray, source: str = "references-loo") -> ScoreCalibrator:
        raw = np.sort(np.asarray(authentic_raw, np.float64)[np.isfinite(authentic_raw)])
        if raw.size < 2:
            raise ValueError(f"need at least 2 authentic scores to calibrate, got {raw.size}")
        knots = np.quantile(raw, np.linspace(0, 1, min(512, raw.size)))
        q25, q75 = np.quantile(raw, [0.25, 0.75])
        scale = float(max(q75 - q25, 1e-3)) / 2.0
        return cls(knots=knots, tail_scale=scale, source=source, n=int(raw.size))

    def score(self, raw: float | np.ndarray) -> Any:
        """Calibrated score(s) in [0, 1]: share of authentic photos scoring lower."""
        r = np.asarray(raw, np.float64)
        k = self.knots
        n = len(k)
        probs = (np.arange(n) + 0.5) / n
        inside = np.interp(r, k, probs)
        top = probs[-1]
        above = 1.0 - (1.0 - top) * np.exp(-np.clip(r - k[-1], 0, None) / self.tail_scale)
        below = probs[0] * np.exp(np.clip(r - k[0], None, 0) / self.tail_scale)
        out = np.where(r > k[-1], above, np.where(r < k[0], below, inside))
        return float(out) if np.ndim(out) == 0 else out

    def raw_at(self, score: float) -> float:
        """The raw score whose calibrated score is ``score`` (inverse of :meth:`score`)."""
        k = self.knots
        n = len(k)
        probs = (np.arange(n) + 0.5) / n
        if score > probs[-1]:
            return float(k[-1] - self.tail_scale * np.log((1.0 - score) / (1.0 - probs[-1])))
        if score < probs[0]:
            return float(k[0] + self.tail_scale * np.log(max(score, 1e-12) / probs[0]))
        return float(np.interp(score, probs, k))

    def to_dict(self) -> dict[str, Any]:
        return {"knots": [float(x) for x in self.knots], "tail_scale": self.tail_scale, "source": self.source,
                "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreCalibrator:
        return cls(np.asarray(d["knots"], np.float64), float(d["tail_scale"]), d.get("source", "?"), int(d.get("n", 0)))


@dataclass
class Thresholds:
    """Verdict thresholds on the calibrated score, and the unknown-product rule.

    Attributes:
        review: calibrated score at or above which a photo is ``suspicious``.
        takedown: calibrated score at or above which it is ``counterfeit``.
        min_inliers: fewer verified keypoint matches than this means ``unknown`` product, unless the weak
            match below holds.
        weak_inliers, weak_similarity: a *weak match*, with at least ``weak_inliers`` (but fewer than
            ``min_inliers``) verified matches and a plausible homography, still counts as the product when the
            photo, aligned with it, is at least ``weak_similarity`` similar to one of the product's references
            (global cosine). Edits such as a mirrored logo and wordmark, a big sticker or new packaging colours
            cost keypoint matches without making the package another product. ``weak_similarity`` None:
            weak matches are ``unknown``.
    """

    review: float = 0.95
    takedown: float = 0.99
    min_inliers: int = 12
    notes: dict[str, Any] = field(default_factory=dict)
    weak_inliers: int = 0
    weak_similarity: float | None = None

    def allow_weak(self, similarity: float, floor: int = 12) -> None:
        """Accept weak matches at least ``similarity`` similar, with at least half ``min_inliers`` (and
        ``floor``) verified matches."""
        self.weak_inliers = int(max(floor, np.ceil(0.5 * self.min_inliers)))
        self.weak_similarity = float(similarity)

    def is_weak(self, inliers: int, sane: bool = True) -> bool:
        """Whether a candidate with this many inliers is worth the aligned-similarity check."""
        return self.weak_similarity is not None and sane and self.weak_inliers <= inliers < self.min_inliers

    def accepts(self, inliers: int, similarity: float | None = None, sane: bool = True) -> bool:
        """Whether a match with ``inliers`` verified keypoints (and, for a weak one, this aligned similarity)
        identifies the product."""
        if inliers >= self.min_inliers:
            return True
        weak = self.weak_similarity
        return weak is not None and similarity is not None and self.is_weak(inliers, sane) and similarity >= weak

    def to_dict(self) -> dict[str, Any]:
        return {"review": self.review, "takedown": self.takedown, "min_inliers": self.min_inliers,
                "weak_inliers": self.weak_inliers, "weak_similarity": self.weak_similarity, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        weak = d.get("weak_similarity")
        return cls(float(d["review"]), float(d["takedown"]), int(d["min_inliers"]), dict(d.get("notes", {})),
                   int(d.get("weak_inliers", 0)), None if weak is None else float(weak))


def verdict_for(score: float, thresholds: Thresholds) -> str:
    """``authentic``, ``suspicious`` or ``counterfeit`` for a calibrated score."""
    if score >= thresholds.takedown:
        return "counterfeit"
    if score >= thresholds.review:
        return "suspicious"
    return "authentic"


@dataclass
class ChannelFusion:
    """Puts the comparison channels (``brandguard.mismatch.CHANNELS``) on one scale and fuses them.

    Each channel score is log-compressed and standardised by the median and spread of authentic
    (leave-one-out reference or calibration) scores of that channel; the fused raw score is the largest
    standardised channel, so a photo is as suspicious as its most unusual channel.

    The OCR text distance is different: almost every authentic photo reads exactly like its references (0),
    so a median and a spread say nothing about how rare a misread is. That channel is standardised by its
    empirical tail instead: a distance ``d`` gets the normal quantile of ``(k + 1) / (n + 2)``, where ``k`` of
    the ``n`` authentic photos read at least ``d`` away. With no misread among 80 calibration photos a
    misspelling is about as unusual as the top 1.2% of authentic photos (2.3 units), not more, so one
    misread of a short wordmark cannot outrank every counterfeit; more calibration photos let it count more.

    Attributes:
        loc: per-channel median of ``log1p(score)`` over authentic scores.
        scale: per-channel spread (std) of the same.
        tails: per tail-standardised channel, ``{"n": authentic photos with a score, "positive": sorted
            positive authentic scores}``.
    """

    loc: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    scale: tuple[float, ...] = (1.0, 1.0, 0.05, 1.0)
    tails: dict[int, dict[str, Any]] = field(default_factory=dict)

    #: smallest spread of a channel, so that one whose authentic scores barely vary does not make every change
    #: extreme (and the text channel's spread in fusions saved before it was tail-standardised)
    MIN_SCALE = 0.05
    #: channels standardised by their empirical tail (the OCR text distance, ``brandguard.mismatch.CHANNELS[2]``)
    TAIL_CHANNELS = (2,)

    @classmethod
    def fit(cls, channel_scores: np.ndarray) -> ChannelFusion:
        raw = np.asarray(channel_scores, np.float64)
        x = np.log1p(np.maximum(raw, 0.0))
        if x.ndim != 2 or len(x) < 2:
            return cls()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channel (not measured): defaults
            loc = np.nan_to_num(np.nanmedian(x, 0), nan=0.0)
            scale = np.nan_to_num(np.nanstd(x, 0), nan=1.0)
        tails = {}
        for j in cls.TAIL_CHANNELS:
            if j < raw.shape[1]:
                col = raw[:, j][np.isfinite(raw[:, j])]
                if col.size:
                    tails[j] = {"n": int(col.size), "positive": [float(v) for v in np.sort(col[col > 0])]}
        return cls(tuple(float(v) for v in loc), tuple(float(max(v, cls.MIN_SCALE)) for v in scale), tails)

    def fuse(self, channel_scores: np.ndarray) -> Any:
        """Raw score(s) from ``(..., n_channels)`` channel scores; NaN channels (not measured) are ignored."""
        raw = np.asarray(channel_scores, np.float64)
        x = np.log1p(np.maximum(raw, 0.0))
        n = min(x.shape[-1], len(self.loc))  # a fusion fitted before a channel existed ignores it
        z = (x[..., :n] - np.asarray(self.loc[:n])) / np.asarray(self.scale[:n])
        for j, tail in self.tails.items():
            if j < n:
                z[..., j] = self._tail_z(raw[..., j], tail)
        z = np.where(np.isfinite(z), z, -np.inf)
        out = z.max(-1)
        out = np.where(np.isfinite(out), out, 0.0)
        return float(out) if np.ndim(out) == 0 else out

    @staticmethod
    def _tail_z(values: np.ndarray, tail: dict[str, Any]) -> np.ndarray:
        """Normal quantile of the (pseudo-counted) share of authentic scores at least as large; NaN stays NaN."""
        v = np.asarray(values, np.float64)
        pos = np.asarray(tail["positive"], np.float64)
        n = int(tail["n"])
        at_least = np.where(v > 0, pos.size - np.searchsorted(pos, v, side="left"), n)
        p = np.minimum((at_least + 1.0) / (n + 2.0), 0.5)
        z = np.vectorize(lambda q: -_NORMAL.inv_cdf(q), otypes=[np.float64])(p)
        return np.where(np.isfinite(v), z, np.nan)

    def to_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "scale": list(self.scale),
                "tails": {str(j): t for j, t in self.tails.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelFusion:
        return cls(tuple(d["loc"]), tuple(d["scale"]), {int(j): dict(t) for j, t in d.get("tails", {}).items()})
