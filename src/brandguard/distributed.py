"""Scoring on a Ray cluster (Ray Data): the rows local scoring writes, from as many machines as the cluster has.

:func:`score_ray` lists the photos (a local folder, an object-store folder URI such as ``s3://bucket/listings/``,
or a list of paths and URIs), hands them to Ray Data as a dataset of paths, and scores them with
``map_batches`` over a pool of actors. Each actor holds one loaded :class:`~brandguard.detector.Detector`:
the index is read once on the driver, put once in Ray's object store, and loaded (checksums verified) once
per actor, so worker nodes need brandguard installed but no copy of the index. Each actor reserves
``threads_per_actor`` CPUs and sets torch, OpenCV, FAISS, ONNX Runtime and its decoding threads to that many,
so the actors of a node never oversubscribe its cores.

Each actor reads its photos itself: local paths exactly as :func:`brandguard.scoring.score_folder` does (so the
rows are byte-identical to local scoring), URIs through pyarrow's filesystems (the layer
``ray.data.read_binary_files`` uses), one file at a time. A file that cannot be read or decoded therefore
becomes an ``error`` row and the run goes on; ``read_binary_files`` would fail the whole job on it, or drop
it silently with ``ignore_missing_paths``.

Rows stream back to the driver in the stable listing order (Ray Data's ``preserve_order``) and are written as
they come, each batch flushed to disk: to a CSV with the columns :data:`brandguard.scoring.CSV_COLUMNS`, every
cell encoded by :func:`brandguard.csvcells.encode_cell`, exactly as local scoring writes them; or, for a
destination ending in ``.parquet``, to a folder of Parquet part files holding the same cells (string columns,
one part per ``rows_per_part`` rows, each written atomically). ``resume=True`` keeps the rows already written
and scores only the rest, as local scoring does.

Needs the ``ray`` extra: ``pip install "brandguard[ray]"`` (``ray[data]``).

Example:
    >>> from brandguard.distributed import score_ray
    >>> summary = score_ray("listings/", "idx/", "results.csv", address="auto")   # doctest: +SKIP
    >>> summary.counts["counterfeit"]                                             # doctest: +SKIP
    12
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brandguard import __version__
from brandguard.csvcells import decode_cell, encode_cell, encode_row
from brandguard.errors import DataError, MissingExtraError
from brandguard.images import is_image_path, list_images
from brandguard.scoring import CSV_COLUMNS, ScoreSummary, read_results

__all__ = ["Listing", "list_listings", "score_ray"]

_EXTRA = 'scoring on a Ray cluster needs the ray extra: pip install "brandguard[ray]"'


def _require_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`MissingExtraError` naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingExtraError(_EXTRA) from exc
    return ray


def _is_uri(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier()


@dataclass(frozen=True)
class Listing:
    """The photos of one scoring run, in their stable order.

    Attributes:
        paths: the ``path`` cell of each row (relative to the folder for a folder, as given for a list).
        sources: where each photo is read from (a local path or a URI), same length as ``paths``.
        root: what was listed (for the run record).
    """

    paths: list[str]
    sources: list[str]
    root: str


def list_listings(listings: str | Path | Sequence[str | Path]) -> Listing:
    """List the photos of a run, in the stable order local scoring uses.

    Args:
        listings: a local folder (searched recursively, :func:`brandguard.images.list_images` order; paths
            relative to it), a single local photo, an object-store folder URI such as ``s3://bucket/listings/``
            or ``gs://...`` (every image below it, sorted by relative path; paths relative to it), a ``.txt``
            file of paths or URIs, one a line (relative lines are relative to the file's folder), or a list of
            paths or URIs (rows keep them as given, in the given order).

    Returns:
        the :class:`Listing`.

    Raises:
        DataError: nothing to score, a folder that does not exist, or a URI pyarrow cannot list.
    """
    if not isinstance(listings, (str, Path)):
        items = [os.fspath(p) for p in listings]
        if not items:
            raise DataError("no photos to score: the list of paths is empty")
        return Listing(items, items, f"<{len(items)} paths>")
    text = os.fspath(listings)
    if _is_uri(text) and not text.startswith("file://"):
        return _list_uri_folder(text)
    text = text.removeprefix("file://")
    root = Path(text)
    if not root.exists():
        raise DataError(f"listings {root} do not exist")
    if root.is_file() and root.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in root.read_text(encoding="utf-8", errors="surrogateescape").splitlines()]
        items = [ln for ln in lines if ln and not ln.startswith("#")]
        if not items:
            raise DataError(f"{root} lists no photo (one path or URI a line)")
        sources = [ln if _is_uri(ln) or os.path.isabs(ln) else str(root.parent / ln) for ln in items]
        return Listing(items, sources, str(root.resolve()))
    if root.is_file():
        return Listing([root.name], [str(root)], str(root.resolve()))
    files = list_images(root)
    if not files:
        raise DataError(f"no photos (.jpg/.jpeg/.png/.webp/.bmp/.tif/.gif) under {root}")
    return Listing([f.relative_to(root).as_posix() for f in files], [str(f) for f in files], str(root.resolve()))


def _list_uri_folder(uri: str) -> Listing:
    from pyarrow import fs as pafs

    try:
        filesystem, base = pafs.FileSystem.from_uri(uri)
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot list {uri}: {exc}") from exc
    base = base.rstrip("/")
    prefix = uri.rstrip("/")
    rel = sorted(i.path[len(base):].lstrip("/") for i in infos
                 if i.type == pafs.FileType.File and is_image_path(i.path)
                 and not any(part.startswith(".") for part in i.path[len(base):].split("/")))
    if not rel:
        raise DataError(f"no photos (.jpg/.jpeg/.png/.webp/.bmp/.tif/.gif) under {uri}")
    return Listing(rel, [f"{prefix}/{r}" for r in rel], uri)


def _limit_threads(threads: int) -> None:
    """Keep one actor's libraries to ``threads`` CPU threads (torch, OpenCV, FAISS, OpenMP/ONNX Runtime)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2
    import faiss
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process (a reused worker)
        pass
    cv2.setNumThreads(threads)
    faiss.omp_set_num_threads(threads)
    from brandguard import text

    text.set_reader_threads(threads)


class _ScoreBatch:
    """The Ray Data actor: one loaded Detector, scoring a batch of ``{i, path, src}`` into CSV cells."""

    def __init__(self, index_ref: list[Any], threads: int, batch_size: int, device: str | None,
                 geometry: str | None = None) -> None:
        import ray

        from brandguard.detector import Detector

        _limit_threads(threads)
        files: dict[str, bytes] = ray.get(index_ref[0])
        tmp = tempfile.TemporaryDirectory(prefix="brandguard-index-")
        self._cleanup = weakref.finalize(self, tmp.cleanup)
        for name, data in files.items():
            target = Path(tmp.name, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.detector = Detector.load(tmp.name, device=device, batch_size=batch_size, geometry=geometry)
        self.detector.index.config = self.detector.index.config.with_overrides({"runtime.workers": threads})
        self.detector.config = self.detector.index.config
        self._filesystems: dict[str, Any] = {}

    def _read_uri(self, uri: str) -> bytes | str:
        """The file's bytes, or why it could not be read."""
        from pyarrow import fs as pafs

        scheme_host = uri.split("/", 3)[:3]
        key = "/".join(scheme_host)
        try:
            if key not in self._filesystems:
                self._filesystems[key] = pafs.FileSystem.from_uri(uri)[0]
            filesystem = self._filesystems[key]
            path = pafs.FileSystem.from_uri(uri)[1]
            with filesystem.open_input_file(path) as fh:
                return bytes(fh.readall())
        except (OSError, ValueError) as exc:
            return f"cannot read {uri}: {exc}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from brandguard.detector import Prediction

        sources = [decode_cell(str(s)) for s in batch["src"]]
        inputs: list[Any] = []
        unread: dict[int, str] = {}
        for k, src in enumerate(sources):
            if _is_uri(src):
                data = self._read_uri(src)
                if isinstance(data, str):
                    unread[k] = data
                    data = b""
                inputs.append(data)
            else:
                inputs.append(src)
        todo = [k for k in range(len(inputs)) if k not in unread]
        preds = dict(zip(todo, self.detector.predict_batch([inputs[k] for k in todo], on_error="record")))
        rows = []
        for k, cell in enumerate(batch["path"]):
            p = preds.get(k) or Prediction(sources[k], "error", 0.0, error=unread[k])
            row = encode_row(p.to_row())
            row["path"] = str(cell)  # already encoded by the driver
            rows.append(row)
        out: dict[str, np.ndarray] = {"i": np.asarray(batch["i"], np.int64)}
        for col in CSV_COLUMNS:
            out[col] = np.array([r.get(col, "") for r in rows], dtype=object)
        return out


def _pack_index(directory: Path) -> dict[str, bytes]:
    """Every file of an index directory, by relative POSIX path (what each actor writes back and loads)."""
    if not directory.is_dir():
        raise DataError(f"index {directory} is not a folder; build one with `brandguard index build`")
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


class _CsvSink:
    """Rows appended to a results CSV, flushed and synced per batch (a half-written last line is dropped on resume)."""

    def __init__(self, out: Path, resume: bool) -> None:
        from brandguard.scoring import _trim_partial_line

        self.out = out
        self.done: list[dict[str, str]] = []
        if resume and out.is_file():
            _trim_partial_line(out)
            self.done = read_results(out)
        elif out.exists():
            out.unlink()
        new_file = not out.is_file() or out.stat().st_size == 0
        out.parent.mkdir(parents=True, exist_ok=True)
        self._fh = out.open("a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        if new_file:
            self._writer.writeheader()

    def write(self, rows: list[dict[str, str]]) -> None:
        self._writer.writerows(rows)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class _ParquetSink:
    """Rows written as Parquet part files (``part-000000.parquet``...) of the CSV's cells, each atomically."""

    def __init__(self, out: Path, resume: bool, rows_per_part: int) -> None:
        import pyarrow.parquet as pq

        self.out = out
        self.rows_per_part = rows_per_part
        self._buffer: list[dict[str, str]] = []
        self.done: list[dict[str, str]] = []
        if out.exists() and not out.is_dir():
            raise DataError(f"Parquet results {out} must be a folder (of part files); it is a file")
        parts = sorted(out.glob("part-*.parquet")) if out.is_dir() else []
        if parts and not resume:
            for p in parts:
                p.unlink()
            parts = []
        for p in parts:
            table = pq.read_table(p)
            self.done += [{k: decode_cell(v) for k, v in r.items()} for r in table.to_pylist()]
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
        out.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[dict[str, str]]) -> None:
        self._buffer += rows
        while len(self._buffer) >= self.rows_per_part:
            self._flush(self._buffer[:self.rows_per_part])
            self._buffer = self._buffer[self.rows_per_part:]

    def _flush(self, rows: list[dict[str, str]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from brandguard.storage import atomic_write_bytes

        table = pa.table({col: pa.array([r[col] for r in rows], pa.string()) for col in CSV_COLUMNS})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(self.out / f"part-{self._next:06d}.parquet", sink.getvalue().to_pybytes())
        self._next += 1

    def close(self) -> None:
        if self._buffer:
            self._flush(self._buffer)
            self._buffer = []


def _blocks(n: int, batch_size: int, actors: int) -> int:
    """Dataset blocks: several per actor (load balance, streaming), a few batches each (little overhead)."""
    return int(max(1, min(n, max(4 * actors, -(-n // (8 * batch_size))))))


def score_ray(listings: str | Path | Sequence[str | Path], index: str | Path, out: str | Path, *,
              address: str | None = None, actors: int | None = None, threads_per_actor: int = 1,
              batch_size: int | None = None, device: str | None = None, resume: bool = False,
              overwrite: bool = False, rows_per_part: int = 100_000, progress: bool = False,
              geometry: str | None = None) -> ScoreSummary:
    """Score photos with Ray Data on a Ray cluster (or a local Ray) and write the rows local scoring writes.

    Args:
        listings: a local folder, a single photo, an object-store folder URI (``s3://bucket/listings/``), a
            ``.txt`` list of paths/URIs, or a list of paths/URIs (see :func:`list_listings`). Local paths must
            be readable at the same place on every node (a shared filesystem); URIs are read by each actor.
        index: an index directory on the driver (shipped to the actors through Ray's object store).
        out: results: a ``.csv`` file (columns :data:`brandguard.scoring.CSV_COLUMNS`), or a folder whose name
            ends in ``.parquet`` (part files of the same cells). The run record goes to ``<out>.run.json``.
        address: the Ray cluster (``"auto"``, ``"ray://head:10001"``); None starts or joins Ray as
            ``ray.init()`` does (``RAY_ADDRESS`` if set). An already initialised Ray is used as it is.
        actors: the most actors (each one loaded Detector); default: the cluster's CPUs // threads_per_actor.
        threads_per_actor: CPUs each actor reserves and uses (torch, OpenCV, FAISS, OCR, decoding).
        batch_size: photos per ``map_batches`` call (one forward pass); default the index's runtime.batch_size.
        device: override the index's runtime device on the actors (``cpu``, ``cuda``).
        geometry: override where the actors' keypoints, RANSAC and warps run (``auto``, ``opencv``,
            ``kornia``; :mod:`brandguard.accel`); by default the index's (``auto``: kornia on CUDA actors that
            have the ``gpu`` extra).
        resume: keep the rows already in ``out`` and score only the rest.
        overwrite: replace ``out`` when it already holds rows (otherwise refused, as in local scoring).
        rows_per_part: rows per Parquet part file.
        progress: show Ray Data's progress bars.

    Returns:
        a :class:`brandguard.scoring.ScoreSummary` (no report, no predictions).

    Raises:
        MissingExtraError: the ``ray`` extra is not installed.
        DataError: nothing to score, an index that is not a folder, ``out`` holding rows without ``resume``
            or ``overwrite``, or ``resume`` onto results of other listings or another index.
    """
    ray = _require_ray()
    from brandguard.detector import Detector
    from brandguard.scoring import _check_output
    from brandguard.storage import atomic_write_text

    if not isinstance(threads_per_actor, int) or threads_per_actor < 1:
        raise DataError(f"threads_per_actor must be a whole number >= 1, got {threads_per_actor!r}")
    listing = list_listings(listings)
    index_dir = Path(index)
    files = _pack_index(index_dir)
    # on the driver: checks the index and names it in the run record (with the actors' device and geometry, which
    # the fingerprint names; nothing is loaded on the device here)
    det = Detector.load(index_dir, device=device, geometry=geometry)
    out_path = Path(out)
    parquet = out_path.suffix.lower() == ".parquet"
    identity = {"listings": listing.root, "index": det.index.fingerprint(), "index_source": str(index_dir.resolve()),
                "config": det.config.to_dict(), "geometry": det.index.geometry_name()}
    if not parquet:
        _check_output(out_path, resume, overwrite, identity)
    elif resume and overwrite:
        raise DataError("--resume continues the results and --overwrite replaces them: pass one of them")
    elif not resume and not overwrite and out_path.is_dir() and any(out_path.glob("part-*.parquet")):
        raise DataError(f"{out_path} already holds result parts of an earlier run; pass --resume to continue it "
                        "or --overwrite to replace it")
    sink: _CsvSink | _ParquetSink = _ParquetSink(out_path, resume, rows_per_part) if parquet else _CsvSink(out_path, resume)
    listed = set(listing.paths)
    done = {r["path"] for r in sink.done}
    counts: Counter[str] = Counter(r["verdict"] for r in sink.done if r["path"] in listed)
    todo = [k for k, p in enumerate(listing.paths) if p not in done]
    bs = int(batch_size or det.config.runtime.batch_size)
    record_path = Path(str(out_path) + ".run.json")

    def record(status: str, **more: object) -> None:
        run = {"brandguard_version": __version__, "status": status, "runner": "ray", "listings": listing.root,
               "listings_resolved": identity["listings"], "index_fingerprint": identity["index"],
               "index_source": identity["index_source"], "files": len(listing.paths), **more,
               "config": det.config.to_dict(), "geometry": identity["geometry"]}
        atomic_write_text(record_path, json.dumps(run, indent=2, default=str))

    record("running", resumed=len(listing.paths) - len(todo))
    t0 = time.perf_counter()
    scored = 0
    try:
        if todo:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            n_actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_actor)
            try:
                scored = _run(ray, listing, todo, files, sink, counts, bs, n_actors, threads_per_actor, device,
                              progress, geometry)
            except Exception as exc:
                ours = _our_error(exc)
                if ours is None:
                    raise
                raise ours from exc
    finally:
        sink.close()
    seconds = time.perf_counter() - t0
    if not parquet and resume and len(todo) < len(listing.paths):
        _restore_order(out_path, listing.paths)
    record("complete", scored=scored, resumed=len(listing.paths) - len(todo), seconds=round(seconds, 3),
           counts=dict(counts))
    return ScoreSummary(len(listing.paths), scored, len(listing.paths) - len(todo), dict(counts), seconds, out_path)


def _our_error(exc: BaseException) -> BaseException | None:
    """The brandguard error behind a Ray failure (an actor that could not load the index...), if any."""
    from brandguard.errors import BrandguardError

    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BrandguardError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__, getattr(e, "base_exception", None)]
    return None


def _run(ray: Any, listing: Listing, todo: list[int], files: dict[str, bytes], sink: _CsvSink | _ParquetSink,
         counts: Counter[str], batch_size: int, actors: int, threads: int, device: str | None,
         progress: bool, geometry: str | None = None) -> int:
    import pyarrow as pa
    from ray.data import ActorPoolStrategy, DataContext

    table = pa.table({"i": pa.array(todo, pa.int64()),
                      "path": pa.array([encode_cell(listing.paths[k]) for k in todo], pa.string()),
                      "src": pa.array([encode_cell(listing.sources[k]) for k in todo], pa.string())})
    n_blocks = _blocks(len(todo), batch_size, actors)
    # whole batches per block: the photos embedded together are the ones local scoring embeds together
    step = batch_size * -(-len(todo) // (n_blocks * batch_size))
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True  # rows come back in listing order: the CSV streams in order
    ctx.enable_progress_bars = progress
    index_ref = ray.put(files)
    scored = 0
    try:
        ds = ray.data.from_arrow([table.slice(s, step) for s in range(0, len(todo), step)])
        ds = ds.map_batches(_ScoreBatch, batch_size=batch_size, batch_format="numpy",
                            compute=ActorPoolStrategy(min_size=1, max_size=min(actors, n_blocks)),
                            num_cpus=threads,
                            fn_constructor_kwargs={"index_ref": [index_ref], "threads": threads,
                                                   "batch_size": batch_size, "device": device,
                                                   "geometry": geometry})
        for batch in _iter_rows(ds):
            sink.write(batch)
            counts.update(r["verdict"] for r in batch)
            scored += len(batch)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
    return scored


def _iter_rows(ds: Any) -> Iterator[list[dict[str, str]]]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        cols = [batch[c] for c in CSV_COLUMNS]
        yield [{c: str(v[k]) for c, v in zip(CSV_COLUMNS, cols)} for k in range(len(batch["i"]))]


def _restore_order(out: Path, paths: list[str]) -> None:
    """Rewrite a resumed CSV in listing order when an earlier run left it otherwise (atomically)."""
    from brandguard.storage import atomic_write_bytes

    rows = read_results(out)
    pos = {p: k for k, p in enumerate(paths)}
    keys = [pos.get(r["path"], len(paths)) for r in rows]
    if keys == sorted(keys):
        return
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for _, r in sorted(zip(keys, rows), key=lambda t: t[0]):
        writer.writerow(encode_row({c: r.get(c, "") for c in CSV_COLUMNS}))
    atomic_write_bytes(out, buf.getvalue().encode("utf-8"))
