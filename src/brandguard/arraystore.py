"""Per-product arrays of a saved index, read from disk only when a photo needs them.

A loaded :class:`~brandguard.index.ReferenceIndex` keeps in memory only what search needs (keypoint codes,
keypoint positions, the products' descriptions). The comparison banks, authentic statistics, simulated
listing evidence and global vectors of a product stay in the index's array segments (``arrays.safetensors``
and, after incremental saves, ``arrays.<generation>.safetensors``: :meth:`~brandguard.index.ReferenceIndex.save`),
each opened with :func:`safetensors.safe_open` (the file is memory-mapped; reading one product copies only that
product's tensors), and the products a photo matched are kept in a bounded least-recently-used cache. A
catalogue of 100,000 products therefore costs memory for search, not for its banks (README, "Memory and
index size"; ``scripts/benchmark_scale.py``).

:class:`LazyField` makes this invisible to the rest of the code: ``model.bank`` reads from the store when
the model was loaded lazily and nothing was assigned, and behaves as a plain attribute otherwise.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from threading import Lock
from typing import Any, BinaryIO

import numpy as np

__all__ = ["ArrayStore", "LazyField", "TensorView", "write_safetensors"]

_DTYPES = {"float16": "F16", "float32": "F32", "float64": "F64", "uint8": "U8", "int8": "I8", "int16": "I16",
           "int32": "I32", "int64": "I64", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL"}


def write_safetensors(fh: BinaryIO, specs: Sequence[tuple[str, np.dtype, tuple[int, ...]]],
                      arrays: Iterable[np.ndarray]) -> None:
    """Write a safetensors file to ``fh`` from arrays produced one at a time, so a segment of any size is
    written without holding it in memory (``safetensors.numpy.save`` builds the whole file in memory first).

    Args:
        fh: a binary file open for writing.
        specs: ``(name, dtype, shape)`` of each tensor, in the order ``arrays`` yields them (the header is
            written first).
        arrays: the tensors, in that order; each must have the dtype and shape of its spec.

    Raises:
        ValueError: an array differs from its spec, a dtype safetensors has no name for, or too few arrays.
    """
    header: dict[str, Any] = {}
    offset = 0
    for name, dtype, shape in specs:
        dt = np.dtype(dtype)
        if dt.name not in _DTYPES:
            raise ValueError(f"tensor {name}: dtype {dt} cannot be stored in safetensors")
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        header[name] = {"dtype": _DTYPES[dt.name], "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    fh.write(len(raw).to_bytes(8, "little"))
    fh.write(raw)
    it = iter(arrays)
    for name, dtype, shape in specs:
        a = next(it, None)
        if a is None or a.dtype != np.dtype(dtype) or tuple(a.shape) != tuple(shape):
            got = "nothing" if a is None else f"{a.dtype} {tuple(a.shape)}"
            raise ValueError(f"tensor {name}: expected {np.dtype(dtype)} {tuple(shape)}, got {got}")
        if a.size:
            fh.write(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)


class ArrayStore:
    """The tensors of an index's safetensors segments, read per product with one bounded cache.

    A tensor is named ``"<k>:<name>"``: tensor ``name`` of the ``k``-th file (a name without ``"<k>:"`` is
    in the first file), so a product's prefix (``"2:p12."``) says which segment holds it.

    Args:
        path: the safetensors file, or the segment files in order (memory-mapped while the store lives).
        build: ``build(get, prefix) -> dict`` turns a product's tensors (``get(name)`` returns the tensor
            ``prefix + name`` or None when absent) into its attributes (``{"bank": ..., "stats": ...}``).
        cached_products: how many products' attributes are kept in memory at most (least recently used are
            dropped first; >= 1).

    Raises:
        OSError, safetensors errors: the file cannot be opened (the caller turns them into
            :class:`~brandguard.errors.IndexCorruptError`).
    """

    def __init__(self, path: str | Path | list[str | Path],
                 build: Callable[[Callable[[str], np.ndarray | None], str], dict[str, Any]],
                 cached_products: int = 256) -> None:
        from safetensors import safe_open

        self.paths = [str(p) for p in (path if isinstance(path, list) else [path])]
        self.path = self.paths[0]
        self._files = [safe_open(p, framework="numpy") for p in self.paths]
        self._names = [set(f.keys()) for f in self._files]
        self._build = build
        self._cap = max(1, int(cached_products))
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = Lock()
        self.reads = 0  #: products read from disk so far (cache misses)

    def _split(self, name: str) -> tuple[int, str]:
        k, sep, rest = name.partition(":")
        if sep and k.isdigit() and int(k) < len(self._files):
            return int(k), rest
        return 0, name

    def has(self, name: str) -> bool:
        """Whether a tensor of that full name exists."""
        k, rest = self._split(name)
        return rest in self._names[k]

    def tensor(self, name: str) -> np.ndarray | None:
        """One tensor by its full name, or None when the file has none of that name."""
        k, rest = self._split(name)
        return self._files[k].get_tensor(rest) if rest in self._names[k] else None

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
        return isinstance(name, str) and self._store.has(name)

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
