"""Turning channel scores into one raw score, a calibrated 0..1 score and verdicts.

A photo's comparison yields one score per channel (``brandguard.mismatch.CHANNELS``). :class:`ChannelFusion`
turns each into the share of authentic photos that reach it (structure, colour, learned: the authentic
distribution of the channel with an extrapolated tail; text: a per-character OCR misread model), expressed
in decades (``-log10``: 2 is the top 1%, 6 one in a million), and keeps the largest: the raw score. :class:`ScoreCalibrator` maps the raw score to
the share of authentic photos whose raw score is lower (their smoothed empirical CDF, with a generalized
Pareto tail beyond the highest authentic score, so stronger evidence always scores higher). A score
therefore means the same for every brand: 0.99 is higher than 99% of authentic photos, so the
``counterfeit`` threshold at ``1 - takedown_fpr`` flags about ``takedown_fpr`` of authentic photos.
Authentic scores come from the references at build time (cold start), or from separate authentic photos
with ``brandguard calibrate``.

Example:
    >>> import numpy as np
    >>> from brandguard.calibration import ScoreCalibrator
    >>> cal = ScoreCalibrator.fit(np.random.default_rng(0).normal(size=500))
    >>> round(cal.score(0.0), 1)
    0.5
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from brandguard.errors import DataError

__all__ = ["ChannelFusion", "MisreadModel", "ScoreCalibrator", "Thresholds", "format_score", "verdict_for"]

_NORMAL = NormalDist()


@dataclass
class ScoreCalibrator:
    """Monotone map from raw scores to 0..1 built from authentic raw scores.

    Up to ``tail_start`` it is the smoothed empirical CDF of the authentic scores. Above, it is a generalized
    Pareto tail (:func:`scipy.stats.genpareto`, shape ``tail_shape >= 0``: exponential or heavier, never a
    finite end point) fitted by peaks over threshold to the highest authentic scores, so a score keeps
    growing with the evidence however far a photo lies beyond the calibration sample, and the share it
    promises there does not hinge on the single highest authentic score. The share of authentic photos that
    score at least as high (:meth:`tail`, :meth:`log_tail`) is computed in log space and never rounds to
    zero: ``score`` is ``1 - tail``, which float64 can tell apart down to a tail of about 1e-16; beyond
    that the tail itself (or the raw score, strictly increasing with it) still orders photos.

    Attributes:
        knots: sorted authentic raw scores (at most 512 quantiles kept).
        tail_scale: scale (raw-score units) of the generalized Pareto tail at ``tail_start``.
        source: where the authentic scores came from (``references-loo``, ``calibration``, ...).
        n: how many authentic scores it was fitted on.
        tail_shape: shape of that tail (0 = exponential).
        tail_start: raw score where the tail takes over; None: the highest knot (calibrators saved before
            the Pareto tail load with an exponential tail there, as they scored then).
    """

    knots: np.ndarray
    tail_scale: float
    source: str = "references-loo"
    n: int = 0
    tail_shape: float = 0.0
    tail_start: float | None = None

    #: share of the highest authentic scores the tail is fitted on; with fewer than ``TAIL_MIN`` of them, an
    #: exponential tail from the highest score, half the interquartile range wide
    TAIL_FRACTION = 0.2
    TAIL_MIN = 10
    #: largest tail shape: a heavier fitted tail on a few dozen scores is noise, and would let far stronger
    #: evidence add next to nothing
    MAX_SHAPE = 0.5

    @classmethod
    def fit(cls, authentic_raw: np.ndarray, source: str = "references-loo") -> ScoreCalibrator:
        """Fit on authentic raw scores (non-finite ones are dropped).

        Raises:
            DataError: fewer than 2 finite scores.
        """
        raw = np.asarray(authentic_raw, np.float64)
        raw = np.sort(raw[np.isfinite(raw)])
        if raw.size < 2:
            raise DataError(f"need at least 2 authentic scores to calibrate, got {raw.size}")
        knots = np.quantile(raw, np.linspace(0, 1, min(512, raw.size)))
        shape, scale, start = _fit_tail(raw, cls.TAIL_FRACTION, cls.TAIL_MIN, cls.MAX_SHAPE)
        return cls(knots=knots, tail_scale=scale, source=source, n=int(raw.size), tail_shape=shape,
                   tail_start=start)

    def _probs(self) -> np.ndarray:
        n = len(self.knots)
        return (np.arange(n) + 0.5) / n

    def log_tail(self, raw: float | np.ndarray) -> Any:
        """Natural log of the share of authentic photos scoring at least ``raw`` (strictly decreasing
        beyond the highest knot, finite for every finite ``raw``)."""
        r = np.asarray(raw, np.float64)
        k, probs = self.knots, self._probs()
        u, top = self._start()
        d = np.clip(r - u, 0.0, None)
        if self.tail_shape > 1e-9:
            above = np.log1p(-top) - np.log1p(self.tail_shape * d / self.tail_scale) / self.tail_shape
        else:
            above = np.log1p(-top) - d / self.tail_scale
        below = np.log1p(-probs[0] * np.exp(np.clip(r - k[0], None, 0) / self.tail_scale))
        with np.errstate(divide="ignore"):
            inside = np.log1p(-np.interp(r, k, probs))
        out = np.where(r > u, above, np.where(r < k[0], below, inside))
        return float(out) if np.ndim(out) == 0 else out

    def _start(self) -> tuple[float, float]:
        """``(raw score where the tail starts, calibrated score there)``."""
        k, probs = self.knots, self._probs()
        if self.tail_start is None or self.tail_start >= k[-1]:
            return float(k[-1]), float(probs[-1])
        return float(self.tail_start), float(np.interp(self.tail_start, k, probs))

    def tail(self, raw: float | np.ndarray) -> Any:
        """Share of authentic photos scoring at least ``raw`` (``1 - score``, without its rounding)."""
        out = np.exp(self.log_tail(raw))
        return float(out) if np.ndim(out) == 0 else out

    def score(self, raw: float | np.ndarray) -> Any:
        """Calibrated score(s) in [0, 1]: share of authentic photos scoring lower."""
        out = -np.expm1(self.log_tail(raw))
        return float(out) if np.ndim(out) == 0 else out

    def raw_at(self, score: float) -> float:
        """The raw score whose calibrated score is ``score`` (inverse of :meth:`score`)."""
        k, probs = self.knots, self._probs()
        u, top = self._start()
        if score > top:
            ratio = (1.0 - score) / (1.0 - top)
            if self.tail_shape > 1e-9:
                return float(u + self.tail_scale * (ratio ** -self.tail_shape - 1.0) / self.tail_shape)
            return float(u - self.tail_scale * np.log(ratio))
        if score < probs[0]:
            return float(k[0] + self.tail_scale * np.log(max(score, 1e-12) / probs[0]))
        return float(np.interp(score, probs, k))

    def to_dict(self) -> dict[str, Any]:
        return {"knots": [float(x) for x in self.knots], "tail_scale": self.tail_scale, "source": self.source,
                "n": self.n, "tail_shape": self.tail_shape, "tail_start": self.tail_start}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreCalibrator:
        """Load :meth:`to_dict` output; dicts saved before the Pareto tail load with an exponential one."""
        return cls(np.asarray(d["knots"], np.float64), float(d["tail_scale"]), d.get("source", "?"),
                   int(d.get("n", 0)), float(d.get("tail_shape", 0.0)),
                   None if d.get("tail_start") is None else float(d["tail_start"]))


#: excesses needed before the tail's shape is fitted (fewer: exponential)
_SHAPE_MIN = 30


def _fit_tail(raw: np.ndarray, fraction: float, least: int, max_shape: float) -> tuple[float, float, float | None]:
    """``(shape, scale, start)`` of a generalized Pareto tail of sorted ``raw`` (peaks over threshold).

    Fitted by maximum likelihood (:func:`scipy.stats.genpareto`) to the excesses of the highest
    ``fraction`` of the scores over the next lower score ``start``, shape clipped to ``[0, max_shape]``
    (exponential, shape 0, with fewer than ``_SHAPE_MIN`` excesses). With fewer than ``least`` (distinct)
    high scores: an exponential tail from the highest score whose scale is half the interquartile range
    (the calibrators of earlier versions), ``start`` None.
    """
    q25, q75 = np.quantile(raw, [0.25, 0.75])
    fallback = (0.0, float(max(q75 - q25, 1e-3)) / 2.0, None)
    m = round(fraction * raw.size)
    if m < least or raw.size < m + 2:
        return fallback
    u = float(raw[-m - 1])
    exc = raw[-m:] - u
    if np.count_nonzero(exc > 1e-12) < least // 2 or float(exc.mean()) <= 1e-9:
        return fallback
    if m < _SHAPE_MIN:  # too few excesses to tell a heavy tail: exponential, by maximum likelihood
        return 0.0, float(max(exc.mean(), 1e-3)), u
    from scipy.stats import genpareto  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shape, _, scale = genpareto.fit(exc, floc=0.0)
        except Exception:  # noqa: BLE001 - a degenerate sample: the exponential tail below
            shape, scale = 0.0, float(exc.mean())
        if not (np.isfinite(shape) and np.isfinite(scale)) or shape <= 0.0:
            shape, scale = 0.0, float(exc.mean())  # exponential maximum likelihood
        elif shape > max_shape:
            shape = max_shape
            _, _, scale = genpareto.fit(exc, f0=max_shape, floc=0.0)
    return float(shape), float(max(scale, 1e-3)), u


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
        min_inlier_density: verified matches per pixel of the product's side in the image their keypoints were
            detected on (``inliers / side``, see :meth:`dense_enough` and ``Prediction.inlier_density``) under
            which a match is *sparse*: a wrong outline drawn through a few marks another product shares (the
            small print of a packaging line) has as many inliers as a small or blurred authentic product, spread
            over a large outline. A
            sparse match that does not look like the product either (aligned similarity under
            ``weak_similarity``, the look a weak match needs: an edit such as a mirrored logo costs matches, not
            the look) is compared like any other, but it is never a takedown, and where its print also
            differs from the references in large areas it is ``unknown`` (see :meth:`sparse`). Set by
            ``calibrate`` (half the 1% quantile of the authentic photos' density, the margin ``min_inliers``
            keeps); 0.0: no such rule (the cold start, indexes calibrated before it existed).
    """

    review: float = 0.95
    takedown: float = 0.99
    min_inliers: int = 12
    notes: dict[str, Any] = field(default_factory=dict)
    weak_inliers: int = 0
    weak_similarity: float | None = None
    min_inlier_density: float = 0.0

    def allow_weak(self, similarity: float, floor: int = 6) -> None:
        """Accept weak matches at least ``similarity`` similar, with at least half ``min_inliers`` (and
        ``floor``) verified matches."""
        self.weak_inliers = int(max(floor, np.ceil(0.5 * self.min_inliers)))
        self.weak_similarity = float(similarity)

    def dense_enough(self, inliers: int, side: float | None = None) -> bool:
        """Whether ``inliers`` verified matches cover a product ``side`` pixels a side (in the image their
        keypoints were detected on; None: not known) densely enough (:attr:`min_inlier_density`)."""
        return self.min_inlier_density <= 0 or side is None or side <= 0 or inliers >= self.min_inlier_density * side

    def sparse(self, inliers: int, side: float | None, similarity: float | None) -> bool:
        """Whether a match is *sparse* (see :attr:`min_inlier_density`): too few ``inliers`` for a product
        ``side`` pixels a side in the image its keypoints were detected on, and an aligned ``similarity`` under
        ``weak_similarity`` (None: not known, it does not vouch for the match)."""
        if self.dense_enough(inliers, side):
            return False
        looks = self.weak_similarity is not None and similarity is not None and similarity >= self.weak_similarity
        return not looks

    @property
    def fewest_accepted(self) -> int:
        """The fewest verified keypoint matches that can identify a product: ``weak_inliers`` where weak matches
        are allowed, else ``min_inliers``."""
        weak = self.weak_similarity is not None and self.weak_inliers < self.min_inliers
        return max(0, self.weak_inliers) if weak else self.min_inliers

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
                "weak_inliers": self.weak_inliers, "weak_similarity": self.weak_similarity,
                "min_inlier_density": self.min_inlier_density, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        weak = d.get("weak_similarity")
        return cls(float(d["review"]), float(d["takedown"]), int(d["min_inliers"]), dict(d.get("notes", {})),
                   int(d.get("weak_inliers", 0)), None if weak is None else float(weak),
                   float(d.get("min_inlier_density", 0.0)))


def verdict_for(score: float, thresholds: Thresholds) -> str:
    """``authentic``, ``suspicious`` or ``counterfeit`` for a calibrated score."""
    if score >= thresholds.takedown:
        return "counterfeit"
    if score >= thresholds.review:
        return "suspicious"
    return "authentic"


def format_score(score: float) -> str:
    """A calibrated score as text that keeps the order of distinct scores: 6 decimals, and beyond 0.9999
    as many as show four significant digits of ``1 - score`` (up to 17 decimals; the CSV's ``raw_score``
    orders scores that float64 rounds to 1).

    Example:
        >>> format_score(0.5), format_score(1 - 1e-9), format_score(1 - 1e-12)
        ('0.500000', '0.9999999990000', '0.9999999999990000')
    """
    tail = 1.0 - float(score)
    if not np.isfinite(score) or tail >= 1e-4 or tail <= 0.0:
        return f"{score:.6f}"
    decimals = int(min(17, np.floor(-np.log10(tail)) + 4))
    return f"{score:.{decimals}f}"


def _decades(log_tail: np.ndarray) -> np.ndarray:
    """Evidence in decades of rarity, ``-log10`` of a tail share given as its natural log (2 = 1 in 100
    authentic photos reach it, 6 = one in a million); strictly increasing as the share falls, never
    infinite for a finite log."""
    return -np.minimum(np.asarray(log_tail, np.float64), 0.0) / np.log(10.0)


@dataclass
class MisreadModel:
    """How often OCR misreads authentic print, per character, and how rare a reading is under that rate.

    A reference line read over ``L`` characters with ``k`` misspelt ones (see
    :func:`brandguard.text.misspelt_count`: letters read as other letters; a covered span, read short or
    as a sticker's figures, is unread and counts in neither) is as rare among authentic photos as ``k`` or
    more misreads in ``L`` independent characters that each misread with the fitted rate (a binomial tail).
    The rate is pooled over every authentic reading (references and calibration photos) with a pessimistic prior
    (``PRIOR_MISREADS`` misreads in ``PRIOR_CHARS`` characters), so evidence no longer depends on how many
    calibration photos there were: a wordmark with two or three wrong letters is millions of times rarer
    than an authentic reading, one wrong letter is a few in a thousand. A photo reads several lines: its
    tail is the smallest line tail times the number of lines (Bonferroni). Should authentic photos misread
    more in bunches than the binomial expects, their own share holds: a photo never counts as rarer than
    the share of authentic photos that read at least as badly.

    Attributes:
        misreads: wrong characters among the authentic readings.
        chars: characters in the authentic readings.
        length: median characters of a read line, for a text distance given without its reading.
        n: authentic photos (or references) that read at least one line.
        observed: sorted log tails of the authentic photos that misread something.
    """

    misreads: float = 0.0
    chars: float = 0.0
    length: float = 8.0
    n: int = 0
    observed: list[float] = field(default_factory=list)

    PRIOR_MISREADS = 2.0
    PRIOR_CHARS = 200.0

    @property
    def rate(self) -> float:
        """Per-character misread probability of authentic print."""
        return (self.misreads + self.PRIOR_MISREADS) / (self.chars + self.PRIOR_CHARS)

    @classmethod
    def fit(cls, reads: Sequence[Sequence[tuple[float, float]] | None],
            distances: np.ndarray | None = None) -> MisreadModel:
        """Fit on authentic readings.

        Args:
            reads: per authentic photo, ``(wrong characters, line length)`` of each line read (None or empty:
                nothing read).
            distances: per photo, the text channel (normalised distance) for photos whose ``reads`` entry is
                None: counted as one line of the typical length.
        """
        per = [list(r) for r in reads if r]
        lengths = [float(L) for r in per for _, L in r if L > 0]
        length = float(np.median(lengths)) if lengths else 8.0
        wrong = sum(float(k) for r in per for k, _ in r)
        chars = sum(float(L) for r in per for _, L in r)
        n = len(per)
        if distances is not None:
            d = np.asarray(distances, np.float64)
            d = d[np.isfinite(d)]
            wrong += float(np.sum(d) * length)
            chars += float(d.size * length)
            n += int(d.size)
        model = cls(wrong, chars, length, n)
        lts = [model.photo_log_tail(r) for r in per]
        if distances is not None:
            lts += [model.photo_log_tail(None, float(v)) for v in d]
        model.observed = sorted(float(v) for v in lts if v < 0.0)
        return model

    def line_log_tail(self, wrong: float, length: float) -> float:
        """log P(at least ``wrong`` misreads among ``length`` authentic characters) (0 for none wrong)."""
        from scipy.special import betainc  # type: ignore[import-untyped]

        k, L = float(wrong), float(max(length, wrong, 1.0))
        if k <= 0.0:
            return 0.0
        return float(np.log(max(float(betainc(k, L - k + 1.0, self.rate)), 1e-300)))

    def photo_log_tail(self, reads: Sequence[tuple[float, float]] | None, distance: float = float("nan")) -> float:
        """log of the share of authentic photos whose reading is at least this wrong (0: nothing wrong,
        NaN: nothing read). Without ``reads``, ``distance`` counts as one line of the typical length."""
        if reads:
            tails = [self.line_log_tail(k, L) for k, L in reads]
            lt = min(0.0, min(tails) + float(np.log(len(tails))))
        elif np.isfinite(distance):
            d = float(np.clip(distance, 0.0, 1.0))
            lt = self.line_log_tail(d * self.length, self.length)
        else:
            return float("nan")
        if lt < 0.0 and self.observed:
            seen = int(np.searchsorted(self.observed, lt + 1e-9, side="right"))
            if seen:
                lt = max(lt, float(np.log(seen / (self.n + 1.0))))
        return lt

    def to_dict(self) -> dict[str, Any]:
        return {"misreads": self.misreads, "chars": self.chars, "length": self.length, "n": self.n,
                "observed": list(self.observed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MisreadModel:
        return cls(float(d["misreads"]), float(d["chars"]), float(d.get("length", 8.0)), int(d.get("n", 0)),
                   [float(v) for v in d.get("observed", [])])


@dataclass
class ChannelFusion:
    """Puts the comparison channels (``brandguard.mismatch.CHANNELS``) on one scale and fuses them.

    Each channel is turned into the share of authentic photos (references or calibration photos) that
    reach at least its value, and that share into decades of rarity, ``-log10`` (2 is the top 1%, 6 one
    in a million):

    * structure, colour, learned: a :class:`ScoreCalibrator` of ``log1p(score)`` per channel, its tail
      extrapolated beyond the highest authentic score (generalized Pareto), so a channel ten times farther
      out than any authentic photo is far rarer than the top authentic one, not merely at par with it;
    * text: the per-character misread model (:class:`MisreadModel`), so a wordmark read with several wrong
      letters where authentic print reads right is rare whatever the number of calibration photos.

    The fused raw score is the largest: a photo is as unusual as its most unusual channel (the other
    channels add a thousandth of their evidence, which only orders photos whose strongest channel ties).
    (On this scale
    the authentic raw scores have an exponential tail whatever the channels, which the
    :class:`ScoreCalibrator` tail fits well.)

    Fusions saved before this (``loc``/``scale``/``tails`` only) load and score as they did: log-compressed
    channels standardised by the authentic median and spread, the text channel by its empirical tail.

    Attributes:
        loc, scale, tails: the earlier standardisation (kept to load and score old indexes).
        margins: per channel index, the :class:`ScoreCalibrator` of its authentic ``log1p`` scores.
        misread: the text channel's misread model, or None.
    """

    loc: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    scale: tuple[float, ...] = (1.0, 1.0, 0.05, 1.0)
    tails: dict[int, dict[str, Any]] = field(default_factory=dict)
    margins: dict[int, ScoreCalibrator] = field(default_factory=dict)
    misread: MisreadModel | None = None

    #: smallest spread of a channel (old fusions)
    MIN_SCALE = 0.05
    #: the OCR text channel (``brandguard.mismatch.CHANNELS[2]``): modelled by misreads, not by a spread
    TAIL_CHANNELS = (2,)
    TEXT = 2

    @classmethod
    def fit(cls, channel_scores: np.ndarray,
            text_reads: Sequence[Sequence[tuple[float, float]] | None] | None = None,
            extra_text_reads: Sequence[Sequence[tuple[float, float]] | None] = ()) -> ChannelFusion:
        """Fit on authentic channel scores.

        Args:
            channel_scores: ``(n, n_channels)`` scores of authentic photos (NaN: not measured).
            text_reads: per row, ``(wrong characters, line length)`` of each reference line the photo read
                (:func:`brandguard.text.line_reads`); None (or a None row): the text channel's distance
                stands for one line of typical length.
            extra_text_reads: more authentic readings for the misread rate only (e.g. the references').

        Raises:
            DataError: ``text_reads`` does not have one row per channel row.
        """
        raw = np.asarray(channel_scores, np.float64)
        if raw.ndim != 2 or len(raw) < 2:
            return cls()
        x = np.log1p(np.maximum(raw, 0.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channel (not measured): defaults
            loc = np.nan_to_num(np.nanmedian(x, 0), nan=0.0)
            scale = np.nan_to_num(np.nanstd(x, 0), nan=1.0)
        margins = {}
        for j in range(raw.shape[1]):
            col = x[:, j][np.isfinite(x[:, j])]
            if j not in cls.TAIL_CHANNELS and col.size >= 2:
                margins[j] = ScoreCalibrator.fit(col, source="channel")
        misread = None
        if cls.TEXT < raw.shape[1]:
            text = raw[:, cls.TEXT]
            rows = list(text_reads) if text_reads is not None else [None] * len(raw)
            if len(rows) != len(raw):
                raise DataError(f"text_reads has {len(rows)} rows for {len(raw)} channel rows")
            given = [r for r, t in zip(rows, text) if r is not None and np.isfinite(t)]
            fallback = np.array([t for r, t in zip(rows, text) if r is None and np.isfinite(t)])
            extra = [r for r in extra_text_reads if r]
            if given or fallback.size or extra:
                misread = MisreadModel.fit(given + extra, fallback if fallback.size else None)
        return cls(tuple(float(v) for v in loc), tuple(float(max(v, cls.MIN_SCALE)) for v in scale), {},
                   margins, misread)

    @property
    def legacy(self) -> bool:
        """Whether this is a fusion saved before channel margins (scores as it did then)."""
        return not self.margins and self.misread is None

    def channel_z(self, channel_scores: np.ndarray,
                  text_reads: Sequence[Sequence[tuple[float, float]] | None] | Sequence[tuple[float, float]]
                  | None = None) -> np.ndarray:
        """Per-channel evidence ``(..., n_channels)`` in decades of the authentic tail share (NaN:
        not measured or not modelled). ``text_reads``: as in :meth:`fuse`."""
        raw = np.asarray(channel_scores, np.float64)
        if self.legacy:
            return self._legacy_z(raw)
        flat = raw.reshape(-1, raw.shape[-1])
        z = np.full(flat.shape, np.nan)
        for j, cal in self.margins.items():
            if j < flat.shape[1]:
                col = flat[:, j]
                ok = np.isfinite(col)
                if ok.any():
                    z[ok, j] = _decades(cal.log_tail(np.log1p(np.maximum(col[ok], 0.0))))
        if self.misread is not None and self.TEXT < flat.shape[1]:
            rows = _read_rows(text_reads, len(flat), raw.ndim)
            for i in range(len(flat)):
                lt = self.misread.photo_log_tail(rows[i] if np.isfinite(flat[i, self.TEXT]) else None,
                                                 flat[i, self.TEXT])
                if np.isfinite(lt) and lt < 0.0:
                    z[i, self.TEXT] = float(_decades(np.array([lt]))[0])
        return z.reshape(raw.shape)

    def fuse(self, channel_scores: np.ndarray,
             text_reads: Sequence[Sequence[tuple[float, float]] | None] | Sequence[tuple[float, float]]
             | None = None) -> Any:
        """Raw score(s) from ``(..., n_channels)`` channel scores; NaN channels (not measured) are ignored.

        Args:
            channel_scores: one photo's channels ``(n_channels,)`` or a batch ``(n, n_channels)``.
            text_reads: the text channel's readings, ``(wrong characters, line length)`` per line read
                (:func:`brandguard.text.line_reads`): for one photo a list of pairs, for a batch a list of
                such lists (None entries allowed). None: the text distance stands for a line of typical
                length.

        Returns:
            The largest channel evidence (a float for one photo, an array for a batch); 0 when no channel
            was measured.

        Raises:
            DataError: a batch's ``text_reads`` does not have one row per photo.
        """
        z = self.channel_z(channel_scores, text_reads)
        out = _combine(z, tie_break=not self.legacy)
        return float(out) if np.ndim(out) == 0 else out

    def fuse_left_out(self, channel_scores: np.ndarray,
                      text_reads: Sequence[Sequence[tuple[float, float]] | None] | None = None) -> np.ndarray:
        """Raw scores of the authentic photos this fusion was fitted on, each as a fresh authentic photo
        would get them: a photo among the highest of a channel is scored by that channel's margin refitted
        without it (cross-fitting), so the highest authentic photo is not capped at the top of its own
        sample. Fit the :class:`ScoreCalibrator` on these, and fresh authentic photos are flagged at the
        rate it promises.

        Args:
            channel_scores: ``(n, n_channels)``, the rows given to :meth:`fit`.
            text_reads: as given to :meth:`fit`.

        Returns:
            ``(n,)`` raw scores.
        """
        raw = np.asarray(channel_scores, np.float64)
        z = self.channel_z(raw, text_reads)
        if not self.legacy:
            x = np.log1p(np.maximum(raw, 0.0))
            for j in self.margins:
                rows = np.flatnonzero(np.isfinite(x[:, j]))
                vals = x[rows, j]
                if vals.size < 3:
                    continue
                top = np.argsort(vals, kind="stable")[-(int(ScoreCalibrator.TAIL_FRACTION * vals.size) + 2):]
                for k in top:
                    cal = ScoreCalibrator.fit(np.delete(vals, k), source="channel")
                    z[rows[k], j] = float(_decades(np.array([cal.log_tail(vals[k])]))[0])
        return np.asarray(_combine(z, tie_break=not self.legacy), np.float64)

    def _legacy_z(self, raw: np.ndarray) -> np.ndarray:
        x = np.log1p(np.maximum(raw, 0.0))
        n = min(x.shape[-1], len(self.loc))  # a fusion fitted before a channel existed ignores it
        z = np.full(x.shape, np.nan)
        z[..., :n] = (x[..., :n] - np.asarray(self.loc[:n])) / np.asarray(self.scale[:n])
        for j, tail in self.tails.items():
            if j < n:
                z[..., j] = self._tail_z(raw[..., j], tail)
        return z

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
        d: dict[str, Any] = {"loc": list(self.loc), "scale": list(self.scale),
                             "tails": {str(j): t for j, t in self.tails.items()}}
        if not self.legacy:
            d["margins"] = {str(j): c.to_dict() for j, c in self.margins.items()}
            d["misread"] = self.misread.to_dict() if self.misread is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelFusion:
        """Load :meth:`to_dict` output, including fusions saved by earlier versions."""
        mis = d.get("misread")
        return cls(tuple(d["loc"]), tuple(d["scale"]), {int(j): dict(t) for j, t in d.get("tails", {}).items()},
                   {int(j): ScoreCalibrator.from_dict(c) for j, c in d.get("margins", {}).items()},
                   MisreadModel.from_dict(mis) if mis else None)


#: weight of the other channels' evidence in the fused score: they only order photos whose strongest
#: channel is equally strong (a misspelling read the same way on two photos), never outweigh it
TIE_BREAK = 1e-3


def _combine(z: np.ndarray, tie_break: bool = True) -> np.ndarray:
    """The largest channel evidence of ``(..., n_channels)`` (NaN ignored; 0 when none), plus
    :data:`TIE_BREAK` times the positive evidence of the other channels."""
    z = np.where(np.isfinite(z), z, -np.inf)
    top = z.max(-1)
    out = np.where(np.isfinite(top), top, 0.0)
    if tie_break:
        rest = np.sum(np.clip(z, 0.0, None), -1) - np.clip(out, 0.0, None)
        out = out + TIE_BREAK * rest
    return out


def _read_rows(text_reads: Any, n: int, ndim: int) -> list[Any]:
    """``text_reads`` as one entry per photo (see :meth:`ChannelFusion.fuse`)."""
    if text_reads is None:
        return [None] * n
    if ndim == 1:
        return [list(text_reads)]
    rows = list(text_reads)
    if len(rows) != n:
        raise DataError(f"text_reads has {len(rows)} rows for {n} photos")
    return rows
