"""Folder scoring: one row per file in a stable order, bad files as error rows, --resume, the CLI."""

from __future__ import annotations

import csv
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brandguard.scoring import CSV_COLUMNS, read_results, score_folder


def _bad_files(folder: Path) -> dict[str, str]:
    """Every kind of bad or awkward input a marketplace folder holds; name -> expected 'error' or 'ok'."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a photo")
    arr = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    # decompression bomb: a PNG whose header claims 40000 x 40000 pixels
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (folder / "bomb.png").write_bytes(png + b"\x00" * 64)
    Image.fromarray(arr).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.random((120, 160)) * 65535).astype(np.uint16)).save(folder / "gray16.png")
    Image.fromarray(arr).convert("P").save(folder / "palette.png")
    Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 128, np.uint8)])).save(folder / "alpha.png")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "notes.txt").write_text("ignored: not an image extension")
    return {"empty.jpg": "error", "text.jpg": "error", "truncated.jpg": "error", "bomb.png": "error",
            "whole.jpg": "ok", "cmyk.jpg": "ok", "gray16.png": "ok", "palette.png": "ok", "alpha.png": "ok"}


@pytest.fixture(scope="module")
def listing_copy(small_dataset, tmp_path_factory) -> Path:
    """20 of the small data set's listing photos (every label kind among them) and their labels."""
    dst = tmp_path_factory.mktemp("listings") / "listings"
    dst.mkdir()
    with (small_dataset.listings_dir / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = rows[:20]
    assert {r["label"] for r in kept} == {"authentic", "counterfeit", "unrelated"}
    for r in kept:
        shutil.copy(small_dataset.listings_dir / r["path"], dst / r["path"])
    with (dst / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    return dst


def test_bad_files_become_error_rows_and_the_rest_is_scored(detector, listing_copy, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(listing_copy, folder)
    expected = _bad_files(folder / "zz_bad")
    out = tmp_path / "results.csv"
    summary = score_folder(folder, detector, out)
    rows = read_results(out)
    n_photos = len(list(listing_copy.rglob("*.jpg")))
    assert len(rows) == n_photos + len(expected) == summary.total
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    by_name = {Path(r["path"]).name: r for r in rows if r["path"].startswith("zz_bad/")}
    for name, what in expected.items():
        if what == "error":
            assert by_name[name]["verdict"] == "error" and by_name[name]["error"], name
        else:
            assert by_name[name]["verdict"] != "error", (name, by_name[name]["error"])
    good = [r for r in rows if not r["path"].startswith("zz_bad/")]
    assert all(r["verdict"] != "error" for r in good)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # stable order
    assert Path(str(out) + ".run.json").is_file()


def test_resume_after_interruption_yields_exactly_one_row_per_file(detector, listing_copy, tmp_path):
    out = tmp_path / "results.csv"
    full = tmp_path / "full.csv"
    score_folder(listing_copy, detector, full, batch_size=4)
    expected = read_results(full)
    # simulate a run killed after some rows, in the middle of writing a line
    lines = full.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:7]) + lines[7][:10])
    shutil.copy(str(full) + ".run.json", str(out) + ".run.json")  # a run record is written when a run starts
    summary = score_folder(listing_copy, detector, out, resume=True, batch_size=4)
    rows = read_results(out)
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    assert len({r["path"] for r in rows}) == len(rows)
    assert summary.resumed == 6 and summary.scored == len(expected) - 6
    for a, b in zip(rows, expected):
        assert a["verdict"] == b["verdict"] and float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-6)
    # resuming a finished run scores nothing and changes nothing
    again = score_folder(listing_copy, detector, out, resume=True)
    assert again.scored == 0 and read_results(out) == rows


def test_cli_score_writes_csv_and_report(saved_index, listing_copy, tmp_path, capsys):
    from brandguard.cli import main

    out, report = tmp_path / "r.csv", tmp_path / "report.html"
    code = main(["score", str(listing_copy), "--index", str(saved_index), "-o", str(out), "--report", str(report),
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(list(listing_copy.rglob("*.jpg")))
    html = report.read_text()
    assert "<html" in html.lower() and (tmp_path / "report_files" / "rows.js").is_file()
    assert "photos" in capsys.readouterr().out


def test_cli_reports_a_missing_index_clearly(tmp_path, capsys):
    from brandguard.cli import main

    code = main(["score", str(tmp_path), "--index", str(tmp_path / "none"), "-o", str(tmp_path / "r.csv")])
    assert code == 2
    assert "brandguard index build" in capsys.readouterr().err


def test_photos_compared_side_by_side_score_as_compared_one_by_one(saved_index, small_dataset, embedder) -> None:
    """A batch's localisation, crops and comparisons (OCR included, one reader per thread) run on
    ``runtime.workers`` threads; with one worker they run in turn. Every row, heatmap and reading must be equal."""
    from brandguard.detector import Detector
    from brandguard.index import ReferenceIndex

    side = ReferenceIndex.load(saved_index)
    assert side.config.runtime.workers >= 2
    one = ReferenceIndex.load(saved_index)
    one.config = one.config.with_overrides({"runtime.workers": 1})
    photos = sorted(str(p) for p in small_dataset.listings_dir.glob("*.jpg"))[:24]
    a = Detector(one, embedder).predict_batch(photos)
    b = Detector(side, embedder).predict_batch(photos)
    assert sum(p.verdict != "unknown" for p in b) >= 12  # most photos were compared, not only searched
    if side.text_enabled:
        assert any(p.text for p in b)  # the readers ran
    for p, q in zip(a, b):
        assert p.to_row() == q.to_row()
        assert repr(p.text) == repr(q.text)  # (NaN where a line was not counted)
        assert (p.heatmap is None) == (q.heatmap is None)
        if p.heatmap is not None:
            np.testing.assert_array_equal(p.heatmap, q.heatmap)


def test_a_reader_set_on_the_index_is_used_by_every_comparison_thread(saved_index, small_dataset, embedder) -> None:
    """Photos compared side by side take single-threaded stock readers from a pool, but an OCR reader the
    caller put on the index (a subclass, e.g. another OCR behind the same interface) is never replaced."""
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from brandguard.detector import Detector
    from brandguard.index import ReferenceIndex
    from brandguard.text import TextReader

    calls: list[int] = []

    class Counting(TextReader):
        def recognise_each(self, crops):  # type: ignore[no-untyped-def]
            calls.append(len(crops))
            return super().recognise_each(crops)

    photos = sorted(str(p) for p in small_dataset.listings_dir.glob("*.jpg"))[:12]
    rows = []
    for workers in (1, 2):
        index = ReferenceIndex.load(saved_index)
        if not index.text_enabled:
            pytest.skip("the index was built without the text check")
        index.config = index.config.with_overrides({"runtime.workers": workers})
        index._text_reader = Counting()
        calls.clear()
        rows.append([p.to_row() for p in Detector(index, embedder).predict_batch(photos)])
        assert sum(calls) > 0  # the caller's reader read the lines, with one worker and with two
    assert rows[0] == rows[1]

    class StandIn:  # another OCR behind the same interface, not thread-safe: it must be called one call at a time
        def __init__(self) -> None:
            self.inner, self.inside, self.most = TextReader(), 0, 0

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            attr = getattr(self.inner, name)
            if not callable(attr):
                return attr

            def call(*args, **kwargs):  # type: ignore[no-untyped-def]
                self.inside += 1
                self.most = max(self.most, self.inside)
                try:
                    return attr(*args, **kwargs)
                finally:
                    self.inside -= 1
            return call

    index = ReferenceIndex.load(saved_index)
    index._text_reader = stand_in = StandIn()
    assert [p.to_row() for p in Detector(index, embedder).predict_batch(photos)] == rows[1]
    assert stand_in.most == 1
