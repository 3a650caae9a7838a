"""Reading the folder layouts of shared/DESIGN.md: reference folders, CSV manifests and labels files.

Reference folder: ``REFS/<brand>/<product>/*.jpg``; images directly under ``REFS/<brand>/`` belong to
product ``default``. A CSV manifest with columns ``path,brand,product`` (paths relative to the CSV) is
accepted instead.

Labelled folder: ``labels.csv`` with at least ``path,label`` (``authentic``, ``counterfeit`` or
``unrelated``) and optionally ``brand,product``; extra columns are kept.

CSV files as people save them are read: UTF-8 with or without a byte-order mark, UTF-16 with one, CRLF line
ends, and ``,``, ``;`` or tab separators (whichever makes the required header). Anything else (Latin-1,
UTF-16 without a BOM, a photo passed by mistake) is refused with a one-line :class:`DataError`. A path
with spaces around it, Windows ``\\`` separators, or written as brandguard's own CSVs write names
(:mod:`brandguard.csvcells`) is matched to the file it names; a path listed twice is an error.
"""

from __future__ import annotations

import codecs
import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from brandguard.csvcells import decode_cell
from brandguard.errors import DataError
from brandguard.images import is_image_path, list_images

__all__ = ["LABELS", "LabelledItem", "ReferenceItem", "read_csv_text", "read_labels", "read_references"]

LABELS = ("authentic", "counterfeit", "unrelated")


@dataclass(frozen=True)
class ReferenceItem:
    """One authentic reference photo: its file, brand and product."""

    path: Path
    brand: str
    product: str


@dataclass(frozen=True)
class LabelledItem:
    """One labelled photo of an evaluation or calibration set; ``extra`` keeps every other column."""

    path: Path
    label: str
    brand: str = ""
    product: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def read_references(source: str | Path) -> list[ReferenceItem]:
    """List the reference photos of a folder or CSV manifest, in a stable order.

    Example:
        >>> items = read_references("refs/")  # doctest: +SKIP
        >>> items[0].brand, items[0].product  # doctest: +SKIP
        ('nike', 'air-runner')

    Raises:
        DataError: the folder/manifest does not exist or holds no usable photo.
    """
    src = Path(source)
    if src.is_file() and is_image_path(src):
        raise DataError(f"{src} is a photo; expected a folder REFS/<brand>/<product>/*.jpg or a CSV manifest with "
                        "columns path,brand,product")
    if src.is_file() and src.suffix.lower() == ".csv":
        rows = _read_csv(src, required=("path", "brand", "product"), what="reference manifest")
        items = [ReferenceItem(_locate(src.parent, r["path"])[0], r["brand"].strip(),
                               (r["product"] or "default").strip()) for r in rows if r["path"].strip()]
    elif src.is_dir():
        items = []
        for p in list_images(src):
            rel = p.relative_to(src).parts
            if len(rel) == 2:
                items.append(ReferenceItem(p, rel[0], "default"))
            elif len(rel) >= 3:
                items.append(ReferenceItem(p, rel[0], rel[1]))
            # images directly under REFS/ have no brand: ignored (reported below if nothing else)
    else:
        raise DataError(f"references {src} not found; expected a folder REFS/<brand>/<product>/*.jpg or a CSV "
                        "manifest with columns path,brand,product")
    if not items:
        raise DataError(f"no reference photos found in {src}; expected REFS/<brand>/<product>/*.jpg "
                        "(or REFS/<brand>/*.jpg) with .jpg/.png/.webp/.bmp files")
    return items


def read_labels(csv_path: str | Path, *, missing: str = "keep") -> list[LabelledItem]:
    """Read a ``labels.csv`` (paths relative to it); see the module docstring for the files accepted.

    Args:
        csv_path: the CSV, or a folder holding ``labels.csv``.
        missing: what to do with a labelled path that names no file: ``keep`` it (the caller reports it),
            ``error`` (a :class:`DataError` naming how many and the first few) or ``warn`` (drop them with
            one warning).

    Raises:
        DataError: missing file or columns, unreadable encoding, a label outside
            authentic/counterfeit/unrelated, a path listed twice, or (``missing="error"``) a path that names
            no file.
    """
    if missing not in ("keep", "error", "warn"):
        raise DataError(f"missing must be keep, error or warn, got {missing!r}")
    p = Path(csv_path)
    if p.is_dir():
        p = p / "labels.csv"
    rows = _read_csv(p, required=("path", "label"), what="labels file")
    out = []
    seen: dict[Path, int] = {}
    dupes: list[str] = []
    absent: list[str] = []
    spaced = 0
    for i, r in enumerate(rows, start=2):
        label = (r.get("label") or "").strip().lower()
        if label not in LABELS:
            raise DataError(f"{p}, line {i}: label {r.get('label')!r} is not one of {', '.join(LABELS)}")
        raw = r.get("path") or ""
        if not raw.strip():
            raise DataError(f"{p}, line {i}: empty path")
        path, how = _locate(p.parent, raw)
        spaced += how == "stripped"
        if how == "absent":
            absent.append(raw)
        if path in seen:
            dupes.append(f"{raw!r} (lines {seen[path]} and {i})")
        seen.setdefault(path, i)
        extra = {k: v for k, v in r.items() if k not in {"path", "label", "brand", "product"} and k}
        out.append(LabelledItem(path, label, (r.get("brand") or "").strip(), (r.get("product") or "").strip(), extra))
    if dupes:
        raise DataError(f"{p} lists {len(dupes)} path(s) more than once: {', '.join(dupes[:3])}"
                        + (" ..." if len(dupes) > 3 else "") + "; keep one row per photo")
    if spaced:
        warnings.warn(f"{p}: {spaced} path(s) had spaces around them; matched to the files without them",
                      stacklevel=2)
    if absent and missing != "keep":
        msg = (f"{p} lists {len(absent)} path(s) that name no file under {p.parent}: "
               + ", ".join(repr(a) for a in absent[:3]) + (" ..." if len(absent) > 3 else ""))
        if missing == "error":
            raise DataError(msg + "; fix the paths (relative to the labels file) or pass --allow-missing")
        warnings.warn(msg + "; they are left out", stacklevel=2)
        gone = {a for a in absent}
        out = [it for it, r in zip(out, rows) if (r.get("path") or "") not in gone]
    return out


def _locate(base: Path, raw: str) -> tuple[Path, str]:
    """The file a labelled path names: as written, else without surrounding spaces, else decoded as
    brandguard's CSVs write names, else with ``\\`` as separators. Returns ``(path, how)`` with ``how`` one
    of ``exact``, ``stripped``, ``absent`` (then the path as written)."""
    stripped = raw.strip()
    candidates = [(raw, "exact"), (stripped, "stripped"), (decode_cell(stripped), "exact"),
                  (stripped.replace("\\", "/"), "exact")]
    for text, how in candidates:
        q = base / text
        if q.exists():
            return q.resolve(), ("exact" if text == raw else how)
    return (base / raw).resolve(), "absent"


def read_csv_text(path: Path, what: str = "CSV file") -> str:
    """The text of a CSV file people saved: UTF-8 (BOM or not) or UTF-16 with a BOM; CRLF kept for
    :mod:`csv`.

    Raises:
        DataError: not a file, a photo, or another encoding (one line saying what to do).
    """
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if is_image_path(path):
        raise DataError(f"{path} is a photo; expected a {what} (CSV), or a folder holding one")
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{what} {path} starts like UTF-16 but is not ({exc.reason}); save it as UTF-8") from exc
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\x00" in data[:4096]:
        raise DataError(f"{what} {path} holds NUL bytes: UTF-16 without a byte-order mark, or not text; save it "
                        "as UTF-8 (in Excel: CSV UTF-8)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}, perhaps "
                        "Latin-1 or Windows-1252); save it as UTF-8 (in Excel: CSV UTF-8)") from exc


def _read_csv(path: Path, required: tuple[str, ...], what: str = "CSV file") -> list[dict[str, str]]:
    text = read_csv_text(path, what)
    first = text.splitlines()[0] if text else ""
    delimiter = ","
    found: list[str] = []
    for d in (",", ";", "\t"):
        cols = [c.strip() for c in next(csv.reader([first], delimiter=d), [])]
        if all(c in cols for c in required):
            delimiter, found = d, cols
            break
        if len(cols) > len(found):
            found = cols
    else:
        missing = [c for c in required if c not in found]
        raise DataError(f"{path} lacks column(s) {missing}; expected a header with at least {','.join(required)} "
                        f"separated by , or ; (found {','.join(found) or 'none'})")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [c.strip() for c in next(reader)]
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue  # blank line
        rows.append({k: (values[j] if j < len(values) else "") for j, k in enumerate(header)})
    return rows


def is_reference_file(path: Path) -> bool:
    """Whether a path looks like an image brandguard would index."""
    return is_image_path(path)
