"""The reference index: authentic references of every product, ready for retrieval and comparison.

For each product (``brand/product``) it keeps:

* a **canonical frame**: a square frame cut around the product in one reference (the *anchor*), into
  which every other reference is aligned by a RANSAC homography;
* the RootSIFT **keypoints** of its references in that frame (bounded per product), searched with FAISS
  to find which product a photo shows and where;
* a **patch bank**: patch features and colours of each aligned reference (bounded per product), with
  per-cell statistics of how much authentic references differ from each other;
* a **global vector** per reference (FAISS, inner product), for similarity and for photos where no
  product can be localised.

``save(dir)`` writes one self-describing directory (backbone, weights digest, preprocessing,
dimensions, thresholds, library version, resolved config, checksums of every file), atomically.

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
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brandguard import __version__
from brandguard.backbones import spec_to_dict
from brandguard.calibration import ChannelFusion, ScoreCalibrator, Thresholds
from brandguard.config import Config
from brandguard.embedding import Embedder
from brandguard.errors import DataError, ImageLoadError, IndexCompatibilityError, IndexCorruptError
from brandguard.images import load_image
from brandguard.localization import (
    Alignment,
    Keypoints,
    detect_keypoints,
    estimate_homography,
    homography_is_sane,
    match_pair,
    warp_to_canonical,
)
from brandguard.mismatch import (
    CHANNELS,
    NormalStats,
    ProductBank,
    anomaly_maps,
    channel_scores,
    fit_normal_stats,
    make_view,
    occlusion_cells,
)
from brandguard.references import ReferenceItem, read_references
from brandguard.storage import verify_directory, write_directory
from brandguard.text import reference_lines

__all__ = ["INDEX_FORMAT", "ProductModel", "RefRecord", "ReferenceIndex"]

INDEX_FORMAT = 2
_IVF_MIN = 20000
_NPROBE = 16


@dataclass
class RefRecord:
    """One reference photo of a product; ``H`` maps canonical-frame pixels to its photo pixels."""

    path: str
    aligned: bool
    inliers: int
    H: list[list[float]] | None = None


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

    @property
    def key(self) -> str:
        return f"{self.brand}/{self.product}"


@dataclass
class _Prepared:
    item: ReferenceItem
    image: np.ndarray
    kp: Keypoints


def _progress(iterable: Iterable[Any], enabled: bool, desc: str, total: int | None = None) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img")


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
        self.fusion = ChannelFusion()
        self.text_enabled = _resolve_text_check(config.compare.text_check)
        self._text_reader: Any = None
        self._embedder: Embedder | None = None
        self._local: Any = None
        self._global: Any = None
        self._local_pid = np.zeros(0, np.int32)
        self._local_xy = np.zeros((0, 2), np.float32)
        self._global_rows: list[tuple[int, int]] = []
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
        index.add(items, progress=progress)
        if not index.products:
            raise DataError("no product could be indexed: every reference photo was unreadable "
                            f"({len(index.skipped)} skipped); see index.skipped")
        return index

    def _prepare(self, items: Sequence[ReferenceItem], progress: bool) -> list[_Prepared]:
        loc = self.config.localization

        def work(item: ReferenceItem) -> _Prepared | dict[str, str]:
            try:
                img = load_image(item.path, max_side=loc.max_side)
            except ImageLoadError as exc:
                return {"path": str(item.path), "error": exc.reason}
            return _Prepared(item, img, detect_keypoints(img, loc.keypoint_side, loc.reference_keypoints))

        out: list[_Prepared] = []
        with ThreadPoolExecutor(max(1, self.config.runtime.workers)) as ex:
            for res in _progress(ex.map(work, items), progress, "references", total=len(items)):
                if isinstance(res, dict):
                    warnings.warn(f"skipping reference {res['path']}: {res['error']}", stacklevel=3)
                    self.skipped.append(res)
                else:
                    out.append(res)
        return out

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder.from_name(
                self.backbone_info["spec"]["name"], self.backbone_info.get("checkpoint"),
                device=self.config.runtime.device, precision=self.config.runtime.precision,
                batch_size=self.config.runtime.batch_size)
            self.check_embedder(self._embedder)
        return self._embedder

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

        Only the new photos are read and embedded; the search structures are refreshed from stored vectors.
        """
        items = read_references(references) if isinstance(references, (str, Path)) else list(references)
        prepared = self._prepare(items, progress)
        groups: dict[tuple[str, str], list[_Prepared]] = defaultdict(list)
        for p in prepared:
            groups[(p.item.brand, p.item.product)].append(p)
        by_key = {(m.brand, m.product): i for i, m in enumerate(self.products)}
        added = 0
        for key in sorted(groups):
            entries = groups[key]
            if key in by_key:
                pid = by_key[key]
                self.products[pid] = self._extend_product(self.products[pid], entries)
            else:
                self.products.append(self._fit_product(key[0], key[1], entries))
            added += len(entries)
        self._rebuild_search()
        self.refit_default_calibration()
        return added

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
        new.calibrator, new.brand_calibrators = None, {}
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
                              None, np.zeros((0, 1), np.float32), np.zeros((0, len(CHANNELS))))  # type: ignore[arg-type]
            new._add_to_bank(nm, rows)
            products.append(nm)
        new.products = products
        new._rebuild_search()
        new.refit_default_calibration()
        return new

    def remove(self, brand: str, product: str | None = None) -> int:
        """Remove a brand's products (or one product). Returns how many products were removed.

        Raises:
            DataError: nothing matches, with the known brands listed.
        """
        keep = [m for m in self.products if not (m.brand == brand and (product is None or m.product == product))]
        removed = len(self.products) - len(keep)
        if removed == 0:
            known = sorted({m.brand for m in self.products})
            raise DataError(f"no product {brand}/{product or '*'} in the index; known brands: {', '.join(known)}")
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

    def _fit_product(self, brand: str, product: str, entries: list[_Prepared]) -> ProductModel:
        loc = self.config.localization
        n = len(entries)
        S = loc.canonical_size
        inl = np.zeros((n, n), int)
        Hs: dict[tuple[int, int], np.ndarray] = {}
        inlier_kps: list[set[int]] = [set() for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                ia, ib = match_pair(entries[i].kp, entries[j].kp)
                H, mask = estimate_homography(entries[i].kp.xy[ia], entries[j].kp.xy[ib],
                                              self._ransac_px(entries[j].image.shape))
                if H is None or mask.sum() < loc.min_inliers:
                    continue
                inl[i, j] = inl[j, i] = int(mask.sum())
                Hs[(i, j)] = H
                Hs[(j, i)] = np.linalg.inv(H)
                inlier_kps[i].update(ia[mask].tolist())
                inlier_kps[j].update(ib[mask].tolist())
        anchor = int(np.argmax(inl.sum(1))) if n > 1 else 0
        # homographies ref -> anchor (direct, else through the best intermediate reference)
        to_anchor: dict[int, np.ndarray] = {anchor: np.eye(3)}
        for i in range(n):
            if i == anchor:
                continue
            if (i, anchor) in Hs:
                to_anchor[i] = Hs[(i, anchor)]
                continue
            best = max((min(inl[i, k], inl[k, anchor]), k) for k in range(n) if k not in (i, anchor)) if n > 2 else (0, -1)
            if best[0] >= loc.min_inliers:
                k = best[1]
                to_anchor[i] = Hs[(k, anchor)] @ Hs[(i, k)]
        a_img, a_kp = entries[anchor].image, entries[anchor].kp
        pts = a_kp.xy[sorted(inlier_kps[anchor])] if len(inlier_kps[anchor]) >= 8 else a_kp.xy
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
        for i, e in enumerate(entries):
            if i in to_anchor:
                Hc = np.linalg.inv(T @ to_anchor[i])
                Hc /= Hc[2, 2]
                if homography_is_sane(Hc, S, e.image.shape[:2], min_area=0.005, max_area=8.0):
                    refs.append(RefRecord(str(e.item.path), True, int(inl[i, anchor]) if i != anchor else -1,
                                          Hc.tolist()))
                    aligned_entries.append((i, Hc))
                    continue
            refs.append(RefRecord(str(e.item.path), False, int(inl[i].max()) if n > 1 else 0, None))
            warnings.warn(f"reference {e.item.path} could not be aligned with the other photos of "
                          f"{brand}/{product}; it is kept for the record but not compared against", stacklevel=4)
        # keypoints in the canonical frame (repeatable ones first)
        descs, xys, prios = [], [], []
        for i, Hc in aligned_entries:
            kp = entries[i].kp
            if len(kp) == 0:
                continue
            Hinv = np.linalg.inv(Hc)
            p = np.c_[kp.xy, np.ones(len(kp))] @ Hinv.T
            ok = p[:, 2] > 1e-9
            cxy = p[:, :2] / np.where(ok, p[:, 2], 1.0)[:, None]
            inside = ok & (cxy[:, 0] >= -2) & (cxy[:, 0] <= S + 2) & (cxy[:, 1] >= -2) & (cxy[:, 1] <= S + 2)
            rep = np.zeros(len(kp), bool)
            rep[list(inlier_kps[i])] = True
            if len(aligned_entries) >= 2:
                # only keypoints seen again in another reference: the product, not its backgrounds
                inside &= rep
            descs.append(kp.desc[inside])
            xys.append(cxy[inside])
            prios.append(kp.response[inside])
        kp_desc = np.concatenate(descs) if descs else np.zeros((0, 128), np.float32)
        kp_xy = np.concatenate(xys).astype(np.float32) if xys else np.zeros((0, 2), np.float32)
        if len(kp_desc) > loc.max_descriptors_per_product:
            order = np.argsort(-np.concatenate(prios), kind="stable")[:loc.max_descriptors_per_product]
            order.sort()
            kp_desc, kp_xy = kp_desc[order], kp_xy[order]
        model = ProductModel(brand, product, refs, anchor=0, bank_refs=[], kp_desc=kp_desc.astype(np.float16),
                             kp_xy=kp_xy, bank=_empty_bank(), stats=None,  # type: ignore[arg-type]
                             global_vecs=np.zeros((0, 1), np.float32), loo_scores=np.zeros((0, len(CHANNELS))))
        ref_pos = {r.path: k for k, r in enumerate(refs)}
        model.anchor = ref_pos[str(entries[anchor].item.path)]
        self._add_to_bank(model, [(ref_pos[str(entries[i].item.path)], entries[i].image, Hc) for i, Hc in aligned_entries])
        return model

    def _extend_product(self, model: ProductModel, entries: list[_Prepared]) -> ProductModel:
        """Align new photos of a known product to its canonical frame and add them."""
        loc = self.config.localization
        S = loc.canonical_size
        canon = Keypoints(model.kp_xy, model.kp_desc.astype(np.float32), np.zeros(len(model.kp_xy), np.float32))
        new_bank: list[tuple[int, np.ndarray, np.ndarray]] = []
        for e in entries:
            ia, ib = match_pair(e.kp, canon)
            H, mask = estimate_homography(canon.xy[ib], e.kp.xy[ia], self._ransac_px(e.image.shape))
            ok = H is not None and mask.sum() >= loc.min_inliers and homography_is_sane(H, S, e.image.shape[:2], 0.005, 8.0)
            rec = RefRecord(str(e.item.path), bool(ok), int(mask.sum()), (H / H[2, 2]).tolist() if ok else None)
            model.refs.append(rec)
            if ok:
                new_bank.append((len(model.refs) - 1, e.image, H / H[2, 2]))
                Hinv = np.linalg.inv(H)
                p = np.c_[e.kp.xy, np.ones(len(e.kp))] @ Hinv.T
                good = p[:, 2] > 1e-9
                cxy = p[:, :2] / np.where(good, p[:, 2], 1.0)[:, None]
                inside = good & (cxy[:, 0] >= 0) & (cxy[:, 0] <= S) & (cxy[:, 1] >= 0) & (cxy[:, 1] <= S)
                repeat = np.zeros(len(e.kp), bool)
                repeat[ia[mask]] = True
                inside &= repeat
                room = max(0, loc.max_descriptors_per_product - len(model.kp_xy))
                sel = np.flatnonzero(inside)[:room]
                model.kp_desc = np.concatenate([model.kp_desc, e.kp.desc[sel].astype(np.float16)])
                model.kp_xy = np.concatenate([model.kp_xy, cxy[sel].astype(np.float32)])
            else:
                warnings.warn(f"reference {e.item.path} could not be aligned with {model.key}; kept for the "
                              "record but not compared against", stacklevel=4)
        self._add_to_bank(model, new_bank)
        return model

    def _add_to_bank(self, model: ProductModel, new: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        cfg = self.config
        S = cfg.localization.canonical_size
        if new:
            crops, valids = zip(*(warp_to_canonical(img, H, S) for _, img, H in new))
            g = self.embedder.embed_global(list(crops))
            feats, occ = self.embedder.embed_local(np.stack(crops)) if self.embedder.has_local_head \
                else ([None] * len(crops), [None] * len(crops))
            views = ProductBank.from_views([make_view(c, v, cfg.compare.cell, f, o)
                                            for c, v, f, o in zip(crops, valids, feats, occ)])
            model.bank = model.bank.concat(views)
            model.global_vecs = np.concatenate([model.global_vecs, g]) if len(model.global_vecs) else g
            model.bank_refs = model.bank_refs + [r for r, _, _ in new]
            if self.text_enabled:
                reader = self.text_reader
                model.ref_text = model.ref_text + [reader.read_lines(c) for c in crops]
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
            if model.ref_text:
                model.ref_text = [model.ref_text[c] for c in chosen]
        if len(model.bank) == 0:
            model.stats = None  # type: ignore[assignment]
            model.loo_scores = np.zeros((0, len(CHANNELS)))
            return
        model.stats, loo = fit_normal_stats(model.bank, cfg.compare.cell, cfg.compare.references_compared,
                                            cfg.compare.margin)
        model.text_lines = reference_lines(model.ref_text) if model.ref_text else []
        scores = []
        if len(model.bank) >= 2:
            for i, (d_s, d_c, d_l) in enumerate(loo):
                occ = occlusion_cells(None if model.bank.occlusion is None else model.bank.occlusion[i],
                                      model.bank.cell_valid.shape[1])
                zs, zc, zl = anomaly_maps(d_s, d_c, model.stats, model.bank.cell_valid[i], d_l, occ)
                mask = model.stats.region & model.bank.cell_valid[i]
                text = own_text_distance(model.ref_text[i], model.text_lines) if model.ref_text else float("nan")
                scores.append(channel_scores(zs, zc, mask, cfg.compare.top_fraction, text, zl))
        model.loo_scores = np.asarray(scores, np.float64).reshape(-1, len(CHANNELS))

    # -------------------------------------------------------------- search structures
    def _refresh_tables(self) -> None:
        """Row -> product tables of the search structures (derived from ``products``)."""
        self._local_pid = np.concatenate([np.full(len(m.kp_desc), i, np.int32) for i, m in enumerate(self.products)]) \
            if self.products else np.zeros(0, np.int32)
        self._local_xy = np.concatenate([m.kp_xy for m in self.products]) if self.products else np.zeros((0, 2), np.float32)
        self._global_rows = [(i, r) for i, m in enumerate(self.products) for r in range(len(m.bank))]
        brands = sorted({m.brand for m in self.products})
        self._brand_id = np.array([brands.index(m.brand) for m in self.products], np.int32) if self.products \
            else np.zeros(0, np.int32)

    def _rebuild_search(self) -> None:
        """Rebuild the FAISS structures from the stored vectors (no image is read again)."""
        import faiss

        self._refresh_tables()
        X = np.concatenate([m.kp_desc.astype(np.float32) for m in self.products]) if self.products \
            else np.zeros((0, 128), np.float32)
        if len(X) >= _IVF_MIN:
            nlist = int(min(1024, max(64, 2 * np.sqrt(len(X)))))
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(128), 128, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            train = X if len(X) <= 100_000 else X[rng.choice(len(X), 100_000, replace=False)]
            ivf.train(np.ascontiguousarray(train))
            ivf.add(np.ascontiguousarray(X))
            ivf.nprobe = _NPROBE
            self._local = ivf
        else:
            flat = faiss.IndexFlatIP(128)
            if len(X):
                flat.add(np.ascontiguousarray(X))
            self._local = flat
        dim = next((m.global_vecs.shape[1] for m in self.products if len(m.bank)), 1)
        gidx = faiss.IndexFlatIP(dim)
        for m in self.products:
            if len(m.bank):
                gidx.add(np.ascontiguousarray(m.global_vecs.astype(np.float32)))
        self._global = gidx

    def refit_default_calibration(self) -> None:
        """Cold-start calibration from the references' leave-one-out scores (replaced by `calibrate`)."""
        if self.calibrator is not None and self.calibrator.source != "references-loo":
            return  # calibrated on separate authentic photos: keep it (recalibrate after large changes)
        scores = np.concatenate([m.loo_scores for m in self.products]) if self.products else np.zeros((0, len(CHANNELS)))
        self.fusion = ChannelFusion.fit(scores)
        raws = self.fusion.fuse(scores) if len(scores) else np.zeros(0)
        if np.size(raws) >= 2:
            self.calibrator = ScoreCalibrator.fit(raws, source="references-loo")
            sc = self.config.scoring
            self.thresholds.review = 1.0 - sc.review_fpr
            self.thresholds.takedown = 1.0 - sc.takedown_fpr
        # weak matches (see Thresholds): as similar to the product as 95% of its references are to each other
        sims = []
        for m in self.products:
            if len(m.global_vecs) >= 2:
                gram = m.global_vecs @ m.global_vecs.T
                np.fill_diagonal(gram, -np.inf)
                sims.append(gram.max(1))
        if sims:
            self.thresholds.allow_weak(float(np.quantile(np.concatenate(sims), 0.05)))

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
        """Match photos' keypoints to products and verify geometrically.

        Returns:
            For each photo ``(accepted, best)``: ``accepted`` is the verified alignment (None when no
            product passes ``min_inliers``); ``best`` is the strongest candidate either way (for reporting).
        """
        loc = self.config.localization
        S = loc.canonical_size
        out: list[tuple[Alignment | None, Alignment | None]] = [(None, None)] * len(kps)
        if not self.products or self._local.ntotal == 0:
            return out
        k = min(8, self._local.ntotal)
        sizes = [len(kp) for kp in kps]
        allq = np.concatenate([kp.desc for kp in kps]) if sum(sizes) else np.zeros((0, 128), np.float32)
        if len(allq) == 0:
            return out
        sims, ids = self._local.search(np.ascontiguousarray(allq, dtype=np.float32), k)
        start = 0
        min_inl = self.thresholds.min_inliers
        for qi, (kp, n) in enumerate(zip(kps, sizes)):
            s, idx = sims[start:start + n], ids[start:start + n]
            start += n
            if n < 4:
                continue
            valid = idx >= 0
            pid = np.where(valid, self._local_pid[np.maximum(idx, 0)], -1)
            bid = np.where(valid, self._brand_id[np.maximum(pid, 0)], -1)
            d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s))
            b1 = bid[:, 0]
            other = (bid != b1[:, None]) & valid
            has_other = other.any(1)
            d2 = np.where(has_other, d[np.arange(n), np.argmax(other, 1)], d[:, -1] * 1.25)
            passed = valid[:, 0] & (d[:, 0] < loc.ratio * d2)
            votes = np.bincount(pid[passed, 0], minlength=len(self.products))
            order = np.argsort(-votes, kind="stable")[:loc.candidates]
            top = votes[order[0]] if len(order) else 0
            cands = [int(c) for c in order if votes[c] >= max(4, 0.25 * top)]  # skip hopeless candidates
            best: Alignment | None = None
            for c in cands:
                rows, cols = np.nonzero((pid == c) & passed[:, None] & (d < loc.ratio * d2[:, None]))
                if len(rows) < 4:
                    continue
                first = np.unique(rows, return_index=True)[1]
                rows, cols = rows[first], cols[first]
                src = self._local_xy[idx[rows, cols]]
                dst = kp.xy[rows]
                H, mask = estimate_homography(src, dst, self._ransac_px(shapes[qi]))
                if H is None:
                    continue
                ninl = int(mask.sum())
                sane = homography_is_sane(H, S, shapes[qi][:2])
                if not sane:
                    ninl = min(ninl, min_inl - 1)
                cand = Alignment(c, ninl, H / H[2, 2], ninl / max(1, len(rows)), sane)
                if best is None or cand.inliers > best.inliers:
                    best = cand
            accepted = best if best is not None and best.inliers >= min_inl else None
            out[qi] = (accepted, best)
        return out

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
        n_aligned = sum(len(m.bank) for m in self.products)
        return {
            "brandguard_version": __version__, "format": INDEX_FORMAT,
            "backbone": self.backbone_info["spec"]["name"], "weights_digest": self.backbone_info["weights_digest"],
            "weights_source": self.backbone_info.get("weights_source"), "checkpoint": self.backbone_info.get("checkpoint"),
            **({"training": self.backbone_info["training"]} if self.backbone_info.get("training") else {}),
            "brands": len({m.brand for m in self.products}), "products": len(self.products),
            "references": n_refs, "references_compared": n_aligned, "skipped": len(self.skipped),
            "local_descriptors": int(self._local.ntotal) if self._local is not None else 0,
            "local_index": type(self._local).__name__, "global_dim": int(self._global.d) if self._global is not None else 0,
            "canonical_size": self.config.localization.canonical_size,
            "thresholds": self.thresholds.to_dict(),
            "calibration": {"source": self.calibrator.source, "n": self.calibrator.n,
                            "per_brand": {b: {"n": c.n, "review_raw": c.raw_at(self.thresholds.review),
                                              "takedown_raw": c.raw_at(self.thresholds.takedown)}
                                          for b, c in sorted(self.brand_calibrators.items())},
                            "global_review_raw": self.calibrator.raw_at(self.thresholds.review),
                            "global_takedown_raw": self.calibrator.raw_at(self.thresholds.takedown)}
            if self.calibrator else None,
            "per_product": [{"brand": m.brand, "product": m.product, "references": len(m.refs),
                             "compared": len(m.bank), "keypoints": len(m.kp_xy)} for m in self.products],
        }

    def save(self, directory: str | Path) -> None:
        """Write the index as one self-describing directory, atomically (see module docstring)."""
        import faiss
        from safetensors.numpy import save as st_save

        tensors: dict[str, np.ndarray] = {}
        products_meta = []
        for i, m in enumerate(self.products):
            p = f"p{i}."
            tensors[p + "kp_desc"] = np.ascontiguousarray(m.kp_desc.astype(np.float16))
            tensors[p + "kp_xy"] = np.ascontiguousarray(m.kp_xy.astype(np.float32))
            tensors[p + "global"] = np.ascontiguousarray(m.global_vecs.astype(np.float32))
            tensors[p + "bank_structure"] = np.ascontiguousarray(m.bank.structure.astype(np.float16))
            tensors[p + "bank_valid"] = np.ascontiguousarray(np.packbits(m.bank.valid, axis=-1))
            tensors[p + "bank_colors"] = np.ascontiguousarray(m.bank.colors.astype(np.float32))
            tensors[p + "bank_cell_valid"] = np.ascontiguousarray(m.bank.cell_valid.astype(np.uint8))
            tensors[p + "loo_scores"] = np.ascontiguousarray(m.loo_scores.astype(np.float64))
            if m.bank.feats is not None and m.bank.occlusion is not None:
                tensors[p + "bank_feats"] = np.ascontiguousarray(m.bank.feats.astype(np.float16))
                tensors[p + "bank_occlusion"] = np.ascontiguousarray(m.bank.occlusion.astype(np.float16))
            if m.stats is not None:
                for name in ("mu_s", "sigma_s", "mu_c", "sigma_c", "mu_l", "sigma_l"):
                    if getattr(m.stats, name) is not None:
                        tensors[p + name] = np.ascontiguousarray(getattr(m.stats, name).astype(np.float32))
                tensors[p + "region"] = np.ascontiguousarray(m.stats.region.astype(np.uint8))
            products_meta.append({"brand": m.brand, "product": m.product, "anchor": m.anchor,
                                  "bank_refs": m.bank_refs, "has_stats": m.stats is not None,
                                  "ref_text": m.ref_text, "text_lines": m.text_lines,
                                  "refs": [r.__dict__ for r in m.refs]})
        files = {
            "arrays.safetensors": st_save(tensors),
            "products.json": json.dumps({"products": products_meta, "skipped": self.skipped}).encode(),
            "local.faiss": faiss.serialize_index(self._local).tobytes(),
            "global.faiss": faiss.serialize_index(self._global).tobytes(),
            "config.yaml": _yaml(self.config.to_dict()),
        }
        manifest = {
            "format": INDEX_FORMAT, "brandguard_version": __version__, "kind": "brandguard-reference-index",
            "backbone": self.backbone_info,
            "dimensions": {"global": int(self._global.d), "keypoint": 128,
                           "canonical_size": self.config.localization.canonical_size,
                           "cells": self.config.localization.canonical_size // self.config.compare.cell},
            "thresholds": self.thresholds.to_dict(),
            "calibration": self.calibrator.to_dict() if self.calibrator else None,
            "brand_calibration": {b: c.to_dict() for b, c in sorted(self.brand_calibrators.items())},
            "fusion": self.fusion.to_dict(),
            "text_check": self.text_enabled,
            "counts": {k: v for k, v in self.info().items() if k in ("brands", "products", "references",
                                                                      "references_compared", "local_descriptors")},
        }
        write_directory(directory, files, manifest)

    @classmethod
    def load(cls, directory: str | Path) -> ReferenceIndex:
        """Load and verify an index directory.

        Raises:
            IndexCorruptError: missing or corrupt files.
            IndexCompatibilityError: written by an incompatible brandguard version (rebuild it).
        """
        import faiss
        from safetensors.numpy import load as st_load

        directory = Path(directory)
        manifest = verify_directory(directory)
        if manifest.get("kind") != "brandguard-reference-index":
            raise IndexCorruptError(f"{directory} is not a brandguard reference index")
        fmt = manifest.get("format")
        if fmt != INDEX_FORMAT:
            raise IndexCompatibilityError(
                f"index {directory} has format {fmt} (written by brandguard {manifest.get('brandguard_version')}) "
                f"but this brandguard ({__version__}) reads format {INDEX_FORMAT}; rebuild it with "
                "`brandguard index build`")
        try:
            import yaml

            config = Config.from_dict(yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8")))
            meta = json.loads((directory / "products.json").read_text(encoding="utf-8"))
            tensors = st_load((directory / "arrays.safetensors").read_bytes())
        except (OSError, ValueError, DataError) as exc:
            raise IndexCorruptError(f"index {directory} could not be read ({exc}); rebuild it with "
                                    "`brandguard index build`") from exc
        products = []
        for i, pm in enumerate(meta["products"]):
            p = f"p{i}."
            stats = None
            if pm["has_stats"]:
                stats = NormalStats(tensors[p + "mu_s"], tensors[p + "sigma_s"], tensors[p + "mu_c"],
                                    tensors[p + "sigma_c"], tensors[p + "region"].astype(bool),
                                    tensors.get(p + "mu_l"), tensors.get(p + "sigma_l"))
            products.append(ProductModel(
                pm["brand"], pm["product"], [RefRecord(**r) for r in pm["refs"]], pm["anchor"], pm["bank_refs"],
                tensors[p + "kp_desc"], tensors[p + "kp_xy"],
                _load_bank(tensors, p, config.localization.canonical_size), stats, tensors[p + "global"],
                tensors[p + "loo_scores"], pm.get("ref_text", []), pm.get("text_lines", [])))
        cal = ScoreCalibrator.from_dict(manifest["calibration"]) if manifest.get("calibration") else None
        index = cls.__new__(cls)
        index.config = config
        index.backbone_info = manifest["backbone"]
        index.products = products
        index.calibrator = cal
        index.brand_calibrators = {b: ScoreCalibrator.from_dict(d) for b, d in manifest.get("brand_calibration", {}).items()}
        index.thresholds = Thresholds.from_dict(manifest["thresholds"])
        index.skipped = meta.get("skipped", [])
        index.fusion = ChannelFusion.from_dict(manifest["fusion"])
        index.text_enabled = bool(manifest.get("text_check", False))
        index._text_reader = None
        index._embedder = None
        index._refresh_tables()
        index._local = faiss.deserialize_index(np.frombuffer((directory / "local.faiss").read_bytes(), np.uint8))
        index._global = faiss.deserialize_index(np.frombuffer((directory / "global.faiss").read_bytes(), np.uint8))
        if isinstance(index._local, faiss.IndexIVF):
            index._local.nprobe = _NPROBE
        return index


def _resolve_text_check(setting: str) -> bool:
    from brandguard import text

    if setting == "auto":
        return text.available()
    if setting == "on":
        if not text.available():
            raise ImportError('compare.text_check is on but the ocr extra is missing: pip install "brandguard[ocr]"')
        return True
    if setting == "off":
        return False
    raise DataError(f"compare.text_check must be auto, on or off, got {setting!r}")


def own_text_distance(lines: list[dict[str, Any]], reference: list[dict[str, Any]]) -> float:
    """Text channel of a reference against its product's reference lines (leave-one-out statistics)."""
    from brandguard.text import MIN_CONFIDENCE, _iou, text_distance

    dists = []
    for ref in reference:
        same = [ln for ln in lines if _iou(ln["box"], ref["box"]) > 0.3 and ln["confidence"] >= MIN_CONFIDENCE]
        if same:
            dists.append(min(text_distance(ref["text"], ln["text"]) for ln in same))
    return max(dists) if dists else float("nan")


def _checkpoint_provenance(checkpoint: str | None) -> dict[str, Any]:
    """What a fine-tuned checkpoint's ``config.json`` says of its training (config and data digests)."""
    if not checkpoint:
        return {}
    from brandguard.backbones import checkpoint_metadata

    meta = checkpoint_metadata(checkpoint)
    keys = ("training_config_digest", "data_digest", "epoch", "format")
    return {"training": {k: meta[k] for k in keys if k in meta}} if meta else {}


def _empty_bank() -> ProductBank:
    return ProductBank(np.zeros((0, 1, 1), np.float16), np.zeros((0, 1, 1), bool), np.zeros((0, 1, 1, 3), np.float32),
                       np.zeros((0, 1, 1), bool))


def _load_bank(tensors: dict[str, np.ndarray], p: str, size: int) -> ProductBank:
    structure = tensors[p + "bank_structure"]
    valid = np.unpackbits(tensors[p + "bank_valid"], axis=-1, count=structure.shape[-1]).astype(bool) \
        if structure.ndim == 3 and len(structure) else np.zeros(structure.shape, bool)
    return ProductBank(structure, valid, tensors[p + "bank_colors"], tensors[p + "bank_cell_valid"].astype(bool),
                       tensors.get(p + "bank_feats"), tensors.get(p + "bank_occlusion"))


def _yaml(data: dict[str, Any]) -> bytes:
    import yaml

    buf = io.StringIO()
    yaml.safe_dump(data, buf, sort_keys=False)
    return buf.getvalue().encode()
