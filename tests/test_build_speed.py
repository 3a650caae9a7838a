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
