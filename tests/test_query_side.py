"""``localization.query_side``: the long side listing photos' keypoints are detected at, apart from the
references' ``keypoint_side`` (a query-side setting: the index stays valid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brandguard import accel
from brandguard.config import Config
from brandguard.detector import Detector
from brandguard.errors import ConfigError


def test_query_side_defaults_to_the_reference_side_and_is_checked() -> None:
    loc = Config().localization
    assert loc.query_side is None and loc.query_detect_side == loc.keypoint_side
    shipped = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert Config.from_yaml(shipped).localization.query_detect_side == loc.keypoint_side
    assert Config().with_overrides({"localization.query_side": 448}).localization.query_detect_side == 448
    for bad in (10, 448.5, "448", True):
        with pytest.raises(ConfigError, match="query_side"):
            Config().with_overrides({"localization.query_side": bad})


def test_listing_keypoints_are_detected_at_query_side(small_index, embedder, labels, monkeypatch) -> None:
    seen: list[int] = []
    real = accel.detect_keypoints

    def spy(image, side, n):
        seen.append(int(side))
        return real(image, side, n)

    monkeypatch.setattr(accel, "detect_keypoints", spy)
    photo = next(str(i.path) for i in labels if i.label == "authentic")
    base = Detector(small_index, embedder).predict(photo)
    assert seen and set(seen) == {small_index.config.localization.keypoint_side}
    seen.clear()
    monkeypatch.setattr(small_index, "config", small_index.config.with_overrides({"localization.query_side": 384}))
    smaller = Detector(small_index, embedder).predict(photo)
    assert seen == [384]
    # the index's reference keypoints (detected at keypoint_side) still localise the product
    assert (smaller.brand, smaller.product) == (base.brand, base.product) != ("", "")
