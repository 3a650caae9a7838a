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

Large catalogues use by default a product-level first stage whose cost barely grows with the catalogue
(``kind="words"``, :mod:`brandguard.visual_words`): the photo's descriptors are quantized to visual words, the
``candidates`` products whose bags of words match best (tf-idf) are shortlisted, and the nearest neighbours
are then found exactly among those products' descriptors only, read from the memory-mapped store. The
IVF-PQ search above stays available (``kind="ivfpq"``): its cost grows with the catalogue through the list
lengths, the words' does not (README, "Keypoint search", measured by ``scripts/benchmark_scale.py``).

Mid-sized catalogues (from :attr:`KeypointSearch.APPROX_MIN` to :attr:`KeypointSearch.IVF_MIN` descriptors, e.g. the
demo's 27 products and 41,000 keypoints) use an inverted file over the exact descriptors (``kind="ivf"``, FAISS
``IVFn,Flat``): each query visits the ``nprobe`` lists nearest to it and gets the exact inner products of the rows
held there, so a neighbour is missed only when it lies in a list not visited. An exhaustive search of 800 photo
keypoints against 41,000 costs 8 GFLOP a photo (about 40% of end-to-end scoring on 2 cores); visiting 32 of the
about 800 lists scans 4% of the rows. On 100 demo listing photos it kept 99.9% of the exact search's Lowe-ratio
matches and their nearest neighbour (README, "Throughput").

Small catalogues (fewer than :attr:`KeypointSearch.APPROX_MIN` descriptors) use an exact flat index, with identical
results to a brute-force search (there an exhaustive search is cheap). Rows are addressed by a stable *row id* (the row in the descriptor store);
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

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from brandguard.errors import IndexCorruptError
from brandguard.visual_words import VisualWords

__all__ = ["KeypointSearch", "RowStore"]

DIM = 128


class RowStore:
    """Descriptor rows by row id: (memory-mapped) segments on disk plus rows appended since they were written.

    Appending never copies the segments, so adding a product to a catalogue whose store is a 25 GB memory map
    costs only the new rows; a saved index keeps them as one ``.npy`` file per save that added rows
    (:meth:`write_npy` with ``start``), which :class:`RowStore` reads as consecutive segments. Supports ``len``,
    ``shape``, slicing and integer-array indexing (rows).

    Args:
        base: the first segment ``(n0, 128)`` float16 (an array or a read-only memory map).
        more: further segments, in row order (rows ``n0 ..``).
    """

    def __init__(self, base: np.ndarray, more: Sequence[np.ndarray] = ()) -> None:
        self.base = base
        self.segments = [base, *more]
        self._ends = np.cumsum([len(a) for a in self.segments]).astype(np.int64)
        self._tail: list[np.ndarray] = []
        self._tail_rows = 0
        self._joined: np.ndarray | None = None

    @property
    def disk_rows(self) -> int:
        """Rows held by the segments (the rest were appended since)."""
        return int(self._ends[-1])

    def __len__(self) -> int:
        return self.disk_rows + self._tail_rows

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, 128)``."""
        return (len(self), DIM)

    def append(self, rows: np.ndarray) -> None:
        """Append ``(n, 128)`` rows (stored as float16)."""
        self._tail.append(np.ascontiguousarray(rows, np.float16))
        self._tail_rows += len(rows)
        self._joined = None

    def _tail_array(self) -> np.ndarray:
        if self._joined is None:
            self._joined = np.concatenate(self._tail) if self._tail else np.zeros((0, DIM), np.float16)
            self._tail = [self._joined] if self._tail_rows else []
        return self._joined

    def _parts(self) -> list[tuple[int, np.ndarray]]:
        """``(first row, array)`` of every segment and of the appended rows."""
        starts = [0, *self._ends[:-1].tolist()]
        return [*zip(starts, self.segments), (self.disk_rows, self._tail_array())]

    def __getitem__(self, key: Any) -> np.ndarray:
        nb = len(self.base)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("RowStore slices must be contiguous")
            if stop <= nb:
                return self.base[start:stop]
            pieces = [a[max(0, start - s):max(0, stop - s)] for s, a in self._parts() if s < stop and s + len(a) > start]
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.zeros((0, DIM), np.float16)
        rows = np.asarray(key, np.int64)
        if len(self.segments) == 1 and not self._tail_rows:
            return self.base[rows]
        out = np.empty((len(rows), DIM), np.float16)
        for s, a in self._parts():
            hit = (rows >= s) & (rows < s + len(a))
            if hit.any():
                out[hit] = a[rows[hit] - s]
        return out

    def in_memory_bytes(self) -> int:
        """Bytes held in memory (memory-mapped segments count nothing)."""
        held = sum(int(a.nbytes) for a in self.segments if isinstance(a, np.ndarray) and not isinstance(a, np.memmap))
        return held + self._tail_rows * DIM * 2

    def write_npy(self, fh: BinaryIO, chunk: int = 1 << 20, start: int = 0) -> None:
        """Write rows ``start ..`` of the store to ``fh`` as one ``.npy`` array (float16), streamed in chunks of
        rows (``start > 0``: a segment holding only the rows appended since the first ``start`` were saved)."""
        np.lib.format.write_array_header_1_0(fh, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                  "shape": (len(self) - start, DIM)})
        for s, part in self._parts():
            fh.writelines(np.ascontiguousarray(part[i:i + chunk], np.float16).tobytes()
                          for i in range(max(0, start - s), len(part), chunk))


class _Gathered:
    """Rows ``spans`` of another store, renumbered ``0 ..`` (read through, nothing copied): the store of a
    :meth:`KeypointSearch.compacted` search until it is written and memory-mapped again."""

    dtype = np.dtype(np.float16)
    ndim = 2

    def __init__(self, source: RowStore, spans: Sequence[tuple[int, int]]) -> None:
        kept = [(int(s), int(n)) for s, n in spans if n > 0]
        self.source = source
        self.starts = np.array([s for s, _ in kept], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum([n for _, n in kept])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), DIM)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, _ = key.indices(len(self))
            first = int(np.searchsorted(self.offsets, start, side="right")) - 1
            pieces = []
            k = max(first, 0)
            while k < len(self.starts) and self.offsets[k] < stop:
                lo, hi = max(start, self.offsets[k]), min(stop, self.offsets[k + 1])
                s = self.starts[k] + lo - self.offsets[k]
                pieces.append(np.asarray(self.source[int(s):int(s + hi - lo)], np.float16))
                k += 1
            return np.concatenate(pieces) if pieces else np.zeros((0, DIM), np.float16)
        rows = np.asarray(key, np.int64)
        span = np.searchsorted(self.offsets, rows, side="right") - 1
        return np.asarray(self.source[self.starts[span] + rows - self.offsets[span]], np.float16)


class KeypointSearch:
    """Nearest reference keypoints (inner product of unit RootSIFT descriptors), exact or two-stage.

    Args:
        store: ``(N, 128)`` float16 descriptors by row id (an array, a read-only memory map or a :class:`RowStore`).
        index: the FAISS index over the live row ids (``IndexIDMap2`` of a flat index, an ``IndexIVFFlat`` or an
            IVF-PQ index), or a :class:`~brandguard.visual_words.VisualWords` (``kind="words"``).
        refine: the shortlist returns ``k * refine`` candidates that are re-ranked exactly (IVF-PQ only).
        nprobe: inverted lists visited per query (IVF kinds only).
        candidates: products shortlisted per photo by their visual words (``words`` only).
    """

    #: below this many descriptors the search is exact (flat); from it, an inverted file over the exact descriptors
    APPROX_MIN = 16_384
    #: from this many descriptors the search is two-stage (visual words or IVF-PQ + re-ranking)
    IVF_MIN = 200_000
    #: inverted lists a query visits (``ivf``: measured on the demo listings, README "Throughput"; ``ivfpq``: 24)
    NPROBE = 32
    #: bytes of a PQ code: 32 sub-quantizers of 8 bits
    PQ_BYTES = 32

    #: products shortlisted per photo by the visual-word first stage
    CANDIDATES = 32

    def __init__(self, store: np.ndarray | RowStore, index: Any, refine: int = 4, nprobe: int = 24,
                 candidates: int = CANDIDATES) -> None:
        self.store = store if isinstance(store, RowStore) else RowStore(store)
        self.index = index
        self.refine = int(refine)
        self.nprobe = int(nprobe)
        self.candidates = int(candidates)
        self._set_nprobe()

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, descriptors: np.ndarray, *, kind: str = "auto", documents: np.ndarray | None = None,
              nlist: int | None = None, train_size: int = 200_000, seed: int = 0, refine: int = 4,
              nprobe: int | None = None, opq: bool = False, branching: int = 128,
              candidates: int = CANDIDATES) -> KeypointSearch:
        """Index ``(N, 128)`` unit descriptors; row ``i`` gets row id ``i``.

        Args:
            descriptors: float16 or float32 RootSIFT descriptors (a float16 memory map is used in place).
            kind: ``flat`` (exact), ``ivf`` (inverted file over the exact descriptors: exact inner products of the
                rows in the ``nprobe`` lists visited), ``ivfpq`` (two-stage, keypoint shortlist), ``words``
                (two-stage, product shortlist by visual words; needs ``documents``) or ``auto`` (from
                :attr:`IVF_MIN` rows ``words`` when ``documents`` are given, else ``ivfpq``; from
                :attr:`APPROX_MIN` rows ``ivf``; ``flat`` below).
            documents: rows of each product, in order (they sum to ``N``); a product is what ``words`` shortlists.
            nlist: inverted lists of an IVF index (default about ``4 * sqrt(N)``: ``ivfpq`` 256..65536, ``ivf``
                at least 40 training rows a list).
            train_size: descriptors sampled (seeded) to train the coarse quantizer and PQ codebooks.
            refine, nprobe, candidates: see the class (``nprobe`` default: :attr:`NPROBE` for ``ivf``, 24 for
                ``ivfpq``).
            opq: learn an OPQ rotation before product quantization (Ge et al., CVPR 2013).
            branching: vocabulary tree branching (``words``: ``branching ** 2`` visual words).

        Raises:
            ValueError: descriptors are not ``(N, 128)``, ``kind`` is unknown, or ``words`` without documents
                that cover the rows.
        """
        import faiss

        X = np.asarray(descriptors)
        if X.ndim != 2 or X.shape[1] != DIM:
            raise ValueError(f"keypoint descriptors must be (N, {DIM}), got {X.shape}")
        if kind not in ("auto", "flat", "ivf", "ivfpq", "words"):
            raise ValueError(f"kind must be auto, flat, ivf, ivfpq or words, got {kind!r}")
        if kind == "auto":
            kind = cls.kind_for(len(X), documents is not None)
        nprobe = int(nprobe if nprobe is not None else cls.NPROBE if kind == "ivf" else 24)
        store = X if isinstance(X, np.memmap) and X.dtype == np.float16 else np.ascontiguousarray(X, np.float16)
        if kind == "words":
            docs = np.asarray(documents if documents is not None else [], np.int64)
            if documents is None or int(docs.sum()) != len(X) or (docs < 0).any():
                raise ValueError(f"kind='words' needs the rows of each product (documents summing to {len(X)})")
            vw = VisualWords.train(store, branching=min(branching, max(2, int(np.sqrt(len(X) / 40)))),
                                   train_size=max(train_size, 500_000), seed=seed)
            vw.add_documents(vw.assign(store), docs, start=0)
            vw._merge()
            return cls(store, vw, refine=refine, nprobe=nprobe, candidates=candidates)
        rng = np.random.default_rng(seed)
        if kind == "flat" or (kind == "ivf" and len(X) < 2 * 40):  # too few rows to cluster: exact
            index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        elif kind == "ivf":
            n_lists = int(nlist or cls._ivf_lists(len(X)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, n_lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed  # seeded k-means: the same catalogue gives the same lists
            n_train = min(len(X), max(train_size, 40 * n_lists))
            sample = X if n_train == len(X) else X[np.sort(rng.choice(len(X), n_train, replace=False))]
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        else:
            n_lists = int(nlist or min(65536, max(256, 4 * int(np.sqrt(len(X))))))
            rotation = f"OPQ{cls.PQ_BYTES}," if opq else ""
            # "np": no polysemous training (it reorders codes for Hamming filtering, which this search does not
            # use; same neighbours, about 12 times faster to train)
            index = faiss.index_factory(DIM, f"{rotation}IVF{n_lists},PQ{cls.PQ_BYTES}np", faiss.METRIC_INNER_PRODUCT)
            n_train = min(len(X), max(train_size, 40 * n_lists))
            sample = X if n_train == len(X) else X[np.sort(rng.choice(len(X), n_train, replace=False))]
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        ks = cls(store, index, refine=refine, nprobe=nprobe)
        ks._add_rows(np.arange(len(X), dtype=np.int64))
        return ks

    @classmethod
    def kind_for(cls, rows: int, documents: bool = True) -> str:
        """The kind :meth:`build` chooses (``kind="auto"``) for ``rows`` descriptors, with or without products'
        ``documents``."""
        if rows >= cls.IVF_MIN:
            return "words" if documents else "ivfpq"
        return "ivf" if rows >= cls.APPROX_MIN else "flat"

    @staticmethod
    def _ivf_lists(rows: int) -> int:
        """Inverted lists of an ``ivf`` search over ``rows`` descriptors: about ``4 * sqrt(rows)``, with at least
        40 training rows a list."""
        return max(2, min(4 * int(np.sqrt(rows)), rows // 40))

    def outgrown(self, rows: int | None = None) -> bool:
        """Whether a catalogue of ``rows`` live descriptors (default: those searched now) has outgrown this search,
        so that it should be built again (:meth:`build`, ``kind="auto"``).

        :meth:`add` never retrains, so a catalogue grown product by product keeps the structure chosen for its
        first products: an exact search past :attr:`APPROX_MIN` rows costs an exhaustive scan per photo keypoint,
        and an inverted file trained on a quarter to a half of today's rows or fewer scans lists two to four times
        as long or longer. Outgrown: a ``flat`` search from :attr:`APPROX_MIN` rows, an ``ivf`` one from :attr:`IVF_MIN` or
        with fewer than half the lists its rows now call for. ``ivfpq`` and ``words`` are never outgrown (their
        cost is in their shortlist)."""
        n = self.ntotal if rows is None else int(rows)
        kind = self.kind
        if kind == "flat":
            return n >= self.APPROX_MIN
        if kind == "ivf":
            return n >= self.IVF_MIN or self._ivf_lists(n) >= 2 * int(self._ivf().nlist)
        return False

    @property
    def kind(self) -> str:
        """``flat``, ``ivf``, ``ivfpq`` or ``words``."""
        import faiss

        if isinstance(self.index, VisualWords):
            return "words"
        ivf = self._ivf()
        return "flat" if ivf is None else "ivf" if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat) else "ivfpq"

    @property
    def ntotal(self) -> int:
        """Live (searchable) descriptors."""
        if isinstance(self.index, VisualWords):
            return int(self.index.doc_len[self.index.alive].sum())
        return int(self.index.ntotal)

    def __len__(self) -> int:
        """Rows of the descriptor store, removed ones included (row ids are never reused)."""
        return len(self.store)

    def add(self, descriptors: np.ndarray) -> np.ndarray:
        """Append descriptors (no retraining: the IVF-PQ codebooks or the vocabulary stay); returns their new
        row ids. With ``kind="words"`` one call adds one product (its rows are one document, even none).

        Raises:
            ValueError: descriptors are not ``(N, 128)`` or not finite.
        """
        X = np.asarray(descriptors)
        if X.ndim != 2 or X.shape[1] != DIM:
            raise ValueError(f"keypoint descriptors must be (N, {DIM}), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("keypoint descriptors must be finite (NaN or inf found); recompute them")
        start = len(self.store)
        self.store.append(X)
        ids = np.arange(start, start + len(X), dtype=np.int64)
        if isinstance(self.index, VisualWords):  # one call adds one product (a document)
            words = self.index.assign(X) if len(X) else np.zeros(0, np.int32)
            self.index.add_documents(words, np.array([len(X)]), start=start)
        else:
            self._add_rows(ids)
        return ids

    def remove(self, row_ids: np.ndarray) -> int:
        """Stop returning these row ids; returns how many were removed.

        With ``kind="words"`` the search removes whole products: naming any row of a product retires all of
        its rows (the index removes a product's rows together). Row ids outside the store are ignored.

        Raises:
            ValueError: the ids are not integers.
        """
        import faiss

        raw = np.asarray(row_ids)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"row ids must be integers, got {raw.dtype}")
        ids = np.ascontiguousarray(raw.astype(np.int64).ravel())
        ids = ids[(ids >= 0) & (ids < len(self.store))]
        if not len(ids):
            return 0
        if isinstance(self.index, VisualWords):
            before = self.ntotal
            self.index.remove_rows(ids)
            return before - self.ntotal
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def compacted(self, spans: Sequence[tuple[int, int]]) -> KeypointSearch:
        """A copy holding only the rows of ``spans``, renumbered ``0 ..`` in the order given, with the same trained
        structures (codes, lists, vocabulary: nothing is trained again), so it finds the same neighbours.

        Its store reads through to this one's (nothing is copied into memory); write it (:meth:`to_files`) and
        load it again to have it memory-mapped from its own file.

        Args:
            spans: ``(first row, rows)`` of each product kept, in the order its rows are to be stored (a product
                of ``words`` is one document, even with no rows).

        Returns:
            The new search; its row ``r`` is the ``r``-th kept row (a product's new first row is the sum of the
            rows of the spans before it).
        """
        import faiss

        store = RowStore(_Gathered(self.store, spans))  # type: ignore[arg-type]
        index: Any
        if isinstance(self.index, VisualWords):
            index = VisualWords(self.index.level1, self.index.level2)
            chunk = 262_144
            words = [index.assign(store[s:s + chunk]) for s in range(0, len(store), chunk)]
            index.add_documents(np.concatenate(words) if words else np.zeros(0, np.int32),
                                np.array([n for _, n in spans], np.int64), start=0)
            index._merge()
            return KeypointSearch(store, index, refine=self.refine, nprobe=self.nprobe, candidates=self.candidates)
        index = faiss.clone_index(self.index)
        index.reset()  # the trained quantizer, codebooks and rotation stay; the entries go
        ks = KeypointSearch(store, index, refine=self.refine, nprobe=self.nprobe, candidates=self.candidates)
        if len(store):
            ks._add_rows(np.arange(len(store), dtype=np.int64))
        return ks

    def _add_rows(self, ids: np.ndarray, chunk: int = 262_144) -> None:
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            self.index.add_with_ids(np.ascontiguousarray(self.store[part[0]:part[-1] + 1], dtype=np.float32), part)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, groups: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live rows of each query by exact inner product.

        With ``kind="words"`` the rows searched are those of the ``candidates`` products that each photo's
        visual words shortlist (so the neighbours are exact among them); other kinds search every live row.

        Args:
            queries: ``(Q, 128)`` float32 unit descriptors.
            k: neighbours per query.
            groups: how many consecutive queries belong to each photo (default: all to one photo); only the
                ``words`` kind uses it (one shortlist per photo).

        Returns:
            ``(sims, ids)``: ``(Q, k)`` float32 exact inner products (best first) and int64 row ids (-1 where
            fewer than ``k`` were found).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if isinstance(self.index, VisualWords):
            return self._search_words(q, k, [len(q)] if groups is None else list(groups))
        if self.kind in ("flat", "ivf"):  # exact inner products of the rows searched
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

    def shortlist(self, queries: np.ndarray) -> np.ndarray:
        """The products one photo's ``(Q, 128)`` descriptors shortlist (``words`` only): ``(<= candidates,)`` int64
        document numbers (products in the order they were entered), best first.

        Raises:
            TypeError: the search is not of kind ``words``.
        """
        if not isinstance(self.index, VisualWords):
            raise TypeError(f"a {self.kind} search has no product shortlist (only kind words has)")
        return self.index.shortlist(self.index.assign(np.asarray(queries, np.float32)), self.candidates)

    def _search_words(self, q: np.ndarray, k: int, groups: list[int]) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if sum(groups) != len(q) or any(n < 0 for n in groups):
            raise ValueError(f"groups must be non-negative counts of queries summing to {len(q)}, got {groups}")
        vw: VisualWords = self.index
        sims = np.full((len(q), k), -1.0, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        words = vw.assign(q) if len(q) else np.zeros(0, np.int32)
        start = 0
        for n in groups:
            if n:
                docs = vw.shortlist(words[start:start + n], self.candidates)
                rows = vw.rows_of(docs)
                if len(rows):
                    base = np.ascontiguousarray(self.store[rows], np.float32)
                    kk = min(k, len(rows))
                    s, i = faiss.knn(q[start:start + n], base, kk, metric=faiss.METRIC_INNER_PRODUCT)
                    sims[start:start + n, :kk] = s
                    ids[start:start + n, :kk] = np.where(i >= 0, rows[np.maximum(i, 0)], -1)
            start += n
        return sims, ids

    # ------------------------------------------------------------------ persistence
    def to_files(self) -> dict[str, bytes | Callable[[BinaryIO], None]]:
        """``keypoints.faiss`` (codes; ``keypoints.words.safetensors`` for ``words``), ``keypoints.npy``
        (descriptors: a function that streams them) and ``keypoints.json`` (search settings), for
        :func:`brandguard.storage.write_directory`."""
        import faiss

        settings = {"kind": self.kind, "refine": self.refine, "nprobe": self.nprobe, "live": self.ntotal,
                    "candidates": self.candidates}
        codes = {"keypoints.words.safetensors": self.index.to_bytes()} if isinstance(self.index, VisualWords) \
            else {"keypoints.faiss": faiss.serialize_index(self.index).tobytes()}
        return {**codes, "keypoints.npy": self.store.write_npy, "keypoints.json": json.dumps(settings).encode()}

    @classmethod
    def from_files(cls, directory: str | Path, *, mmap: bool = True, nprobe: int | None = None,
                   segments: Sequence[str | Path] | None = None) -> KeypointSearch:
        """Load what :meth:`to_files` wrote; the descriptor store is memory-mapped (read-only) by default.

        Args:
            directory: the folder holding the files.
            mmap: memory-map the descriptors (else read them into memory).
            nprobe: inverted lists visited per query (default: as saved).
            segments: the ``.npy`` files of the descriptor store, in row order (default: ``keypoints.npy`` in
                ``directory``); an index saved incrementally keeps one per save that added keypoints.

        Raises:
            IndexCorruptError: the files are unreadable or disagree.
        """
        import faiss

        d = Path(directory)
        try:
            settings = json.loads((d / "keypoints.json").read_text(encoding="utf-8"))
            parts = [np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
                     for f in (segments if segments else [d / "keypoints.npy"])]
            if any(a.ndim != 2 or a.shape[1:] != parts[0].shape[1:] for a in parts):
                raise ValueError(f"keypoint store segments disagree in shape ({[a.shape for a in parts]})")
            store = RowStore(parts[0], parts[1:])
            index: Any
            if settings.get("kind") == "words":
                index = VisualWords.from_bytes((d / "keypoints.words.safetensors").read_bytes())
            else:
                index = faiss.deserialize_index(np.fromfile(d / "keypoints.faiss", np.uint8))
        except (OSError, ValueError, RuntimeError, EOFError) as exc:
            raise IndexCorruptError(f"keypoint search files in {d} are unreadable ({exc}); rebuild the index "
                                    "with `brandguard index build`") from exc
        dim = DIM if isinstance(index, VisualWords) else index.d
        if parts[0].ndim != 2 or parts[0].shape[1] != DIM or dim != DIM:
            raise IndexCorruptError(f"keypoint search files in {d} disagree (store {parts[0].shape}, index d={dim});"
                                    " rebuild the index with `brandguard index build`")
        if isinstance(index, VisualWords) and len(index.doc_start) and \
                int(index.doc_start[-1] + index.doc_len[-1]) > len(store):
            raise IndexCorruptError(f"keypoint search files in {d} disagree (products beyond the {len(store)} stored "
                                    "rows); rebuild the index with `brandguard index build`")
        ks = cls(store, index, refine=int(settings.get("refine", 4)),
                 nprobe=int(nprobe if nprobe is not None else settings.get("nprobe", 24)),
                 candidates=int(settings.get("candidates", cls.CANDIDATES)))
        if "live" in settings and int(settings["live"]) != ks.ntotal:
            raise IndexCorruptError(f"keypoint search files in {d} disagree ({ks.ntotal} searchable keypoints, "
                                    f"{settings['live']} recorded); rebuild the index with `brandguard index build`")
        return ks

    def memory_bytes(self) -> int:
        """Bytes this search keeps in memory (codes, ids, quantizers); a memory-mapped store is not counted."""
        import faiss

        own = self.store.in_memory_bytes()
        if isinstance(self.index, VisualWords):
            return own + self.index.memory_bytes()
        return own + int(faiss.serialize_index(self.index).nbytes)

    # ------------------------------------------------------------------ internals
    def _ivf(self) -> Any:
        import faiss

        if isinstance(self.index, VisualWords):
            return None
        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def _set_nprobe(self) -> None:
        ivf = self._ivf()
        if ivf is not None:
            ivf.nprobe = self.nprobe
