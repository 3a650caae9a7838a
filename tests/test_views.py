"""Views of a product: references that do not align with each other (another face) are kept as views of
their own, found in listing photos, saved and reloaded, removed and added together; nothing depends on file
names; a lone catalogue shot on a plain background is cut to its product."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from brandguard.config import Config
from brandguard.detector import Detector
from brandguard.index import ReferenceIndex
from brandguard.references import ReferenceItem


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=92)


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One product ``duo/pack`` whose references show two faces that do not align (two unrelated package
    designs stand in for a carton's front and side), a second product, and listing photos of each face."""
    from brandguard.synth import photograph, product_designs, render_package

    root = tmp_path_factory.mktemp("views")
    designs, _ = product_designs("demo", seed=0, size="small")
    faces = {"a": render_package(designs[0], 0.6), "b": render_package(designs[1], 0.6),
             "o": render_package(designs[2], 0.6)}
    rng = np.random.default_rng(7)
    refs = root / "refs"
    for face, n in (("a", 2), ("b", 2), ("o", 2)):
        for k in range(n):
            folder = refs / ("other/x" if face == "o" else "duo/pack")
            _save(photograph(faces[face], rng, "studio")[0], folder / f"{face}{k}.jpg")
    listings = {face: [photograph(faces[face], rng, "listing")[0] for _ in range(2)] for face in ("a", "b")}
    return {"root": root, "refs": refs, "listings": listings, "faces": faces}


@pytest.fixture(scope="module")
def views_config() -> Config:
    # no OCR and no simulated listing photos: what views need, at a fraction of the build time
    return Config().with_overrides({"compare.text_check": "off", "compare.simulated_views": 0})


@pytest.fixture(scope="module")
def views_index(two_faces, views_config, embedder) -> ReferenceIndex:
    return ReferenceIndex.build(two_faces["refs"], views_config, embedder=embedder)


def _views(index: ReferenceIndex, key: str) -> list[list[str]]:
    """Reference file names of each view of a product, in view order."""
    return [sorted(os.path.basename(r.path) for r in m.refs) for m in sorted(index.views()[key], key=lambda m: m.view)]


def test_faces_that_do_not_align_are_kept_as_views_and_both_are_found(views_index, two_faces, embedder):
    assert sorted(_views(views_index, "duo/pack")) == [["a0.jpg", "a1.jpg"], ["b0.jpg", "b1.jpg"]]
    info = views_index.info()
    assert info["products"] == 2 and info["references"] == 6 and info["references_compared"] == 6
    assert {r["product"]: sorted(r["views"]) for r in info["per_product"]} == {"pack": [2, 2], "x": [2]}
    assert info["thin_products"] == ["other/x (2)"]  # two views of two: four references compared, not thin
    det = Detector(views_index, embedder)
    for face in ("a", "b"):
        preds = det.predict_batch(two_faces["listings"][face])
        assert [(p.brand, p.product) for p in preds] == [("duo", "pack")] * 2, face
        # compared with the references of the face it shows
        assert all(os.path.basename(p.reference).startswith(face) for p in preds), [p.reference for p in preds]


def test_renamed_and_reordered_reference_files_change_nothing(views_index, two_faces, views_config, embedder, tmp_path):
    renamed = tmp_path / "refs"
    names = {}
    for src in sorted(two_faces["refs"].rglob("*.jpg")):
        # reverse the order the names sort in, and move one face's photos into the other's name range
        new = f"{'zyxwvu'['a0a1b0b1o0o1'.index(src.stem) // 2]}_{src.stem[::-1]}.jpg"
        names[new] = src.name
        dst = renamed / src.parent.relative_to(two_faces["refs"]) / new
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    other = ReferenceIndex.build(renamed, views_config, embedder=embedder)
    assert [sorted(names[n] for n in v) for v in _views(other, "duo/pack")] == _views(views_index, "duo/pack")
    photos = two_faces["listings"]["a"] + two_faces["listings"]["b"]
    before = Detector(views_index, embedder).predict_batch(photos)
    after = Detector(other, embedder).predict_batch(photos)
    assert len(before) == len(after) == 4
    for a, b in zip(before, after):
        assert (a.verdict, a.brand, a.product, a.inliers) == (b.verdict, b.brand, b.product, b.inliers)
        assert os.path.basename(a.reference) == names[os.path.basename(b.reference)]
        assert a.score == pytest.approx(b.score, abs=1e-9) and a.similarity == pytest.approx(b.similarity, abs=1e-6)


def test_views_round_trip_save_load_and_stay_together_through_remove_and_add(views_index, two_faces, embedder,
                                                                             tmp_path):
    views_index.save(tmp_path / "idx")
    loaded = ReferenceIndex.load(tmp_path / "idx")
    assert _views(loaded, "duo/pack") == _views(views_index, "duo/pack")
    assert [m.view for m in loaded.products] == [m.view for m in views_index.products]
    photos = two_faces["listings"]["b"]
    want = Detector(views_index, embedder).predict_batch(photos)
    got = Detector(loaded, embedder).predict_batch(photos)
    assert [(p.product, p.reference, p.inliers) for p in got] == [(p.product, p.reference, p.inliers) for p in want]

    # an index written before views (format 3, no view recorded) still loads: one view per product model
    from brandguard.storage import write_directory

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    files = {name: (tmp_path / "idx" / name).read_bytes() for name in manifest["files"]}
    meta = json.loads(files["products.json"])
    for pm in meta["products"]:
        del pm["view"]
    files["products.json"] = json.dumps(meta).encode()
    write_directory(tmp_path / "old", files, {**{k: v for k, v in manifest.items() if k != "files"}, "format": 3})
    old = ReferenceIndex.load(tmp_path / "old")
    assert [m.view for m in old.products] == [0] * len(views_index.products)
    assert [p.product for p in Detector(old, embedder).predict_batch(photos)] == ["pack", "pack"]

    # remove takes every view of the product; adding its photos again brings both views back
    assert loaded.remove("duo", "pack") == 1
    assert "duo/pack" not in loaded.views() and loaded.info()["products"] == 1
    pack = sorted((two_faces["refs"] / "duo" / "pack").glob("*.jpg"))
    loaded.add([ReferenceItem(p, "duo", "pack") for p in pack[:1] + pack[2:]])  # a0, b0, b1
    assert sorted(_views(loaded, "duo/pack")) == [["a0.jpg"], ["b0.jpg", "b1.jpg"]]
    # a new photo of a known face joins its view instead of starting a new one
    loaded.add([ReferenceItem(pack[1], "duo", "pack")])
    assert sorted(_views(loaded, "duo/pack")) == [["a0.jpg", "a1.jpg"], ["b0.jpg", "b1.jpg"]]
    assert loaded.info()["products"] == 2
    preds = Detector(loaded, embedder).predict_batch(two_faces["listings"]["a"])
    assert [p.product for p in preds] == ["pack", "pack"]


def test_a_catalogue_shot_on_a_plain_background_is_cut_to_its_product(two_faces):
    from brandguard.localization import detect_keypoints
    from brandguard.reference_views import product_mask

    pkg = np.asarray(two_faces["faces"]["a"].convert("RGB"))
    h, w = pkg.shape[:2]
    canvas = np.full((h + 200, w + 300, 3), 250, np.uint8)  # white studio background, product off-centre
    canvas[40:40 + h, 220:220 + w] = pkg
    mask, how = product_mask(canvas, detect_keypoints(canvas, 512, 800).xy)
    ys, xs = np.nonzero(mask)
    assert how == "plain background"
    assert abs(xs.min() - 220) <= 4 and abs(ys.min() - 40) <= 4 and abs(xs.max() - (219 + w)) <= 4 \
        and abs(ys.max() - (39 + h)) <= 4
