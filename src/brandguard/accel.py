"""Where scoring's geometry runs: OpenCV on the CPU, or kornia on a GPU.

Scoring a listing photo spends most of its time outside the network (README, "Throughput"): SIFT keypoints
(a third of the CPU time), RANSAC homographies and the warp of the product into the canonical frame. On a GPU
machine the network alone on the GPU leaves those stages on the CPU cores, which then set the rate. A
:class:`Geometry` is the three stages behind one interface:

- :class:`OpenCVGeometry` (the default on a CPU): :func:`~brandguard.localization.detect_keypoints`
  (OpenCV SIFT), :func:`~brandguard.localization.estimate_homography` (OpenCV RANSAC) and
  :func:`~brandguard.localization.warp_to_canonical` (``cv2.warpPerspective``).
- :class:`KorniaGeometry` (the default with ``runtime.device: cuda`` when the ``gpu`` extra is installed,
  ``pip install "brandguard[gpu]"``): kornia's DoG scale-space SIFT with the pyramid descriptor in OpenCV's
  descriptor layout (``kornia.feature.SIFTFeatureScaleSpace``), photos of one size detected together in one
  batch; kornia's RANSAC (``kornia.geometry.ransac.RANSAC``: MSAC score, Levenberg-Marquardt local
  optimisation, the same sample budget and confidence as OpenCV's, seeded) and
  ``kornia.geometry.transform.warp_perspective``. It runs on whatever device it is given, so the tests run
  it on CPU tensors.

The index's reference keypoints always come from OpenCV (``index build`` is unchanged), so the kornia path
matches kornia query descriptors against OpenCV reference descriptors. How close the two paths are (measured
on the demo listings, README, "On a GPU"): the same product, the product's outline within a few pixels, the
same verdict on most photos; the tests hold each stage to a stated tolerance. Chosen by ``runtime.geometry``
(``auto``, ``opencv`` or ``kornia``; CLI ``--geometry``).

Example:
    >>> import numpy as np
    >>> from brandguard.accel import OpenCVGeometry
    >>> geo = OpenCVGeometry()
    >>> [len(kp) for kp in geo.detect_batch([np.zeros((64, 64, 3), np.uint8)], side=64, n=100)]
    [0]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from brandguard.config import GEOMETRIES
from brandguard.errors import ConfigError
from brandguard.localization import (
    RANSAC_CONFIDENCE,
    RANSAC_ITERS,
    REPEAT_SHARE,
    Keypoints,
    _degenerate,
    detect_keypoints,
    detection_copy,
    estimate_homography,
    repeated_keypoints,
    warp_to_canonical,
)

__all__ = ["GEOMETRIES", "Geometry", "KorniaGeometry", "OpenCVGeometry", "geometry_name", "kornia_available",
           "libraries_on_one_core", "resolve_geometry"]

_ONE_CORE = threading.Lock()
_ONE_CORE_STATE: dict[str, Any] = {"users": 0}


@contextmanager
def libraries_on_one_core() -> Iterator[None]:
    """While it is active, OpenBLAS (numpy's matrix products) and OpenCV run each call on the calling thread.

    For work that runs its own threads side by side (the index build's products, scoring's comparisons): each
    library's pool on top of them only adds threads that spin while they wait. On 2 idle cores the demo's 162
    references took 104-117 CPU seconds to build with the libraries' pools against 77-86 without, for the same
    index (README, "Building the index"). The settings are process-wide: the first caller sets them and the last one to leave restores them
    (calls from several threads at once nest), so OpenCV and OpenBLAS elsewhere in this process run on one
    core meanwhile.
    """
    import cv2
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

    with _ONE_CORE:
        if _ONE_CORE_STATE["users"] == 0:
            _ONE_CORE_STATE["cv2"] = cv2.getNumThreads()
            cv2.setNumThreads(1)
            if "controller" not in _ONE_CORE_STATE:  # finding the libraries costs milliseconds: once a process
                _ONE_CORE_STATE["controller"] = ThreadpoolController()
            _ONE_CORE_STATE["blas"] = _ONE_CORE_STATE["controller"].limit(limits=1, user_api="blas")
        _ONE_CORE_STATE["users"] += 1
    try:
        yield
    finally:
        with _ONE_CORE:
            _ONE_CORE_STATE["users"] -= 1
            if _ONE_CORE_STATE["users"] == 0:
                _ONE_CORE_STATE.pop("blas").restore_original_limits()
                cv2.setNumThreads(_ONE_CORE_STATE.pop("cv2"))


def kornia_available() -> bool:
    """Whether kornia (the ``gpu`` extra) can be imported."""
    try:
        import kornia  # noqa: F401
    except ImportError:
        return False
    return True


class Geometry:
    """Keypoints, homographies and warps for scoring (see the module docstring).

    Attributes:
        name: ``opencv`` or ``kornia``.
    """

    name = "opencv"

    def detect(self, image: np.ndarray, side: int, n: int) -> Keypoints:
        """RootSIFT keypoints of one ``(H, W, 3)`` uint8 RGB photo, detected on a grey copy whose long side is
        at most ``side`` pixels, at most ``n`` of them; positions in ``image``'s pixels (see
        :func:`~brandguard.localization.detect_keypoints`)."""
        return self.detect_batch([image], side, n)[0]

    def detect_batch(self, images: Sequence[np.ndarray], side: int, n: int, workers: int = 1) -> list[Keypoints]:
        """:meth:`detect` of each photo, in order."""
        raise NotImplementedError

    def homography(self, src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
        """RANSAC homography ``src -> dst`` (``(N, 2)`` points, ``threshold`` in pixels): ``(H or None,
        (N,) bool inlier mask)``, as :func:`~brandguard.localization.estimate_homography`."""
        raise NotImplementedError

    def warp(self, image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(size, size, 3)`` uint8 canonical crop of ``image`` and its ``(size, size)`` bool valid mask,
        ``H`` mapping canonical pixels to ``image`` pixels, as :func:`~brandguard.localization.warp_to_canonical`."""
        raise NotImplementedError


class OpenCVGeometry(Geometry):
    """The CPU stages (OpenCV), each photo's keypoints on a thread of ``workers``."""

    name = "opencv"

    def detect_batch(self, images: Sequence[np.ndarray], side: int, n: int, workers: int = 1) -> list[Keypoints]:
        if workers <= 1 or len(images) <= 1:
            return [detect_keypoints(im, side, n) for im in images]
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(lambda im: detect_keypoints(im, side, n), images))

    def homography(self, src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
        return estimate_homography(src, dst, threshold)

    def warp(self, image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        return warp_to_canonical(image, H, size)


class KorniaGeometry(Geometry):
    """The stages in kornia on ``device`` (a GPU, or the CPU for tests).

    Keypoints: ``kornia.feature.SIFTFeatureScaleSpace(n, rootsift=True, descriptor_backend="pyramid",
    descriptor_layout="opencv")`` on the same grey detection copy as the OpenCV path; photos whose copies
    have one size go through together, ``batch_size`` at a time (a photo's keypoints then move by about
    1e-5 px with its batch neighbours: float rounding of batched convolutions). On CUDA, cuDNN runs the
    scale space's convolutions in TF32 unless ``torch.backends.cudnn.allow_tf32`` is False (torch's default
    is True; it is a process-wide switch, left to the caller), so keypoints move by more than on the CPU. A photo where more than
    :data:`~brandguard.localization.REPEAT_SHARE` of the keypoints repeat a background texture is detected
    again by the OpenCV path, whose texture rule this path does not have (rare: none of the demo listings).

    Homographies: ``kornia.geometry.ransac.RANSAC("homography", threshold, confidence=RANSAC_CONFIDENCE,
    max_samples=8 * RANSAC_ITERS, seed=0)``, a different estimator from OpenCV's (MSAC scoring,
    Levenberg-Marquardt refinement), so inlier counts differ by a few. OpenCV draws a sample again, without
    counting it, when its four points are not ordered alike in both images (``checkSubset``), which rejects
    most samples with an outlier; kornia counts every sample. With OpenCV's budget of
    :data:`~brandguard.localization.RANSAC_ITERS` kornia found the homography for 7 of 10 seeded match
    sets with 10% inliers (OpenCV: 10), with eight times it 9 (``tests/test_accel.py``); sets with many
    inliers stop early either way. kornia needs more inliers than a minimal sample: four matches alone give
    None (OpenCV fits them); scoring needs 36. On CUDA the seeded samples come from a CUDA generator, so
    they are not the CPU's: the tolerances of ``tests/test_accel.py`` are measured on CPU tensors.

    Warps: ``kornia.geometry.transform.warp_perspective`` (bilinear, reflected border, pixel centres at
    integers as OpenCV's) of ``H``'s inverse; the valid mask by nearest-neighbour warp of ones.

    Args:
        device: a torch device (``cuda``, ``cuda:1``, ``cpu``).
        batch_size: photos detected in one call at most.

    Raises:
        ConfigError: kornia is not installed.
    """

    name = "kornia"

    def __init__(self, device: Any = "cpu", batch_size: int = 32) -> None:
        try:
            import kornia  # noqa: F401
            import torch
        except ImportError as exc:
            raise ConfigError('runtime.geometry "kornia" needs kornia: pip install "brandguard[gpu]" '
                              '(or set runtime.geometry to opencv)') from exc
        self.torch = torch
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self._features: dict[int, Any] = {}

    def _sift(self, n: int) -> Any:
        if n not in self._features:
            from kornia.feature import SIFTFeatureScaleSpace
            self._features[n] = SIFTFeatureScaleSpace(num_features=int(n), rootsift=True, device=self.device,
                                                      descriptor_backend="pyramid", descriptor_layout="opencv").eval()
        return self._features[n]

    def detect_batch(self, images: Sequence[np.ndarray], side: int, n: int, workers: int = 1) -> list[Keypoints]:
        torch = self.torch
        copies = [detection_copy(im, side) for im in images]
        out: list[Keypoints | None] = [None] * len(images)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, (grey, _) in enumerate(copies):
            by_shape.setdefault(grey.shape, []).append(i)
        feat = self._sift(n)
        for shape, members in by_shape.items():
            if min(shape) < 16:  # too small for a scale space: nothing to find, as OpenCV finds nothing
                for i in members:
                    out[i] = detect_keypoints(images[i], side, n)
                continue
            for s in range(0, len(members), self.batch_size):
                part = members[s:s + self.batch_size]
                batch = torch.from_numpy(np.stack([copies[i][0] for i in part]))[:, None]
                with torch.inference_mode():
                    lafs, resp, desc = feat(batch.to(self.device, torch.float32) / 255.0)
                lafs, resp, desc = lafs.float().cpu().numpy(), resp.float().cpu().numpy(), desc.float().cpu().numpy()
                for j, i in enumerate(part):
                    keep = np.isfinite(resp[j]) & (resp[j] > 0) & np.isfinite(desc[j]).all(1)
                    d = desc[j][keep].astype(np.float32)
                    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
                    xy = lafs[j, keep, :, 2].astype(np.float32) / copies[i][1]
                    r = resp[j][keep].astype(np.float32)
                    order = np.argsort(-r, kind="stable")
                    kp = Keypoints(xy[order], d[order], r[order])
                    if len(kp) and repeated_keypoints(kp.desc).mean() > REPEAT_SHARE:
                        kp = detect_keypoints(images[i], side, n)  # a background texture: OpenCV's texture rule
                    out[i] = kp
        return [k for k in out if k is not None]

    def homography(self, src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
        torch = self.torch
        if len(src) < 4:
            return None, np.zeros(len(src), bool)
        from kornia.geometry.ransac import RANSAC
        ransac = RANSAC("homography", inl_th=float(threshold), confidence=RANSAC_CONFIDENCE,
                        max_samples=8 * RANSAC_ITERS, seed=0)
        a = torch.as_tensor(np.asarray(src, np.float32), device=self.device)
        b = torch.as_tensor(np.asarray(dst, np.float32), device=self.device)
        with torch.inference_mode():
            H, mask = ransac(a, b)
        H = H.double().cpu().numpy()
        mask = mask.cpu().numpy().astype(bool).ravel()
        if not mask.any() or not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
            return None, np.zeros(len(src), bool)
        return H / H[2, 2], mask

    def warp(self, image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        from kornia.geometry.transform import warp_perspective
        if _degenerate(H):
            return np.zeros((size, size, 3), np.uint8), np.zeros((size, size), bool)
        M = torch.as_tensor(np.linalg.inv(np.asarray(H, np.float64)), dtype=torch.float32, device=self.device)[None]
        grey = image.ndim == 2
        pixels = np.ascontiguousarray(image[..., None] if grey else image)
        src = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)[None].float()
        ones = torch.ones((1, 1, *image.shape[:2]), device=self.device)
        with torch.inference_mode():
            crop = warp_perspective(src, M, (size, size), mode="bilinear", padding_mode="reflection",
                                    align_corners=True)
            valid = warp_perspective(ones, M, (size, size), mode="nearest", padding_mode="zeros", align_corners=True)
        out = crop[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return np.ascontiguousarray(out[..., 0] if grey else out), valid[0, 0].cpu().numpy() > 0.5


def geometry_name(setting: str, device: Any) -> str:
    """``opencv`` or ``kornia``: what ``runtime.geometry`` ``setting`` runs on ``device`` (a torch device, or
    a configured ``runtime.device`` string; ``auto`` there means CUDA when available). Nothing is loaded and
    a missing device is not an error (the fingerprint of an index configured for ``cuda`` is read on CPU
    machines too).

    ``auto``: kornia on a CUDA device when kornia is installed, else OpenCV.

    Raises:
        ConfigError: an unknown setting.
    """
    if setting not in GEOMETRIES:
        raise ConfigError(f"runtime.geometry must be one of {', '.join(GEOMETRIES)}, got {setting!r}")
    if setting != "auto":
        return setting
    dev = str(device)
    if dev == "auto":
        import torch

        cuda = torch.cuda.is_available()
    else:
        cuda = dev.startswith("cuda")
    return "kornia" if cuda and kornia_available() else "opencv"


def resolve_geometry(setting: str, device: Any, batch_size: int = 32) -> Geometry:
    """The :class:`Geometry` for ``runtime.geometry`` on the torch ``device`` the network runs on
    (:func:`geometry_name`). ``kornia`` on a CPU device is allowed (slow: for tests and for checking the GPU
    path without a GPU).

    Raises:
        ConfigError: an unknown setting, or ``kornia`` without kornia installed.
    """
    if geometry_name(setting, device) == "opencv":
        return OpenCVGeometry()
    return KorniaGeometry(device, batch_size)
