"""The optional wordmark (OCR) check: text distance, reference lines, and a misspelling read as such."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from brandguard.text import normalise, reference_lines, text_distance


def test_text_distance_counts_edits_and_ignores_spacing():
    assert text_distance("Adidas", "Adidas") == 0.0
    assert text_distance("Prime Eau de Parfum", "PrimeEaudeParfum") == 0.0
    assert text_distance("Adidas", "Adibas") == pytest.approx(1 / 6)
    assert text_distance("JBL", "JDL") == pytest.approx(1 / 3)
    assert text_distance("DIOR", "XYZW") == 1.0
    assert normalise("Coca-Cola!") == "cocacola"


def test_reference_lines_keep_what_most_references_read_alike():
    def line(text, y, h=30, conf=0.99):
        return {"text": text, "box": [50, y, 300, y + h], "confidence": conf}

    refs = [[line("Nikon", 40), line("Edge Earbuds", 200, 22)],
            [line("Nikon", 42), line("Edge Earbuds", 201, 22), line("Bluetooth", 300, 10)],
            [line("Nlkon", 41), line("Edge Earbuds", 199, 22)]]
    kept = reference_lines(refs, agree=0.6)
    assert [normalise(k["text"]) for k in kept] == ["nikon", "edgeearbuds"]  # small print dropped, majority text
    strict = reference_lines(refs, agree=1.0)  # "Nikon" is read alike in only 2 of 3 references
    assert [normalise(k["text"]) for k in strict] == ["edgeearbuds"]


def _word(text: str, cover: tuple[int, int] | None = None, sticker: tuple[int, str] | None = None) -> np.ndarray:
    """``text`` rendered on a white crop; ``cover=(i, j)``: a grey block over letters i..j-1 (a finger);
    ``sticker=(i, price)``: a pink price sticker from letter i on, wider than the rest of the word."""
    from pathlib import Path

    import matplotlib

    path = str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans-Bold.ttf")
    font = ImageFont.truetype(path, 48)
    img = Image.new("RGB", (384, 384), "white")
    draw = ImageDraw.Draw(img)
    draw.text((60, 100), text, fill="black", font=font)
    if cover is not None:
        x0, x1 = (60 + draw.textlength(text[:i], font=font) for i in cover)
        draw.rectangle([x0, 95, x1 + 6, 170], fill=(128, 128, 128))
    if sticker is not None:
        x0 = 60 + draw.textlength(text[:sticker[0]], font=font)
        draw.rectangle([x0, 92, x0 + 120, 160], fill=(250, 170, 170))
        draw.text((x0 + 8, 100), sticker[1], fill="black", font=ImageFont.truetype(path, 40))
    return np.asarray(img)


def test_misspelt_count_tells_a_covered_span_from_misspelt_letters():
    from brandguard.text import line_reads, misspelt_count, misspelt_distance

    # letters replaced by look-alike letters, swapped, or added: misspelt, among the characters read
    assert misspelt_count("Adidas", "Adibas") == (1, 6)
    assert misspelt_count("Reebok", "Reeobk") == (2, 6)
    assert misspelt_count("Garmin", "Garrnin") == (2, 6)
    assert misspelt_count("Prime Eau de Parfum", "PrimeEaudeParfum") == (0, 16)
    # a covered span reads short or as a sticker's figures: unread, neither wrong nor read
    assert misspelt_count("Reebok", "Reeb") == (0, 4)
    assert misspelt_count("Reebok", "Reeb38") == (0, 4)
    assert misspelt_count("Reebok", "Reebx8") == (0, 4)  # a run that holds a figure is covered as a whole
    assert misspelt_count("NIKON", "65.0N") == (0, 0)  # mostly covered: the line is unread
    assert np.isnan(misspelt_distance("NIKON", "65.0N")) and misspelt_distance("JBL", "JDL") == pytest.approx(1 / 3)
    # the misread model's input: a mostly covered line is left out, a partly covered one counts what was read
    assert line_reads([{"expected": "NIKON", "read": "65.0N", "counted": 0.8},
                       {"expected": "Reebok", "read": "Reeb38", "counted": 0.33},
                       {"expected": "Adidas", "read": "Aidbas", "counted": 0.33}]) == [(0, 4), (3, 6)]


def test_a_covered_wordmark_is_not_a_takedown_but_a_misspelt_one_is():
    # the OCR reads a wordmark whose last three letters are under a finger, or under a price sticker, short
    # or with figures: an authentic listing photo, not evidence of a misspelling; three look-alike letters
    # in the same word, read confidently at full length, stay a takedown
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.calibration import ChannelFusion, ScoreCalibrator, Thresholds, verdict_for
    from brandguard.text import line_reads, shared_reader, text_distance, text_mismatch

    reader = shared_reader()
    lines = reference_lines([reader.read_lines(_word("Garmin")) for _ in range(2)])
    assert lines and normalise(lines[0]["text"]) == "garmin"
    rng = np.random.default_rng(0)
    n = 80  # authentic photos reading their lines right, with typical structure and colour channels
    authentic = np.c_[rng.gamma(2, 1, n), rng.gamma(2, 0.2, n), np.zeros(n), np.full(n, np.nan)]
    reads = [[(0, 6), (0, 14)]] * n
    fusion = ChannelFusion.fit(authentic, reads)
    cal = ScoreCalibrator.fit(fusion.fuse(authentic, reads))

    def verdict(crop: np.ndarray) -> tuple[str, list]:
        channel, details = text_mismatch(crop, lines, reader)
        channels = np.median(authentic, 0)
        channels[2] = channel
        return verdict_for(cal.score(fusion.fuse(channels, line_reads(details))), Thresholds()), details

    for covered in (_word("Garmin", cover=(3, 6)), _word("Garmin", sticker=(3, "38.4"))):
        got, details = verdict(covered)
        assert details and normalise(details[0]["read"]) != "garmin"  # the OCR did misread it
        assert text_distance("Garmin", details[0]["read"]) >= 0.5  # 3 or more edits, counted as such before
        assert got == "authentic", details
    got, details = verdict(_word("Gcrmlh"))  # three look-alike letters
    assert text_distance("Garmin", details[0]["read"]) >= 0.5
    assert got == "counterfeit", details


def test_ocr_reads_a_misspelt_wordmark():
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.text import shared_reader, text_mismatch

    reader = shared_reader()
    lines = reference_lines([reader.read_lines(_word("Garmin")) for _ in range(2)])
    assert lines and normalise(lines[0]["text"]) == "garmin"
    same, _ = text_mismatch(_word("Garmin"), lines, reader)
    fake, details = text_mismatch(_word("Garrnin"), lines, reader)
    assert same == 0.0 and fake > 0.1
    assert details[0]["read"] and details[0]["text"] == lines[0]["text"]


def test_index_with_text_check_reads_and_keeps_reference_lines(small_dataset, embedder, labels, tmp_path):
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.config import Config
    from brandguard.detector import Detector
    from brandguard.index import ReferenceIndex
    from brandguard.references import read_references

    brand = min({i.brand for i in read_references(small_dataset.refs_dir)})
    items = [i for i in read_references(small_dataset.refs_dir) if i.brand == brand]
    index = ReferenceIndex.build(items, Config().with_overrides({"compare.text_check": "on"}), embedder=embedder)
    assert index.text_enabled and any(m.text_lines for m in index.products)
    index.save(tmp_path / "idx")
    again = ReferenceIndex.load(tmp_path / "idx")
    assert again.text_enabled and [m.text_lines for m in again.products] == [m.text_lines for m in index.products]
    photo = next(i for i in labels if i.brand == brand and i.label == "authentic")
    p = Detector(again, embedder).predict(str(photo.path))
    assert len(p.channels) == 4 and p.brand == brand


def test_text_check_is_on_when_the_ocr_extra_is_installed_unless_switched_off():
    from brandguard.config import Config
    from brandguard.errors import DataError
    from brandguard.index import _resolve_text_check
    from brandguard.text import available

    assert Config().compare.text_check == "auto"
    assert _resolve_text_check("auto") is available()
    assert _resolve_text_check("off") is False
    with pytest.raises(DataError, match="auto, on or off"):
        _resolve_text_check("maybe")


def test_a_confident_letter_swap_in_a_line_the_references_read_alike_needs_less_structure_evidence():
    # a wordmark every reference reads alike and confidently; a stylised logo they read two ways ("UBL", "JBL")
    from brandguard import comparison
    from brandguard.config import Config
    from brandguard.mismatch import CHANNELS, ProductBank, fit_normal_stats, make_view
    from brandguard.text import confident_swap

    def line(text, conf=0.99):
        return {"text": text, "box": [20, 30, 70, 60], "confidence": conf}

    alike = reference_lines([[line("Reebok")] for _ in range(4)])
    two_ways = reference_lines([[line("UBL", 0.93)], [line("JBL", 0.91)], [line("UBL", 0.95)], [line("UBL", 0.94)]])
    assert alike[0]["consistent"] and not two_ways[0]["consistent"]
    assert normalise(two_ways[0]["text"]) == "ubl"  # the majority reading is still the reference line

    def detail(ref, read, conf=0.99):
        return {"text": ref["text"], "read": read, "confidence": conf, "consistent": ref["consistent"],
                "distance": 1 / 6, "box": ref["box"]}

    assert confident_swap(detail(alike[0], "Reebox"))
    assert not confident_swap(detail(alike[0], "Reebox", conf=0.92))  # read, but not surely
    assert not confident_swap(detail(alike[0], "Reebk"))  # a letter short: blur or a covered span
    assert not confident_swap(detail(alike[0], "Reebok"))  # read right
    assert not confident_swap(detail(two_ways[0], "JBL"))

    S, cell, rng = 96, 6, np.random.default_rng(7)

    def package(amp: float = 0.0) -> np.ndarray:
        yy, xx = np.mgrid[0:S, 0:S]
        img = np.stack([120 + 60 * np.sin(xx / 9.0), 90 + 50 * np.cos(yy / 7.0), 160 + 0 * xx], -1).astype(np.float32)
        img[30:60, 20:70] = (230, 40, 40)
        img[32:58, 22:68] += np.where((np.arange(46) // 3 % 2 == 0)[None, :, None], -amp, amp)  # faint strokes
        return np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)

    bank = ProductBank.from_views([make_view(package(), np.ones((S, S), bool), cell) for _ in range(4)])
    stats, _ = fit_normal_stats(bank, cell)
    text = CHANNELS.index("text")
    for amp in np.linspace(0.3, 2.4, 15):  # a photo whose strokes changed only a little in the line's box
        view = make_view(package(amp), np.ones((S, S), bool), cell)
        swap = comparison.compare(view, bank, stats, Config().compare, text_details=[detail(alike[0], "Reebox")])
        x0, y0, x1, y1 = (v // cell for v in (20, 30, 70, 60))
        box_z = float(np.quantile(swap.structure[y0:y1 + 1, x0:x1 + 1], 0.9))
        if comparison.SWAP_SUPPORT + 0.2 <= box_z < comparison.TEXT_SUPPORT - 0.2:
            break
    else:
        pytest.fail("no photo with weak structure evidence in the line's box")
    assert swap.channels[text] == pytest.approx(1 / 6)  # the confident swap counts
    unsure = comparison.compare(view, bank, stats, Config().compare,
                                text_details=[detail(two_ways[0], "JBL"), detail(alike[0], "Reebox", conf=0.92)])
    assert unsure.channels[text] == 0.0  # read two ways by the references, or read unsurely: structure gate


def test_another_name_is_told_from_a_misspelling():
    """A sibling's product line (VANILJ where the references read NATURELL) and another brand's short name
    (UBAR, the middle of SUBARU, where they read BMW) are other names; every misspelling the demo generator
    makes, subtle or gross, of long and three-letter names alike, still reads as a misspelling."""
    from brandguard.synth.edits import misspell
    from brandguard.text import reads_other_name

    line = {"text": "NATURELL", "read": "VANILJ", "confidence": 0.94}
    assert reads_other_name(line)
    assert not reads_other_name({**line, "confidence": 0.6})  # an unsure reading names nothing
    assert reads_other_name({"text": "BMW", "read": "UBAR", "confidence": 0.98})
    assert reads_other_name({"text": "KFC", "read": "HOT", "confidence": 0.98})
    assert not reads_other_name({"text": "BMW", "read": "MBV", "confidence": 0.98})  # 3 edits, 2 letters kept
    assert not reads_other_name({"text": "LG", "read": "EA", "confidence": 0.98})  # too short to name anything
    assert not reads_other_name({"text": "Burger King", "read": "Burg QUALITY", "confidence": 0.98})  # a sticker
    wordmark = {"text": "BMW", "read": "Elite Scale", "confidence": 0.98}  # slid onto the product's next line
    assert reads_other_name(wordmark) and not reads_other_name(wordmark, names=["BMW", "Elite Scale Model"])
    # a sibling's product line shares most letters of the short wordmark by chance: that line does not count
    sibling = {"text": "Edge Sports Bottle", "read": "Plus Running Socks", "confidence": 0.98}
    assert reads_other_name(sibling, names=["Nike", "Edge Sports Bottle"])
    rng = np.random.default_rng(0)
    for name in ("Reebok", "Adidas", "Garmin", "Nikon", "Intel", "Samsung", "Philips", "Canon", "Puma",
                 "BMW", "KFC", "JBL", "Jeep", "Nike", "Dior", "TACO BELL", "Burger King"):
        for strength in ("subtle", "gross"):
            for _ in range(10):
                assert not reads_other_name({"text": name, "read": misspell(name, strength, rng), "confidence": 1.0})


def _reading(text: str, read: str, conf: float = 0.98) -> dict:
    """One line of :func:`brandguard.text.text_mismatch` details."""
    from brandguard.text import misspelt_distance

    return {"text": text, "read": read, "confidence": conf, "distance": misspelt_distance(text, read),
            "box": [20, 30, 70, 60], "consistent": True, "skipped": False}


def test_a_photo_that_reads_another_name_and_none_of_its_own_is_another_product():
    """Another brand's product sharing an indexed layout reads another name and nothing of the product's own;
    a sticker over one line, a misspelt wordmark or a line read unsurely leave the photo this product's."""
    from brandguard.text import other_name_lines, reads_other_product

    other_brand = [_reading("BMW", "UBAR"), _reading("Elite Scale Model 1:43", "Flow Scale Model 1:43", 0.95)]
    assert other_name_lines(other_brand) == [True, False] and reads_other_product(other_brand)
    assert reads_other_product([_reading("NATURELL", "VANILJ", 0.94)])  # a sibling flavour, its only line
    unsure = [other_brand[0], {**other_brand[1], "confidence": 0.6}]
    assert other_name_lines(unsure) == [True, False] and not reads_other_product(unsure)  # confirms nothing
    sticker = [_reading("THE", "THE"), _reading("NORTH", "NOBES")]  # something over the name, a line reads right
    assert other_name_lines(sticker) == [False, True] and not reads_other_product(sticker)
    badge = [_reading("KFC", "KFC"), _reading("KFC", "HOT")]  # the same name reads right elsewhere: not another
    assert other_name_lines(badge) == [False, False] and not reads_other_product(badge)
    misspelt = [_reading("BMW", "MBVV"), _reading("Elite Scale Model 1:43", "Elite Scale Model 1:43")]
    assert other_name_lines(misspelt) == [False, False] and not reads_other_product(misspelt)
    skipped = [{**_reading("BMW", ""), "confidence": 0.0, "distance": 0.0, "skipped": True}]
    assert not reads_other_product(skipped) and not reads_other_product([])


def _line(text: str, box: list[float], conf: float = 0.97) -> dict:
    """One line read in an aligned crop (canonical pixels), as :func:`brandguard.text.read_tall_lines` gives it."""
    return {"text": text, "box": [float(v) for v in box], "confidence": conf}


def test_a_package_that_reads_another_brand_where_this_one_is_printed_is_another_brand():
    """Another brand's product on this one's packaging template (FILA where the references read Reebok, Roku
    where they read AMD) reads another brand's name as large as this one's and nowhere this one's; a
    counterfeit's misspelt or partly erased brand name, a badge over it and the product's own lines do not."""
    from brandguard.synth.edits import misspell
    from brandguard.text import names_brand, other_brand_reading, reads_name

    refs = [{"text": "Reebok", "box": [60.0, 20.0, 200.0, 60.0]},
            {"text": "Core Trainers", "box": [60.0, 200.0, 200.0, 225.0]}]
    known = ["Reebok", "Core Trainers", "core trainers"]
    fila = [_line("FILA", [50, 30, 210, 100]), _line("FILA", [90, 120, 170, 150]), _line("Pro Trainers", [60, 200, 190, 225])]
    assert other_brand_reading(fila, refs, known, "reebok") == "FILA"  # the tallest line that names another
    assert other_brand_reading(fila, refs, known, "fila") is None  # no reference line names the product's brand
    assert other_brand_reading(fila + [_line("Reebok", [60, 160, 200, 190], 0.4)], refs, known, "reebok") is None
    rng = np.random.default_rng(0)
    for strength in ("subtle", "gross"):  # every misspelling the demo generator makes is still this brand
        for _ in range(20):
            misspelt = _line(misspell("Reebok", strength, rng), [60, 20, 200, 60])
            assert other_brand_reading(fila[1:] + [misspelt], refs, known, "reebok") is None
    assert other_brand_reading(fila[1:] + [_line("Ree", [60, 20, 120, 60])], refs, known, "reebok") is None
    in_place = [{"text": "Reebok", "read": "Reebok", "confidence": 0.98}]  # read at its place, missed by detection
    assert other_brand_reading(fila, refs, known, "reebok", placed=in_place) is None
    assert other_brand_reading(fila, refs, known, "reebok", placed=[{**in_place[0], "read": "C"}]) == "FILA"
    unread = [{"text": "Reebok", "read": "", "confidence": 0.0, "skipped": True}]  # its strokes are the references'
    assert other_brand_reading(fila, refs, known, "reebok", placed=unread) is None
    assert other_brand_reading([_line("FILA", [60, 20, 200, 60], 0.6)], refs, known, "reebok") is None  # unsure
    assert other_brand_reading([_line("FILA", [60, 120, 200, 160])], refs, known, "reebok") == "FILA"  # elsewhere
    assert other_brand_reading([_line("FILA", [60, 30, 200, 50])], refs, known, "reebok") is None  # too small
    assert other_brand_reading([_line("Core Trainers", [60, 20, 200, 60])], refs, known, "reebok") is None  # its own
    assert other_brand_reading(fila, refs, known + ["F", "m"], "reebok") == "FILA"  # stray letters name nothing
    # print the references show (small print the structure channel sees unchanged) names nothing, however
    # its detected box is padded
    small_print = [_line("EU42/UK8", [20, 300, 110, 340]) | {"unchanged": True}]
    assert other_brand_reading(small_print, refs, known, "reebok") is None
    assert other_brand_reading([{**small_print[0], "unchanged": False}], refs, known, "reebok") == "EU42/UK8"
    # a sticker over the brand name: its lines are smaller than the name they cover, and digits name nothing
    boots = [{"text": "Boots", "box": [60.0, 40.0, 300.0, 180.0]}, {"text": "Boots", "box": [120.0, 200.0, 240.0, 240.0]}]
    badge = [_line("100%", [130, 70, 230, 110], 1.0), _line("AUTHENTIC", [110, 115, 250, 148], 0.99)]
    assert other_brand_reading(badge, boots, ["Boots"], "boots") is None
    amd = [{"text": "AMDL", "box": [30.0, 40.0, 230.0, 120.0]}, {"text": "AMD", "box": [80.0, 140.0, 180.0, 180.0]}]
    roku = [_line("ROKU", [100, 5, 160, 35]), _line("Roku", [20, 45, 220, 125]), _line("Model CF-2041", [10, 220, 90, 240])]
    assert other_brand_reading(roku, amd, ["AMDL", "AMD"], "amd") == "Roku"
    assert other_brand_reading(roku + [_line("AMD", [80, 140, 180, 180], 0.5)], amd, ["AMDL", "AMD"], "amd") is None
    assert reads_name("Reebok", "Rebeok") and reads_name("AMD", "AMD Elite") and not reads_name("AMD", "Model CF-2041")
    assert reads_name("Red Bull", "Reu") and not reads_name("Reebok", "FILA") and not reads_name("Reebok", "ebay")
    assert names_brand("AMDL", "amd") and names_brand("THE NORTH FACE", "the-north-face") and not names_brand("UBL", "jbl")


def test_compare_takes_another_name_for_no_text_evidence_and_says_it_is_another_product():
    """In the one comparison, a line read as another name is no misspelling (the text channel does not count
    it) and a photo that reads nothing of its own product says so, which the detector turns into `unknown`."""
    from brandguard import comparison
    from brandguard.config import Config
    from brandguard.mismatch import CHANNELS, ProductBank, fit_normal_stats, make_view

    S, cell, rng = 96, 6, np.random.default_rng(3)

    def package(first_stroke: int = 24) -> np.ndarray:
        yy, xx = np.mgrid[0:S, 0:S]
        img = np.stack([120 + 60 * np.sin(xx / 9.0), 90 + 50 * np.cos(yy / 7.0), 160 + 0 * xx], -1).astype(np.float32)
        img[30:60, 20:70] = (230, 40, 40)
        img[34:56, first_stroke:66:5] = 0  # the strokes of the line
        return np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)

    bank = ProductBank.from_views([make_view(package(), np.ones((S, S), bool), cell) for _ in range(4)])
    stats, _ = fit_normal_stats(bank, cell)
    view = make_view(package(26), np.ones((S, S), bool), cell)  # the line's strokes changed
    text = CHANNELS.index("text")
    other = comparison.compare(view, bank, stats, Config().compare, text_details=[
        _reading("BMW", "UBAR"), {**_reading("Elite Scale", "Flow Scale"), "box": [20, 70, 70, 90]}])
    assert other.other_product and other.differs_widely
    assert comparison.OTHER_PRODUCT_NOTE in other.notes and comparison.OTHER_NAME_NOTE in other.notes
    assert np.isnan(other.text_details[0]["distance"])  # no misspelling evidence from another name
    misspelt = comparison.compare(view, bank, stats, Config().compare, text_details=[_reading("BMW", "MBVV")])
    assert not misspelt.other_product and not misspelt.notes
    assert misspelt.channels[text] > 0  # a misspelling read where the strokes changed counts


def test_another_brand_on_an_indexed_template_is_not_taken_down_and_a_misspelt_brand_still_is(detector, monkeypatch):
    """The small data set's products redrawn with another brand's name and logo on the same template (the
    layout, colours and small print kept): none is a takedown, and the Reebok box that reads FILA is called
    ``unknown`` with a note naming what it reads, where without the check it is flagged; the same products
    with a misspelt brand name or a mirrored logo and name (the small print then is the only legible text)
    keep their verdicts, without the note."""
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from dataclasses import replace

    from brandguard.comparison import OTHER_BRAND_NOTE
    from brandguard.detector import Detector
    from brandguard.synth import render_package
    from brandguard.synth.dataset import RENDER_SCALE, SIZES, _products
    from brandguard.synth.edits import apply_edit
    from brandguard.synth.photo_models import Shot, _shoot

    if detector.index.text_reader is None:
        pytest.skip("this index was built without the text check")
    shot = Shot(long_side=(640, 800), aspects=(4 / 3, 3 / 4), coverage=(0.35, 0.5), max_rotation=8.0,
                perspective=0.04, centred=False, backgrounds=("granite", "room"), jpeg=(88, 94))
    known, unrelated = _products("demo", 0, SIZES["small"])
    others, misspelt, mirrored = [], [], []
    for i, d in enumerate(known):
        o = unrelated[2 * (i % (len(unrelated) // 2))] if d.brand != "reebok" else \
            next(u for u in unrelated if u.brand == "fila")
        other = replace(d, logo=replace(d.logo, slug=o.logo.slug), wordmark=replace(d.wordmark, text=o.brand_title))
        rng = np.random.default_rng(i)
        for design, out in ((other, others), (apply_edit(d, "misspelled_wordmark", "gross", rng), misspelt),
                            (apply_edit(d, "mirrored_logo", "gross", rng), mirrored)):
            out.append((d, _shoot(np.array(render_package(design, RENDER_SCALE)), np.random.default_rng(900 + i), shot)[0]))
    got = detector.predict_batch([p for _, p in others + misspelt + mirrored])
    n = len(others)

    def noted(p) -> bool:
        return any(note.endswith(OTHER_BRAND_NOTE) for note in p.notes)

    assert not any(p.verdict == "counterfeit" for p in got[:n])
    fila = next(p for (d, _), p in zip(others, got) if d.brand == "reebok")
    assert fila.verdict == "unknown" and fila.score == 0.0 and noted(fila)
    assert next(n for n in fila.notes if n.endswith(OTHER_BRAND_NOTE)).lower().startswith("reads 'fi")
    for (d, _), p in zip(misspelt + mirrored, got[n:]):  # a counterfeit's brand, misspelt or mirrored, is this brand
        assert not noted(p) and p.brand == d.brand
    assert sum(p.verdict == "counterfeit" for p in got[n:2 * n]) >= n - 2  # the misspelt brand names are still caught
    monkeypatch.setattr(Detector, "_other_brand", lambda self, *args: None)
    without = detector.predict(next(p for d, p in others if d.brand == "reebok"))
    assert without.verdict in ("suspicious", "counterfeit") and without.raw_score == pytest.approx(fila.raw_score)
