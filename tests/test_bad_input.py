"""Inputs real operators hand brandguard: nothing crashes, nothing is lost, nothing misleads.

One test (or a few) per kind of bad input, on small generated data: file names that are not UTF-8,
spreadsheet formula injection, labels that do not match the files, an index moved or used from another
folder, duplicate references, products with too few references, deliberate errors at the command line,
results that must not be thrown away, and file modes.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brandguard.config import Config
from brandguard.csvcells import decode_cell, encode_cell
from brandguard.detector import Detector
from brandguard.errors import BrandguardError, ConfigError, DataError, DeviceError, MissingExtraError
from brandguard.index import ReferenceIndex
from brandguard.references import read_labels
from brandguard.scoring import read_results, score_folder

LATIN1 = os.fsdecode(b"caf\xe9 cr\xe8me.jpg")  # how Python lists a file whose name holds Latin-1 bytes
FORMULA = "=cmd|' calc'!A0.jpg"


def _product_dirs(dataset) -> list[Path]:
    return sorted(p for p in dataset.refs_dir.glob("*/*") if p.is_dir())


def _listing_photos(dataset, brand: str, product: str, label: str = "authentic", n: int = 2) -> list[Path]:
    items = [i for i in read_labels(dataset.labels_csv)
             if i.brand == brand and i.product == product and i.label == label]
    assert len(items) >= n, (brand, product, label)
    return [i.path for i in items[:n]]


@pytest.fixture(scope="module")
def tiny(small_dataset, embedder, tmp_path_factory):
    """Indexes of one product P (clean, with duplicates), and P plus a one-reference product Q."""
    base = tmp_path_factory.mktemp("tiny")
    p_dir, q_dir = _product_dirs(small_dataset)[:2]
    p_key, q_key = (p_dir.parent.name, p_dir.name), (q_dir.parent.name, q_dir.name)

    clean = base / "refs_clean"
    shutil.copytree(p_dir, clean / p_dir.parent.name / p_dir.name)
    dup = base / "refs_dup"
    shutil.copytree(clean, dup)
    first = min((dup / p_dir.parent.name / p_dir.name).glob("*.jpg"))
    shutil.copy(first, first.with_name(first.stem + " (1).jpg"))  # the same bytes under another name
    second = sorted((dup / p_dir.parent.name / p_dir.name).glob("*.jpg"))[2]
    from brandguard.images import load_image

    pixels = load_image(second, max_side=Config().localization.max_side)
    Image.fromarray(pixels).save(second.with_name("resaved.png"))  # the same pixels, other bytes

    thin = base / "refs_thin"
    shutil.copytree(clean, thin)
    solo_dir = thin / "thinbrand" / "solo"
    solo_dir.mkdir(parents=True)
    shutil.copy(min(q_dir.glob("*.jpg")), solo_dir / LATIN1)

    cfg = Config().with_overrides({"compare.text_check": "off"})
    idx_clean = ReferenceIndex.build(clean, cfg, embedder=embedder)
    with warnings.catch_warnings(record=True) as dup_warnings:
        warnings.simplefilter("always")
        idx_dup = ReferenceIndex.build(dup, cfg, embedder=embedder)
    with warnings.catch_warnings(record=True) as thin_warnings:
        warnings.simplefilter("always")
        idx_thin = ReferenceIndex.build(thin, cfg, embedder=embedder)
    return {"base": base, "p": p_key, "q": q_key, "clean": clean, "dup": dup, "thin": thin,
            "idx_clean": idx_clean, "idx_dup": idx_dup, "idx_thin": idx_thin,
            "dup_warnings": [str(w.message) for w in dup_warnings],
            "thin_warnings": [str(w.message) for w in thin_warnings]}


@pytest.fixture(scope="module")
def det_clean(tiny, embedder):
    return Detector(tiny["idx_clean"], embedder)


# ----------------------------------------------------------------------------- 1, 2: names and cells
def test_cells_round_trip_any_name_and_never_start_a_formula():
    names = [LATIN1, FORMULA, "'quoted.jpg", "''twice.jpg", "+plus.jpg", "-minus.jpg", "@at.jpg", "\ttab.jpg",
             "new\nline.jpg", "back\\slash.jpg", "plain é 😀.jpg", "\\xE9 literally.jpg"]
    for name in names:
        cell = encode_cell(name)
        cell.encode("utf-8")  # valid UTF-8, whatever the name held
        assert decode_cell(cell) == name
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
        assert "\n" not in cell and "\r" not in cell and "\t" not in cell
    assert encode_cell("-0.1234") == "-0.1234"  # numbers stay numbers


def test_non_utf8_names_round_trip_through_the_csv_and_resume(det_clean, tiny, small_dataset, tmp_path):
    photos = _listing_photos(small_dataset, *tiny["p"], n=2)
    folder = tmp_path / "listings"
    folder.mkdir()
    shutil.copy(photos[0], folder / "a.jpg")
    shutil.copy(photos[0], folder / LATIN1)
    shutil.copy(photos[1], folder / "z.jpg")
    out = tmp_path / "r.csv"
    score_folder(folder, det_clean, out, batch_size=1)
    out.read_bytes().decode("utf-8")  # the CSV is valid UTF-8
    rows = read_results(out)
    assert sorted(r["path"] for r in rows) == sorted(os.listdir(folder))
    by = {r["path"]: r for r in rows}
    assert by[LATIN1]["verdict"] == by["a.jpg"]["verdict"] != "error"
    assert by[LATIN1]["score"] == by["a.jpg"]["score"]
    # a reference named in Latin-1 (index tiny/thin, product thinbrand/solo) round-trips in the reference column
    det_thin = Detector(tiny["idx_thin"], det_clean.index.embedder)
    solo_ref = str(tiny["thin"] / "thinbrand" / "solo" / LATIN1)
    q_folder = tmp_path / "q"
    q_folder.mkdir()
    shutil.copy(_listing_photos(small_dataset, *tiny["q"], n=1)[0], q_folder / "q.jpg")
    score_folder(q_folder, det_thin, tmp_path / "q.csv")
    (tmp_path / "q.csv").read_bytes().decode("utf-8")
    assert [r["reference"] for r in read_results(tmp_path / "q.csv")] == [solo_ref]
    # interrupted after the first row, half-way through the second: --resume completes it, one row per file
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:7], encoding="utf-8")
    summary = score_folder(folder, det_clean, out, resume=True)
    assert summary.resumed == 1 and summary.scored == 2
    again = read_results(out)
    assert sorted(r["path"] for r in again) == sorted(os.listdir(folder))
    assert {r["path"]: r["verdict"] for r in again} == {r["path"]: r["verdict"] for r in rows}


def test_mixed_folder_scores_every_file_and_good_photos_as_when_alone(det_clean, tiny, small_dataset, tmp_path,
                                                                     capsys):
    """``brandguard score`` on a folder mixing every kind of awkward file with ordinary photos."""
    from brandguard.cli import main

    idx_dir = tmp_path / "idx"
    tiny["idx_clean"].save(idx_dir)
    good = _listing_photos(small_dataset, *tiny["p"], n=2) + _listing_photos(small_dataset, *tiny["p"], "counterfeit", 1)
    alone = tmp_path / "alone"
    alone.mkdir()
    for i, p in enumerate(good):
        shutil.copy(p, alone / f"good_{i}.jpg")
    mixed = tmp_path / "mixed"
    shutil.copytree(alone, mixed)
    shutil.copy(good[0], mixed / LATIN1)
    shutil.copy(good[1], mixed / FORMULA)
    shutil.copy(good[2], mixed / "'quote.jpg")
    shutil.copy(good[0], mixed / "good_0 (1).jpg")  # a duplicate listing is scored like its original
    (mixed / "empty.jpg").write_bytes(b"")
    (mixed / "text.png").write_text("not a photo")
    (mixed / os.fsdecode(b"broken-\xff.jpg")).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (mixed / "notes.txt").write_text("not an image extension: not listed")
    code = main(["score", str(alone), "--index", str(idx_dir), "-o", str(tmp_path / "alone.csv"), "--no-progress"])
    assert code == 0
    code = main(["score", str(mixed), "--index", str(idx_dir), "-o", str(tmp_path / "mixed.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    rows = read_results(tmp_path / "mixed.csv")
    listed = sorted(n for n in os.listdir(mixed) if not n.endswith(".txt"))
    assert sorted(r["path"] for r in rows) == listed  # one row per file, names exact
    by = {r["path"]: r for r in rows}
    assert len(read_results(tmp_path / "alone.csv")) == len(good)
    for r in read_results(tmp_path / "alone.csv"):  # good photos scored exactly as when alone
        assert (by[r["path"]]["verdict"], by[r["path"]]["score"]) == (r["verdict"], r["score"])
    assert (by[LATIN1]["verdict"], by[LATIN1]["score"]) == (by["good_0.jpg"]["verdict"], by["good_0.jpg"]["score"])
    assert by[FORMULA]["score"] == by["good_1.jpg"]["score"]
    assert by["'quote.jpg"]["score"] == by["good_2.jpg"]["score"]
    for name in ("empty.jpg", "text.png", os.fsdecode(b"broken-\xff.jpg")):
        assert by[name]["verdict"] == "error" and by[name]["error"], name
    # the file itself: valid UTF-8, and no cell a spreadsheet would evaluate
    raw = list(csv.reader(io.StringIO((tmp_path / "mixed.csv").read_bytes().decode("utf-8"), newline="")))
    cells = [c for row in raw for c in row]
    assert "'" + FORMULA in cells and "''quote.jpg" in cells
    for c in cells:
        assert not c.startswith(("=", "+", "@", "\t", "\r")), c
        assert not c.startswith("-") or c.replace(".", "", 1).lstrip("-").isdigit(), c


# ------------------------------------------------------------------------------------- 3: labels
def _labelled_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "lab"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / name)
    return folder


def test_labels_as_people_save_them_are_read_the_same(tmp_path):
    folder = _labelled_folder(tmp_path)
    body = [("a.jpg", "authentic"), ("b.jpg", "counterfeit"), ("c.jpg", "unrelated")]
    (folder / "plain.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in body))
    want = [(i.path, i.label) for i in read_labels(folder / "plain.csv", missing="error")]
    assert [p.name for p, _ in want] == ["a.jpg", "b.jpg", "c.jpg"]
    variants = {
        "spaces.csv": ("path,label\n" + "".join(f"{p} ,{lab}\n" for p, lab in body)).encode(),
        "crlf_semicolon.csv": ("path;label\r\n" + "".join(f"{p};{lab}\r\n" for p, lab in body)).encode(),
        "bom8.csv": b"\xef\xbb\xbf" + ("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in body)).encode(),
        "utf16.csv": ("\ufeffpath,label\r\n" + "".join(f"{p},{lab}\r\n" for p, lab in body)).encode("utf-16-le"),
    }
    for name, data in variants.items():
        (folder / name).write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = [(i.path, i.label) for i in read_labels(folder / name, missing="error")]
        assert got == want, name


def test_labels_that_do_not_match_the_files_are_refused_before_scoring(tmp_path):
    from brandguard.evaluation import evaluate_folder

    folder = _labelled_folder(tmp_path)
    never_used = object()  # scoring anything would fail: the checks must come first
    (folder / "labels.csv").write_text("path,label\na.jpg,authentic\ngone1.jpg,authentic\ngone2.jpg,counterfeit\n")
    with pytest.raises(DataError, match=r"2 path\(s\) that name no file.*gone1\.jpg"):
        evaluate_folder(folder / "labels.csv", never_used)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="name no file"):
        kept = read_labels(folder / "labels.csv", missing="warn")
    assert [i.path.name for i in kept] == ["a.jpg"]
    (folder / "labels.csv").write_text("path,label\na.jpg,authentic\n./a.jpg,counterfeit\nb.jpg,authentic\n")
    with pytest.raises(DataError, match=r"1 path\(s\) more than once"):
        evaluate_folder(folder / "labels.csv", never_used)  # type: ignore[arg-type]
    (folder / "labels.csv").write_bytes("path,label\ncafé.jpg,authentic\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        evaluate_folder(folder, never_used)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="is a photo"):
        evaluate_folder(folder / "a.jpg", never_used)  # type: ignore[arg-type]
    (folder / "labels.csv").unlink()
    with pytest.raises(DataError, match="does not exist"):
        evaluate_folder(folder, never_used)  # type: ignore[arg-type]


# -------------------------------------------------------------------- 4: where the index was built
def test_index_scores_and_finds_references_from_anywhere_and_after_a_move(tiny, embedder, small_dataset, tmp_path,
                                                                          monkeypatch):
    base = tmp_path / "project"
    refs = base / "refs"
    shutil.copytree(tiny["clean"], refs)
    monkeypatch.chdir(base)
    index = ReferenceIndex.build(Path("refs"), Config().with_overrides({"compare.text_check": "off"}),
                                 embedder=embedder)  # a relative folder, as typed on the command line
    index.save(Path("idx"))
    photo = str(_listing_photos(small_dataset, *tiny["p"], n=1)[0])
    want = Detector(index, embedder).predict(photo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = ReferenceIndex.load(base / "idx")
    got = Detector(loaded, embedder).predict(photo)
    assert (got.verdict, got.score) == (want.verdict, want.score)
    assert got.reference and Path(got.reference).is_file()  # the report can show it
    assert loaded.info()["references_found"]
    assert loaded.fingerprint() == index.fingerprint()  # `--resume` accepts the saved copy as the same index
    # the project folder moved as a whole: references found beside the index
    moved = tmp_path / "moved"
    shutil.move(str(base), moved)
    again = ReferenceIndex.load(moved / "idx")
    assert all(Path(r.path).is_file() and str(r.path).startswith(str(moved)) for m in again.products for r in m.refs)
    # the references moved away alone: a clear warning, verdicts unchanged; relocate points the index at them
    shutil.move(str(moved / "refs"), tmp_path / "refs_new")
    with pytest.warns(UserWarning, match="reference photos of index .* are not at"):
        lost = ReferenceIndex.load(moved / "idx")
    assert not lost.info()["references_found"]
    assert Detector(lost, embedder).predict(photo).score == want.score
    lost.relocate_references(tmp_path / "refs_new")
    assert all(Path(r.path).is_file() for m in lost.products for r in m.refs)
    with pytest.raises(DataError):
        lost.relocate_references(tmp_path / "elsewhere")


def test_calibration_refuses_references_by_content(det_clean, tiny, tmp_path):
    copies = tmp_path / "cal"
    copies.mkdir()
    refs = sorted((tiny["clean"] / tiny["p"][0] / tiny["p"][1]).glob("*.jpg"))
    shutil.copy(refs[0], copies / "IMG_0001.jpg")  # same bytes, another name and folder
    from brandguard.images import load_image

    Image.fromarray(load_image(refs[1], max_side=Config().localization.max_side)).save(copies / "IMG_0002.png")
    for photo in (copies / "IMG_0001.jpg", copies / "IMG_0002.png"):
        with pytest.raises(DataError, match="references of this index, by path or by content"):
            det_clean.calibrate([str(photo)] * 12)


# ------------------------------------------------------------------------------- 5: duplicates
def test_duplicate_references_are_kept_once_with_a_warning_and_change_nothing(tiny, embedder, small_dataset):
    clean, dup = tiny["idx_clean"], tiny["idx_dup"]
    warned = [w for w in tiny["dup_warnings"] if "duplicate reference" in w]
    assert warned and "(1).jpg" in warned[0] and "resaved.png" in warned[0]
    assert dup.info()["duplicates_skipped"] == 2
    assert [len(m.refs) for m in dup.products] == [len(m.refs) for m in clean.products]
    photos = [str(p) for p in _listing_photos(small_dataset, *tiny["p"], n=2)
              + _listing_photos(small_dataset, *tiny["p"], "counterfeit", 1)]
    a = Detector(clean, embedder).predict_batch(photos)
    b = Detector(dup, embedder).predict_batch(photos)
    assert [(p.verdict, p.score) for p in a] == [(p.verdict, p.score) for p in b]
    # `index add` of photos already in the index adds nothing
    with pytest.warns(UserWarning, match="duplicate reference"):
        assert dup.add(tiny["clean"]) == 0
    assert [len(m.refs) for m in dup.products] == [len(m.refs) for m in clean.products]


# ------------------------------------------------------------------------------ 6: thin evidence
def test_one_reference_product_is_warned_listed_and_noted(tiny, embedder, small_dataset, capsys, tmp_path):
    idx = tiny["idx_thin"]
    warned = [w for w in tiny["thin_warnings"] if "thin evidence" in w]
    assert warned and "thinbrand/solo (1)" in warned[0]
    assert idx.info()["thin_products"] == ["thinbrand/solo (1)"]
    assert [r["thin"] for r in idx.info()["per_product"]] == [m.key == "thinbrand/solo" for m in idx.products]
    det = Detector(idx, embedder)
    photos = [str(p) for p in _listing_photos(small_dataset, *tiny["q"], n=2)]
    preds = [p for p in det.predict_batch(photos) if p.product == "solo"]
    assert preds, "no photo of the one-reference product matched it"
    assert all("thin evidence: 1 reference(s)" in p.notes for p in preds)
    # the CSV's note cell leads with it (other notes, e.g. a finger over the package's edge, may follow)
    assert all(p.to_row()["note"].split("; ")[0] == "thin evidence: 1 reference(s)" for p in preds)
    others = det.predict_batch([str(p) for p in _listing_photos(small_dataset, *tiny["p"], n=1)])
    assert others[0].notes == ()
    from brandguard.cli import main

    idx.save(tmp_path / "idx")
    assert main(["index", "info", str(tmp_path / "idx")]) == 0
    assert "thinbrand/solo: 1 references (1 compared)" in capsys.readouterr().out


# --------------------------------------------------------------------------- 7: deliberate errors
def _cli(args: list[str], capsys) -> tuple[int, str]:
    from brandguard.cli import main

    code = main(args)
    err = capsys.readouterr().err
    return code, err


def test_deliberate_errors_are_one_line_with_status_2(tiny, tmp_path, capsys, monkeypatch):
    import torch

    idx = tmp_path / "idx"
    tiny["idx_clean"].save(idx)
    photo = next((tiny["clean"] / tiny["p"][0] / tiny["p"][1]).glob("*.jpg"))
    cases = [
        ["score", str(tmp_path), "--index", str(idx), "-o", str(tmp_path / "r.csv"), "--device", "gpu"],
        ["calibrate", str(idx), "--authentic", str(photo)],
        ["evaluate", str(photo), "--index", str(idx)],
        ["index", "build", str(photo), "-o", str(tmp_path / "i2")],
    ]
    if not torch.cuda.is_available():
        cases.append(["score", str(tmp_path), "--index", str(idx), "-o", str(tmp_path / "r.csv"), "--device", "cuda"])
    for args in cases:
        code, err = _cli(args, capsys)
        assert code == 2 and "Traceback" not in err, (args, err)
        assert err.startswith("brandguard: error: ") and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "r.csv").exists()  # refused before any work
    # Ctrl-C during score: one line that says how to continue
    import brandguard.scoring

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(brandguard.scoring, "score_folder", interrupted)
    code, err = _cli(["score", str(tmp_path), "--index", str(idx), "-o", str(tmp_path / "r.csv")], capsys)
    assert code == 2 and "--resume" in err and err.count("\n") == 1
    for cls in (ConfigError, DeviceError, MissingExtraError):
        assert issubclass(cls, BrandguardError)
    from brandguard.embedding import resolve_device

    with pytest.raises(DeviceError):
        resolve_device("gpu")


def test_unquoted_off_in_yaml_is_accepted(tmp_path):
    (tmp_path / "c.yaml").write_text("compare:\n  text_check: off\n")
    assert Config.from_yaml(tmp_path / "c.yaml").compare.text_check == "off"
    (tmp_path / "c.yaml").write_text("compare:\n  text_check: on\n")
    assert Config.from_yaml(tmp_path / "c.yaml").compare.text_check == "on"
    assert Config().with_overrides({"compare.text_check": False}).compare.text_check == "off"
    (tmp_path / "c.yaml").write_text("compare:\n  text_check: maybe\n")
    with pytest.raises(ConfigError, match="auto, on or off"):
        Config.from_yaml(tmp_path / "c.yaml")


def test_broken_pipe_is_one_line_not_a_traceback(tiny, tmp_path):
    idx = tmp_path / "idx"
    tiny["idx_clean"].save(idx)
    proc = subprocess.Popen([sys.executable, "-m", "brandguard.cli", "index", "info", "--json", str(idx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written (`| head` that already quit)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip().splitlines() == ["brandguard: error: output closed early (broken pipe)"]


# -------------------------------------------------------------------------- 8: work is kept
def test_results_are_never_replaced_or_mixed_silently(det_clean, tiny, small_dataset, tmp_path):
    folder = tmp_path / "l"
    folder.mkdir()
    shutil.copy(_listing_photos(small_dataset, *tiny["p"], n=1)[0], folder / "a.jpg")
    out = tmp_path / "r.csv"
    score_folder(folder, det_clean, out)
    before = out.read_bytes()
    with pytest.raises(DataError, match="--resume.*--overwrite"):
        score_folder(folder, det_clean, out)
    assert out.read_bytes() == before
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    with pytest.raises(DataError, match=f"{folder}.*{other}"):
        score_folder(other, det_clean, out, resume=True)
    det_other = Detector(tiny["idx_thin"], det_clean.index.embedder)
    with pytest.raises(DataError, match="another index"):
        score_folder(folder, det_other, out, resume=True)
    assert out.read_bytes() == before
    assert score_folder(folder, det_clean, out, resume=True).scored == 0
    assert score_folder(folder, det_clean, out, overwrite=True).scored == 1


# ------------------------------------------------------------------------------ 9: file modes
def test_outputs_follow_the_umask(tiny, tmp_path):
    from brandguard.evaluation import write_metrics

    old = os.umask(0o022)
    try:
        tiny["idx_clean"].save(tmp_path / "idx")
        write_metrics({"auroc": 1.0}, tmp_path / "m.json")
        Config().save_yaml(tmp_path / "c.yaml")
    finally:
        os.umask(old)
    assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o755
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "idx").iterdir()} == {0o644}
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.yaml").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------ 10: outputs, resume records, odd listings (A2)
def test_index_build_never_deletes_a_folder_and_keeps_an_index_without_overwrite(tmp_path, capsys):
    import re

    from brandguard.storage import MANIFEST, write_directory

    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.docx").write_bytes(b"years of work")
    with pytest.raises(DataError, match="never replaces it"):
        write_directory(user, {"a.json": b"{}"}, {"format": 1})
    assert (user / "thesis.docx").read_bytes() == b"years of work" and not (user / MANIFEST).exists()
    idx = tmp_path / "idx"
    write_directory(idx, {"a.json": b"{}"}, {"format": 1})
    write_directory(idx, {"a.json": b"[]"}, {"format": 1})  # its own directory: replaced (index add/calibrate)
    assert (idx / "a.json").read_bytes() == b"[]"
    refs = tmp_path / "refs"  # never read: the output is refused before any work
    refs.mkdir()
    for out, want in ((user, "holds other files"), (idx, "already holds an index.*--overwrite"),
                      (tmp_path / "mine" / "thesis.docx", "is a file"), (Path("/proc/brandguard-idx"), "cannot be written")):
        code, err = _cli(["index", "build", str(refs), "-o", str(out)], capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert re.search(want, err), err
    assert (user / "thesis.docx").read_bytes() == b"years of work" and (idx / "a.json").read_bytes() == b"[]"


def test_batch_size_below_one_is_refused(detector, tmp_path, capsys):
    folder = _labelled_folder(tmp_path)
    for bad in (0, -2):
        with pytest.raises(DataError, match="batch size.*>= 1"):
            score_folder(folder, detector, tmp_path / "r.csv", batch_size=bad)
        code, err = _cli(["score", str(folder), "--index", str(tmp_path / "no-index"), "-o", str(tmp_path / "r.csv"),
                          "--batch-size", str(bad)], capsys)
        assert code == 2 and "--batch-size" in err and err.count("\n") == 1
        with pytest.raises(ConfigError, match="runtime.batch_size"):
            Config().with_overrides({"runtime.batch_size": bad})
    assert not (tmp_path / "r.csv").exists()


def test_resume_is_refused_when_the_run_cannot_be_checked(detector, tmp_path):
    from brandguard.scoring import CSV_COLUMNS

    folder = _labelled_folder(tmp_path)
    out = tmp_path / "r.csv"
    row = ",".join(["a.jpg", "authentic", "0.1"] + [""] * (len(CSV_COLUMNS) - 3))
    out.write_text(",".join(CSV_COLUMNS) + "\n" + row + "\n")
    before = out.read_bytes()
    with pytest.raises(DataError, match="run record .* is missing.*--overwrite"):
        score_folder(folder, detector, out, resume=True)
    Path(str(out) + ".run.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable.*--overwrite"):
        score_folder(folder, detector, out, resume=True)
    out.write_text("name,price\nshoe,12\n")
    with pytest.raises(DataError, match="not a brandguard results CSV.*--overwrite"):
        score_folder(folder, detector, out, resume=True)
    assert out.read_text() == "name,price\nshoe,12\n" and before  # nothing written or mixed


def test_resume_onto_an_index_rebuilt_with_other_settings_is_refused(det_clean, tiny, small_dataset, tmp_path):
    import copy

    folder = tmp_path / "l"
    folder.mkdir()
    shutil.copy(_listing_photos(small_dataset, *tiny["p"], n=1)[0], folder / "a.jpg")
    out = tmp_path / "r.csv"
    score_folder(folder, det_clean, out)
    other = copy.copy(tiny["idx_clean"])  # the same references, rebuilt with the text check on
    other.config = other.config.with_overrides({"compare.text_check": "on"})
    assert other.fingerprint() != tiny["idx_clean"].fingerprint()
    runtime_only = copy.copy(tiny["idx_clean"])
    runtime_only.config = runtime_only.config.with_overrides({"runtime.batch_size": 3})
    assert runtime_only.fingerprint() == tiny["idx_clean"].fingerprint()  # batch size never changes verdicts
    with pytest.raises(DataError, match=r"another index.*compare\.text_check: 'off' -> 'on'"):
        score_folder(folder, Detector(other, det_clean.index.embedder), out, resume=True)
    # the GPU path's geometry scores within a tolerance of OpenCV's, not alike: a resume across them is refused
    # and says why; a device that is missing here does not stop the fingerprint from being read
    on_cuda = copy.copy(tiny["idx_clean"])
    on_cuda.config = on_cuda.config.with_overrides({"runtime.device": "cuda", "runtime.geometry": "opencv"})
    assert on_cuda.fingerprint() == tiny["idx_clean"].fingerprint()
    pytest.importorskip("kornia")
    kornia = copy.copy(tiny["idx_clean"])
    kornia.config = kornia.config.with_overrides({"runtime.geometry": "kornia"})
    assert kornia.geometry_name() == "kornia" and kornia.fingerprint() != tiny["idx_clean"].fingerprint()
    with pytest.raises(DataError, match=r"another index.*geometry: 'opencv' -> 'kornia'"):
        score_folder(folder, Detector(kornia, det_clean.index.embedder), out, resume=True)


def test_evaluate_refuses_labelled_photos_outside_its_folder_before_scoring(tmp_path):
    from brandguard.evaluation import evaluate_folder

    folder = _labelled_folder(tmp_path)
    (tmp_path / "other").mkdir()
    shutil.copy(folder / "a.jpg", tmp_path / "other" / "x.jpg")
    (folder / "labels.csv").write_text("path,label\na.jpg,authentic\n../other/x.jpg,counterfeit\n")
    with pytest.raises(DataError, match=r"1 file\(s\) that scoring its folder .* does not reach.*x\.jpg"):
        evaluate_folder(folder / "labels.csv", object())  # type: ignore[arg-type]


def test_outputs_and_listings_are_checked_before_any_work(tmp_path, capsys):
    from brandguard.scoring import check_score_inputs

    folder = _labelled_folder(tmp_path)
    note = tmp_path / "note.txt"
    note.write_text("x")
    cases = [({"out_csv": tmp_path / "r.csv", "report": tmp_path}, "report .* is a folder"),
             ({"out_csv": note / "r.csv"}, "cannot be written"),
             ({"out_csv": tmp_path / "r.csv", "report": folder / "a.jpg"}, "not a brandguard report.*--overwrite"),
             ({"listings": folder / "labels.csv", "out_csv": tmp_path / "r.csv"}, "does not exist"),
             ({"listings": note, "out_csv": tmp_path / "r.csv"}, "neither a folder nor a photo")]
    if Path("/proc/self").is_dir():
        cases += [({"out_csv": Path("/proc/x.csv")}, "cannot be written"),
                  ({"out_csv": tmp_path / "r.csv", "report": Path("/proc/r.html")}, "cannot be written")]
    photo = (folder / "a.jpg").read_bytes()
    for kw, want in cases:
        with pytest.raises(DataError, match=want):
            check_score_inputs(**{"listings": folder, **kw})
    assert (folder / "a.jpg").read_bytes() == photo
    check_score_inputs(folder, tmp_path / "r.csv", report=folder / "a.jpg", overwrite=True)  # asked for
    check_score_inputs(folder / "a.jpg", tmp_path / "new" / "r.csv", report=tmp_path / "new" / "r.html")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    code, err = _cli(["score", str(note), "--index", str(tmp_path / "no-index"), "-o", str(tmp_path / "r.csv")], capsys)
    assert code == 2 and "neither a folder nor a photo" in err and err.count("\n") == 1


def test_listings_never_leave_the_folder_and_odd_entries_get_error_rows(det_clean, tmp_path):
    from brandguard.images import list_images

    outside = tmp_path / "outside"
    folder = outside / "L"
    (folder / "weird").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(outside / "out.jpg")
    os.symlink("..", folder / "weird" / "loop")
    os.symlink("../..", folder / "weird" / "up")
    os.symlink("nothere.jpg", folder / "dangling.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "sub.jpg").mkdir()
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == ["dangling.jpg", "fifo.jpg", "sub.jpg"]
    summary = score_folder(folder, det_clean, tmp_path / "r.csv")  # a FIFO is never opened: this returns
    rows = {r["path"]: r for r in read_results(tmp_path / "r.csv")}
    assert summary.total == 3 and set(rows) == set(names)
    assert {r["verdict"] for r in rows.values()} == {"error"}
    assert "dangling symbolic link" in rows["dangling.jpg"]["error"]
    assert "not a regular file" in rows["fifo.jpg"]["error"]
    assert "is a directory" in rows["sub.jpg"]["error"]
