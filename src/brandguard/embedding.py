"""Batched feature extraction: a global descriptor and patch features, on CPU or CUDA.

Images enter as uint8 RGB arrays; preprocessing (mean/std) comes from the backbone spec. The network
runs in eval mode without autograd, channels-last, in bfloat16 autocast where the CPU supports it (or
fp16/bf16 on CUDA), which keeps the figures (see scripts/benchmark.py) at several times the fp32 speed.

Example:
    >>> import numpy as np
    >>> from brandguard.embedding import Embedder
    >>> emb = Embedder.from_name("efficientnet_lite0", device="cpu")
    >>> g, local = emb.embed(np.zeros((2, 128, 128, 3), np.uint8))
    >>> g.shape[0], local.shape[0]
    (2, 2)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from brandguard.backbones import LoadedBackbone, load_backbone

__all__ = ["Embedder", "fold_batchnorm", "resolve_device", "resolve_precision"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from brandguard.errors import DeviceError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r} was asked for but this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None means plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        from brandguard.errors import ConfigError

        raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else None
    except AttributeError:  # pragma: no cover - older torch
        return None


_Module = TypeVar("_Module", bound=torch.nn.Module)


def fold_batchnorm(net: _Module, tolerance: float = 1e-3) -> _Module:
    """An inference copy of ``net`` with every batch norm that directly follows a convolution folded into it.

    In eval mode a batch norm is a per-channel affine map, so it is folded into the weights and bias of the
    convolution registered just before it (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`); timm's
    ``BatchNormAct2d`` keeps its activation. A memory pass less per layer: EfficientNet-Lite0 at 224 px ran
    53 -> 37 ms an image on one CPU core, normalised global vectors equal to 1e-6. The copy is checked on a seeded
    random image against ``net`` (outputs, and the local head's when there is one); where an architecture does
    not fold as expected (a batch norm that does not act on the convolution before it), ``net`` is returned.

    Args:
        net: a module in eval mode (a :class:`~brandguard.backbones.FeatureNet` or any module returning
            tensors, or tuples and lists of them); it is not changed.
        tolerance: largest difference of any output accepted, relative to the output's largest magnitude.

    Returns:
        the folded copy, or ``net`` itself.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
        >>> type(fold_batchnorm(net)[1]).__name__
        'Identity'
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = copy.deepcopy(net).eval()
    done = 0
    with torch.no_grad():
        for parent in list(folded.modules()):
            previous: torch.nn.Module | None = None
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d) and isinstance(previous, torch.nn.Conv2d) \
                        and child.running_mean is not None and child.running_var is not None \
                        and previous.out_channels == child.num_features:
                    previous.weight, previous.bias = fuse_conv_bn_weights(
                        previous.weight, previous.bias, child.running_mean, child.running_var, child.eps,
                        child.weight, child.bias)
                    after = [m for m in (getattr(child, "drop", None), getattr(child, "act", None))
                             if isinstance(m, torch.nn.Module)]  # timm's BatchNormAct2d: dropout, activation
                    setattr(parent, name, torch.nn.Sequential(*after) if after else torch.nn.Identity())
                    done += 1
                previous = child
    if not done:
        return net
    device = next((t.device for t in net.parameters()), torch.device("cpu"))
    probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)

    def flat(out: object) -> list[torch.Tensor]:
        if isinstance(out, torch.Tensor):
            return [out.float()]
        return [t for o in out for t in flat(o)] if isinstance(out, (tuple, list)) else []  # type: ignore[attr-defined]

    try:
        with torch.inference_mode():
            pairs = list(zip(flat(net(probe)), flat(folded(probe))))
            if getattr(net, "local_head", None) is not None:
                pairs += list(zip(flat(net.local(probe)), flat(folded.local(probe))))  # type: ignore[operator]
    except (RuntimeError, TypeError, ValueError):
        return net
    same = bool(pairs) and all(a.shape == b.shape and float((a - b).abs().max()) <= tolerance * max(
        float(a.abs().max()), 1e-6) for a, b in pairs)
    return folded if same else net


def _check_batch(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")


class Embedder:
    """Runs a backbone over batches of images.

    Args:
        backbone: a loaded backbone (see :func:`brandguard.backbones.load_backbone`).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        batch_size: images per forward pass.
    """

    def __init__(self, backbone: LoadedBackbone, device: str = "auto", precision: str = "auto",
                 batch_size: int = 32) -> None:
        self.backbone = backbone
        self.spec = backbone.spec
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.batch_size = int(batch_size)
        # the network as it runs: a copy with its batch norms folded into the convolutions (backbone.net is kept)
        self.net = fold_batchnorm(backbone.net.to(self.device).eval()).to(memory_format=torch.channels_last)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._local_dim: int | None = None

    @classmethod
    def from_name(cls, name: str = "efficientnet_lite0", checkpoint: str | None = None, **kwargs: object) -> Embedder:
        """Load a backbone by registry name and wrap it."""
        return cls(load_backbone(name, checkpoint), **kwargs)  # type: ignore[arg-type]

    @property
    def weights_digest(self) -> str:
        return self.backbone.weights_digest

    @property
    def has_local_head(self) -> bool:
        """Whether the backbone carries trained local descriptors (the ``learned`` comparison channel)."""
        return self.backbone.net.local_head is not None

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    def _batches(self, images: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(images), self.batch_size):
            yield images[start:start + self.batch_size]

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global vectors and patch features of same-sized images.

        Args:
            images: ``(N, H, W, 3)`` uint8 RGB, H and W multiples of 8.

        Returns:
            ``(global, local)``: ``(N, D)`` float32 L2-normalised vectors, and ``(N, H/8, W/8, C)`` float16
            patch features (each stage L2-normalised per location, deeper stages upsampled to stride 8,
            concatenated, then averaged over 3x3 neighbourhoods as in PatchCore).
        """
        _check_batch(images)
        globals_, locals_ = [], []
        for chunk in self._batches(images):
            x = self._to_tensor(chunk)
            with self._autocast():
                g, maps = self.net(x)
            g = F.normalize(g.float(), dim=1)
            size = maps[0].shape[-2:]
            parts = []
            for m in maps:
                m = F.normalize(m.float(), dim=1)
                if m.shape[-2:] != size:
                    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                parts.append(m)
            loc = torch.cat(parts, dim=1) / np.sqrt(len(parts))
            loc = F.avg_pool2d(loc, 3, stride=1, padding=1, count_include_pad=False)
            globals_.append(g.cpu().numpy())
            locals_.append(loc.permute(0, 2, 3, 1).to(torch.float16).cpu().numpy())
        return np.concatenate(globals_), np.concatenate(locals_)

    @torch.inference_mode()
    def embed_local(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Trained local descriptors and occlusion of same-sized aligned crops (needs a fine-tuned backbone).

        Args:
            images: ``(N, H, W, 3)`` uint8 RGB, H and W multiples of 8.

        Returns:
            ``(descriptors, occlusion)``: ``(N, H/8, W/8, D)`` float16 L2-normalised per location, and
            ``(N, H/8, W/8)`` float16 probabilities that something lies on top of the package there.

        Raises:
            WeightsError: the backbone has no local head (see :attr:`has_local_head`).
        """
        _check_batch(images)
        out, occ = [], []
        for chunk in self._batches(images):
            x = self._to_tensor(chunk)
            with self._autocast():
                f, o = self.net.local(x)
            out.append(F.normalize(f.float(), dim=1).permute(0, 2, 3, 1).to(torch.float16).cpu().numpy())
            occ.append(torch.sigmoid(o.float()).to(torch.float16).cpu().numpy())
        return np.concatenate(out), np.concatenate(occ)

    @torch.inference_mode()
    def embed_global(self, images: Sequence[np.ndarray], size: int | None = None) -> np.ndarray:
        """Whole-image global vectors: each image resized (aspect ignored) to the backbone's input size.

        Returns:
            ``(N, D)`` float32, L2-normalised.
        """
        import cv2

        side = size or self.spec.input_size
        batch = np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images])
        out = []
        for chunk in self._batches(batch):
            x = self._to_tensor(chunk)
            with self._autocast():
                g, _ = self.net(x)
            out.append(F.normalize(g.float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
