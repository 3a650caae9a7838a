"""Authentic listing photos with their background replaced by a pattern: found and judged as before?

For each authentic (or counterfeit) photo of one scene of a labelled folder (default: the scene set's ``studio_white``, a
product on white), the product's outline is found on the photo as it is, everything outside it is replaced
by a pattern (checkerboards of 8, 16 and 32-px squares, dots, floor tiles, diagonal stripes, a plain brown
table), and the photo is scored again, with the repeated-keypoint rule of
:func:`brandguard.localization.detect_keypoints` on and off (``REPEAT_SHARE`` above 1). Prints the verdicts
per pattern. Not a test: a measurement (README, "Patterned backgrounds").

Example:
    brandguard demo --scenes --out sc
    python scripts/measure_backgrounds.py sc/index sc/data/listings/labels.csv --scene studio_white --n 8
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

import brandguard
import brandguard.localization as loc
from brandguard.images import load_image


def pattern(kind: str, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 background of one kind."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    if kind.startswith("checker"):
        sq = int(kind[len("checker"):])
        g = ((yy // sq + xx // sq) % 2 * 215 + 20).astype(np.uint8)
    elif kind == "dots":
        g = np.where((xx % 24 - 12) ** 2 + (yy % 24 - 12) ** 2 < 36, 30, 230).astype(np.uint8)
    elif kind == "tiles":
        g = np.where((xx % 48 < 4) | (yy % 48 < 4), 60, 215).astype(np.uint8)
    elif kind == "stripes":
        g = ((xx + yy) // 10 % 2 * 200 + 30).astype(np.uint8)
    elif kind == "brown":
        return np.broadcast_to(np.array([120, 80, 50], np.uint8), (*shape, 3)).copy()
    else:
        raise ValueError(f"unknown pattern {kind!r}")
    return np.repeat(g[..., None], 3, axis=2)


KINDS = ("checker8", "checker16", "checker32", "dots", "tiles", "stripes", "brown")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("index")
    ap.add_argument("labels", type=Path)
    ap.add_argument("--scene", default="studio_white")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--label", default="authentic", choices=("authentic", "counterfeit"))
    args = ap.parse_args()
    det = brandguard.load(args.index)
    with open(args.labels, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("scene", args.scene) == args.scene and r["label"] == args.label]
    counts: dict[tuple[str, str], Counter[str]] = {}
    used = 0
    for r in rows:
        if used >= args.n:
            break
        img = load_image(str(args.labels.parent / r["path"]))
        p0 = det.predict(img)
        if p0.verdict == "unknown" or p0.quad is None or p0.heatmap is None:
            continue
        used += 1
        inside = np.zeros(img.shape[:2], np.uint8)  # the outline is in working-copy pixels
        cv2.fillConvexPoly(inside, np.round(p0.quad * img.shape[1] / p0.heatmap.shape[1]).astype(np.int32), 1)
        inside = cv2.erode(inside, np.ones((3, 3), np.uint8)).astype(bool)
        counts.setdefault(("as it is", "on"), Counter())[p0.verdict] += 1
        for kind in KINDS:
            photo = np.where(inside[..., None], img, pattern(kind, img.shape[:2]))
            for rule, share in (("off", 2.0), ("on", loc.REPEAT_SHARE)):
                saved, loc.REPEAT_SHARE = loc.REPEAT_SHARE, share
                try:
                    v = det.predict(np.ascontiguousarray(photo)).verdict
                finally:
                    loc.REPEAT_SHARE = saved
                counts.setdefault((kind, rule), Counter())[v] += 1
    print(f"{used} {args.label} photos of scene {args.scene!r}; verdicts with the repeated-keypoint rule off / on")
    for kind in ("as it is", *KINDS):
        on = dict(sorted(counts.get((kind, "on"), Counter()).items()))
        off = dict(sorted(counts.get((kind, "off"), Counter()).items())) if kind != "as it is" else on
        print(f"  {kind:10}  off {off}  on {on}")


if __name__ == "__main__":
    main()
