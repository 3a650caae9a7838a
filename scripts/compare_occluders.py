"""What leaving out things over the package's edge changes on your photos: one run, not a test.

Scores the same photos with one index twice, ``compare.occluders`` on then off
(:mod:`brandguard.occluders`), with the index's calibration as it is, and prints how many photos got the
occluder note, how many verdicts changed (and which), the raw-score drop where it fired, and what the search
cost: the seconds spent in :func:`brandguard.occluders.find_occluder` (including the comparison it triggers
again, :meth:`brandguard.detector.Detector._occluded`) per photo and as a share of scoring, on one thread.
With a ``labels.csv`` beside the photos (as the demo writes), the changed verdicts are listed with their label.

Example (the demo's index and listings):

    $ OMP_NUM_THREADS=1 python scripts/compare_occluders.py brandguard-demo/index brandguard-demo/data/listings --n 120
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index", help="an index directory (brandguard index build)")
    p.add_argument("listings", type=Path, help="a folder of listing photos")
    p.add_argument("--n", type=int, default=120, help="photos to score, the first N in file order (default 120)")
    args = p.parse_args()
    if args.n < 1:
        p.error(f"--n must be a whole number >= 1, got {args.n}")
    if not args.listings.is_dir():
        p.error(f"listings folder {args.listings} not found: pass a folder of listing photos")
    import brandguard as bg
    from brandguard.detector import Detector
    from brandguard.images import list_images

    files = list_images(args.listings)[:args.n]
    if not files:
        p.error(f"no photos under {args.listings}")
    labels: dict[str, str] = {}
    table = args.listings / "labels.csv"
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as f:
            labels = {r["path"]: r.get("label", "") for r in csv.DictReader(f)}
    det = bg.load(args.index)
    spent = [0.0]
    timed = Detector._occluded

    def occluded(self, *a, **k):  # type: ignore[no-untyped-def]
        t0 = time.process_time()
        try:
            return timed(self, *a, **k)
        finally:
            spent[0] += time.process_time() - t0

    Detector._occluded = occluded  # type: ignore[method-assign]
    on_cfg = det.config.with_overrides({"compare.occluders": True})
    off_cfg = det.config.with_overrides({"compare.occluders": False})
    det.config = on_cfg
    det.predict(str(files[0]))  # warm-up
    spent[0] = 0.0
    t0 = time.process_time()
    on = [q for i in range(0, len(files), 16) for q in det.predict_batch([str(f) for f in files[i:i + 16]])]
    cpu_on = time.process_time() - t0
    det.config = off_cfg
    off = [q for i in range(0, len(files), 16) for q in det.predict_batch([str(f) for f in files[i:i + 16]])]
    found = [a for a in on if any(n.startswith("something running on beyond") for n in a.notes)]
    changed = [(f, a, b) for f, a, b in zip(files, on, off) if a.verdict != b.verdict]
    drops = sorted(b.raw_score - a.raw_score for a, b in zip(on, off) if a in found)
    n = len(files)
    print(f"photos: {n}; with the occluder note: {len(found)} ({len(found) / n:.1%})")
    if drops:
        print(f"raw-score drop where it fired: median {drops[len(drops) // 2]:.2f}, largest {drops[-1]:.2f}")
    print(f"verdicts changed: {len(changed)}")
    for f, a, b in changed:
        name = f.name
        label = f" [{labels[name]}]" if name in labels else ""
        print(f"  {name}{label}: {b.verdict} {b.raw_score:.2f} -> {a.verdict} {a.raw_score:.2f}")
    print(f"cost: {1000 * spent[0] / n:.1f} ms of CPU a photo, {spent[0] / cpu_on:.1%} of scoring with it on "
          f"({1000 * cpu_on / n:.0f} ms a photo)")


if __name__ == "__main__":
    main()
