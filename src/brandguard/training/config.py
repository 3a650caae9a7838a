"""Typed configuration of ``brandguard train`` (``configs/finetune.yaml``), overridable with dotted keys.

Example:
    >>> from brandguard.training.config import TrainConfig
    >>> cfg = TrainConfig().with_overrides({"optim.epochs": 2, "data.batch_pairs": 4})
    >>> cfg.optim.epochs, cfg.data.batch_pairs
    (2, 4)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brandguard.config import _build, _dotted_keys, load_yaml_mapping
from brandguard.errors import DataError
from brandguard.training.edits import check_edit_weights

__all__ = ["DataConfig", "GuardConfig", "LossConfig", "ModelConfig", "OptimConfig", "TrainConfig", "TrainRuntime"]


@dataclass(frozen=True)
class ModelConfig:
    """What is trained.

    Attributes:
        backbone: registry name of the starting backbone (packaged ImageNet weights).
        checkpoint: optional starting weights instead (``.safetensors`` or an exported run directory).
        local_dim: dimension of the learned local descriptors (the ``learned`` comparison channel).
        local_hidden: width of the local projection head.
        freeze_blocks: the stem and this many first blocks of the backbone stay frozen (0: train all).
        freeze_bn: keep every BatchNorm in inference mode (small batches: keeps the ImageNet statistics).
    """

    backbone: str = "efficientnet_lite0"
    checkpoint: str | None = None
    local_dim: int = 32
    local_hidden: int = 128
    freeze_blocks: int = 2
    freeze_bn: bool = True


@dataclass(frozen=True)
class DataConfig:
    """How training pairs are made from the reference photos.

    Attributes:
        canonical_size: side of the aligned frame the references are warped into (as the index does).
        crop: side of the random windows of that frame the local loss is computed on (same scale as at
            scoring time, only a window of it).
        global_size: side the whole aligned frame is resized to for the global vector (as at scoring time).
        batch_pairs: pairs (two photos of one product, one of them possibly edited) per step.
        edit_probability: share of pairs whose second photo gets a counterfeit-style edit.
        edit_weights: relative weight of each edit type (names of ``brandguard.training.edits.EDIT_NAMES``;
            missing types weigh 1; empty: all equally likely), e.g. ``{packaging_color: 3}`` to train more
            on the edits a brand suffers from.
        occluder_probability: share of pairs whose second photo gets something on top of the package
            (finger, price sticker, object, glare, shadow), which the occlusion output learns to find.
        min_photos_per_product: products with fewer aligned reference photos stop training with an error.
        max_photos_per_product: at most this many references of a product are used.
        workers: threads preparing batches.
    """

    canonical_size: int = 384
    crop: int = 192
    global_size: int = 224
    batch_pairs: int = 8
    edit_probability: float = 0.6
    edit_weights: dict[str, float] = field(default_factory=dict)
    occluder_probability: float = 0.4
    min_photos_per_product: int = 2
    max_photos_per_product: int = 16
    workers: int = 2


@dataclass(frozen=True)
class LossConfig:
    """The two losses.

    Attributes:
        positive_margin: unchanged places of two authentic photos should be closer than this (1 - cosine).
        negative_margin: edited places should be farther than this.
        edited_weight: weight of the edited places against the unchanged ones.
        occlusion_weight: weight of the occlusion loss (binary cross-entropy per cell).
        global_weight: weight of the supervised contrastive loss on global vectors (0 turns it off).
        temperature: temperature of that loss.
    """

    positive_margin: float = 0.05
    negative_margin: float = 0.5
    edited_weight: float = 1.0
    occlusion_weight: float = 0.5
    global_weight: float = 0.2
    temperature: float = 0.1


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule (AdamW, linear warmup then cosine decay).

    Attributes:
        epochs: passes; each is ``steps_per_epoch`` steps (a checkpoint and a validation after each).
        steps_per_epoch: optimisation steps per epoch.
        lr: learning rate of the new local head.
        backbone_lr: learning rate of the unfrozen backbone blocks.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warmup from 0.
        min_lr_ratio: the cosine ends at this fraction of the learning rates.
        grad_clip: clip the gradient norm (0: off).
    """

    epochs: int = 6
    steps_per_epoch: int = 150
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0


@dataclass(frozen=True)
class GuardConfig:
    """The regression guard (pretrained vs fine-tuned on the validation photos).

    Attributes:
        metric: what picks the best checkpoint and decides "worse": ``tpr_at_1pct_fpr`` or ``auroc``.
        tolerance: the fine-tuned model is refused when its metric is below the pretrained one minus this,
            or when its brand top-1 is lower (unless ``--force``).
        validate_every: score the validation photos after every this many epochs (and after the last).
    """

    metric: str = "tpr_at_1pct_fpr"
    tolerance: float = 0.0
    validate_every: int = 2


@dataclass(frozen=True)
class TrainRuntime:
    """Where training runs.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        precision: ``auto`` (fp16/bf16 autocast on CUDA, bf16 on CPUs that have it), ``fp32``, ``bf16``.
        channels_last: channels-last memory format.
        threads: torch CPU threads (0: torch's default).
    """

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    threads: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    runtime: TrainRuntime = field(default_factory=TrainRuntime)

    def __post_init__(self) -> None:
        problems = []
        if self.data.crop % 32 or self.data.canonical_size % 32 or self.data.crop > self.data.canonical_size:
            problems.append(f"data.crop ({self.data.crop}) and data.canonical_size ({self.data.canonical_size}) "
                            "must be multiples of 32 with crop <= canonical_size")
        if self.data.batch_pairs < 2:
            problems.append(f"data.batch_pairs must be at least 2, got {self.data.batch_pairs}")
        if not 0.0 <= self.data.edit_probability <= 1.0:
            problems.append(f"data.edit_probability must be within 0..1, got {self.data.edit_probability}")
        if not isinstance(self.data.edit_weights, Mapping):
            problems.append(f"data.edit_weights must map edit names to weights, got {self.data.edit_weights!r}")
        else:
            try:
                check_edit_weights(self.data.edit_weights)
            except DataError as e:
                problems.append(f"data.edit_weights: {e}")
        if self.optim.epochs < 1 or self.optim.steps_per_epoch < 1:
            problems.append("optim.epochs and optim.steps_per_epoch must be at least 1")
        if self.guard.validate_every < 1:
            problems.append("guard.validate_every must be at least 1")
        if self.guard.metric not in ("tpr_at_1pct_fpr", "auroc"):
            problems.append(f"guard.metric must be tpr_at_1pct_fpr or auroc, got {self.guard.metric!r}")
        if self.data.min_photos_per_product < 2:
            problems.append("data.min_photos_per_product must be at least 2 (a pair needs two photos)")
        if problems:
            raise DataError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """``sha256:<hex>`` of the resolved configuration (recorded in the exported model)."""
        return "sha256:" + hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainConfig:
        return _build(cls, data or {}, "training config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(load_yaml_mapping(path, "training config", "configs/finetune.yaml"))

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """A copy with dotted keys replaced, e.g. ``{"optim.epochs": 2}`` (``seed`` has no section)."""
        data = self.to_dict()
        for key, value in overrides.items():
            if key == "seed":
                data["seed"] = int(value)
                continue
            section, _, name = key.partition(".")
            if not isinstance(data.get(section), dict) or name not in data[section]:
                keys = ["seed"] + _dotted_keys({k: v for k, v in data.items() if isinstance(v, dict)})
                raise DataError(f"unknown training config key {key!r}; known keys: {', '.join(keys)}")
            data[section][name] = value
        return TrainConfig.from_dict(data)

    def save_yaml(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
