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
    assert isinstance(loaded.store, np.memmap)
    s1, i1 = two_stage.search(q, 8)
    s2, i2 = loaded.search(q, 8)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    # in memory: codes and ids, not the descriptors (a float16 descriptor alone is 256 bytes)
    assert loaded.memory_bytes() / loaded.ntotal < 128


def test_bad_descriptors_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        KeypointSearch.build(np.zeros((10, 64), np.float32))
