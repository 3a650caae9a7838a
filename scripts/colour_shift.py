"""How far the package colours of photos move from their closest authentic reference.

A counterfeit with a changed packaging colour or a recoloured logo can only be told apart from an authentic
photo when the change is larger than what lighting and the camera do to authentic photos (white balance,
hue and saturation of the camera pipeline). This script measures both on a labelled folder: for each photo
that brandguard aligns to a product, the hue shift of the package (chroma-weighted median over the cells the
reference shows in colour) against the closest aligned reference, then the quantiles per label and edit
type, and the share of authentic photos that move more than a given angle.

Usage:
    python scripts/colour_shift.py INDEX_DIR LABELS.csv [--angle 20]

Example (the demo's output folder):
    python scripts/colour_shift.py brandguard-demo/index brandguard-demo/data/listings/labels.csv
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from brandguard.images import load_image
from brandguard.index import ReferenceIndex
from brandguard.localization import detect_keypoints, warp_to_canonical
from brandguard.mismatch import closest_references, hue_shift, make_view
from brandguard.references import read_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index")
    ap.add_argument("labels")
    ap.add_argument("--angle", type=float, default=20.0, help="report the share of photos moving more than this")
    args = ap.parse_args()
    index = ReferenceIndex.load(args.index)
    cfg = index.config
    loc, S, cell = cfg.localization, cfg.localization.canonical_size, cfg.compare.cell
    groups: dict[str, list[float]] = defaultdict(list)
    for item in read_labels(args.labels):
        if item.label == "unrelated":
            continue
        img = load_image(item.path, max_side=loc.max_side)
        acc, _ = index.localize([detect_keypoints(img, loc.keypoint_side, loc.query_keypoints)], [img.shape])[0]
        if acc is None:
            continue
        bank = index.products[acc.product_id].bank
        view = make_view(*warp_to_canonical(img, acc.H, S), cell)
        i = closest_references(view, bank, 1)[0]
        shift = hue_shift(view.colors, bank.colors[i], bank.cell_valid[i] & view.cell_valid)
        edit = item.extra.get("manipulation") or ""
        key = item.label if item.label != "counterfeit" else f"{edit} ({item.extra.get('strength', '')})"
        groups[key].append(abs(shift))
    print(f"{'photos':<34} {'n':>4} {'|hue shift| median / 90% / 95% (deg)':>40} {'> ' + str(args.angle):>8}")
    for key in sorted(groups, key=lambda k: (k != "authentic", k)):
        v = np.array([x for x in groups[key] if np.isfinite(x)])
        if len(v) == 0:
            continue
        q = np.quantile(v, [0.5, 0.9, 0.95])
        print(f"{key:<34} {len(v):>4} {q[0]:>24.1f} / {q[1]:.1f} / {q[2]:.1f} {np.mean(v > args.angle):>8.0%}")


if __name__ == "__main__":
    main()
