"""The detector: one listing photo in, a typed :class:`Prediction` out.

Follow one photo through :meth:`Detector.predict_batch`:

1. :func:`brandguard.images.load_photo` decodes it (RGB, EXIF orientation, size limits): a working copy
   (long side <= ``localization.max_side``) and, for a larger photo, its full resolution
   (<= ``localization.full_side``);
2. :func:`brandguard.localization.detect_keypoints` finds the working copy's RootSIFT keypoints (on a GPU,
   kornia's: ``runtime.geometry``, :mod:`brandguard.accel`);
3. :meth:`ReferenceIndex.localize_instances` matches them (FAISS) to the products' keypoints and verifies
   the best candidates with a RANSAC homography, then looks for further instances (several units, collage
   cells) among the keypoints left. In a photo larger than the working copy,
   :meth:`ReferenceIndex.refine_alignment` re-estimates each homography on keypoints of the product's region
   at full resolution. A photo that came within a quarter of the rule for one product and whose keypoint
   budget ran out (a watermark or clutter took it) is searched again with twice the keypoints, for that
   product only; one where nothing was found, at full resolution when that is larger (any product). No
   verified product means ``unknown``;
4. each instance is cut from the full-resolution photo into its product's canonical frame
   (:func:`brandguard.localization.crop_canonical`: the same detail whatever the photo's size) and embedded
   (global vector + patch features) by :class:`brandguard.embedding.Embedder`, a batch in one forward pass;
5. :func:`brandguard.comparison.compare` compares it cell by cell with the product's aligned references
   (the very function the index's authentic statistics come from): heatmap and channel scores;
6. :mod:`brandguard.calibration` turns the raw score into a 0..1 score and a verdict; the photo's answer is
   its worst instance, and a product too small to judge (``localization.min_product_side``) gets a note
   and no takedown.

Example:
    >>> import brandguard as bg
    >>> det = bg.load("idx/")                                    # doctest: +SKIP
    >>> p = det.predict("listing.jpg")                            # doctest: +SKIP
    >>> p.verdict, round(p.score, 3), p.brand, p.heatmap.shape     # doctest: +SKIP
    ('counterfeit', 0.998, 'adidas', (480, 640))
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brandguard.accel import OpenCVGeometry, libraries_on_one_core
from brandguard.calibration import format_score, verdict_for
from brandguard.comparison import compare
from brandguard.config import Config
from brandguard.embedding import Embedder
from brandguard.errors import ImageLoadError
from brandguard.images import ImageSource, load_image, load_photo
from brandguard.index import ReferenceIndex
from brandguard.localization import (
    Keypoints,
    canonical_to_image_corners,
    crop_canonical,
    fit_surface,
    flat_print,
    print_turn,
    product_side,
    search_cylinder,
    support_mask,
    surface_valid,
)
from brandguard.mismatch import CHANNELS, kept_cells, make_view, structure_map, upsample_to_photo

#: per thread of the comparison stage: the OCR reader it took from the pool (Detector._score_prepared)
_COMPARE_THREAD = threading.local()


class _OneCallAtATime:
    """A reader set by the caller, shared by the comparison threads: its methods are called one at a time (under
    a lock), as they were with one worker; other attributes are read through."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._reader, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call

__all__ = ["VERDICTS", "Detector", "Match", "Prediction", "build_index", "load", "predict"]

#: fit-and-recrop rounds of a curved package's surface (each sees the flow the previous one left)
_SURFACE_ROUNDS = 2

VERDICTS = ("authentic", "suspicious", "counterfeit", "unknown", "error")


@dataclass(frozen=True)
class Match:
    """An authentic reference the photo was matched to.

    Attributes:
        brand: brand of the reference.
        product: product of the reference.
        reference: path of the reference photo.
        similarity: cosine of global vectors, 0..1 (1 = same appearance).
    """

    brand: str
    product: str
    reference: str
    similarity: float


@dataclass(frozen=True)
class Prediction:
    """brandguard's answer for one photo.

    Attributes:
        source: the photo's path (or ``<array>`` / ``<bytes>``).
        verdict: ``authentic`` | ``suspicious`` | ``counterfeit`` | ``unknown`` (no known product resembles
            it) | ``error`` (the photo could not be read; see ``error``).
        score: 0..1, higher means more likely counterfeit: the share of authentic photos of known products
            that score lower. 0.0 for ``unknown`` and ``error``.
        raw_score: uncalibrated evidence of the most unusual channel, in decades of rarity among authentic
            photos (``-log10`` of the share reaching it: 2 = top 1%; see :class:`~brandguard.calibration.ChannelFusion`).
        brand: brand of the matched product ("" when unknown).
        product: matched product ("" when unknown).
        similarity: 0..1, how closely the best authentic reference matches overall (global cosine).
        reference: path of the best-matching authentic reference ("" when none).
        matches: the references compared, best first.
        inliers: geometrically verified keypoint matches with the product (0 when none).
        channels: per-channel mismatch before fusion (see ``brandguard.mismatch.CHANNELS``), in standard
            deviations above authentic variation (empty when nothing was compared).
        heatmap: ``(H, W)`` float32 over the decoded photo (long side <= ``localization.max_side``): how
            far each pixel's neighbourhood departs from the authentic references, in standard deviations
            (0 = typical, outside the product 0). None for ``unknown``/``error``.
        quad: ``(4, 2)`` corners of the product's canonical frame in heatmap pixels, or None.
        error: why the photo could not be scored, for ``error``.
        notes: warnings a reviewer needs beside the verdict (e.g. thin evidence from few references, a
            product too small to compare, a doubtful alignment), short phrases; empty when none.
        instances: how many instances of known products were found and compared in the photo (0 when none).
        text: the OCR wordmark check, one dict per reference line it read: ``expected`` (what the references
            read), ``read`` (what the photo reads there), ``confidence`` (0..1), ``distance`` (text distance
            0..1, NaN when not read confidently) and ``counted`` (the distance the text channel kept: 0 when the
            structure channel saw no changed strokes there) and ``skipped`` (True when the lines were not read at
            all because the structure channel saw too few changed strokes under every one of them for any
            misread to count: ``read`` empty, ``distance`` NaN, ``counted`` 0; :attr:`Detector.read_every_line`
            reads them regardless); empty when the check did not run.
        product_side: the size of the reported product in full-resolution pixels of the photo (square root of
            the area of its outline; the aligned crop is ``localization.canonical_size`` pixels a side, so a
            smaller product is upsampled); 0.0 when none was found.
        inlier_density: ``inliers`` per pixel of the product's side in the image their keypoints were detected
            on (the working copy reduced to ``localization.query_detect_side``, or the full resolution's region
            where the alignment was refined there); under
            :attr:`~brandguard.calibration.Thresholds.min_inlier_density` the match is sparse: never a takedown.
            0.0 when no product was found.
    """

    source: str
    verdict: str
    score: float
    raw_score: float = 0.0
    brand: str = ""
    product: str = ""
    similarity: float = 0.0
    reference: str = ""
    matches: tuple[Match, ...] = ()
    inliers: int = 0
    channels: tuple[float, ...] = ()
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    quad: np.ndarray | None = field(default=None, repr=False, compare=False)
    error: str = ""
    notes: tuple[str, ...] = ()
    instances: int = 0
    text: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    product_side: float = 0.0
    inlier_density: float = 0.0

    @property
    def is_flagged(self) -> bool:
        """Whether the verdict asks for a human (suspicious) or a takedown (counterfeit)."""
        return self.verdict in ("suspicious", "counterfeit")

    def to_row(self) -> dict[str, str]:
        """The CSV row (columns ``brandguard.scoring.CSV_COLUMNS``): the shared/DESIGN.md columns
        path,verdict,score,brand,product,similarity,reference,error, then raw_score, one column per
        comparison channel (``brandguard.mismatch.CHANNELS``, empty when not measured), instances and note
        (``; ``-joined :attr:`notes`). Cells are plain text; spreadsheet-safety is the writer's job."""
        row = {"path": self.source, "verdict": self.verdict, "score": format_score(self.score), "brand": self.brand,
               "product": self.product, "similarity": f"{self.similarity:.4f}", "reference": self.reference,
               "error": self.error, "raw_score": f"{self.raw_score:.4f}" if self.channels else ""}
        for name, v in zip(CHANNELS, self.channels or (float("nan"),) * len(CHANNELS)):
            row[name] = f"{v:.4f}" if np.isfinite(v) else ""
        for name in CHANNELS[len(self.channels or CHANNELS):]:
            row[name] = ""
        row["instances"] = str(self.instances)
        row["note"] = "; ".join(self.notes)
        return row


NEAR_RULE = 0.75
"""Share of the unknown-product rule (``thresholds.min_inliers``) a photo's best product must reach for the
second search with more keypoints (:meth:`Detector._search_more_keypoints`)."""


def _surface_note(a: Any) -> tuple[str, ...]:
    """The note of a label compared through a cylinder (:meth:`Detector._crop`)."""
    s = getattr(a, "surface", None)
    if s is None or s.params is None:
        return ()
    note = (f"curved label (bottle or can, about {np.degrees(s.params[0]):.0f} deg either side): compared "
            f"through a cylinder, where it faces the camera")
    return (note,)


def _full(prepared: Any) -> np.ndarray:
    """The full-resolution photo of a prepared ``(working copy, keypoints[, full])`` (the working copy when
    the caller prepared none)."""
    return prepared[2] if len(prepared) > 2 else prepared[0]


def _source_name(src: Any) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    return f"<{type(src).__name__}>"


class Detector:
    """Scores listing photos against a :class:`ReferenceIndex`.

    Args:
        index: the reference index.
        embedder: optional; by default the index's own backbone (checked against the index's digest).
    """

    def __init__(self, index: ReferenceIndex, embedder: Embedder | None = None) -> None:
        self.index = index
        if embedder is not None:
            index.check_embedder(embedder)
            index._embedder = embedder
        self.config: Config = index.config
        #: read every reference line of the wordmark check, even where no misread could count (see
        #: :meth:`_read_text`); :meth:`calibrate` does, since authentic readings set the misread rate
        self.read_every_line = False
        #: look for a price sticker on every photo, not only those that would be flagged (see
        #: ``compare.price_stickers``); :meth:`calibrate` does, so the authentic scores the thresholds are fitted
        #: on are those of photos with their stickers left out, as flagged listings are scored
        self.read_every_sticker = False

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None, precision: str | None = None,
             batch_size: int | None = None, backbone: str | None = None, checkpoint: str | None = None,
             geometry: str | None = None) -> Detector:
        """Load an index directory and make a detector of it.

        Args:
            directory: written by :meth:`ReferenceIndex.save`.
            device: override the index's runtime device (``cpu``, ``cuda``...).
            precision: override the precision (``auto``, ``fp32``, ``bf16``, ``fp16``).
            batch_size: override the batch size.
            geometry: override where keypoints, RANSAC and warps run (``auto``, ``opencv``, ``kornia``;
                :mod:`brandguard.accel`).
            backbone, checkpoint: the backbone you intend to use; refused with a clear message when they
                differ from the index's.

        Raises:
            IndexCorruptError, IndexCompatibilityError: see :meth:`ReferenceIndex.load`.
        """
        index = ReferenceIndex.load(directory)
        over = {k: v for k, v in {"runtime.device": device, "runtime.precision": precision,
                                  "runtime.batch_size": batch_size, "runtime.geometry": geometry}.items()
                if v is not None}
        if over:
            index.config = index.config.with_overrides(over)
        embedder = None
        if backbone is not None or checkpoint is not None:
            rt = index.config.runtime
            embedder = Embedder.from_name(backbone or index.backbone_info["spec"]["name"], checkpoint,
                                          device=rt.device, precision=rt.precision, batch_size=rt.batch_size)
        return cls(index, embedder)

    # ----------------------------------------------------------------------------------
    def predict(self, image: ImageSource) -> Prediction:
        """Score one photo (path, bytes, PIL image or RGB array).

        Raises:
            ImageLoadError: the photo cannot be read (use :meth:`predict_batch` to get an error row instead).
        """
        return self.predict_batch([image], on_error="raise")[0]

    def predict_batch(self, images: Sequence[ImageSource], on_error: str = "record") -> list[Prediction]:
        """Score photos together (one forward pass per ``runtime.batch_size``), in input order.

        Args:
            images: paths, bytes, PIL images or arrays.
            on_error: ``record`` turns an unreadable photo into an ``error`` prediction and goes on;
                ``raise`` raises its :class:`ImageLoadError`.
        """
        if on_error not in ("record", "raise"):
            raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
        loc = self.config.localization

        geo = self.index.geometry
        on_threads = isinstance(geo, OpenCVGeometry)  # decode and detect on each thread; else detect in batches

        def prepare(src: ImageSource) -> tuple[np.ndarray, Keypoints | None, np.ndarray] | ImageLoadError:
            try:
                photo = load_photo(src, max_side=loc.max_side, full_side=max(loc.full_side, loc.max_side))
            except ImageLoadError as exc:
                return exc
            kp = geo.detect(photo.image, loc.query_detect_side, loc.query_keypoints) if on_threads else None
            return photo.image, kp, photo.full

        # the batch runs on runtime.workers threads of its own (decoding and keypoints, then crops and comparisons):
        # OpenBLAS and OpenCV then run each call on its thread instead of adding threads that spin while they
        # wait (score_folder of 200 demo listings on 2 idle cores: about 20 s against 26 s with the comparisons in
        # one thread and the libraries' own pools)
        side_by_side = self.config.runtime.workers > 1 and len(images) > 1  # one photo: the libraries' own threads
        with libraries_on_one_core() if side_by_side else contextlib.nullcontext():
            with ThreadPoolExecutor(max(1, self.config.runtime.workers)) as ex:
                prepared: list[Any] = list(ex.map(prepare, images))
            if not on_threads:
                ok = [i for i, p in enumerate(prepared) if not isinstance(p, ImageLoadError)]
                kps = geo.detect_batch([prepared[i][0] for i in ok], loc.query_detect_side, loc.query_keypoints)
                for i, kp in zip(ok, kps):
                    prepared[i] = (prepared[i][0], kp, prepared[i][2])
            return self._score_prepared([_source_name(s) for s in images], prepared, on_error)

    def _score_prepared(self, names: list[str], prepared: list[Any], on_error: str) -> list[Prediction]:
        """Score decoded photos: ``prepared[i]`` is ``(working copy, keypoints[, full resolution])`` or the
        :class:`ImageLoadError` that stopped it (see :meth:`predict_batch`)."""
        index, cfg = self.index, self.config
        loc = cfg.localization
        results: list[Prediction | None] = [None] * len(prepared)
        ok = []
        for i, p in enumerate(prepared):
            if isinstance(p, ImageLoadError):
                if on_error == "raise":
                    raise p
                results[i] = Prediction(names[i], "error", 0.0, error=p.reason)
            else:
                ok.append(i)
        aligns = index.localize_instances([prepared[i][1] for i in ok], [prepared[i][0].shape for i in ok],
                                          max(1, loc.max_instances))
        aligns = [self._refine(prepared[i], acc, best) for i, (acc, best) in zip(ok, aligns)]
        aligns = self._search_more_keypoints(ok, aligns, prepared)
        aligns = self._search_full_resolution(ok, aligns, prepared)
        weak = self._weak_matches([(i, best) for i, (acc, best) in zip(ok, aligns) if not acc and best is not None
                                   and index.thresholds.is_weak(best.inliers, best.sane)], prepared)
        # every instance of a known product large enough to compare: (photo, alignment, side in full pixels)
        to_compare: list[tuple[int, Any, float]] = []
        tiny: dict[int, tuple[Any, float]] = {}  # photos whose every instance is far too small
        unknown = []
        for i, (acc, best) in zip(ok, aligns):
            found = acc or ([weak[i][0]] if i in weak else [])
            if not found:
                unknown.append((i, best))
                continue
            sides = [self._product_side(prepared[i], a) for a in found]
            big = [(i, a, side) for a, side in zip(found, sides) if side >= loc.unknown_product_side]
            to_compare.extend(big)
            if not big:
                tiny[i] = (found[0], sides[0])
        emb = index.embedder
        # aligned crops of the instances (a weak match's was cut and embedded when it was checked) and, in the
        # same forward passes, the global vectors of the photos where no known product was found
        cut = [weak[i][1:] if i in weak and a is weak[i][0] else None for i, a, _ in to_compare]
        # the crops (a cylinder fitted where a label is curved) and the comparisons of the instances: each
        # instance's work depends on that instance alone, so it runs on runtime.workers threads, the libraries
        # on one core per call (libraries_on_one_core), results in input order
        workers = min(max(1, cfg.runtime.workers), len(to_compare))

        def each(fn: Any, args: list[Any]) -> list[Any]:
            if workers <= 1:
                return [fn(*x) for x in args]
            from brandguard.text import TextReader, _reader_pool

            # a stock reader is replaced by single-threaded readers of their own (one per thread, from a pool), not
            # shared through its lock; a reader the caller set (a subclass, another OCR behind the same interface)
            # is kept, and called one call at a time, as with one worker (it need not be thread-safe)
            stock = type(index.text_reader) is TextReader
            readers = _reader_pool(workers) if stock else None
            shared = _OneCallAtATime(index.text_reader) if not stock and index.text_reader is not None else None

            def one(x: Any) -> Any:
                _COMPARE_THREAD.reader = shared if readers is None else readers.get()
                try:
                    return fn(*x)
                finally:
                    if readers is not None:
                        readers.put(_COMPARE_THREAD.reader)
                    _COMPARE_THREAD.reader = None

            with libraries_on_one_core(), ThreadPoolExecutor(workers) as ex:
                return list(ex.map(one, args))

        def cut_or_crop(i: int, a: Any, c: Any) -> tuple[np.ndarray, np.ndarray, float]:
            return (c[0], c[1], c[3]) if c is not None else self._crop(prepared[i], a)

        made = each(cut_or_crop, [(i, a, c) for (i, a, _), c in zip(to_compare, cut)])
        crops = [c for c, _, _ in made]
        valids = [v for _, v, _ in made]
        noises = [n for _, _, n in made]
        fresh = [k for k, c in enumerate(cut) if c is None]
        g_all = emb.embed_global([crops[k] for k in fresh] + [prepared[i][0] for i, _ in unknown]) \
            if fresh or unknown else np.zeros((0, 0), np.float32)
        gvec: list[np.ndarray] = [c[2] if c is not None else np.empty(0, np.float32) for c in cut]
        for j, k in enumerate(fresh):
            gvec[k] = g_all[j]
        if to_compare:
            feats, occ = emb.embed_local(np.stack(crops)) if emb.has_local_head \
                else ([None] * len(crops), [None] * len(crops))
            per_photo: dict[int, list[tuple[Prediction, float]]] = {}
            todo = []
            for k, (i, a, side) in enumerate(to_compare):
                keep = support_mask(a.support, loc.canonical_size, cfg.compare.support_margin)
                valid = valids[k] if keep is None else valids[k] & keep  # what the alignment vouches for
                others = [q for j, (i2, a2, _) in enumerate(to_compare) if i2 == i and j != k
                          for q in [canonical_to_image_corners(a2.H, loc.canonical_size)] if q is not None]
                todo.append((names[i], prepared[i][0], a, gvec[k], crops[k], valid, feats[k], occ[k], noises[k], others))
            for (i, _, side), p in zip(to_compare, each(self._compare, todo)):
                per_photo.setdefault(i, []).append((p, side))
            for i, instances in per_photo.items():
                results[i] = self._worst_instance(instances)
        for i, (a, side) in tiny.items():
            m = index.products[a.product_id]
            results[i] = Prediction(names[i], "unknown", 0.0, inliers=a.inliers, product_side=side,
                                    inlier_density=self._inlier_density(a, prepared[i][0].shape),
                                    quad=canonical_to_image_corners(a.H, loc.canonical_size),
                                    notes=(f"{m.key} found but only {side:.0f} px: far too small to compare",))
        if unknown:
            near = index.search_global(g_all[len(fresh):], k=3)
            for (i, best), hits in zip(unknown, near):
                matches = tuple(self._match(pid, row, sim) for pid, row, sim in hits)
                results[i] = Prediction(names[i], "unknown", 0.0, brand="", product="",
                                        similarity=float(np.clip(hits[0][2], 0, 1)) if hits else 0.0,
                                        reference="", matches=matches, inliers=best.inliers if best else 0,
                                        inlier_density=self._inlier_density(best, prepared[i][0].shape) if best else 0.0,
                                        notes=self._near_miss(best))
        return [r for r in results if r is not None]

    def _near_miss(self, best: Any) -> tuple[str, ...]:
        """The note of a photo called ``unknown`` whose closest indexed product came near enough to look at
        (at least ``weak_inliers`` verified keypoint matches): a package under a heavy overlay or sticker, or
        a counterfeit whose edit broke its matches, is then not silently passed over."""
        t = self.index.thresholds
        weak = t.weak_similarity is not None and 0 < t.weak_inliers < t.min_inliers
        if best is None:
            return ()
        # an implausible outline's count is capped under the rule (ReferenceIndex): the matches it really had
        found = len(best.support) if best.support is not None and not best.sane else best.inliers
        if found < (t.weak_inliers if weak else t.min_inliers // 2):
            return ()
        key = self.index.products[best.product_id].key
        if not best.sane:
            note = (f"closest indexed product {key}: {found} keypoint matches, but the outline they give is not a "
                    "plausible view of the whole package (a close-up or part of it?): not compared")
            return (note,)
        need = f"{t.min_inliers} needed" + (f", or {t.weak_inliers} and a close aligned look" if weak else "")
        note = f"closest indexed product {key}: {best.inliers} verified keypoint matches, too few to identify it ({need})"
        return (note,)

    def _keypoint_side(self, a: Any, shape: tuple[int, ...]) -> float:
        """The side (pixels, square root of the outline's area) of alignment ``a``'s product in the image its
        inliers' keypoints were detected on (:attr:`~brandguard.localization.Alignment.detail`; by default the
        working copy, of shape ``shape``, reduced to ``localization.query_detect_side``)."""
        detail = a.detail if a.detail is not None else min(1.0, self.config.localization.query_detect_side
                                                            / max(shape[:2]))
        return product_side(a.H, self.config.localization.canonical_size) * float(detail)

    def _inlier_density(self, a: Any, shape: tuple[int, ...]) -> float:
        """``a.inliers`` per pixel of :meth:`_keypoint_side` (0.0 for a degenerate outline)."""
        side = self._keypoint_side(a, shape)
        return float(a.inliers / side) if side > 0 else 0.0

    def _refine(self, prepared: Any, found: list[Any], best: Any) -> tuple[list[Any], Any]:
        """Alignments of a photo larger than the working size re-estimated at full resolution (see
        :meth:`ReferenceIndex.refine_alignment`); a candidate that did not pass on the working copy is
        accepted when its refined alignment does."""
        img, full = prepared[0], _full(prepared)
        if full is img:
            return found, best
        found = [self.index.refine_alignment(a, img, full) for a in found]
        if not found and best is not None and best.inliers >= 8:
            best = self.index.refine_alignment(best, img, full)
            if best.sane and best.inliers >= self.index.thresholds.min_inliers:
                found = [best]
        return found, best

    def _crop(self, prepared: Any, a: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """The aligned crop of alignment ``a`` from a decoded photo: ``(crop, valid, noise)``
        (:func:`~brandguard.localization.crop_canonical`). With ``localization.curved_surfaces``, where the
        crop departs from the product's first reference by a smooth warp (a label wrapped on a bottle:
        :func:`~brandguard.localization.fit_surface`), the crop is taken again through that warp and
        ``valid`` keeps only what the photo shows in enough detail
        (:func:`~brandguard.localization.surface_valid`); the surface is recorded as ``a.surface``."""
        loc = self.config.localization
        S = loc.canonical_size
        bank = self.index.products[a.product_id].bank
        flat = flat_print(bank.structure, bank.valid) if len(bank) else None  # grain is measured where no print is
        crop, valid, noise = crop_canonical(prepared[0], _full(prepared), a.H, S, with_noise=True,
                                            warp=self.index.geometry.warp, flat=flat)
        if not loc.curved_surfaces or len(bank) == 0:
            return crop, valid, noise
        ref = bank.structure[0].astype(np.float32)
        surface = search_cylinder(ref, structure_map(crop), valid & bank.valid[0])
        if surface is None:
            return crop, valid, noise
        turn = print_turn(ref, bank.valid[0])  # the reference's own tilt in the frame, never the photo's
        refined = None  # the search's rough cylinder is never used as it is: the flow must confirm it
        for _ in range(_SURFACE_ROUNDS):
            c2, v2 = crop_canonical(prepared[0], _full(prepared), a.H, S, surface=surface)
            fitted = fit_surface(ref, structure_map(c2), v2 & bank.valid[0], surface, turn=turn)
            if fitted is None:
                break
            moved = float(np.abs(fitted.grid - surface.grid).max())
            surface = refined = fitted
            if moved < 1.0:
                break
        if refined is None:
            return crop, valid, noise
        # the sensor noise is the source's, whatever the warp: measured once, above
        crop, valid = crop_canonical(prepared[0], _full(prepared), a.H, S, surface=surface)
        a.surface = surface  # recorded for the prediction's note
        return crop, valid & surface_valid(surface, S, loc.surface_min_detail), noise

    def _search_more_keypoints(self, ok: list[int], aligns: list[Any], prepared: list[Any]) -> list[Any]:
        """A second search for photos that came within a quarter of the rule (at least :data:`NEAR_RULE` of
        ``min_inliers`` verified matches to one product, with a plausible outline) and whose SIFT budget ran
        out (it kept the ``query_keypoints`` strongest of more): a seller's watermark tiled over the photo or
        a busy background can take the strongest keypoints and leave too few on the product. Keypoints are
        detected again with twice the budget, and only the product the first search came close to can be
        accepted. More keypoints also give more chance matches: an unrelated product that shares an indexed
        one's layout went from 19-25 to 39-45 verified matches in a review, hence the high floor (the
        products it found had 31-35). Every other photo keeps its single detection.

        On the scene set (``brandguard demo --scenes``, seed 0) it found 3 of the 4 watermarked counterfeits
        called ``unknown`` (31-35 -> 40-47 verified matches of the 36 needed) and changed no other photo."""
        loc, t = self.config.localization, self.index.thresholds
        floor = int(np.ceil(NEAR_RULE * t.min_inliers))
        again = [k for k, (i, (acc, best)) in enumerate(zip(ok, aligns))
                 if not acc and best is not None and best.sane and best.inliers >= floor
                 and len(prepared[i][1]) >= loc.query_keypoints]
        if not again:
            return aligns

        kps = self.index.geometry.detect_batch([prepared[ok[k]][0] for k in again], loc.query_detect_side,
                                               2 * loc.query_keypoints, max(1, self.config.runtime.workers))
        return self._search_again(ok, aligns, prepared, again, kps, [prepared[ok[k]][0].shape for k in again],
                                  near_only=True)

    def _search_full_resolution(self, ok: list[int], aligns: list[Any], prepared: list[Any]) -> list[Any]:
        """A second search for photos where the working copy found no product but the full resolution is
        at least 1.5 times larger (a product small in a large photo has too few keypoints on the working
        copy): keypoints detected again at twice ``keypoint_side`` (twice as many), in working-copy pixels."""
        loc = self.config.localization
        again = [k for k, (i, (acc, _)) in enumerate(zip(ok, aligns))
                 if not acc and _full(prepared[i]) is not prepared[i][0]
                 and max(_full(prepared[i]).shape[:2]) >= 1.5 * max(prepared[i][0].shape[:2])]
        if not again:
            return aligns
        kps, shapes, details = [], [], []
        for k in again:
            img, full = prepared[ok[k]][0], _full(prepared[ok[k]])
            kp = self.index.geometry.detect(full, 2 * loc.keypoint_side, 2 * loc.query_keypoints)
            sx, sy = full.shape[1] / img.shape[1], full.shape[0] / img.shape[0]
            kp.xy = ((kp.xy + 0.5) / np.array([sx, sy], np.float32) - 0.5).astype(np.float32)
            kps.append(kp)
            shapes.append(img.shape)
            details.append(max(sx, sy) * min(1.0, 2 * loc.keypoint_side / max(full.shape[:2])))
        return self._search_again(ok, aligns, prepared, again, kps, shapes, details=details)

    def _search_again(self, ok: list[int], aligns: list[Any], prepared: list[Any], again: list[int],
                      kps: list[Keypoints], shapes: list[tuple[int, ...]], near_only: bool = False,
                      details: Sequence[float] | None = None) -> list[Any]:
        """``aligns`` with the photos ``again`` (positions in ``ok``) searched with new keypoints ``kps``
        (working-copy pixels; ``details``: per photo, pixels of the image they were detected on per working
        pixel, :attr:`~brandguard.localization.Alignment.detail`, when not the working copy's own): the new
        search is kept when it found a product or came closer to one. With ``near_only``, only when it verified
        the product the first search came closest to; otherwise that near miss stands (its weak-match check,
        its note)."""
        out = list(aligns)
        loc = self.config.localization
        found = self.index.localize_instances(kps, shapes, max(1, loc.max_instances))
        for j, (k, (acc, best)) in enumerate(zip(again, found)):
            if details is not None:
                acc = [dataclasses.replace(a, detail=details[j]) for a in acc]
                best = None if best is None else dataclasses.replace(best, detail=details[j])
            acc, best = self._refine(prepared[ok[k]], acc, best)
            old_best = aligns[k][1]
            if near_only:
                acc = [a for a in acc if a.product_id == old_best.product_id]
                if acc:
                    out[k] = (acc, acc[0])
            elif acc or (best is not None and (old_best is None or best.inliers > old_best.inliers)):
                out[k] = (acc, best)
        return out

    def _product_side(self, prepared: Any, a: Any) -> float:
        """The product's size in full-resolution pixels (square root of its outline's area)."""
        img, full = prepared[0], _full(prepared)
        return product_side(a.H, self.config.localization.canonical_size,
                            (full.shape[1] / img.shape[1], full.shape[0] / img.shape[0]))

    def _worst_instance(self, instances: list[tuple[Prediction, float]]) -> Prediction:
        """One prediction of a photo's compared instances ``(prediction, side in full pixels)``: the worst
        (highest raw score) of those large enough to judge (of all when none is), its verdict lowered when
        its product is too small to judge, the heatmap the maximum over every instance."""
        loc = self.config.localization
        # an instance whose text names another product is not one of ours: the others are judged first
        known = [(p, side) for p, side in instances if p.verdict != "unknown"] or instances
        judged = [(p, side) for p, side in known if side >= loc.min_product_side] or known
        p, side = max(judged, key=lambda ps: (ps[0].raw_score if ps[0].channels else -np.inf))
        notes = list(p.notes)
        verdict = p.verdict
        if side < loc.min_product_side:
            notes.append(f"product only {side:.0f} px: too small to judge")
            if verdict == "counterfeit":
                verdict = "suspicious"
        heat = p.heatmap
        maps = [q.heatmap for q, _ in instances if q.heatmap is not None]
        if len(maps) > 1:
            heat = np.maximum.reduce(maps)
        if len(instances) > 1:
            notes.append(f"{len(instances)} instances compared; the worst is reported")
        return dataclasses.replace(p, verdict=verdict, heatmap=heat, notes=tuple(notes), instances=len(instances),
                                   product_side=side)

    def _weak_matches(self, candidates: list[tuple[int, Any]],
                      prepared: list[Any]) -> dict[int, tuple[Any, np.ndarray, np.ndarray, np.ndarray, float]]:
        """The weak keypoint matches (see :class:`~brandguard.calibration.Thresholds`) whose aligned photo looks
        like the product: ``{photo position: (alignment, aligned crop, its valid mask, its global vector,
        its sensor noise)}``
        (the crop and vector are those the comparison uses)."""
        if not candidates:
            return {}
        cut = [self._crop(prepared[i], a) for i, a in candidates]
        g = self.index.embedder.embed_global([c[0] for c in cut])
        out = {}
        for (i, a), (crop, valid, noise), v in zip(candidates, cut, g):
            m = self.index.products[a.product_id]
            sim = float(np.max(m.global_vecs @ v)) if len(m.global_vecs) else -1.0
            if self.index.thresholds.accepts(a.inliers, sim, a.sane):
                out[i] = (a, crop, valid, v, noise)
        return out

    def calibrate(self, authentic: Sequence[ImageSource], counterfeit: Sequence[ImageSource] = (),
                  unrelated: Sequence[ImageSource] = (), *, takedown_fpr: float | None = None,
                  review_fpr: float | None = None, unknown_fpr: float = 0.01, min_brand_photos: int = 30,
                  min_inliers_floor: int = 12, weak_quantile: float = 0.05,
                  weak_inliers_floor: int = 6) -> dict[str, Any]:
        """Calibrate scores and thresholds on authentic photos that are *not* references of the index.

        Works from authentic photos alone (cold start). Afterwards a score means "the share of authentic
        photos (of this brand, where it had ``min_brand_photos`` or more; of all brands otherwise) that
        score lower", so ``counterfeit`` at ``1 - takedown_fpr`` flags about ``takedown_fpr`` of authentic
        photos and ``suspicious`` starts at ``1 - review_fpr``. The unknown-product rule (verified keypoint
        matches) is set so that about ``unknown_fpr`` of authentic photos fall under it, with a wide margin;
        a weaker match (half the rule's count, at least ``weak_inliers_floor``: random matches give RANSAC 5-7
        inliers, so the look and a plausible outline must vouch for it) still counts when the aligned photo is
        as similar to the product's references as the ``1 - weak_quantile`` most similar authentic photos
        (see :class:`~brandguard.calibration.Thresholds`), unless its print differs in large areas.
        Counterfeit and unrelated photos, when given, are only used to report the expected detection and
        unknown rates.

        Returns:
            a summary: photos used, thresholds, per-brand calibration and, when given, expected rates.

        Raises:
            DataError: a calibration photo is a reference of this index, or fewer than 10 authentic photos
                match a known product.
        """
        from brandguard.calibration import ChannelFusion, ScoreCalibrator
        from brandguard.errors import DataError

        doubles = self._references_among(authentic)
        if doubles:
            raise DataError(f"{len(doubles)} calibration photo(s) are references of this index, by path or by "
                            f"content (e.g. {doubles[0]}); "
                            "calibration photos must never double as the references they are compared against")
        sc = self.config.scoring
        takedown_fpr = sc.takedown_fpr if takedown_fpr is None else float(takedown_fpr)
        review_fpr = sc.review_fpr if review_fpr is None else float(review_fpr)
        if not 0.0 < takedown_fpr <= review_fpr < 1.0:
            from brandguard.errors import ConfigError

            raise ConfigError(f"need 0 < takedown_fpr <= review_fpr < 1, got {takedown_fpr} and {review_fpr}")
        index = self.index
        reading, self.read_every_line = self.read_every_line, True  # every authentic reading sets the misread rate
        stickers, self.read_every_sticker = self.read_every_sticker, True
        try:
            preds = self.predict_batch(list(authentic))
        finally:
            self.read_every_line, self.read_every_sticker = reading, stickers
        readable = [p for p in preds if p.verdict != "error"]
        before = (index.thresholds.min_inliers, index.thresholds.min_inlier_density, index.thresholds.weak_inliers,
                  index.thresholds.weak_similarity)  # restored when calibration fails below
        inl = np.array([p.inliers for p in readable], np.float64)
        if len(inl):
            # edited logos lose keypoint matches, so keep a wide margin under the authentic quantile; never
            # raise the rule above the configured one from authentic photos alone
            q = float(np.quantile(inl, unknown_fpr))
            index.thresholds.min_inliers = int(max(min_inliers_floor,
                                                   min(self.config.localization.min_inliers, np.floor(0.5 * q))))
        density = np.array([p.inlier_density for p in readable if p.inlier_density > 0], np.float64)
        # a wrong outline through a few shared marks (another product of the packaging line) has as many inliers
        # as a small or blurred authentic product, but spread over a large outline: the same margin, on density
        index.thresholds.min_inlier_density = float(0.5 * np.quantile(density, unknown_fpr)) if len(density) >= 10 \
            else 0.0
        # a product too small to judge is no measure of authentic variation (upsampled blur)
        used = [p for p in readable if len(p.channels) == len(CHANNELS) and p.inliers >= index.thresholds.min_inliers
                and p.product_side >= self.config.localization.min_product_side]
        if used:
            # a weak match counts when the aligned photo is as similar to the product as 95% of authentic ones
            index.thresholds.allow_weak(float(np.quantile([p.similarity for p in used], weak_quantile)),
                                        weak_inliers_floor)
        if len(used) < 10:
            (index.thresholds.min_inliers, index.thresholds.min_inlier_density, index.thresholds.weak_inliers,
             index.thresholds.weak_similarity) = before  # a failed calibration leaves the rules in force
            raise DataError(f"calibration needs at least 10 authentic photos that match a known product; got "
                            f"{len(used)} of {len(preds)}")
        channels = np.array([p.channels for p in used])
        # the text channel's misread rate pools the calibration photos' readings and the references'
        from brandguard.text import line_reads, reference_reads

        reads = [line_reads(p.text) for p in used]
        ref_reads = [r for m in index.products if m.text_lines for r in reference_reads(
            m.ref_text, m.text_lines, m.loo_scores[:, CHANNELS.index("text")] if len(m.loo_scores) == len(m.ref_text)
            else None)]
        index.fusion = ChannelFusion.fit(channels, reads, ref_reads)
        raws = index.fusion.fuse_left_out(channels, reads)  # as fresh authentic photos would score
        index.calibrator = ScoreCalibrator.fit(raws, source="calibration")
        brands = np.array([p.brand for p in used])
        index.brand_calibrators = {b: ScoreCalibrator.fit(raws[brands == b], source="calibration")
                                   for b in sorted(set(brands)) if (brands == b).sum() >= min_brand_photos}
        index.thresholds.review = 1.0 - review_fpr
        index.thresholds.takedown = 1.0 - takedown_fpr
        index.thresholds.notes = {"calibrated_on": len(used), "takedown_fpr": takedown_fpr, "review_fpr": review_fpr,
                                  "unknown_fpr": unknown_fpr, "per_brand": sorted(index.brand_calibrators)}
        summary: dict[str, Any] = {"photos": len(preds), "used": len(used), "unreadable": len(preds) - len(readable),
                                   "thresholds": index.thresholds.to_dict(),
                                   "brands_with_own_calibration": sorted(index.brand_calibrators)}
        summary["authentic_flagged"] = float(np.mean([self._verdict_now(p) in ("suspicious", "counterfeit") for p in used]))
        if counterfeit:
            fp = [p for p in self.predict_batch(list(counterfeit)) if p.verdict != "error"]
            summary["expected_detection"] = float(np.mean([p.is_flagged for p in fp])) if fp else None
            summary["expected_takedowns"] = float(np.mean([p.verdict == "counterfeit" for p in fp])) if fp else None
        if unrelated:
            up = [p for p in self.predict_batch(list(unrelated)) if p.verdict != "error"]
            summary["expected_unknown_rate_unrelated"] = float(np.mean([p.verdict == "unknown" for p in up])) if up else None
        return summary

    def _references_among(self, photos: Sequence[ImageSource]) -> list[str]:
        """The photos that are references of the index: the same file, the same bytes, or the same decoded
        pixels (a copy or a re-saved lossless file elsewhere, under any name)."""
        from brandguard.index import pixel_digest
        from brandguard.storage import file_digest, sha256_bytes

        index = self.index
        ref_paths = {os.path.realpath(r.path) for m in index.products for r in m.refs}
        digests = index.reference_digests()
        out = []
        for p in photos:
            if isinstance(p, (str, Path)):
                if os.path.realpath(p) in ref_paths:
                    out.append(str(p))
                    continue
                try:
                    fd = file_digest(p)
                except OSError:
                    continue  # unreadable: scoring records it as an error
            elif isinstance(p, (bytes, bytearray)):
                fd = sha256_bytes(bytes(p))
            else:
                fd = ""
            if fd in digests:
                out.append(_source_name(p))
                continue
            if not any(d.startswith("pixels:") for d in digests):
                continue  # an index built before pixel digests were recorded
            try:
                px = pixel_digest(load_image(p, max_side=self.config.localization.max_side))
            except ImageLoadError:
                continue
            if px in digests:
                out.append(_source_name(p))
        return out

    def _verdict_now(self, p: Prediction) -> str:
        """The verdict ``p`` would get under the current calibration (without scoring the photo again)."""
        t = self.index.thresholds
        if len(p.channels) != len(CHANNELS) or not t.accepts(p.inliers, p.similarity):
            return "unknown"
        from brandguard.comparison import EDITION_NOTE, OTHER_BRAND_NOTE, OTHER_NAME_NOTE, OTHER_PRODUCT_NOTE

        if OTHER_PRODUCT_NOTE in p.notes or any(n.endswith(OTHER_BRAND_NOTE) for n in p.notes):
            return "unknown"  # its text names another product or brand (see _compare)
        sparse = p.inlier_density > 0 and t.sparse(p.inliers, p.inliers / p.inlier_density, p.similarity)
        if (sparse or p.inliers < t.min_inliers) and (EDITION_NOTE in p.notes or OTHER_NAME_NOTE in p.notes):
            return "unknown"  # sparse or weak, and differs widely (Comparison.differs_widely): another product (_compare)
        verdict = self._judge(p.brand, p.channels, p.text)[2]
        if verdict == "counterfeit" and (p.product_side < self.config.localization.min_product_side or sparse
                                         or EDITION_NOTE in p.notes or OTHER_NAME_NOTE in p.notes):
            return "suspicious"  # too small to judge (see _worst_instance), sparse, another edition or name (_compare)
        return verdict

    def _judge(self, brand: str, channels: Sequence[float],
               text: Sequence[dict[str, Any]] = ()) -> tuple[float, float, str]:
        """``(raw, calibrated score, verdict)`` of a compared photo's channel scores (``text``: its OCR
        readings, ``Prediction.text`` or comparison details, for the misread model)."""
        from brandguard.text import line_reads

        index = self.index
        raw = float(index.fusion.fuse(np.array(channels), line_reads(text) if text else None))
        cal = index.calibrator_for(brand)
        score = float(cal.score(raw)) if cal is not None else 0.0
        return raw, score, verdict_for(score, index.thresholds)

    def _match(self, pid: int, row: int, sim: float) -> Match:
        m = self.index.products[pid]
        return Match(m.brand, m.product, m.refs[m.bank_refs[row]].path, float(np.clip(sim, 0.0, 1.0)))

    def _text_reader(self) -> Any:
        """The OCR reader this thread compares with: its own while instances are compared side by side (see
        :meth:`_score_prepared`), else the index's (:attr:`ReferenceIndex.text_reader`; None: no text check)."""
        own = getattr(_COMPARE_THREAD, "reader", None)
        return own if own is not None else self.index.text_reader

    def _compare(self, name: str, image: np.ndarray, a: Any, g: np.ndarray, crop: np.ndarray,
                 valid: np.ndarray, feats: np.ndarray | None = None, occlusion: np.ndarray | None = None,
                 noise: float | None = None, others: Sequence[np.ndarray] = ()) -> Prediction:
        """One instance compared with its product's references: the prediction of photo ``name``.

        ``image`` is the working copy ``a.H`` maps to; ``crop``, ``valid``, ``noise`` its aligned crop
        (:meth:`_crop`); ``g`` the crop's global vector; ``feats``, ``occlusion`` its learned maps (or None);
        ``others`` the outlines (working-copy pixels) of the photo's other instances.
        """
        cfg, index = self.config, self.index
        m = index.products[a.product_id]
        if m.stats is None or len(m.bank) == 0:
            return Prediction(name, "unknown", 0.0, brand=m.brand, product=m.product, inliers=a.inliers,
                              inlier_density=self._inlier_density(a, image.shape),
                              notes=(m.evidence_note,) if m.evidence_note else ())
        ocr = self._text_reader()
        reader = ocr if m.text_lines else None

        def run(crop: np.ndarray, ignore: np.ndarray | None = None,
                read_on: Sequence[np.ndarray] = ()) -> tuple[Any, list[dict[str, Any]], Any]:
            view = make_view(crop, valid, cfg.compare.cell, feats, occlusion, noise, ignore)
            res = compare(view, m.bank, m.stats, cfg.compare)
            best: tuple[Any, list[dict[str, Any]], Any] = (res, [], view)
            if reader is None:
                return best
            top = -np.inf
            for image_read in (crop, *read_on):  # each reading as its own comparison; the higher raw score counts
                text_details = self._read_text(image_read, m.text_lines, reader, res.structure, kept_cells(view))
                if not text_details:
                    continue
                # the same comparison (its distance maps kept), with the text channel
                r = compare(view, m.bank, m.stats, cfg.compare, text_details=text_details, distances=res.distances,
                            text_units=self._text_units)
                raw_r = self._judge(m.brand, r.channels, r.text_details)[0]
                if raw_r > top:
                    top, best = raw_r, (r, text_details, view)
            return best

        res, text_details, view = run(crop)
        raw, score, verdict = self._judge(m.brand, res.channels, res.text_details)
        overlay_note: tuple[str, ...] = ()
        overlay_mask: np.ndarray | None = None  # canonical pixels under a seller's overlay, once one is found
        if cfg.compare.seller_overlays and verdict != "authentic" and a.surface is None:
            # flagged: is what changed a seller's overlay that repeats beyond the package? (overlays module)
            ov = self._seller_overlay(image, a, view, res, others)
            if ov is not None:
                cleaned = cv2.inpaint(np.ascontiguousarray(crop), ov.mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
                overlay_mask = ov.mask
                # read with the overlay filled in and as it is (filled-in strokes can cut letters, the overlay's can
                # add some); a misread counts only where the structure left after the overlay agrees
                res, text_details, view = run(cleaned, ov.mask, read_on=(crop,))
                raw, score, verdict = self._judge(m.brand, res.channels, res.text_details)
                overlay_note = (ov.note,)
        if cfg.compare.occluders and a.surface is None:
            # something on top of the package that crosses its outline (a finger, a sticker): left out
            occluded = self._occluded(image, a, m, view, res, text_details)
            if occluded is not None and occluded[0][0] < raw:
                (raw, score, verdict), res, view, note = occluded
                overlay_note += (note,)
        if cfg.compare.price_stickers and (verdict != "authentic" or self.read_every_sticker) and a.surface is None \
                and hasattr(ocr, "detect"):  # an OCR that finds lines (None: no text check)
            # a shop's or seller's price sticker on a flagged package: read, and left out (it only ever lowers a
            # score, so a photo not flagged stays so without it)
            stuck = self._price_sticker(image, a, m, view, res, text_details, ocr)
            if stuck is not None and stuck[0][0] < raw:
                (raw, score, verdict), res, view, note = stuck
                overlay_note += (note,)
        channels = res.channels
        if res.differs_widely and verdict == "counterfeit":  # another edition or product? a person decides
            verdict = "suspicious"
        sims = m.global_vecs @ g
        if a.inliers < index.thresholds.min_inliers and res.differs_widely:
            from brandguard.comparison import WEAK_OTHER_NOTE

            # a weak match (identified by its look, with few keypoint matches) whose print differs in large areas:
            # another product of a similar look, not an edit of this one (see Thresholds.accepts)
            verdict, score = "unknown", 0.0
            overlay_note += (WEAK_OTHER_NOTE,)
        elif index.thresholds.sparse(a.inliers, self._keypoint_side(a, image.shape),
                                     float(np.max(sims)) if len(sims) else None):
            from brandguard.comparison import SPARSE_NOTE, SPARSE_OTHER_NOTE

            # few matches spread over a large outline: is it this product at all? (see Thresholds.min_inlier_density)
            if res.differs_widely:
                verdict, score = "unknown", 0.0
                overlay_note += (SPARSE_OTHER_NOTE,)
            elif verdict == "counterfeit":
                verdict = "suspicious"
                overlay_note += (SPARSE_NOTE,)
        if res.other_product:  # its text names another product, none of this one's: not a product the index holds
            verdict, score = "unknown", 0.0
        elif verdict not in ("authentic", "unknown") and reader is not None and hasattr(reader, "detect"):
            # flagged: does the package read another brand's name where this one's should be? (a product of
            # another brand on the same packaging template, which the index does not hold)
            other = self._other_brand(crop, m, reader, text_details, overlay_mask, res.structure, kept_cells(view))
            if other is not None:
                from brandguard.comparison import OTHER_BRAND_NOTE

                verdict, score = "unknown", 0.0
                overlay_note += (f"reads {other!r}: {OTHER_BRAND_NOTE}",)
        order = np.argsort(-sims, kind="stable")
        matches = tuple(self._match(a.product_id, int(r), float(sims[r])) for r in order[:3])
        zmap = res.heatmap
        heat = upsample_to_photo(zmap, a.H, cfg.localization.canonical_size, image.shape[:2], a.surface)
        return Prediction(name, verdict, score, raw, m.brand, m.product,
                          similarity=matches[0].similarity, reference=matches[0].reference, matches=matches,
                          inliers=a.inliers, inlier_density=self._inlier_density(a, image.shape), channels=channels,
                          heatmap=heat,
                          quad=canonical_to_image_corners(a.H, cfg.localization.canonical_size), instances=1,
                          notes=((m.evidence_note,) if m.evidence_note else ()) + res.notes + overlay_note
                          + _surface_note(a),
                          text=tuple({"expected": d["text"], "read": d["read"], "confidence": float(d["confidence"]),
                                      "distance": float("nan") if d.get("skipped") else float(d["distance"]),
                                      "counted": float(g["distance"]), "skipped": bool(d.get("skipped", False))}
                                     for d, g in zip(text_details, res.text_details)))

    def _other_brand(self, crop: np.ndarray, m: Any, reader: Any, text_details: Sequence[dict[str, Any]] = (),
                     overlay: np.ndarray | None = None, structure: np.ndarray | None = None,
                     kept: np.ndarray | None = None) -> str | None:
        """What the aligned ``crop`` reads in place of product ``m``'s brand name when that is another brand's
        name (:func:`brandguard.text.other_brand_reading`; ``text_details``: its reference lines as read at
        their places), else None. Only the lines tall enough to be a brand name are read; a line on a label
        of its own (:func:`brandguard.stickers.on_a_label`), 15% under a seller's ``overlay``
        (``(S, S)`` bool, :class:`brandguard.overlays.Overlay`'s mask) or where ``structure`` (the comparison's
        ``(G, G)`` departure map; ``kept``: its cells that count) sees the references' strokes (below
        :data:`brandguard.comparison.TEXT_SUPPORT`, the evidence a misread needs) names nothing; and a
        candidate is read again mirrored (a counterfeit's mirrored brand name reads as another word)."""
        from brandguard.comparison import TEXT_SUPPORT, line_support
        from brandguard.stickers import on_a_label
        from brandguard.text import (
            FOUND_HEIGHT,
            OTHER_BRAND_CONFIDENCE,
            brand_read_in_place,
            names_brand,
            other_brand_reading,
            read_tall_lines,
            reads_name,
        )

        named = [ln for ln in m.text_lines if names_brand(str(ln["text"]), m.brand)]
        if not named or brand_read_in_place(text_details, m.brand):
            return None  # nothing to go by, or the brand reads at its place: no detection needed
        low = FOUND_HEIGHT * min(float(ln["box"][3] - ln["box"][1]) for ln in named)
        known = [str(ln.get("text", "")) for lines in m.ref_text for ln in lines] + [m.product.replace("-", " ")]
        def under_overlay(box: Sequence[float]) -> bool:
            if overlay is None:
                return False
            x0, y0, x1, y1 = (max(0, round(float(v))) for v in box)
            part = overlay[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
            return bool(part.size and part.mean() >= 0.15)

        cell = self.config.compare.cell

        def unchanged(box: Sequence[float]) -> bool:
            return structure is not None and not line_support(structure, box, cell, kept) >= TEXT_SUPPORT

        photo = [{**p, "unchanged": unchanged(p["box"])} for p in read_tall_lines(crop, reader, low)]
        for p in photo:  # the label search grows colours over the whole crop: only for lines that could count
            p["on_label"] = not p["unchanged"] and (under_overlay(p["box"]) or on_a_label(crop, p["box"]))
        other = other_brand_reading(photo, m.text_lines, known, m.brand, text_details)
        if other is None:
            return None
        # a mirrored brand name reads as another word: read every line again mirrored (confidently the brand:
        # this brand, mirrored)
        flipped = reader.recognise_each([np.ascontiguousarray(p["crop"][:, ::-1]) for p in photo])
        if any(conf >= OTHER_BRAND_CONFIDENCE and reads_name(str(ln["text"]), t)
               for ln in named for t, conf in flipped):
            return None
        return other

    def _occluded(self, image: np.ndarray, a: Any, m: Any, view: Any, res: Any,
                  text_details: list[dict[str, Any]]) -> Any:
        """The comparison again with an occluder that crosses the package's outline left out
        (:func:`brandguard.occluders.find_occluder`): ``((raw, score, verdict), comparison, view, note)``, or
        None when there is none. The distance maps and the OCR reading are the first comparison's."""
        from brandguard.occluders import find_occluder

        cfg = self.config
        heat, top = self._heat_and_top(res)
        occ = find_occluder(image, a.H, cfg.localization.canonical_size, heat, res.mask, cell=cfg.compare.cell,
                            top=top)
        return None if occ is None else self._compare_without(m, view, res, occ.cells, text_details) + (occ.note,)

    def _price_sticker(self, image: np.ndarray, a: Any, m: Any, view: Any, res: Any,
                       text_details: list[dict[str, Any]], reader: Any) -> Any:
        """The comparison again with a price sticker left out (:func:`brandguard.stickers.find_price_sticker`):
        ``((raw, score, verdict), comparison, view, note)``, or None when none was read. The distance maps and
        the OCR reading of the product's lines are the first comparison's."""
        from brandguard.stickers import find_price_sticker

        cfg = self.config
        heat, top = self._heat_and_top(res)
        found = find_price_sticker(image, a.H, cfg.localization.canonical_size, heat, res.mask, reader,
                                   cell=cfg.compare.cell, top=top)
        return None if found is None else self._compare_without(m, view, res, found.cells, text_details) + (
            found.note,)

    def _heat_and_top(self, res: Any) -> tuple[np.ndarray, np.ndarray]:
        """A comparison's largest departure per cell over structure and colour, and the cells its channel
        scores are the mean of (:func:`brandguard.occluders.top_cells`)."""
        from brandguard.occluders import top_cells

        top = top_cells((res.structure, res.colour, res.learned), res.mask, self.config.compare.top_fraction)
        return np.maximum(res.structure, res.colour), top

    def _compare_without(self, m: Any, view: Any, res: Any, cells: np.ndarray,
                         text_details: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
        """Comparison ``res`` again with ``cells`` (``(G, G)`` bool) left out in every channel, on top of what
        ``view`` already leaves out (the learned occlusion head's cells, an occluder's): ``((raw, score,
        verdict), comparison, view)``. The distance maps and the OCR reading are the first comparison's."""
        from dataclasses import replace

        from brandguard.mismatch import occlusion_cells

        out = cells.astype(np.float32)
        before = occlusion_cells(view.occlusion, res.mask.shape[0])
        if before is not None:
            out = np.maximum(out, before)
        view = replace(view, occlusion=out.astype(np.float16))
        r = compare(view, m.bank, m.stats, self.config.compare, text_details=text_details or None,
                    distances=res.distances, text_units=self._text_units)
        return self._judge(m.brand, r.channels, r.text_details), r, view

    def _text_units(self, distance: float) -> float:
        """A misread line's text distance in heatmap units: the raw score the text channel alone would give."""
        return float(self.index.fusion.fuse(np.array([0.0, 0.0, distance, np.nan])))

    def _seller_overlay(self, image: np.ndarray, a: Any, view: Any, res: Any,
                        others: Sequence[np.ndarray]) -> Any:
        """The seller's overlay over a flagged instance (:func:`brandguard.overlays.find_overlay`), or None."""
        from brandguard.mismatch import closest_references
        from brandguard.overlays import find_overlay

        bank = self.index.products[a.product_id].bank
        best = closest_references(view, bank, 1)
        if not best:
            return None
        residual = view.structure - bank.structure[best[0]].astype(np.float32)
        return find_overlay(image, a.H, self.config.localization.canonical_size, residual, res.structure,
                            view.valid & bank.valid[best[0]], cell=self.config.compare.cell, others=others)

    def _read_text(self, crop: np.ndarray, lines: Sequence[dict[str, Any]], reader: Any,
                   structure: np.ndarray, kept: np.ndarray | None = None) -> list[dict[str, Any]]:
        """The OCR details of a product's reference lines in an aligned crop (:func:`brandguard.text.text_mismatch`).

        A misread counts only where the structure channel sees changed strokes under the line
        (:func:`brandguard.comparison.line_support` at least ``SWAP_SUPPORT``, the lower of the two gates).
        When it sees too few under every line, no reading could count and the lines are left unread
        (:func:`brandguard.text.unread_details`): the same raw score and verdict for a fraction of the OCR
        work. :attr:`read_every_line` reads them regardless.
        """
        from brandguard.comparison import SWAP_SUPPORT, TEXT_SUPPORT, line_support
        from brandguard.text import line_boxes, text_mismatch, unread_details

        if not self.read_every_line:
            need, cell, S = min(SWAP_SUPPORT, TEXT_SUPPORT), self.config.compare.cell, crop.shape[0]
            if all(line_support(structure, box, cell, kept) < need for _, box in line_boxes(lines, S)):
                return unread_details(lines, S)
        return text_mismatch(crop, lines, reader)[1]


def build_index(references: str | Path, config: Config | str | Path | None = None, *, backbone: str | None = None,
                checkpoint: str | None = None, progress: bool = False) -> ReferenceIndex:
    """Build a :class:`ReferenceIndex` from a reference folder or CSV manifest.

    Example:
        >>> import brandguard as bg
        >>> index = bg.build_index("refs/")   # doctest: +SKIP
        >>> index.save("idx/")                # doctest: +SKIP
    """
    cfg = config if isinstance(config, Config) else (Config.from_yaml(config) if config else Config())
    over = {k: v for k, v in {"backbone.name": backbone, "backbone.checkpoint": checkpoint}.items() if v is not None}
    if over:
        cfg = cfg.with_overrides(over)
    return ReferenceIndex.build(references, cfg, progress=progress)


def load(directory: str | Path, **kwargs: Any) -> Detector:
    """Load an index directory as a :class:`Detector` (see :meth:`Detector.load`)."""
    return Detector.load(directory, **kwargs)


def predict(image: ImageSource, index: str | Path | Detector) -> Prediction:
    """One-shot convenience: load ``index`` (a directory or a Detector) and score ``image``."""
    det = index if isinstance(index, Detector) else Detector.load(index)
    return det.predict(image)


