"""The HTML evidence report: cards for flagged photos, tables for the rest, robust to missing files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from brandguard.detector import Match, Prediction
from brandguard.report import overlay_heatmap, write_html_report


def _photo(path: Path, rng: np.random.Generator, size: tuple[int, int] = (120, 160)) -> str:
    arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    return str(path)


def _heat(shape: tuple[int, int]) -> np.ndarray:
    heat = np.zeros(shape, np.float32)
    heat[20:60, 30:90] = np.linspace(0.5, 9.0, 60, dtype=np.float32)[None, :]
    return heat


def _flagged(src: str, ref: str, verdict: str, score: float, **kw: Any) -> Prediction:
    matches = (Match("acme", "box", ref, 0.91), Match("acme", "tin", ref, 0.55))
    quad = np.array([[10, 10], [150, 10], [150, 110], [10, 110]], np.float32)
    fields: dict[str, Any] = {
        "source": src, "verdict": verdict, "score": score, "raw_score": score * 10, "brand": "acme",
        "product": "box", "similarity": 0.91, "reference": ref, "matches": matches, "inliers": 42,
        "heatmap": _heat((120, 160)), "quad": quad,
    }
    fields.update(kw)
    return Prediction(**fields)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _cards(text: str) -> list[tuple[str, float, str]]:
    return [(v, float(s), src) for v, s, src in
            re.findall(r'<section class="card" data-verdict="([^"]*)" data-score="([^"]*)" data-source="([^"]*)"',
                       text)]


def test_report_has_one_card_per_flagged_prediction_in_order(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    preds = [
        _flagged(_photo(tmp_path / "s1.jpg", rng), ref, "suspicious", 0.97),
        _flagged(_photo(tmp_path / "c1.jpg", rng), ref, "counterfeit", 0.991),
        Prediction(source=_photo(tmp_path / "a.jpg", rng), verdict="authentic", score=0.2, brand="acme",
                   product="box", reference=ref, heatmap=np.zeros((120, 160), np.float32)),
        _flagged(_photo(tmp_path / "c2.jpg", rng), ref, "counterfeit", 0.999),
        _flagged(_photo(tmp_path / "s2.jpg", rng), ref, "suspicious", 0.95),
        Prediction(source=str(tmp_path / "u.jpg"), verdict="unknown", score=0.0),
        Prediction(source=str(tmp_path / "broken.jpg"), verdict="error", score=0.0, error="truncated JPEG"),
    ]
    out = write_html_report(preds, tmp_path / "sub" / "report.html", summary={"AUROC": 0.987654, "n": 7})
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left behind
    text = out.read_text(encoding="utf-8")

    cards = _cards(text)
    assert [(v, Path(src).name) for v, _, src in cards] == [
        ("counterfeit", "c2.jpg"), ("counterfeit", "c1.jpg"), ("suspicious", "s1.jpg"), ("suspicious", "s2.jpg")]
    assert text.count("data:image/jpeg;base64,") == 2 * len(cards)  # photo + reference per card
    assert "0.9877" in text and "AUROC" in text
    # Self-contained: no external resources.
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "<script" not in text

    table = text[text.index("<details>"):]
    assert "u.jpg" in table and "broken.jpg" in table and "truncated JPEG" in table
    assert "a.jpg" not in table


def test_max_items_limits_cards(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    preds = [_flagged(_photo(tmp_path / f"c{i}.jpg", rng), ref, "counterfeit", i / 10) for i in range(5)]
    text = write_html_report(preds, tmp_path / "r.html", max_items=2, max_side=64).read_text(encoding="utf-8")
    assert [s for _, s, _ in _cards(text)] == [0.4, 0.3]
    assert "3 more not shown" in text
    widths = [int(w) for w in re.findall(r'<img [^>]*width="(\d+)"', text)]
    assert widths and max(widths) <= 64


def test_missing_photo_and_reference_render_placeholders(tmp_path: Path, rng: np.random.Generator) -> None:
    photo = Path(_photo(tmp_path / "gone.jpg", rng))
    photo.unlink()
    pred = _flagged(str(photo), str(tmp_path / "no_ref.jpg"), "counterfeit", 0.99)
    text = write_html_report([pred], tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(_cards(text)) == 1
    assert text.count('class="placeholder"') == 2
    assert "data:image/jpeg" not in text


def test_strings_are_escaped(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    evil = "<script>alert('x')</script>.jpg"
    preds = [
        _flagged(evil, ref, "suspicious", 0.9, brand="<b>acme</b>"),
        Prediction(source=evil, verdict="error", score=0.0, error="<img src=x onerror=alert(1)>"),
    ]
    text = write_html_report(preds, tmp_path / "r.html", title="<i>t</i>",
                             summary={"<script>": "</td>"}).read_text(encoding="utf-8")
    assert "<script" not in text and "<b>acme" not in text and "<i>t" not in text and "onerror=alert(1)>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;.jpg" in text
    assert len(_cards(text)) == 1


def test_overlay_heatmap_changes_only_hot_pixels(rng: np.random.Generator) -> None:
    img = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    heat = _heat((120, 160))
    before = img.copy()
    out = overlay_heatmap(img, heat)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)  # input untouched
    changed = (out != img).any(axis=2)
    assert not changed[heat <= 0].any()
    assert changed[heat >= 3].mean() > 0.9


def test_overlay_heatmap_resizes_heat_and_draws_quad(rng: np.random.Generator) -> None:
    img = np.full((240, 320, 3), 128, np.uint8)
    heat = np.zeros((60, 80), np.float32)
    quad = np.array([[10, 10], [70, 10], [70, 50], [10, 50]], np.float32)
    out = overlay_heatmap(img, heat, quad)
    assert out.shape == img.shape
    assert (out[40, 100:220] != 128).any()  # top edge at y=10*4 drawn
    assert (out[120, 160] == 128).all()  # interior untouched


def test_bad_inputs_raise_value_error(tmp_path: Path) -> None:
    heat = np.zeros((60, 80), np.float32)
    with pytest.raises(ValueError, match="HxWx3"):
        overlay_heatmap(np.zeros((10, 10), np.uint8), heat)
    with pytest.raises(ValueError, match="max_items"):
        write_html_report([], tmp_path / "unused.html", max_items=-1)
    assert not (tmp_path / "unused.html").exists()
