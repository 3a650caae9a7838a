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
* the time to add one more product to the search (``KeypointSearch.add``); with ``--add``, also the time of
  the whole ``ReferenceIndex.add`` of one real product of INDEX (its reference photos read, aligned, embedded,
  read by OCR, simulated and compared, then the search, statistics and calibration brought up to date).

``--add [BRAND/PRODUCT]`` (default: INDEX's first product) leaves that product out of every catalogue and adds it
back at each size. Its distractors are then **replicas of INDEX's other products**: each carries the
comparison bank, evidence, statistics and global vectors of a real product (shared, read from INDEX), renamed
references, the distractor descriptors above, and its share of the pooled cold-start prior jittered by 20%
(lognormal; real products differ more: the interquartile range of the demo's entries is 10% to 800% of their
median), so the prior pooled over the catalogue moves like that of distinct products, not in jumps between 26
repeated values. Every product is fitted under that pooled prior and the cold-start calibration fitted on all
of them before the add is timed: the state ``brandguard index build`` leaves. The last column says whether
the add refitted every product (the pooled prior moved more than ``index.PRIOR_TOLERANCE``) and whether it
refitted the cold-start calibration (see ``ReferenceIndex.refit_default_calibration``).

``--search`` picks the first stage of catalogues from 200,000 descriptors: ``words`` (products shortlisted
by visual words, the default of ``brandguard index build``) or ``ivfpq`` (FAISS IVF-PQ keypoint shortlist).
"""

from __future__ import annotations

import argparse
import copy
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


def _replica(src, d: int, desc: np.ndarray, xy: np.ndarray, rng: np.random.Generator):
    """Distractor ``d`` as a replica of the real product ``src`` (see ``--add``): its bank, evidence, statistics
    and global vectors (shared; a loaded index reads them from its file), renamed references that are no
    duplicates of anything, the distractor descriptors ``desc`` at ``xy``, and its prior entry jittered."""
    from brandguard.index import ProductModel, RefRecord

    m = ProductModel.__new__(ProductModel)
    m.__dict__.update(src.__dict__)
    m.brand, m.product = f"replica{d // 5:05d}", f"p{d % 5}"
    m.refs = [RefRecord(f"{r.path}#{d}", r.aligned, r.inliers, r.H, f"{r.digest}-{d}", f"{r.pixels}-{d}")
              for r in src.refs]
    m.kp_desc, m.kp_xy = desc, xy
    m.__dict__["_source"] = src
    return m


def _as_built(index, n_real: int) -> None:
    """Fit the catalogue as ``brandguard index build`` leaves it: the prior pooled over every product (replica
    entries jittered), the real products fitted under it, each replica given its source's fit (the same
    inputs), the search structures and the cold-start calibration made from all of them."""
    from brandguard.index import prior_entry

    rng = np.random.default_rng(1)
    replicas = index.products[n_real:]
    for m in index.products[:n_real]:  # an index saved before entries were kept: the real products' first
        if m.prior_entry is None and m.evidence is not None and m.stats is not None:
            m.prior_entry = prior_entry(m.evidence, m.stats.region)
    for m in replicas:
        e = m.__dict__["_source"].prior_entry
        m.prior_entry = e if e is None or not len(e) else (e * rng.lognormal(0, 0.2, e.shape)).astype(np.float32)
    index.calibrator, index.brand_calibrators = None, {}
    index.prior = index.pooled_prior()
    for m in index.products[:n_real]:
        index._fit_statistics(m, index.prior)
    for m in replicas:
        src = m.__dict__.pop("_source")
        for k in ("stats", "loo_scores", "calibration_scores", "calibration_cross", "calibration_refs",
                  "reference_similarity"):
            setattr(m, k, getattr(src, k))
    index._global, index._tabled, index._known_sizes, index._known_starts = None, [], {}, set()
    index._rebuild_search()  # tables and global vectors of every product (the keypoints are in the search)
    index._fit_cold_start_calibration()


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
    ap.add_argument("--add", nargs="?", const="", default=None, metavar="BRAND/PRODUCT",
                    help="also time ReferenceIndex.add of this product of INDEX (default: its first) at each size; "
                         "distractors are then replicas of INDEX's other products")
    args = ap.parse_args()

    import faiss

    from brandguard.images import load_image
    from brandguard.index import ProductModel, ReferenceIndex, _empty_bank
    from brandguard.localization import detect_keypoints
    from brandguard.references import ReferenceItem, read_labels
    from brandguard.shortlist import KeypointSearch

    rng = np.random.default_rng(args.seed)
    base = ReferenceIndex.load(args.index)
    loc = base.config.localization
    items = read_labels(args.labels)
    held = None
    if args.add is not None:
        held = args.add or base.products[0].key
        if held not in {m.key for m in base.products}:
            raise SystemExit(f"--add {held}: INDEX has no such product")
        base._embedder, base._text_reader = base.embedder, base.text_reader  # loaded once, outside the timing
        items = [i for i in items if f"{i.brand}/{i.product}" != held]  # its photos have no product until it is added
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
    real = [m for m in base.products if m.key != held]
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
        products = [copy.copy(m) for m in real] if held else list(real)
        start = len(real_desc)
        xy = rng.uniform(0, S, (args.keypoints, 2)).astype(np.float32)
        for d in range(n_dis):
            if held:  # a replica of a real product (see --add)
                m = _replica(products[d % len(real)], d, store[start:start + args.keypoints], xy, rng)
            else:
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
        for m in products[:len(real)]:
            m.kp_start, offset = offset, offset + len(m.kp_desc)
        index._refresh_tables()
        build_s = time.perf_counter() - t0
        ram = _rss_mb() - rss0
        if held:
            t1 = time.perf_counter()
            _as_built(index, len(real))
            print(f"  {len(products):,} products fitted as a build leaves them ({time.perf_counter() - t1:.0f} s)",
                  flush=True)
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
    add_items = [ReferenceItem(Path(r.path), m.brand, m.product) for m in base.products if m.key == held for r in m.refs]
    print("| products | descriptors | search kind | RAM MB (per product KB) | disk MB | build s | query ms/photo "
          "(x smallest two-stage) | right product | in shortlist | add one product s |"
          + (f" index add of {held} s (of which search and calibration upkeep) | products refitted, "
             "calibration refitted |" if held else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if held else ""))
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
        whole = ""
        if held:  # before the search's own add below, so the index's rows are its products' alone
            index = b["index"]
            prior, calibrator = index.prior, index.calibrator
            t0 = time.perf_counter()
            index.add(add_items)
            index_s = time.perf_counter() - t0
            upkeep = sum(index.build_seconds.get(k, 0.0) for k in ("search", "calibration"))
            whole = (f" {index_s:.1f} ({upkeep:.2f}) | {'all' if index.prior is not prior else 'none'}, "
                     f"{'yes' if index.calibrator is not calibrator else 'no'} |")
        t0 = time.perf_counter()
        search.add(pool[rng.integers(0, len(pool), args.keypoints)])
        add_s = time.perf_counter() - t0
        ratio = f"{ms / first_ms:.2f}x" if first_ms else "-"
        print(f"| {len(products):,} | {b['total']:,} | {search.kind} | {b['ram']:.0f} "
              f"({1024 * b['ram'] / len(products):.1f}) | {b['disk'] / 2**20:.0f} | {b['build_s']:.1f} | {ms:.1f} "
              f"({ratio}) | {100 * right:.1f}% | {listed} | {add_s:.2f} |{whole}", flush=True)
    for b in built:
        b["path"].unlink()


if __name__ == "__main__":
    main()
