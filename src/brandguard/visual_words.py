"""A product shortlist whose cost barely grows with the catalogue: visual words and an inverted file.

Each reference keypoint's RootSIFT descriptor is quantized to a *visual word* by a vocabulary tree
(hierarchical k-means, Nister and Stewenius, "Scalable recognition with a vocabulary tree", CVPR 2006:
``branching`` centroids at the first level, ``branching`` more inside each, so ``branching ** 2`` words for
``2 * branching`` distance computations a descriptor). Each product (a *document*: the contiguous rows its
keypoints occupy in the descriptor store) is entered once per distinct word it holds in an inverted file
(word -> products). A photo's descriptors are quantized the same way and the products are ranked by the
tf-idf cosine of their binary bags of words (Sivic and Zisserman, "Video Google", ICCV 2003): the sum, over
the words they share with the photo, of ``idf(w)^2``, divided by the product's own idf norm. Only the
posting lists of the photo's words are read, so a query costs the quantization of its descriptors (fixed)
plus the length of those lists; that length grows with the catalogue only for words many products share,
which weigh little (``idf`` near 0).

The vocabulary is trained once, on a seeded sample of the catalogue's descriptors, when the search is built;
products added later are quantized with it (no retraining), so adding one product costs the same whatever
the catalogue size: its words join a small *pending* inverted file, merged into the main one when it has
grown to a twentieth of it.

Example:
    >>> import numpy as np
    >>> from brandguard.visual_words import VisualWords
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((4000, 128)).astype(np.float32) ** 3
    >>> x /= np.linalg.norm(x, axis=1, keepdims=True)
    >>> vw = VisualWords.train(x, branching=16)
    >>> vw.add_documents(vw.assign(x), np.full(40, 100))  # 40 documents of 100 rows
    >>> int(vw.shortlist(vw.assign(x[200:260]), 3)[0])  # rows 200-299 are document 2
    2
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brandguard.errors import IndexCorruptError

__all__ = ["VisualWords"]

DIM = 128


class VisualWords:
    """Vocabulary tree quantizer plus an inverted file of documents (products) by visual word.

    Args:
        level1: ``(b, 128)`` float32 first-level centroids.
        level2: ``(b, b, 128)`` float32 second-level centroids (``level2[i]`` refines ``level1[i]``); words are
            numbered ``i * b + j``.
    """

    def __init__(self, level1: np.ndarray, level2: np.ndarray) -> None:
        self.level1 = np.ascontiguousarray(level1, np.float32)
        self.level2 = np.ascontiguousarray(level2, np.float32)
        b = len(self.level1)
        if self.level1.shape != (b, DIM) or self.level2.shape != (b, b, DIM):
            raise ValueError(f"vocabulary levels must be (b, {DIM}) and (b, b, {DIM}), got "
                             f"{self.level1.shape} and {self.level2.shape}")
        self._l1n = (self.level1 ** 2).sum(1)
        self._l2n = (self.level2 ** 2).sum(2)
        # documents: rows [doc_start, doc_start + doc_len) of the descriptor store
        self.doc_start = np.zeros(0, np.int64)
        self.doc_len = np.zeros(0, np.int64)
        self.alive = np.zeros(0, bool)
        self.doc_norm = np.zeros(0, np.float32)  # idf norm of the document's bag (set when it is entered)
        self.df = np.zeros(self.n_words, np.int64)  # live documents holding each word
        # main inverted file (CSR by word) and the pending one (documents entered since the last merge)
        self.post_ptr = np.zeros(self.n_words + 1, np.int64)
        self.post_doc = np.zeros(0, np.int32)
        self._pend_word = np.zeros(0, np.int32)
        self._pend_doc = np.zeros(0, np.int32)

    # ------------------------------------------------------------------ vocabulary
    @property
    def branching(self) -> int:
        """Centroids per tree level."""
        return len(self.level1)

    @property
    def n_words(self) -> int:
        """Size of the vocabulary (``branching ** 2``)."""
        return self.branching ** 2

    @property
    def n_documents(self) -> int:
        """Live documents."""
        return int(self.alive.sum())

    @classmethod
    def train(cls, descriptors: np.ndarray, *, branching: int = 128, train_size: int = 500_000,
              seed: int = 0, niter: int = 12) -> VisualWords:
        """Learn a two-level vocabulary tree from a seeded sample of ``(N, 128)`` descriptors.

        Args:
            descriptors: float16 or float32 RootSIFT descriptors (a memory map is read only where sampled).
            branching: centroids per level (``branching ** 2`` words; 128 gives 16,384).
            train_size: descriptors sampled to train on.
            seed: sampling and k-means seed.
            niter: k-means iterations per level.

        Raises:
            ValueError: descriptors are not ``(N, 128)``, or fewer than ``branching`` of them.
        """
        import faiss

        X = np.asarray(descriptors)
        if X.ndim != 2 or X.shape[1] != DIM:
            raise ValueError(f"keypoint descriptors must be (N, {DIM}), got {X.shape}")
        b = int(branching)
        if b < 2:
            raise ValueError(f"a vocabulary tree needs a branching of at least 2, got {b}")
        if len(X) < b:
            raise ValueError(f"a vocabulary of branching {b} needs at least {b} descriptors, got {len(X)}")
        rng = np.random.default_rng(seed)
        n = min(len(X), int(train_size))
        pick = np.sort(rng.choice(len(X), n, replace=False)) if n < len(X) else np.arange(len(X))
        sample = np.ascontiguousarray(X[pick], np.float32)
        km = faiss.Kmeans(DIM, b, niter=niter, seed=seed, min_points_per_centroid=1, max_points_per_centroid=10**9)
        km.train(sample)
        level1 = np.array(km.centroids, np.float32)
        _, top = km.index.search(sample, 1)
        level2 = np.empty((b, b, DIM), np.float32)
        for c in range(b):
            part = sample[top[:, 0] == c]
            if len(part) >= b:
                sub = faiss.Kmeans(DIM, b, niter=niter, seed=seed + 1 + c, min_points_per_centroid=1,
                                   max_points_per_centroid=10**9)
                sub.train(np.ascontiguousarray(part))
                level2[c] = sub.centroids
            else:  # too few points to split: the points themselves, then copies of the centroid (never chosen
                level2[c] = level1[c]  # before an equal point, so only the first copies receive descriptors)
                level2[c, :len(part)] = part
        return cls(level1, level2)

    def assign(self, descriptors: np.ndarray, chunk: int = 262_144) -> np.ndarray:
        """The visual word of each descriptor: ``(N,)`` int32 in ``[0, n_words)`` (nearest centroid by L2, per level)."""
        X = np.asarray(descriptors)
        if X.ndim != 2 or X.shape[1] != DIM:
            raise ValueError(f"keypoint descriptors must be (N, {DIM}), got {X.shape}")
        out = np.empty(len(X), np.int32)
        b = self.branching
        for s in range(0, len(X), chunk):
            x = np.ascontiguousarray(X[s:s + chunk], np.float32)
            top = np.argmin(self._l1n[None, :] - 2.0 * (x @ self.level1.T), axis=1)
            word = np.empty(len(x), np.int32)
            order = np.argsort(top, kind="stable")
            bounds = np.searchsorted(top[order], np.arange(b + 1))
            xs = x[order]  # grouped by first-level centroid: each group's rows are one contiguous block
            for c in range(b):
                lo, hi = bounds[c], bounds[c + 1]
                if hi > lo:
                    word[order[lo:hi]] = c * b + np.argmin(self._l2n[c][None, :] - 2.0 * (xs[lo:hi] @ self.level2[c].T),
                                                           axis=1)
            out[s:s + chunk] = word
        return out

    # ------------------------------------------------------------------ inverted file
    def add_documents(self, words: np.ndarray, lengths: np.ndarray, start: int | None = None) -> None:
        """Enter documents whose rows are consecutive: ``words`` ``(sum(lengths),)`` of the rows, in order.

        Args:
            words: visual word of each row (:meth:`assign`).
            lengths: rows of each new document.
            start: store row of the first document's first row (default: right after the last document).
        """
        lengths = np.asarray(lengths, np.int64)
        words = np.asarray(words, np.int32)
        if int(lengths.sum()) != len(words):
            raise ValueError(f"documents of {int(lengths.sum())} rows in all were given {len(words)} words")
        end = int(self.doc_start[-1] + self.doc_len[-1]) if len(self.doc_start) else 0
        if start is None:
            start = end
        if start < end:
            raise ValueError(f"documents must follow the last one (row {end} on), got start {start}")
        if len(words) and (words.min() < 0 or words.max() >= self.n_words):
            raise ValueError(f"visual words must lie in [0, {self.n_words}); use assign()")
        first = len(self.doc_start)
        starts = start + np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64)
        doc_of_row = np.repeat(np.arange(first, first + len(lengths), dtype=np.int64), lengths)
        pair = np.unique(doc_of_row * self.n_words + words)  # each (document, word) once: binary bags
        pw = (pair % self.n_words).astype(np.int32)
        pd = (pair // self.n_words).astype(np.int32)
        np.add.at(self.df, pw, 1)
        self.doc_start = np.concatenate([self.doc_start, starts.astype(np.int64)])
        self.doc_len = np.concatenate([self.doc_len, lengths])
        self.alive = np.concatenate([self.alive, np.ones(len(lengths), bool)])
        idf2 = self._idf() ** 2
        norm = np.sqrt(np.bincount(pd - first, weights=idf2[pw], minlength=len(lengths))).astype(np.float32)
        self.doc_norm = np.concatenate([self.doc_norm, np.maximum(norm, 1e-6)])
        self._pend_word = np.concatenate([self._pend_word, pw])
        self._pend_doc = np.concatenate([self._pend_doc, pd])
        if len(self._pend_word) > max(65_536, len(self.post_doc) // 20):
            self._merge()

    def remove_rows(self, row_ids: np.ndarray) -> None:
        """Retire the documents whose rows these are (a product's rows are removed together)."""
        rows = np.asarray(row_ids, np.int64)
        if not len(rows) or not len(self.doc_start):
            return
        docs = np.unique(np.searchsorted(self.doc_start, rows, side="right") - 1)
        docs = docs[(docs >= 0) & self.alive[np.maximum(docs, 0)]]
        if not len(docs):
            return
        self.alive[docs] = False
        gone = np.isin(self._pend_doc, docs)
        np.subtract.at(self.df, np.concatenate([self._pend_word[gone], self._main_words_of(docs)]), 1)

    def _main_words_of(self, docs: np.ndarray) -> np.ndarray:
        """Words of these documents in the main inverted file (one scan of it)."""
        hit = np.isin(self.post_doc, docs)
        counts = np.diff(self.post_ptr)
        word_of = np.repeat(np.arange(self.n_words, dtype=np.int32), counts)
        return word_of[hit]

    def _idf(self) -> np.ndarray:
        n = max(1, self.n_documents)
        return np.log(n / np.maximum(self.df, 1)).astype(np.float32).clip(min=0.0)

    def _merge(self) -> None:
        counts = np.diff(self.post_ptr)
        word = np.concatenate([np.repeat(np.arange(self.n_words, dtype=np.int32), counts), self._pend_word])
        doc = np.concatenate([self.post_doc, self._pend_doc])
        keep = self.alive[doc]
        word, doc = word[keep], doc[keep]
        order = np.lexsort((doc, word))
        self.post_doc = np.ascontiguousarray(doc[order], np.int32)
        self.post_ptr = np.concatenate([[0], np.cumsum(np.bincount(word, minlength=self.n_words))]).astype(np.int64)
        self._pend_word = np.zeros(0, np.int32)
        self._pend_doc = np.zeros(0, np.int32)

    # ------------------------------------------------------------------ query
    def scores(self, words: np.ndarray) -> np.ndarray:
        """``(D,)`` float32 tf-idf cosine (up to the photo's own norm) of every document with a photo's words."""
        qw = np.unique(np.asarray(words, np.int32))
        if len(qw) and (qw[0] < 0 or qw[-1] >= self.n_words):
            raise ValueError(f"visual words must lie in [0, {self.n_words}); use assign()")
        idf2 = self._idf() ** 2
        out = np.zeros(len(self.doc_start), np.float64)
        if len(qw):
            lo, hi = self.post_ptr[qw], self.post_ptr[qw + 1]
            lens = hi - lo
            idx = np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
            out += np.bincount(self.post_doc[idx], weights=np.repeat(idf2[qw], lens), minlength=len(out))
            if len(self._pend_word):
                hit = np.isin(self._pend_word, qw)
                out += np.bincount(self._pend_doc[hit], weights=idf2[self._pend_word[hit]], minlength=len(out))
        out = out / np.maximum(self.doc_norm, 1e-6)
        out[~self.alive] = -1.0
        return out.astype(np.float32)

    def shortlist(self, words: np.ndarray, n: int) -> np.ndarray:
        """The ``n`` live documents that best match a photo's visual words, best first (``(<= n,)`` int64);
        a document that shares no word with the photo is never listed."""
        s = self.scores(words)
        n = min(int(n), int((s > 0).sum()))
        if n <= 0:
            return np.zeros(0, np.int64)
        top = np.argpartition(-s, n - 1)[:n] if n < len(s) else np.arange(len(s))
        top = top[np.argsort(-s[top], kind="stable")]
        return top[s[top] > 0].astype(np.int64)

    def rows_of(self, docs: np.ndarray) -> np.ndarray:
        """Store rows of these documents, concatenated (int64)."""
        docs = np.asarray(docs, np.int64)
        if not len(docs):
            return np.zeros(0, np.int64)
        lens = self.doc_len[docs]
        first = np.repeat(self.doc_start[docs] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return first + np.arange(int(lens.sum()))

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """The vocabulary and the (merged) inverted file as safetensors bytes."""
        from safetensors.numpy import save

        self._merge()
        return save({"level1": self.level1, "level2": self.level2, "doc_start": self.doc_start,
                     "doc_len": self.doc_len, "alive": self.alive.astype(np.uint8), "doc_norm": self.doc_norm,
                     "df": self.df, "post_ptr": self.post_ptr, "post_doc": self.post_doc})

    @classmethod
    def from_bytes(cls, data: bytes) -> VisualWords:
        """Read what :meth:`to_bytes` wrote.

        Raises:
            IndexCorruptError: the arrays are missing or disagree.
        """
        from safetensors.numpy import load

        try:
            t = load(data)
            vw = cls(t["level1"], t["level2"])
            vw.doc_start, vw.doc_len = t["doc_start"].astype(np.int64), t["doc_len"].astype(np.int64)
            vw.alive, vw.doc_norm = t["alive"].astype(bool), t["doc_norm"].astype(np.float32)
            vw.df, vw.post_ptr, vw.post_doc = t["df"].astype(np.int64), t["post_ptr"].astype(np.int64), t["post_doc"]
        except (KeyError, ValueError, Exception) as exc:  # safetensors raises its own error types
            raise IndexCorruptError(f"visual-word file is unreadable ({exc}); rebuild the index with "
                                    "`brandguard index build`") from exc
        ok = (len(vw.df) == vw.n_words and len(vw.post_ptr) == vw.n_words + 1 and vw.post_ptr[-1] == len(vw.post_doc)
              and len(vw.doc_len) == len(vw.doc_start) == len(vw.alive) == len(vw.doc_norm))
        if not ok:
            raise IndexCorruptError("visual-word arrays disagree; rebuild the index with `brandguard index build`")
        return vw

    def memory_bytes(self) -> int:
        """Bytes held in memory (vocabulary, inverted file, document tables)."""
        arrays: list[Any] = [self.level1, self.level2, self.doc_start, self.doc_len, self.alive, self.doc_norm,
                             self.df, self.post_ptr, self.post_doc, self._pend_doc, self._pend_word]
        return int(sum(a.nbytes for a in arrays))

