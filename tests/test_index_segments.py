"""Incremental saves: a saved index is appended to (one new segment per save), never rewritten, stays loadable
after a crash mid-save, and compacts into one segment; every state predicts as the index in memory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import brandguard.index as index_module
from brandguard import storage
from brandguard.detector import Detector
from brandguard.index import ReferenceIndex
from brandguard.references import read_references


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def _identity(d: Path, names) -> dict[str, tuple[int, int, int]]:
    """inode, modification time and size of each file: the same after a save that did not rewrite it."""
    return {n: (os.stat(d / n).st_ino, os.stat(d / n).st_mtime_ns, os.stat(d / n).st_size) for n in names}


def _predictions(index, embedder, paths):
    return [(p.verdict, p.brand, p.product, p.reference, round(p.score, 9), round(p.raw_score, 9))
            for p in Detector(index, embedder).predict_batch(paths)]


def _storage(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())["storage"]


@pytest.fixture()
def copied(saved_index, tmp_path) -> Path:
    d = tmp_path / "idx"
    shutil.copytree(saved_index, d)
    return d


def test_save_after_add_appends_one_segment_and_compact_makes_one(copied, small_dataset, embedder, labels,
                                                                   monkeypatch):
    # a catalogue large enough that one product never moves the pooled prior (as from a few hundred products)
    monkeypatch.setattr(index_module, "PRIOR_TOLERANCE", float("inf"))
    paths = [str(i.path) for i in labels[:8]]
    index = ReferenceIndex.load(copied)
    index._embedder = embedder
    brand, product = index.products[-1].brand, index.products[-1].product
    items = [i for i in read_references(small_dataset.refs_dir) if (i.brand, i.product) == (brand, product)]
    assert items

    # remove -> save -> load: the product is gone; nothing but the small files was written
    old = _identity(copied, ["arrays.safetensors", "keypoints.npy"])
    index.remove(brand, product)
    store = index.products[0]._store
    store._cache.clear()
    index.save(copied)
    assert store.reads == 0  # no product's arrays read from disk: none is written again
    assert _identity(copied, old) == old
    gone = ReferenceIndex.load(copied)
    assert f"{brand}/{product}" not in gone.views() and len(gone.products) == len(index.products)
    assert gone.storage_info()["dead_bytes"] > 0  # its bytes stay until compaction

    # add -> save: one new segment with the added product only; the old segments are not touched
    index.add(items)
    reads = store.reads
    index.save(copied)
    assert store.reads == reads
    layout = _storage(copied)
    assert list(layout["array_segments"]) == ["arrays.safetensors", "arrays.2.safetensors"]
    assert [f for f, _ in layout["keypoint_segments"]] == ["keypoints.npy", "keypoints.2.npy"]
    assert _identity(copied, old) == old
    from safetensors import safe_open

    with safe_open(str(copied / "arrays.2.safetensors"), framework="numpy") as f:
        names = f.keys()
    prefixes = {k.split(".")[0] for k in names}
    added = [m for m in index.products if (m.brand, m.product) == (brand, product)]
    assert len(prefixes) == len(added)  # the added product's views, nothing else
    assert not (copied / "gen-1").exists() and (copied / "gen-2" / "products.json").is_file()
    assert set(json.loads((copied / "manifest.json").read_text())["files"]) | {"manifest.json"} == _files(copied)

    want = _predictions(index, embedder, paths)
    loaded = ReferenceIndex.load(copied)
    assert [m.key for m in loaded.products] == [m.key for m in index.products]
    assert _predictions(loaded, embedder, paths) == want
    info = loaded.storage_info()
    assert info["array_segments"] == 2 and info["keypoint_segments"] == 2 and info["dead_bytes"] > 0
    assert loaded.info()["storage"]["dead_bytes"] == info["dead_bytes"]

    # compact: one segment, no dead bytes, the same predictions
    dropped = loaded.compact()
    assert dropped["dead_bytes_dropped"] == info["dead_bytes"] and dropped["bytes_after"] < dropped["bytes_before"]
    layout = _storage(copied)
    assert list(layout["array_segments"]) == ["arrays.safetensors"] and len(layout["keypoint_segments"]) == 1
    assert not list(copied.glob("gen-*")) and not list(copied.glob("arrays.*.safetensors"))
    assert _predictions(loaded, embedder, paths) == want  # the compacted index in memory
    again = ReferenceIndex.load(copied)
    assert again.storage_info()["dead_bytes"] == 0 and again.storage_info()["array_segments"] == 1
    assert _predictions(again, embedder, paths) == want


def test_a_crash_before_the_manifest_leaves_the_previous_index(copied, embedder, labels, monkeypatch):
    paths = [str(i.path) for i in labels[:6]]
    original = ReferenceIndex.load(copied)
    want = _predictions(original, embedder, paths)
    before = _files(copied)
    index = ReferenceIndex.load(copied)
    index.remove(index.products[0].brand, index.products[0].product)

    def crash(target, data):
        raise OSError("simulated crash before the manifest is renamed")

    monkeypatch.setattr(storage, "_replace_manifest", crash)
    with pytest.raises(OSError, match="simulated crash"):
        index.save(copied)
    assert _files(copied) > before  # the new files were written ...
    survivor = ReferenceIndex.load(copied)  # ... but the previous index is intact
    assert [m.key for m in survivor.products] == [m.key for m in original.products]
    assert _predictions(survivor, embedder, paths) == want

    monkeypatch.undo()
    index.save(copied)  # the next save succeeds and removes what the crashed one left
    assert _files(copied) == set(json.loads((copied / "manifest.json").read_text())["files"]) | {"manifest.json"}
    assert original.products[0].key not in ReferenceIndex.load(copied).views()


def test_cli_reports_segments_and_compacts(copied, capsys, monkeypatch):
    from brandguard.cli import main

    monkeypatch.setattr(index_module, "PRIOR_TOLERANCE", float("inf"))  # removing refits no other product

    index = ReferenceIndex.load(copied)
    index.remove(index.products[0].brand, index.products[0].product)
    index.save(copied)
    assert main(["index", "info", str(copied)]) == 0
    out = capsys.readouterr().out
    assert "storage: 1 array segment(s), 1 keypoint segment(s)" in out and "0 B dead" not in out
    assert main(["index", "compact", str(copied)]) == 0
    assert "compacted into one segment" in capsys.readouterr().out
    assert main(["index", "info", str(copied), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["storage"]
    assert info["dead_bytes"] == 0 and info["generation"] == 0 and info["array_segments"] == 1


def test_an_index_of_the_previous_format_loads_and_is_appended_to(copied, tmp_path, monkeypatch):
    """One arrays.safetensors, no segments recorded (format 4): one segment; removing most products then
    compacts by itself (dead bytes over COMPACT_DEAD_SHARE)."""
    monkeypatch.setattr(index_module, "PRIOR_TOLERANCE", float("inf"))  # removing refits no other product
    manifest = json.loads((copied / "manifest.json").read_text())
    files = {name: (copied / name).read_bytes() for name in manifest["files"]}
    meta = json.loads(files["products.json"])
    for pm in meta["products"]:
        for key in ("segment", "prefix", "nbytes"):
            del pm[key]
    files["products.json"] = json.dumps(meta).encode()
    old = tmp_path / "v4"
    rest = {k: v for k, v in manifest.items() if k not in ("files", "storage")}
    storage.write_directory(old, files, {**rest, "format": 4})
    index = ReferenceIndex.load(old)
    assert index.storage_info()["dead_bytes"] == 0
    keys = sorted(index.views())
    first = _identity(old, ["arrays.safetensors"])
    brand, product = keys[0].split("/", 1)
    index.remove(brand, product)
    index.save(old)
    assert _identity(old, first) == first and _storage(old)["generation"] == 1
    assert sorted(ReferenceIndex.load(old).views()) == keys[1:]
    for key in keys[1:-1]:
        index.remove(*key.split("/", 1))
    index.save(old)  # most bytes dead: written whole, one segment
    assert _storage(old)["generation"] == 0 and sorted(ReferenceIndex.load(old).views()) == keys[-1:]
    assert np.isclose(index.storage_info()["dead_bytes"], 0)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "words"])
def test_compacted_keypoint_search_finds_the_same_neighbours(kind):
    """Compaction renumbers the live keypoint rows without training the search again: the same neighbours."""
    from brandguard.shortlist import KeypointSearch

    rng = np.random.default_rng(0)
    x = rng.random((4000, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    docs = np.full(8, 500)  # 8 products of 500 keypoints
    ks = KeypointSearch.build(x[:3000], kind=kind, documents=docs[:6], nlist=16)
    ks.remove(np.arange(1000, 1500))  # product 2 removed
    ks.add(x[3000:3500])
    ks.add(x[3500:])
    spans = [(0, 500), (500, 500), (1500, 500), (2000, 500), (2500, 500), (3000, 500), (3500, 500)]
    small = ks.compacted(spans)
    old_row = np.concatenate([np.arange(s, s + n) for s, n in spans])
    assert len(small) == small.ntotal == len(old_row) == 3500
    np.testing.assert_array_equal(small.store[np.array([0, 1700, 3499])], ks.store[old_row[[0, 1700, 3499]]])
    q = x[::37] + 0.01 * rng.standard_normal((len(x[::37]), 128)).astype(np.float32)
    s1, i1 = ks.search(q, 4)
    s2, i2 = small.search(q, 4)
    np.testing.assert_array_equal(np.where(i2 >= 0, old_row[np.maximum(i2, 0)], -1), i1)
    np.testing.assert_allclose(s2, s1, atol=1e-6)


def test_streamed_safetensors_equal_the_library_s(tmp_path):
    """Segments are written one product at a time (write_safetensors); safetensors reads them as its own."""
    from safetensors.numpy import load_file

    from brandguard.arraystore import write_safetensors

    rng = np.random.default_rng(0)
    tensors = {"p0.bank": rng.random((2, 3, 4)).astype(np.float16), "p0.t": rng.random((3, 2)).T,  # not contiguous
               "p1.valid": rng.random(5) > 0.5, "p1.none": np.zeros((0, 4), np.float32),
               "p1.one": np.asarray(7, np.int64), "p1.u8": np.arange(9, dtype=np.uint8)}
    with open(tmp_path / "a.safetensors", "wb") as fh:
        write_safetensors(fh, [(k, v.dtype, v.shape) for k, v in tensors.items()], iter(tensors.values()))
    back = load_file(str(tmp_path / "a.safetensors"))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v)
    with pytest.raises(ValueError, match="p0.bank"), open(tmp_path / "b.safetensors", "wb") as fh:
        write_safetensors(fh, [("p0.bank", np.dtype(np.float32), (2, 3, 4))], iter([tensors["p0.bank"]]))
