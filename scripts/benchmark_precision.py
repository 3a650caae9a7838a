"""The network's speed and vectors in fp32 and in the precision ``auto`` picks on this machine (bfloat16 on a
CPU with AVX512-BF16), in one run, taking turns (prints its figures, asserts nothing).

    .venv/bin/python scripts/benchmark_precision.py [--rounds 3]

Per precision: global embeddings a second of 32 random 224-px images and of 8 random 384-px images (the
same images, the two precisions timed alternately, after a warm-up), and the cosine of each ``auto`` vector
with its fp32 vector. Where ``auto`` is fp32 (no AVX512-BF16, or no bfloat16 support) the two rows are the
same pipeline and their ratio shows the run's noise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per precision (default 3)")
    args = ap.parse_args()
    from brandguard.embedding import Embedder

    rng = np.random.default_rng(0)
    sets = {224: list(rng.integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)),
            384: list(rng.integers(0, 256, (8, 384, 384, 3), dtype=np.uint8))}
    models = {p: Embedder.from_name("efficientnet_lite0", device="cpu", precision=p) for p in ("fp32", "auto")}
    for e in models.values():  # warm-up
        for imgs in sets.values():
            e.embed_global(imgs[:2])
    seconds = {(p, side): 0.0 for p in models for side in sets}
    for _ in range(args.rounds):
        for p, e in models.items():
            for side, imgs in sets.items():
                t = time.perf_counter()
                e.embed_global(imgs)
                seconds[p, side] += time.perf_counter() - t
    print(f"auto runs {models['auto'].dtype or 'fp32'} on this CPU")
    for side, imgs in sets.items():
        rates = {p: args.rounds * len(imgs) / seconds[p, side] for p in models}
        cos = (models["auto"].embed_global(imgs) * models["fp32"].embed_global(imgs)).sum(1)
        print(f"{side} px: fp32 {rates['fp32']:.1f} img/s, auto {rates['auto']:.1f} img/s "
              f"({rates['auto'] / rates['fp32']:.2f}x); cosine auto/fp32 {cos.min():.4f}-{cos.max():.4f}")


if __name__ == "__main__":
    main()
