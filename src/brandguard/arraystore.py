"""Per-product arrays of a saved index, read from disk only when a photo needs them.

A loaded :class:`~brandguard.index.ReferenceIndex` keeps in memory only what search needs (keypoint codes,
keypoint positions, the products' descriptions). The comparison banks, authentic statistics, simulated
listing evidence and global vectors of a product stay in the index's ``arrays.safetensors``, which is
opened with :func:`safetensors.safe_open` (the file is memory-mapped; reading one product copies only that
product's tensors), and the products a photo matched are kept in a bounded least-recently-used cache. A
catalogue of 100,000 products therefore costs memory for search, not for its banks (README, "Memory and
index size"; ``scripts/benchmark_scale.py``).

:class:`LazyField` makes this invisible to the rest of the code: ``model.bank`` reads from the store when
the model was loaded lazily and nothing was assigned, and behaves as a plain attribute otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

__all__ = ["ArrayStore", "LazyField", "TensorView"]


class ArrayStore:
    """The tensors of one ``arrays.safetensors`` file, read per product with a bounded cache.

    Args:
        path: the safetensors file (memory-mapped while the store lives).
        build: ``build(get, prefix) -> dict`` turns a product's tensors (``get(name)`` returns the tensor
            ``prefix + name`` or None when absent) into its attributes (``{"bank": ..., "stats": ...}``).
        cached_products: how many products' attributes are kept in memory at most (least recently used are
            dropped first; >= 1).

    Raises:
        OSError, safetensors errors: the file cannot be opened (the caller turns them into
            :class:`~brandguard.errors.IndexCorruptError`).
    """

    def __init__(self, path: str | Path, build: Callable[[Callable[[str], np.ndarray | None], str], dict[str, Any]],
                 cached_products: int = 256) -> None:
        from safetensors import safe_open

        self.path = str(path)
        self._file = safe_open(self.path, framework="numpy")
        self._names = set(self._file.keys())
        self._build = build
        self._cap = max(1, int(cached_products))
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = Lock()
        self.reads = 0  #: products read from disk so far (cache misses)

    def tensor(self, name: str) -> np.ndarray | None:
        """One tensor by its full name, or None when the file has none of that name."""
        return self._file.get_tensor(name) if name in self._names else None

    def product(self, prefix: str) -> dict[str, Any]:
        """The attributes of the product whose tensors start with ``prefix`` (e.g. ``"p12."``)."""
        with self._lock:
            hit = self._cache.get(prefix)
            if hit is not None:
                self._cache.move_to_end(prefix)
                return hit
        attrs = self._build(lambda name: self.tensor(prefix + name), prefix)
        with self._lock:
            self.reads += 1
            self._cache[prefix] = attrs
            self._cache.move_to_end(prefix)
            while len(self._cache) > self._cap:
                self._cache.popitem(last=False)
        return attrs

    def __len__(self) -> int:
        """Products currently held in the cache."""
        return len(self._cache)


class TensorView:
    """Read-only mapping over an :class:`ArrayStore`'s tensors by full name (``view["p3.kp_xy"]``), so code
    written for a dict of loaded tensors reads from the memory-mapped file instead."""

    def __init__(self, store: ArrayStore) -> None:
        self._store = store

    def __contains__(self, name: object) -> bool:
        return name in self._store._names

    def __getitem__(self, name: str) -> np.ndarray:
        t = self._store.tensor(name)
        if t is None:
            raise KeyError(name)
        return t

    def get(self, name: str, default: Any = None) -> Any:
        t = self._store.tensor(name)
        return default if t is None else t


class LazyField:
    """A dataclass field whose value comes from an :class:`ArrayStore` until something is assigned to it.

    Install on a dataclass after it is created (``ProductModel.bank = LazyField("bank")``): the generated
    ``__init__`` assigns through :meth:`__set__`, so an eagerly built object behaves exactly as before; an
    object made with ``__new__`` and given ``_store`` / ``_prefix`` reads the value from the store on each
    access (the store's cache keeps recent products in memory), so nothing is pinned by the object itself.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        if self.name in d:
            return d[self.name]
        store = d.get("_store")
        if store is None:
            raise AttributeError(self.name)
        return store.product(d["_prefix"])[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value
