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


def _word(text: str) -> np.ndarray:
    from pathlib import Path

    import matplotlib

    font = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans-Bold.ttf"), 48)
    img = Image.new("RGB", (384, 384), "white")
    ImageDraw.Draw(img).text((60, 100), text, fill="black", font=font)
    return np.asarray(img)


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
