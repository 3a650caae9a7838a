"""Training throughput of ``brandguard train`` (images through the network per second), in one run.

Measures on the same pre-made training batches of the demo data:

a. the network step alone (forward + backward + AdamW) in fp32 with a contiguous (NCHW) layout;
b. the same step as ``brandguard train`` runs it: channels-last and autocast (``precision: auto``:
   bfloat16 on CPUs with AVX512-BF16, fp16/bf16 AMP on CUDA);
c. end to end: making the batches (alignment crops, augmentations, counterfeit-style edits, occluders) in a
   background thread while the network trains, as the trainer does.

An image is one photo through the network: a training step with ``batch_pairs`` P moves 2P local windows
and 2P whole frames (global loss). Warm-up steps are not timed.

Example:
    python scripts/benchmark_training.py                      # CPU, small generated data
    python scripts/benchmark_training.py --data /tmp/demo/data --steps 20 --json train_bench.json
    python scripts/benchmark_training.py --device cuda --batch-pairs 32
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from brandguard.backbones import LocalHead, load_backbone
from brandguard.config import Config
from brandguard.embedding import resolve_device, resolve_precision
from brandguard.index import ReferenceIndex
from brandguard.training.config import TrainConfig
from brandguard.training.data import AlignedReferences
from brandguard.training.trainer import _freeze, _step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="a demo data folder (with refs/); generated (small) when omitted")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setting (default 10)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-pairs", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from brandguard.synth import make_demo_dataset

            data = make_demo_dataset(Path(tmp) / "data", size="small").root
        cfg = TrainConfig().with_overrides({"data.batch_pairs": args.batch_pairs, "runtime.device": str(device)})
        index = ReferenceIndex.build(Path(data) / "refs", Config().with_overrides({"runtime.device": str(device)}))
        refs = AlignedReferences.from_index(index)

    def make(step: int):  # type: ignore[no-untyped-def]
        return refs.batch(np.random.default_rng([0, step]), cfg.data.batch_pairs, cfg.data.crop, cfg.data.global_size,
                          cfg.data.edit_probability, cfg.data.occluder_probability,
                          edit_weights=cfg.data.edit_weights)

    n_batches = args.warmup + args.steps
    t = time.perf_counter()
    batches = [make(i) for i in range(n_batches)]
    prep_s = (time.perf_counter() - t) / n_batches
    per_step = 4 * cfg.data.batch_pairs
    amp = resolve_precision("auto", device)

    def net_for(channels_last: bool):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        bb = load_backbone(cfg.model.backbone)
        net = bb.net
        net.local_head = LocalHead(net.local_channels(), cfg.model.local_dim, cfg.model.local_hidden)
        net = net.to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        _freeze(net, cfg.model.freeze_blocks, cfg.model.freeze_bn)
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        mean = torch.tensor(bb.spec.mean, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(bb.spec.std, device=device).view(1, 3, 1, 1) * 255
        return net, opt, mean, std

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bench(channels_last: bool, dtype: torch.dtype | None, pipelined: bool) -> float:
        c = cfg.with_overrides({"runtime.channels_last": channels_last})
        net, opt, mean, std = net_for(channels_last)
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and dtype == torch.float16)
        ac = (torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None
              else torch.autocast(device_type=device.type, enabled=False))
        for b in batches[:args.warmup]:
            _step(net, b, c, mean, std, device, ac, opt, scaler)
        sync()
        t0 = time.perf_counter()
        if pipelined:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(make, 1000)
                for i in range(args.steps):
                    b = pending.result()
                    pending = pool.submit(make, 1001 + i)
                    _step(net, b, c, mean, std, device, ac, opt, scaler)
        else:
            for b in batches[args.warmup:]:
                _step(net, b, c, mean, std, device, ac, opt, scaler)
        sync()
        return per_step * args.steps / (time.perf_counter() - t0)

    fp32 = bench(False, None, False)
    lib = bench(True, amp, False)
    e2e = bench(True, amp, True)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    out = {"device": str(device), "device_name": dev_name, "threads": torch.get_num_threads(),
           "batch_pairs": cfg.data.batch_pairs, "images_per_step": per_step,
           "batch_preparation_s": round(prep_s, 3), "precision": {None: "fp32", torch.bfloat16: "bf16",
                                                                  torch.float16: "fp16"}[amp],
           "network_fp32_images_per_s": round(fp32, 1), "network_images_per_s": round(lib, 1),
           "end_to_end_images_per_s": round(e2e, 1)}
    print(f"training throughput on {device} ({dev_name}, {out['threads']} threads), {per_step} images per step:")
    print(f"  network step, fp32 NCHW            {fp32:8.1f} img/s   1.00x")
    print(f"  network step, channels_last+{out['precision']:<5}  {lib:8.1f} img/s   {lib / fp32:.2f}x")
    print(f"  end to end (batches made alongside) {e2e:8.1f} img/s   {e2e / fp32:.2f}x")
    print(f"  one batch takes {prep_s * 1000:.0f} ms to make on one thread")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
