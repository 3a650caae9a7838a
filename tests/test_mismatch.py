"""The local comparison (brandguard.mismatch): what is scored in the aligned frame."""

import cv2
import numpy as np
import pytest

from brandguard.config import Config
from brandguard.errors import DataError
from brandguard.mismatch import (
    ProductBank,
    anomaly_maps,
    channel_scores,
    distance_maps,
    fit_normal_stats,
    hue_shift,
    make_view,
)

S, CELL = 96, 6


def _package(rng: np.random.Generator) -> np.ndarray:
    """A smooth coloured 'package' with some print on it, plus a little photo noise."""
    yy, xx = np.mgrid[0:S, 0:S]
    img = np.stack([120 + 60 * np.sin(xx / 9.0), 90 + 50 * np.cos(yy / 7.0), 160 + 0 * xx], -1).astype(np.float32)
    img[30:60, 20:70] = (230, 40, 40)  # a red logo
    return np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)


def _structure_score(bank: ProductBank, crop: np.ndarray, margin: int) -> float:
    stats, _ = fit_normal_stats(bank, CELL, k=0, margin=margin)
    view = make_view(crop, np.ones((S, S), bool), CELL)
    d_s, d_c, d_l = distance_maps(view, bank, CELL)
    z_s, z_c, _ = anomaly_maps(d_s, d_c, stats, view.cell_valid, d_l)
    return channel_scores(z_s, z_c, stats.region & view.cell_valid)[0]


@pytest.fixture()
def bank(rng) -> ProductBank:
    return ProductBank.from_views([make_view(_package(rng), np.ones((S, S), bool), CELL) for _ in range(5)])


def test_scene_at_the_frame_edge_is_not_scored_but_a_change_inside_is(bank, rng):
    clean = _structure_score(bank, _package(rng), margin=2)
    edge = _package(rng)
    stripes = np.where((np.arange(S) // 3 % 2 == 0)[:, None, None], 20, 240).astype(np.uint8)
    edge[:, :3] = stripes[:, :3]  # 3 px of alignment error: a striped table cloth shows along the left edge
    inside = _package(rng)
    inside[20:80, 44:47] = stripes[20:80, :3]  # the same stripes printed on the package itself
    assert _structure_score(bank, edge, margin=2) < clean + 1.0
    assert _structure_score(bank, inside, margin=2) > clean + 5.0
    # without the margin the edge would count as a departure (what the margin is for)
    assert _structure_score(bank, edge, margin=0) > _structure_score(bank, _package(rng), margin=0) + 5.0


def test_margin_is_validated():
    with pytest.raises(DataError, match="compare.margin"):
        Config().with_overrides({"compare.margin": -1})
    assert Config().compare.margin == 3


def test_a_margin_that_leaves_nothing_is_refused(bank):
    with pytest.raises(ValueError, match="smaller compare.margin"):
        fit_normal_stats(bank, CELL, margin=S // CELL // 2)


def test_hue_shift_measures_a_hue_rotation_and_ignores_grey(rng):
    pkg = _package(rng)
    hsv = cv2.cvtColor(pkg, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] = (hsv[..., 0].astype(int) + round(25 / 360 * 256)) % 256  # +25 degrees
    turned = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    a, b = make_view(pkg, np.ones((S, S), bool), CELL), make_view(turned, np.ones((S, S), bool), CELL)
    ok = np.ones(a.cell_valid.shape, bool)
    assert abs(hue_shift(a.colors, a.colors, ok)) < 1.0
    assert 15.0 < abs(hue_shift(b.colors, a.colors, ok)) < 35.0  # Lab hue is not HSV hue, but close
    grey = np.full((S, S, 3), 128, np.uint8)
    g = make_view(grey, np.ones((S, S), bool), CELL)
    assert np.isnan(hue_shift(g.colors, g.colors, ok))  # nothing coloured to measure
