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

import numpy as np
import torch
import torch.nn.functional as F

from brandguard.backbones import LoadedBackbone, load_backbone

__all__ = ["Embedder", "resolve_device", "resolve_precision"]


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
        self.net = backbone.net.to(self.device).eval().to(memory_format=torch.channels_last)
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
