"""What the faster index build must keep: the same reference lines from fewer OCR recognitions, and the same
simulated listing photos whichever thread draws them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont


def _package(shift: int) -> np.ndarray:
    """An aligned 384-px crop: a wordmark, a product line and three lines of small print."""
    from pathlib import Path

    import matplotlib

    path = str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans-Bold.ttf")
    img = Image.new("RGB", (384, 384), "white")
    draw = ImageDraw.Draw(img)
    draw.text((40 + shift, 40), "Garmin", fill="black", font=ImageFont.truetype(path, 56))
    draw.text((40 + shift, 130), "Forerunner 55", fill=(30, 30, 90), font=ImageFont.truetype(path, 30))
    small = ImageFont.truetype(path, 13)
    for k, line in enumerate(("Made in Taiwan  Model A03", "Water rated 5 ATM  Battery 2 weeks", "www.example.com")):
        draw.text((40 + shift, 250 + 24 * k), line, fill="black", font=small)
    return np.asarray(img)


def test_reading_only_the_lines_that_count_keeps_the_reference_lines() -> None:
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.comparison import reference_text_details
    from brandguard.text import TextReader, normalise, read_reference_text, reference_lines

    refs = [_package(shift) for shift in (0, 3, 6)]
    reader = TextReader(threads=1)
    every = []  # every detected line recognised, each alone
    for image in refs:
        found = reader.detect(image)
        reads = reader.recognise_each([crop for _, crop in found])
        every.append([{"text": t, "box": box, "confidence": c} for (box, _), (t, c) in zip(found, reads) if c >= 0.5])
        assert {tuple(ln["box"]) for ln in reader.read_lines(image)} <= {tuple(box) for box, _ in found}
    lines = reference_lines(every)
    assert [normalise(ln["text"]) for ln in lines] == ["garmin", "forerunner55"]

    lazy = read_reference_text(refs, workers=2)
    assert reference_lines(lazy) == lines
    assert [reference_text_details(own, lines) for own in lazy] == [reference_text_details(own, lines) for own in every]
    assert sum(map(len, lazy)) < sum(map(len, every))  # the small print was detected but not read

    # references added to a product that has read ones: the same lines as reading them all at once
    added = read_reference_text(refs[1:], known=[every[0]])
    assert reference_lines([every[0], *added]) == lines


def test_simulated_listing_photos_do_not_depend_on_the_thread_that_draws_them() -> None:
    from brandguard.listing_conditions import simulate_listing_photos

    rng = np.random.default_rng(3)
    photos = [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(4)]
    alone = [simulate_listing_photos(p, np.random.default_rng([5, i]), 3) for i, p in enumerate(photos)]
    with ThreadPoolExecutor(2) as ex:  # side by side, each thread with its own albumentations pipeline
        side = list(ex.map(lambda ip: simulate_listing_photos(ip[1], np.random.default_rng([5, ip[0]]), 3),
                           enumerate(photos)))
    assert len(side) == 4 and all(len(s) == 3 for s in side)
    for a, b in zip(alone, side):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    assert not np.array_equal(alone[0][0], alone[0][1])  # the views differ from each other


def test_nan_statistics_match_numpy_and_never_touch_the_warning_filters() -> None:
    """The build's threads reduce maps with all-NaN cells; numpy would warn, and silencing that with
    ``warnings.catch_warnings`` is process-wide and races between threads."""
    import warnings

    from brandguard.mismatch import nan_median, nan_std

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(7, 3, 5, 5)).astype(np.float32)
    maps[rng.random(maps.shape) < 0.3] = np.nan
    maps[:, 1, 2, 3] = np.nan  # a cell no photo measured
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        mu, sd = nan_median(maps, axis=0), nan_std(maps, axis=0)
        assert np.isnan(nan_median(np.full(4, np.nan, np.float32)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_mu, want_sd = np.nanmedian(maps, axis=0), np.nanstd(maps, axis=0)
    assert mu.dtype == np.float32 and mu.shape == (3, 5, 5)
    np.testing.assert_array_equal(mu, want_mu)  # numpy's own values, NaN where numpy gives NaN
    np.testing.assert_allclose(sd, want_sd, rtol=1e-6)
    assert np.isnan(mu[1, 2, 3]) and np.isnan(sd[1, 2, 3])


def test_products_fitted_side_by_side_give_the_index_built_one_by_one(small_dataset, small_index, embedder) -> None:
    """The default build fits products on every worker at once; one worker fits them in turn. Both must give
    the same products, keypoints, statistics and verdicts, and leave the process's warning filters as they
    were."""
    import warnings

    from brandguard.config import Config
    from brandguard.detector import Detector
    from brandguard.index import ReferenceIndex

    assert Config().runtime.workers >= 2 and len(small_index.products) >= 2  # the fixture was built side by side
    filters = list(warnings.filters)
    serial = ReferenceIndex.build(small_dataset.refs_dir, Config().with_overrides({"runtime.workers": 1}),
                                  embedder=embedder)
    assert warnings.filters == filters
    assert [(m.key, m.view, [r.path for r in m.refs]) for m in serial.products] == \
        [(m.key, m.view, [r.path for r in m.refs]) for m in small_index.products]
    for a, b in zip(serial.products, small_index.products):
        np.testing.assert_array_equal(a.kp_xy, b.kp_xy)
        np.testing.assert_array_equal(a.kp_desc, b.kp_desc)
        np.testing.assert_allclose(a.stats.mu_s, b.stats.mu_s, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a.stats.sigma_c, b.stats.sigma_c, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a.calibration_scores, b.calibration_scores, rtol=1e-5, atol=1e-6)
        assert a.ref_text == b.ref_text
    photos = sorted(small_dataset.listings_dir.glob("*.jpg"))[:6]
    one, side = Detector(serial, embedder), Detector(small_index, embedder)
    for photo in photos:
        p, q = one.predict(photo), side.predict(photo)
        assert (p.verdict, p.product) == (q.verdict, q.product)
        assert abs(p.raw_score - q.raw_score) < 1e-4
