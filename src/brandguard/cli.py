"""The ``brandguard`` console script (see ``brandguard --help``). Heavy modules load lazily per command.

Example:
    $ brandguard index build refs/ -o idx/
    $ brandguard score listings/ --index idx/ -o results.csv --report report.html
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from brandguard.config import GEOMETRIES

__all__ = ["build_parser", "main"]


DEVICE_HELP = ("cpu, cuda, cuda:1 ... for the network (keypoints, RANSAC and the comparison run on the CPU); "
               "default: the index's, auto = CUDA when available")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="brandguard", description="Catch counterfeit products in listing photos.")
    p.add_argument("--version", action="version", version=f"brandguard {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the whole job on bundled demo data (generate, index, score, report)")
    d.add_argument("--out", default="brandguard-demo", help="output folder (default: brandguard-demo)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the generated photos (default 0)")
    d.add_argument("--artwork", choices=["demo", "heldout"], default="demo",
                   help="brand artwork pool; 'heldout' uses brands never used to tune brandguard")
    d.add_argument("--size", choices=["full", "small"], default="full",
                   help="full: every brand of the pool, 420 listing photos; small: 6 products, 58 listing photos, a quick "
                        "check (default: full)")
    d.add_argument("--photo-model", action="append", dest="photo_model", metavar="NAME",
                   help="photo model to generate the photos with (brandguard.synth.PHOTO_MODELS: demo, studio-casual); "
                        "repeat for several, the first is the main one (default: demo, then studio-casual)")
    d.add_argument("--scenes", action="store_true",
                   help="instead: listings staged in real-photo scenes (small product, thumbnail, rotated, watermark, "
                        "phone, collage, several units, studio on white, bottle), with figures per scene")
    d.add_argument("--finetune", action="store_true",
                   help="fine-tune on the references first (about 15 min on 2 CPU cores) and compare with pretrained")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and cron jobs)")

    ix = sub.add_parser("index", help="build and maintain a reference index")
    isub = ix.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="index the authentic references REFS/<brand>/<product>/*.jpg (or a CSV)")
    b.add_argument("refs", help="reference folder REFS/<brand>/<product>/*.jpg, or a CSV manifest path,brand,product")
    b.add_argument("-o", "--out", required=True, help="index directory to write (a new or empty folder)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace the index already in --out (its calibration included); other folders are never "
                        "replaced")
    b.add_argument("--config", help="YAML config (configs/default.yaml)")
    b.add_argument("--backbone", help="backbone name (brandguard.backbones.list_backbones())")
    b.add_argument("--checkpoint", help="local weights (.safetensors or an exported run directory)")
    b.add_argument("--device", help=DEVICE_HELP)
    b.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and cron jobs)")
    a = isub.add_parser("add", help="add reference photos to an index")
    a.add_argument("index", help="index directory to update in place")
    a.add_argument("refs", help="folder REFS/<brand>/<product>/*.jpg (or a CSV manifest) of the new references")
    a.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and cron jobs)")
    r = isub.add_parser("remove", help="remove a brand (or one of its products) from an index")
    r.add_argument("index", help="index directory to update in place")
    r.add_argument("--brand", required=True, help="brand to remove (all its products unless --product)")
    r.add_argument("--product", help="remove only this product of --brand")
    rf = isub.add_parser("refit", help="refit every product's statistics (and the cold-start calibration) under "
                         "the prior pooled over the products now: what a build in one go gives (add defers it)")
    rf.add_argument("index", help="index directory to update in place")
    cp = isub.add_parser("compact", help="rewrite an index as one segment, dropping the bytes of removed or replaced "
                         "products (saves do it by themselves once those are half the files)")
    cp.add_argument("index", help="index directory to update in place")
    mv = isub.add_parser("relocate", help="point an index at the folder its references were moved to")
    mv.add_argument("index", help="index directory to update in place")
    mv.add_argument("folder", help="the reference folder's new place (same layout below it)")
    i = isub.add_parser("info", help="describe an index")
    i.add_argument("index", help="index directory")
    i.add_argument("--json", action="store_true", help="print every recorded field as JSON instead of the summary")

    s = sub.add_parser("score", help="score every photo under LISTINGS into a CSV (and an HTML report)")
    s.add_argument("listings", help="folder of listing photos, scored recursively in a stable order (or one photo; "
                                    "with --ray also an s3://... folder or a .txt list)")
    s.add_argument("--index", required=True, help="index directory (brandguard index build)")
    s.add_argument("-o", "--out", required=True,
                   help="results CSV (one row per photo; the run record goes to OUT.run.json); with --ray also a "
                        ".parquet folder")
    s.add_argument("--report", help="HTML evidence report: a table of every photo, evidence cards of the flagged "
                                    "ones (images and data in <report stem>_files/ beside it: keep them together)")
    s.add_argument("--report-max", type=int, default=300, metavar="N",
                   help="evidence cards for the N highest-scored flagged photos (default 300; the table lists all)")
    s.add_argument("--batch-size", type=int, metavar="N",
                   help="photos per network batch and per flushed group of rows (default: the index's config, 32)")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("--geometry", choices=GEOMETRIES,
                   help="where keypoints, RANSAC and warps run: auto (default: kornia on a CUDA --device when "
                        "brandguard[gpu] is installed, else OpenCV), opencv, or kornia (on --device)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run")
    s.add_argument("--overwrite", action="store_true", help="replace results already in --out (refused otherwise)")
    s.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="score on a Ray cluster with Ray Data (pip install \"brandguard[ray]\"): ADDRESS such as auto "
                        "or ray://head:10001, none for RAY_ADDRESS or a local Ray; LISTINGS may then be an "
                        "s3://... or gs://... folder or a .txt list of paths/URIs, and -o a .csv or a .parquet folder")
    s.add_argument("--ray-actors", type=int, metavar="N", help="with --ray: at most N actors (default: CPUs / threads)")
    s.add_argument("--ray-threads", type=int, default=1, metavar="N", help="with --ray: CPU threads per actor (default 1)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and cron jobs)")

    e = sub.add_parser("evaluate", help="score a labelled folder and report its figures")
    e.add_argument("labels", help="LISTINGS/labels.csv")
    e.add_argument("--index", required=True, help="index directory (brandguard index build)")
    e.add_argument("-o", "--out", help="metrics JSON")
    e.add_argument("--results", help="also keep the per-photo results CSV here")
    e.add_argument("--plots", help="write ROC, score histograms and per-type bars (PNG) here")
    e.add_argument("--allow-missing", action="store_true",
                   help="leave out labelled paths that name no file (with a warning) instead of refusing")
    e.add_argument("--overwrite", action="store_true", help="replace results already in --results")
    e.add_argument("--device", help=DEVICE_HELP)
    e.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and cron jobs)")

    c = sub.add_parser("calibrate", help="set thresholds from authentic photos (not references) at a target FPR")
    c.add_argument("index", help="index directory; the calibration is saved into it")
    c.add_argument("--authentic", required=True,
                   help="a folder of authentic photos, or a labels.csv (its authentic rows; counterfeit and "
                        "unrelated rows, if any, only report the expected rates)")
    c.add_argument("--fpr", type=float, default=None, help="takedown false-positive rate (default 0.01)")
    c.add_argument("--review-fpr", type=float, default=None, help="review (suspicious) false-positive rate (default 0.05)")
    c.add_argument("--unknown-fpr", type=float, default=0.01,
                   help="share of authentic photos allowed to fall under the unknown-product rule (default 0.01)")
    c.add_argument("--min-brand-photos", type=int, default=30,
                   help="authentic photos a brand needs for its own calibration (else the global one)")
    c.add_argument("--device", help=DEVICE_HELP)

    t = sub.add_parser("train", help="fine-tune the backbone on reference photos (metric learning, counterfeit-style "
                                     "edits as hard negatives); exports RUN_DIR/best")
    t.add_argument("refs", help="REFS/<brand>/<product>/*.jpg (or a CSV manifest) of authentic references")
    t.add_argument("-o", "--out", required=True, help="run directory (checkpoints, metrics.csv, best/)")
    t.add_argument("--config", help="training YAML (configs/finetune.yaml)")
    t.add_argument("--val", help="labels.csv of validation photos (authentic + counterfeit of the trained products, "
                                 "not references): best epoch and regression guard")
    t.add_argument("--calibration", help="authentic photos (folder or labels.csv; not references) to calibrate "
                                         "each validated pipeline on first, as when deployed")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.epochs=2 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    t.add_argument("--force", action="store_true", help="export even if the guard finds the model worse")
    t.add_argument("--device", help="cpu, cuda ... (default auto)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and cron jobs)")
    return p


def _parse_sets(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings -> dict, values parsed as YAML scalars (numbers, booleans, null)."""
    import yaml

    from brandguard.errors import DataError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--set expects KEY=VALUE (e.g. optim.epochs=2), got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _version() -> str:
    from brandguard import __version__

    return __version__


def _index_summary(info: dict) -> list[str]:
    """Readable lines of :meth:`ReferenceIndex.info` (plus ``text_check`` and ``size_bytes``) for `index info`."""
    from brandguard.index import THIN_EVIDENCE, is_cold_start

    lines = [f"index format {info.get('format')}, written by brandguard {info.get('brandguard_version')}"
             + (f", {_size(info['size_bytes'])} on disk" if info.get("size_bytes") is not None else "")]
    lines.append(f"references: {info['references']} of {info['products']} products, {info['brands']} brands "
                 f"({info['references_compared']} aligned and compared"
                 + (f"; {info['skipped']} unreadable skipped" if info.get("skipped") else "")
                 + (f"; {info['duplicates_skipped']} duplicates kept once" if info.get("duplicates_skipped") else "")
                 + ")")
    root = info.get("references_root")
    lines.append(f"reference folder: {root if root else 'not recorded'}"
                 + ("" if info.get("references_found", True) else
                    "  [not found: verdicts are unaffected, reports show no reference photos; "
                    "`brandguard index relocate` points the index at its new place]"))
    lines.append(f"backbone: {info['backbone']} (weights {str(info.get('weights_digest'))[:19]}"
                 + (f", checkpoint {info['checkpoint']}" if info.get("checkpoint") else "") + ")")
    kind = info.get("local_index")
    n_desc = info.get("local_descriptors", 0)
    lines.append("keypoint search: " + {
        "flat": "exact (flat FAISS index)",
        "ivf": "inverted file (FAISS IVF-Flat: exact inner products of the rows in the lists a keypoint visits)",
        "ivfpq": "two-stage (FAISS IVF-PQ shortlist, exact re-ranking from the memory-mapped float16 store)",
        "words": "two-stage (products shortlisted by visual words, exact search among their keypoints in the "
                 "memory-mapped float16 store)",
    }.get(str(kind), str(kind)) + f", {n_desc:,} reference keypoints")
    text = info.get("text_check")
    lines.append("text check (OCR of the wordmark): " + ("unknown" if text is None else "on" if text else "off"))
    st = info.get("storage")
    if st:
        lines.append(f"storage: {st['array_segments']} array segment(s), {st['keypoint_segments']} keypoint segment(s), "
                     f"{_size(st['bytes'])}, of which {_size(st['dead_bytes'])} dead (removed or replaced products; "
                     "`brandguard index compact` drops them)")
    cal = info.get("calibration")
    if not cal:
        lines.append("calibration in force: none (run `brandguard calibrate IDX --authentic PHOTOS`)")
    else:
        src = str(cal.get("source"))
        lines.append(f"calibration in force: {_calibration_text(src, cal.get('n'))}")
        th = info.get("thresholds") or {}
        n_cal = cal.get("n") or 0
        if n_cal and th and 1 - th["takedown"] < 1 / n_cal and not is_cold_start(src):
            below = [f"{name} {100 * (1 - th[name]):.3g}%" for name in ("review", "takedown") if 1 - th[name] < 1 / n_cal]
            lines.append(f"  note: {n_cal} photos measure shares down to about 1/{n_cal} = {100 / n_cal:.2g}%; "
                         f"{' and '.join(below)} are extrapolated by the fitted tail: calibrate on more authentic "
                         "photos to measure them")
        own = {b: c["n"] for b, c in (cal.get("per_brand") or {}).items()}
        lines.append("brands with their own calibration: "
                     + (", ".join(f"{b} ({n} photos)" for b, n in own.items()) if own else "none (all brands share one)"))
    th = info.get("thresholds") or {}
    if th:
        lines.append(f"verdicts: suspicious from score {th['review']:.6g} (flags {100 * (1 - th['review']):.3g}% of "
                     f"authentic photos), counterfeit from {th['takedown']:.6g} ({100 * (1 - th['takedown']):.3g}%)")
        rule = f"unknown product: fewer than {th['min_inliers']} verified keypoint matches"
        from brandguard.calibration import Thresholds

        if Thresholds.from_dict(th).fewest_accepted < th["min_inliers"]:  # weak matches are possible
            rule += (f", unless at least {th['weak_inliers']} and the aligned photo is at least "
                     f"{th['weak_similarity']:.3f} similar to a reference (weak match; unknown all the same where "
                     "its print differs in large areas)")
        lines.append(rule)
        if th.get("min_inlier_density"):
            lines.append(f"sparse match: fewer than {th['min_inlier_density']:.3g} verified matches per pixel of the "
                         "product's side; never a takedown, and unknown where its print differs in large areas")
    thin = info.get("thin_products") or []
    lines.append(f"products with fewer than {THIN_EVIDENCE} references (thin evidence): "
                 + (", ".join(thin) if thin else "none"))
    return lines


def _calibration_text(source: str, n: int | None) -> str:
    """Which calibration is in force, in words: the cold start (and what it was made of) or ``calibrate``'s."""
    from brandguard.index import is_cold_start

    if is_cold_start(source):
        how = ("cold start, " + source.removeprefix("cold-start").strip(" ()") if source.startswith("cold-start")
               else "cold start, the references' leave-one-out scores")
        return how + "; run `brandguard calibrate` with your own authentic photos before acting on verdicts"
    return f"calibrated on {n} authentic photos ({source})"


def _size(n: float) -> str:
    """Bytes as B / KB / MB / GB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _print_info(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for line in _index_summary(info):
        print(line)
    print("products:")
    for row in info.get("per_product", []):
        views = row.get("views") or []
        print(f"  {row['brand']}/{row['product']}: {row['references']} references "
              f"({row['compared']} compared), {row['keypoints']} keypoints"
              + (f", {len(views)} views ({'+'.join(map(str, views))} references)" if len(views) > 1 else "")
              + ("  [thin evidence: add authentic photos]" if row.get("thin") else ""))


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    from brandguard.storage import display_text

    print(f"brandguard: warning: {display_text(str(message))}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 done, 1 nothing could be scored, 2 an error: one line
    on stderr, never a traceback)."""
    args = build_parser().parse_args(argv)
    import warnings

    from brandguard.errors import BrandguardError
    from brandguard.storage import display_text

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as \xHH, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return _run(args)
    except BrandguardError as exc:
        print(f"brandguard: error: {display_text(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`brandguard index info --json | head`): stop quietly, without the interpreter's
        # own complaint when it flushes stdout at exit
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        print("brandguard: error: output closed early (broken pipe)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "score":
            print(f"brandguard: error: interrupted; the rows written so far are kept in {display_text(args.out)}: run "
                  "the same command with --resume to continue", file=sys.stderr)
        else:
            print("brandguard: error: interrupted", file=sys.stderr)
        return 2


def _check_device(device: str | None) -> None:
    """Refuse an unavailable ``--device`` before any work (the network itself loads lazily)."""
    if device:
        from brandguard.embedding import resolve_device

        resolve_device(device)


def _check_index_out(out: Path, overwrite: bool) -> None:
    """Refuse, before building, an ``index build -o`` that cannot be written or would replace something:
    an existing index takes ``--overwrite``, any other non-empty folder is never replaced."""
    from brandguard.errors import DataError
    from brandguard.storage import MANIFEST, check_output_path

    check_output_path(out, "index folder", folder=True)
    if out.is_dir() and (out / MANIFEST).is_file():
        if not overwrite:
            raise DataError(f"{out} already holds an index (its calibration included); pass --overwrite to replace "
                            "it, or another -o folder")
    elif out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out} is a folder that holds other files: brandguard never replaces it; pass a new or "
                        "empty folder to -o")


def _run(args: argparse.Namespace) -> int:
    progress = not getattr(args, "no_progress", False)
    _check_device(getattr(args, "device", None))
    if args.command == "demo":
        from brandguard.demo import DEFAULT_PHOTO_MODELS, run_demo, run_scene_demo

        if args.scenes:
            from brandguard.errors import DataError

            if args.finetune or args.photo_model:
                raise DataError("--scenes runs on its own data set: it takes neither --finetune nor --photo-model")
            run_scene_demo(args.out, seed=args.seed, artwork=args.artwork, size=args.size, progress=progress)
            return 0
        run_demo(args.out, seed=args.seed, artwork=args.artwork, size=args.size, progress=progress,
                 finetune=args.finetune, photo_models=args.photo_model or DEFAULT_PHOTO_MODELS)
        return 0
    if args.command == "index":
        from brandguard.index import ReferenceIndex

        if args.index_command == "build":
            from brandguard.backbones import checkpoint_backbone_name
            from brandguard.config import Config

            cfg = Config.from_yaml(args.config) if args.config else Config()
            backbone = args.backbone or (checkpoint_backbone_name(args.checkpoint) if args.checkpoint else None)
            over = {k: v for k, v in {"backbone.name": backbone, "backbone.checkpoint": args.checkpoint,
                                      "runtime.device": args.device}.items() if v}
            cfg = cfg.with_overrides(over) if over else cfg
            _check_index_out(Path(args.out), args.overwrite)
            index = ReferenceIndex.build(args.refs, cfg, progress=progress)
            index.save(args.out)
            info = index.info()
            print(f"indexed {info['references']} references of {info['products']} products "
                  f"({info['brands']} brands) -> {args.out}" + (f"; {info['skipped']} unreadable skipped" if info["skipped"] else "")
                  + (f"; {info['duplicates_skipped']} duplicates kept once" if info.get("duplicates_skipped") else "")
                  + (f"; thin evidence (fewer than 3 references): {', '.join(info['thin_products'])}"
                     if info.get("thin_products") else ""))
            return 0
        index = ReferenceIndex.load(args.index)
        if args.index_command == "relocate":
            index.relocate_references(args.folder)
            index.save(args.index)
            print(f"references now read from {index.references_root} -> {args.index}")
            return 0
        if args.index_command == "add":
            n = index.add(args.refs, progress=progress)
            index.save(args.index)
            print(f"added {n} reference photos -> {args.index}")
        elif args.index_command == "remove":
            n = index.remove(args.brand, args.product)
            index.save(args.index)
            print(f"removed {n} product(s) -> {args.index}")
        elif args.index_command == "compact":
            done = index.compact(args.index)
            print(f"compacted into one segment: {_size(done['bytes_before'])} -> {_size(done['bytes_after'])} "
                  f"({_size(done['dead_bytes_dropped'])} dead dropped) -> {args.index}")
        elif args.index_command == "refit":
            index.refit_statistics()
            index.save(args.index)
            print(f"refitted the statistics of {len(index.products)} product view(s) -> {args.index}")
        else:
            size = sum(f.stat().st_size for f in Path(args.index).rglob("*") if f.is_file())
            _print_info({**index.info(), "text_check": index.text_enabled, "size_bytes": size}, args.json)
        return 0
    if args.command == "score":
        from brandguard.detector import Detector
        from brandguard.scoring import score_folder

        if args.batch_size is not None and args.batch_size < 1:
            from brandguard.errors import DataError

            raise DataError(f"--batch-size must be a whole number >= 1, got {args.batch_size}")
        if args.ray is not None:
            from brandguard.distributed import score_ray
            from brandguard.errors import DataError

            if args.report:
                raise DataError("--report is not available with --ray: score with --ray, then run `brandguard score` "
                                "with --report on the flagged photos")
            summary = score_ray(args.listings, args.index, args.out, address=args.ray or None, actors=args.ray_actors,
                                threads_per_actor=args.ray_threads, batch_size=args.batch_size, device=args.device,
                                geometry=args.geometry,
                                resume=args.resume, overwrite=args.overwrite, progress=progress)
        else:
            from brandguard.scoring import check_score_inputs

            check_score_inputs(args.listings, args.out, report=args.report, overwrite=args.overwrite,
                               batch_size=args.batch_size)
            det = Detector.load(args.index, device=args.device, batch_size=args.batch_size, geometry=args.geometry)
            summary = score_folder(args.listings, det, args.out, report=args.report, resume=args.resume,
                                   overwrite=args.overwrite, progress=progress, report_max_items=args.report_max)
            if det.index.calibrator is not None:
                cal = det.index.calibrator
                print(f"calibration in force: {_calibration_text(cal.source, cal.n)}")
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts.items()))
        print(f"{summary.total} photos ({summary.resumed} from an earlier run) -> {summary.out_csv} [{counts}] "
              f"at {summary.images_per_second:.1f} img/s")
        if summary.report:
            print(f"evidence report: {summary.report}")
        scored_ok = sum(v for k, v in summary.counts.items() if k != "error")
        return 0 if scored_ok > 0 else 1
    if args.command == "evaluate":
        from brandguard.detector import Detector
        from brandguard.evaluation import evaluate_folder, format_summary, write_metrics

        labels = Path(args.labels)
        labels = labels / "labels.csv" if labels.is_dir() else labels
        from brandguard.storage import check_output_path

        for path, what in ((args.out, "metrics file"), (args.results, "results file")):
            if path:
                check_output_path(path, what)
        if args.plots:
            check_output_path(args.plots, "plots folder", folder=True)
        det = Detector.load(args.index, device=args.device)
        metrics = evaluate_folder(labels, det, results_csv=args.results, plots_dir=args.plots, progress=progress,
                                  allow_missing=args.allow_missing, overwrite=args.overwrite)
        print(format_summary(metrics))
        if args.out:
            write_metrics(metrics, args.out)
            print(f"metrics: {args.out}")
        return 0
    if args.command == "calibrate":
        from brandguard.detector import Detector
        from brandguard.images import list_images
        from brandguard.references import read_labels

        det = Detector.load(args.index, device=args.device)
        src = Path(args.authentic)
        groups: dict[str, list[str]] = {"authentic": [], "counterfeit": [], "unrelated": []}
        if src.is_file() or (src / "labels.csv").is_file():
            for item in read_labels(src, missing="error"):
                groups[item.label].append(str(item.path))
        else:
            groups["authentic"] = [str(p) for p in list_images(src)]
        summary = det.calibrate(groups["authentic"], groups["counterfeit"], groups["unrelated"],
                                takedown_fpr=args.fpr, review_fpr=args.review_fpr, unknown_fpr=args.unknown_fpr,
                                min_brand_photos=args.min_brand_photos)
        det.index.save(args.index)
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "train":
        from brandguard.training import train

        over = _parse_sets(args.set)
        if args.device:
            over["runtime.device"] = args.device
        result = train(args.refs, args.out, args.config, val=args.val, calibration=args.calibration,
                       resume=args.resume, force=args.force,
                       progress=progress, overrides=over)
        return 0 if result.best is not None else 1
    raise SystemExit(f"unknown command {args.command!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
