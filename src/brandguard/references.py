"""Reading the folder layouts of shared/DESIGN.md: reference folders, CSV manifests and labels files.

Reference folder: ``REFS/<brand>/<product>/*.jpg``; images directly under ``REFS/<brand>/`` belong to
product ``default``. A CSV manifest with columns ``path,brand,product`` (paths relative to the CSV) is
accepted instead.

Labelled folder: ``labels.csv`` with at least ``path,label`` (``authentic``, ``counterfeit`` or
``unrelated``) and optionally ``brand,product``; extra columns are kept.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from brandguard.errors import DataError
from brandguard.images import is_image_path, list_images

__all__ = ["LABELS", "LabelledItem", "ReferenceItem", "read_labels", "read_references"]

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
    if src.is_file() and src.suffix.lower() == ".csv":
        rows = _read_csv(src, required=("path", "brand", "product"))
        items = [ReferenceItem((src.parent / r["path"]).resolve(), r["brand"].strip(), (r["product"] or "default").strip())
                 for r in rows]
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


def read_labels(csv_path: str | Path) -> list[LabelledItem]:
    """Read a ``labels.csv`` (paths relative to it).

    Raises:
        DataError: missing file or columns, or a label outside authentic/counterfeit/unrelated.
    """
    p = Path(csv_path)
    if p.is_dir():
        p = p / "labels.csv"
    rows = _read_csv(p, required=("path", "label"))
    out = []
    for i, r in enumerate(rows, start=2):
        label = (r.get("label") or "").strip().lower()
        if label not in LABELS:
            raise DataError(f"{p}, line {i}: label {r.get('label')!r} is not one of {', '.join(LABELS)}")
        extra = {k: v for k, v in r.items() if k not in {"path", "label", "brand", "product"} and k}
        out.append(LabelledItem((p.parent / r["path"]).resolve(), label, (r.get("brand") or "").strip(),
                                (r.get("product") or "").strip(), extra))
    return out


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected a CSV with columns {','.join(required)}")
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise DataError(f"{path} lacks column(s) {missing}; expected at least {','.join(required)} "
                            f"(found {','.join(cols) or 'none'})")
        return [dict(r) for r in reader]


def is_reference_file(path: Path) -> bool:
    """Whether a path looks like an image brandguard would index."""
    return is_image_path(path)
