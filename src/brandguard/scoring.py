"""Folder scoring: every photo under a folder -> one CSV row, batched, resumable, with an evidence report.

Rows follow the stable order of :func:`brandguard.images.list_images`; paths are relative to the folder.
A photo that cannot be read becomes an ``error`` row and the run goes on. With ``resume=True`` an
interrupted run continues where it stopped: rows already written are kept (a half-written last line is
dropped) and each file ends up with exactly one row.

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
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from brandguard import __version__
from brandguard.detector import Detector, Prediction
from brandguard.errors import DataError
from brandguard.images import list_images
from brandguard.mismatch import CHANNELS

__all__ = ["CSV_COLUMNS", "ScoreSummary", "read_results", "score_folder"]

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
    """Rows of a results CSV (complete lines only)."""
    p = Path(csv_path)
    if not p.is_file():
        return []
    with p.open("r", encoding="utf-8", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("verdict")]


def _trim_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)


def score_folder(listings: str | Path, detector: Detector, out_csv: str | Path, *, report: str | Path | None = None,
                 resume: bool = False, batch_size: int | None = None, progress: bool = False,
                 keep_predictions: bool = False, report_max_items: int = 300) -> ScoreSummary:
    """Score every photo under ``listings`` and write ``out_csv`` (columns :data:`CSV_COLUMNS`).

    Args:
        listings: a folder (searched recursively) or a single photo.
        detector: a loaded :class:`Detector`.
        out_csv: results file; its run record (config, index, timings) goes to ``<out_csv>.run.json``.
        report: optional HTML evidence page of the flagged photos.
        resume: continue an interrupted run instead of starting over.
        batch_size: photos per batch (default: the index's ``runtime.batch_size``).
        progress: show a progress bar.
        keep_predictions: return every Prediction in the summary (heatmaps included: memory grows).

    Raises:
        DataError: ``listings`` does not exist or holds no photo.
    """
    root = Path(listings)
    if not root.exists():
        raise DataError(f"listings folder {root} does not exist")
    files = [root] if root.is_file() else list_images(root)
    base = root.parent if root.is_file() else root
    if not files:
        raise DataError(f"no photos (.jpg/.jpeg/.png/.webp/.bmp/.tif/.gif) under {root}")
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = [f.relative_to(base).as_posix() for f in files]
    done: dict[str, dict[str, str]] = {}
    if resume and out.is_file():
        _trim_partial_line(out)
        for r in read_results(out):
            done.setdefault(r["path"], r)
    elif out.exists():
        out.unlink()
    todo = [(f, r) for f, r in zip(files, rel) if r not in done]
    bs = int(batch_size or detector.config.runtime.batch_size)
    listed = set(rel)
    counts: Counter[str] = Counter(r["verdict"] for r in done.values() if r["path"] in listed)
    flagged: list[tuple[float, int, Prediction]] = []
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
                writer.writerow(row)
                counts[p.verdict] += 1
                seq += 1
                if report is not None and p.is_flagged:
                    item = (p.score, -seq, p)  # seq breaks ties: Predictions never compare
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
        from brandguard.report.html import write_html_report

        preds = [p for _, _, p in sorted(flagged, key=lambda t: (-t[0], t[1]))]
        resumed_flagged = [str(base / r["path"]) for r in done.values() if r["verdict"] in ("suspicious", "counterfeit")]
        if resumed_flagged:  # rows kept from an interrupted run: score them again for their evidence
            preds += detector.predict_batch(resumed_flagged[:report_max_items])
        others = [Prediction(str(base / r["path"]), r["verdict"], 0.0, error=r.get("error", ""))
                  for r in read_results(out) if r["verdict"] in ("unknown", "error")][:60]
        report_path = write_html_report(preds + others, report, max_items=report_max_items,
                                        summary={"photos": len(files), **{k: v for k, v in sorted(counts.items())}})
    run = {"brandguard_version": __version__, "listings": str(root), "files": len(files), "scored": len(todo),
           "resumed": len(done), "seconds": round(seconds, 3), "counts": dict(counts),
           "index": {k: v for k, v in detector.index.info().items() if k != "per_product"},
           "config": detector.config.to_dict()}
    Path(str(out) + ".run.json").write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
    return ScoreSummary(len(files), len(todo), len(done), dict(counts), seconds, out, report_path, kept)


