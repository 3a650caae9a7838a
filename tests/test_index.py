"""The reference index: build, save/load, refusal of corrupt or incompatible indexes, add/remove."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from brandguard.detector import Detector
from brandguard.errors import DataError, IndexCompatibilityError, IndexCorruptError
from brandguard.index import ReferenceIndex
from brandguard.references import ReferenceItem, read_references


def test_build_indexes_every_product(small_index, small_dataset):
    items = read_references(small_dataset.refs_dir)
    info = small_index.info()
    assert info["products"] == len({(i.brand, i.product) for i in items})
    assert info["references"] == len(items)
    # nearly every reference is aligned into its product's canonical frame
    assert info["references_compared"] >= 0.8 * len(items)
    assert info["backbone"] == "efficientnet_lite0" and info["weights_digest"].startswith("sha256:")


def test_saved_index_is_self_describing(saved_index: Path):
    manifest = json.loads((saved_index / "manifest.json").read_text())
    for key in ("format", "brandguard_version", "backbone", "dimensions", "thresholds", "files"):
        assert key in manifest
    assert manifest["backbone"]["spec"]["mean"] == [0.5, 0.5, 0.5]
    assert set(manifest["files"]) >= {"keypoints.faiss", "keypoints.npy", "keypoints.json", "global.faiss",
                                   "arrays.safetensors", "config.yaml"}
    assert not list(saved_index.parent.glob(".*tmp"))  # atomic write left no temporary behind


def test_reloaded_index_gives_identical_predictions(saved_index, detector, embedder, labels):
    """A loaded index reads banks from its memory-mapped arrays only for the products photos matched, keeps
    at most ``runtime.cached_products`` of them, and predicts exactly as the index it was saved from."""
    paths = [str(i.path) for i in labels[:12]]
    before = detector.predict_batch(paths)
    loaded = ReferenceIndex.load(saved_index)
    loaded.config = loaded.config.with_overrides({"runtime.cached_products": 2})
    store = loaded.products[0]._store
    store._cap = 2
    assert store.reads == 0 and all("bank" not in m.__dict__ for m in loaded.products)  # nothing read at load
    after = Detector(loaded, embedder).predict_batch(paths)
    for a, b in zip(before, after):
        assert (a.verdict, a.brand, a.product, a.reference) == (b.verdict, b.brand, b.product, b.reference)
        assert a.score == pytest.approx(b.score, abs=1e-9) and a.raw_score == pytest.approx(b.raw_score, abs=1e-9)
    matched = {(p.brand, p.product) for p in after if p.brand}
    assert len(matched) > 2 and store.reads >= len(matched) and len(store) <= 2  # read on demand, cache bounded


def test_corrupted_index_is_refused(saved_index, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(saved_index, bad)
    blob = bytearray((bad / "arrays.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bad / "arrays.safetensors").write_bytes(bytes(blob))
    with pytest.raises(IndexCorruptError) as err:
        ReferenceIndex.load(bad)
    assert "arrays.safetensors" in str(err.value) and "rebuild" in str(err.value)
    (bad / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError):
        ReferenceIndex.load(bad)
    with pytest.raises(IndexCorruptError):
        ReferenceIndex.load(tmp_path / "nowhere")


def test_incompatible_backbone_is_refused_naming_both_sides(saved_index, tmp_path, embedder):
    from safetensors.torch import save_file

    state = {k: v.contiguous() + 0.01 for k, v in embedder.backbone.net.model.state_dict().items()
             if not k.startswith("classifier.") and v.is_floating_point()}
    ck = tmp_path / "other.safetensors"
    save_file(state, str(ck))
    with pytest.raises(IndexCompatibilityError) as err:
        Detector.load(saved_index, checkpoint=str(ck))
    msg = str(err.value)
    assert "efficientnet_lite0" in msg and "sha256:" in msg and msg.count("sha256:") == 2


def test_old_format_is_refused_with_rebuild_hint(saved_index, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(saved_index, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCompatibilityError) as err:
        ReferenceIndex.load(old)
    assert "brandguard index build" in str(err.value) and "upgrade" not in str(err.value)


def test_newer_format_asks_for_an_upgrade(saved_index, tmp_path):
    from brandguard.index import INDEX_FORMAT

    new = tmp_path / "new"
    shutil.copytree(saved_index, new)
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["format"], manifest["brandguard_version"] = INDEX_FORMAT + 1, "9.0.0"
    (new / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCompatibilityError) as err:
        ReferenceIndex.load(new)
    msg = str(err.value)
    assert "newer brandguard (9.0.0)" in msg and "pip install -U brandguard" in msg


def test_remove_and_add_without_rebuilding(saved_index, small_dataset, embedder, labels, tmp_path):
    index = ReferenceIndex.load(saved_index)
    index._embedder = embedder
    brand = index.products[0].brand
    n_products = len(index.products)
    removed = index.remove(brand)
    assert removed >= 1 and all(m.brand != brand for m in index.products)
    det = Detector(index, embedder)
    photo = next(i for i in labels if i.brand == brand and i.label == "authentic")
    assert det.predict(str(photo.path)).brand != brand  # no longer known
    with pytest.raises(DataError):
        index.remove("no-such-brand")
    items = [i for i in read_references(small_dataset.refs_dir) if i.brand == brand]
    index.add(items)
    assert len(index.products) == n_products
    assert det.predict(str(photo.path)).brand == brand  # known again
    # adding photos of a known product extends that product instead of creating one
    from PIL import Image

    Image.open(items[0].path).save(tmp_path / "new.jpg", quality=80)  # another photo (other bytes, other pixels)
    extra = [ReferenceItem(tmp_path / "new.jpg", items[0].brand, items[0].product)]
    before = len(index.products)
    product = next(m for m in index.products if (m.brand, m.product) == (items[0].brand, items[0].product))
    n_refs = len(product.refs)
    assert index.add(extra) == 1
    assert len(index.products) == before
    # photos already in the index are kept once
    with pytest.warns(UserWarning, match="duplicate reference"):
        assert index.add(items[:1]) == 0
    product = next(m for m in index.products if (m.brand, m.product) == (items[0].brand, items[0].product))
    assert len(product.refs) == n_refs + 1


def test_unreadable_references_are_skipped_and_reported(small_dataset, embedder, tmp_path):
    refs = tmp_path / "refs"
    src_brand = min(p for p in small_dataset.refs_dir.iterdir() if p.is_dir())
    shutil.copytree(src_brand, refs / src_brand.name)
    bad = next((refs / src_brand.name).rglob("*.jpg")).parent / "broken.jpg"
    bad.write_text("not a photo")
    with pytest.warns(UserWarning, match="broken.jpg"):
        index = ReferenceIndex.build(refs, embedder=embedder)
    assert [s["path"] for s in index.skipped] == [str(bad)]
    assert index.info()["products"] >= 1


def test_empty_reference_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as err:
        read_references(tmp_path)
    assert "<brand>/<product>" in str(err.value)


def test_csv_manifest_is_accepted(small_dataset, tmp_path):
    items = read_references(small_dataset.refs_dir)[:5]
    csv_path = tmp_path / "refs.csv"
    csv_path.write_text("path,brand,product\n" + "".join(f"{i.path},{i.brand},{i.product}\n" for i in items))
    got = read_references(csv_path)
    assert [(g.brand, g.product, g.path) for g in got] == [(i.brand, i.product, Path(i.path).resolve()) for i in items]


def test_cli_index_build_add_remove_info(small_dataset, tmp_path, capsys):
    from brandguard.cli import main

    refs = tmp_path / "refs"
    brands = sorted(p for p in small_dataset.refs_dir.iterdir() if p.is_dir())
    shutil.copytree(brands[0], refs / brands[0].name)
    idx = tmp_path / "idx"
    assert main(["index", "build", str(refs), "-o", str(idx), "--no-progress", "--device", "cpu"]) == 0
    assert "indexed" in capsys.readouterr().out
    more = tmp_path / "more"
    shutil.copytree(brands[1], more / brands[1].name)
    assert main(["index", "add", str(idx), str(more), "--no-progress"]) == 0
    assert main(["index", "info", str(idx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["brands"] == 2
    assert main(["index", "remove", str(idx), "--brand", brands[0].name]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(idx), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["brands"] == 1
    assert main(["index", "remove", str(idx), "--brand", "nope"]) == 2
    assert "known brands" in capsys.readouterr().err


def test_many_products_added_and_removed_one_by_one_leave_verdicts_unchanged(saved_index, embedder, labels,
                                                                              monkeypatch):
    """A large catalogue grows and shrinks incrementally: distractor products (cheap: random RootSIFT-like
    keypoints, no references) are appended to the keypoint search without re-encoding what is there, and
    removing them gives back the same search and the same predictions. The search is the one large
    catalogues get (products shortlisted by visual words), which must agree with the exact one."""
    from brandguard.shortlist import KeypointSearch

    index = ReferenceIndex.load(saved_index)
    det = Detector(index, embedder)
    photos = [str(i.path) for i in labels if i.label in ("authentic", "counterfeit")][:6]
    exact = det.predict_batch(photos)
    assert index._local.kind == "flat"
    monkeypatch.setattr(KeypointSearch, "IVF_MIN", 0)  # as if the catalogue were large
    index._rebuild_search(full=True)
    assert index._local.kind == "words"
    before = det.predict_batch(photos)
    for a, b in zip(exact, before):  # every product shortlisted: the same neighbours, the same predictions
        assert (a.verdict, a.brand, a.product) == (b.verdict, b.brand, b.product)
        assert a.score == pytest.approx(b.score, abs=1e-6)
    rows, live = len(index._local), index._local.ntotal
    rng = np.random.default_rng(3)
    for d in range(120):
        index.products.append(_distractor(rng, f"p{d % 4}", 50, brand=f"distractor{d // 4}"))
        if d % 60 == 59:
            index._rebuild_search()
    assert len(index._local) == rows + 120 * 50 and index._local.ntotal == live + 120 * 50  # appended, nothing redone
    during = det.predict_batch(photos)
    for d in range(30):
        index.remove(f"distractor{d}")
    assert index._local.ntotal == live and not any(m.brand.startswith("distractor") for m in index.products)
    after = det.predict_batch(photos)
    for a, b, c in zip(before, during, after):
        assert (a.verdict, a.brand, a.product) == (b.verdict, b.brand, b.product) == (c.verdict, c.brand, c.product)
        assert a.score == pytest.approx(c.score, abs=1e-9)


def test_cold_start_calibration_is_named_and_its_evidence_survives_a_reload(small_index, saved_index):
    info = small_index.info()
    assert info["calibration_source"].startswith("cold-start (simulated listing photos from")
    loaded = ReferenceIndex.load(saved_index)
    assert loaded.info()["calibration_source"] == info["calibration_source"]
    assert len(loaded.products) == len(small_index.products) > 0
    for a, b in zip(small_index.products, loaded.products):
        assert a.evidence is not None and b.evidence is not None and len(a.evidence.cross) > 0
        np.testing.assert_array_equal(a.evidence.cross, b.evidence.cross)
        np.testing.assert_array_equal(a.evidence.cross_valid, b.evidence.cross_valid)
        np.testing.assert_array_equal(a.evidence.cross_source, b.evidence.cross_source)


def test_a_product_gets_its_count_of_simulated_photos_whatever_its_references(small_dataset, embedder, monkeypatch):
    import brandguard.listing_conditions as lc
    from brandguard.config import Config
    from brandguard.index import simulated_photos_per_reference as per_ref

    # 4 x compare.simulated_views photos a product (12 at the default 3), at least 2 and at most 6 a reference
    assert [n * per_ref(n, 3) for n in (1, 2, 3, 4, 5, 6, 16)] == [6, 12, 12, 12, 15, 12, 32]
    assert per_ref(6, 1) == 1 and per_ref(1, 1) == 2 and per_ref(3, 0) == 0
    asked: list[int] = []  # photos the build asks of each reference
    real = lc.simulate_listing_photos
    monkeypatch.setattr(lc, "simulate_listing_photos", lambda img, rng, n: asked.append(n) or real(img, rng, n))
    items = read_references(small_dataset.refs_dir)
    keys = sorted({(i.brand, i.product) for i in items})[:2]
    three = [i for i in items if (i.brand, i.product) == keys[0]][:3]
    one = [i for i in items if (i.brand, i.product) == keys[1]][:1]
    index = ReferenceIndex.build(three + one, Config(), embedder=embedder)
    assert sorted(len(m.bank) for m in index.products) == [1, 3]
    assert sorted(asked) == [4, 4, 4, 6]  # 12 photos for three references (3 each before), 6 for one
    for m in index.products:  # photos that were not localised are left out, none is added
        src = m.evidence.own_source if len(m.bank) == 1 else m.evidence.cross_source
        assert np.bincount(src).max() <= per_ref(len(m.bank), 3)


def _first_products(small_dataset, n_products: int, n_refs: int) -> list[ReferenceItem]:
    items = read_references(small_dataset.refs_dir)
    keys = sorted({(i.brand, i.product) for i in items})[:n_products]
    return [i for k in keys for i in [j for j in items if (j.brand, j.product) == k][:n_refs]]


def _copied(items: list[ReferenceItem], root: Path) -> list[ReferenceItem]:
    """The references copied under ``root/<brand>/<product>/`` (tests that change files on disk change these)."""
    copies = []
    for it in items:
        dst = root / it.brand / it.product / it.path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(it.path, dst)
        copies.append(ReferenceItem(dst, it.brand, it.product))
    return copies


def test_adding_references_to_a_known_product_gives_the_index_a_build_of_them_all_gives(small_dataset, embedder,
                                                                                           tmp_path):
    from brandguard.config import Config

    items = _first_products(small_dataset, 2, 3)
    # a copy of the files: the index refits from them, and the test below changes one
    copies = _copied(items, tmp_path)
    at_once = ReferenceIndex.build(copies, Config(), embedder=embedder)
    grown = ReferenceIndex.build(copies[::3], Config(), embedder=embedder)  # one reference a product
    for k in (1, 2):  # then one more a product, twice
        assert grown.add(copies[k::3]) == 2
    assert [m.key for m in grown.products] == [m.key for m in at_once.products]
    for a, b in zip(at_once.products, grown.products):
        assert [r.path for r in a.refs] == [r.path for r in b.refs] and a.view == b.view
        np.testing.assert_array_equal(a.kp_xy, b.kp_xy)
        np.testing.assert_array_equal(a.evidence.cross, b.evidence.cross)
    import csv

    keys = {(m.brand, m.product) for m in at_once.products}
    with open(small_dataset.labels_csv, newline="") as fh:
        photos = [str(small_dataset.listings_dir / r["path"]) for r in csv.DictReader(fh)
                  if (r["brand"], r["product"]) in keys][:6]
    assert photos
    for p, q in zip(Detector(at_once).predict_batch(photos), Detector(grown).predict_batch(photos)):
        assert (p.verdict, p.brand, p.product) == (q.verdict, q.brand, q.product)
        assert p.raw_score == pytest.approx(q.raw_score, abs=1e-5)
    # an earlier reference changed on disk: the product is extended as the index holds it, with a warning
    first = grown.products[0]
    Path(first.refs[0].path).write_bytes(Path(first.refs[0].path).read_bytes() + b"\0")
    extra = [i for i in read_references(small_dataset.refs_dir) if (i.brand, i.product) == (first.brand, first.product)]
    with pytest.warns(UserWarning, match="earlier reference files are not where the index recorded them"):
        assert grown.add(extra[3:4]) == 1
    assert sum(len(m.refs) for m in grown.products if m.key == first.key) == 4


def test_a_reference_file_replaced_in_place_replaces_the_reference_it_was(small_dataset, embedder, tmp_path):
    """A brand sends a better photo under an indexed file name and the operator runs ``index add`` again: the
    new photo must take the old one's place (it used to be skipped as a duplicate of itself, by path)."""
    from brandguard.config import Config
    from brandguard.storage import file_digest

    items = _first_products(small_dataset, 2, 4)
    copies = _copied(items, tmp_path)
    first = [c for c in copies if (c.brand, c.product) == (copies[0].brand, copies[0].product)]
    index = ReferenceIndex.build([c for c in copies if c.path != first[3].path], Config(), embedder=embedder)
    old_digest = file_digest(first[0].path)
    shutil.copy2(first[3].path, first[0].path)  # another photo of the product, under an indexed name
    first[3].path.unlink()
    with pytest.warns(UserWarning, match="changed since they were indexed: the new photos replace"):
        assert index.add([first[0]]) == 1
    assert not index.duplicates
    fresh = ReferenceIndex.build([c for c in copies if c.path != first[3].path], Config(), embedder=embedder)
    assert [m.key for m in index.products] == [m.key for m in fresh.products]
    for a, b in zip(fresh.products, index.products):
        assert [(r.path, r.digest) for r in a.refs] == [(r.path, r.digest) for r in b.refs]
        np.testing.assert_array_equal(a.kp_xy, b.kp_xy)
        np.testing.assert_array_equal(a.evidence.cross, b.evidence.cross)
    assert file_digest(first[0].path) != old_digest
    assert str(first[0].path) in {r.path for m in index.products for r in m.refs
                                  if r.digest == file_digest(first[0].path)}
    # the same file added again is a duplicate; replaced while another reference of the product went missing,
    # the index keeps the version it holds and says so
    assert index.add([first[0]]) == 0
    import cv2

    assert cv2.imwrite(str(first[0].path), cv2.flip(cv2.imread(str(first[0].path)), 1))  # new pixels, new bytes
    first[1].path.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert index.add([first[0]]) == 0
    kept = ("1 reference file(s) changed since they were indexed, but their products' other reference files could "
            "not be read again, so the index keeps the versions it holds (`brandguard index build` takes the new ones)")
    assert [str(w.message).split(":")[0] for w in caught] == [kept]
    assert {r.digest for m in index.products for r in m.refs if r.path == str(first[0].path)} == \
        {r.digest for m in fresh.products for r in m.refs if r.path == str(first[0].path)}


def test_a_replaced_file_whose_product_cannot_be_read_again_keeps_the_indexed_version(small_dataset, embedder,
                                                                                        tmp_path, monkeypatch):
    """Found in review: when a product's earlier files cannot be decoded again at fit time, the new photo of a
    replaced file must not be added beside the old one (the same path twice); and a file whose metadata alone
    changed (the same pixels in new bytes) gets its new digest, so a later add still refits the product."""
    from brandguard.config import Config
    from brandguard.storage import file_digest

    items = _first_products(small_dataset, 1, 4)
    copies = _copied(items, tmp_path)
    index = ReferenceIndex.build(copies[:3], Config(), embedder=embedder)
    import cv2

    assert cv2.imwrite(str(copies[0].path), cv2.flip(cv2.imread(str(copies[0].path)), 1))  # replaced in place
    monkeypatch.setattr(ReferenceIndex, "_read_again", lambda self, key, old: None)
    with pytest.warns(UserWarning, match="keeps the versions it holds"):
        assert index.add([copies[0]]) == 0
    paths = [r.path for m in index.products for r in m.refs]
    assert sorted(paths) == sorted(str(c.path) for c in copies[:3])  # each path once, the old version kept
    monkeypatch.undo()
    # the same pixels in other bytes (metadata appended after the JPEG's end): a duplicate, with its new digest
    shutil.copy2(items[1].path, copies[1].path)
    with open(copies[1].path, "ab") as fh:
        fh.write(b"edited by a photo manager")
    assert index.add([copies[1]]) == 0
    assert {r.digest for m in index.products for r in m.refs if r.path == str(copies[1].path)} == \
        {file_digest(copies[1].path)}


def _distractor(rng: np.random.Generator, name: str, rows: int, brand: str = "distractor"):
    """A cheap product of random RootSIFT-like keypoints and no references (it never matches a photo)."""
    from brandguard.index import ProductModel, _empty_bank

    desc = rng.random((rows, 128)).astype(np.float32) ** 3
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return ProductModel(brand, name, [], 0, [], desc.astype(np.float16),
                        rng.uniform(0, 384, (rows, 2)).astype(np.float32), _empty_bank(), None,
                        np.zeros((0, 1), np.float32), np.zeros((0, 4)))


def test_a_catalogue_grown_past_its_search_size_gets_the_search_a_whole_build_chooses(saved_index, embedder, labels,
                                                                                     tmp_path, monkeypatch):
    """Adding products never retrains the keypoint search, so a catalogue built or grown product by product
    used to keep the exact search chosen for its first products (the demo's 41,000 keypoints were searched
    exhaustively: a quarter of scoring time). Past ``APPROX_MIN`` live keypoints it is built again as an
    inverted file, with every product's rows renumbered; an index saved with an outgrown search is rebuilt
    when loaded, with a warning that says how to keep it. With every list visited the inverted file is exact,
    so the predictions must not move."""
    from brandguard.shortlist import KeypointSearch

    index = ReferenceIndex.load(saved_index)
    photos = [str(i.path) for i in labels if i.label in ("authentic", "counterfeit")][:6]
    exact = Detector(index, embedder).predict_batch(photos)
    n = index._local.ntotal
    assert index._local.kind == "flat"
    monkeypatch.setattr(KeypointSearch, "APPROX_MIN", n + 200)
    monkeypatch.setattr(KeypointSearch, "NPROBE", 100_000)  # every list visited: exact neighbours
    rng = np.random.default_rng(7)
    index.products.append(_distractor(rng, "a", 150))
    index._rebuild_search()
    assert index._local.kind == "flat" and index._local.ntotal == n + 150  # under the size: appended
    index.products.append(_distractor(rng, "b", 150))
    index._rebuild_search()
    assert index._local.kind == "ivf" and index._local.ntotal == n + 300
    assert [m.kp_start for m in index.products] == np.cumsum([0] + [len(m.kp_xy) for m in index.products])[:-1].tolist()
    grown = Detector(index, embedder).predict_batch(photos)

    # an index saved by a version that kept the exact search at this size
    monkeypatch.setattr(KeypointSearch, "APPROX_MIN", 10**9)
    old = ReferenceIndex.load(saved_index)
    old.products += [_distractor(np.random.default_rng(7), "a", 150), _distractor(rng, "b", 150)]
    old._rebuild_search()
    old.save(tmp_path / "old")
    assert ReferenceIndex.load(tmp_path / "old")._local.kind == "flat"
    monkeypatch.setattr(KeypointSearch, "APPROX_MIN", n + 200)
    with pytest.warns(UserWarning, match=r"built for a smaller catalogue; rebuilt as ivf .*index compact"):
        loaded = ReferenceIndex.load(tmp_path / "old")
    assert loaded._local.kind == "ivf"
    reloaded = Detector(loaded, embedder).predict_batch(photos)
    loaded.compact()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # kept: it loads without a rebuild
        assert ReferenceIndex.load(tmp_path / "old")._local.kind == "ivf"
    for a, b, c in zip(exact, grown, reloaded):
        assert (a.verdict, a.brand, a.product, a.inliers) == (b.verdict, b.brand, b.product, b.inliers) \
            == (c.verdict, c.brand, c.product, c.inliers)
        assert a.score == pytest.approx(b.score, abs=1e-6) and a.score == pytest.approx(c.score, abs=1e-6)
