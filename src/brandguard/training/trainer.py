"""``brandguard train``: fine-tune the backbone on a brand's reference photos, guarded and exported.

What happens, in order:

1. the references are aligned by a pretrained index (:class:`~brandguard.training.data.AlignedReferences`);
2. with ``--val LABELS.csv``, the pretrained pipeline is scored on the validation photos (the baseline);
3. the backbone gets a local head (:class:`~brandguard.backbones.LocalHead`) and is trained on pairs of
   aligned authentic photos, one of them often given a counterfeit-style edit: a per-cell change
   contrastive loss on the local descriptors plus a supervised contrastive loss on the global vectors
   (:mod:`brandguard.training.losses`); AdamW, linear warmup then cosine, optional frozen early blocks,
   mixed precision and channels-last (CUDA; bfloat16 on CPUs that have it);
4. each epoch writes a checkpoint (``RUN_DIR/last``, resumable with ``--resume``), logs to
   ``RUN_DIR/metrics.csv`` and, with validation photos, scores them with the fine-tuned pipeline (the
   evaluation code of :mod:`brandguard.evaluation`) to keep the best epoch;
5. the regression guard compares the best epoch with the pretrained baseline: a model that detects
   worse, or names the brand less often, is refused (no ``RUN_DIR/best``) unless ``force``;
6. ``RUN_DIR/best`` holds ``model.safetensors`` and ``config.json`` (backbone, preprocessing,
   dimensions, digests of the training config, of the data and of the weights, the figures), which
   ``brandguard index build --checkpoint RUN_DIR/best`` uses.

Example:
    >>> from brandguard.training import train
    >>> result = train("refs/", "runs/ft", val="val/labels.csv")   # doctest: +SKIP
    >>> result.after["tpr_at_1pct_fpr"] - result.before["tpr_at_1pct_fpr"]   # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from brandguard import __version__
from brandguard.backbones import LoadedBackbone, LocalHead, file_digest, load_backbone
from brandguard.config import Config
from brandguard.embedding import Embedder, resolve_device, resolve_precision
from brandguard.errors import BrandguardError, DataError
from brandguard.training.config import TrainConfig
from brandguard.training.data import AlignedReferences, PairBatch
from brandguard.training.losses import (
    cell_masks,
    change_contrastive_loss,
    neighbourhood_distance,
    occlusion_loss,
    supcon_loss,
)

__all__ = ["GuardError", "PipelineEvaluator", "TrainResult", "train"]

_METRICS_COLUMNS = ("time", "epoch", "step", "split", "loss", "unchanged", "edited", "occlusion", "global", "lr",
                    "images_per_second", "auroc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "brand_top1")


class GuardError(BrandguardError):
    """The fine-tuned model is worse than the pretrained one on the validation photos (see ``--force``)."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: the run directory.
        best: the exported model directory (``RUN_DIR/best``), or None when the guard refused it.
        before, after: validation figures of the pretrained and of the exported fine-tuned pipeline
            (empty without validation photos).
        history: one dict per epoch (loss, validation figures).
        accepted: whether the guard accepted the model (True without validation photos: unguarded).
        images_per_second: training throughput (images through the network per second).
    """

    run_dir: Path
    best: Path | None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    accepted: bool = True
    images_per_second: float = 0.0


# ----------------------------------------------------------------------------------------- validation
class PipelineEvaluator:
    """Scores labelled validation photos with the whole pipeline, for any backbone, cheaply.

    The photos are decoded and their keypoints found once; the product localisation does not depend on the
    backbone, so each evaluation only re-embeds the references (:meth:`ReferenceIndex.with_backbone`) and
    compares. With ``calibration`` photos (authentic, never references) each pipeline is calibrated on them
    first, as a deployed one would be (channel fusion and thresholds); otherwise the references'
    leave-one-out calibration is used. Figures come from :func:`brandguard.evaluation.evaluate_rows` on the
    raw fused score.
    """

    def __init__(self, index: Any, labels_csv: str | Path, workers: int = 2,
                 calibration: str | Path | None = None) -> None:
        from brandguard.images import load_image
        from brandguard.localization import detect_keypoints
        from brandguard.references import read_labels

        items = [i for i in read_labels(labels_csv) if i.label in ("authentic", "counterfeit")]
        n_auth = sum(i.label == "authentic" for i in items)
        n_fake = len(items) - n_auth
        if n_auth < 10 or n_fake < 10:
            raise DataError(f"validation labels {labels_csv} need at least 10 authentic and 10 counterfeit photos "
                            f"of the trained products; got {n_auth} and {n_fake}")
        self.index, self.items = index, items
        self.calibration: list[str] = []
        if calibration is not None:
            from brandguard.images import list_images

            src = Path(calibration)
            if src.is_file() or (src / "labels.csv").is_file():
                self.calibration = [str(i.path) for i in read_labels(src) if i.label == "authentic"]
            else:
                self.calibration = [str(p) for p in list_images(src)]
        loc = index.config.localization

        def prep(item: Any) -> Any:
            img = load_image(item.path, max_side=loc.max_side)
            return img, detect_keypoints(img, loc.keypoint_side, loc.query_keypoints)

        with ThreadPoolExecutor(max(1, workers)) as ex:
            self.prepared = list(ex.map(prep, items))

    def evaluate(self, embedder: Embedder | None = None) -> dict[str, Any]:
        """Figures of the pretrained pipeline (``embedder=None``) or of one with ``embedder``."""
        from brandguard.detector import Detector
        from brandguard.evaluation import evaluate_rows

        index = self.index if embedder is None else self.index.with_backbone(embedder)
        det = Detector(index)
        if self.calibration:
            det.calibrate(self.calibration)
        preds = det._score_prepared([str(i.path) for i in self.items], self.prepared, "record")
        rows = [{"label": i.label, "brand": i.brand, "product": i.product, **i.extra, "verdict": p.verdict,
                 "score": p.raw_score, "pred_brand": p.brand, "pred_product": p.product}
                for i, p in zip(self.items, preds)]
        m = evaluate_rows(rows)
        tpr = m["tpr_at_fpr"]
        return {"auroc": m["auroc"], "tpr_at_1pct_fpr": tpr["0.01"]["tpr"], "tpr_at_5pct_fpr": tpr["0.05"]["tpr"],
                "brand_top1": m["brand_accuracy"], "product_top1": m["product_accuracy"],
                "per_manipulation_auroc": {k: v.get("auroc") for k, v in m["per_manipulation"].items()}}


# ----------------------------------------------------------------------------------------- model
def _freeze(net: torch.nn.Module, blocks: int, freeze_bn: bool) -> None:
    model = net.model
    frozen = [model.conv_stem, model.bn1] + list(model.blocks[:blocks]) if blocks > 0 else []
    for mod in frozen:
        for p in mod.parameters():
            p.requires_grad_(False)
    # the global head is not trained when its loss is off; conv_head/bn2 stay trainable otherwise
    if freeze_bn:
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.eval()


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _data_digest(refs: AlignedReferences) -> str:
    h = hashlib.sha256()
    for key, paths in zip(refs.products, refs.paths):
        for p in sorted(paths):
            h.update(f"{key}\0{Path(p).name}\0{file_digest(p)}\n".encode())
    return "sha256:" + h.hexdigest()


def _embedder_of(net: torch.nn.Module, base: LoadedBackbone, device: str, precision: str) -> Embedder:
    """An inference embedder of a copy of the network being trained (in eval mode)."""
    frozen = copy.deepcopy(net).eval()
    loaded = LoadedBackbone(base.spec, frozen, _state_digest(frozen.state_dict()), "training")
    return Embedder(loaded, device=device, precision=precision)


def _to_input(x: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
              channels_last: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float()
    t = (t - mean) / std
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _lr_lambda(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


# ----------------------------------------------------------------------------------------- run dir I/O
def _save_model(net: torch.nn.Module, directory: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    meta = {**meta, "weights_digest": file_digest(tmp / "model.safetensors")}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.replace(directory)


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=_METRICS_COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in _METRICS_COLUMNS})


def _fmt(x: Any) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


def _metric(m: dict[str, Any], name: str) -> float:
    v = m.get(name)
    return float("-inf") if v is None else float(v)


# ----------------------------------------------------------------------------------------- training
def train(references: str | Path, run_dir: str | Path, config: TrainConfig | str | Path | None = None, *,
          val: str | Path | None = None, calibration: str | Path | None = None, resume: bool = False, force: bool = False, progress: bool = True,
          echo: Callable[[str], None] = print, overrides: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune on ``references`` and export to ``run_dir/best`` (see the module docstring).

    Args:
        references: ``<brand>/<product>/*.jpg`` folder or CSV manifest of authentic references.
        run_dir: where checkpoints, logs and the exported model go.
        config: a :class:`TrainConfig` or a YAML path (default: ``TrainConfig()``).
        val: labelled validation photos (``labels.csv`` with authentic and counterfeit photos of the trained
            products, never the references) for the best epoch and the regression guard.
        calibration: authentic photos (folder or labels.csv; not references, not validation photos) each
            validated pipeline is calibrated on first, as it would be when deployed.
        resume: continue from ``run_dir/last`` with the run's saved configuration (``overrides`` still apply,
            e.g. ``{"optim.epochs": 10}`` to train longer; ``config`` is ignored).
        force: export even when the guard finds the model worse than the pretrained one.
        progress: progress bars.
        echo: where the summary lines go.
        overrides: dotted config keys, e.g. ``{"optim.epochs": 2}``.

    Raises:
        DataError: too little data, an existing run directory without ``resume``, or a bad config.
        GuardError: the model got worse and ``force`` is off (the epochs stay in ``run_dir``).
    """
    cfg = config if isinstance(config, TrainConfig) else (TrainConfig.from_yaml(config) if config else TrainConfig())
    if overrides:
        cfg = cfg.with_overrides(overrides)
    run = Path(run_dir)
    state_file = run / "last" / "trainer_state.pt"
    if resume and not state_file.is_file():
        raise DataError(f"--resume: {run} holds no checkpoint to resume from ({state_file} is missing)")
    if not resume and run.exists() and any(run.iterdir()):
        raise DataError(f"run directory {run} already holds a run; pass --resume to continue it or choose another -o")
    run.mkdir(parents=True, exist_ok=True)
    if resume:
        # the run's own configuration, with explicit overrides on top (e.g. more epochs)
        cfg = TrainConfig.from_yaml(run / "config.yaml")
        if overrides:
            cfg = cfg.with_overrides(overrides)
    cfg.save_yaml(run / "config.yaml")
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.runtime.device)
    amp_dtype = resolve_precision(cfg.runtime.precision, device)

    # 1. aligned references (a pretrained index does the alignment)
    from brandguard.index import ReferenceIndex

    t0 = time.perf_counter()
    index_cfg = Config().with_overrides({"backbone.name": cfg.model.backbone, "backbone.checkpoint": cfg.model.checkpoint,
                                         "localization.canonical_size": cfg.data.canonical_size,
                                         "runtime.device": cfg.runtime.device})
    base_index = ReferenceIndex.build(references, index_cfg, progress=progress)
    refs = AlignedReferences.from_index(base_index, max_per_product=cfg.data.max_photos_per_product,
                                        min_per_product=cfg.data.min_photos_per_product)
    data_digest = _data_digest(refs)
    echo(f"training data: {len(refs)} products, {refs.n_photos} aligned reference photos "
         f"({time.perf_counter() - t0:.0f}s to align)")

    # 2. baseline on the validation photos
    evaluator = PipelineEvaluator(base_index, val, workers=cfg.data.workers, calibration=calibration) if val else None
    before: dict[str, Any] = {}
    if evaluator is not None:
        before = evaluator.evaluate(None)
        echo(f"pretrained on {len(evaluator.items)} validation photos: AUROC {_fmt(before['auroc'])}, "
             f"TPR@1%FPR {_fmt(before['tpr_at_1pct_fpr'])}, brand top-1 {_fmt(before['brand_top1'])}")

    # 3. model, optimiser, schedule
    base = load_backbone(cfg.model.backbone, cfg.model.checkpoint)
    net = base.net
    if net.local_head is None:
        net.local_head = LocalHead(net.local_channels(), cfg.model.local_dim, cfg.model.local_hidden)
    net = net.to(device)
    if cfg.runtime.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    _freeze(net, cfg.model.freeze_blocks, cfg.model.freeze_bn)
    head_params = list(net.local_head.parameters())
    ids = {id(p) for p in head_params}
    body_params = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    opt = torch.optim.AdamW([{"params": head_params, "lr": cfg.optim.lr},
                             {"params": body_params, "lr": cfg.optim.backbone_lr}], weight_decay=cfg.optim.weight_decay)
    total = cfg.optim.epochs * cfg.optim.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)
    mean = torch.tensor(base.spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(base.spec.std, device=device).view(1, 3, 1, 1) * 255.0

    start_epoch, history, best_metric = 0, [], [float("-inf"), float("-inf")]
    if resume:
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(run / "last" / "model.safetensors")))
        st = torch.load(str(state_file), map_location="cpu", weights_only=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch = int(st["epoch"])
        history = json.loads((run / "last" / "history.json").read_text(encoding="utf-8"))
        best_metric = [float(v) for v in st["best_metric"]]
        echo(f"resumed from {run / 'last'} after epoch {start_epoch}")
        _freeze(net, cfg.model.freeze_blocks, cfg.model.freeze_bn)

    meta_base = {"format": "brandguard-finetuned", "brandguard_version": __version__, "backbone": base.spec.name,
                 "timm_name": base.spec.timm_name,
                 "preprocessing": {"mean": list(base.spec.mean), "std": list(base.spec.std),
                                   "input_size": base.spec.input_size},
                 "dimensions": {"global": int(net.model.num_features), "local": net.local_head.dim, "local_stride": 8},
                 "local_head": net.local_head.describe(), "training_config_digest": cfg.digest(),
                 "data_digest": data_digest, "started_from": base.weights_source,
                 "products": refs.products}
    metrics_csv = run / "metrics.csv"
    autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                else torch.autocast(device_type=device.type, enabled=False))

    def batch_for(step: int) -> PairBatch:
        rng = np.random.default_rng([cfg.seed, step])
        return refs.batch(rng, cfg.data.batch_pairs, cfg.data.crop, cfg.data.global_size, cfg.data.edit_probability,
                          cfg.data.occluder_probability, edit_weights=cfg.data.edit_weights)

    images_per_step = 2 * cfg.data.batch_pairs * (2 if cfg.loss.global_weight > 0 else 1)
    rate = 0.0
    pool = ThreadPoolExecutor(1)
    try:
        for epoch in range(start_epoch, cfg.optim.epochs):
            first = epoch * cfg.optim.steps_per_epoch
            steps = range(first, first + cfg.optim.steps_per_epoch)
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(steps), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="step")
            pending = pool.submit(batch_for, steps[0])
            sums = np.zeros(5)
            t_epoch, n_img = time.perf_counter(), 0
            for step in steps:
                b = pending.result()
                if step + 1 < steps.stop:
                    pending = pool.submit(batch_for, step + 1)
                loss, parts = _step(net, b, cfg, mean, std, device, autocast, opt, scaler)
                sched.step()
                sums += np.array([loss, *parts])
                n_img += images_per_step
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}")
                    bar.update(1)
                if (step + 1) % 10 == 0 or step + 1 == steps.stop:
                    el = time.perf_counter() - t_epoch
                    _append_metrics(metrics_csv, {"time": round(time.time(), 1), "epoch": epoch + 1, "step": step + 1,
                                                  "split": "train", "loss": round(loss, 5), "unchanged": round(parts[0], 5),
                                                  "edited": round(parts[1], 5), "occlusion": round(parts[2], 5),
                                                  "global": round(parts[3], 5),
                                                  "lr": sched.get_last_lr()[0], "images_per_second": round(n_img / el, 2)})
            if bar is not None:
                bar.close()
            rate = n_img / (time.perf_counter() - t_epoch)
            mean_parts = sums / len(steps)
            record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(mean_parts[0]),
                                      "unchanged": float(mean_parts[1]), "edited": float(mean_parts[2]),
                                      "occlusion": float(mean_parts[3]), "global": float(mean_parts[4]),
                                      "images_per_second": round(rate, 2)}
            _save_model(net, run / f"epoch_{epoch + 1:03d}", {**meta_base, "epoch": epoch + 1})
            last_epoch = epoch + 1 == cfg.optim.epochs
            if evaluator is not None and ((epoch + 1) % cfg.guard.validate_every == 0 or last_epoch):
                net.eval()
                figs = evaluator.evaluate(_embedder_of(net, base, cfg.runtime.device, cfg.runtime.precision))
                net.train()
                _freeze(net, cfg.model.freeze_blocks, cfg.model.freeze_bn)
                record["val"] = figs
                _append_metrics(metrics_csv, {"time": round(time.time(), 1), "epoch": epoch + 1,
                                              "step": (epoch + 1) * cfg.optim.steps_per_epoch, "split": "val",
                                              **{k: figs[k] for k in ("auroc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr",
                                                                      "brand_top1")}})
                # ties (frequent for TPR at 1% FPR on a few hundred photos) go to the better AUROC
                value = [_metric(figs, cfg.guard.metric), _metric(figs, "auroc")]
                better = value > best_metric
            elif evaluator is None:
                value, better = [float(epoch), 0.0], True
            else:
                value, better = best_metric, False
            if better:
                best_metric = value
                _save_model(net, run / "candidate", {**meta_base, "epoch": epoch + 1, "validation": record.get("val")})
            history.append(record)
            echo(f"epoch {epoch + 1}: loss {record['loss']:.4f} (unchanged {record['unchanged']:.4f}, edited "
                 f"{record['edited']:.4f}, occlusion {record['occlusion']:.4f}, global {record['global']:.4f}), "
                 f"{rate:.1f} img/s"
                 + (f"; val AUROC {_fmt(record['val']['auroc'])}, TPR@1%FPR {_fmt(record['val']['tpr_at_1pct_fpr'])}"
                    if "val" in record else ""))
            # resumable state, written last so a crash mid-epoch resumes from the previous one
            _save_model(net, run / "last", {**meta_base, "epoch": epoch + 1})
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                        "best_metric": best_metric}, str(run / "last" / "trainer_state.pt"))
            (run / "last" / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
    finally:
        pool.shutdown(wait=True)

    # 5. regression guard and export
    cand = run / "candidate"
    cand_meta = json.loads((cand / "config.json").read_text(encoding="utf-8"))
    after = cand_meta.get("validation") or {}
    result = TrainResult(run, None, before, after, history, True, round(rate, 2))
    if evaluator is not None:
        tol = cfg.guard.tolerance
        worse_metric = _metric(after, cfg.guard.metric) < _metric(before, cfg.guard.metric) - tol
        worse_brand = _metric(after, "brand_top1") < _metric(before, "brand_top1")
        result.accepted = not (worse_metric or worse_brand)
        echo("")
        echo(f"{'validation':<22}{'pretrained':>12}{'fine-tuned':>12}")
        for k in ("auroc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "brand_top1", "product_top1"):
            echo(f"{k:<22}{_fmt(before.get(k)):>12}{_fmt(after.get(k)):>12}")
        if not result.accepted:
            why = (f"{cfg.guard.metric} {_fmt(after.get(cfg.guard.metric))} < pretrained "
                   f"{_fmt(before.get(cfg.guard.metric))}" if worse_metric else
                   f"brand top-1 {_fmt(after.get('brand_top1'))} < pretrained {_fmt(before.get('brand_top1'))}")
            if not force:
                raise GuardError(f"the fine-tuned model is worse than the pretrained one on the validation photos "
                                 f"({why}); not exported. Its epochs are in {run}; pass --force to export anyway")
            echo(f"WARNING: exporting a model worse than the pretrained one ({why}) because --force was given")
    else:
        echo("no validation photos (--val): the last epoch is exported without the regression guard")
    best = run / "best"
    shutil.rmtree(best, ignore_errors=True)
    shutil.copytree(cand, best)
    meta = json.loads((best / "config.json").read_text(encoding="utf-8"))
    meta.update({"pretrained_validation": before or None, "guard": {"accepted": result.accepted, "forced": bool(force and not result.accepted),
                                                                      "metric": cfg.guard.metric} if evaluator else None})
    (best / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    result.best = best
    echo(f"exported {best} (epoch {meta['epoch']}); use it with: brandguard index build REFS -o INDEX --checkpoint {best}")
    return result


def _step(net: torch.nn.Module, b: PairBatch, cfg: TrainConfig, mean: torch.Tensor, std: torch.Tensor,
          device: torch.device, autocast: Any, opt: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler) -> tuple[float, tuple[float, float, float, float]]:
    cl = cfg.runtime.channels_last
    x = _to_input(np.concatenate([b.ref, b.query]), mean, std, device, cl)
    P = len(b.ref)
    with autocast:
        f, o = net.local(x)
    f, o = f.float(), o.float()
    d = neighbourhood_distance(f[P:], f[:P])
    stride = b.ref.shape[1] // f.shape[-1]
    changed = torch.from_numpy(b.changed).to(device)
    occluded = torch.from_numpy(b.occluded).to(device)
    valid = torch.from_numpy(b.ref_valid & b.query_valid).to(device)
    # occluded places say nothing about the print: out of the descriptor loss, into the occlusion loss
    unchanged, edited = cell_masks(changed | occluded, valid, stride)
    _, edited_only = cell_masks(changed, valid & ~occluded, stride)
    loss, pos, neg = change_contrastive_loss(d, unchanged, edited & edited_only, cfg.loss.positive_margin,
                                             cfg.loss.negative_margin, cfg.loss.edited_weight)
    o_loss = occlusion_loss(o[P:], occluded, torch.from_numpy(b.query_valid).to(device), stride)
    loss = loss + cfg.loss.occlusion_weight * o_loss
    g_loss = torch.zeros((), device=device)
    if cfg.loss.global_weight > 0:
        xg = _to_input(np.concatenate([b.ref_full, b.query_full]), mean, std, device, cl)
        with autocast:
            g, _ = net(xg)
        z = F.normalize(g.float(), dim=1)
        lab = torch.from_numpy(b.labels).to(device)
        qlab = torch.where(torch.from_numpy(b.edited).to(device), -1 - lab, lab)
        g_loss = supcon_loss(z, torch.cat([lab, qlab]), cfg.loss.temperature)
        loss = loss + cfg.loss.global_weight * g_loss
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.optim.grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([p for grp in opt.param_groups for p in grp["params"]], cfg.optim.grad_clip)
    scaler.step(opt)
    scaler.update()
    return float(loss.detach()), (float(pos), float(neg), float(o_loss.detach()), float(g_loss.detach()))
