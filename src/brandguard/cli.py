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

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="brandguard", description="Catch counterfeit products in listing photos.")
    p.add_argument("--version", action="version", version=f"brandguard {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the whole job on bundled demo data (generate, index, score, report)")
    d.add_argument("--out", default="brandguard-demo", help="output folder (default: brandguard-demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--artwork", choices=["demo", "heldout"], default="demo",
                   help="brand artwork pool; 'heldout' uses brands never used to tune brandguard")
    d.add_argument("--size", choices=["full", "small"], default="full")
    d.add_argument("--finetune", action="store_true",
                   help="fine-tune on the references first (about 15 min on 2 CPU cores) and compare with pretrained")
    d.add_argument("--no-progress", action="store_true")

    ix = sub.add_parser("index", help="build and maintain a reference index")
    isub = ix.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="index the authentic references REFS/<brand>/<product>/*.jpg (or a CSV)")
    b.add_argument("refs")
    b.add_argument("-o", "--out", required=True, help="index directory to write")
    b.add_argument("--config", help="YAML config (configs/default.yaml)")
    b.add_argument("--backbone", help="backbone name (brandguard.backbones.list_backbones())")
    b.add_argument("--checkpoint", help="local weights (.safetensors or an exported run directory)")
    b.add_argument("--device")
    b.add_argument("--no-progress", action="store_true")
    a = isub.add_parser("add", help="add reference photos to an index")
    a.add_argument("index")
    a.add_argument("refs")
    a.add_argument("--no-progress", action="store_true")
    r = isub.add_parser("remove", help="remove a brand (or one of its products) from an index")
    r.add_argument("index")
    r.add_argument("--brand", required=True)
    r.add_argument("--product")
    i = isub.add_parser("info", help="describe an index")
    i.add_argument("index")
    i.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("score", help="score every photo under LISTINGS into a CSV (and an HTML report)")
    s.add_argument("listings")
    s.add_argument("--index", required=True)
    s.add_argument("-o", "--out", required=True, help="results CSV")
    s.add_argument("--report", help="HTML evidence report of the flagged photos")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the index's, auto)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run")
    s.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("evaluate", help="score a labelled folder and report its figures")
    e.add_argument("labels", help="LISTINGS/labels.csv")
    e.add_argument("--index", required=True)
    e.add_argument("-o", "--out", help="metrics JSON")
    e.add_argument("--results", help="also keep the per-photo results CSV here")
    e.add_argument("--plots", help="write ROC, score histograms and per-type bars (PNG) here")
    e.add_argument("--device")
    e.add_argument("--no-progress", action="store_true")

    c = sub.add_parser("calibrate", help="set thresholds from authentic photos (not references) at a target FPR")
    c.add_argument("index")
    c.add_argument("--authentic", required=True,
                   help="a folder of authentic photos, or a labels.csv (its authentic rows; counterfeit and "
                        "unrelated rows, if any, only report the expected rates)")
    c.add_argument("--fpr", type=float, default=None, help="takedown false-positive rate (default 0.01)")
    c.add_argument("--review-fpr", type=float, default=None, help="review (suspicious) false-positive rate (default 0.05)")
    c.add_argument("--unknown-fpr", type=float, default=0.01,
                   help="share of authentic photos allowed to fall under the unknown-product rule (default 0.01)")
    c.add_argument("--min-brand-photos", type=int, default=30,
                   help="authentic photos a brand needs for its own calibration (else the global one)")
    c.add_argument("--device")

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
    t.add_argument("--no-progress", action="store_true")
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


def _print_info(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        if k == "per_product":
            print("products:")
            for row in v:
                print(f"  {row['brand']}/{row['product']}: {row['references']} references "
                      f"({row['compared']} compared), {row['keypoints']} keypoints")
        else:
            print(f"{k}: {v}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from brandguard.errors import BrandguardError

    try:
        return _run(args)
    except BrandguardError as exc:
        print(f"brandguard: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    progress = not getattr(args, "no_progress", False)
    if args.command == "demo":
        from brandguard.demo import run_demo

        run_demo(args.out, seed=args.seed, artwork=args.artwork, size=args.size, progress=progress,
                 finetune=args.finetune)
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
            index = ReferenceIndex.build(args.refs, cfg, progress=progress)
            index.save(args.out)
            info = index.info()
            print(f"indexed {info['references']} references of {info['products']} products "
                  f"({info['brands']} brands) -> {args.out}" + (f"; {info['skipped']} unreadable skipped" if info["skipped"] else ""))
            return 0
        index = ReferenceIndex.load(args.index)
        if args.index_command == "add":
            n = index.add(args.refs, progress=progress)
            index.save(args.index)
            print(f"added {n} reference photos -> {args.index}")
        elif args.index_command == "remove":
            n = index.remove(args.brand, args.product)
            index.save(args.index)
            print(f"removed {n} product(s) -> {args.index}")
        else:
            _print_info(index.info(), args.json)
        return 0
    if args.command == "score":
        from brandguard.detector import Detector
        from brandguard.scoring import score_folder

        det = Detector.load(args.index, device=args.device, batch_size=args.batch_size)
        summary = score_folder(args.listings, det, args.out, report=args.report, resume=args.resume,
                               progress=progress)
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
        det = Detector.load(args.index, device=args.device)
        metrics = evaluate_folder(labels, det, results_csv=args.results, plots_dir=args.plots, progress=progress)
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
            for item in read_labels(src):
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
