"""The reference index: authentic references of every product, ready for retrieval and comparison.

For each product (``brand/product``) it keeps one :class:`ProductModel` per **view**: a connected group of its
references that align with each other (another face of a carton, a catalogue image that aligns with none of
the hand-held photos: :mod:`brandguard.reference_views`). References are ordered by content digest, so nothing
depends on file names. Each view keeps:

* a **canonical frame**: a square frame cut around the product in one reference (the *anchor*), into
  which every other reference of the view is aligned by a RANSAC homography;
* the RootSIFT **keypoints** of its references in that frame (bounded per product), searched with FAISS
  to find which product a photo shows and where;
* a **patch bank**: patch features and colours of each aligned reference (bounded per product), with
  per-cell statistics of how much authentic *listing* photos depart from them, learnt from simulated listing
  photos of the references (:mod:`brandguard.listing_conditions`) compared exactly like listing photos
  (:func:`brandguard.comparison.compare`), pooled across products so that a product with one or two
  references leans on what the others teach; these also give the cold-start calibration, in force until
  ``calibrate``;
* a **global vector** per reference (FAISS, inner product), for similarity and for photos where no
  product can be localised.

``save(dir)`` writes one self-describing directory (backbone, weights digest, preprocessing,
dimensions, thresholds, library version, resolved config, checksums of every file), atomically. Saving again
to the same directory is incremental: the products added or changed since go to one new segment file, the
others' segments are not touched, and ``compact()`` (or a save, once half the bytes are dead) writes it whole.

Example:
    >>> import brandguard as bg
    >>> index = bg.build_index("refs/")          # doctest: +SKIP
    >>> index.save("idx/")                        # doctest: +SKIP
    >>> bg.ReferenceIndex.load("idx/").info()["products"]  # doctest: +SKIP
    24
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Self

import numpy as np

from brandguard import __version__
from brandguard.accel import Geometry, geometry_name, libraries_on_one_core, resolve_geometry
from brandguard.arraystore import ArrayStore, LazyField, TensorView, write_safetensors
from brandguard.backbones import spec_to_dict
from brandguard.calibration import ChannelFusion, ScoreCalibrator, Thresholds
from brandguard.comparison import compare, reference_text_details
from brandguard.config import Config
from brandguard.embedding import Embedder, resolve_device
from brandguard.errors import (
    BrandguardError,
    DataError,
    ImageLoadError,
    IndexCompatibilityError,
    IndexCorruptError,
)
from brandguard.images import load_image
from brandguard.localization import (
    Alignment,
    Keypoints,
    canonical_to_image_corners,
    crop_canonical,
    detect_keypoints,
    estimate_homography,
    flat_print,
    homography_is_sane,
    match_pair,
    points_in_quad,
    resize_transform,
    source_noise,
    support_mask,
    warp_to_canonical,
)
from brandguard.mismatch import (
    _NO_ENTRY,
    CHANNELS,
    AlignedView,
    AuthenticEvidence,
    AuthenticPrior,
    NormalStats,
    ProductBank,
    authentic_stats,
    distance_maps,
    fit_normal_stats,
    make_view,
    scored_region,
    white_balance_cells,
)
from brandguard.references import ReferenceItem, read_references
from brandguard.shortlist import KeypointSearch
from brandguard.storage import (
    MANIFEST,
    file_digest,
    sha256_bytes,
    update_directory,
    verify_directory,
    write_directory,
)
from brandguard.text import reference_lines

__all__ = ["INDEX_FORMAT", "THIN_EVIDENCE", "ProductModel", "RefRecord", "ReferenceIndex", "pixel_digest"]

#: 4: a product's references are grouped into views (``ProductModel.view``); a format-3 index loads as one
#: view per product (what it was: references that did not align with its anchor are not compared against)
#: 5: a product's arrays lie in segments (``arrays.safetensors``, ``arrays.<generation>.safetensors``) named in
#: ``products.json``, and an incremental save's small files in ``gen-<generation>/``; a format 3 or 4 index is one
#: segment with its small files at the top (see ``ReferenceIndex.save``)
#: 6: the saved configuration may hold ``compare.white_balance`` (which a version reading format 5 refuses as an
#: unknown key); a format 3-5 index loads with ``frame``, the white balance its statistics were fitted with
INDEX_FORMAT = 6
READABLE_FORMATS = (3, 4, 5, 6)
#: a view with fewer keypoints repeated across its references than this is topped up with the other keypoints
#: inside the region the repeated ones cover (see ``ReferenceIndex._fit_view``)
VIEW_KEYPOINTS = 1000
#: a product with fewer references than this to compare with is built with a warning and its verdicts carry
#: a "thin evidence" note (the spread of authentic photos is barely measured)
THIN_EVIDENCE = 3


@dataclass
class RefRecord:
    """One reference photo of a product; ``H`` maps canonical-frame pixels to its photo pixels.

    ``path`` is absolute in memory; a saved index stores it relative to the folder that holds every reference
    (see :meth:`ReferenceIndex.save`). ``digest`` is the sha256 of the file's bytes and ``pixels`` that of its
    decoded pixels (``""`` in indexes built before they were recorded): how duplicates and calibration photos
    that are references are recognised, wherever the file lies.
    """

    path: str
    aligned: bool
    inliers: int
    H: list[list[float]] | None = None
    digest: str = ""
    pixels: str = ""


@dataclass
class ProductModel:
    """Everything the index knows of one product (see the module docstring)."""

    brand: str
    product: str
    refs: list[RefRecord]
    anchor: int
    bank_refs: list[int]
    kp_desc: np.ndarray
    kp_xy: np.ndarray
    bank: ProductBank
    stats: NormalStats
    global_vecs: np.ndarray
    loo_scores: np.ndarray
    ref_text: list[list[dict[str, Any]]] = field(default_factory=list)
    text_lines: list[dict[str, Any]] = field(default_factory=list)
    #: simulated listing photos of the references compared like listing photos (cold-start statistics)
    evidence: AuthenticEvidence | None = None
    #: row of this product's first keypoint in the keypoint search store (-1: not in the search yet); its
    #: keypoints are rows ``kp_start .. kp_start + len(kp_xy) - 1``
    kp_start: int = -1
    #: which view of the product this is (0, 1, ...): references that align with each other share a view (see
    #: :mod:`brandguard.reference_views`); a product whose references show faces that do not align with each
    #: other has one model per view, all with the same ``brand`` and ``product``
    view: int = 0
    #: this view's share of the pooled cold-start prior (:func:`prior_entry`): ``(2, 2, 3)`` float32, or
    #: ``(0, 2, 3)`` when it adds nothing to the pool; None: not known yet (an index saved before it was kept)
    prior_entry: np.ndarray | None = None
    #: cold-start calibration material under the index's prior in force (:attr:`ReferenceIndex.prior`): the
    #: cross-fitted channel scores ``(n, len(CHANNELS))`` of its simulated listing photos (text NaN); ``(0, 4)``
    #: without simulated photos; None: not fitted under the prior in force yet
    calibration_scores: np.ndarray | None = None
    #: whether :attr:`calibration_scores` compare with *other* references (else the photos' own reference)
    calibration_cross: bool = False
    #: how many references :attr:`calibration_scores` were simulated from
    calibration_refs: int = 0
    #: ``(compared,)`` cosine of each bank reference's global vector to the closest other one (empty for fewer
    #: than two); None: not known yet. The weak-match similarity is a quantile of these over the index.
    reference_similarity: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"{self.brand}/{self.product}"

    @property
    def compared(self) -> int:
        """References in the comparison bank (``len(bank)``, known without reading the bank from disk)."""
        return len(self.bank_refs)

    @property
    def thin_evidence(self) -> bool:
        """Fewer than :data:`THIN_EVIDENCE` references to compare with: how authentic photos of this product
        vary is barely known, so its verdicts carry a note."""
        return self.compared < THIN_EVIDENCE

    @property
    def evidence_note(self) -> str:
        """``"thin evidence: N reference(s)"`` for a product with :attr:`thin_evidence`, else ``""``."""
        return f"thin evidence: {self.compared} reference(s)" if self.thin_evidence else ""


# A loaded index reads these from its memory-mapped arrays file when a photo needs them (bounded cache,
# brandguard.arraystore); a model built in memory holds them as plain attributes.
for _name in ("bank", "stats", "global_vecs", "evidence"):
    setattr(ProductModel, _name, LazyField(_name))


@dataclass
class _Prepared:
    item: ReferenceItem
    image: np.ndarray
    kp: Keypoints
    #: file digest (else pixel digest) of the photo: references are ordered by it, never by file name
    digest: str = ""


def _progress(iterable: Iterable[Any], enabled: bool, desc: str, total: int | None = None,
              unit: str = "img") -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit)


def simulated_photos_per_reference(references: int, views: int) -> int:
    """How many simulated listing photos the build makes of each of a product's references.

    A product's authentic statistics are estimated from all its simulated photos together, so the number that
    matters is the product's (each view of it, :class:`ProductModel`): about ``4 * views`` in all (12 at the
    default ``compare.simulated_views`` of 3), ``ceil(4 * views / references)`` per reference, at least
    ``min(2, views)`` and at most ``2 * views``. At the default a product with one reference gets 6 photos,
    two to four references 12, five 15, six 12, sixteen 32. ``index add`` fits a product that gains references
    again from all of them (:meth:`ReferenceIndex._refit_known`), so it gets a build's count; only a product
    extended as the index holds it (earlier files gone) keeps its earlier photos, the new references getting
    the count of the bank they join.
    On the demo (27 products of 6 references: 12 photos a product instead of 18, a subset of the same random
    streams) the figures after ``calibrate`` stayed within the spread that another random draw of the same
    number of photos gives (README, "Building the index"), and the build does a third less simulation.

    Args:
        references: the product's references in its bank (>= 1).
        views: ``compare.simulated_views`` (0 or less: none).

    Returns:
        photos per reference (0 when ``views`` is 0 or less).
    """
    if views <= 0:
        return 0
    return min(2 * views, max(min(2, views), -(-4 * views // max(1, references))))


#: per build thread: its stack of timed phases, and whether it is a worker of the product pool (:meth:`ReferenceIndex._add`)
_BUILD_THREAD = threading.local()
_PHASE_LOCK = threading.Lock()


class _InlineExecutor:
    """The part of :class:`~concurrent.futures.ThreadPoolExecutor` the build uses (``map`` in a ``with``),
    running every call in the calling thread."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, *iterables: Iterable[Any]) -> Iterator[Any]:
        return map(fn, *iterables)


@contextmanager
def _network_on_one_core(device: str) -> Iterator[None]:
    """While building on a CPU, every call of the network runs on one core (restored afterwards).

    The build keeps the cores busy with its own threads (keypoints, OCR, simulated photos) and runs the network
    in ``runtime.workers`` calls side by side (:meth:`ReferenceIndex._embed`); one call spread over every core
    adds OpenMP threads that spin while they wait, which on a shared machine burns several times the network's
    own CPU time (the embedding phase cost 0.22 CPU s a reference at load 6 instead of 0.04).

    Args:
        device: the network's device (``runtime.device``: ``auto``, ``cpu``, ``cuda[:N]``); nothing changes off the CPU.
    """
    from brandguard.embedding import resolve_device

    if resolve_device(device).type != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # threads started from now on (the pools below) take it too
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ReferenceIndex:
    """Authentic references of known products, searchable and comparable. Build with :meth:`build`."""

    def __init__(self, config: Config, backbone_info: dict[str, Any], products: list[ProductModel],
                 calibrator: ScoreCalibrator | None = None, thresholds: Thresholds | None = None,
                 skipped: list[dict[str, str]] | None = None) -> None:
        self.config = config
        self.backbone_info = backbone_info
        self.products = products
        self.calibrator = calibrator
        self.brand_calibrators: dict[str, ScoreCalibrator] = {}
        self.thresholds = thresholds or Thresholds(min_inliers=config.localization.min_inliers)
        self.skipped = skipped or []
        self.duplicates: list[dict[str, str]] = []
        self.source: str | None = None  # the directory it was loaded from, if any
        #: the folder the references are read from (the one given to build, or found at load); None when unknown
        self.references_root: str | None = None
        self.references_found = True  # False when a loaded index's reference folder was not found
        self.fusion = ChannelFusion()
        self.text_enabled = _resolve_text_check(config.compare.text_check)
        self._text_reader: Any = None
        self._embedder: Embedder | None = None
        self._geometry: tuple[tuple[str, str], Geometry] | None = None
        self._local: KeypointSearch | None = None
        self._known_starts: set[int] = set()
        self._known_sizes: dict[int, int] = {}
        self._global: Any = None
        self._local_pid = np.zeros(0, np.int32)
        self._local_xy = np.zeros((0, 2), np.float32)
        self._global_rows: list[tuple[int, int]] = []
        #: the directory this index was loaded from or last saved to, and how its arrays lie there (see save)
        self._disk: _DiskState | None = None
        #: the pooled prior every product's statistics are fitted under (see :meth:`refit_statistics`); None
        #: until the first fit
        self.prior: AuthenticPrior | None = None
        #: products (views) added, changed or removed since the cold-start calibration was fitted (see
        #: :meth:`refit_default_calibration`)
        self.calibration_lag = 0
        self._rebuild_search()
        if self.calibrator is None:
            self.refit_default_calibration()

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, references: str | Path | Sequence[ReferenceItem], config: Config | None = None,
              embedder: Embedder | None = None, progress: bool = False) -> ReferenceIndex:
        """Build an index from a reference folder, a CSV manifest, or a list of :class:`ReferenceItem`.

        Unreadable photos are skipped with a warning and listed in ``index.skipped``.

        Raises:
            DataError: nothing usable in ``references``.
        """
        cfg = config or Config()
        items = read_references(references) if isinstance(references, (str, Path)) else list(references)
        emb = embedder or Embedder.from_name(cfg.backbone.name, cfg.backbone.checkpoint, device=cfg.runtime.device,
                                             precision=cfg.runtime.precision, batch_size=cfg.runtime.batch_size)
        info = {"spec": spec_to_dict(emb.spec), "weights_digest": emb.weights_digest,
                "weights_source": emb.backbone.weights_source, "checkpoint": cfg.backbone.checkpoint,
                **_checkpoint_provenance(cfg.backbone.checkpoint)}
        index = cls(cfg, info, [], calibrator=None)
        index._embedder = emb
        if isinstance(references, (str, Path)):  # the folder a saved index records its references under
            src = os.path.abspath(references)
            index.references_root = src if os.path.isdir(src) else os.path.dirname(src)
        index.add(items, progress=progress)
        if not index.products:
            raise DataError("no product could be indexed: every reference photo was unreadable "
                            f"({len(index.skipped)} skipped); see index.skipped")
        return index

    def _read_reference(self, item: ReferenceItem, digest: str = "") -> _Prepared:
        """A reference decoded at the working size with its keypoints. Raises :class:`ImageLoadError`."""
        loc = self.config.localization
        img = load_image(item.path, max_side=loc.max_side)
        return _Prepared(item, img, detect_keypoints(img, loc.keypoint_side, loc.reference_keypoints), digest)

    def _prepare(self, items: Sequence[ReferenceItem], progress: bool) -> list[_Prepared]:
        def work(item: ReferenceItem) -> _Prepared | dict[str, str]:
            try:
                return self._read_reference(item)
            except ImageLoadError as exc:
                return {"path": str(item.path), "error": exc.reason}

        out: list[_Prepared] = []
        with ThreadPoolExecutor(max(1, self.config.runtime.workers)) as ex:
            for res in _progress(ex.map(work, items), progress, "references", total=len(items)):
                if isinstance(res, dict):
                    warnings.warn(f"skipping reference {res['path']}: {res['error']}", stacklevel=4)
                    self.skipped.append(res)
                else:
                    out.append(res)
        return out

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time a building phase into :attr:`build_seconds` (exclusive: a nested phase's time is its own).

        On a worker of the product pool (see :meth:`_add`) the phase counts that thread's own wall and CPU
        seconds, so a phase's figures are summed over the workers that ran it side by side."""
        stack = _BUILD_THREAD.__dict__.setdefault("phases", [])
        on_pool = getattr(_BUILD_THREAD, "product_pool", False)
        cpu = time.thread_time if on_pool else time.process_time
        stack.append(name)
        t0, c0 = time.perf_counter(), cpu()
        try:
            yield
        finally:
            stack.pop()
            with _PHASE_LOCK:
                for attr, dt in (("build_seconds", time.perf_counter() - t0), ("build_cpu_seconds", cpu() - c0)):
                    seconds = self.__dict__.setdefault(attr, {})
                    seconds[name] = seconds.get(name, 0.0) + dt
                    if stack:
                        seconds[stack[-1]] = seconds.get(stack[-1], 0.0) - dt

    def _pool(self) -> Any:
        """An executor of ``runtime.workers`` threads for one product's work, or one that runs each call in the
        calling thread when this thread is already a worker of the product pool (the cores are busy with other
        products: more threads would only contend)."""
        if getattr(_BUILD_THREAD, "product_pool", False) or self.config.runtime.workers <= 1:
            return _InlineExecutor()
        return ThreadPoolExecutor(self.config.runtime.workers)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder.from_name(
                self.backbone_info["spec"]["name"], self.backbone_info.get("checkpoint"),
                device=self.config.runtime.device, precision=self.config.runtime.precision,
                batch_size=self.config.runtime.batch_size)
            self.check_embedder(self._embedder)
        return self._embedder

    @property
    def geometry(self) -> Geometry:
        """Where scoring's keypoints, RANSAC and warps run (``runtime.geometry``, :mod:`brandguard.accel`); the
        index build always uses OpenCV's."""
        rt = self.config.runtime
        key = self._geometry_key()
        if self._geometry is None or self._geometry[0] != key:
            device = "cpu" if rt.geometry == "opencv" else \
                self._embedder.device if self._embedder is not None else resolve_device(rt.device)
            self._geometry = (key, resolve_geometry(rt.geometry, device, rt.batch_size))
        return self._geometry[1]

    def _geometry_key(self) -> tuple[str, str]:
        rt = self.config.runtime
        return rt.geometry, rt.device if self._embedder is None else str(self._embedder.device)

    def geometry_name(self) -> str:
        """``opencv`` or ``kornia``: the geometry :attr:`geometry` runs, told without loading anything and
        without failing where the configured device is missing (the fingerprint of an index built with
        ``--device cuda`` is read on CPU machines too)."""
        if self._geometry is not None and self._geometry[0] == self._geometry_key():
            return self._geometry[1].name
        return geometry_name(*self._geometry_key())

    def check_embedder(self, embedder: Embedder) -> None:
        """Refuse an embedder whose backbone or weights differ from the ones this index was built with.

        Raises:
            IndexCompatibilityError: names both sides.
        """
        want_name, want_digest = self.backbone_info["spec"]["name"], self.backbone_info["weights_digest"]
        if embedder.spec.name != want_name or embedder.weights_digest != want_digest:
            raise IndexCompatibilityError(
                f"this index was built with backbone {want_name!r} (weights {want_digest[:23]}...) but the "
                f"detector uses {embedder.spec.name!r} (weights {embedder.weights_digest[:23]}...); load it "
                "with the same --backbone/--checkpoint, or rebuild it with `brandguard index build`")

    def add(self, references: str | Path | Sequence[ReferenceItem], progress: bool = False) -> int:
        """Add reference photos; new products are created, known ones gain references. Returns photos added.

        Only the new photos are read and embedded, but for products that gain references: those are fitted again
        from all their references, read again from their files (see :meth:`_refit_known`), as a build of them all
        fits them (under the prior in force, see :meth:`refit_default_calibration`). The search structures are
        refreshed from stored vectors. A photo already indexed (same bytes or pixels) is skipped as a duplicate; a
        reference file replaced in place (an indexed path of the product with new bytes and pixels) replaces the
        reference it was, and its product is fitted again (a warning names it).
        """
        items = read_references(references) if isinstance(references, (str, Path)) else list(references)
        if isinstance(references, (str, Path)) and self.references_root is None:
            src = os.path.abspath(references)
            self.references_root = src if os.path.isdir(src) else os.path.dirname(src)
        # absolute paths: the index scores and reports the same from any working directory
        items = [ReferenceItem(Path(os.path.abspath(i.path)), i.brand, i.product) for i in items]
        # wall and CPU seconds per phase of this call (scripts/benchmark_build.py): all threads' CPU, but for the
        # phases of products fitted side by side, which count each worker's own seconds (see _phase)
        self.build_seconds: dict[str, float] = {}
        self.build_cpu_seconds: dict[str, float] = {}
        with _network_on_one_core(self.config.runtime.device if self._embedder is None else str(self._embedder.device)), \
                libraries_on_one_core():
            return self._add(items, progress)

    def _add(self, items: list[ReferenceItem], progress: bool) -> int:
        with self._phase("decode+keypoints"):
            prepared = self._prepare(items, progress)
        with self._phase("duplicates"):
            prepared, digests, replacing = self._drop_duplicates(prepared)
        groups: dict[tuple[str, str], list[_Prepared]] = defaultdict(list)
        for p in prepared:
            fd, px = digests[str(p.item.path)]
            p.digest = fd or px
            groups[(p.item.brand, p.item.product)].append(p)
        by_key: dict[tuple[str, str], list[int]] = defaultdict(list)  # a product's views
        for i, m in enumerate(self.products):
            by_key[(m.brand, m.product)].append(i)
        # the products that gain references (or whose reference files were replaced): fitted again
        refit = self._refit_known(groups, by_key, digests, replacing)
        new_count = {key: len(g) for key, g in groups.items()}
        fallback: set[tuple[str, str]] = set()  # ... but for those whose earlier references could not be read again
        added = 0
        # per product: align (keypoint matches, homographies), describe (embed the aligned references), read
        # (OCR of the lines that can be reference lines), statistics (comparisons, simulated listing photos).
        # Products are fitted side by side, one per worker (each product's work in its own thread: the cores
        # stay busy, where splitting one product's few references over the workers left them waiting); a
        # single product splits its own work over the workers instead. Each product's result depends on its
        # references alone (the cold-start prior is fitted over all of them afterwards, see
        # refit_default_calibration), and the products enter the index in key order, as fitted one by one.
        keys = sorted(groups)
        known = {key: [self.products[i] for i in by_key[key]] for key in keys if key in by_key}

        dropped: dict[tuple[str, str], list[str]] = {}  # replaced files whose product could not be read again

        def fit(key: tuple[str, str]) -> list[ProductModel]:
            again = None
            if key in refit:  # read here, so only the products being fitted hold their photos
                with self._phase("decode+keypoints"):
                    again = self._read_again(key, refit[key])
                if again is None:
                    fallback.add(key)
            with self._phase("align"):
                if key in known and again is None:
                    # extended as the index holds it, which keeps the indexed version of a replaced file
                    items = [p for p in groups[key] if str(p.item.path) not in replacing]
                    if len(items) < len(groups[key]):
                        dropped[key] = sorted({str(p.item.path) for p in groups[key]} & replacing)
                    return self._extend_product(known[key], items) if items else known[key]
                return self._fit_product(key[0], key[1], (again or []) + groups[key])

        def fit_on_pool(key: tuple[str, str]) -> list[ProductModel]:
            _BUILD_THREAD.product_pool = True
            try:
                return fit(key)
            finally:
                _BUILD_THREAD.product_pool = False

        workers = min(max(1, self.config.runtime.workers), len(keys))
        if workers > 1:
            _ = self.embedder, self.text_reader  # loaded once here, never by two workers at the same time
            # the products with the most references first, so the last to finish is a small one and no worker
            # waits long at the end (the results enter in key order all the same)
            with ThreadPoolExecutor(workers) as ex:
                futures = {ex.submit(fit_on_pool, key): key for key in
                           sorted(keys, key=lambda k: -len(groups[k]))}
                try:
                    done = {futures[f]: f.result() for f in _progress(as_completed(futures), progress,
                                                                      "products", total=len(keys), unit="product")}
                except BaseException:  # one product failed (or Ctrl-C): the products not started are not fitted
                    for f in futures:
                        f.cancel()
                    raise
            fitted = [done[key] for key in keys]
        else:
            fitted = [fit(key) for key in _progress(keys, progress, "products", unit="product")]
        if fallback:
            self._warn_not_refitted([f"{b}/{p}" for b, p in sorted(fallback)], "could not be read again")
        refitted = set(refit) - fallback
        self._warn_replaced(sorted(p for key in refitted for p in {str(q.item.path) for q in groups[key]} & replacing),
                            sorted(p for paths in dropped.values() for p in paths))
        replaced: dict[int, list[ProductModel]] = {}  # a refitted product's views, where its first view stood
        for key, views in zip(keys, fitted):
            if key in refitted:
                replaced[by_key[key][0]] = views
            elif key in by_key:
                for i, m in zip(by_key[key], views):
                    self.products[i] = m
                self.products.extend(views[len(by_key[key]):])
            else:
                self.products.extend(views)
            added += new_count[key] - len(dropped.get(key, ()))
        if replaced:
            gone = {i for key in refitted for i in by_key[key]}
            self.products = [v for i, m in enumerate(self.products) if i not in gone or i in replaced
                             for v in replaced.get(i, [m])]
        for m in self.products:
            if (m.brand, m.product) not in groups:  # only the products of this call have new references
                continue
            for r in m.refs:
                if r.path in digests and not r.digest:
                    r.digest, r.pixels = digests[r.path]
        thin = [(k, n) for k, n in self.thin_products() if tuple(k.split("/", 1)) in groups]
        if thin:
            warnings.warn(f"{len(thin)} product(s) have fewer than {THIN_EVIDENCE} references to compare with, so "
                          "their verdicts rest on thin evidence (add authentic photos): "
                          + ", ".join(f"{k} ({n})" for k, n in thin[:10]) + (" ..." if len(thin) > 10 else ""),
                          stacklevel=3)
        for step in _progress(("search", "calibration"), progress, "search + calibration", unit="step"):
            with self._phase(step):
                if step == "search":
                    self._rebuild_search()
                else:
                    self.refit_default_calibration()
        return added

    def _refit_known(self, groups: dict[tuple[str, str], list[_Prepared]], by_key: dict[tuple[str, str], list[int]],
                     digests: dict[str, tuple[str, str]],
                     replacing: AbstractSet[str] = frozenset()) -> dict[tuple[str, str], list[RefRecord]]:
        """The known products gaining references that are fitted again from all their references, as a build of
        them all at once fits them: ``{key: earlier references}``, where every earlier file is still there with
        the digest the index recorded (read again by :meth:`_read_again` when the product is fitted). Their
        digests join ``digests``. A product that cannot be is extended instead (:meth:`_extend_product`), with
        a warning.

        A reference file replaced in place (its path in ``replacing``) is left out of the earlier references, so
        the new photo takes its place. Where its product cannot be fitted again, the indexed version is kept and
        the new photo is dropped from ``groups``, with a warning.

        Extending a product with the new references alone keeps what it was fitted on: a product begun with one
        reference keeps that reference's product region (a few hundred keypoints) and gains only the keypoints
        each new reference repeats, its first reference's simulated photos stop counting once it has two, and
        references that do not align with those few keypoints become views of their own. Grown one reference at
        a time, the small demo's products kept 117-883 keypoints instead of 824-1,212 and scored AUROC 0.915
        instead of 0.963 (``tests/test_index.py`` checks that adding equals building). Refitting costs the
        product's whole fit: adding one photo to a product of six references took about 2 s instead of 0.35 s.
        """
        refit: dict[tuple[str, str], list[RefRecord]] = {}
        moved: list[str] = []
        undigested: list[str] = []
        kept_old: list[str] = []
        for key in sorted(k for k in groups if k in by_key):
            new = {str(p.item.path) for p in groups[key]} & replacing
            old = [r for i in by_key[key] for r in self.products[i].refs if r.path not in new]
            name = f"{key[0]}/{key[1]}"
            why = undigested
            if all(r.digest for r in old):
                try:
                    same = all(os.path.isfile(r.path) and file_digest(r.path) == r.digest for r in old)
                except OSError:
                    same = False
                if same:
                    for r in old:
                        digests[r.path] = (r.digest, r.pixels)
                    refit[key] = old
                    continue
                why = moved
            if new:  # not fitted again: the product keeps the indexed version of its replaced files
                kept_old.extend(sorted(new))
                groups[key] = [p for p in groups[key] if str(p.item.path) not in new]
                if not groups[key]:
                    del groups[key]
                    continue
            why.append(name)
        self._warn_replaced([], kept_old)
        if moved:
            self._warn_not_refitted(moved, "are not where the index recorded them or were changed (if they moved, "
                                           "`brandguard index relocate` first)")
        if undigested:
            self._warn_not_refitted(undigested, "were indexed before file digests were recorded")
        return refit

    @staticmethod
    def _warn_replaced(replaced: list[str], kept_old: list[str]) -> None:
        """Say which reference files replaced in place were taken, and which were not (the index keeps the
        version it holds where the product's other reference files could not be read again)."""
        if replaced:
            warnings.warn(f"{len(replaced)} reference file(s) changed since they were indexed: the new photos replace "
                          "the old ones and their products were fitted again: " + ", ".join(replaced[:5])
                          + (" ..." if len(replaced) > 5 else ""), stacklevel=5)
        if kept_old:
            warnings.warn(f"{len(kept_old)} reference file(s) changed since they were indexed, but their products' other "
                          "reference files could not be read again, so the index keeps the versions it holds "
                          "(`brandguard index build` takes the new ones): " + ", ".join(kept_old[:5])
                          + (" ..." if len(kept_old) > 5 else ""), stacklevel=5)

    def _warn_not_refitted(self, products: list[str], why: str) -> None:
        warnings.warn(f"{len(products)} product(s) gained references but their earlier reference files {why}, so the "
                      "new references were fitted onto the product as the index holds it, which is weaker than "
                      "fitting all at once (`brandguard index build` refits them): " + ", ".join(products[:10])
                      + (" ..." if len(products) > 10 else ""), stacklevel=4)

    def _read_again(self, key: tuple[str, str], old: list[RefRecord]) -> list[_Prepared] | None:
        """A product's earlier references decoded again with their keypoints (as :meth:`_prepare`), or None when
        one cannot be."""

        def one(r: RefRecord) -> _Prepared | None:
            try:
                return self._read_reference(ReferenceItem(Path(r.path), key[0], key[1]), r.digest)
            except ImageLoadError:
                return None

        with self._pool() as ex:
            again = list(ex.map(one, old))
        return None if any(p is None for p in again) else [p for p in again if p is not None]

    def _drop_duplicates(self, prepared: list[_Prepared]
                         ) -> tuple[list[_Prepared], dict[str, tuple[str, str]], set[str]]:
        """Keep each photo once: the same file bytes or the same decoded pixels as a reference already kept
        (in this call or in the index) is a duplicate, listed in ``self.duplicates`` and named in a warning.
        Of duplicates in one call the shortest path is kept (``ref.jpg`` before ``ref (1).jpg``).

        A photo under the path of one of its product's references whose bytes and pixels are new (the file was
        replaced in place) is kept: it replaces that reference (see :meth:`_refit_known`).

        Returns:
            the photos kept (input order), their ``{path: (file digest, pixel digest)}`` and the paths of those
            that replace a reference.
        """
        known: dict[str, str] = {}
        held: dict[str, tuple[tuple[str, str], RefRecord]] = {}  # an indexed path: the product holding it, its record
        for m in self.products:
            for r in m.refs:
                held[r.path] = ((m.brand, m.product), r)
                for key in (r.digest, r.pixels, "path:" + r.path):
                    if key and key != "path:":
                        known.setdefault(key, r.path)
        replacing: set[str] = set()
        order = sorted(range(len(prepared)), key=lambda i: (len(str(prepared[i].item.path)), str(prepared[i].item.path)))
        keep: list[int] = []
        digests: dict[str, tuple[str, str]] = {}
        dups: list[dict[str, str]] = []
        for i in order:
            path = str(prepared[i].item.path)
            try:
                fd = file_digest(path)
            except OSError:
                fd = ""
            img = prepared[i].image
            if max(img.shape[:2]) > self.config.localization.max_side:  # digests are of the max_side decode
                img = load_image(path, max_side=self.config.localization.max_side)
            px = pixel_digest(img)
            keys = [k for k in (fd, px, "path:" + path) if k]
            hit = next((known[k] for k in keys if k in known), None)
            owner, rec = held.get(path, (None, None))
            rewritten = hit == path and rec is not None and bool(rec.digest) and bool(fd) and fd != rec.digest
            if rewritten and fd not in known and px not in known and owner == (prepared[i].item.brand,
                                                                                  prepared[i].item.product):
                # a reference file replaced in place (other bytes and pixels under an indexed path, same product):
                # the new photo takes the old one's place (see _refit_known), it is no duplicate of itself
                replacing.add(path)
                hit = None
            if hit is not None:
                if rewritten and rec is not None and px == rec.pixels:
                    # the same pixels in new bytes (the file's metadata edited): the index records the bytes now
                    # there, so that a later add still finds the product's files as recorded and refits it
                    rec.digest = fd
                dups.append({"path": path, "duplicate_of": hit})
                continue
            for k in keys:
                known[k] = path
            keep.append(i)
            digests[path] = (fd, px)
        if dups:
            self.duplicates.extend(dups)
            warnings.warn(f"{len(dups)} duplicate reference photo(s) kept once (same bytes or same pixels): "
                          + ", ".join(f"{d['path']} = {d['duplicate_of']}" for d in dups[:5])
                          + (" ..." if len(dups) > 5 else ""), stacklevel=4)
        return [prepared[i] for i in sorted(keep)], digests, replacing

    def thin_products(self) -> list[tuple[str, int]]:
        """Products with fewer than :data:`THIN_EVIDENCE` references compared, counted over all their views:
        ``[("brand/product", n)]`` in index order."""
        compared: dict[str, int] = {}
        for m in self.products:
            compared[m.key] = compared.get(m.key, 0) + m.compared
        return [(k, n) for k, n in compared.items() if n < THIN_EVIDENCE]

    def views(self) -> dict[str, list[ProductModel]]:
        """Each product's views (see :class:`ProductModel`), ``{"brand/product": [model, ...]}`` in index order."""
        out: dict[str, list[ProductModel]] = {}
        for m in self.products:
            out.setdefault(m.key, []).append(m)
        return out

    def relocate_references(self, folder: str | Path) -> None:
        """Point the references at the folder they were moved to (same layout below it); save to keep it.

        Raises:
            DataError: ``folder`` is not a folder, or holds none of the references.
        """
        new = os.path.abspath(folder)
        old = _saved_root(self)
        if not os.path.isdir(new) or old is None:
            raise DataError(f"cannot relocate the references to {folder}: " + ("not a folder" if old else
                            "this index records no reference folder (rebuild it with `brandguard index build`)"))
        moved = [(r, os.path.join(new, os.path.relpath(r.path, old))) for m in self.products for r in m.refs]
        if moved and not any(os.path.exists(p) for _, p in moved):
            raise DataError(f"{folder} holds none of this index's {len(moved)} references (e.g. "
                            f"{os.path.relpath(moved[0][0].path, old)}); pass the folder the references were moved to")
        for r, p in moved:
            r.path = p
        self.references_root = new
        self.references_found = True

    def reference_digests(self) -> set[str]:
        """File and pixel digests of every reference (see :class:`RefRecord`), for recognising copies."""
        return {d for m in self.products for r in m.refs for d in (r.digest, r.pixels) if d}

    def fingerprint(self) -> str:
        """``"sha256:..."`` of what decides a verdict: backbone weights, products and their references, the
        configuration (all but ``runtime``: device and batch size do not change verdicts; the geometry does,
        within a tolerance, so kornia's is named), thresholds and calibration. Two runs with the same
        fingerprint score alike (used by ``--resume``)."""
        config = {k: v for k, v in self.config.to_dict().items() if k != "runtime"}
        if self.geometry_name() != "opencv":  # OpenCV's is every earlier index's: their fingerprints stay
            config["geometry"] = self.geometry_name()
        content = {"weights": self.backbone_info.get("weights_digest"), "config": config,
                   "products": [[m.brand, m.product, [r.digest or os.path.basename(r.path) for r in m.refs]]
                                for m in self.products],
                   "thresholds": self.thresholds.to_dict(),
                   "calibration": self.calibrator.to_dict() if self.calibrator else None,
                   "brand_calibration": {b: c.to_dict() for b, c in sorted(self.brand_calibrators.items())}}
        if self.prior is not None:  # the statistics are fitted under it (refit_statistics moves them)
            content["prior"] = [self.prior.level.tolist(), self.prior.ratio.tolist()]
        # numpy scalars as plain numbers: a built index and the same index saved and loaded agree
        text = json.dumps(content, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        return sha256_bytes(text.encode("utf-8", "surrogateescape"))

    def with_backbone(self, embedder: Embedder, checkpoint: str | None = None, progress: bool = False) -> ReferenceIndex:
        """A copy of this index whose references are embedded by another backbone (e.g. a fine-tuned one).

        Keypoints and alignments do not depend on the backbone and are kept; the aligned references are read
        again from their paths, embedded, and the comparison statistics and the default (leave-one-out)
        calibration refitted. Calibrate the copy again before acting on its verdicts.

        Raises:
            DataError: a reference photo is no longer readable at its recorded path.
        """
        cfg = self.config.with_overrides({"backbone.name": embedder.spec.name, "backbone.checkpoint": checkpoint})
        info = {"spec": spec_to_dict(embedder.spec), "weights_digest": embedder.weights_digest,
                "weights_source": embedder.backbone.weights_source, "checkpoint": checkpoint,
                **_checkpoint_provenance(checkpoint)}
        new = ReferenceIndex.__new__(ReferenceIndex)
        new.__dict__.update(self.__dict__)
        new.config, new.backbone_info, new._embedder = cfg, info, embedder
        new._geometry = None
        new.calibrator, new.brand_calibrators = None, {}
        new.prior = None  # other distances, another prior: every product is fitted under the one pooled anew
        new.thresholds = Thresholds.from_dict(self.thresholds.to_dict())
        products = []
        for m in _progress(self.products, progress, "re-embedding"):
            rows = []
            for r in m.bank_refs:
                try:
                    img = load_image(m.refs[r].path, max_side=cfg.localization.max_side)
                except ImageLoadError as exc:
                    raise DataError(f"re-embedding {m.key} needs its reference {m.refs[r].path}: {exc.reason}") from exc
                rows.append((r, img, np.asarray(m.refs[r].H, np.float64)))
            nm = ProductModel(m.brand, m.product, m.refs, m.anchor, [], m.kp_desc, m.kp_xy, _empty_bank(),
                              None, np.zeros((0, 1), np.float32), np.zeros((0, len(CHANNELS))),  # type: ignore[arg-type]
                              view=m.view)
            with _network_on_one_core(str(embedder.device)):
                new._add_to_bank(nm, rows)
            products.append(nm)
        new.products = products
        new._local = None  # its own keypoint search: never append to the original's
        new._rebuild_search()
        new.refit_default_calibration()
        return new

    def remove(self, brand: str, product: str | None = None) -> int:
        """Remove a brand's products (or one product), every view of them. Returns how many products were removed.

        Raises:
            DataError: nothing matches, with the known brands listed.
        """
        keep = [m for m in self.products if not (m.brand == brand and (product is None or m.product == product))]
        removed = len({m.key for m in self.products}) - len({m.key for m in keep})
        if removed == 0:
            known = sorted({m.brand for m in self.products})
            raise DataError(f"no product {brand}/{product or '*'} in the index; known brands: {', '.join(known)}")
        self.calibration_lag += len(self.products) - len(keep)
        self.products = keep
        if product is None:
            self.brand_calibrators.pop(brand, None)
        self._rebuild_search()
        self.refit_default_calibration()
        return removed

    # -------------------------------------------------------------- product fitting
    def _ransac_px(self, shape: tuple[int, ...]) -> float:
        loc = self.config.localization
        return loc.ransac_threshold * max(1.0, max(shape[:2]) / loc.keypoint_side)

    def _view_inliers(self) -> int:
        """Fewest inliers with which a pair of references of one product can align (join one view): half the
        listing rule (``localization.min_inliers``), at least 12; see :meth:`_aligns`."""
        return max(12, self.config.localization.min_inliers // 2)

    def _aligns(self, inliers: int, tentative: int) -> bool:
        """Whether two references of one product align: as many inliers as the listing rule asks
        (``localization.min_inliers``), or at least :meth:`_view_inliers` that are 30% or more of the
        tentative matches. Two photos known to show the same product need less evidence than a photo matched
        against the whole catalogue (a small catalogue image has few keypoints), but a few inliers among many
        tentative matches happen by chance between two faces sharing a typeface or a barcode."""
        return inliers >= self.config.localization.min_inliers or (
            inliers >= self._view_inliers() and inliers >= 0.3 * tentative)

    def _fit_product(self, brand: str, product: str, entries: list[_Prepared], first_view: int = 0) -> list[ProductModel]:
        """Fit a product's references as views (see :mod:`brandguard.reference_views`): one
        :class:`ProductModel` per connected group of references that align with each other, numbered from
        ``first_view``. References are ordered by content digest first, so nothing depends on file names."""
        from brandguard.reference_views import align_views

        entries = sorted(entries, key=lambda e: (e.digest, str(e.item.path)))
        n = len(entries)
        inl = np.zeros((n, n), int)
        linked = np.ones((n, n), int)
        Hs: dict[tuple[int, int], np.ndarray] = {}
        shared: dict[tuple[int, int], np.ndarray] = {}  # (i, j): keypoints of i that are inliers of pair (i, j)

        def pair(ij: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
            i, j = ij
            ia, ib = match_pair(entries[i].kp, entries[j].kp)
            return (ia, ib, *estimate_homography(entries[i].kp.xy[ia], entries[j].kp.xy[ib],
                                                 self._ransac_px(entries[j].image.shape)))

        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        with self._pool() as ex:  # every pair on every worker
            matched = list(ex.map(pair, pairs))
        for (i, j), (ia, ib, H, mask) in zip(pairs, matched):
            if H is None or mask.sum() < 8:
                continue
            inl[i, j] = inl[j, i] = int(mask.sum())
            Hs[(i, j)] = H
            Hs[(j, i)] = np.linalg.inv(H)
            shared[(i, j)], shared[(j, i)] = ia[mask], ib[mask]
            if not self._aligns(int(mask.sum()), len(ia)):
                linked[i, j] = linked[j, i] = 0
        inl = inl * linked  # pairs that align; `shared` keeps the weaker ones (product regions of lone references)
        pending = align_views(inl, 1)
        models: list[ProductModel] = []
        while pending:
            group = pending.pop(0)
            model, rejected = self._fit_view(brand, product, entries, group, inl, Hs, shared, first_view + len(models))
            models.append(model)
            pending = sorted(pending + [[r] for r in rejected], key=lambda g: g[0])
        if len(models) > 1:
            sizes = ", ".join(str(len(m.refs)) for m in models)
            warnings.warn(f"the {n} references of {brand}/{product} form {len(models)} views that do not align with "
                          f"each other (another face, a catalogue image; references per view: {sizes}): each view is "
                          "localised and compared on its own", stacklevel=5)
        return models

    def _fit_view(self, brand: str, product: str, entries: list[_Prepared], group: list[int], inl: np.ndarray,
                  Hs: dict[tuple[int, int], np.ndarray], shared: dict[tuple[int, int], np.ndarray],
                  view: int) -> tuple[ProductModel, list[int]]:
        """One view: its anchor, canonical frame, keypoints and bank. Returns the model and the members whose
        homography into the frame is not sane (the caller makes them views of their own)."""
        import cv2

        from brandguard.reference_views import chain_to_anchor, choose_anchor, product_mask

        loc = self.config.localization
        S = loc.canonical_size
        anchor = choose_anchor(group, inl)
        to_anchor = chain_to_anchor(group, anchor, inl, Hs, 1)
        members = set(to_anchor)
        a_img, a_kp = entries[anchor].image, entries[anchor].kp
        # keypoints of each member seen again in another member: the product, not its backgrounds
        repeated: dict[int, set[int]] = {i: set() for i in members}
        for (i, j), kps in shared.items():
            if i in members and j in members and inl[i, j] > 0:
                repeated[i].update(kps.tolist())
        region: np.ndarray | None = None  # the product in the anchor photo (a lone reference)
        if len(members) == 1:
            others = [shared[(anchor, j)] for j in range(len(entries)) if (anchor, j) in shared]
            hits = np.unique(np.concatenate(others)) if others else np.zeros(0, int)
            region, _ = product_mask(a_img, a_kp.xy, a_kp.xy[hits] if len(hits) else None)
            ys, xs = np.nonzero(region)
            pts = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], np.float32)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            mx, my = 0.02 * (x1 - x0) + 2, 0.02 * (y1 - y0) + 2
        else:
            anchor_rep = sorted(repeated[anchor])
            pts = a_kp.xy[anchor_rep] if len(anchor_rep) >= 8 else a_kp.xy
            if len(pts) < 4:
                pts = np.array([[0, 0], [a_img.shape[1], a_img.shape[0]]], np.float32)
            x0, y0 = np.percentile(pts, 0.5, axis=0)
            x1, y1 = np.percentile(pts, 99.5, axis=0)
            mx, my = 0.05 * (x1 - x0) + 4, 0.05 * (y1 - y0) + 4
        x0, y0 = max(0.0, x0 - mx), max(0.0, y0 - my)
        x1, y1 = min(float(a_img.shape[1]), x1 + mx), min(float(a_img.shape[0]), y1 + my)
        # anchor box -> canonical square
        T = np.array([[S / max(x1 - x0, 1.0), 0, -x0 * S / max(x1 - x0, 1.0)],
                      [0, S / max(y1 - y0, 1.0), -y0 * S / max(y1 - y0, 1.0)], [0, 0, 1]])
        refs: list[RefRecord] = []
        aligned_entries: list[tuple[int, np.ndarray]] = []  # (entry index, H canonical->ref)
        rejected: list[int] = []
        for i in group:
            e = entries[i]
            if i in to_anchor:
                Hc = np.linalg.inv(T @ to_anchor[i][0])
                Hc /= Hc[2, 2]
                if i == anchor or homography_is_sane(Hc, S, e.image.shape[:2], min_area=0.005, max_area=8.0):
                    refs.append(RefRecord(str(e.item.path), True, to_anchor[i][1], Hc.tolist()))
                    aligned_entries.append((i, Hc))
                    continue
            rejected.append(i)
        # keypoints in the canonical frame: on the product (repeated in another member, or inside the region the
        # repeated ones cover; a lone reference: inside its product region), repeated ones first
        projected = []
        for i, Hc in aligned_entries:
            kp = entries[i].kp
            p = np.c_[kp.xy, np.ones(len(kp))] @ np.linalg.inv(Hc).T
            ok = p[:, 2] > 1e-9
            cxy = p[:, :2] / np.where(ok, p[:, 2], 1.0)[:, None]
            ok &= (cxy[:, 0] >= -2) & (cxy[:, 0] <= S + 2) & (cxy[:, 1] >= -2) & (cxy[:, 1] <= S + 2)
            rep = np.zeros(len(kp), bool)
            rep[sorted(repeated.get(i, set()))] = True
            projected.append((kp, cxy, ok, rep))
        hull = None
        rep_xy = np.concatenate([cxy[ok & rep] for _, cxy, ok, rep in projected]) if projected else np.zeros((0, 2))
        if len(aligned_entries) >= 2 and len(rep_xy) >= 8:
            hull = cv2.convexHull(rep_xy.astype(np.float32))
        descs, xys, prios, firm = [], [], [], []
        for (kp, cxy, ok, rep), (i, _) in zip(projected, aligned_entries):
            if region is not None:  # a lone reference: its product region
                px = np.clip(np.round(kp.xy).astype(int), 0, [region.shape[1] - 1, region.shape[0] - 1])
                keep = ok & region[px[:, 1], px[:, 0]]
                rep = keep
            elif hull is not None:
                inside = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in cxy])
                keep = ok & (rep | inside)
            else:
                keep = ok & rep if len(aligned_entries) >= 2 else ok
                rep = keep
            descs.append(kp.desc[keep])
            xys.append(cxy[keep])
            prios.append(kp.response[keep])
            firm.append(rep[keep])
        kp_desc = np.concatenate(descs) if descs else np.zeros((0, 128), np.float32)
        kp_xy = np.concatenate(xys).astype(np.float32) if xys else np.zeros((0, 2), np.float32)
        if len(kp_desc):
            # repeated keypoints first (strongest first); a view with few of them (two or three small hand-held
            # photos) is topped up with the other keypoints inside the region they cover, to VIEW_KEYPOINTS: enough
            # to localise a listing photo. A well-covered view keeps only repeated ones, the more distinctive.
            is_firm, prio = np.concatenate(firm), np.concatenate(prios)
            n = min(loc.max_descriptors_per_product, max(int(is_firm.sum()), min(len(prio), VIEW_KEYPOINTS)))
            order = np.lexsort((-prio, ~is_firm))[:n]
            order.sort()
            kp_desc, kp_xy = kp_desc[order], kp_xy[order]
        model = ProductModel(brand, product, refs, anchor=0, bank_refs=[], kp_desc=kp_desc.astype(np.float16),
                             kp_xy=kp_xy, bank=_empty_bank(), stats=None,  # type: ignore[arg-type]
                             global_vecs=np.zeros((0, 1), np.float32), loo_scores=np.zeros((0, len(CHANNELS))),
                             view=view)
        ref_pos = {r.path: k for k, r in enumerate(refs)}
        model.anchor = ref_pos[str(entries[anchor].item.path)]
        with self._phase("statistics"):
            self._add_to_bank(model, [(ref_pos[str(entries[i].item.path)], entries[i].image, Hc)
                                      for i, Hc in aligned_entries])
        return model, rejected

    def _extend_product(self, views: list[ProductModel], entries: list[_Prepared]) -> list[ProductModel]:
        """Add new photos of a known product: each joins the view it aligns with best (most inliers, see
        :meth:`_aligns`; sane); the others are fitted as new views. Returns every view, old ones first."""
        loc = self.config.localization
        S = loc.canonical_size
        new_bank: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
        unplaced: list[_Prepared] = []
        for e in sorted(entries, key=lambda e: (e.digest, str(e.item.path))):
            best: tuple[int, int, np.ndarray, np.ndarray] | None = None  # (inliers, view position, H, kp rows)
            for v, model in enumerate(views):
                canon = Keypoints(model.kp_xy, model.kp_desc.astype(np.float32), np.zeros(len(model.kp_xy), np.float32))
                ia, ib = match_pair(e.kp, canon)
                H, mask = estimate_homography(canon.xy[ib], e.kp.xy[ia], self._ransac_px(e.image.shape))
                if H is None or not self._aligns(int(mask.sum()), len(ia)) or \
                        not homography_is_sane(H, S, e.image.shape[:2], 0.005, 8.0):
                    continue
                if best is None or mask.sum() > best[0]:
                    best = (int(mask.sum()), v, H / H[2, 2], ia[mask])
            if best is None:
                unplaced.append(e)
                continue
            k, v, H, rows = best
            model = views[v]
            model.refs.append(RefRecord(str(e.item.path), True, k, H.tolist()))
            new_bank[v].append((len(model.refs) - 1, e.image, H))
            p = np.c_[e.kp.xy, np.ones(len(e.kp))] @ np.linalg.inv(H).T
            good = p[:, 2] > 1e-9
            cxy = p[:, :2] / np.where(good, p[:, 2], 1.0)[:, None]
            inside = good & (cxy[:, 0] >= 0) & (cxy[:, 0] <= S) & (cxy[:, 1] >= 0) & (cxy[:, 1] <= S)
            repeat = np.zeros(len(e.kp), bool)
            repeat[rows] = True
            room = max(0, loc.max_descriptors_per_product - len(model.kp_xy))
            sel = np.flatnonzero(inside & repeat)[:room]
            model.kp_desc = np.concatenate([model.kp_desc, e.kp.desc[sel].astype(np.float16)])
            model.kp_start = -1  # re-entered into the keypoint search with its new keypoints
            model.kp_xy = np.concatenate([model.kp_xy, cxy[sel].astype(np.float32)])
        with self._phase("statistics"):
            for v in sorted(new_bank):
                self._add_to_bank(views[v], new_bank[v])
        if not unplaced:
            return views
        return views + self._fit_product(views[0].brand, views[0].product, unplaced,
                                         first_view=max(m.view for m in views) + 1)

    def _add_to_bank(self, model: ProductModel, new: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        cfg = self.config
        text_rows: list[Any] = []
        if new:
            crops, valids, noises = zip(*(self._reference_crop(model.refs[r].path, img, H) for r, img, H in new))
            with self._phase("describe"):
                g = self._embed("embed_global", list(crops))
                feats, occ = self._embed("embed_local", np.stack(crops)) if self.embedder.has_local_head \
                    else ([None] * len(crops), [None] * len(crops))
                views = ProductBank.from_views([make_view(c, v, cfg.compare.cell, f, o, n)
                                                for c, v, f, o, n in zip(crops, valids, feats, occ, noises)])
            model.bank = model.bank.concat(views)
            model.global_vecs = np.concatenate([model.global_vecs, g]) if len(model.global_vecs) else g
            model.bank_refs = model.bank_refs + [r for r, _, _ in new]
            if self.text_enabled and self.text_reader is not None:
                # per bank row, its lines read or its aligned crop, read once the cap below has dropped what it
                # drops (rows of an index built without the text check read nothing)
                old = len(model.bank) - len(crops)
                text_rows = (list(model.ref_text) + [[]] * old)[:old] + list(crops)
        # bound the bank: keep the anchor, then the most diverse references (farthest-point on global vectors)
        cap = cfg.compare.max_references_per_product
        if len(model.bank) > cap:
            start = model.bank_refs.index(model.anchor) if model.anchor in model.bank_refs else 0
            chosen = [start]
            dist = 1.0 - model.global_vecs @ model.global_vecs[start]
            while len(chosen) < cap:
                nxt = int(np.argmax(dist))
                chosen.append(nxt)
                dist = np.minimum(dist, 1.0 - model.global_vecs @ model.global_vecs[nxt])
            chosen.sort()
            model.bank = model.bank.select(chosen)
            model.global_vecs = model.global_vecs[chosen]
            model.bank_refs = [model.bank_refs[c] for c in chosen]
            if text_rows:
                text_rows = [text_rows[c] for c in chosen]
            elif model.ref_text:
                model.ref_text = [model.ref_text[c] for c in chosen]
        if text_rows:
            from brandguard.text import read_reference_text

            with self._phase("read"):  # only the lines that can make or test a reference line are recognised
                on_pool = getattr(_BUILD_THREAD, "product_pool", False)  # one thread here, a reader of the W
                readings = iter(read_reference_text([t for t in text_rows if isinstance(t, np.ndarray)],
                                                    1 if on_pool else cfg.runtime.workers,
                                                    [t for t in text_rows if isinstance(t, list)],
                                                    readers=max(1, cfg.runtime.workers)))
                model.ref_text = [t if isinstance(t, list) else next(readings) for t in text_rows]
        model.reference_similarity = _reference_similarity(model.global_vecs)
        model.calibration_scores = None  # fitted again under the prior in force (refit_default_calibration)
        if len(model.bank) == 0:
            model.stats = None  # type: ignore[assignment]
            model.loo_scores = np.zeros((0, len(CHANNELS)))
            model.prior_entry = _NO_ENTRY
            return
        model.stats, loo = fit_normal_stats(model.bank, cfg.compare.cell, cfg.compare.references_compared,
                                            cfg.compare.margin, cfg.compare.white_balance)
        model.text_lines = reference_lines(model.ref_text) if model.ref_text else []
        # authentic variation under listing conditions: simulated listing photos of the new references,
        # localised and compared like listing photos (the statistics in force until `calibrate`)
        kept = set(model.bank_refs)
        if model.evidence is not None:
            model.evidence = model.evidence.keep_sources(kept)
        if new and cfg.compare.simulated_views > 0:
            with self._phase("simulated views"):
                ev = self._simulate_evidence(model, [(r, img) for r, img, _ in new if r in kept])
            model.evidence = ev if model.evidence is None else model.evidence.concat(ev)
        model.prior_entry = _NO_ENTRY if model.evidence is None else prior_entry(model.evidence, model.stats.region)
        if model.evidence is not None:  # no simulated photo localised: the pooled prior, never studio-only LOO
            # the prior in force (a new product joins the others' statistics without moving them; see
            # refit_statistics), or while none is (the first build) the prior pooled so far
            prior = self.prior if self.prior is not None else pool_prior(
                self._prior_entries(leave_out=model) + [model.prior_entry])
            model.stats = authentic_stats(model.evidence, model.stats.region, prior)
        model.loo_scores = self._loo_scores(model, loo)

    def _embed(self, method: str, images: Any) -> Any:
        """``self.embedder.<method>(images)`` in ``runtime.workers`` parts side by side on a CPU (each part on
        one core, see :func:`_network_on_one_core`); the same result, in input order."""
        fn = getattr(self.embedder, method)
        parts = min(max(1, self.config.runtime.workers), len(images))
        if self.embedder.device.type != "cpu" or parts < 2 or getattr(_BUILD_THREAD, "product_pool", False):
            return fn(images)
        bounds = np.linspace(0, len(images), parts + 1).astype(int)
        with ThreadPoolExecutor(parts) as ex:
            outs = list(ex.map(fn, [images[a:b] for a, b in pairwise(bounds)]))
        return tuple(np.concatenate(o) for o in zip(*outs)) if isinstance(outs[0], tuple) else np.concatenate(outs)

    def _loo_scores(self, model: ProductModel, loo: list[Any] | None = None) -> np.ndarray:
        """Channel scores ``(n, len(CHANNELS))`` of each reference compared with the product's others under
        its statistics in force, through the one comparison (``loo``: their distance maps, when at hand)."""
        scores = []
        if len(model.bank) >= 2:
            for i in range(len(model.bank)):
                text = reference_text_details(model.ref_text[i], model.text_lines) if model.ref_text else None
                res = compare(model.bank.view(i), model.bank, model.stats, self.config.compare, exclude=i,
                              text_details=text, distances=None if loo is None else loo[i])
                scores.append(res.channels)
        return np.asarray(scores, np.float64).reshape(-1, len(CHANNELS))

    def _simulate_evidence(self, model: ProductModel, rows: list[tuple[int, np.ndarray]]) -> AuthenticEvidence:
        """Simulated listing photos of references ``(ref position, photo)``, localised on the product's
        keypoints, warped and compared with the bank exactly like listing photos (see
        :class:`~brandguard.mismatch.AuthenticEvidence`). Photos that would not be localised are left out."""
        import zlib

        from brandguard.listing_conditions import simulate_listing_photos

        cfg, loc = self.config, self.config.localization
        S, G = loc.canonical_size, loc.canonical_size // cfg.compare.cell
        canon = Keypoints(model.kp_xy, model.kp_desc.astype(np.float32), np.zeros(len(model.kp_xy), np.float32))
        seed = zlib.crc32(model.key.encode("utf-8"))
        views = simulated_photos_per_reference(len(model.bank), cfg.compare.simulated_views)
        flat = flat_print(model.bank.structure, model.bank.valid)  # grain is measured where no print is

        def localise(item: tuple[int, np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
            """A reference's simulated photos (its own random stream), each localised like a listing photo."""
            r, img = item
            out = []
            for photo in simulate_listing_photos(img, np.random.default_rng([seed, r]), views):
                kp = detect_keypoints(photo, loc.query_detect_side, loc.query_keypoints)
                ia, ib = match_pair(kp, canon)
                H, mask = estimate_homography(canon.xy[ib], kp.xy[ia], self._ransac_px(photo.shape))
                if H is None or mask.sum() < self.thresholds.min_inliers or \
                        not homography_is_sane(H, S, photo.shape[:2]):
                    continue
                crop, valid = warp_to_canonical(photo, H, S)
                keep = support_mask(canon.xy[ib][mask], S, cfg.compare.support_margin)
                out.append((r, crop, valid if keep is None else valid & keep,  # compared like a listing photo
                            source_noise(photo, H, S, flat)))
            return out

        def comparisons(item: tuple[tuple[int, np.ndarray, np.ndarray, float], Any, Any]) -> tuple[Any, Any]:
            """``(own, cross)`` distance maps of one localised photo (cross None for a one-reference bank)."""
            (r, crop, valid, noise), f, o = item
            view = make_view(crop, valid, cfg.compare.cell, f, o, noise)
            row = model.bank_refs.index(r)
            own = (r, view.cell_valid, distance_maps(view, model.bank.select([row]), cfg.compare.cell,
                                                     region=balance_on))
            cross = (r, view.cell_valid, distance_maps(view, model.bank, cfg.compare.cell, exclude=row,
                                                       k=cfg.compare.references_compared, region=balance_on)) \
                if len(model.bank) >= 2 else None
            return own, cross

        region = scored_region(model.bank, cfg.compare.margin)  # the product's cells (white balance, levels)
        balance_on = white_balance_cells(region, cfg.compare.white_balance)

        # the simulation, localisation and comparisons run on every worker, in the order of the photos
        with self._pool() as ex:
            found = [f for fs in ex.map(localise, rows) for f in fs]
            if not found:
                return AuthenticEvidence.empty(G)
            feats, occ = self._embed("embed_local", np.stack([c for _, c, _, _ in found])) \
                if self.embedder.has_local_head else ([None] * len(found), [None] * len(found))
            pairs = list(ex.map(comparisons, zip(found, feats, occ)))
        own = [o for o, _ in pairs]
        cross = [c for _, c in pairs if c is not None]
        return AuthenticEvidence.from_comparisons(cross, own, G, region)

    # -------------------------------------------------------------- search structures
    def _refresh_tables(self, first: int = 0) -> None:
        """Row -> product tables of the search structures (derived from ``products``).

        Args:
            first: products before this one are unchanged since the last refresh and already entered (their
                rows, global rows and brands): only the products from it on are entered, so appending a
                product costs the same whatever the catalogue size. 0: every table is made anew.
        """
        rows = len(self._local) if self._local is not None else 0
        if first <= 0 or len(self.__dict__.get("_brand_ids", {})) == 0:
            first = 0
            self._local_pid = np.full(rows, -1, np.int32)  # removed rows stay -1 (never returned by the search)
            self._local_xy = np.zeros((rows, 2), np.float32)
            self._global_rows = []
            self._brand_ids = {b: k for k, b in enumerate(sorted({m.brand for m in self.products}))}
            self._brand_id = np.zeros(len(self.products), np.int32)
        else:  # tables keep room to grow (doubling), so appending stays cheap
            self._local_pid = _grown(self._local_pid, rows, -1)
            self._local_xy = _grown(self._local_xy, rows, 0)
            self._brand_id = _grown(self._brand_id, len(self.products), 0)
        for i in range(first, len(self.products)):
            m = self.products[i]
            if m.kp_start >= 0:
                self._local_pid[m.kp_start:m.kp_start + len(m.kp_xy)] = i
                self._local_xy[m.kp_start:m.kp_start + len(m.kp_xy)] = m.kp_xy
            self._global_rows.extend((i, r) for r in range(m.compared))
            # brand ids only tell brands apart (localize_instances), so a new brand takes the next one
            self._brand_id[i] = self._brand_ids.setdefault(m.brand, len(self._brand_ids))
        #: what the tables (and the global search) hold: per product, the model, its first keypoint row, its
        #: global vectors as assigned (None: still in a loaded index's file) and how many rows they are
        self._tabled = [(m, m.kp_start, m.__dict__.get("global_vecs"), m.compared) for m in self.products]

    def _unchanged_prefix(self) -> int:
        """How many leading products are entered in the tables exactly as they are now."""
        tabled = self.__dict__.get("_tabled", [])
        n = 0
        for m, (t, start, vecs, rows) in zip(self.products, tabled):
            if m is not t or m.kp_start != start or m.__dict__.get("global_vecs") is not vecs or m.compared != rows:
                break
            n += 1
        return n

    def _rebuild_search(self, full: bool = False) -> None:
        """Bring the search structures up to date with ``products`` (no image is read again).

        The keypoint search (:class:`~brandguard.shortlist.KeypointSearch`) is updated incrementally: keypoints
        of new or changed products are appended and encoded, those of removed or changed products dropped, so
        adding a product costs the same whatever the catalogue size. ``full=True`` (or no search yet) builds it
        anew from every product's keypoints, choosing exact or two-stage search by size. The global-vector
        search (FAISS ``IndexFlatIP``, rows in product order) and the row tables take the vectors of appended
        products; after any other change they are made again from the vectors they hold (no product is read).
        """
        import faiss

        old_tabled = self.__dict__.get("_tabled", [])
        first = self._unchanged_prefix()
        live = {m.kp_start for m in self.products if m.kp_start >= 0}
        # a catalogue grown product by product past the size its search was chosen for gets the one a build of
        # the whole catalogue chooses (an exact search kept at 41,000 keypoints cost a quarter of scoring time)
        if full or self._local is None or self._local.outgrown(sum(len(m.kp_xy) for m in self.products)):
            X = np.concatenate([m.kp_desc for m in self.products]) if self.products else np.zeros((0, 128), np.float16)
            self._local = KeypointSearch.build(X, documents=np.array([len(m.kp_desc) for m in self.products]))
            start = 0
            for m in self.products:
                m.kp_start, start = (start if len(m.kp_desc) else -1), start + len(m.kp_desc)
            first = 0
        else:
            stale = [s for s in self._known_starts - live]  # products removed (or re-fitted) since the last update
            if stale:
                self._local.remove(np.concatenate([np.arange(s, s + self._known_sizes[s]) for s in stale]))
            for m in self.products[first:]:
                if m.kp_start < 0 and len(m.kp_desc):
                    m.kp_start = int(self._local.add(m.kp_desc)[0])
        if first < len(old_tabled) or first == 0:  # something removed or changed: counted anew
            self._known_sizes = {m.kp_start: len(m.kp_desc) for m in self.products if m.kp_start >= 0}
        else:  # appended (a copy: an index copied from this one shares the dictionary)
            self._known_sizes = {**self._known_sizes, **{m.kp_start: len(m.kp_desc) for m in self.products[first:]
                                                         if m.kp_start >= 0}}
        self._known_starts = set(self._known_sizes)
        appended = first == len(old_tabled) and self._global is not None and first > 0
        held = self._global_vectors(old_tabled) if not appended and self._global is not None else {}
        self._refresh_tables(first if appended else 0)
        if not appended:
            dim = next((v.shape[1] for v in held.values()), 0) or \
                next((m.global_vecs.shape[1] for m in self.products if m.compared), 1)
            self._global = faiss.IndexFlatIP(dim)
        for m in self.products[first if appended else 0:]:
            if m.compared:
                vecs = held.get(id(m))
                self._global.add(np.ascontiguousarray((m.global_vecs if vecs is None else vecs).astype(np.float32)))

    def _global_vectors(self, tabled: list[tuple[ProductModel, int, Any, int]]) -> dict[int, np.ndarray]:
        """The global vectors the global search holds of products still present and unchanged, by ``id`` of the
        model: read back from the search, so making it again reads no product from disk."""
        present = {id(m): m for m in self.products}
        out: dict[int, np.ndarray] = {}
        row = 0
        xb = None
        for m, _, vecs, n in tabled:
            if n and present.get(id(m)) is m and m.__dict__.get("global_vecs") is vecs and m.compared == n \
                    and row + n <= self._global.ntotal:
                if xb is None:
                    xb = self._global.reconstruct_n(0, self._global.ntotal)
                out[id(m)] = xb[row:row + n]
            row += n
        return out

    def refit_default_calibration(self) -> None:
        """The cold-start calibration, in force until ``calibrate`` replaces it (called after every change of
        the products: build, add, remove).

        With simulated listing photos (``compare.simulated_views`` > 0): every product's authentic statistics
        are fitted on its simulated photos under the **prior in force** (:attr:`prior`: what the products
        teach, pooled; a product with few references leans on it), and the scores of the simulated photos, each
        scored with statistics that left out its own reference (cross-fitted), calibrate the fusion and the
        score. Without them: the references' leave-one-out scores (studio photos against studio photos: too
        strict for listings).

        The prior in force follows the catalogue lazily, so that adding a product costs the same whatever the
        catalogue size. The prior pooled over the products now is worked out from each product's small entry
        (:func:`pool_prior`); when it moved more than :data:`PRIOR_TOLERANCE` (relative, largest entry) from
        the prior in force, or none is in force yet (a build), it becomes the prior in force and **every**
        product is refitted under it (:meth:`refit_statistics`, work that grows with the catalogue). Otherwise
        only the products added or changed since are fitted, under the prior in force; the others keep their
        statistics, which differ from those of an index fitted in one go by at most that tolerance
        (:func:`prior_drift`). In a catalogue of more than a few hundred products one product moves the pooled
        median far less than the tolerance, so adds refit no other product.

        The fusion, the score calibration and the weak-match similarity are then refitted on every product's
        stored scores (arrays, no comparison redone; about 0.3 ms a product) once the products added, changed
        or removed since they were fitted (:attr:`calibration_lag`) are more than :data:`CALIBRATION_GROWTH`
        of the catalogue: at every change of a catalogue under a hundred products, once every 1,000 adds at
        100,000. In between, the calibration in force was fitted on all but at most that share of the
        products. Call :meth:`refit_statistics` (``brandguard index refit``) to fit everything under the prior
        pooled now: the index is then the one a build in one go gives.
        """
        if self.calibrator is not None and not is_cold_start(self.calibrator.source):
            return  # calibrated on separate authentic photos: keep it (recalibrate after large changes)
        pooled = self.pooled_prior()
        if self.prior is None or prior_drift(pooled, self.prior) > PRIOR_TOLERANCE:
            self.refit_statistics(pooled)
            return
        for m in self.products:
            if m.calibration_scores is None:  # added or changed since the prior in force was set
                self._fit_statistics(m, self.prior)
                self.calibration_lag += 1
        if self.calibrator is None or self.calibration_lag > CALIBRATION_GROWTH * len(self.products):
            self._fit_cold_start_calibration()

    def refit_statistics(self, prior: AuthenticPrior | None = None) -> None:
        """Fit every product's authentic statistics (and its leave-one-out and cold-start calibration scores)
        under ``prior`` (default: pooled over the products now), make it the prior in force, and refit the
        cold-start calibration when it is in force. Work that grows with the catalogue (about 0.2 s a product
        on one core); :meth:`add` does it only when the pooled prior moved materially (see
        :meth:`refit_default_calibration`). With a calibration from ``calibrate`` in force, calibrate again
        afterwards: the raw scores it was fitted on move with the statistics.

        Example:
            >>> index = bg.ReferenceIndex.load("idx/")   # doctest: +SKIP
            >>> index.refit_statistics(); index.save("idx/")  # doctest: +SKIP
        """
        self.prior = prior if prior is not None else self.pooled_prior()
        fixed = self.prior
        with self._pool() as ex:  # each product's own statistics: side by side on every worker
            for _ in ex.map(lambda m: self._fit_statistics(m, fixed), self.products):
                pass
        if self.calibrator is None or is_cold_start(self.calibrator.source):
            self._fit_cold_start_calibration()

    def pooled_prior(self) -> AuthenticPrior:
        """The cold-start prior pooled over the products now (:func:`pool_prior` of their entries)."""
        return pool_prior(self._prior_entries())

    def _prior_entries(self, leave_out: ProductModel | None = None) -> list[np.ndarray]:
        """Every product's :attr:`ProductModel.prior_entry` but ``leave_out``'s (worked out from the evidence of
        those without one, once: an index saved before entries were kept)."""
        out = []
        for m in self.products:
            if m.prior_entry is None:
                ev, stats = m.evidence, m.stats
                m.prior_entry = _NO_ENTRY if ev is None or stats is None else prior_entry(ev, stats.region)
            if m is not leave_out:
                out.append(m.prior_entry)
        return out

    def _fit_cold_start_calibration(self) -> None:
        """Fusion, score calibration and the weak-match similarity from every product's stored scores:
        :attr:`ProductModel.calibration_scores`, ``loo_scores`` and ``reference_similarity`` (no comparison)."""
        self.calibration_lag = 0
        for m in self.products:
            if m.calibration_scores is None:
                self._fit_statistics(m, self.prior if self.prior is not None else self.pooled_prior())
            if m.reference_similarity is None:
                m.reference_similarity = _reference_similarity(m.global_vecs)
        loo = np.concatenate([m.loo_scores for m in self.products]) if self.products else np.zeros((0, len(CHANNELS)))
        # a one-reference product's own comparisons are optimistic: not calibration material once any product
        # has cross comparisons
        multi = any(m.calibration_cross for m in self.products)
        used = [m for m in self.products if m.calibration_cross or not multi]
        sim = np.concatenate([m.calibration_scores for m in used]) if used else np.zeros((0, len(CHANNELS)))
        sim = np.asarray(sim, np.float64).reshape(-1, len(CHANNELS))
        n_refs = sum(m.calibration_refs for m in used)
        t = CHANNELS.index("text")
        # the references' OCR readings, row for row with ``loo``: the text channel's misread rate
        loo_reads = [r for m in self.products for r in _loo_reads(m)]
        if len(sim) >= 2:
            text_only = np.full_like(loo, np.nan)
            text_only[:, t] = loo[:, t]
            self.fusion = ChannelFusion.fit(np.concatenate([sim, text_only]), [None] * len(sim) + loo_reads)
            raws = self.fusion.fuse(sim)
            source = f"cold-start (simulated listing photos from {n_refs} references)"
        else:
            self.fusion = ChannelFusion.fit(loo, loo_reads)
            raws = self.fusion.fuse(loo, loo_reads) if len(loo) else np.zeros(0)
            source = "references-loo"
        if np.size(raws) >= 2:
            self.calibrator = ScoreCalibrator.fit(raws, source=source)
            sc = self.config.scoring
            self.thresholds.review = 1.0 - sc.review_fpr
            self.thresholds.takedown = 1.0 - sc.takedown_fpr
        # weak matches (see Thresholds): as similar to the product as 95% of its references are to each other
        sims = [s for m in self.products if (s := m.reference_similarity) is not None and len(s)]
        if sims:
            self.thresholds.allow_weak(float(np.quantile(np.concatenate(sims), 0.05)))

    def _fit_statistics(self, m: ProductModel, prior: AuthenticPrior) -> None:
        """A product's statistics under ``prior``, the references' own scores under them, and its cold-start
        calibration scores: its simulated photos, each scored with statistics that left out its own reference
        (cross-fitted), text NaN (:attr:`ProductModel.calibration_scores`)."""
        ev, stats = (m.evidence, m.stats) if m.compared else (None, None)
        if ev is None or stats is None:
            m.calibration_scores, m.calibration_cross, m.calibration_refs = np.zeros((0, len(CHANNELS))), False, 0
            return
        region = stats.region
        m.stats = authentic_stats(ev, region, prior)
        m.loo_scores = self._loo_scores(m)  # the references' own scores under the statistics in force
        cross = len(ev.cross) > 0
        maps, src, valid = (ev.cross, ev.cross_source, ev.cross_valid) if cross else (ev.own, ev.own_source, ev.own_valid)
        scores: list[tuple[float, ...]] = []
        G = valid.shape[1]
        for r in np.unique(src):
            held_out = authentic_stats(ev, region, prior, leave_out=int(r))
            for k in np.flatnonzero(src == r):
                view = AlignedView(np.zeros((0, 0), np.float32), np.zeros((0, 0), bool),
                                   np.zeros((G, G, 3), np.float32), valid[k])
                d_l = maps[k, 2] if np.isfinite(maps[k, 2]).any() and held_out.mu_l is not None else None
                scores.append(compare(view, m.bank, held_out, self.config.compare,
                                      distances=(maps[k, 0], maps[k, 1], d_l)).channels)
        m.calibration_scores = np.asarray(scores, np.float64).reshape(-1, len(CHANNELS))
        m.calibration_cross, m.calibration_refs = cross, len(np.unique(src))

    @property
    def text_reader(self) -> Any:
        """The OCR reader of the wordmark check (None when this index has no text check or the ``ocr``
        extra is missing here, in which case photos are scored without the text channel)."""
        if self.text_enabled and self._text_reader is None:
            from brandguard import text

            if not text.available():
                warnings.warn("this index was built with the wordmark (OCR) check but the ocr extra is not "
                              'installed: scoring without it; pip install "brandguard[ocr]"', stacklevel=2)
                self.text_enabled = False
                return None
            self._text_reader = text.shared_reader()
        return self._text_reader

    def calibrator_for(self, brand: str) -> ScoreCalibrator | None:
        """The brand's own calibration when it had enough authentic photos, else the global one."""
        return self.brand_calibrators.get(brand, self.calibrator)

    # ----------------------------------------------------------------- queries
    def localize(self, kps: Sequence[Keypoints], shapes: Sequence[tuple[int, ...]]) -> list[tuple[Alignment | None, Alignment | None]]:
        """Match photos' keypoints to products and verify geometrically (the first instance of each photo).

        Returns:
            For each photo ``(accepted, best)``: ``accepted`` is the verified alignment (None when no
            product passes ``min_inliers``); ``best`` is the strongest candidate either way (for reporting).
        """
        return [(acc[0] if acc else None, best) for acc, best in self.localize_instances(kps, shapes, 1)]

    def localize_instances(self, kps: Sequence[Keypoints], shapes: Sequence[tuple[int, ...]],
                           max_instances: int | None = None) -> list[tuple[list[Alignment], Alignment | None]]:
        """Every instance of known products in each photo (several units, collage cells).

        The photo's keypoints are searched once (FAISS). The strongest verified instance is found as in
        :meth:`localize`; then the photo keypoints inside its outline are set aside and the rest voted and
        verified again, up to ``max_instances`` (default ``localization.max_instances``), while a product
        still has ``min_inliers`` tentative matches among them: a photo of one unit costs one vote count
        more than a single search. A further instance must be a sane view that does not overlap an earlier
        one (its centre outside their outlines).

        Args:
            kps: keypoints of each photo (working-copy pixels).
            shapes: each photo's working-copy shape.
            max_instances: at most this many instances per photo (>= 1).

        Returns:
            For each photo ``(instances, best)``: the verified alignments, strongest first (empty when no
            product passes ``min_inliers``), and the strongest first candidate either way (for reporting).
        """
        loc = self.config.localization
        max_instances = loc.max_instances if max_instances is None else int(max_instances)
        out: list[tuple[list[Alignment], Alignment | None]] = [([], None) for _ in kps]
        if not self.products or self._local.ntotal == 0:
            return out
        k = min(8, self._local.ntotal)
        sizes = [len(kp) for kp in kps]
        allq = np.concatenate([kp.desc for kp in kps]) if sum(sizes) else np.zeros((0, 128), np.float32)
        if len(allq) == 0:
            return out
        sims, ids = self._local.search(np.ascontiguousarray(allq, dtype=np.float32), k, groups=sizes)
        min_inl = self.thresholds.min_inliers
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

        def photo(qi: int) -> tuple[list[Alignment], Alignment | None]:
            """One photo's instances from its rows of the search (each photo's work is its own)."""
            kp, n = kps[qi], sizes[qi]
            s, idx = sims[starts[qi]:starts[qi] + n], ids[starts[qi]:starts[qi] + n]
            if n < 4:
                return [], None
            valid = idx >= 0
            pid = np.where(valid, self._local_pid[np.maximum(idx, 0)], -1)
            bid = np.where(valid, self._brand_id[np.maximum(pid, 0)], -1)
            d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s))
            b1 = bid[:, 0]
            other = (bid != b1[:, None]) & valid
            has_other = other.any(1)
            d2 = np.where(has_other, d[np.arange(n), np.argmax(other, 1)], d[:, -1] * 1.25)
            passed = valid[:, 0] & (d[:, 0] < loc.ratio * d2)
            good = passed[:, None] & (d < loc.ratio * d2[:, None])  # tentative matches, any of the k neighbours
            best = self._verify(kp, shapes[qi], pid, idx, passed, good, np.ones(n, bool), 4)
            found: list[Alignment] = []
            cand = best
            left = np.ones(n, bool)
            quads: list[np.ndarray] = []
            while cand is not None and cand.inliers >= min_inl:
                quad = canonical_to_image_corners(cand.H, loc.canonical_size)
                if quad is None or any(points_in_quad(quad.mean(0, keepdims=True), q)[0]
                                       or points_in_quad(q.mean(0, keepdims=True), quad)[0] for q in quads):
                    break  # the same instance again, seen through keypoints on its edge
                found.append(cand)
                quads.append(quad)
                left &= ~points_in_quad(kp.xy, quad, margin=2.0)
                if len(found) >= max_instances or left.sum() < min_inl:
                    break
                # a further instance: only strict matches count (no weak-match rescue), so a product needs
                # min_inliers tentative matches among the keypoints left before RANSAC runs at all
                cand = self._verify(kp, shapes[qi], pid, idx, passed & left, good & left[:, None], left, min_inl)
                if cand is not None and not cand.sane:
                    break
            return found, best

        # the verification (RANSAC, deterministic per call) of each photo on runtime.workers threads, in order
        workers = min(max(1, self.config.runtime.workers), len(kps))
        if workers <= 1:
            return [photo(qi) for qi in range(len(kps))]
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(photo, range(len(kps))))

    def refine_alignment(self, a: Alignment, image: np.ndarray, full: np.ndarray) -> Alignment:
        """The alignment ``a`` re-estimated on keypoints of the product's region of the full-resolution photo.

        Keypoints are detected on a copy whose long side is ``localization.query_detect_side``; in a large or
        wide photo a product is then a few dozen pixels and few of its keypoints are found (weak or no
        match, a loose homography). When the full resolution holds the product at least 1.5 times larger
        than that copy did, its region (outline plus 15%) is cut from ``full``, reduced to at most
        ``keypoint_side``, and its keypoints matched to the product's (Lowe ratio, RANSAC). The refined
        alignment is returned when it has more inliers and is sane, else ``a``.

        Args:
            a: an alignment found on the working copy ``image`` (``a.H``: canonical -> ``image`` pixels).
            image: ``(h, w, 3)`` the working copy.
            full: ``(H, W, 3)`` the same photo at full resolution (or ``image`` itself: nothing to refine).

        Returns:
            an :class:`Alignment` whose ``H`` maps canonical pixels to ``image`` pixels.
        """
        loc = self.config.localization
        S = loc.canonical_size
        if full is image or full.shape[:2] == image.shape[:2]:
            return a
        sx, sy = full.shape[1] / image.shape[1], full.shape[0] / image.shape[0]
        up = resize_transform(sx, sy)
        quad = canonical_to_image_corners(up @ a.H, S)
        if quad is None or not np.all(np.isfinite(quad)):
            return a
        lo, hi = quad.min(0), quad.max(0)
        m = 0.15 * (hi - lo)
        x0, y0 = (int(max(0, v)) for v in np.floor(lo - m))
        x1, y1 = int(min(full.shape[1], np.ceil(hi[0] + m[0]))), int(min(full.shape[0], np.ceil(hi[1] + m[1])))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return a
        kp_scale = loc.query_detect_side / max(image.shape[:2])  # query keypoint-image pixels per working pixel
        region_long = max(x1 - x0, y1 - y0)
        if min(region_long, loc.keypoint_side) < 1.5 * kp_scale * region_long / max(sx, sy):
            return a  # the keypoint image already saw the product at (nearly) this detail
        region = np.ascontiguousarray(full[y0:y1, x0:x1])
        geo = self.geometry
        kp = geo.detect(region, loc.keypoint_side, loc.query_keypoints)
        model = self.products[a.product_id]
        canon = Keypoints(model.kp_xy, model.kp_desc.astype(np.float32), np.zeros(len(model.kp_xy), np.float32))
        ia, ib = match_pair(kp, canon)
        H, mask = geo.homography(canon.xy[ib], kp.xy[ia], self._ransac_px(region.shape))
        if H is None or int(mask.sum()) <= a.inliers:
            return a
        shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
        Hw = np.linalg.inv(up) @ shift @ H
        Hw /= Hw[2, 2]
        if not homography_is_sane(Hw, S, image.shape[:2]):
            return a
        # the region's keypoints were detected at min(1, keypoint_side / region_long) of the full resolution
        detail = max(sx, sy) * min(1.0, loc.keypoint_side / region_long)
        return Alignment(a.product_id, int(mask.sum()), Hw, float(mask.mean()), True, support=canon.xy[ib][mask],
                         detail=float(detail))

    def _reference_crop(self, path: str, image: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """A reference's aligned crop for the bank, from its full resolution like a listing photo's
        (``image``: its working copy, which ``H`` maps the canonical frame into): ``(crop, valid, noise)``
        (:func:`~brandguard.localization.crop_canonical` with its sensor noise)."""
        from PIL import Image

        loc = self.config.localization
        full = image
        try:
            with Image.open(path) as im:
                larger = max(im.size) > max(image.shape[:2])
            if larger:
                full = load_image(path, max_side=max(loc.full_side, loc.max_side))
        except (OSError, ValueError, ImageLoadError, Image.DecompressionBombError):
            full = image  # read before; now unreadable or moved: the working copy is what there is
        return crop_canonical(image, full, H, loc.canonical_size, with_noise=True)

    def _verify(self, kp: Keypoints, shape: tuple[int, ...], pid: np.ndarray, idx: np.ndarray, passed: np.ndarray,
                good: np.ndarray, rows_left: np.ndarray, min_matches: int) -> Alignment | None:
        """The strongest geometrically verified candidate among the keypoints ``rows_left`` of one photo.

        ``pid``/``idx``: ``(n, k)`` product and store row of each keypoint's neighbours; ``passed``: ``(n,)``
        first neighbour passes the ratio test (a vote); ``good``: ``(n, k)`` tentative matches;
        ``min_matches``: candidates with fewer tentative matches are not verified."""
        loc = self.config.localization
        S = loc.canonical_size
        min_inl = self.thresholds.min_inliers
        votes = np.bincount(pid[passed & rows_left, 0], minlength=len(self.products))
        order = np.argsort(-votes, kind="stable")[:loc.candidates]
        top = votes[order[0]] if len(order) else 0
        # skip hopeless candidates, those with far fewer votes than the leader, unless their votes alone could
        # still reach the keypoint rule: a leader's votes may be chance matches (heavy sensor noise matches a
        # dotted logo's dots all over a photo) that would otherwise leave the product shown unverified
        far = 0.25 * top
        cands = [int(c) for c in order if votes[c] >= max(4, min(far, self.thresholds.fewest_accepted))]
        best: Alignment | None = None
        geo = self.geometry
        for c in cands:
            if votes[c] < far and best is not None and best.sane and best.inliers >= min_inl:
                break  # a far weaker candidate is verified only where the stronger ones identified nothing
            rows, cols = np.nonzero((pid == c) & good)
            if len(rows) < 4:
                continue
            first = np.unique(rows, return_index=True)[1]
            rows, cols = rows[first], cols[first]
            if len(rows) < min_matches:
                continue
            src = self._local_xy[idx[rows, cols]]
            dst = kp.xy[rows]
            H, mask = geo.homography(src, dst, self._ransac_px(shape))
            if H is None:
                continue
            ninl = int(mask.sum())
            sane = homography_is_sane(H, S, shape[:2])
            if not sane:
                ninl = min(ninl, min_inl - 1)
            cand = Alignment(c, ninl, H / H[2, 2], ninl / max(1, len(rows)), sane, support=src[mask])
            if best is None or cand.inliers > best.inliers:
                best = cand
        return best

    def search_global(self, vectors: np.ndarray, k: int = 5) -> list[list[tuple[int, int, float]]]:
        """Nearest references by global vector: for each query a list of ``(product_id, bank_row, cosine)``."""
        if self._global is None or self._global.ntotal == 0:
            return [[] for _ in range(len(vectors))]
        sims, ids = self._global.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, self._global.ntotal))
        return [[(*self._global_rows[j], float(sv)) for j, sv in zip(row_i, row_s) if j >= 0]
                for row_i, row_s in zip(ids, sims)]

    # ----------------------------------------------------------------- persistence
    def info(self) -> dict[str, Any]:
        """A summary: counts, backbone, thresholds and calibration (what `brandguard index info` prints)."""
        n_refs = sum(len(m.refs) for m in self.products)
        n_aligned = sum(m.compared for m in self.products)
        thin = {k for k, _ in self.thin_products()}
        return {
            "brandguard_version": __version__, "format": INDEX_FORMAT,
            "backbone": self.backbone_info["spec"]["name"], "weights_digest": self.backbone_info["weights_digest"],
            "weights_source": self.backbone_info.get("weights_source"), "checkpoint": self.backbone_info.get("checkpoint"),
            **({"training": self.backbone_info["training"]} if self.backbone_info.get("training") else {}),
            "brands": len({m.brand for m in self.products}), "products": len({m.key for m in self.products}),
            "references": n_refs, "references_compared": n_aligned, "skipped": len(self.skipped),
            "duplicates_skipped": len(self.duplicates),
            "references_root": _saved_root(self), "references_found": self.references_found,
            "thin_products": [f"{k} ({n})" for k, n in self.thin_products()],
            "local_descriptors": int(self._local.ntotal) if self._local is not None else 0,
            "local_index": self._local.kind if self._local is not None else None, "global_dim": int(self._global.d) if self._global is not None else 0,
            # the directory it was loaded from or saved to: segments, their bytes and the dead ones (see save)
            "storage": self.storage_info(),
            "canonical_size": self.config.localization.canonical_size,
            "thresholds": self.thresholds.to_dict(),
            # which calibration is in force: the cold start (simulated listing photos of the references) until
            # `brandguard calibrate` replaces it with real authentic photos
            "calibration_source": self.calibrator.source if self.calibrator else None,
            "calibration": {"source": self.calibrator.source, "n": self.calibrator.n,
                            "per_brand": {b: {"n": c.n, "review_raw": c.raw_at(self.thresholds.review),
                                              "takedown_raw": c.raw_at(self.thresholds.takedown)}
                                          for b, c in sorted(self.brand_calibrators.items())},
                            "global_review_raw": self.calibrator.raw_at(self.thresholds.review),
                            "global_takedown_raw": self.calibrator.raw_at(self.thresholds.takedown)}
            if self.calibrator else None,
            # one row per product, its views summed (``views``: references per view, in view order)
            "per_product": [{"brand": vs[0].brand, "product": vs[0].product, "references": sum(len(m.refs) for m in vs),
                             "compared": sum(m.compared for m in vs), "keypoints": sum(len(m.kp_xy) for m in vs),
                             "thin": key in thin, "views": [len(m.refs) for m in sorted(vs, key=lambda m: m.view)]}
                            for key, vs in self.views().items()],
        }

    def save(self, directory: str | Path) -> None:
        """Write the index as one self-describing directory, atomically (see module docstring).

        Saving again to the directory the index was loaded from (or last saved to) is **incremental**: the
        arrays of products added or changed since go to one new segment (``arrays.<generation>.safetensors``),
        the keypoint descriptors added since to ``keypoints.<generation>.npy``, the small search structures and
        descriptions to a new ``gen-<generation>/`` folder, and the new manifest replaces the old one last
        (every file written under a temporary name, fsynced and renamed first; :func:`storage.update_directory`),
        so a crash mid-save leaves the previous index loadable. The segments of unchanged products are not
        touched; those of removed or replaced products stay (dead bytes) until :meth:`compact`, which a save
        does by itself once the dead bytes would exceed :data:`COMPACT_DEAD_SHARE` of the segment files. Saving
        anywhere else, or to a directory changed by someone else since, writes the whole index (one segment).

        Reference paths are stored relative to the reference folder, which is recorded twice: as an absolute
        path and relative to ``directory``; :meth:`load` finds the references at either place, so an index
        works from any working directory and after the index and its references were moved together.

        Raises:
            DataError: ``directory`` is a file or a folder of other files.
        """
        directory = Path(directory)
        plan = self._increment_plan(directory)
        if plan is None:
            self._write_whole(directory)
        else:
            self._write_increment(directory, plan)

    def compact(self, directory: str | Path | None = None) -> dict[str, int]:
        """Rewrite the saved index as one segment, dropping the bytes of removed or replaced products.

        The keypoint store keeps only the live rows (renumbered; the search structures keep their training, so
        search finds the same neighbours: :meth:`KeypointSearch.compacted`), then the whole index is written
        atomically as :meth:`save` writes a new one.

        Args:
            directory: where to write (default: the directory the index was loaded from or last saved to).

        Returns:
            ``{"bytes_before": ..., "bytes_after": ..., "dead_bytes_dropped": ...}``: segment bytes (arrays and
            keypoint descriptors) before and after, and the dead bytes dropped.

        Raises:
            DataError: no ``directory`` and the index was never loaded or saved.

        Example:
            >>> index = bg.ReferenceIndex.load("idx/")   # doctest: +SKIP
            >>> index.compact()["dead_bytes_dropped"]      # doctest: +SKIP
            0
        """
        state = self._disk
        if directory is None:
            if state is None:
                raise DataError("this index was never saved: pass the directory to write it to")
            directory = state.directory
        before = self.storage_info() if state is not None else None
        self._write_whole(Path(directory))
        after = self.storage_info() or {"bytes": 0}
        return {"bytes_before": int(before["bytes"]) if before else 0, "bytes_after": int(after["bytes"]),
                "dead_bytes_dropped": int(before["dead_bytes"]) if before else 0}

    def storage_info(self) -> dict[str, Any] | None:
        """How the index lies in the directory it was loaded from or last saved to (None: neither).

        Returns:
            ``directory``, ``generation`` (saves since the last whole write), ``array_segments`` and
            ``keypoint_segments`` (files), ``bytes`` (of those segment files) and ``dead_bytes`` (the part no
            product of the index as it is now uses: removed or replaced products, until :meth:`compact`).
        """
        state = self._disk
        if state is None:
            return None
        live, _ = self._live_array_bytes(state)
        kp_rows = state.kp_rows
        kp_live = self._live_keypoint_rows(kp_rows)
        payload = sum(state.payload.values())
        return {"directory": state.directory, "generation": state.generation,
                "array_segments": len(state.segments), "keypoint_segments": len(state.kp_segments),
                "bytes": int(sum(state.segments.values()) + kp_rows * _KP_ROW_BYTES),
                "dead_bytes": int(max(0, payload - live) + max(0, kp_rows - kp_live) * _KP_ROW_BYTES)}

    def _live_array_bytes(self, state: _DiskState) -> tuple[int, set[str]]:
        """Bytes of the saved segments that products of the index as it is now use (each stored product once; a
        product changed since is not counted), and the segments that hold them."""
        seen: dict[tuple[str, str], int] = {}
        for m in self.products:
            d = m.__dict__.get("_disk")
            if d is not None and d.segment in state.segments and _clean_in(m, state.uid):
                seen[(d.segment, d.prefix)] = d.nbytes
        return sum(seen.values()), {s for s, _ in seen}

    def _live_keypoint_rows(self, below: int | None = None) -> int:
        """Keypoint store rows of products of the index (only those before row ``below``: saved ones)."""
        return sum(len(m.kp_xy) for m in self.products if 0 <= m.kp_start and (below is None or m.kp_start < below))

    def _increment_plan(self, directory: Path) -> list[ProductModel] | None:
        """The products to write in an incremental save to ``directory``, or None when the whole index must be
        written (another directory, the directory changed since, the keypoint store rebuilt, or too many dead
        bytes: auto-compaction)."""
        state = self._disk
        if state is None or os.path.realpath(directory) != state.directory or self._local is None \
                or self._local.store is not state.kp_store or len(self._local.store) < state.kp_rows:
            return None
        try:
            on_disk = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (on_disk.get("storage") or {}).get("save_id") != state.save_id:
            return None  # written by someone else since: never append to what we did not read
        dirty = [m for m in self.products if not _clean_in(m, state.uid)]
        # dead bytes after this save: the payload of the segments kept (those holding unchanged products) and of
        # the new one, less what is live
        new_bytes = sum(_tensor_bytes(_product_tensors(m, "")) for m in dirty)
        live, used = self._live_array_bytes(state)
        payload = sum(n for s, n in state.payload.items() if s in used) + new_bytes
        live += new_bytes
        kp_total = len(self._local.store)
        dead = max(0, payload - live) + max(0, kp_total - self._live_keypoint_rows()) * _KP_ROW_BYTES
        if dead > COMPACT_DEAD_SHARE * (payload + kp_total * _KP_ROW_BYTES):
            return None
        return dirty

    def _searches(self) -> tuple[Any, Any]:
        """``(keypoint search, global search)`` of a built index, what every save writes."""
        if self._local is None or self._global is None:
            raise BrandguardError("this index has no search structures (no product was built into it): build it "
                                  "with brandguard index build, or add products, before saving")
        return self._local, self._global

    def _small_files(self, directory: Path, products_meta: list[dict[str, Any]]) -> dict[str, Any]:
        """The search structures and descriptions, rewritten at every save (everything but the segments)."""
        import faiss

        local, _ = self._searches()
        root = _saved_root(self)
        keypoint_files = {k: v for k, v in local.to_files().items() if k != "keypoints.npy"}
        return {
            "products.json": json.dumps({"products": products_meta, "skipped": self.skipped,
                                         "duplicates": self.duplicates,
                                         "references_root": None if root is None else {
                                             "absolute": root,
                                             "from_index": os.path.relpath(root, os.path.abspath(directory))},
                                         }).encode(),
            **keypoint_files,  # keypoints.faiss (codes; keypoints.words.safetensors for words) + keypoints.json
            "global.faiss": faiss.serialize_index(self._global).tobytes(),
            "config.yaml": _yaml(self.config.to_dict()),
        }

    def _manifest(self, storage: dict[str, Any]) -> dict[str, Any]:
        _, global_search = self._searches()
        return {
            "format": INDEX_FORMAT, "brandguard_version": __version__, "kind": "brandguard-reference-index",
            "backbone": self.backbone_info,
            "dimensions": {"global": int(global_search.d), "keypoint": 128,
                           "canonical_size": self.config.localization.canonical_size,
                           "cells": self.config.localization.canonical_size // self.config.compare.cell},
            "thresholds": self.thresholds.to_dict(),
            "calibration": self.calibrator.to_dict() if self.calibrator else None,
            "brand_calibration": {b: c.to_dict() for b, c in sorted(self.brand_calibrators.items())},
            "fusion": self.fusion.to_dict(),
            # the prior every product's statistics are fitted under (refit_statistics)
            "prior": None if self.prior is None else {"level": self.prior.level.tolist(),
                                                      "ratio": self.prior.ratio.tolist(),
                                                      "products": int(self.prior.products)},
            "calibration_lag": self.calibration_lag,
            "text_check": self.text_enabled,
            "counts": {k: v for k, v in self.info().items() if k in ("brands", "products", "references",
                                                                      "references_compared", "local_descriptors")},
            # where the products' arrays and keypoints lie (see save): segments in order, this save's folder
            "storage": storage,
        }

    def _write_whole(self, directory: Path) -> None:
        """Write every product into one segment (``arrays.safetensors``, ``keypoints.npy`` with the live keypoint
        rows only) and the small files at the top of a new directory that replaces ``directory`` atomically
        (:func:`storage.write_directory`)."""
        from brandguard.shortlist import RowStore

        local = search = self._searches()[0]
        starts = [m.kp_start for m in self.products]
        if len(local.store) > self._live_keypoint_rows():  # rows of removed products: keep the live ones
            spans = [(m.kp_start, len(m.kp_xy)) for m in self.products if m.kp_start >= 0]
            search = local.compacted(spans)
            offsets = iter(np.cumsum([0] + [n for _, n in spans]).tolist())
            starts = [next(offsets) if m.kp_start >= 0 else -1 for m in self.products]
        root = _saved_root(self)
        products = list(self.products)
        specs, sizes = _segment_specs(products)
        products_meta = [{**_product_meta(m, root, "arrays.safetensors", f"p{i}.", sizes[i]), "kp_start": starts[i]}
                         for i, m in enumerate(products)]
        uid, save_id = os.urandom(8).hex(), os.urandom(8).hex()
        storage = {"uid": uid, "save_id": save_id, "generation": 0, "small": "",
                   "array_segments": {"arrays.safetensors": sum(sizes)},
                   "keypoint_segments": [["keypoints.npy", len(search.store)]]}
        local, self._local = self._local, search  # the small files describe the search written
        try:
            # streamed one product at a time: a catalogue's arrays are never all in memory at once
            files = {"arrays.safetensors": lambda fh: write_safetensors(fh, specs, _segment_arrays(products)),
                     **self._small_files(directory, products_meta), "keypoints.npy": search.store.write_npy}
        finally:
            self._local = local
        write_directory(directory, files, self._manifest(storage))
        # committed. From now on the arrays are read from this directory (the old files stay readable through
        # the memory maps still open on them until those are dropped)
        if search is not local or isinstance(local.store.base, np.memmap):
            if len(search.store):
                search.store = RowStore(np.load(directory / "keypoints.npy", mmap_mode="r", allow_pickle=False))
            if search is not local:
                for m, start in zip(self.products, starts):
                    m.kp_start = start
                    if start >= 0:
                        m.kp_desc = search.store[start:start + len(m.kp_xy)]
                self._local = search
                self._known_sizes = {m.kp_start: len(m.kp_xy) for m in self.products if m.kp_start >= 0}
                self._known_starts = set(self._known_sizes)
                self._refresh_tables()
        store = None
        for i, m in enumerate(self.products):
            if "_store" in m.__dict__ and not any(f in m.__dict__ for f in _LAZY_FIELDS):
                store = store or _segment_store([directory / "arrays.safetensors"],
                                                self.config.localization.canonical_size,
                                                self.config.runtime.cached_products)
                m.__dict__.update(_store=store, _prefix=f"0:p{i}.")
        checksums = _listed_checksums(directory)
        size = (directory / "arrays.safetensors").stat().st_size
        self._disk = _DiskState(os.path.realpath(directory), uid, save_id, 0, {"arrays.safetensors": size},
                                {"arrays.safetensors": sum(sizes)}, [("keypoints.npy", len(search.store))],
                                search.store, checksums)
        for i, (m, n) in enumerate(zip(self.products, sizes)):
            m.__dict__["_disk"] = _ProductDisk(uid, "arrays.safetensors", f"p{i}.", n, _held(m))

    def _write_increment(self, directory: Path, dirty: list[ProductModel]) -> None:
        """Write only ``dirty`` products' arrays (one new segment), the keypoint rows added since the last save
        (one new keypoint segment), the small files (a new folder) and the new manifest (see :meth:`save`)."""
        state = self._disk
        local, _ = self._searches()
        if state is None:
            raise BrandguardError("this index was not loaded from or saved to a directory: save it whole first")
        g = state.generation + 1
        seg = f"arrays.{g}.safetensors"
        specs, sizes = _segment_specs(dirty)
        written = {id(m): (f"p{j}.", sizes[j]) for j, m in enumerate(dirty)}  # id(model) -> (prefix, bytes)
        root = _saved_root(self)
        products_meta = []
        for m in self.products:
            if id(m) in written:
                products_meta.append(_product_meta(m, root, seg, *written[id(m)]))
            else:
                d = m.__dict__["_disk"]
                products_meta.append(_product_meta(m, root, d.segment, d.prefix, d.nbytes))
        used = {pm["segment"] for pm in products_meta}
        new_files: dict[str, Any] = {}
        segments = {s: n for s, n in state.segments.items() if s in used}  # a segment no product uses is dropped
        payload = {s: n for s, n in state.payload.items() if s in used}
        if dirty:
            new_files[seg] = lambda fh: write_safetensors(fh, specs, _segment_arrays(dirty))
            payload[seg] = sum(sizes)
        kp_segments = list(state.kp_segments)
        if len(local.store) > state.kp_rows:
            kseg = f"keypoints.{g}.npy"
            start = state.kp_rows
            new_files[kseg] = lambda fh: local.store.write_npy(fh, start=start)
            kp_segments.append((kseg, len(local.store) - start))
        small = f"gen-{g}"
        new_files.update({f"{small}/{k}": v for k, v in self._small_files(directory, products_meta).items()})
        save_id = os.urandom(8).hex()
        storage = {"uid": state.uid, "save_id": save_id, "generation": g, "small": small,
                   "array_segments": payload, "keypoint_segments": [[f, n] for f, n in kp_segments]}
        kept = {f: c for f, c in state.checksums.items() if f in segments or f in {k for k, _ in kp_segments}}
        checksums = update_directory(directory, new_files, kept, self._manifest(storage))
        # committed: record where everything lies now
        if dirty:
            segments[seg] = (directory / seg).stat().st_size
        self._disk = _DiskState(state.directory, state.uid, save_id, g, segments, payload, kp_segments,
                                local.store, {f: c for f, c in checksums.items() if not f.startswith(small + "/")})
        for m in dirty:
            prefix, n = written[id(m)]
            m.__dict__["_disk"] = _ProductDisk(state.uid, seg, prefix, n, _held(m))

    @classmethod
    def load(cls, directory: str | Path) -> ReferenceIndex:
        """Load and verify an index directory.

        Warns when the reference folder is at neither recorded place (see :meth:`save`): verdicts do not need
        it, reports show no reference photos until :meth:`relocate_references` is called.

        Raises:
            IndexCorruptError: missing or corrupt files.
            IndexCompatibilityError: written by an incompatible brandguard version (rebuild it).
        """
        import faiss
        from safetensors import SafetensorError

        directory = Path(directory)
        manifest = verify_directory(directory)
        if manifest.get("kind") != "brandguard-reference-index":
            raise IndexCorruptError(f"{directory} is not a brandguard reference index")
        fmt = manifest.get("format")
        if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > INDEX_FORMAT:
            raise IndexCompatibilityError(
                f"index {directory} has format {fmt}, written by a newer brandguard "
                f"({manifest.get('brandguard_version')}) than this one ({__version__}, which reads format "
                f"{' or '.join(map(str, READABLE_FORMATS))}); upgrade brandguard (pip install -U brandguard) to read "
                "it, or rebuild it with this version's `brandguard index build`")
        if fmt not in READABLE_FORMATS:
            raise IndexCompatibilityError(
                f"index {directory} has format {fmt} (written by brandguard {manifest.get('brandguard_version')}) "
                f"but this brandguard ({__version__}) reads format {' or '.join(map(str, READABLE_FORMATS))}; rebuild it with "
                "`brandguard index build`")
        # where the arrays lie (see save): segments in order and this save's folder of small files; an index
        # saved before segments (format 3, 4) is one segment with the small files at the top
        layout = manifest.get("storage") or {}
        small = str(layout.get("small", ""))
        payload = {str(k): v for k, v in (layout.get("array_segments") or {"arrays.safetensors": None}).items()}
        kp_segments = [(str(f), n) for f, n in (layout.get("keypoint_segments") or [["keypoints.npy", None]])]
        names = [*payload, *(f for f, _ in kp_segments)] + ([small] if small else [])
        if any(not n or "/" in n or "\\" in n or n.startswith(".") for n in names):
            raise IndexCorruptError(f"index {directory} names files outside it in {MANIFEST}; rebuild it with "
                                    "`brandguard index build`")
        seg_index = {f: k for k, f in enumerate(payload)}
        try:
            import yaml

            config = Config.from_dict(_saved_config(yaml.safe_load((directory / small / "config.yaml").read_text(
                encoding="utf-8"))))
            meta = json.loads((directory / small / "products.json").read_text(encoding="utf-8"))
            S = config.localization.canonical_size
            # comparison banks, statistics, evidence and global vectors stay in the memory-mapped segments and
            # are read per product when a photo matches it (bounded cache: runtime.cached_products)
            store = _segment_store([directory / f for f in payload], S, config.runtime.cached_products)
            tensors = TensorView(store)
            # descriptors memory-mapped (one file per segment), codes in memory
            local = KeypointSearch.from_files(directory / small, segments=[directory / f for f, _ in kp_segments])
            legacy_bytes = _segment_product_bytes(directory / next(iter(payload))) \
                if any("nbytes" not in pm for pm in meta["products"]) else {}
        except (OSError, ValueError, DataError, SafetensorError) as exc:
            raise IndexCorruptError(f"index {directory} could not be read ({exc}); rebuild it with "
                                    "`brandguard index build`") from exc
        root_found, root_meta = _find_references_root(directory, meta.get("references_root"))
        base = root_found or (root_meta or {}).get("absolute")
        products = []
        uid = str(layout.get("uid") or os.urandom(8).hex())
        for i, pm in enumerate(meta["products"]):
            segment, prefix = str(pm.get("segment", next(iter(payload)))), str(pm.get("prefix", f"p{i}."))
            if segment not in seg_index:
                raise IndexCorruptError(f"product {pm.get('brand')}/{pm.get('product')} of index {directory} lies in "
                                        f"segment {segment}, which {MANIFEST} does not list; rebuild it with "
                                        "`brandguard index build`")
            p = f"{seg_index[segment]}:{prefix}"
            if base:
                for r in pm["refs"]:
                    r["path"] = os.path.normpath(os.path.join(base, r["path"]))
            kp_xy = tensors[p + "kp_xy"]
            m = ProductModel.__new__(ProductModel)
            m.__dict__.update(
                brand=pm["brand"], product=pm["product"], refs=[RefRecord(**r) for r in pm["refs"]],
                anchor=pm["anchor"], bank_refs=pm["bank_refs"],
                kp_desc=_kp_rows(local, pm.get("kp_start", -1), len(kp_xy)), kp_xy=kp_xy,
                loo_scores=tensors[p + "loo_scores"], ref_text=pm.get("ref_text", []),
                text_lines=pm.get("text_lines", []), kp_start=int(pm.get("kp_start", -1)), view=int(pm.get("view", 0)),
                prior_entry=tensors.get(p + "prior_entry"), calibration_scores=tensors.get(p + "calibration_scores"),
                calibration_cross=bool(pm.get("calibration_cross", False)),
                calibration_refs=int(pm.get("calibration_refs", 0)),
                reference_similarity=tensors.get(p + "reference_similarity"), _store=store, _prefix=p)
            nbytes = int(pm["nbytes"]) if "nbytes" in pm else legacy_bytes.get(prefix, 0)
            m.__dict__["_disk"] = _ProductDisk(uid, segment, prefix, nbytes, _held(m))
            products.append(m)
        cal = ScoreCalibrator.from_dict(manifest["calibration"]) if manifest.get("calibration") else None
        index = cls.__new__(cls)
        index.config = config
        index.backbone_info = manifest["backbone"]
        index.products = products
        index.calibrator = cal
        index.brand_calibrators = {b: ScoreCalibrator.from_dict(d) for b, d in manifest.get("brand_calibration", {}).items()}
        index.thresholds = Thresholds.from_dict(manifest["thresholds"])
        index.skipped = meta.get("skipped", [])
        index.duplicates = meta.get("duplicates", [])
        index.source = str(directory.resolve())
        index.references_root = root_found or (root_meta or {}).get("absolute")
        index.references_found = root_meta is None or root_found is not None
        index.fusion = ChannelFusion.from_dict(manifest["fusion"])
        index.calibration_lag = int(manifest.get("calibration_lag", 0))
        prior = manifest.get("prior")  # None (saved before it was kept): every product is refitted at the next add
        index.prior = None if not prior else AuthenticPrior(np.asarray(prior["level"], np.float32),
                                                            np.asarray(prior["ratio"], np.float32), int(prior["products"]))
        index.text_enabled = bool(manifest.get("text_check", False))
        index._text_reader = None
        index._embedder = None
        index._geometry = None
        index._local = local
        index._known_sizes = {m.kp_start: len(m.kp_xy) for m in products if m.kp_start >= 0}
        index._known_starts = set(index._known_sizes)
        index._refresh_tables()
        index._global = faiss.deserialize_index(np.frombuffer((directory / small / "global.faiss").read_bytes(),
                                                              np.uint8))
        if any(n is None for n in payload.values()):  # one segment saved before sizes were recorded: all of it live
            payload = {f: sum(m.__dict__["_disk"].nbytes for m in products) for f in payload}
        index._disk = _DiskState(os.path.realpath(directory), uid, layout.get("save_id"), int(layout.get("generation", 0)),
                                 {f: (directory / f).stat().st_size for f in payload}, payload,
                                 [(f, len(local.store) if n is None else int(n)) for f, n in kp_segments], local.store,
                                 dict(manifest.get("files", {})))
        if local.outgrown():  # saved by a version that never rebuilt the search of a catalogue grown into a larger
            t0 = time.perf_counter()  # kind: rebuilt here (in memory; the next save writes it)
            kind = local.kind
            index._rebuild_search(full=True)
            warnings.warn(f"index {directory}: its keypoint search ({kind}, {local.ntotal:,} keypoints) was built for a "
                          f"smaller catalogue; rebuilt as {index._local.kind} in memory in "
                          f"{time.perf_counter() - t0:.1f} s. Run `brandguard index compact {directory}` once to "
                          "keep it", stacklevel=2)
        return index


def is_cold_start(source: str) -> bool:
    """Whether a calibration source is the index's own (built from its references), not ``calibrate``'s."""
    return source == "references-loo" or source.startswith("cold-start")


def _resolve_text_check(setting: str) -> bool:
    from brandguard import text

    if setting == "auto":
        return text.available()
    if setting == "on":
        if not text.available():
            from brandguard.errors import MissingExtraError

            raise MissingExtraError('compare.text_check is on but the ocr extra is missing: pip install "brandguard[ocr]" '
                                    "(or set compare.text_check: off)")
        return True
    if setting == "off":
        return False
    from brandguard.errors import ConfigError

    raise ConfigError(f"compare.text_check must be auto, on or off, got {setting!r}")


def _checkpoint_provenance(checkpoint: str | None) -> dict[str, Any]:
    """What a fine-tuned checkpoint's ``config.json`` says of its training (config and data digests)."""
    if not checkpoint:
        return {}
    from brandguard.backbones import checkpoint_metadata

    meta = checkpoint_metadata(checkpoint)
    keys = ("training_config_digest", "data_digest", "epoch", "format")
    return {"training": {k: meta[k] for k in keys if k in meta}} if meta else {}


def _common_root(products: Sequence[ProductModel]) -> str | None:
    """The deepest folder holding every (absolute) reference path, or None (no references, relative paths)."""
    dirs = {os.path.dirname(r.path) for m in products for r in m.refs}
    if not dirs or not all(os.path.isabs(d) for d in dirs):
        return None
    try:
        return os.path.commonpath(sorted(dirs))
    except ValueError:  # different drives
        return None


def _saved_root(index: ReferenceIndex) -> str | None:
    """The folder a saved index records its references under: the reference folder it was built from (or
    relocated to) when it holds every reference, else the deepest folder that does."""
    root = index.references_root
    paths = [r.path for m in index.products for r in m.refs]
    if root and all(os.path.isabs(p) and not os.path.relpath(p, root).startswith("..") for p in paths):
        return root
    return _common_root(index.products)


def _relative_to(path: str, root: str | None) -> str:
    return path if root is None or not os.path.isabs(path) else os.path.relpath(path, root)


def _find_references_root(directory: Path, meta: dict[str, str] | None) -> tuple[str | None, dict[str, str] | None]:
    """Where the references of a saved index are now: the folder recorded at save, else the same folder
    relative to the index (the two were moved together); warns when neither exists.

    Returns:
        ``(folder found or None, the record)``; ``(None, None)`` for an index saved without a record.
    """
    if not meta:
        return None, None
    candidates = [meta.get("absolute"), os.path.normpath(os.path.join(os.path.abspath(directory), meta["from_index"]))
                  if meta.get("from_index") else None]
    for c in candidates:
        if c and os.path.isdir(c):
            return c, meta
    warnings.warn(f"the reference photos of index {directory} are not at {meta.get('absolute')} (where it was built) "
                  f"nor at {candidates[1]} (beside the index): verdicts are unaffected, but reports show no "
                  "reference photos and `calibrate` recognises references by content only; put the folder back "
                  "or call index.relocate_references(new_folder)", stacklevel=3)
    return None, meta


def pixel_digest(image: np.ndarray) -> str:
    """``"pixels:<sha256>"`` of a decoded image (its shape and its bytes): the same for two files that decode
    to the same pixels (a copy, a re-saved PNG), whatever their names.

    Args:
        image: ``(H, W, 3)`` uint8 RGB as :func:`brandguard.images.load_image` returns it (with the index's
            ``localization.max_side``).
    """
    arr = np.ascontiguousarray(image)
    return "pixels:" + sha256_bytes(f"{arr.shape}{arr.dtype}".encode() + arr.tobytes())[7:]


#: the pooled prior may move this much (relative, its largest entry) before every product is refitted under it
#: (see :meth:`ReferenceIndex.refit_default_calibration`)
PRIOR_TOLERANCE = 0.02
#: the cold-start calibration is refitted once the products added, changed or removed since its fit are more
#: than this share of the catalogue (see :meth:`ReferenceIndex.refit_default_calibration`)
CALIBRATION_GROWTH = 0.01


#: one product's share of the pooled cold-start prior, and the prior pooled from those shares
prior_entry = AuthenticPrior.entry
pool_prior = AuthenticPrior.from_entries


def prior_drift(new: AuthenticPrior, old: AuthenticPrior) -> float:
    """How far the pooled prior moved: the largest relative change of its level and ratio entries (0..inf).

    A product's statistics are sums and maxima of terms each proportional to one prior entry, with weights
    that do not depend on the prior (:func:`~brandguard.mismatch.authentic_stats`), so statistics fitted under
    ``old`` differ from those under ``new`` by at most this share (before the floor of 1e-3).
    """
    a = np.concatenate([old.level.ravel(), old.ratio.ravel()]).astype(np.float64)
    b = np.concatenate([new.level.ravel(), new.ratio.ravel()]).astype(np.float64)
    return float(np.max(np.abs(b - a) / np.maximum(np.abs(a), 1e-12))) if a.size else 0.0


def _grown(a: np.ndarray, n: int, fill: float) -> np.ndarray:
    """``a`` with room for at least ``n`` rows (doubling, new rows ``fill``); ``a`` itself when it has it."""
    if len(a) >= n:
        return a
    out = np.full((max(n, 2 * len(a)), *a.shape[1:]), fill, a.dtype)
    out[:len(a)] = a
    return out


def _loo_reads(m: ProductModel) -> list[Any]:
    """The product's references' OCR readings, row for row with its ``loo_scores`` (None: not read); kept on
    the model until its ``loo_scores`` change, so refitting the calibration does not read every product again."""
    cached = m.__dict__.get("_loo_reads")
    if cached is not None and cached[0] is m.loo_scores:
        return cached[1]
    from brandguard.text import reference_reads

    t = CHANNELS.index("text")
    reads = reference_reads(m.ref_text, m.text_lines, m.loo_scores[:, t]) \
        if m.text_lines and len(m.ref_text) == len(m.loo_scores) else [None] * len(m.loo_scores)
    m.__dict__["_loo_reads"] = (m.loo_scores, reads)
    return reads


def _reference_similarity(vecs: np.ndarray) -> np.ndarray:
    """``(n,)`` cosine of each global vector to the closest other one (empty for fewer than two)."""
    if len(vecs) < 2:
        return np.zeros(0, np.float32)
    gram = vecs @ vecs.T
    np.fill_diagonal(gram, -np.inf)
    return gram.max(1)


_EVIDENCE = ("cross", "cross_source", "cross_valid", "own", "own_source", "own_valid", "own_level")


def _evidence_tensors(ev: AuthenticEvidence, p: str) -> dict[str, np.ndarray]:
    """A product's simulated-listing evidence as named arrays (distance maps in float16, masks packed)."""
    out = {}
    for name in _EVIDENCE:
        a = getattr(ev, name)
        if name.endswith("_valid"):
            a = np.packbits(a, axis=-1)
        elif a.dtype.kind == "f" and name != "own_level":
            a = a.astype(np.float16)
        out[f"{p}ev_{name}"] = np.ascontiguousarray(a)
    return out


def _load_evidence(tensors: dict[str, np.ndarray], p: str) -> AuthenticEvidence | None:
    """The evidence saved by :func:`_evidence_tensors`, or None (an index built without it)."""
    if f"{p}ev_cross" not in tensors:
        return None
    fields_ = {}
    for name in _EVIDENCE:
        a = tensors[f"{p}ev_{name}"]
        if name.endswith("_valid"):
            G = tensors[f"{p}ev_{name.replace('_valid', '')}"].shape[-1]
            a = np.unpackbits(a, axis=-1, count=G).astype(bool)
        elif a.dtype == np.float16:
            a = a.astype(np.float32)
        fields_[name] = a
    return AuthenticEvidence(**fields_)


def _heavy_fields(tensors: Any, p: str, size: int) -> dict[str, Any]:
    """The attributes of product ``p`` (tensor prefix, e.g. ``"p3."``) that a loaded index reads on demand:
    comparison bank, authentic statistics (None when it has none), global vectors and evidence."""
    stats = None
    if p + "mu_s" in tensors:
        stats = NormalStats(tensors[p + "mu_s"], tensors[p + "sigma_s"], tensors[p + "mu_c"],
                            tensors[p + "sigma_c"], tensors[p + "region"].astype(bool),
                            tensors.get(p + "mu_l"), tensors.get(p + "sigma_l"))
    return {"bank": _load_bank(tensors, p, size), "stats": stats, "global_vecs": tensors[p + "global"],
            "evidence": _load_evidence(tensors, p)}


def _kp_rows(local: KeypointSearch, start: int, n: int) -> np.ndarray:
    """A product's ``(n, 128)`` float16 keypoint descriptors: a view of the (memory-mapped) search store."""
    if start < 0 or n == 0:
        return np.zeros((0, 128), np.float16)
    if start + n > len(local):
        raise IndexCorruptError(f"keypoint rows {start}..{start + n} lie outside the keypoint store ({len(local)} "
                                "rows); rebuild the index with `brandguard index build`")
    return local.store[start:start + n]


def _empty_bank() -> ProductBank:
    return ProductBank(np.zeros((0, 1, 1), np.float16), np.zeros((0, 1, 1), bool), np.zeros((0, 1, 1, 3), np.float32),
                       np.zeros((0, 1, 1), bool))


def _load_bank(tensors: dict[str, np.ndarray], p: str, size: int) -> ProductBank:
    structure = tensors[p + "bank_structure"]
    valid = np.unpackbits(tensors[p + "bank_valid"], axis=-1, count=structure.shape[-1]).astype(bool) \
        if structure.ndim == 3 and len(structure) else np.zeros(structure.shape, bool)
    return ProductBank(structure, valid, tensors[p + "bank_colors"], tensors[p + "bank_cell_valid"].astype(bool),
                       tensors.get(p + "bank_feats"), tensors.get(p + "bank_occlusion"), tensors.get(p + "bank_noise"))


def _yaml(data: dict[str, Any]) -> bytes:
    import yaml

    buf = io.StringIO()
    yaml.safe_dump(data, buf, sort_keys=False)
    return buf.getvalue().encode()


# ----------------------------------------------------------------- segments (see ReferenceIndex.save)
#: a save compacts (writes the whole index as one segment) instead of adding a segment once the bytes no product
#: uses any more (removed or replaced products' arrays and keypoint rows) would exceed this share of the segment
#: files: the directory then never holds more than about twice the live bytes
COMPACT_DEAD_SHARE = 0.5
#: bytes of one stored keypoint descriptor (128 float16)
_KP_ROW_BYTES = 256
#: the arrays a product's segment holds (a product whose values of these are those written is not written again)
_ARRAY_FIELDS = ("kp_xy", "global_vecs", "bank", "stats", "evidence", "loo_scores", "prior_entry",
                 "calibration_scores", "reference_similarity")
#: those a loaded index reads on demand (brandguard.arraystore.LazyField)
_LAZY_FIELDS = ("bank", "stats", "global_vecs", "evidence")
_UNREAD = object()  # a lazily read field not read into the model (still the one on disk)


@dataclass
class _ProductDisk:
    """Where a product's arrays lie in a saved index, and the values they were written from."""

    uid: str  #: the directory lineage (:class:`_DiskState`)
    segment: str  #: the safetensors file
    prefix: str  #: its tensors' prefix there (``"p12."``)
    nbytes: int  #: bytes of its tensors
    held: dict[str, Any]  #: the model's value of each of :data:`_ARRAY_FIELDS` when written or loaded


@dataclass
class _DiskState:
    """What an index knows of the directory it was loaded from or last saved to (see ``ReferenceIndex.save``)."""

    directory: str  #: real path
    uid: str  #: made by each whole write, kept by incremental saves
    save_id: str | None  #: of the manifest written or read last (the directory must still hold it to be appended to)
    generation: int  #: saves since the last whole write
    segments: dict[str, int]  #: array segment file -> its bytes
    payload: dict[str, int]  #: array segment file -> bytes of the products written into it
    kp_segments: list[tuple[str, int]]  #: keypoint store segment files and their rows, in row order
    kp_store: Any  #: the keypoint store whose first rows those segments hold
    checksums: dict[str, str]  #: recorded checksums of the segment files

    @property
    def kp_rows(self) -> int:
        return sum(n for _, n in self.kp_segments)


def _saved_config(data: Any) -> Any:
    """A saved index's configuration as its statistics were fitted: settings added since take the value that
    reproduces what the index was built with, not today's default (``compare.white_balance``: ``frame``)."""
    if isinstance(data, dict) and isinstance(data.get("compare"), dict):
        data["compare"].setdefault("white_balance", "frame")
    return data


def _held(m: ProductModel) -> dict[str, Any]:
    return {f: m.__dict__.get(f, _UNREAD) for f in _ARRAY_FIELDS}


def _clean_in(m: ProductModel, uid: str) -> bool:
    """Whether ``m``'s arrays are stored, unchanged, in the directory of lineage ``uid`` (every field is still
    the object written or loaded: the index replaces arrays, it never edits them in place)."""
    d = m.__dict__.get("_disk")
    return d is not None and d.uid == uid and all(m.__dict__.get(f, _UNREAD) is v for f, v in d.held.items())


def _tensor_bytes(tensors: dict[str, np.ndarray]) -> int:
    return int(sum(t.nbytes for t in tensors.values()))


def _product_tensors(m: ProductModel, p: str) -> dict[str, np.ndarray]:
    """A product's arrays as named tensors (prefix ``p``): what its segment holds."""
    tensors: dict[str, np.ndarray] = {}
    tensors[p + "kp_xy"] = np.ascontiguousarray(m.kp_xy, np.float32)
    tensors[p + "global"] = np.ascontiguousarray(m.global_vecs, np.float32)
    tensors[p + "bank_structure"] = np.ascontiguousarray(m.bank.structure, np.float16)
    tensors[p + "bank_valid"] = np.ascontiguousarray(np.packbits(m.bank.valid, axis=-1))
    tensors[p + "bank_colors"] = np.ascontiguousarray(m.bank.colors, np.float32)
    tensors[p + "bank_cell_valid"] = np.ascontiguousarray(m.bank.cell_valid, np.uint8)
    if m.bank.noise is not None:
        tensors[p + "bank_noise"] = np.ascontiguousarray(m.bank.noise, np.float32)
    tensors[p + "loo_scores"] = np.ascontiguousarray(m.loo_scores, np.float64)
    # what refitting the cold start needs of every product, kept small and read at load (see
    # refit_default_calibration): adding a product then reads no other product's evidence
    for name, dtype in (("prior_entry", np.float32), ("calibration_scores", np.float64),
                        ("reference_similarity", np.float32)):
        if getattr(m, name) is not None:
            tensors[p + name] = np.ascontiguousarray(np.asarray(getattr(m, name), dtype))
    if m.evidence is not None:
        tensors.update(_evidence_tensors(m.evidence, p))
    if m.bank.feats is not None and m.bank.occlusion is not None:
        tensors[p + "bank_feats"] = np.ascontiguousarray(m.bank.feats, np.float16)
        tensors[p + "bank_occlusion"] = np.ascontiguousarray(m.bank.occlusion, np.float16)
    if m.stats is not None:
        for name in ("mu_s", "sigma_s", "mu_c", "sigma_c", "mu_l", "sigma_l"):
            if getattr(m.stats, name) is not None:
                tensors[p + name] = np.ascontiguousarray(getattr(m.stats, name), np.float32)
        tensors[p + "region"] = np.ascontiguousarray(m.stats.region, np.uint8)
    return tensors


def _segment_specs(products: Sequence[ProductModel]) -> tuple[list[tuple[str, np.dtype, tuple[int, ...]]], list[int]]:
    """Name, dtype and shape of every tensor of a segment holding ``products`` (product ``j`` under prefix
    ``p<j>.``), and each product's bytes; each product's arrays are made and dropped in turn."""
    specs: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    sizes = []
    for j, m in enumerate(products):
        t = _product_tensors(m, f"p{j}.")
        specs.extend((k, v.dtype, v.shape) for k, v in t.items())
        sizes.append(_tensor_bytes(t))
    return specs, sizes


def _segment_arrays(products: Sequence[ProductModel]) -> Iterator[np.ndarray]:
    """The tensors of :func:`_segment_specs`, in its order, one product's at a time."""
    for j, m in enumerate(products):
        yield from _product_tensors(m, f"p{j}.").values()


def _product_meta(m: ProductModel, root: str | None, segment: str, prefix: str, nbytes: int) -> dict[str, Any]:
    """A product's entry of ``products.json``: its description and where its arrays lie."""
    return {"brand": m.brand, "product": m.product, "anchor": m.anchor,
            "bank_refs": m.bank_refs, "has_stats": _has_stats(m),
            "kp_start": m.kp_start, "view": m.view,
            "calibration_cross": m.calibration_cross, "calibration_refs": m.calibration_refs,
            "ref_text": m.ref_text, "text_lines": m.text_lines,
            "refs": [{**r.__dict__, "path": _relative_to(r.path, root)} for r in m.refs],
            "segment": segment, "prefix": prefix, "nbytes": nbytes}


def _segment_store(paths: list[Path], size: int, cached_products: int) -> ArrayStore:
    """The array segments of a saved index, each product's lazily read fields built by :func:`_heavy_fields`."""
    holder: list[ArrayStore] = []
    store = ArrayStore(list(paths), lambda get, p: _heavy_fields(TensorView(holder[0]), p, size), cached_products)
    holder.append(store)
    return store


def _has_stats(m: ProductModel) -> bool:
    """Whether the product has authentic statistics, without reading a lazily loaded product from disk."""
    store = m.__dict__.get("_store")
    if "stats" not in m.__dict__ and store is not None:
        return bool(store.has(m.__dict__["_prefix"] + "mu_s"))
    return m.stats is not None


def _listed_checksums(directory: Path) -> dict[str, str]:
    """The checksums a directory's manifest lists (just written by this process)."""
    return dict(json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("files", {}))


def _segment_product_bytes(path: Path) -> dict[str, int]:
    """Bytes of each product's tensors (by prefix, ``"p12."``) in a safetensors file, from its header only
    (indexes saved before ``products.json`` recorded them)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    out: dict[str, int] = defaultdict(int)
    for name, spec in header.items():
        if name != "__metadata__" and "." in name:
            start, end = spec["data_offsets"]
            out[name[:name.index(".") + 1]] += int(end) - int(start)
    return dict(out)
