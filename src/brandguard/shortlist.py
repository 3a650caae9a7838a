"""Two-stage keypoint search: compact codes of every product's RootSIFT descriptors in memory, exact
re-ranking from descriptors kept on disk.

A catalogue of 100,000 products holds about 10^8 reference keypoints. Their float32 descriptors (51 GB) do
not fit a 24 GB machine, and an exact search over them grows with the catalogue. So search runs in two
stages, as in product quantization search with re-ranking (Jegou et al., "Product quantization for nearest
neighbor search", TPAMI 2011; "Searching in one billion vectors: re-rank with source coding", ICASSP 2011):

1. **shortlist** - a FAISS inverted file with product-quantized codes (``IVFn,PQ32``: 32 bytes a
   descriptor, plus its 8-byte id; ``opq=True`` adds an OPQ rotation, which trains far slower on 2 cores)
   returns ``k * refine`` approximate neighbours per query keypoint, visiting ``nprobe`` of ``n`` lists, so
   its cost grows with the catalogue only through the list lengths;
2. **re-ranking** - the exact inner products of those neighbours are computed from the float16 descriptors,
   which stay on disk (a memory-mapped ``.npy``) and are read only for the rows the shortlist returned, and
   the best ``k`` are kept.

Small catalogues (fewer than :attr:`KeypointSearch.IVF_MIN` descriptors) use an exact flat index instead, with identical
results to a brute-force search. Rows are addressed by a stable *row id* (the row in the descriptor store);
adding a product appends rows and encodes only them, removing one drops its ids from the search structure.

Example:
    >>> import numpy as np
    >>> from brandguard.shortlist import KeypointSearch
    >>> rng = np.random.default_rng(0)
    >>> d = rng.random((500, 128)).astype(np.float32)
    >>> d /= np.linalg.norm(d, axis=1, keepdims=True)
    >>> ks = KeypointSearch.build(d)
    >>> sims, ids = ks.search(d[:3], k=2)
    >>> ids[:, 0].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from brandguard.errors import IndexCorruptError

__all__ = ["KeypointSearch"]

DIM = 128


class KeypointSearch:
    """Nearest reference keypoints (inner product of unit RootSIFT descriptors), exact or two-stage.

    Args:
        store: ``(N, 128)`` float16 descriptors by row id (an array or a read-only memory map).
        index: the FAISS index over the live row ids (``IndexIDMap2`` of a flat index, or an IVF-PQ index).
        refine: the shortlist returns ``k * refine`` candidates that are re-ranked exactly (IVF-PQ only).
        nprobe: inverted lists visited per query (IVF-PQ only).
    """

    #: below this many descriptors the search is exact (flat); above it, IVF-PQ + re-ranking
    IVF_MIN = 200_000
    #: bytes of a PQ code: 32 sub-quantizers of 8 bits
    PQ_BYTES = 32

    def __init__(self, store: np.ndarray, index: Any, refine: int = 4, nprobe: int = 24) -> None:
        self.store = store
        self.index = index
        self.refine = int(refine)
        self.nprobe = int(nprobe)
        self._set_nprobe()

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, descriptors: np.ndarray, *, kind: str = "auto", nlist: int | None = None,
              train_size: int = 200_000, seed: int = 0, refine: int = 4, nprobe: int = 24,
              opq: bool = False) -> KeypointSearch:
        """Index ``(N, 128)`` unit descriptors; row ``i`` gets row id ``i``.

        Args:
            descriptors: float16 or float32 RootSIFT descriptors.
            kind: ``flat`` (exact), ``ivfpq`` (two-stage) or ``auto`` (``ivfpq`` from :attr:`IVF_MIN` rows).
            nlist: inverted lists of the IVF-PQ index (default about ``4 * sqrt(N)``, 256..65536).
            train_size: descriptors sampled (seeded) to train the coarse quantizer and PQ codebooks.
            refine, nprobe: see the class.
            opq: learn an OPQ rotation before product quantization (Ge et al., CVPR 2013).

        Raises:
            ValueError: descriptors are not ``(N, 128)``, or ``kind`` is unknown.
        """
        import faiss

        X = np.asarray(descriptors)
        if X.ndim != 2 or X.shape[1] != DIM:
            raise ValueError(f"keypoint descriptors must be (N, {DIM}), got {X.shape}")
        if kind not in ("auto", "flat", "ivfpq"):
            raise ValueError(f"kind must be auto, flat or ivfpq, got {kind!r}")
        if kind == "auto":
            kind = "ivfpq" if len(X) >= cls.IVF_MIN else "flat"
        store = np.ascontiguousarray(X, dtype=np.float16)
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        else:
            n_lists = int(nlist or min(65536, max(256, 4 * int(np.sqrt(len(X))))))
            rotation = f"OPQ{cls.PQ_BYTES}," if opq else ""
            index = faiss.index_factory(DIM, f"{rotation}IVF{n_lists},PQ{cls.PQ_BYTES}", faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            n_train = min(len(X), max(train_size, 40 * n_lists))
            sample = X if n_train == len(X) else X[np.sort(rng.choice(len(X), n_train, replace=False))]
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        ks = cls(store, index, refine=refine, nprobe=nprobe)
        ks._add_rows(np.arange(len(X), dtype=np.int64))
        return ks

    @property
    def kind(self) -> str:
        """``flat`` or ``ivfpq``."""
        return "flat" if self._ivf() is None else "ivfpq"

    @property
    def ntotal(self) -> int:
        """Live (searchable) descriptors."""
        return int(self.index.ntotal)

    def __len__(self) -> int:
        """Rows of the descriptor store, removed ones included (row ids are never reused)."""
        return len(self.store)

    def add(self, descriptors: np.ndarray) -> np.ndarray:
        """Append descriptors (no retraining: the IVF-PQ codebooks stay); returns their new row ids."""
        X = np.asarray(descriptors)
        if X.ndim != 2 or X.shape[1] != DIM:
            raise ValueError(f"keypoint descriptors must be (N, {DIM}), got {X.shape}")
        start = len(self.store)
        self.store = np.concatenate([np.asarray(self.store), X.astype(np.float16)]) if start else \
            np.ascontiguousarray(X, dtype=np.float16)
        ids = np.arange(start, start + len(X), dtype=np.int64)
        self._add_rows(ids)
        return ids

    def remove(self, row_ids: np.ndarray) -> int:
        """Stop returning these row ids; returns how many were removed."""
        import faiss

        ids = np.ascontiguousarray(np.asarray(row_ids, np.int64))
        if not len(ids):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def _add_rows(self, ids: np.ndarray, chunk: int = 262_144) -> None:
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            self.index.add_with_ids(np.ascontiguousarray(self.store[part[0]:part[-1] + 1], dtype=np.float32), part)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live rows of each query by exact inner product.

        Args:
            queries: ``(Q, 128)`` float32 unit descriptors.
            k: neighbours per query.

        Returns:
            ``(sims, ids)``: ``(Q, k)`` float32 exact inner products (best first) and int64 row ids (-1 where
            fewer than ``k`` were found).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "flat":
            return self.index.search(q, k)
        _, cand = self.index.search(q, k * self.refine)
        sims = np.full(cand.shape, -np.inf, np.float32)
        ok = cand >= 0
        rows = cand[ok]
        if rows.size:  # read only the shortlisted rows (sorted for sequential access to the memory map)
            order = np.argsort(rows, kind="stable")
            vec = np.empty((rows.size, DIM), np.float32)
            vec[order] = self.store[rows[order]]
            qi = np.nonzero(ok)[0]
            sims[ok] = np.einsum("ij,ij->i", vec, q[qi])
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(sims, top, 1)
        ids = np.where(np.isfinite(s), np.take_along_axis(cand, top, 1), -1)
        return np.where(np.isfinite(s), s, -1.0).astype(np.float32), ids

    # ------------------------------------------------------------------ persistence
    def to_files(self) -> dict[str, bytes]:
        """``keypoints.faiss`` (codes), ``keypoints.npy`` (descriptors) and ``keypoints.json`` (search settings),
        for :func:`brandguard.storage.write_directory`."""
        import faiss

        buf = io.BytesIO()
        np.save(buf, np.asarray(self.store, np.float16), allow_pickle=False)
        settings = {"kind": self.kind, "refine": self.refine, "nprobe": self.nprobe, "live": self.ntotal}
        return {"keypoints.faiss": faiss.serialize_index(self.index).tobytes(), "keypoints.npy": buf.getvalue(),
                "keypoints.json": json.dumps(settings).encode()}

    @classmethod
    def from_files(cls, directory: str | Path, *, mmap: bool = True, nprobe: int | None = None) -> KeypointSearch:
        """Load what :meth:`to_files` wrote; the descriptor store is memory-mapped (read-only) by default.

        Args:
            directory: the folder holding the files.
            mmap: memory-map the descriptors (else read them into memory).
            nprobe: inverted lists visited per query (default: as saved).

        Raises:
            IndexCorruptError: the files are unreadable or disagree.
        """
        import faiss

        d = Path(directory)
        try:
            settings = json.loads((d / "keypoints.json").read_text(encoding="utf-8"))
            store = np.load(d / "keypoints.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            index = faiss.deserialize_index(np.fromfile(d / "keypoints.faiss", np.uint8))
        except (OSError, ValueError, RuntimeError) as exc:
            raise IndexCorruptError(f"keypoint search files in {d} are unreadable ({exc}); rebuild the index "
                                    "with `brandguard index build`") from exc
        if store.ndim != 2 or store.shape[1] != DIM or index.d != DIM:
            raise IndexCorruptError(f"keypoint search files in {d} disagree (store {store.shape}, index d={index.d});"
                                    " rebuild the index with `brandguard index build`")
        return cls(store, index, refine=int(settings.get("refine", 4)),
                   nprobe=int(nprobe if nprobe is not None else settings.get("nprobe", 24)))

    def memory_bytes(self) -> int:
        """Bytes this search keeps in memory (codes, ids, quantizers); a memory-mapped store is not counted."""
        import faiss

        own = 0 if isinstance(self.store, np.memmap) else int(np.asarray(self.store).nbytes)
        return own + int(faiss.serialize_index(self.index).nbytes)

    # ------------------------------------------------------------------ internals
    def _ivf(self) -> Any:
        import faiss

        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def _set_nprobe(self) -> None:
        ivf = self._ivf()
        if ivf is not None:
            ivf.nprobe = self.nprobe
