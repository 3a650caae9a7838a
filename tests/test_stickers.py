"""Price stickers (brandguard.stickers): a shop's or seller's price sticker stuck on the package is read as a
price and left out; a mark that does not read as a price (a counterfeit's extra mark) and print beside the
sticker still count."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from printed_card import camera, card_bank, placement
from printed_card import card as _card

from brandguard import comparison
from brandguard.config import CompareConfig
from brandguard.localization import warp_to_canonical
from brandguard.mismatch import make_view
from brandguard.stickers import STICKER_NOTE, find_price_sticker, on_a_label, read_price

S, CELL = 384, 6
G = S // CELL
W, H_IMG = 760, 600
STICKER = (250, 225, 70)  # a yellow label
BOX = (210, 270, 330, 320)  # the sticker on the card (canonical pixels x0, y0, x1, y1): wholly inside it


@pytest.mark.parametrize("text, price", [
    ("12.99", "12.99"), ("3,49", "3,49"), ("$12", "$12"), ("12€", "12€"), ("€ 3,49", "€3,49"),
    ("33.9", "33.9"),    # the last digit cut off by the frame
    (".99", ".99"),      # the units cut off
    ("9.99he", "9.99"),  # the line runs on into the package's print
    ("38.", "38."),      # the decimals cut off by the package's edge (a demo listing's sticker read so)
    ("Rs 99", "Rs99"), ("₹99", "₹99"), ("USD 5", "USD5"), ("99¢", "99¢"), ("49,-", "49,-"),
    ("$1,299", "$1,299"), ("1.234,56 €", "1.234,56€"),
])
def test_a_price_is_read_as_a_price(text, price):
    assert read_price(text) == price


@pytest.mark.parametrize("text", [
    "NEW", "100%", "SALE -70%", "100% ORIGINAL", "1.25L", "2.5 kg", "5.3V", "Bluetooth 5.3", "5.3", "USB 3.0",
    "1:43", "30", "Model SP-300", "250 ml", "", "5.", "No.12.", "EST 1886.", "Since 1853.", "SPF 50.", "x12.",
    "#38.", "PZN 1234.", "Nr. 38", "Gr. 38.",  # a year, a factor, a code or a size ending a line is print
    "99.9%", "10.5 %", "36.6°C", '15.6"', "12.5 0z",    # a measure, not a price: a counterfeit's "99.9%" stays
    "2024.01", "EXP 12.25", "Size 42.5", "EU 42.5", "V 10.10", "SKU 12.34",  # a date, a size, a version, a code
])
def test_print_and_extra_marks_are_not_prices(text):
    assert read_price(text) is None


def _placement(scale: float = 0.9, angle: float = 5.0) -> np.ndarray:
    return placement(W, H_IMG, scale, angle)


def _with_label(card: np.ndarray, text: str) -> np.ndarray:
    """The card with a yellow label on it reading ``text`` (dark print, as a shop's price gun prints)."""
    out = card.copy()
    x0, y0, x1, y1 = BOX
    cv2.rectangle(out, (x0, y0), (x1, y1), STICKER, -1)
    cv2.putText(out, text, (x0 + 10, y1 - 14), cv2.FONT_HERSHEY_DUPLEX, 1.0, (30, 30, 30), 2, cv2.LINE_AA)
    return out


def _photo(card: np.ndarray, Hc: np.ndarray, seed: int) -> np.ndarray:
    """The card on a plain grey table, photographed."""
    rng = np.random.default_rng(seed)
    img = np.full((H_IMG, W, 3), 120.0, np.float32)
    warped = cv2.warpPerspective(card.astype(np.float32), Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones((S, S), np.float32), Hc, (W, H_IMG), flags=cv2.INTER_LINEAR)[..., None]
    return camera(img * (1 - inside) + warped * inside, rng)


@pytest.fixture(scope="module")
def bank_and_stats():
    return card_bank(CELL)


@pytest.fixture(scope="module")
def reader():
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.text import shared_reader

    return shared_reader()


def _judge(bank_and_stats, reader, photo: np.ndarray, Hc: np.ndarray):
    """``(comparison, sticker, comparison again with it left out)`` as the detector runs them."""
    bank, stats = bank_and_stats
    settings = CompareConfig(margin=3, cell=CELL)
    crop, valid = warp_to_canonical(photo, Hc, S)
    view = make_view(crop, valid, CELL)
    res = comparison.compare(view, bank, stats, settings)
    found = find_price_sticker(photo, Hc, S, np.maximum(res.structure, res.colour), res.mask, reader, cell=CELL)
    again = None
    if found is not None:
        view.occlusion = found.cells.astype(np.float16)
        again = comparison.compare(view, bank, stats, settings, distances=res.distances)
    return res, found, again


def _cells(box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((G, G), bool)
    x0, y0, x1, y1 = box
    out[y0 // CELL:(y1 + 1) // CELL, x0 // CELL:(x1 + 1) // CELL] = True
    return out


def test_a_price_sticker_on_the_package_is_read_and_left_out(bank_and_stats, reader):
    Hc = _placement()
    res, found, again = _judge(bank_and_stats, reader, _photo(_with_label(_card(), "12.99"), Hc, 41), Hc)
    assert max(res.channels[:2]) > 8.0  # the sticker alone would flag the honest photo
    assert found is not None and found.text == "12.99"
    assert found.note == STICKER_NOTE.format(text="12.99", share=found.share)
    under = _cells(BOX) & res.mask
    assert found.cells[under].mean() > 0.9  # the sticker's cells are left out ...
    far = ~cv2.dilate(_cells(BOX).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert found.cells[far].mean() < 0.01  # ... and hardly any others
    assert max(again.channels[:2]) < 0.3 * max(res.channels[:2])


def test_a_price_sticker_too_small_for_the_text_detector_is_read_from_the_photo_warped_larger(reader, monkeypatch):
    """A demo listing's sticker: at the canonical resolution (the region as stored) the text detector finds no
    line in it, so the honest photo was called ``counterfeit`` 0.999; read larger, it reads ``92.9``."""
    from pathlib import Path

    from brandguard import stickers

    region = cv2.cvtColor(cv2.imread(str(Path(__file__).parent / "data" / "stickers" / "demo_listing_sticker.png")),
                          cv2.COLOR_BGR2RGB)
    assert region.shape == (144, 216, 3)
    # the region as find_price_sticker reads it: a patch of 18 x 6 cells (108 x 36 px) padded by half its
    # width (54 px) on every side, in a canonical frame the photo shows unwarped (H = identity)
    x0, y0 = 60, 120
    photo = np.full((S, S, 3), 128, np.uint8)
    photo[y0:y0 + 144, x0:x0 + 216] = region
    heat = np.zeros((G, G), np.float32)
    heat[(y0 + 54) // CELL:(y0 + 54) // CELL + 6, (x0 + 54) // CELL:(x0 + 54) // CELL + 18] = 50.0
    mask = np.ones((G, G), bool)
    found = find_price_sticker(photo, np.eye(3), S, heat, mask, reader, cell=CELL)
    assert found is not None and found.text == "92.9"
    assert found.cells[heat > 0].mean() > 0.5
    monkeypatch.setattr(stickers, "MAX_DETECT_SCALE", 1.0)  # the canonical resolution alone, as before
    assert find_price_sticker(photo, np.eye(3), S, heat, mask, reader, cell=CELL) is None, \
        "the text detector now finds this sticker at the canonical resolution: the test no longer needs the larger read"


@pytest.mark.parametrize("text", ["NEW", "100%", "99.9%"])
def test_a_mark_that_is_not_a_price_stays(bank_and_stats, reader, text):
    Hc = _placement()
    res, found, _ = _judge(bank_and_stats, reader, _photo(_with_label(_card(), text), Hc, 42), Hc)
    assert max(res.channels[:2]) > 8.0 and found is None  # a counterfeit's extra mark: a person decides


def test_a_printed_edit_beside_a_price_sticker_still_counts(bank_and_stats, reader):
    Hc = _placement()
    edited = _card()
    cv2.circle(edited, (110 * 2, 60 * 2), 52, (40, 160, 60), -1)  # the red logo recoloured green
    _, found, again = _judge(bank_and_stats, reader, _photo(_with_label(edited, "4.99"), Hc, 43), Hc)
    _, found_clean, again_clean = _judge(bank_and_stats, reader, _photo(_with_label(_card(), "4.99"), Hc, 43), Hc)
    assert found is not None and found_clean is not None
    logo = _cells((220 - 52, 120 - 52, 220 + 52, 120 + 52))
    assert not found.cells[logo].any()  # the recoloured logo is not left out with the sticker
    assert again.channels[1] > 4 * max(again_clean.channels[1], 1.0)


def test_a_line_on_a_badge_is_on_a_label_and_a_name_printed_on_the_package_is_not():
    """A badge's text (a coloured patch a few line heights across) is on a label; a name printed on the
    package's own background, or on a band that runs to the package's edge, is not."""
    img = np.full((384, 384, 3), (30, 60, 150), np.uint8)  # the package's background
    cv2.rectangle(img, (120, 180), (300, 260), (250, 200, 0), -1)  # a yellow badge
    img[300:350] = (200, 30, 40)  # a red band across the package

    def write(text: str, x: int, y: int, scale: float, colour: tuple[int, int, int]) -> list[int]:
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, colour, 2, cv2.LINE_AA)
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
        return [x - 2, y - h - 2, x + w + 2, y + base // 2 + 2]  # as a text detector boxes a line

    printed = write("FILA", 110, 90, 2.0, (240, 240, 240))
    badge = write("QUALITY", 135, 232, 1.0, (20, 20, 20))
    band = write("ROKU", 150, 335, 1.0, (250, 250, 250))
    assert not on_a_label(img, printed)
    assert on_a_label(img, badge)
    assert not on_a_label(img, band)


@pytest.mark.parametrize("what, match", [("float", "uint8"), ("channels", "RGB"), ("H", "3x3"), ("mask", "shape")])
def test_find_price_sticker_refuses_bad_input_in_one_line(bank_and_stats, reader, what, match):
    Hc = _placement()
    photo = _photo(_with_label(_card(), "12.99"), Hc, 41)
    heat = np.zeros((G, G), np.float32)
    mask = np.ones_like(heat, bool)
    if what == "float":
        photo = photo.astype(np.float32) / 255.0
    elif what == "channels":
        photo = photo[..., :1]
    elif what == "H":
        Hc = Hc[:2]
    else:
        mask = mask[:-1]
    with pytest.raises(ValueError, match=match) as err:
        find_price_sticker(photo, Hc, S, heat, mask, reader, cell=CELL)
    assert "\n" not in str(err.value)


def _labelled_photos(small_dataset, texts: list[str]) -> list[tuple]:
    """Seeded listing photos of the small data set's first products with a label stuck on the package's lower
    right, reading ``texts[i]`` (and the same photo without it): ``[(design, photo, photo without the label)]``."""
    from brandguard.synth import render_package
    from brandguard.synth.dataset import RENDER_SCALE, SIZES, _products
    from brandguard.synth.photo_models import Shot, _shoot

    shot = Shot(long_side=(640, 800), aspects=(4 / 3, 3 / 4), coverage=(0.3, 0.45), max_rotation=8.0,
                perspective=0.04, centred=False, backgrounds=("granite", "room"), jpeg=(88, 94))
    known, _ = _products("demo", 0, SIZES["small"])
    out = []
    for i, (d, text) in enumerate(zip(known, texts)):
        face = np.array(render_package(d, RENDER_SCALE))
        h, w = face.shape[:2]
        labelled = face.copy()
        x0, y0, x1, y1 = int(0.52 * w), int(0.62 * h), int(0.80 * w), int(0.74 * h)
        cv2.rectangle(labelled, (x0, y0), (x1, y1), (*STICKER, 255), -1)
        cv2.putText(labelled, text, (x0 + (x1 - x0) // 12, y1 - (y1 - y0) // 4), cv2.FONT_HERSHEY_DUPLEX,
                    (y1 - y0) / 48.0, (30, 30, 30, 255), max(2, (y1 - y0) // 24), cv2.LINE_AA)
        photo, _ = _shoot(labelled, np.random.default_rng(700 + i), shot)
        clean, _ = _shoot(face, np.random.default_rng(700 + i), shot)
        out.append((d, photo, clean))
    return out


def test_the_detector_leaves_a_price_sticker_out_and_keeps_an_extra_mark(detector, small_dataset):
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from printed_card import predict_with

    if detector.index.text_reader is None:
        pytest.skip("this index was built without the text check")
    prices = _labelled_photos(small_dataset, ["12.99", "4.49", "27.95"])
    marks = _labelled_photos(small_dataset, ["NEW", "100%", "TOP"])
    photos = [p for _, p, _ in prices] + [p for _, p, _ in marks]
    off = predict_with(detector, photos, {"compare.price_stickers": False})
    on = detector.predict_batch(photos)
    detector.read_every_sticker = True  # as calibrate() reads its authentic photos
    try:
        every = detector.predict_batch(photos)
    finally:
        detector.read_every_sticker = False
    clean = detector.predict_batch([c for _, _, c in prices])
    n = len(prices)
    for (d, _, _), p in zip(prices + marks, every):
        assert (p.brand, p.product) == (d.brand, d.product_slug)
    assert all(p.raw_score <= q.raw_score + 1e-6 for p, q in zip(every, off))  # it only ever takes evidence away
    read = [any(note.startswith("a price sticker (read") for note in p.notes) for p in every[:n]]
    assert sum(read) >= n - 1
    # the honest photos with a price sticker score about as their clean twins do, far below without the step
    for p, q, c in zip(every[:n], off[:n], clean):
        if any(note.startswith("a price sticker") for note in p.notes):
            assert p.raw_score < q.raw_score - 0.5 and p.raw_score < c.raw_score + 0.5
    # a label that does not read as a price is an extra mark: never left out ...
    assert not any(note.startswith("a price sticker") for p in every[n:] for note in p.notes)
    assert all(p.raw_score == pytest.approx(q.raw_score) for p, q in zip(every[n:], off[n:]))
    # ... and outranks every honest photo whose price sticker was left out (without the step it did not)
    assert min(p.raw_score for p in every[n:]) > max(p.raw_score for p in every[:n])
    assert min(p.raw_score for p in off[n:]) < max(p.raw_score for p in off[:n])
    # by default only a photo that would be flagged is read (the step only lowers a score): the others keep theirs
    for p, q, e in zip(on, off, every):
        assert p.raw_score == pytest.approx(q.raw_score if q.verdict == "authentic" else e.raw_score)
