"""Two-stage keypoint search: the shortlist + re-ranking finds what an exact search finds, survives add,
remove and a save/load round trip with its descriptors memory-mapped."""

from __future__ import annotations

import numpy as np
import pytest

from brandguard.shortlist import KeypointSearch
from brandguard.storage import write_directory


def _descriptors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-negative unit vectors, like RootSIFT descriptors."""
    x = rng.random((n, 128)).astype(np.float32) ** 3
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = _descriptors(rng, 10_000)
    q = x[:300] + 0.02 * rng.standard_normal((300, 128)).astype(np.float32)  # row i seen again, with noise
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def two_stage(data):
    return KeypointSearch.build(data[0], kind="ivfpq", nlist=16, nprobe=4)


def test_two_stage_search_agrees_with_exact_search(data, two_stage):
    x, q = data
    exact = KeypointSearch.build(x, kind="flat")
    assert exact.kind == "flat" and two_stage.kind == "ivfpq"
    s1, i1 = exact.search(q, 8)
    s2, i2 = two_stage.search(q, 8)
    truth = np.arange(len(q))
    assert (i1[:, 0] == truth).all()
    assert (i2[:, 0] == truth).mean() >= 0.97  # the keypoint seen again survives the shortlist and re-ranking
    same = i1[:, 0] == i2[:, 0]
    np.testing.assert_allclose(s2[same, 0], s1[same, 0], atol=1e-3)  # re-ranked scores are exact (fp16 store)


def test_add_and_remove_keep_row_ids(data):
    x, _ = data
    ks = KeypointSearch.build(x[:2000], kind="flat")
    removed = ks.remove(np.arange(0, 100))
    assert removed == 100 and ks.ntotal == 1900
    _, ids = ks.search(x[:100], 1)
    assert not np.isin(ids, np.arange(100)).any()  # removed rows are never returned
    new = ks.add(x[:100])
    assert new.tolist() == list(range(2000, 2100))  # row ids are never reused
    _, ids = ks.search(x[:100], 1)
    assert ids[:, 0].tolist() == new.tolist()


def test_round_trip_is_memory_mapped_and_identical(tmp_path, data, two_stage):
    _, q = data
    write_directory(tmp_path / "idx", two_stage.to_files(), {"format": 1})
    loaded = KeypointSearch.from_files(tmp_path / "idx")
    assert isinstance(loaded.store.base, np.memmap)
    s1, i1 = two_stage.search(q, 8)
    s2, i2 = loaded.search(q, 8)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    # in memory: codes and ids, not the descriptors (a float16 descriptor alone is 256 bytes)
    assert loaded.memory_bytes() / loaded.ntotal < 128


def test_bad_descriptors_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        KeypointSearch.build(np.zeros((10, 64), np.float32))


def _catalogue(rng: np.random.Generator, products: int, rows: int) -> np.ndarray:
    """Products whose keypoints are their own (each product a cluster of nearby descriptors)."""
    centres = _descriptors(rng, products * 8)
    x = centres[rng.integers(0, 8, (products, rows)) + 8 * np.arange(products)[:, None]].reshape(-1, 128)
    x = x + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    return (np.abs(x) / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_visual_word_shortlist_finds_the_product_and_its_keypoints(tmp_path):
    rng = np.random.default_rng(3)
    x = _catalogue(rng, 300, 60)  # 300 products, 60 keypoints each
    docs = np.full(300, 60)
    words = KeypointSearch.build(x, kind="words", documents=docs, candidates=8)
    exact = KeypointSearch.build(x, kind="flat")
    assert words.kind == "words" and words.ntotal == len(x)
    # a photo of product 123: 40 of its keypoints with noise plus 40 unrelated ones
    own = x[123 * 60:123 * 60 + 40] + 0.02 * rng.standard_normal((40, 128)).astype(np.float32)
    q = np.concatenate([own, _descriptors(rng, 40)])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert words.shortlist(q)[0] == 123
    s1, i1 = exact.search(q[:40], 4)
    s2, i2 = words.search(q[:40], 4)
    np.testing.assert_array_equal(i1[:, 0], i2[:, 0])  # the product's own keypoint is the nearest in both
    np.testing.assert_allclose(s1[:, 0], s2[:, 0], atol=2e-3)  # exact inner products (fp16 store)
    rows = np.concatenate([np.arange(d * 60, d * 60 + 60) for d in words.shortlist(q[:40])])
    _, i3 = KeypointSearch.build(x[rows], kind="flat").search(q[:40], 4)
    np.testing.assert_array_equal(rows[i3], i2)  # within the shortlisted products the neighbours are exact
    # one shortlist per photo: a second photo of product 7 in the same call gets its own
    q7 = x[7 * 60:7 * 60 + 30]
    _, ids = words.search(np.concatenate([q[:40], q7]), 1, groups=[40, 30])
    assert (ids[:40, 0] // 60 == 123).all() and (ids[40:, 0] // 60 == 7).all()
    # add, remove and a memory-mapped round trip
    new = words.add(q[:40])
    assert words.shortlist(q[:40])[:2].tolist() in ([300, 123], [123, 300])
    assert words.remove(np.arange(123 * 60, 124 * 60)) == 60
    assert 123 not in words.shortlist(q).tolist()
    _, ids = words.search(q[:40], 1)
    assert (ids[:, 0] == new).all()  # the added product's own rows now answer
    write_directory(tmp_path / "w", words.to_files(), {"format": 1})
    loaded = KeypointSearch.from_files(tmp_path / "w")
    assert loaded.kind == "words" and isinstance(loaded.store.base, np.memmap)
    np.testing.assert_array_equal(loaded.search(q, 4)[1], words.search(q, 4)[1])
    assert loaded.ntotal == words.ntotal == len(x) - 60 + 40
    with pytest.raises(ValueError, match="documents"):
        KeypointSearch.build(x, kind="words", documents=np.full(10, 5))


def test_visual_word_search_refuses_bad_input_and_disagreeing_files(tmp_path):
    from brandguard.errors import IndexCorruptError

    rng = np.random.default_rng(5)
    x = _catalogue(rng, 40, 30)
    words = KeypointSearch.build(x, kind="words", documents=np.full(40, 30))
    live = words.ntotal
    assert words.remove(np.array([10**9, len(x), -1])) == 0 and words.ntotal == live  # outside the store
    with pytest.raises(ValueError, match="integers"):
        words.remove(np.array([3.7]))
    with pytest.raises(ValueError, match="finite"):
        words.add(np.full((5, 128), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        words.search(x[:10], 2, groups=[-10, 20])
    assert words.shortlist(np.zeros((0, 128), np.float32)).tolist() == []  # no keypoints, no candidates
    write_directory(tmp_path / "w", words.to_files(), {"format": 1})
    (tmp_path / "w" / "keypoints.json").write_text('{"kind": "words", "live": 12}')
    with pytest.raises(IndexCorruptError, match="disagree.*index build"):
        KeypointSearch.from_files(tmp_path / "w")
    (tmp_path / "w" / "keypoints.npy").write_bytes(b"")
    with pytest.raises(IndexCorruptError, match="unreadable.*index build"):
        KeypointSearch.from_files(tmp_path / "w")


def test_inverted_file_search_finds_the_exact_neighbours_with_exact_scores(tmp_path, monkeypatch):
    """Mid-sized catalogues get an inverted file over the exact descriptors: it visits a few lists per query,
    finds the neighbours the flat search finds, scores them exactly like it, and keeps that through add,
    remove and a save/load round trip."""
    rng = np.random.default_rng(11)
    x = _catalogue(rng, 100, 80)  # 100 products, 80 keypoints each
    q = x[::20] + 0.02 * rng.standard_normal((400, 128)).astype(np.float32)  # keypoints seen again, with noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    monkeypatch.setattr(KeypointSearch, "APPROX_MIN", 5_000)  # as if the catalogue were mid-sized
    ivf = KeypointSearch.build(x)
    assert ivf.kind == "ivf" and ivf.nprobe == KeypointSearch.NPROBE < ivf._ivf().nlist
    assert KeypointSearch.build(x[:4_000]).kind == "flat"  # small catalogues stay exact
    s1, i1 = KeypointSearch.build(x, kind="flat").search(q, 8)
    s2, i2 = ivf.search(q, 8)
    assert (i2[:, 0] == np.arange(0, len(x), 20)).all()  # the keypoint seen again lies in a list the query visits
    same = i1 == i2
    assert same.mean() >= 0.95  # and nearly all of the 8 neighbours the ratio test looks at
    np.testing.assert_allclose(s2[same], s1[same], atol=1e-5)  # exact inner products, not codes
    assert ivf.remove(np.arange(0, 50)) == 50 and ivf.ntotal == len(x) - 50
    _, ids = ivf.search(x[:50], 1)
    assert not np.isin(ids, np.arange(50)).any()  # removed rows are never returned
    new = ivf.add(x[:50])
    assert new.tolist() == list(range(len(x), len(x) + 50))
    write_directory(tmp_path / "idx", ivf.to_files(), {"format": 1})
    loaded = KeypointSearch.from_files(tmp_path / "idx")
    assert loaded.kind == "ivf" and loaded.nprobe == ivf.nprobe and loaded.ntotal == len(x)
    _, i3 = loaded.search(x[:50], 1)
    assert i3[:, 0].tolist() == new.tolist()  # the added rows answer for themselves
    np.testing.assert_array_equal(loaded.search(q, 8)[1], ivf.search(q, 8)[1])


def test_a_search_says_when_its_catalogue_has_outgrown_it(monkeypatch):
    """``add`` never retrains, so the index asks ``outgrown`` whether to build the search again: an exact
    search from ``APPROX_MIN`` rows; an inverted file from ``IVF_MIN`` rows or once its rows call for twice
    its lists (two to four times the rows it was trained on). The two-stage kinds never are."""
    rng = np.random.default_rng(5)
    x = _catalogue(rng, 40, 100)  # 4,000 rows
    monkeypatch.setattr(KeypointSearch, "APPROX_MIN", 2_000)
    monkeypatch.setattr(KeypointSearch, "IVF_MIN", 100_000)
    flat = KeypointSearch.build(x[:1_500])
    assert flat.kind == "flat" and not flat.outgrown() and flat.outgrown(2_000)
    ivf = KeypointSearch.build(x)
    lists = int(ivf._ivf().nlist)
    assert ivf.kind == "ivf" and lists == KeypointSearch._ivf_lists(len(x)) and not ivf.outgrown()
    grown = next(n for n in range(len(x), 100_000, 500) if KeypointSearch._ivf_lists(n) >= 2 * lists)
    assert not ivf.outgrown(grown - 500) and ivf.outgrown(grown) and 2 * len(x) <= grown <= 4 * len(x)
    assert ivf.outgrown(100_000)
    words = KeypointSearch.build(x, kind="words", documents=np.full(40, 100))
    assert not words.outgrown(10**9)
