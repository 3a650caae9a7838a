"""The HTML evidence report: a table of every row that agrees with the CSV, ranked cards with their evidence,
image files beside the page, robust to missing files and hostile names, and a scoring run with more flagged
photos (many tied) than the card limit."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from brandguard.detector import Match, Prediction
from brandguard.mismatch import CHANNELS
from brandguard.report import compact_prediction, heat_colours, overlay_heatmap, write_html_report


def _photo(path: Path, rng: np.random.Generator, size: tuple[int, int] = (120, 160)) -> str:
    arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    return str(path)


def _heat(shape: tuple[int, int]) -> np.ndarray:
    heat = np.zeros(shape, np.float32)
    heat[20:60, 30:90] = np.linspace(0.5, 9.0, 60, dtype=np.float32)[None, :]
    return heat


def _flagged(src: str, ref: str, verdict: str, score: float, **kw: Any) -> Prediction:
    matches = (Match("acme", "box", ref, 0.91), Match("acme", "box", ref, 0.55))
    quad = np.array([[10, 10], [150, 10], [150, 110], [10, 110]], np.float32)
    fields: dict[str, Any] = {
        "source": src, "verdict": verdict, "score": score, "raw_score": score * 10, "brand": "acme",
        "product": "box", "similarity": 0.91, "reference": ref, "matches": matches, "inliers": 42,
        "channels": (3.0, 1.0, 0.0, float("nan")), "heatmap": _heat((120, 160)), "quad": quad,
    }
    fields.update(kw)
    return Prediction(**fields)


def _data(page: Path) -> dict[str, Any]:
    text = (page.parent / f"{page.stem}_files" / "rows.js").read_text(encoding="ascii")
    assert text.startswith("window.BRANDGUARD_REPORT=")
    return json.loads(text[len("window.BRANDGUARD_REPORT="):].rstrip().rstrip(";"))


def _cards(page: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted((page.parent / f"{page.stem}_files").glob("cards-*.js")):
        text = f.read_text(encoding="ascii")
        m = re.fullmatch(r"window\.BRANDGUARD_CARDS\((\d+),(.*)\);\s*", text, re.DOTALL)
        assert m, f.name
        out += json.loads(m.group(2))
    return out


def _header_counts(page: Path) -> dict[str, int]:
    text = page.read_text(encoding="utf-8")
    table = text[text.index('id="counts"'):]
    table = table[:table.index("</table>")]
    return {v: int(n) for v, n in re.findall(r'<tr data-verdict="([^"]+)">.*?<td>(\d+)</td></tr>', table)}


def _row(col: str, data: dict[str, Any], r: list[Any]) -> Any:
    return r[data["columns"].index(col)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_cards_rank_flagged_photos_and_the_table_lists_every_row(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    preds = [
        _flagged(_photo(tmp_path / "s1.jpg", rng), ref, "suspicious", 0.97),
        _flagged(_photo(tmp_path / "c1.jpg", rng), ref, "counterfeit", 0.991),
        Prediction(source=_photo(tmp_path / "a.jpg", rng), verdict="authentic", score=0.2, brand="acme",
                   product="box", reference=ref, similarity=0.88, channels=(1.0, 1.0, 0.0, float("nan"))),
        # a tie on the calibrated score: the raw score ranks it
        _flagged(_photo(tmp_path / "c2.jpg", rng), ref, "counterfeit", 0.999, raw_score=12.0),
        _flagged(_photo(tmp_path / "c3.jpg", rng), ref, "counterfeit", 0.999, raw_score=30.0),
        _flagged(_photo(tmp_path / "s2.jpg", rng), ref, "suspicious", 0.95),
        Prediction(source=str(tmp_path / "u.jpg"), verdict="unknown", score=0.0, similarity=0.62),
        Prediction(source=str(tmp_path / "broken.jpg"), verdict="error", score=0.0, error="truncated JPEG"),
    ]
    out = write_html_report(preds, tmp_path / "sub" / "report.html", summary={"listings": "shop/"})
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html", "report_files"]  # nothing left behind

    cards = _cards(out)
    assert [(c["verdict"], Path(c["path"]).name) for c in cards] == [
        ("counterfeit", "c3.jpg"), ("counterfeit", "c2.jpg"), ("counterfeit", "c1.jpg"),
        ("suspicious", "s1.jpg"), ("suspicious", "s2.jpg")]
    assert [c["n"] for c in cards] == list(range(5))
    assert all(c["photo"]["src"].startswith("report_files/img/") for c in cards)
    for c in cards:  # every image a card names is a file beside the page
        for key in ("photo", "ref"):
            assert (out.parent / c[key]["src"]).is_file()
    assert cards[0]["score_text"] == "0.999000" and cards[0]["channels"][0]["name"] == CHANNELS[0]

    data = _data(out)
    rows = data["rows"]
    assert len(rows) == len(preds)
    by_name = {Path(_row("path", data, r)).name: r for r in rows}
    assert _row("similarity", data, by_name["u.jpg"]) == pytest.approx(0.62)  # the unknown row keeps its figures
    assert _row("note", data, by_name["broken.jpg"]) == "truncated JPEG"
    assert _row("card", data, by_name["a.jpg"]) == -1 and _row("card", data, by_name["c3.jpg"]) == 0
    assert _header_counts(out) == {"counterfeit": 3, "suspicious": 2, "authentic": 1, "unknown": 1, "error": 1,
                                   "total": 8}

    text = out.read_text(encoding="utf-8")
    assert "shop/" in text
    # no network at view time: every script and image is a relative path inside report_files/
    for f in [out, *out.parent.joinpath("report_files").glob("*.js")]:
        assert not re.search(r"https?://", f.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", ""))
    assert re.findall(r'<script src="([^"]+)"', text) == ["report_files/rows.js", "report_files/report.js"]


def test_files_follow_the_umask(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    preds = [_flagged(_photo(tmp_path / "c.jpg", rng), ref, "counterfeit", 0.99)]
    old = os.umask(0o022)
    try:
        out = write_html_report(preds, tmp_path / "r.html")
    finally:
        os.umask(old)
    files = [out, *(tmp_path / "r_files").rglob("*")]
    assert len(files) > 5
    for f in files:
        assert (f.stat().st_mode & 0o777) == (0o755 if f.is_dir() else 0o644), f


def test_max_items_limits_cards_not_rows_and_rewriting_replaces_the_folder(tmp_path: Path,
                                                                           rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    preds = [_flagged(_photo(tmp_path / f"c{i}.jpg", rng), ref, "counterfeit", 0.9 + i / 100) for i in range(5)]
    out = write_html_report(preds, tmp_path / "r.html", max_items=2, max_side=64)
    assert [c["score"] for c in _cards(out)] == [0.94, 0.93]
    assert len(_data(out)["rows"]) == 5
    assert "the highest-scored 2 of 5 flagged" in out.read_text(encoding="utf-8")
    assert "--report-max" in out.read_text(encoding="utf-8")
    with Image.open(tmp_path / _cards(out)[0]["photo"]["src"]) as im:
        assert max(im.size) <= 64
    out = write_html_report(preds, tmp_path / "r.html", max_items=0)
    assert _cards(out) == [] and not list((tmp_path / "r_files" / "img").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("r.", "r_", ".r"))) == ["r.html", "r_files"]


def test_missing_photo_and_reference_render_placeholders(tmp_path: Path, rng: np.random.Generator) -> None:
    photo = Path(_photo(tmp_path / "gone.jpg", rng))
    photo.unlink()
    pred = _flagged(str(photo), str(tmp_path / "no_ref.jpg"), "counterfeit", 0.99)
    out = write_html_report([pred], tmp_path / "r.html")
    (card,) = _cards(out)
    assert "missing" in card["photo"] and "missing" in card["crop"] and "missing" in card["ref"]
    assert not list((tmp_path / "r_files" / "img").iterdir())


def test_hostile_strings_stay_data(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    evil = "<script>alert('x')</script>.jpg"
    preds = [
        _flagged(evil, ref, "suspicious", 0.9, brand="<b>acme</b>", notes=("</script><script>alert(2)",)),
        Prediction(source=evil, verdict="error", score=0.0, error="<img src=x onerror=alert(1)>"),
    ]
    out = write_html_report(preds, tmp_path / "r.html", title="<i>t</i>", summary={"<script>": "</td>"})
    text = out.read_text(encoding="utf-8")
    assert "<i>t" not in text and "&lt;i&gt;t&lt;/i&gt;" in text and text.count("<script") == 2
    assert "</td></td>" not in text
    data_js = (tmp_path / "r_files" / "rows.js").read_text(encoding="ascii")
    cards_js = (tmp_path / "r_files" / "cards-0000.js").read_text(encoding="ascii")
    assert "</script" not in data_js and "<" not in cards_js  # JSON with \u003c-free ASCII escapes only
    (card,) = _cards(out)
    assert card["brand"] == "<b>acme</b>" and card["notes"] == ["</script><script>alert(2)"]
    # the page's script builds every element with textContent, never from HTML strings
    js = (tmp_path / "r_files" / "report.js").read_text(encoding="utf-8")
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


def test_warnings_a_reviewer_needs(tmp_path: Path, rng: np.random.Generator) -> None:
    ref = _photo(tmp_path / "ref.jpg", rng)
    far = np.array([[-200, -150], [400, -150], [400, 300], [-200, 300]], np.float32)  # outline far past the photo
    tiny = np.array([[10, 10], [22, 10], [22, 20], [10, 20]], np.float32)
    preds = [
        _flagged(_photo(tmp_path / "other.jpg", rng), ref, "counterfeit", 0.999, similarity=0.43, quad=far,
                 notes=("two products in the photo",)),
        _flagged(_photo(tmp_path / "tiny.jpg", rng), ref, "suspicious", 0.96, quad=tiny),
        _flagged(_photo(tmp_path / "fine.jpg", rng), ref, "suspicious", 0.95),
    ]
    out = write_html_report(preds, tmp_path / "r.html")
    cards = {Path(c["path"]).name: c for c in _cards(out)}
    other = " ".join(cards["other.jpg"]["warnings"])
    assert "low similarity 0.430" in other and "another product" in other
    assert "doubtful alignment" in other and "outside the photo" in other
    assert cards["other.jpg"]["notes"] == ["two products in the photo"]
    assert "tiny product" in " ".join(cards["tiny.jpg"]["warnings"])
    assert cards["fine.jpg"]["warnings"] == []


def test_score_text_has_digits_to_rank() -> None:
    from brandguard.report.html import _score_text

    assert _score_text(0.9998) == "0.999800"
    assert _score_text(0.99999999) == "1 \u2212 1.0e-08"
    assert _score_text(0.9998) != _score_text(0.99985)


def test_compact_prediction_keeps_the_outline_in_place(rng: np.random.Generator) -> None:
    heat = np.zeros((480, 640), np.float32)
    heat[100:200, 300:400] = 5.0
    quad = np.array([[64, 48], [576, 48], [576, 432], [64, 432]], np.float64)
    p = Prediction("x.jpg", "counterfeit", 0.99, heatmap=heat, quad=quad)
    small = compact_prediction(p, max_side=160)
    assert small.heatmap is not None and small.heatmap.shape == (120, 160)
    assert np.allclose(small.quad, quad / 4)
    assert small.heatmap[37, 87] == pytest.approx(5.0) and small.heatmap[10, 10] == 0.0
    assert compact_prediction(small) is small and p.heatmap is heat


def test_heat_scale_is_absolute() -> None:
    _, alpha = heat_colours(np.array([[0.0, 1.0, 16.0, 3147.0]]))
    assert alpha[0, 0] == 0.0 and 0 < alpha[0, 1] < alpha[0, 2] < alpha[0, 3] == pytest.approx(0.8)
    # the same heat gets the same colour whatever else is in the photo
    a, _ = heat_colours(np.array([[16.0, 0.0]]))
    b, _ = heat_colours(np.array([[16.0, 3147.0]]))
    assert (a[0, 0] == b[0, 0]).all()


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


def test_bad_inputs_raise_value_error(tmp_path: Path) -> None:
    heat = np.zeros((60, 80), np.float32)
    with pytest.raises(ValueError, match="HxWx3"):
        overlay_heatmap(np.zeros((10, 10), np.uint8), heat)
    with pytest.raises(ValueError, match="max_items"):
        write_html_report([], tmp_path / "unused.html", max_items=-1)
    assert not (tmp_path / "unused.html").exists()


# ------------------------------------------------------------------------------ a scoring run with --report
def _fake_batch(index: Any, tied: int) -> Any:
    """A stand-in for Detector.predict_batch: deterministic predictions on ``index``'s first product, every
    photo whose name ends in an even number flagged, ``tied`` of them with exactly the same score and raw score."""
    m = index.products[0]
    ref = m.refs[m.bank_refs[0]].path
    S = index.config.localization.canonical_size

    def predict_batch(paths: list[str], on_error: str = "record") -> list[Prediction]:
        out = []
        for src in paths:
            k = int(Path(src).stem.split("_")[-1])
            if k % 5 == 4:
                out.append(Prediction(src, "unknown", 0.0, similarity=0.61 + k / 1000))
                continue
            flagged = k % 2 == 0
            score = 0.9995 if flagged and k < 2 * tied else (0.96 + k / 10000 if flagged else 0.3)
            raw = 7.0 if flagged and k < 2 * tied else 3.0 + k / 100
            heat = np.zeros((96, 128), np.float32)
            heat[30:60, 40:90] = 20.0 if flagged else 1.0
            quad = np.array([[16, 8], [112, 8], [112, 88], [16, 88]], np.float64)
            out.append(Prediction(src, "counterfeit" if score >= 0.99 else "suspicious" if flagged else "authentic",
                                  score, raw, m.brand, m.product, 0.9, ref, (Match(m.brand, m.product, ref, 0.9),),
                                  inliers=80, channels=(raw, 1.0, float("nan"), float("nan")), heatmap=heat,
                                  quad=quad, instances=1))
        assert S > 0
        return out

    return predict_batch


def test_score_more_flagged_photos_than_cards_with_tied_scores(small_index, embedder, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from brandguard.cli import main
    from brandguard.detector import Detector

    rng = np.random.default_rng(3)
    listings = tmp_path / "listings"
    listings.mkdir()
    for k in range(60):
        _photo(listings / f"p_{k:03d}.jpg", rng, size=(96, 128))
    det = Detector(small_index, embedder)
    monkeypatch.setattr(det, "predict_batch", _fake_batch(small_index, tied=20))
    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, *a, **k: det))
    out, page = tmp_path / "r.csv", tmp_path / "report.html"
    code = main(["score", str(listings), "--index", str(tmp_path / "unused"), "-o", str(out), "--report", str(page),
                 "--report-max", "7", "--batch-size", "8", "--no-progress"])
    assert code == 0
    with out.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    flagged = [r for r in rows if r["verdict"] in ("counterfeit", "suspicious")]
    assert len(rows) == 60 and len(flagged) == 24
    assert sum(r["score"] == "0.999500" for r in flagged) == 16  # the tied ones (k < 40, even, not unknown)

    cards = _cards(page)
    assert len(cards) == 7 and all(c["score"] == 0.9995 for c in cards)
    # ties keep the scoring order (earliest first), not an arbitrary one
    assert [c["path"] for c in cards] == [r["path"] for r in flagged if r["score"] == "0.999500"][:7]
    assert all(c["crop"]["src"] and c["ref"]["aligned"] for c in cards)
    data = _data(page)
    assert len(data["rows"]) == 60 and data["max_cards"] == 7

    # the summary's counts are the CSV's, and each table row carries its CSV figures
    assert _header_counts(page) == {**Counter(r["verdict"] for r in rows), "total": 60}
    csv_rows = {r["path"]: r for r in rows}
    for r in data["rows"]:
        c = csv_rows[_row("path", data, r)]
        assert _row("verdict", data, r) == c["verdict"]
        assert _row("similarity", data, r) == pytest.approx(float(c["similarity"]))
        if c["verdict"] != "unknown":
            assert _row("score", data, r) == pytest.approx(float(c["score"]))


def test_resumed_run_reports_the_kept_rows_too(small_index, embedder, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from brandguard.detector import Detector
    from brandguard.scoring import score_folder

    rng = np.random.default_rng(5)
    listings = tmp_path / "listings"
    listings.mkdir()
    for k in range(12):
        _photo(listings / f"p_{k:03d}.jpg", rng, size=(96, 128))
    det = Detector(small_index, embedder)
    fake = _fake_batch(small_index, tied=3)
    seen: list[str] = []
    monkeypatch.setattr(det, "predict_batch", lambda paths, on_error="record": seen.extend(paths) or fake(paths))
    out, page = tmp_path / "r.csv", tmp_path / "report.html"
    score_folder(listings, det, out)  # an earlier run without a report
    for k in range(12, 20):
        _photo(listings / f"p_{k:03d}.jpg", rng, size=(96, 128))
    seen.clear()
    summary = score_folder(listings, det, out, resume=True, report=page, report_max_items=4)
    assert summary.resumed == 12 and summary.scored == 8
    cards = _cards(page)
    # the four highest-ranked flagged rows: two tied ones from the first run (scored again for their evidence)
    assert [c["path"] for c in cards] == ["p_000.jpg", "p_002.jpg", "p_018.jpg", "p_016.jpg"]
    assert [Path(s).name for s in seen if Path(s).name in ("p_000.jpg", "p_002.jpg")] == ["p_000.jpg", "p_002.jpg"]
    assert len(_data(page)["rows"]) == 20 and _header_counts(page)["total"] == 20
