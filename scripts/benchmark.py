"""Throughput of brandguard's scoring against the network alone and a naive embed-and-search pipeline.

Measures, in one run and on the same listing photos of the demo data set:

a. backbone only: the timm network on pre-decoded 224x224 tensors, fp32, then with the library's own
   precision (channels-last, bf16 autocast where ``resolve_precision("auto", device)`` gives it);
b. the naive pipeline a user would write first: PIL decode, resize to 224, fp32 forward, L2-normalised
   pooled features, nearest whole-photo reference embedding in a FAISS ``IndexFlatIP``;
c. end to end: :func:`brandguard.scoring.score_folder` (decode, localise, embed, search, local comparison,
   CSV writing) with the default configuration; ``--text-check both`` times it with the OCR wordmark check
   on (``c``) and off (``c_off``). The keypoint search is the index's own (printed as ``keypoint search``:
   an index built before the inverted-file search, ``ivf``, keeps its exact ``flat`` one until rebuilt).
   ``--set KEY=VALUE`` overrides the configuration it scores with (a query-side setting, e.g.
   ``localization.query_side``), so a setting's speed is timed against the naive pipeline in one run.
   With ``--device cuda`` scoring's keypoints, RANSAC and warps run in kornia on the GPU where the ``gpu``
   extra is installed (``runtime.geometry: auto``, printed as ``geometry``; :mod:`brandguard.accel`).

Each stage is warmed up on a few photos before it is timed. Stages b and c take turns on each batch of 32
photos (``c`` scores one folder a batch), so the load other processes put on a shared machine weighs on
both alike and their ratio holds. Index building and calibration are not timed
(``--index`` scores with an index already built and calibrated from ``--data``'s references). Ratios are
given on wall time and on CPU time (images per CPU second of this process), which other processes on a
shared machine disturb less.

Example:
    python scripts/benchmark.py --size small --n 40
    python scripts/benchmark.py --data /tmp/bench_data --n 200 --json bench.json
    python scripts/benchmark.py --data /tmp/bench_data --device cuda
    python scripts/benchmark.py --data demo/data --index demo/index --device cuda --text-check on   # kornia geometry
    python scripts/benchmark.py --data demo/data --index demo/index --device cuda --set runtime.geometry=opencv
    OMP_NUM_THREADS=2 python scripts/benchmark.py --data demo/data --index demo/index --n 200 --text-check both
    OMP_NUM_THREADS=2 python scripts/benchmark.py --data demo/data --index demo/index --set localization.query_side=448
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import brandguard
from brandguard.backbones import load_backbone
from brandguard.config import Config
from brandguard.detector import Detector
from brandguard.embedding import resolve_device, resolve_precision
from brandguard.errors import BrandguardError
from brandguard.images import list_images
from brandguard.index import ReferenceIndex
from brandguard.references import read_labels, read_references
from brandguard.scoring import score_folder

BATCH = 32
WARMUP = BATCH  # photos run through each stage before it is timed (one full batch: kernels are per shape)
_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="demo data folder: reused when it holds a generated data set, generated there otherwise "
                         "(default: a temporary folder, deleted afterwards)")
    ap.add_argument("--size", choices=("full", "small"), default="full", help="demo data size to generate")
    ap.add_argument("--n", type=int, default=200, help="first N listing photos to time (default 200)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N, for all three stages")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--text-check", choices=("auto", "on", "off", "both"), default="off",
                    help="OCR wordmark check of the end-to-end stage (default off, as in the library); both: "
                         "time the end-to-end stage with the check on, then off")
    ap.add_argument("--index", type=Path, default=None,
                    help="a built and calibrated index of --data's references to score with, instead of "
                         "building and calibrating one (minutes for the full data set)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="configuration override of the end-to-end stage (repeatable), e.g. "
                         "localization.query_side=448 to time a query-side setting against the same index")
    args = ap.parse_args(argv)
    try:
        args.overrides = parse_overrides(args.overrides)
        Config().with_overrides(args.overrides)
    except (ValueError, BrandguardError) as exc:
        ap.error(str(exc))
    if args.n < 1:
        ap.error("--n must be at least 1")
    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        ap.error(str(exc))
    return args


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dotted-key override mapping, each value read as YAML (``448`` an int), as
    ``brandguard train --set`` reads them.

    Raises:
        DataError: an item has no ``=``.
    """
    from brandguard.cli import _parse_sets

    return _parse_sets(items)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def search_name(index: ReferenceIndex) -> str:
    """The index's keypoint search as ``brandguard index info`` names it: kind, size, lists visited."""
    ks = index._local
    if ks is None:
        return "none"
    return f"{ks.kind}, {ks.ntotal} reference keypoints" + (f", nprobe {ks.nprobe}" if ks.kind in ("ivf", "ivfpq") else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], int], device: torch.device) -> tuple[float, float, float]:
    """Time ``run`` (which returns how many images it did): (seconds, images/s, CPU use).

    CPU use is this process's CPU time over wall time (2.0 = two cores busy): well under the thread
    count on a CPU run means other processes took the cores and the figures are low.
    """
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    done = run()
    sync(device)
    seconds = time.perf_counter() - t0
    return seconds, done / seconds, (time.process_time() - c0) / seconds


def throughput(run: Callable[[int, int], None], n: int, device: torch.device) -> tuple[float, float, float]:
    """Warm ``run`` up on every batch shape it will see, then time it over all ``n``.

    Kernels are chosen per input shape on first use (on CUDA this costs seconds per new shape), so the
    warm-up runs one full batch and, when ``n`` does not divide into batches, one batch of the remainder.
    """
    run(0, min(WARMUP, n))
    if n > BATCH and n % BATCH:
        run(0, n % BATCH)

    def all_items() -> int:
        run(0, n)
        return n

    return timed(all_items, device)


def interleaved(stages: dict[str, Callable[[int, int], int]], n: int,
                device: torch.device) -> dict[str, tuple[float, float, float]]:
    """Time several stages on the same ``n`` items, batch by batch in turn: ``{stage: (seconds, images/s, CPU use)}``.

    Each stage ``run(lo, hi)`` does items ``lo:hi`` and returns how many it did. Stages take turns on each
    batch of :data:`BATCH` items (the order rotating from batch to batch), and a stage's time is the sum of its
    batches' times, so a load that other processes put on a shared machine for a while weighs on every stage
    alike and their ratios hold (run one stage after the other and a busy minute lands on one of them only).
    """
    secs = dict.fromkeys(stages, 0.0)
    cpu = dict.fromkeys(stages, 0.0)
    done = dict.fromkeys(stages, 0)
    names = list(stages)
    for b, lo in enumerate(range(0, n, BATCH)):
        hi = min(n, lo + BATCH)
        for name in names[b % len(names):] + names[:b % len(names)]:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            done[name] += stages[name](lo, hi)
            sync(device)
            secs[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    return {k: (secs[k], done[k] / secs[k], cpu[k] / secs[k]) for k in names}


def get_dataset(args: argparse.Namespace, scratch: Path) -> tuple[Path, dict[str, Any]]:
    root = args.data or scratch / "data"
    marker = root / "dataset.json"
    if marker.is_file():
        print(f"reusing demo data in {root}", flush=True)
    else:
        from brandguard.synth import make_demo_dataset

        print(f"generating the {args.size} demo data set in {root} ...", flush=True)
        t0 = time.perf_counter()
        make_demo_dataset(root, seed=0, size=args.size)
        print(f"  generated in {time.perf_counter() - t0:.1f}s", flush=True)
    meta = json.loads(marker.read_text(encoding="utf-8"))
    return root, meta


def decode_224(path: Path, side: int) -> np.ndarray:
    """What a user writes first: PIL decode, RGB, plain resize to the network's input size."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))


def pooled(net: Any, x: torch.Tensor) -> torch.Tensor:
    """The timm model's pooled (pre-logits) features."""
    out: torch.Tensor = net.forward_head(net.forward_features(x), pre_logits=True)
    return out


def bench_backbone(model: torch.nn.Module, tensors: torch.Tensor, dtype: torch.dtype | None, channels_last: bool,
                   device: torch.device) -> tuple[float, float, float]:
    """Stage a: the network alone on pre-decoded, normalised tensors, in batches."""
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        tensors = tensors.contiguous(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=dtype)) if dtype else contextlib.nullcontext

    def forward(lo: int, hi: int) -> None:
        for s in range(lo, hi, BATCH):
            with autocast():
                pooled(model, tensors[s:min(s + BATCH, hi)])

    return throughput(forward, len(tensors), device)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    scratch = Path(tempfile.mkdtemp(prefix="brandguard-bench-"))
    try:
        return run(args, device, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, device: torch.device, scratch: Path) -> int:
    root, meta = get_dataset(args, scratch)
    photos = list_images(root / "listings")[: args.n]
    n = len(photos)
    if n < args.n:
        print(f"note: listings/ holds only {n} photos; timing those", flush=True)

    # ---- setup (not timed): the library's index, calibrated as `brandguard demo` does, or a given one
    t0 = time.perf_counter()
    checks = ("on", "off") if args.text_check == "both" else (args.text_check,)
    if args.index is not None:
        index = ReferenceIndex.load(args.index)
        index.config = index.config.with_overrides({"runtime.device": str(device), **args.overrides})
        if "on" in checks and not index.text_enabled:
            raise SystemExit(f"--text-check on: the index {args.index} was built without the text check")
        det = Detector(index)
        print(f"index loaded from {args.index} in {time.perf_counter() - t0:.1f}s ({len(index.products)} products)",
              flush=True)
    else:
        cfg = Config().with_overrides({"runtime.device": str(device),
                                       "compare.text_check": "on" if "on" in checks else checks[0], **args.overrides})
        index = ReferenceIndex.build(root / "refs", cfg)
        det = Detector(index)
        det.calibrate([str(i.path) for i in read_labels(root / "calibration" / "labels.csv") if i.label == "authentic"])
        print(f"index built and calibrated in {time.perf_counter() - t0:.1f}s ({len(index.products)} products)",
              flush=True)
    setup_s = time.perf_counter() - t0
    text_built = index.text_enabled

    # ---- the bare timm network, fp32, as a user loads it
    bb = load_backbone("efficientnet_lite0")
    spec = bb.spec
    side = spec.input_size
    model = bb.net.model.to(device).eval()
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)

    def to_input(batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - mean) / std).contiguous()

    # ---- a. backbone only, on pre-decoded tensors
    tensors = to_input(np.stack([decode_224(p, side) for p in photos]))
    lib_dtype = resolve_precision("auto", device)
    a32 = bench_backbone(model, tensors, None, False, device)
    alib = bench_backbone(model, tensors, lib_dtype, True, device)
    del tensors

    # ---- b. naive pipeline: decode + resize + fp32 forward + normalise + FAISS flat search
    def embed_paths(paths: Sequence[Path]) -> np.ndarray:
        out = []
        for s in range(0, len(paths), BATCH):
            x = to_input(np.stack([decode_224(p, side) for p in paths[s:s + BATCH]]))
            out.append(F.normalize(pooled(model, x).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    refs = [r.path for r in read_references(root / "refs")]
    ref_vecs = embed_paths(refs)
    flat = faiss.IndexFlatIP(ref_vecs.shape[1])
    flat.add(np.ascontiguousarray(ref_vecs, dtype=np.float32))

    def naive(lo: int, hi: int) -> None:
        flat.search(np.ascontiguousarray(embed_paths(photos[lo:hi]), dtype=np.float32), 1)

    # ---- c. end to end: score_folder on folders holding exactly those photos, a batch each
    folder = scratch / "listings"
    for s in range(0, n, BATCH):
        (folder / f"{s // BATCH:04d}").mkdir(parents=True)
        for p in photos[s:s + BATCH]:
            shutil.copy2(p, folder / f"{s // BATCH:04d}" / p.name)
    counts: dict[str, Counter[str]] = {check: Counter() for check in checks}

    def scorer(check: str) -> Callable[[int, int], int]:
        def score(lo: int, hi: int) -> int:
            index.text_enabled = text_built and check != "off"  # "auto": as built
            summary = score_folder(folder / f"{lo // BATCH:04d}", det, scratch / f"results_{check}_{lo // BATCH}.csv",
                                   overwrite=True)
            counts[check].update(summary.counts)
            return int(summary.scored)

        return score

    def naive_batch(lo: int, hi: int) -> int:
        naive(lo, hi)
        return hi - lo

    # warm-up (not timed), then b and c in turn on each batch: a shared machine's load weighs on both alike
    naive(0, min(WARMUP, n))
    if n > BATCH and n % BATCH:
        naive(0, n % BATCH)
    for check in checks:
        index.text_enabled = text_built and check != "off"
        det.predict_batch([str(p) for p in photos[:WARMUP]])
    timings = interleaved({"b": naive_batch, **{check: scorer(check) for check in checks}}, n, device)
    bnaive = timings["b"]
    end2end = {check: timings[check] for check in checks}
    summaries = {check: dict(counts[check]) for check in checks}

    lib_name = "channels_last" + (f" + {_DTYPE_NAMES[lib_dtype]} autocast" if lib_dtype is not None else ", fp32")
    rows = [
        ("a", "backbone only, fp32", *a32),
        ("a_lib", f"backbone only, {lib_name}", *alib),
        ("b", "naive: PIL + fp32 forward + FAISS flat", *bnaive),
    ] + [("c" if k == checks[0] else f"c_{k}", f"end to end: score_folder, text check {k}", *end2end[k])
         for k in checks]
    env = {
        "brandguard": brandguard.__version__, "torch": torch.__version__, "faiss": faiss.__version__,
        "python": platform.python_version(), "cpu": cpu_model(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "faiss_threads": faiss.omp_get_max_threads(), "precision": _DTYPE_NAMES[lib_dtype],
        "batch_size": BATCH, "input_size": side,
        "keypoint_search": search_name(index), "geometry": index.geometry.name,
        "overrides": ", ".join(f"{k}={v}" for k, v in args.overrides.items()) or None,
    }
    c = end2end[checks[0]]
    ratios = {"c/b": c[1] / bnaive[1], "c/a": c[1] / a32[1], "c/a_lib": c[1] / alib[1]}
    ratios.update({f"c_{k}/b": end2end[k][1] / bnaive[1] for k in checks[1:]})
    # the same ratios on CPU time (images per CPU second): steadier than wall time on a shared machine
    cpu_ratios = {f"{key}/b": (ips / cpu) / (bnaive[1] / bnaive[2]) for key, _, _, ips, cpu in rows if key.startswith("c")}

    print()
    for k in ("cpu", "gpu", "device", "torch", "faiss", "torch_threads", "faiss_threads", "precision",
              "keypoint_search", "geometry", "overrides"):
        if env[k] is not None:
            print(f"{k:14s} {env[k]}")
    print(f"{'data':14s} {root} ({meta.get('size', '?')}), {n} listing photos, batch {BATCH}, "
          f"{len(refs)} references")
    print()
    width = max(len(r[1]) for r in rows)
    print(f"{'':6s}{'stage':{width}s}  {'seconds':>8s}  {'images/s':>9s}  {'cpu use':>7s}  {'cpu ms/img':>10s}")
    for key, name, secs, ips, cpu in rows:
        print(f"{key:6s}{name:{width}s}  {secs:8.2f}  {ips:9.1f}  {cpu:7.2f}  {1000 * cpu / ips:10.1f}")
    print("ratios: " + ", ".join(f"{k} = {v:.3f}" for k, v in ratios.items()))
    print("ratios on CPU time (images per CPU second): " + ", ".join(f"{k} = {v:.3f}" for k, v in cpu_ratios.items()))
    print(f"cpu use = process CPU seconds per wall second; on CPU, well under {env['torch_threads']} means other "
          "processes shared the cores and the figures are low")
    for k in checks:
        print(f"verdicts, text check {k}: {dict(sorted(summaries[k].items()))}")

    if args.json:
        result = {"environment": env, "data": {"root": str(root), "dataset": {k: v for k, v in meta.items() if not isinstance(v, list)},
                                                 "photos": n,
                                                 "references": len(refs)},
                  "setup_seconds": round(setup_s, 2),
                  "stages": {key: {"name": name, "seconds": round(secs, 4), "images_per_second": round(ips, 3),
                                   "cpu_use": round(cpu, 3)} for key, name, secs, ips, cpu in rows},
                  "ratios": {k: round(v, 4) for k, v in ratios.items()},
                  "cpu_time_ratios": {k: round(v, 4) for k, v in cpu_ratios.items()},
                  "verdicts": summaries[checks[0]],
                  "verdicts_by_text_check": {k: summaries[k] for k in checks}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
