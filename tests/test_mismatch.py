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


def _evidence(rng: np.random.Generator, sources: int, per: int, level: float, spread: float):
    from brandguard.mismatch import AuthenticEvidence

    G = S // CELL
    rows = [(r, np.ones((G, G), bool), tuple(np.abs(rng.normal(level, spread, (G, G))).astype(np.float32)
                                                for _ in range(2)) + (None,))
            for r in range(sources) for _ in range(per)]
    own = [(r, v, (d[0] * 0.5, d[1] * 0.5, None)) for r, v, d in rows]
    return AuthenticEvidence.from_comparisons(rows if sources >= 2 else [], own, G)


def test_a_one_reference_product_borrows_the_pooled_spread(rng):
    from brandguard.mismatch import AuthenticPrior, authentic_stats

    region = np.ones((S // CELL, S // CELL), bool)
    many = [(_evidence(rng, 5, 3, 0.5, 0.2), region) for _ in range(4)]
    prior = AuthenticPrior.pool(many)
    assert prior.products == 4
    assert prior.level[1, 0] == pytest.approx(0.2, rel=0.3)  # the spread the products share
    assert prior.ratio[0, 0] == pytest.approx(2.0, rel=0.2)  # other references differ twice as much as its own
    one = _evidence(rng, 1, 3, 0.5, 0.2)
    assert len(one.cross) == 0 and len(one.own) == 3
    stats = authentic_stats(one, region, prior)
    # not a zero or undefined spread: about what the other products teach
    assert np.all(np.isfinite(stats.sigma_s)) and float(np.median(stats.sigma_s)) > 0.1
    assert float(np.median(stats.mu_s)) == pytest.approx(0.5, rel=0.35)
    # no simulated photo could be localised: the pooled values, never a zero or undefined spread
    from brandguard.mismatch import AuthenticEvidence

    none = authentic_stats(AuthenticEvidence.empty(S // CELL), region, prior)
    assert float(np.median(none.sigma_s)) == pytest.approx(float(prior.level[1, 0]), rel=0.05)
    # nothing to pool from: generic values, still finite and positive
    alone = authentic_stats(one, region, AuthenticPrior.pool([(one, region)]))
    assert np.all(alone.sigma_s > 0) and np.all(np.isfinite(alone.mu_s))


def test_cross_fitted_statistics_leave_a_reference_out(rng):
    from brandguard.mismatch import AuthenticPrior, authentic_stats

    region = np.ones((S // CELL, S // CELL), bool)
    ev = _evidence(rng, 3, 3, 0.5, 0.2)
    ev.cross[ev.cross_source == 0] += 5.0  # reference 0's photos are far off
    prior = AuthenticPrior.pool([(_evidence(rng, 3, 3, 0.5, 0.2), region) for _ in range(3)])
    assert float(np.median(authentic_stats(ev, region, prior, leave_out=0).sigma_s)) < 0.5
    assert float(np.median(authentic_stats(ev, region, prior).sigma_s)) > 1.0


def test_noise_estimate_follows_sensor_noise_and_ignores_print(rng):
    from brandguard.mismatch import estimate_noise, noise_blur

    img = np.full((200, 200, 3), 128, np.uint8)
    cv2.putText(img, "BRAND 1L", (10, 100), cv2.FONT_HERSHEY_DUPLEX, 1.5, (20, 20, 20), 3)
    assert estimate_noise(img) < 1.0  # sharp print is not noise
    for sigma in (3.0, 10.0, 25.0):
        noisy = np.clip(img + rng.normal(0, sigma, img.shape[:2])[..., None], 0, 255).astype(np.uint8)
        assert abs(estimate_noise(noisy) - sigma) < 0.2 * sigma
    assert noise_blur(3.0) == 0.0  # what the standard blur already cleans is compared as before
    assert 0.0 < noise_blur(10.0) < noise_blur(25.0)


def test_noise_estimate_takes_grey_colour_and_float_images_and_refuses_others(rng):
    from brandguard.localization import estimate_noise, warp_to_canonical
    from brandguard.mismatch import noise_blur

    img = np.clip(128 + rng.normal(0, 6.0, (80, 80)), 0, 255)
    grey8 = img.astype(np.uint8)
    assert abs(estimate_noise(grey8) - estimate_noise(img)) < 0.5  # uint8 or float, 2-D or (H, W, 1)
    assert estimate_noise(grey8[..., None]) == estimate_noise(grey8)
    assert estimate_noise(np.zeros((0, 0), np.uint8)) == 0.0
    with pytest.raises(DataError, match="expects an"):
        estimate_noise(np.zeros((8, 8, 4), np.uint8))
    assert noise_blur(float("nan")) == 0.0  # unmeasured noise changes nothing
    # a degenerate homography maps nothing of the photo into the frame (and must not hang OpenCV)
    crop, valid = warp_to_canonical(np.zeros((300, 400, 3), np.uint8), np.zeros((3, 3)), 64)
    assert crop.shape == (64, 64, 3) and not valid.any()


def _dark_package(rng: np.random.Generator, border: tuple[int, int, int], cast: float = 1.0) -> np.ndarray:
    """A dark red-brown package with a cream line of print, in a frame whose 2-cell band shows ``border`` (a
    studio reference's white margin, or a listing's own table), photographed with a warm ``cast`` on red."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = border
    img[2 * CELL:-2 * CELL, 2 * CELL:-2 * CELL] = (75, 30, 25)
    img[40:52, 24:72] = (235, 232, 225)  # a cream wordmark: the only neutral print
    img[..., 0] *= cast
    return np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)


def test_a_photo_is_white_balanced_on_the_product_not_on_the_frame_around_it(rng):
    """A studio reference's white margin faces a listing's green table: balanced against it (``frame``), every
    channel of the honest photo was scaled and its whole package lit up in colour; on the product's own neutral
    print (``product``, the default), the colours stay those of the references."""
    refs = ProductBank.from_views([make_view(_dark_package(rng, (250, 250, 250)), np.ones((S, S), bool), CELL)
                                   for _ in range(4)])
    stats, _ = fit_normal_stats(refs, CELL, margin=2)
    assert not stats.region[:2].any() and stats.region[S // CELL // 2].any()  # the band is outside the product
    view = make_view(_dark_package(rng, (40, 150, 60), cast=1.08), np.ones((S, S), bool), CELL)
    inside = stats.region & view.cell_valid
    on_product = distance_maps(view, refs, CELL, region=stats.region)[1][inside]
    on_frame = distance_maps(view, refs, CELL)[1][inside]
    assert float(np.median(on_product)) < 0.05 and float(np.median(on_frame)) > 0.5
    # the default comparison and fit_normal_stats balance on the product; an index saved before the setting
    # existed loads with the frame, which its statistics were fitted on
    assert Config().compare.white_balance == "product"
    from brandguard.index import _saved_config

    assert Config.from_dict(_saved_config({"compare": {"margin": 3}})).compare.white_balance == "frame"
    assert Config.from_dict(_saved_config({"compare": {"white_balance": "product"}})).compare.white_balance == "product"
    with pytest.raises(DataError, match="compare.white_balance must be product or frame"):
        Config().with_overrides({"compare.white_balance": "auto"})
