"""Saving after `index add` of one product to a saved catalogue: time and bytes written, per catalogue size
(one run per size; prints its figures, asserts nothing).

    OMP_NUM_THREADS=1 python scripts/benchmark_save.py brandguard-demo/data/refs --sizes 1000 10000 \
        --workdir /tmp/bg-save

What is built: an index of REFS without its first product (held out), grown to each size with **cheap
products**: replicas of its real products, each with a one-reference comparison bank (the real product's
first), its statistics, no simulated evidence, renamed references and 200 of its keypoints jittered (so every
replica has its own descriptors). Generating and fitting thousands of real products would take hours on 2
cores; a cheap product stores what a real one stores, only fewer references. Per size it prints:

* the whole save of the new index (every file written) and the index's size on disk;
* then, as ``brandguard index add IDX REFS`` does: load, add the held-out product (its photos read,
  aligned, embedded, read, simulated; not timed), save: the time of that save and the bytes it wrote (files
  created or rewritten; a file left as it was counts nothing).

Run it on another checkout (``PYTHONPATH=/path/to/src``) to compare versions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np


def _files(d: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in d.rglob("*") if p.is_file()}


def _cheap(src, first_bank, d: int, keypoints: int, rng: np.random.Generator):
    """Cheap product ``d``: a replica of the real product ``src`` with its first bank reference only
    (``first_bank``, shared by the replicas of ``src`` in memory; each is written on its own)."""
    from brandguard.index import ProductModel, RefRecord

    m = ProductModel.__new__(ProductModel)
    m.__dict__.update({k: v for k, v in src.__dict__.items() if not k.startswith("_")})
    first = src.bank_refs[0]
    m.brand, m.product = f"cheap{d // 5:05d}", f"p{d % 5}"
    r = src.refs[first]
    m.refs = [RefRecord(f"{r.path}#{d}", r.aligned, r.inliers, r.H, f"{r.digest}-{d}", f"{r.pixels}-{d}")]
    m.anchor, m.bank_refs = 0, [0]
    m.bank, m.global_vecs, m.evidence, m.stats = first_bank, src.global_vecs[:1], None, src.stats
    m.loo_scores = src.loo_scores[:1]
    m.ref_text = src.ref_text[:1]
    m.reference_similarity = np.zeros(0, np.float32)
    n = min(keypoints, len(src.kp_desc))
    x = np.asarray(src.kp_desc[:n], np.float32) + np.float32(0.03) * rng.standard_normal((n, 128), dtype=np.float32)
    np.maximum(x, 0, out=x)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    m.kp_desc, m.kp_xy, m.kp_start = x.astype(np.float16), np.asarray(src.kp_xy[:n], np.float32), -1
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("refs", help="reference folder REFS/<brand>/<product>/*.jpg (e.g. brandguard-demo/data/refs)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="catalogue sizes in products")
    ap.add_argument("--keypoints", type=int, default=200, help="keypoints per cheap product")
    ap.add_argument("--workdir", default="bg-save", help="where the indexes go (removed and written again)")
    args = ap.parse_args()

    import brandguard
    from brandguard.config import Config
    from brandguard.index import ReferenceIndex
    from brandguard.references import read_references
    from brandguard.shortlist import KeypointSearch

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    items = read_references(args.refs)
    held = min({(i.brand, i.product) for i in items})
    add = [i for i in items if (i.brand, i.product) == held]
    base = ReferenceIndex.build([i for i in items if (i.brand, i.product) != held], Config())
    emb = base.embedder
    print(f"brandguard {brandguard.__version__} ({Path(brandguard.__file__).parent}); held out {held[0]}/{held[1]} "
          f"({len(add)} references); {len(base.products)} real products")
    print("| products | index on disk | whole save s | save after adding one product s | bytes it wrote |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        real = list(base.products)
        banks = [m.bank.select([0]) for m in real]
        products = real + [_cheap(real[d % len(real)], banks[d % len(real)], d, args.keypoints, rng)
                           for d in range(size - len(real))]
        index = ReferenceIndex.__new__(ReferenceIndex)
        index.__dict__.update(base.__dict__)
        index.products = products
        index._disk = None  # a new index (an attribute of versions with incremental saves)
        docs = np.array([len(m.kp_desc) for m in products])
        index._local = KeypointSearch.build(np.concatenate([m.kp_desc for m in products]), documents=docs)
        for m, start in zip(products, np.concatenate([[0], np.cumsum(docs)[:-1]])):
            m.kp_start = int(start)
        index._global, index._tabled, index._known_sizes, index._known_starts = None, [], {}, set()
        index._rebuild_search()
        index.prior, index.calibration_lag = index.pooled_prior(), 0  # as a build leaves it: no refit at the add
        target = work / f"idx-{size}"
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.perf_counter()
        index.save(target)
        whole = time.perf_counter() - t0
        print(f"  {size:,} products: whole save {whole:.1f} s", flush=True)
        del index, products
        loaded = ReferenceIndex.load(target)
        loaded._embedder = emb
        loaded.add(add)
        print("  loaded, one product added; saving", flush=True)
        before = _files(target)
        t0 = time.perf_counter()
        loaded.save(target)
        save_s = time.perf_counter() - t0
        after = _files(target)
        wrote = sum(s for name, (ino, mt, s) in after.items() if before.get(name) != (ino, mt, s))
        disk = sum(s for _, _, s in after.values())
        print(f"| {size:,} | {disk / 1e6:,.0f} MB | {whole:.1f} | {save_s:.2f} | {wrote / 1e6:,.1f} MB |", flush=True)
        del loaded
        shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
