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
* disk of the keypoint files; build time (training the vocabulary or codes + entering every product);
* query time per photo (first stage, exact neighbours, votes and RANSAC, from precomputed keypoints) and its
  ratio to the smallest two-stage size;
* the right product (accepted alignment to the labelled product) on the authentic and counterfeit rows of
  LABELS, and the rate without distractors; for ``--search words`` also how often the labelled product is
  among the shortlisted candidates (recall of the first stage);
* the time to add one more product to the search (``KeypointSearch.add``; the index's other per-product
  structures are not part of this benchmark).

``--search`` picks the first stage of catalogues from 200,000 descriptors: ``words`` (products shortlisted
by visual words, the default of ``brandguard index build``) or ``ivfpq`` (FAISS IVF-PQ keypoint shortlist).
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
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000],
                    help="catalogue sizes in products (the index's own products plus distractors)")
    ap.add_argument("--keypoints", type=int, default=1000, help="descriptors per distractor product")
    ap.add_argument("--photos", type=int, default=120, help="labelled photos queried per size (seeded choice)")
    ap.add_argument("--workdir", default=None, help="where the descriptor stores go (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the photo choice and the distractors")
    ap.add_argument("--search", choices=("words", "ivfpq"), default="words",
                    help="first stage from 200,000 descriptors (default: words, as index build)")
    args = ap.parse_args()

    import faiss

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
    built = []
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
            x += np.float32(0.03) * rng.standard_normal(x.shape, dtype=np.float32)
            np.maximum(x, 0, out=x)
            x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
            start = len(real_desc) + s * args.keypoints
            store[start:start + len(x)] = x.astype(np.float16)
        store.flush()
        del store
        store = np.load(store_path, mmap_mode="r")
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        sizes_of = [len(m.kp_desc) for m in real] + [args.keypoints] * n_dis
        search = KeypointSearch.build(store, kind="flat" if total < KeypointSearch.IVF_MIN else args.search,
                                      documents=np.array(sizes_of))  # a float16 memory map is used in place
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
        codes = search.index.to_bytes() if search.kind == "words" else \
            faiss.serialize_index(search.index).tobytes()  # the search's own file (the store is on disk already)
        disk = os.path.getsize(store_path) + len(codes)
        print(f"built {len(products):,} products ({search.kind}) in {build_s:.0f} s", flush=True)
        built.append({"index": index, "search": search, "products": products, "total": total, "ram": ram,
                      "disk": disk, "build_s": build_s, "path": store_path, "ms": [], "res": []})

    # query photo by photo, each photo against every size in turn, so a change of load on a shared machine
    # weighs on every size alike and the ratios between sizes hold
    for shape, k in q:
        for b in built:
            t0 = time.perf_counter()
            b["res"].append(b["index"].localize([k], [shape])[0])  # one photo at a time, as a service scores
            b["ms"].append(1000 * (time.perf_counter() - t0))
    print("| products | descriptors | search kind | RAM MB (per product KB) | disk MB | build s | query ms/photo "
          "(x smallest two-stage) | right product | in shortlist | add one product s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    first_ms = None
    for b in built:
        search, products, ms = b["search"], b["products"], float(np.mean(b["ms"]))
        if search.kind != "flat":
            first_ms = first_ms or ms
        right = np.mean([a is not None and products[a.product_id].key == w for (a, _), w in zip(b["res"], want)])
        listed = "-"
        if search.kind == "words":
            pos = {m.key: i for i, m in enumerate(products)}
            listed = f"{100 * np.mean([pos[w] in search.shortlist(k.desc).tolist() for (_, k), w in zip(q, want)]):.1f}%"
        t0 = time.perf_counter()
        search.add(pool[rng.integers(0, len(pool), args.keypoints)])
        add_s = time.perf_counter() - t0
        ratio = f"{ms / first_ms:.2f}x" if first_ms else "-"
        print(f"| {len(products):,} | {b['total']:,} | {search.kind} | {b['ram']:.0f} "
              f"({1024 * b['ram'] / len(products):.1f}) | {b['disk'] / 2**20:.0f} | {b['build_s']:.1f} | {ms:.1f} "
              f"({ratio}) | {100 * right:.1f}% | {listed} | {add_s:.2f} |", flush=True)
    for b in built:
        b["path"].unlink()


if __name__ == "__main__":
    main()
