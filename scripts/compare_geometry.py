"""How far the GPU path's geometry (kornia) moves verdicts from the CPU path's (OpenCV): one run, not a test.

Scores the same listing photos with one index twice, ``runtime.geometry`` ``opencv`` then ``kornia``
(:mod:`brandguard.accel`), on ``--device`` (default cpu: kornia on CPU tensors, slow but the same
arithmetic as on a GPU up to float rounding), and prints how many photos keep their verdict and product, the
score differences, the CPU seconds a photo of each path (after one warm-up photo) and every photo whose
verdict changed.

Example (the demo's index and listings, a seeded sample of 60 photos):

    $ OMP_NUM_THREADS=1 python scripts/compare_geometry.py brandguard-demo/index brandguard-demo/data/listings --n 60
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index", help="an index directory (brandguard index build)")
    p.add_argument("listings", type=Path, help="a folder of listing photos with labels.csv (path column)")
    p.add_argument("--n", type=int, default=60, help="photos to score, a seeded sample (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args()
    import torch

    from brandguard.detector import Detector

    labels = args.listings / "labels.csv"
    if not labels.is_file():
        p.error(f"{labels} not found: LISTINGS must hold labels.csv with a path column (as the demo writes)")
    with labels.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(args.seed)
    pick = sorted(rng.choice(len(rows), min(args.n, len(rows)), replace=False))
    paths = [str(args.listings / rows[i]["path"]) for i in pick]
    preds, cpu = {}, {}
    for geometry in ("opencv", "kornia"):
        det = Detector.load(args.index, device=args.device, geometry=geometry)
        det.predict_batch(paths[:1])  # warm-up: the network loads, kornia builds its modules
        t0 = time.process_time()
        preds[geometry] = det.predict_batch(paths)
        cpu[geometry] = (time.process_time() - t0) / len(paths)
    a, b = preds["opencv"], preds["kornia"]
    diff = np.array([abs(x.score - y.score) for x, y in zip(a, b)])
    print(f"torch threads {torch.get_num_threads()}, device {args.device}, {len(paths)} photos of {args.listings}")
    print(f"CPU s a photo: opencv {cpu['opencv']:.2f}, kornia {cpu['kornia']:.2f}")
    print(f"same verdict {sum(x.verdict == y.verdict for x, y in zip(a, b))}, "
          f"same product {sum((x.brand, x.product) == (y.brand, y.product) for x, y in zip(a, b))}, "
          f"score difference median {np.median(diff):.3f}, 90th percentile {np.percentile(diff, 90):.3f}")
    for x, y, i in zip(a, b, pick):
        if x.verdict != y.verdict:
            r = rows[i]
            print(f"  {r['path']} ({r.get('label', '')} {r.get('scene', '')}): {x.verdict} {x.score:.3f} "
                  f"{x.inliers} matches -> {y.verdict} {y.score:.3f} {y.inliers} matches")


if __name__ == "__main__":
    main()
