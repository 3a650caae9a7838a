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
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from brandguard.errors import DataError, IndexCorruptError

__all__ = ["MANIFEST", "atomic_write_bytes", "atomic_write_text", "check_output_path", "display_text", "file_digest",
           "sha256_bytes", "update_directory", "verify_directory", "write_directory"]

MANIFEST = "manifest.json"
_SURROGATE_BYTE = re.compile("[\udc80-\udcff]")


def sha256_bytes(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: str | Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in 1 MiB blocks.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: str | Path, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (mode 0600 / 0700) the mode every other tool would: 0666 / 0777
    less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def display_text(text: str) -> str:
    """``text`` with the raw bytes of non-UTF-8 file names (surrogate escapes) written ``\\xHH``, so that it
    can be written as UTF-8 (HTML reports, terminals); other characters are kept."""
    return _SURROGATE_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02X}", text)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 (see :func:`display_text` for file names that are not UTF-8), atomically."""
    atomic_write_bytes(path, display_text(text).encode("utf-8", "backslashreplace"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the mode any other tool would give it (0666 less the umask), not ``tempfile``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_directory(target: str | Path, files: Mapping[str, bytes | Callable[[BinaryIO], None]],
                    manifest: Mapping[str, Any]) -> None:
    """Write ``files`` plus a manifest (with a checksum of every file) as directory ``target``, atomically.

    A file is given as its bytes, or as a function that writes them to an open binary file (so a large
    array is streamed to disk, never held whole in memory).

    The whole directory is written under a temporary name beside ``target`` and renamed into place, so a
    reader sees either the old index or the new one, never a mix. An existing ``target`` is replaced only
    when it is empty or a brandguard directory (it holds a manifest): other folders are never deleted.

    Raises:
        DataError: ``target`` is a file, a symlink, or a non-empty folder without a manifest.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataError(f"{target} exists and is not a brandguard directory; pass a new folder name")
    if target.is_dir() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise DataError(f"{target} is a folder that holds other files (no {MANIFEST}): brandguard never "
                        "replaces it; pass a new or empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        checksums = {}
        for name, data in files.items():
            if callable(data):
                with open(tmp / name, "wb") as fh:
                    data(fh)
                checksums[name] = file_digest(tmp / name)
            else:
                (tmp / name).write_bytes(data)
                checksums[name] = sha256_bytes(data)
        full = dict(manifest)
        full["files"] = checksums
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False), encoding="utf-8")
        _follow_umask(tmp, directory=True)
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


def _fsync_dir(path: str | Path) -> None:
    """Make a folder's entries (files created or renamed in it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes | Callable[[BinaryIO], None]) -> str:
    """Write one new file through a temporary name in its folder, fsync it, rename it; returns its checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _follow_umask(tmp)
        digest = sha256_bytes(data) if isinstance(data, bytes) else file_digest(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def _replace_manifest(target: Path, data: bytes) -> None:
    """The commit point of :func:`update_directory`: the new manifest replaces the old one in one rename."""
    atomic_write_bytes(target / MANIFEST, data)
    _fsync_dir(target)


def update_directory(target: str | Path, files: Mapping[str, bytes | Callable[[BinaryIO], None]],
                     kept: Mapping[str, str], manifest: Mapping[str, Any]) -> dict[str, str]:
    """Update a directory written by :func:`write_directory` in place: add ``files``, keep the files ``kept``
    untouched, and switch to the new ``manifest`` atomically.

    Every new file is written under a temporary name, fsynced and renamed to a name the current manifest does
    not list; the folders are fsynced; then the new manifest replaces the old one in one rename (the commit
    point). A crash before it leaves the previous directory exactly as it was (its manifest lists only its own
    files, all untouched), plus unlisted files that the next update removes. After the commit, every file the
    new manifest does not list is removed.

    Args:
        target: a brandguard directory (it holds a manifest).
        files: new files by name (``"gen-3/products.json"``: subfolders allowed), as bytes or as a function that
            writes them to an open binary file.
        kept: files already in ``target`` that stay, with their recorded checksums (not read again).
        manifest: the new manifest, without ``files`` (the checksums of ``kept`` and ``files`` are added).

    Returns:
        The checksums the new manifest lists, by file name.

    Raises:
        DataError: ``target`` is not a brandguard directory, or a new file would overwrite a file the current
            manifest lists.
    """
    target = Path(target)
    if not (target / MANIFEST).is_file():
        raise DataError(f"{target} has no {MANIFEST}: it can only be written whole (write_directory)")
    try:
        listed = set(json.loads((target / MANIFEST).read_text(encoding="utf-8")).get("files", {}))
    except (OSError, ValueError):
        listed = set()
    clash = sorted(set(files) & listed)
    if clash:
        raise DataError(f"updating {target} would overwrite {', '.join(clash)}, which its manifest lists")
    checksums = dict(kept)
    for name, data in files.items():
        checksums[name] = _write_durably(target / name, data)
    for folder in {(target / name).parent for name in files}:
        _fsync_dir(folder)
    full = dict(manifest)
    full["files"] = checksums
    _replace_manifest(target, json.dumps(full, indent=2, sort_keys=False).encode("utf-8"))
    keep = {str(Path(name)) for name in checksums} | {MANIFEST}
    for path in sorted(target.rglob("*"), key=lambda p: -len(p.parts)):  # files first, then emptied folders
        rel = str(path.relative_to(target))
        if rel in keep:
            continue
        try:  # a file still open elsewhere (Windows) stays until the next update
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
    return checksums


def check_output_path(path: str | Path, what: str, *, folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: a file (``folder=False``) must not name a
    folder, and the nearest existing folder above it must accept new files (probed with a temporary file
    that is removed at once; nothing else is created).

    Args:
        path: the output file or folder.
        what: what it is, for the message (``"results file"``, ``"report"``...).
        folder: ``path`` is a folder to write (an index), not a file.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        DataError: ``path`` names a folder (file outputs), a file (folder outputs), or its folder cannot be
            created or written.
    """
    p = Path(path)
    if not folder and p.is_dir():
        raise DataError(f"{what} {p} is a folder; pass a file name")
    if folder and p.exists() and not p.is_dir():
        raise DataError(f"{what} {p} is a file, not a folder; pass a folder name")
    parent = Path(os.path.abspath(p)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{what} {p} cannot be written: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".brandguard-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(f"{what} {p} cannot be written: {parent} does not accept new files "
                        f"({exc.strerror or type(exc).__name__})") from exc
    return p


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
        got = file_digest(p)  # streamed: a large catalogue's keypoint store is never read into memory at once
        if got != expected:
            raise IndexCorruptError(f"index file {p} is corrupt: its checksum is {got[:19]}... but {MANIFEST} "
                                    f"records {expected[:19]}...; copy the index again or rebuild it with "
                                    "`brandguard index build`")
    return manifest
