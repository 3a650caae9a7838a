"""Write a complete, labelled demo data set: reference photos, listing photos, calibration photos.

Layout (everything under ``out_dir``)::

    refs/<brand>/<product>/ref_XX.jpg      authentic references (studio and listing-style photos)
    listings/l_0001.jpg ...                listing photos in shuffled order
    listings/labels.csv                    path,label,brand,product,manipulation,strength
    calibration/c_001.jpg ...              more authentic photos (never references), for thresholds
    calibration/labels.csv                 same columns
    dataset.json                           what was generated: seed, artwork, size, counts, brands

Every image is a pure function of ``(seed, artwork, size)``: generating twice gives byte-identical files.

Example:
    >>> import tempfile
    >>> from brandguard.synth import make_demo_dataset
    >>> ds = make_demo_dataset(tempfile.mkdtemp(), size="small")  # doctest: +SKIP
    >>> ds.labels_csv.name  # doctest: +SKIP
    'labels.csv'
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .artwork import list_brands
from .design import PackageDesign, make_design, render_package, stable_seed
from .edits import EDITS
from .photo import photograph
from .photo_models import PhotoModel, get_photo_model

__all__ = ["LABEL_COLUMNS", "SIZES", "DemoDataset", "make_demo_dataset", "make_validation_set"]

LABEL_COLUMNS = ("path", "label", "brand", "product", "manipulation", "strength")
#: Scale at which packages are rendered before being photographed (faces are 500-820 design pixels).
RENDER_SCALE = 0.75
_JPEG_QUALITY = 92
_MARKER = "dataset.json"


@dataclass(frozen=True)
class _Size:
    n_products: int | None  # None: every brand of the pool, 1 or 2 products each
    studio_refs: int
    listing_refs: int
    per_edit: int  # counterfeit listings per edit type (half subtle, half gross)
    authentic: int
    unrelated: int
    calibration_per_product: int


SIZES: dict[str, _Size] = {
    "full": _Size(None, 2, 4, 24, 120, 60, 3),
    "small": _Size(6, 1, 3, 4, 12, 6, 2),
}


@dataclass(frozen=True)
class DemoDataset:
    """Where a generated data set lives.

    Attributes:
        root: The output folder.
        refs_dir: ``root/refs``: ``<brand>/<product>/*.jpg`` authentic references.
        listings_dir: ``root/listings``: listing photos.
        labels_csv: ``listings/labels.csv`` with columns ``path,label,brand,product,manipulation,strength``.
        calibration_dir: ``root/calibration``: authentic photos kept apart from the references.
        calibration_csv: ``calibration/labels.csv``.
        n_listings: Number of listing photos.
    """

    root: Path
    refs_dir: Path
    listings_dir: Path
    labels_csv: Path
    calibration_dir: Path
    calibration_csv: Path
    n_listings: int


def _products(artwork: str, seed: int, size: _Size) -> tuple[list[PackageDesign], list[PackageDesign]]:
    """(known products, unrelated products) for a data set."""
    if artwork == "demo":
        known_pool, unknown_pool = "demo", "unrelated"
    elif artwork == "heldout":
        known_pool, unknown_pool = "heldout", "heldout_unrelated"
    else:
        raise DataError(f"artwork must be 'demo' or 'heldout', got {artwork!r}")
    brands = list_brands(known_pool)
    known: list[PackageDesign] = []
    if size.n_products is None:
        for slug in brands:
            n = 2 if np.random.default_rng(stable_seed("n-products", seed, slug)).random() < 0.25 else 1
            known.extend(make_design(slug, i, seed) for i in range(n))
    else:
        order = np.random.default_rng(stable_seed("small-brands", seed, artwork)).permutation(len(brands))
        known = [make_design(brands[int(i)], 0, seed) for i in order[: size.n_products]]
    unknown_brands = list_brands(unknown_pool)
    unknown = [make_design(s, i, seed) for s in unknown_brands for i in range(2)]
    return known, unknown


def _save_jpeg(img: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=_JPEG_QUALITY, optimize=False, progressive=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def _write_csv(path: Path, rows: list[dict[str, str]], extra: Sequence[str] = ()) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[*LABEL_COLUMNS, *extra], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _prepare(root: Path) -> None:
    """Make ``root`` ready: refuse to write over folders this module did not create."""
    root.mkdir(parents=True, exist_ok=True)
    ours = (root / _MARKER).is_file()
    for sub in ("refs", "listings", "calibration"):
        p = root / sub
        if p.exists():
            if not ours:
                raise DataError(
                    f"{p} already exists and {root} was not made by make_demo_dataset; "
                    "choose an empty output folder"
                )
            shutil.rmtree(p)
    if ours:
        (root / _MARKER).unlink()


def make_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    artwork: str = "demo",
    size: str = "full",
    progress: bool = False,
    photo_model: str | PhotoModel = "demo",
    per_edit: int | None = None,
    unrelated: int | None = None,
    authentic: int | None = None,
) -> DemoDataset:
    """Generate reference, listing and calibration photos with labels.

    Args:
        out_dir: Output folder (created; a folder written by an earlier call is regenerated in place).
        seed: Everything is a function of this seed.
        artwork: ``"demo"`` (demo + unrelated brand pools) or ``"heldout"`` (held-out pools only, no demo
            brand), for measuring generalisation to brands never seen while tuning.
        size: ``"full"`` (every brand of the pool, about 24-30 products, 6 references each; 24 counterfeit
            listings per edit type, 120 authentic, 60 unrelated; 3 calibration photos per product) or
            ``"small"`` (6 products, 4 references each, 4 listings per edit type, 12 authentic, 6 unrelated,
            12 calibration photos), for tests.
        progress: Show a progress bar (tqdm) on stderr.
        photo_model: How the photos are taken (:data:`~brandguard.synth.PHOTO_MODELS`): ``"demo"`` (the
            model designs are decided on; its output never changes for a given seed) or
            ``"studio-casual"`` (white-sweep packshot references, casual phone listings; read only to
            check). The products, edits and label counts are the same for every model; only the photos
            (and, for ``studio-casual``, the number and style of references) differ.
        per_edit: Counterfeit listings per edit type instead of the size's (half subtle, half gross).
        unrelated: Unrelated-brand listings instead of the size's.
        authentic: Authentic listings instead of the size's.

    Returns:
        A :class:`DemoDataset` with the paths written.

    Raises:
        DataError: For an unknown ``artwork``, ``size`` or ``photo_model``, or an ``out_dir`` holding other
            data.

    Example:
        >>> import tempfile
        >>> ds = make_demo_dataset(tempfile.mkdtemp(), size="small", seed=1)  # doctest: +SKIP
        >>> ds.n_listings  # doctest: +SKIP
        58
    """
    if size not in SIZES:
        raise DataError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    sz = SIZES[size]
    for name, n in (("per_edit", per_edit), ("unrelated", unrelated), ("authentic", authentic)):
        if n is not None and (not isinstance(n, int) or n < 0):
            raise DataError(f"{name} must be a non-negative integer, got {n!r}")
    sz = replace(sz, per_edit=sz.per_edit if per_edit is None else per_edit,
                 unrelated=sz.unrelated if unrelated is None else unrelated,
                 authentic=sz.authentic if authentic is None else authentic)
    model = get_photo_model(photo_model)
    known, unknown = _products(artwork, seed, sz)
    root = Path(out_dir)
    _prepare(root)
    refs_dir, listings_dir, calib_dir = root / "refs", root / "listings", root / "calibration"
    for p in (refs_dir, listings_dir, calib_dir):
        p.mkdir(parents=True)

    n_refs = (sz.studio_refs, sz.listing_refs) if model.references is None else (model.references, 0)
    jobs = list(_plan(known, unknown, sz, seed, artwork, n_refs))
    # the demo model's seeds are those it always had, so its photos stay byte-identical
    tag: tuple[str, ...] = () if model.name == "demo" else (model.name,)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth", unit="photo")

    rendered: dict[int, Image.Image] = {}

    def package_of(i: int) -> Image.Image:
        if i not in rendered:
            rendered[i] = render_package(all_products[i], RENDER_SCALE)
        return rendered[i]

    all_products = known + unknown
    listing_rows: list[tuple[bytes, dict[str, str]]] = []
    calib_rows: list[dict[str, str]] = []
    calib_n = 0
    for job in jobs:
        role, pidx, idx, style, edit, strength = job
        d = all_products[pidx]
        rng = np.random.default_rng(
            stable_seed("photo", seed, artwork, size, role, pidx, idx, edit, strength, *tag)
        )
        if edit:
            edited = EDITS[edit](
                d,
                strength,
                np.random.default_rng(stable_seed("edit", seed, artwork, pidx, idx, edit, strength)),
            )
            pkg = render_package(edited, RENDER_SCALE)
        else:
            pkg = package_of(pidx)
        img, _ = model.photograph(pkg, rng, style)
        if role == "ref":
            folder = refs_dir / d.brand / d.product_slug
            folder.mkdir(parents=True, exist_ok=True)
            _save_jpeg(img, folder / f"ref_{idx:02d}.jpg")
        elif role == "calib":
            calib_n += 1
            name = f"c_{calib_n:03d}.jpg"
            _save_jpeg(img, calib_dir / name)
            calib_rows.append(
                {
                    "path": name,
                    "label": "authentic",
                    "brand": d.brand,
                    "product": d.product_slug,
                    "manipulation": "none",
                    "strength": "",
                }
            )
        else:
            label = "counterfeit" if edit else ("unrelated" if role == "unrelated" else "authentic")
            row = {
                "path": "",
                "label": label,
                "brand": d.brand,
                "product": d.product_slug,
                "manipulation": edit or ("unrelated" if label == "unrelated" else "none"),
                "strength": strength,
            }
            listing_rows.append((_encode(img), row))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    rows = _write_shuffled(listing_rows, listings_dir, "l", stable_seed("shuffle", seed, artwork, size))
    _write_csv(listings_dir / "labels.csv", rows)
    _write_csv(calib_dir / "labels.csv", calib_rows)

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    meta = {
        "generator": "brandguard.synth",
        "seed": seed,
        "artwork": artwork,
        "size": size,
        "photo_model": model.name,
        "products": [{"brand": d.brand, "product": d.product_slug, "name": d.product} for d in known],
        "unrelated_brands": sorted({d.brand for d in unknown}),
        "counts": {
            "references": sum(1 for j in jobs if j[0] == "ref"),
            "listings": counts,
            "calibration": len(calib_rows),
        },
    }
    tmp = root / (_MARKER + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    tmp.replace(root / _MARKER)
    return DemoDataset(
        root=root,
        refs_dir=refs_dir,
        listings_dir=listings_dir,
        labels_csv=listings_dir / "labels.csv",
        calibration_dir=calib_dir,
        calibration_csv=calib_dir / "labels.csv",
        n_listings=len(rows),
    )


def _write_shuffled(listing_rows: list[tuple[bytes, dict[str, str]]], listings_dir: Path, prefix: str,
                    seed: int | Sequence[int]) -> list[dict[str, str]]:
    """Write encoded listing photos in a seeded shuffled order (so names say nothing about labels), each
    atomically, as ``<prefix>_NNNN.jpg``; returns their label rows with ``path`` set."""
    order = np.random.default_rng(seed).permutation(len(listing_rows))
    width = max(4, len(str(len(listing_rows))))
    rows = []
    for k, j in enumerate(order, start=1):
        data, row = listing_rows[int(j)]
        name = f"{prefix}_{k:0{width}d}.jpg"
        tmp = listings_dir / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(listings_dir / name)
        rows.append({**row, "path": name})
    return rows


def _encode(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=_JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


Job = tuple[str, int, int, str, str, str]  # role, product index, photo index, style, edit, strength


def _plan(
    known: list[PackageDesign], unknown: list[PackageDesign], sz: _Size, seed: int, artwork: str,
    n_refs: tuple[int, int],
) -> Iterator[Job]:
    """Every photo to take, in a fixed order. Product indices count known products first, then unknown ones.

    ``n_refs`` is ``(studio, listing-style)`` references per product.
    """
    nk = len(known)
    n_studio, n_listing = n_refs
    for p in range(nk):
        for i in range(n_studio + n_listing):
            yield ("ref", p, i, "studio" if i < n_studio else "listing", "", "")
    for p in range(nk):
        for i in range(sz.calibration_per_product):
            yield ("calib", p, i, "listing", "", "")
    rng = np.random.default_rng(stable_seed("plan", seed, artwork))
    # authentic listings: spread evenly over products
    perm = rng.permutation(nk)
    for i in range(sz.authentic):
        yield ("authentic", int(perm[i % nk]), i, "listing", "", "")
    # counterfeits: per edit, alternate strengths, cycle through products from a random offset
    for e, name in enumerate(EDITS):
        perm = rng.permutation(nk)
        for i in range(sz.per_edit):
            strength = "subtle" if i % 2 == 0 else "gross"
            yield (
                "counterfeit",
                int(perm[(i // 2 + e) % nk] if sz.per_edit // 2 < nk else perm[i % nk]),
                i,
                "listing",
                name,
                strength,
            )
    perm = rng.permutation(len(unknown))
    for i in range(sz.unrelated):
        yield ("unrelated", nk + int(perm[i % len(unknown)]), i, "listing", "", "")


def make_validation_set(out_dir: str | Path, *, seed: int = 0, artwork: str = "demo", size: str = "full",
                        authentic: int | None = None, per_edit: int | None = None, progress: bool = False) -> Path:
    """Labelled validation photos of the products of ``make_demo_dataset(seed=seed, artwork=artwork, size=size)``.

    Authentic and counterfeit listing photos of the same products, taken with other photo seeds than the
    data set's listings (which stay the untouched test set): what ``brandguard train --val`` picks the best
    epoch and guards against regressions with.

    Args:
        out_dir: written as ``out_dir/labels.csv`` and ``out_dir/v_*.jpg`` (must be empty or missing).
        authentic: authentic photos (default: as many as the data set's authentic listings, at least 10).
        per_edit: counterfeit photos per edit type, half subtle and half gross (default: half the data set's).

    Returns:
        the ``labels.csv`` path.
    """
    if size not in SIZES:
        raise DataError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    sz = SIZES[size]
    known, _ = _products(artwork, seed, sz)
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} is not empty; choose an empty folder for the validation set")
    root.mkdir(parents=True, exist_ok=True)
    n_auth = max(10, sz.authentic) if authentic is None else int(authentic)
    n_edit = max(2, sz.per_edit // 2) if per_edit is None else int(per_edit)
    rng = np.random.default_rng(stable_seed("val-plan", seed, artwork))
    jobs: list[tuple[int, int, str, str]] = []
    perm = rng.permutation(len(known))
    jobs += [(int(perm[i % len(known)]), i, "", "") for i in range(n_auth)]
    for e, name in enumerate(EDITS):
        perm = rng.permutation(len(known))
        jobs += [(int(perm[(i + e) % len(known)]), i, name, "subtle" if i % 2 == 0 else "gross") for i in range(n_edit)]
    order = rng.permutation(len(jobs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="validation photos", unit="photo")
    rendered: dict[int, Image.Image] = {}
    rows = []
    for k, j in enumerate(order, start=1):
        pidx, idx, edit, strength = jobs[int(j)]
        d = known[pidx]
        if edit:
            edited = EDITS[edit](d, strength, np.random.default_rng(stable_seed("val-edit", seed, artwork, pidx, idx, edit, strength)))
            pkg = render_package(edited, RENDER_SCALE)
        else:
            if pidx not in rendered:
                rendered[pidx] = render_package(d, RENDER_SCALE)
            pkg = rendered[pidx]
        img, _ = photograph(pkg, np.random.default_rng(stable_seed("val-photo", seed, artwork, size, pidx, idx, edit, strength)),
                            "listing")
        name = f"v_{k:04d}.jpg"
        _save_jpeg(img, root / name)
        rows.append({"path": name, "label": "counterfeit" if edit else "authentic", "brand": d.brand,
                     "product": d.product_slug, "manipulation": edit or "none", "strength": strength})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    _write_csv(root / "labels.csv", rows)
    return root / "labels.csv"


def product_designs(artwork: str = "demo", seed: int = 0, size: str = "full") -> tuple[list[PackageDesign], list[PackageDesign]]:
    """The package designs of a demo dataset: ``(known products, unrelated products)``.

    Lets tests and notebooks photograph more authentic (or edited) copies of exactly the products a
    :func:`make_demo_dataset` call indexed.
    """
    if size not in SIZES:
        raise DataError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return _products(artwork, seed, SIZES[size])
