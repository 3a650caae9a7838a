"""brandguard.synth: deterministic demo data on real brand artwork, counterfeit edits, simulated photos."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

synth = pytest.importorskip("brandguard.synth")

from brandguard.errors import DataError
from brandguard.synth import EDITS, list_brands, make_demo_dataset, make_design, photograph, render_package
from brandguard.synth.artwork import mirror_iou
from brandguard.synth.dataset import LABEL_COLUMNS, _products
from brandguard.synth.dataset import SIZES as DATASET_SIZES
from brandguard.synth.design import logo_box
from brandguard.synth.photo import OUTPUT_SIZES, quad_area

EDIT_NAMES = {
    "recolored_logo",
    "mirrored_logo",
    "distorted_logo",
    "misspelled_wordmark",
    "wrong_font",
    "lookalike_logo",
    "missing_part",
    "moved_logo",
    "packaging_color",
    "extra_mark",
}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    return make_demo_dataset(tmp_path_factory.mktemp("synth") / "a", seed=3, size="small")


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        return list(reader)


def test_same_seed_gives_byte_identical_files(small, tmp_path: Path) -> None:
    again = make_demo_dataset(tmp_path / "b", seed=3, size="small")
    first, second = _digests(small.root), _digests(again.root)
    assert first == second
    assert sum(k.endswith(".jpg") for k in first) > 80


def test_labels_follow_the_contract(small) -> None:
    rows = _rows(small.labels_csv)
    assert len(rows) == small.n_listings
    for r in rows:
        assert (small.labels_csv.parent / r["path"]).is_file()
        # names must not give the label away
        assert re.fullmatch(r"l_\d{4}\.jpg", r["path"])
        assert r["label"] in {"authentic", "counterfeit", "unrelated"}
        if r["label"] == "authentic":
            assert (r["manipulation"], r["strength"]) == ("none", "")
        elif r["label"] == "unrelated":
            assert (r["manipulation"], r["strength"]) == ("unrelated", "")
        else:
            assert r["manipulation"] in EDIT_NAMES and r["strength"] in {"subtle", "gross"}
    size = DATASET_SIZES["small"]
    by_label = {
        lab: sum(r["label"] == lab for r in rows) for lab in ("authentic", "counterfeit", "unrelated")
    }
    assert by_label == {
        "authentic": size.authentic,
        "counterfeit": size.per_edit * len(EDITS),
        "unrelated": size.unrelated,
    }
    for edit in EDITS:
        strengths = [r["strength"] for r in rows if r["manipulation"] == edit]
        assert strengths.count("subtle") == strengths.count("gross") == size.per_edit // 2
    # counterfeits and authentic listings imitate products the references know; unrelated ones do not
    products = {(p.parent.name, p.name) for p in small.refs_dir.glob("*/*") if p.is_dir()}
    assert len(products) == size.n_products
    for r in rows:
        assert ((r["brand"], r["product"]) in products) == (r["label"] != "unrelated")
    for brand, product in products:
        refs = sorted((small.refs_dir / brand / product).glob("ref_*.jpg"))
        assert len(refs) == size.studio_refs + size.listing_refs


def test_calibration_is_authentic_and_apart_from_references(small) -> None:
    rows = _rows(small.calibration_csv)
    assert len(rows) == 12
    assert {r["label"] for r in rows} == {"authentic"}
    for r in rows:
        assert (small.calibration_csv.parent / r["path"]).is_file()
        assert (small.refs_dir / r["brand"] / r["product"]).is_dir()


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_changes_the_package_and_gross_changes_more(edit: str) -> None:
    assert set(EDITS) == EDIT_NAMES
    subtle, gross = [], []
    for k, slug in enumerate(list_brands("demo")[:8]):
        design = make_design(slug, 0, seed=0)
        base = np.asarray(render_package(design, 0.3), np.float32)
        for strength, out in (("subtle", subtle), ("gross", gross)):
            edited = EDITS[edit](design, strength, np.random.default_rng([11, k]))
            assert edited != design
            img = np.asarray(render_package(edited, 0.3), np.float32)
            out.append(float(np.abs(img - base)[..., :3].mean()))
    assert min(subtle) > 0 and min(gross) > 0
    assert np.mean(gross) > np.mean(subtle)


def test_mirroring_changes_every_logo() -> None:
    for pool in ("demo", "heldout"):
        for slug in list_brands(pool):
            assert mirror_iou(slug) < 0.85, slug
            design = make_design(slug, 0, seed=0)
            mirrored = EDITS["mirrored_logo"](design, "subtle", np.random.default_rng(0))
            a = np.asarray(render_package(design, 0.5), np.float32)
            b = np.asarray(render_package(mirrored, 0.5), np.float32)
            x0, y0, x1, y1 = logo_box(design, a.shape[1], a.shape[0])
            region = np.abs(a - b)[max(y0, 0) : y1, max(x0, 0) : x1, :3].max(-1)
            assert (region > 64).mean() > 0.05, slug


@pytest.mark.parametrize("style, lo", [("listing", 0.30), ("studio", 0.60)])
def test_photo_quad_inside_frame_and_package_coverage(style: str, lo: float) -> None:
    designs = [make_design(s, 0, seed=0) for s in list_brands("demo")[:6]]
    packages = [render_package(d, 0.75) for d in designs]
    for i in range(24):
        img, quad = photograph(packages[i % len(packages)], np.random.default_rng([5, i]), style)
        h, w = img.shape[:2]
        assert img.dtype == np.uint8 and img.shape[2] == 3 and (w, h) in OUTPUT_SIZES
        assert quad.shape == (4, 2)
        assert (quad[:, 0] >= 0).all() and (quad[:, 0] <= w).all()
        assert (quad[:, 1] >= 0).all() and (quad[:, 1] <= h).all()
        assert lo <= quad_area(quad) / (w * h) <= 0.85


def test_photograph_is_a_function_of_its_rng() -> None:
    pkg = render_package(make_design("nike", 0, seed=0), 0.5)
    a, qa = photograph(pkg, np.random.default_rng(42), "listing")
    b, qb = photograph(pkg, np.random.default_rng(42), "listing")
    assert np.array_equal(a, b) and np.array_equal(qa, qb)


def test_heldout_and_demo_pools_share_no_brand() -> None:
    demo = set(list_brands("demo")) | set(list_brands("unrelated"))
    heldout = set(list_brands("heldout")) | set(list_brands("heldout_unrelated"))
    assert not demo & heldout
    assert not set(list_brands("demo")) & set(list_brands("unrelated"))
    assert len(list_brands("demo")) >= 20 and len(list_brands("heldout")) >= 20
    known, unknown = _products("heldout", 0, DATASET_SIZES["full"])
    assert not {d.brand for d in known + unknown} & demo
    known, unknown = _products("demo", 0, DATASET_SIZES["full"])
    assert 24 <= len(known) <= 32 and not {d.brand for d in known + unknown} & heldout


def test_bad_arguments_raise_data_error(tmp_path: Path) -> None:
    design = make_design("nike", 0)
    with pytest.raises(DataError):
        EDITS["recolored_logo"](design, "medium", np.random.default_rng(0))
    with pytest.raises(DataError):
        make_demo_dataset(tmp_path, artwork="nope")
    with pytest.raises(DataError):
        make_demo_dataset(tmp_path, size="huge")
    with pytest.raises(DataError):
        list_brands("nope")
    with pytest.raises(DataError):
        photograph(render_package(design, 0.3), np.random.default_rng(0), "cinema")
