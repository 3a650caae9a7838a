"""Keypoint search at catalogue scale: memory, disk, build time, query time and the right product among
distractors (one run per size; prints its figures, asserts nothing).

    python scripts/benchmark_scale.py brandguard-demo/index brandguard-demo/data/listings/labels.csv \
        --sizes 1000 10000 100000

What is built: the real products of INDEX (e.g. the demo's 27) plus distractor products up to each size.
Generating 100,000 packages and photos would take days on 2 cores, so a distractor is **real descriptors
replicated with jitter**: 1,000 RootSIFT descriptors drawn from the keypoints of the labelled photos of
products INDEX does not hold (the `unrelated` rows of LABELS), each perturbed by Gaussian noise (sigma 0.03,
renormalised), at random positions of the canonical frame. They are real-looking descriptors that vote
like another product's keypoints but, having no common geometry, fail verification, as a catalogue's other
products mostly do. Per size it prints:

* RAM held by the search structures (resident memory grown by building them; the descriptor store is a
  memory map on disk and the page cache is not counted), and per product;
* disk of the keypoint files; build time (training the codes + adding every product);
* query time per photo (FAISS shortlist, exact re-ranking, votes and RANSAC, from precomputed keypoints)
  and its ratio to the smallest size;
* the right product (accepted alignment to the labelled product) on the authentic and counterfeit rows of
  LABELS, and the rate without distractors.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):  # memory the process holds; memory-mapped file pages are not counted
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", help="a built index (e.g. brandguard-demo/index)")
    ap.add_argument("labels", help="labels.csv with authentic/counterfeit rows of INDEX's products and unrelated rows")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--keypoints", type=int, default=1000, help="descriptors per distractor product")
    ap.add_argument("--photos", type=int, default=120, help="labelled photos queried per size")
    ap.add_argument("--workdir", default=None, help="where the descriptor stores go (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from brandguard.images import load_image
    from brandguard.index import ProductModel, ReferenceIndex, _empty_bank
    from brandguard.localization import detect_keypoints
    from brandguard.references import read_labels
    from brandguard.shortlist import KeypointSearch

    rng = np.random.default_rng(args.seed)
    base = ReferenceIndex.load(args.index)
    loc = base.config.localization
    items = read_labels(args.labels)
    known = [i for i in items if i.label in ("authentic", "counterfeit")]
    pool_items = [i for i in items if i.label == "unrelated"]
    if not known or not pool_items:
        raise SystemExit("LABELS needs authentic/counterfeit rows (queries) and unrelated rows (distractor pool)")
    queries = [known[j] for j in np.sort(rng.choice(len(known), min(args.photos, len(known)), replace=False))]

    def keypoints(path: Path):
        img = load_image(path, max_side=loc.max_side)
        return img.shape, detect_keypoints(img, loc.keypoint_side, loc.query_keypoints)

    t0 = time.perf_counter()
    q = [keypoints(i.path) for i in queries]
    pool = np.concatenate([keypoints(i.path)[1].desc for i in pool_items]).astype(np.float32)
    print(f"{len(queries)} query photos, distractor pool {len(pool)} descriptors from {len(pool_items)} unrelated "
          f"photos ({time.perf_counter() - t0:.0f} s)")
    want = [f"{i.brand}/{i.product}" for i in queries]
    real = list(base.products)
    real_desc = np.concatenate([m.kp_desc for m in real]).astype(np.float16)
    S = loc.canonical_size
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bg-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"real products {len(real)}, {len(real_desc)} descriptors; stores in {work}")
    print("| products | descriptors | search kind | RAM MB (per product KB) | disk MB | build s | query ms/photo "
          "(x smallest) | right product |")
    print("|---|---|---|---|---|---|---|---|")
    first_ms = None
    for size in [len(real)] + sorted(args.sizes):
        n_dis = max(0, size - len(real))
        store_path = work / f"store-{size}.npy"
        total = len(real_desc) + n_dis * args.keypoints
        store = np.lib.format.open_memmap(store_path, mode="w+", dtype=np.float16, shape=(total, 128))
        store[:len(real_desc)] = real_desc
        chunk = max(1, 200_000 // args.keypoints)
        for s in range(0, n_dis, chunk):
            n = min(chunk, n_dis - s)
            x = pool[rng.integers(0, len(pool), n * args.keypoints)]
            x = x + rng.normal(0, 0.03, x.shape).astype(np.float32)
            np.maximum(x, 0, out=x)
            x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
            start = len(real_desc) + s * args.keypoints
            store[start:start + len(x)] = x.astype(np.float16)
        store.flush()
        del store
        store = np.load(store_path, mmap_mode="r")
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        search = KeypointSearch.build(store)
        search.store = store  # keep the memory map (build copies into a contiguous array only when given one)
        products = list(real)
        start = len(real_desc)
        xy = rng.uniform(0, S, (args.keypoints, 2)).astype(np.float32)
        for d in range(n_dis):
            m = ProductModel(f"distractor{d // 5:05d}", f"p{d % 5}", [], 0, [], store[start:start + args.keypoints],
                             xy, _empty_bank(), None, np.zeros((0, 1), np.float32),  # type: ignore[arg-type]
                             np.zeros((0, 4)))
            m.kp_start = start
            start += args.keypoints
            products.append(m)
        index = ReferenceIndex.__new__(ReferenceIndex)
        index.__dict__.update(base.__dict__)
        index.products = products
        index._local = search
        offset = 0
        for m in real:
            m.kp_start, offset = offset, offset + len(m.kp_desc)
        index._refresh_tables()
        build_s = time.perf_counter() - t0
        ram = _rss_mb() - rss0
        disk = sum(os.path.getsize(p) for p in [store_path]) + len(search.to_files()["keypoints.faiss"])
        t0 = time.perf_counter()
        res = index.localize([k for _, k in q], [shape for shape, _ in q])
        ms = 1000 * (time.perf_counter() - t0) / len(q)
        first_ms = first_ms or ms
        right = np.mean([a is not None and products[a.product_id].key == w for (a, _), w in zip(res, want)])
        print(f"| {len(products):,} | {total:,} | {search.kind} | {ram:.0f} ({1024 * ram / len(products):.1f}) | "
              f"{disk / 2**20:.0f} | {build_s:.1f} | {ms:.1f} ({ms / first_ms:.2f}x) | {100 * right:.1f}% |", flush=True)
        del index, search, store, products
        store_path.unlink()


if __name__ == "__main__":
    main()
