"""Self-describing, atomic, checksummed directories (how an index is written and verified).

Example:
    >>> import tempfile, pathlib
    >>> from brandguard.storage import write_directory, verify_directory
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "idx"
    >>> write_directory(d, {"a.json": b"{}"}, {"format": 1})
    >>> verify_directory(d)["format"]
    1
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brandguard.errors import IndexCorruptError

__all__ = ["MANIFEST", "atomic_write_bytes", "sha256_bytes", "verify_directory", "write_directory"]

MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_directory(target: str | Path, files: Mapping[str, bytes], manifest: Mapping[str, Any]) -> None:
    """Write ``files`` plus a manifest (with a checksum of every file) as directory ``target``, atomically.

    The whole directory is written under a temporary name beside ``target`` and renamed into place, so a
    reader sees either the old index or the new one, never a mix.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        checksums = {}
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            checksums[name] = sha256_bytes(data)
        full = dict(manifest)
        full["files"] = checksums
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False), encoding="utf-8")
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify_directory(target: str | Path) -> dict[str, Any]:
    """Read and check a directory written by :func:`write_directory`; returns its manifest.

    Raises:
        IndexCorruptError: no manifest, unreadable manifest, a missing file or a checksum mismatch.
    """
    target = Path(target)
    mpath = target / MANIFEST
    if not target.is_dir():
        raise IndexCorruptError(f"{target} is not an index directory; build one with `brandguard index build`")
    if not mpath.is_file():
        raise IndexCorruptError(f"{target} has no {MANIFEST}; it is not a brandguard index (or an incomplete "
                                "copy); rebuild it with `brandguard index build`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"{mpath} is unreadable ({exc}); rebuild the index with `brandguard index build`") from exc
    for name, expected in manifest.get("files", {}).items():
        p = target / name
        if not p.is_file():
            raise IndexCorruptError(f"index file {p} is missing (listed in {MANIFEST}); the index is "
                                    "incomplete: copy it again or rebuild with `brandguard index build`")
        got = sha256_bytes(p.read_bytes())
        if got != expected:
            raise IndexCorruptError(f"index file {p} is corrupt: its checksum is {got[:19]}... but {MANIFEST} "
                                    f"records {expected[:19]}...; copy the index again or rebuild it with "
                                    "`brandguard index build`")
    return manifest
