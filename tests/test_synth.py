"""brandguard.synth: deterministic demo data on real brand artwork, counterfeit edits, simulated photos."""

from __future__ import annotations

import csv
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


# ---------------------------------------------------------------------------------------------------------
# The second photo model (studio-casual): another photographer, never tuned on
# ---------------------------------------------------------------------------------------------------------


def _border(img: np.ndarray, k: int = 12) -> np.ndarray:
    return np.concatenate([img[:k].reshape(-1, 3), img[-k:].reshape(-1, 3), img[:, :k].reshape(-1, 3),
                           img[:, -k:].reshape(-1, 3)]).astype(np.float32)


def test_second_photo_model_takes_measurably_other_photos() -> None:
    from brandguard.synth import get_photo_model

    demo, casual = get_photo_model("demo"), get_photo_model("studio-casual")
    packages = [render_package(make_design(s, 0, seed=0), 0.75) for s in list_brands("demo")[:4]]
    cover = {"demo": [], "studio-casual": []}
    white = {"demo": [], "studio-casual": []}
    for i in range(8):
        pkg = packages[i % len(packages)]
        for model in (demo, casual):
            img, quad = model.photograph(pkg, np.random.default_rng([9, i]), "listing")
            h, w = img.shape[:2]
            assert (quad >= -1).all() and (quad[:, 0] <= w + 1).all() and (quad[:, 1] <= h + 1).all()
            cover[model.name].append(quad_area(quad) / (w * h))
            if model is casual:  # other cameras: none of the demo's frame sizes, long side 720-1024 px
                assert (w, h) not in OUTPUT_SIZES and 720 <= max(w, h) <= 1024
            ref, _ = model.photograph(pkg, np.random.default_rng([10, i]), "studio")
            white[model.name].append(float(_border(ref).mean()))
    # casual listings show more of the room around the product; packshot references sit on white
    assert np.mean(cover["studio-casual"]) < np.mean(cover["demo"]) - 0.1
    assert min(white["studio-casual"]) > 235 and np.mean(white["studio-casual"]) > np.mean(white["demo"]) + 5


def test_second_photo_model_dataset_is_seeded_and_studio_referenced(tmp_path: Path) -> None:
    kw = {"seed": 4, "size": "small", "photo_model": "studio-casual", "per_edit": 1, "authentic": 2, "unrelated": 1}
    a = make_demo_dataset(tmp_path / "a", **kw)
    b = make_demo_dataset(tmp_path / "b", **kw)
    assert _digests(a.root) == _digests(b.root)
    refs = sorted(a.refs_dir.rglob("*.jpg"))
    assert len(refs) == 3 * DATASET_SIZES["small"].n_products  # three packshots per product, nothing else
    for p in refs:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
        assert arr.shape[0] == arr.shape[1] and _border(arr).mean() > 235
    rows = _rows(a.labels_csv)
    assert len(rows) == 2 + len(EDITS) + 1 and {r["label"] for r in rows} == {"authentic", "counterfeit", "unrelated"}
    # the same products as the demo model's data set, photographed otherwise
    demo = make_demo_dataset(tmp_path / "demo", **{**kw, "photo_model": "demo"})
    assert {p.parent.relative_to(demo.refs_dir) for p in demo.refs_dir.rglob("*.jpg")} == {
        p.parent.relative_to(a.refs_dir) for p in refs}
    assert _digests(demo.listings_dir).keys() == _digests(a.listings_dir).keys()
    assert (demo.listings_dir / "labels.csv").read_bytes() == (a.listings_dir / "labels.csv").read_bytes()
    photos = {k: v for k, v in _digests(demo.listings_dir).items() if k.endswith(".jpg")}
    assert len(photos) == 13 and set(photos.values()).isdisjoint(_digests(a.listings_dir).values())
    with pytest.raises(DataError, match="studio-casual"):
        make_demo_dataset(tmp_path / "c", size="small", photo_model="nope")


# ---------------------------------------------------------------------------------------------------------
# Scenes of real listing photos
# ---------------------------------------------------------------------------------------------------------


def _angle(quad: np.ndarray) -> float:
    """Direction (deg, image coordinates) of the face's top edge, top-left to top-right corner."""
    d = quad[1] - quad[0]
    return math.degrees(math.atan2(float(d[1]), float(d[0]))) % 360


def test_each_scene_keeps_its_promise() -> None:
    from brandguard.synth.scenes import SCENES, scene_photo

    design = make_design("nike", 0, seed=0)
    pkg = render_package(design, 0.5)
    pw, ph = pkg.size
    seen = set()
    for scene in SCENES:
        for i in range(2):
            rng = np.random.default_rng([11, i])
            img, quads = scene_photo(pkg, rng, scene)
            h, w = img.shape[:2]
            assert img.dtype == np.uint8 and img.shape[2] == 3, scene
            for q in quads:
                assert (q >= -2).all() and (q[:, 0] <= w + 2).all() and (q[:, 1] <= h + 2).all(), scene
            heights = [float(q[:, 1].max() - q[:, 1].min()) / h for q in quads]
            if scene == "small_product":
                assert 0.18 <= heights[0] <= 0.30
            elif scene == "thumbnail":
                assert 256 <= max(h, w) <= 320
            elif scene == "phone":
                assert 1600 <= max(h, w) <= 2400
            elif scene == "rotated":  # the face's top edge runs down, left or up: 90, 180 or 270 deg
                assert min(abs(_angle(quads[0]) - a) for a in (90, 180, 270)) < 25
                base, _ = photograph(pkg, np.random.default_rng([11, i]), "listing")
                assert any(np.array_equal(img, np.rot90(base, k)) for k in (1, 2, 3))
            elif scene == "watermark":
                base, _ = photograph(pkg, np.random.default_rng([11, i]), "listing")
                diff = np.abs(img.astype(np.int16) - base.astype(np.int16)).max(-1)
                assert img.shape == base.shape and 0.03 < (diff > 12).mean() < 0.6  # tiled text, not a wash
            elif scene == "collage":
                assert 2 <= len(quads) <= 4
                boxes = [(q.min(0), q.max(0)) for q in quads]
                for j, (lo1, hi1) in enumerate(boxes):  # views do not overlap
                    for lo2, hi2 in boxes[j + 1 :]:
                        assert (hi1 <= lo2 + 1).any() or (hi2 <= lo1 + 1).any()
            elif scene == "multi_unit":
                xs = [float(q[:, 0].mean()) for q in quads]
                assert 2 <= len(quads) <= 3 and xs == sorted(xs) and min(np.diff(xs)) > 0.2 * w
            elif scene == "studio_white":
                assert _border(img).mean() > 235 and abs(_angle(quads[0]) % 360) < 1
            elif scene == "bottle":  # wrapped round a cylinder: the visible label is narrower than the flat face
                q = quads[0]
                assert (q[1, 0] - q[0, 0]) / (q[3, 1] - q[0, 1]) < 0.97 * pw / ph
            seen.add(scene)
    assert seen == set(SCENES)


def test_scene_dataset_labels_every_photo_with_its_scene(tmp_path: Path) -> None:
    from brandguard.synth.scenes import SCENE_CALIBRATION, SCENE_COUNTS, make_scene_dataset

    ds = make_scene_dataset(tmp_path / "s", seed=2, size="small", scenes=("thumbnail", "small_product"))
    with open(ds.labels_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == (*LABEL_COLUMNS, "scene")
        rows = list(reader)
    n_auth, n_fake, n_unrel = SCENE_COUNTS["small"]
    for scene in ("thumbnail", "small_product"):
        got = [r for r in rows if r["scene"] == scene]
        assert sorted(r["label"] for r in got) == sorted(
            ["authentic"] * n_auth + ["counterfeit"] * n_fake + ["unrelated"] * n_unrel)
        for r in got:
            with Image.open(ds.listings_dir / r["path"]) as im:
                assert (max(im.size) <= 320) == (scene == "thumbnail")
    # references are the demo data set's; calibration photos are its flat ones plus authentic photos staged in
    # every scene (calibrate on photos of the kinds scored), each labelled with its scene
    demo = make_demo_dataset(tmp_path / "d", seed=2, size="small")
    assert _digests(demo.refs_dir) == _digests(ds.refs_dir)
    flat = {k: v for k, v in _digests(demo.calibration_dir).items() if k != "labels.csv"}
    assert flat.items() <= _digests(ds.calibration_dir).items()
    with open(ds.calibration_csv, newline="", encoding="utf-8") as fh:
        cal = list(csv.DictReader(fh))
    staged = [r for r in cal if r["scene"] != "flat"]
    assert sorted(r["scene"] for r in staged) == sorted(["thumbnail", "small_product"] * SCENE_CALIBRATION["small"])
    assert all(r["label"] == "authentic" and (ds.calibration_dir / r["path"]).is_file() for r in cal)
    assert len(cal) - len(staged) == len(flat)
    with pytest.raises(DataError):
        make_scene_dataset(tmp_path / "x", size="small", scenes=("underwater",))
