"""Folder scoring: every photo under a folder -> one CSV row, batched, resumable, with an evidence report.

Rows follow the stable order of :func:`brandguard.images.list_images`; paths are relative to the folder.
A photo that cannot be read becomes an ``error`` row and the run goes on. With ``resume=True`` an
interrupted run continues where it stopped: rows already written are kept (a half-written last line is
dropped) and each file ends up with exactly one row. A results file that already holds rows is never
replaced silently: without ``resume`` it takes ``overwrite=True``, and a run record (``<csv>.run.json``,
written when the run starts) refuses to resume onto results of another folder or another index.

Every cell is written by :func:`brandguard.csvcells.encode_cell`: safe to open in a spreadsheet, and any
file name, whatever bytes it holds, round-trips through :func:`read_results`.

Example:
    >>> import brandguard as bg
    >>> from brandguard.scoring import score_folder
    >>> summary = score_folder("listings/", bg.load("idx/"), "results.csv")  # doctest: +SKIP
    >>> summary.counts["counterfeit"]                                         # doctest: +SKIP
    12
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brandguard import __version__
from brandguard.csvcells import decode_row, encode_row
from brandguard.detector import Detector, Prediction
from brandguard.errors import DataError
from brandguard.images import is_image_path, list_images
from brandguard.mismatch import CHANNELS
from brandguard.storage import atomic_write_text, check_output_path

__all__ = ["CSV_COLUMNS", "ScoreSummary", "check_score_inputs", "read_results", "score_folder"]

#: the columns of shared/DESIGN.md, then the evidence a reviewer needs: the uncalibrated fused score, each
#: comparison channel by name (``brandguard.mismatch.CHANNELS``), how many product instances were compared,
#: and warnings (``note``)
CSV_COLUMNS = ("path", "verdict", "score", "brand", "product", "similarity", "reference", "error",
               "raw_score", *CHANNELS, "instances", "note")


@dataclass
class ScoreSummary:
    """What a scoring run did.

    Attributes:
        total: files listed; scored: rows written by this run; resumed: rows kept from an earlier run.
        counts: rows per verdict (this run and kept rows together).
        seconds: wall time of this run; images_per_second: scored / seconds.
    """

    total: int
    scored: int
    resumed: int
    counts: dict[str, int]
    seconds: float
    out_csv: Path
    report: Path | None = None
    predictions: list[Prediction] = field(default_factory=list, repr=False)

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def read_results(csv_path: str | Path) -> list[dict[str, str]]:
    """Rows of a results CSV (complete lines only), cells decoded (:func:`brandguard.csvcells.decode_cell`):
    ``path`` is the file's name relative to the scored folder exactly as the filesystem holds it.

    Raises:
        DataError: the file is not a results CSV written by brandguard (not UTF-8 text).
    """
    p = Path(csv_path)
    if not p.is_file():
        return []
    try:
        with p.open("r", encoding="utf-8", newline="") as fh:
            return [decode_row(r) for r in csv.DictReader(fh) if r.get("verdict")]
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not a brandguard results CSV (not UTF-8 text at byte {exc.start}); "
                        "score into another file or pass --overwrite") from exc


def _float(cell: str | None) -> float:
    """A CSV number cell as a float; -inf when empty or not a number (ranks last)."""
    try:
        v = float(cell or "")
    except ValueError:
        return float("-inf")
    return v if not math.isnan(v) else float("-inf")


def _run_record_path(out: Path) -> Path:
    return Path(str(out) + ".run.json")


def _check_output(out: Path, resume: bool, overwrite: bool, identity: dict[str, Any]) -> None:
    """Refuse to throw away or mix results: see the module docstring."""
    if out.is_dir():
        raise DataError(f"results file {out} is a folder; pass a CSV file name such as {out / 'results.csv'}")
    if resume and overwrite:
        raise DataError("--resume continues the results file and --overwrite replaces it: pass one of them")
    if not out.is_file() or overwrite:
        return
    if not resume:
        n = len(read_results(out))
        if n:
            raise DataError(f"{out} already holds {n} result row(s) of an earlier run; pass --resume to continue "
                            "it or --overwrite to replace it")
        return
    _check_header(out)
    n = len(read_results(out))
    record = _run_record_path(out)
    if not record.is_file():
        if n:
            raise DataError(f"cannot resume {out}: its run record {record} is missing, so the {n} row(s) in it "
                            "cannot be checked against this folder and index; pass --overwrite to start over")
        return
    try:
        prev = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(prev, dict) or not prev.get("index_fingerprint") or not prev.get("listings_resolved"):
            raise ValueError("not a brandguard run record")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot resume {out}: its run record {record} is unreadable ({exc}); pass --overwrite "
                        "to start over") from exc
    theirs = {"listings": str(prev.get("listings_resolved", "")), "index": str(prev.get("index_fingerprint", ""))}
    for key, what in (("listings", "folder"), ("index", "index")):
        if theirs[key] != identity[key]:
            prev_index = f"{prev.get('index_source') or '?'} ({theirs['index'][:19]}...)"
            now_index = f"{identity.get('index_source') or '?'} ({identity['index'][:19]}...)"
            changed = _config_changes(prev.get("config"), identity.get("config"))
            geometry = (str(prev.get("geometry") or "opencv"), identity.get("geometry") or "opencv")
            if geometry[0] != geometry[1]:  # runtime.geometry, or a device that changes what auto runs
                changed.append(f"geometry: {geometry[0]!r} -> {geometry[1]!r}")
            raise DataError(f"{out} holds results of another {what}: it was written for listings "
                            f"{prev.get('listings_resolved')} with index {prev_index}, this run scores "
                            f"{identity['listings']} with index {now_index}"
                            + (f" (settings changed: {', '.join(changed)})" if key == "index" and changed else "")
                            + "; score into another file or pass --overwrite to start over")


def _check_header(out: Path) -> None:
    """Refuse to resume into a CSV whose first line is not brandguard's header (:data:`CSV_COLUMNS`)."""
    try:
        with out.open("r", encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{out} is not a brandguard results CSV (not UTF-8 text at byte {exc.start}); "
                        "score into another file or pass --overwrite") from exc
    if header is not None and tuple(header) != CSV_COLUMNS:
        raise DataError(f"cannot resume {out}: it is not a brandguard results CSV (its header is "
                        f"{','.join(header)[:80]!r}); score into another file or pass --overwrite to start over")


def _config_changes(before: object, after: object) -> list[str]:
    """Dotted keys (``compare.text_check``...) whose value differs between two config dicts, runtime left out."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    out = []
    for section in sorted(set(before) | set(after)):
        if section == "runtime":
            continue
        a, b = before.get(section), after.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif a != b:
            out.append(section)
    return out


def _is_brandguard_report(path: Path) -> bool:
    """Whether ``path`` is a page written by :func:`brandguard.report.write_html_report`."""
    try:
        with path.open("rb") as fh:
            page = fh.read(16 << 20)
    except OSError:
        return False
    return page.lstrip().lower().startswith(b"<!doctype html>") and b'/rows.js"></script>' in page


def check_score_inputs(listings: str | Path, out_csv: str | Path, *, report: str | Path | None = None,
                       overwrite: bool = False, batch_size: int | None = None) -> None:
    """Check what :func:`score_folder` is given before any work (the CLI calls it before loading the index).

    Raises:
        DataError: ``listings`` does not exist or is neither a folder nor a photo; ``batch_size`` is not a
            whole number >= 1; ``out_csv`` or ``report`` cannot be written (a folder, a folder that cannot be
            created or written); ``report`` names an existing file that is not a brandguard report (replaced
            only with ``overwrite``).
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise DataError(f"batch size (--batch-size) must be a whole number >= 1, got {batch_size!r}")
    root = Path(listings)
    if not root.exists():
        raise DataError(f"listings folder {root} does not exist")
    if not root.is_dir() and not (root.is_file() and is_image_path(root)):
        raise DataError(f"listings {root} is neither a folder nor a photo "
                        "(.jpg/.jpeg/.png/.webp/.bmp/.tif/.gif); pass the folder of listing photos")
    check_output_path(out_csv, "results file")
    if report is not None:
        rp = check_output_path(report, "report")
        if rp.exists() and not overwrite and not _is_brandguard_report(rp):
            raise DataError(f"report {rp} exists and is not a brandguard report; pass another report name, or "
                            "--overwrite to replace it")


def _trim_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)


def score_folder(listings: str | Path, detector: Detector, out_csv: str | Path, *, report: str | Path | None = None,
                 resume: bool = False, batch_size: int | None = None, progress: bool = False,
                 keep_predictions: bool = False, report_max_items: int = 300,
                 overwrite: bool = False) -> ScoreSummary:
    """Score every photo under ``listings`` and write ``out_csv`` (columns :data:`CSV_COLUMNS`).

    Args:
        listings: a folder (searched recursively) or a single photo.
        detector: a loaded :class:`Detector`.
        out_csv: results file; its run record (config, index, timings) goes to ``<out_csv>.run.json``.
        report: optional HTML evidence report (:func:`brandguard.report.write_html_report`): a table of every
            row and a card for each of the ``report_max_items`` highest-scored flagged photos; its images and
            data go to ``<report stem>_files/`` beside it.
        report_max_items: the most evidence cards (>= 0); the report's table lists every row regardless.
        resume: continue an interrupted run instead of starting over.
        overwrite: replace ``out_csv`` when it already holds rows (otherwise refused).
        batch_size: photos per batch (default: the index's ``runtime.batch_size``).
        progress: show a progress bar.
        keep_predictions: return every Prediction in the summary (heatmaps included: memory grows).

    Raises:
        DataError: ``listings`` does not exist or holds no photo; ``out_csv`` already holds rows and neither
            ``resume`` nor ``overwrite`` is set; ``resume`` onto results of another folder or index.
    """
    root = Path(listings)
    if isinstance(report_max_items, bool) or not isinstance(report_max_items, int) or report_max_items < 0:
        raise DataError(f"report_max_items (--report-max) must be a whole number >= 0, got {report_max_items!r}")
    check_score_inputs(root, out_csv, report=report, overwrite=overwrite, batch_size=batch_size)
    files = [root] if root.is_file() else list_images(root)
    base = root.parent if root.is_file() else root
    if not files:
        raise DataError(f"no photos (.jpg/.jpeg/.png/.webp/.bmp/.tif/.gif) under {root}")
    out = Path(out_csv)
    index_info = {k: v for k, v in detector.index.info().items() if k != "per_product"}
    identity = {"listings": str(root.resolve()), "index": detector.index.fingerprint(),
                "index_source": str(getattr(detector.index, "source", "") or ""),
                "config": detector.config.to_dict(), "geometry": detector.index.geometry_name()}
    _check_output(out, resume, overwrite, identity)
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = [f.relative_to(base).as_posix() for f in files]
    done: dict[str, dict[str, str]] = {}
    if resume and out.is_file():
        _trim_partial_line(out)
        for r in read_results(out):
            done.setdefault(r["path"], r)
    elif out.exists():
        out.unlink()

    def record(status: str, **more: object) -> None:
        run = {"brandguard_version": __version__, "status": status, "listings": str(root),
               "listings_resolved": identity["listings"], "index_fingerprint": identity["index"],
               "index_source": identity["index_source"], "files": len(files), **more, "index": index_info,
               "config": detector.config.to_dict(), "geometry": identity["geometry"]}
        atomic_write_text(_run_record_path(out), json.dumps(run, indent=2, default=str))

    record("running", resumed=len(done))
    todo = [(f, r) for f, r in zip(files, rel) if r not in done]
    bs = batch_size if batch_size is not None else detector.config.runtime.batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise DataError(f"batch size must be a whole number >= 1, got {bs!r}")
    listed = set(rel)
    counts: Counter[str] = Counter(r["verdict"] for r in done.values() if r["path"] in listed)
    flagged: list[tuple[float, float, int, Prediction]] = []
    seq = 0
    kept: list[Prediction] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), initial=len(files) - len(todo), desc="scoring", unit="img")
    t0 = time.perf_counter()
    new_file = not out.is_file() or out.stat().st_size == 0
    with out.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        if new_file:
            writer.writeheader()
        for start in range(0, len(todo), bs):
            chunk = todo[start:start + bs]
            preds = detector.predict_batch([str(f) for f, _ in chunk], on_error="record")
            for (f, r), p in zip(chunk, preds):
                row = p.to_row()
                row["path"] = r
                writer.writerow(encode_row(row))
                counts[p.verdict] += 1
                seq += 1
                if report is not None and p.is_flagged:
                    from brandguard.report.html import compact_prediction

                    # the raw score ranks ties of the calibrated score, then seq: Predictions never compare
                    item = (p.score, p.raw_score, -seq, compact_prediction(p))
                    if len(flagged) < report_max_items:
                        heapq.heappush(flagged, item)
                    else:
                        heapq.heappushpop(flagged, item)
                if keep_predictions:
                    kept.append(p)
            fh.flush()
            os.fsync(fh.fileno())
            if bar is not None:
                bar.update(len(chunk))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    report_path = None
    if report is not None:
        from brandguard.report.html import compact_prediction, write_html_report

        # the report's table and counts are the CSV's rows, so they agree with it by construction; cards go to
        # the report_max_items highest-ranked flagged rows, this run's and those kept from an interrupted one
        rows = read_results(out)
        preds = [p for *_, p in sorted(flagged, key=lambda t: (-t[0], -t[1], -t[2]))]
        ranked = sorted((r for r in rows if r["verdict"] in ("suspicious", "counterfeit")),
                        key=lambda r: (-_float(r["score"]), -_float(r.get("raw_score", ""))))[:report_max_items]
        again = [str(base / r["path"]) for r in ranked if r["path"] in done]
        for start in range(0, len(again), bs):  # rows kept from an interrupted run: scored again for their evidence
            preds += [compact_prediction(p) for p in detector.predict_batch(again[start:start + bs])]
        report_path = write_html_report(preds, report, rows=rows, photo_root=base, index=detector.index,
                                        max_items=report_max_items,
                                        summary={"listings": str(root), "results": str(out)})
    record("complete", scored=len(todo), resumed=len(done), seconds=round(seconds, 3), counts=dict(counts))
    return ScoreSummary(len(files), len(todo), len(done), dict(counts), seconds, out, report_path, kept)


