"""The GPU path (kornia's SIFT, RANSAC and warps, :mod:`brandguard.accel`) run on CPU tensors: each stage
within a stated tolerance of the OpenCV path, and a detector on it giving the OpenCV path's products and
verdicts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from brandguard.accel import KorniaGeometry, OpenCVGeometry, resolve_geometry
from brandguard.config import Config
from brandguard.errors import ConfigError

pytest.importorskip("kornia", reason='the GPU path needs the gpu extra: pip install "brandguard[gpu]"')


@pytest.fixture(scope="module")
def kornia_cpu() -> KorniaGeometry:
    return KorniaGeometry("cpu")


def _corners(H: np.ndarray, side: float = 384.0) -> np.ndarray:
    c = np.array([[[0, 0], [side, 0], [side, side], [0, side]]], np.float64)
    return cv2.perspectiveTransform(c, np.asarray(H, np.float64))[0]


def test_the_geometry_setting_is_checked_and_auto_is_opencv_on_a_cpu():
    assert isinstance(resolve_geometry("auto", "cpu"), OpenCVGeometry)
    assert isinstance(resolve_geometry("opencv", "cuda"), OpenCVGeometry)
    assert isinstance(resolve_geometry("kornia", "cpu"), KorniaGeometry)
    with pytest.raises(ConfigError, match="auto, opencv or kornia"):
        Config().with_overrides({"runtime.geometry": "gpu"})
    with pytest.raises(ConfigError, match="runtime.geometry"):
        resolve_geometry("cuda", "cpu")


def test_kornia_is_refused_with_the_extra_to_install_when_it_is_missing(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_kornia(name, *args, **kwargs):
        if name == "kornia" or name.startswith("kornia."):
            raise ImportError("No module named 'kornia'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kornia)
    assert isinstance(resolve_geometry("auto", "cuda"), OpenCVGeometry)  # auto falls back quietly
    with pytest.raises(ConfigError, match=r'pip install "brandguard\[gpu\]"'):
        resolve_geometry("kornia", "cpu")


@pytest.mark.parametrize("share, seeds, need", [(0.3, 8, 8), (0.1, 10, 9)])
def test_kornia_ransac_finds_the_homography_opencv_finds(kornia_cpu, share, seeds, need):
    """Tolerance: both estimates put the product's corners within 2 px of the truth (0.7 px noise, 4 px
    threshold), and their inlier sets agree on 97% of the matches. With OpenCV's own budget kornia found
    the 10%-inlier homography 7 times of 10, hence its eightfold budget (see KorniaGeometry)."""
    H = np.array([[0.9, 0.12, 40.0], [-0.08, 1.1, 25.0], [2e-4, -1e-4, 1.0]])
    opencv, agree = OpenCVGeometry(), 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        src = rng.uniform(0, 384, (600, 2))
        p = np.c_[src, np.ones(len(src))] @ H.T
        dst = p[:, :2] / p[:, 2:] + rng.normal(0, 0.7, (len(src), 2))
        inlier = rng.random(len(src)) < share
        dst[~inlier] = rng.uniform(0, 500, ((~inlier).sum(), 2))
        Hk, mk = kornia_cpu.homography(src, dst, 4.0)
        Ho, mo = opencv.homography(src, dst, 4.0)
        assert Ho is not None
        ok = Hk is not None and np.abs(_corners(Hk) - _corners(H)).max() < 2.0 \
            and np.abs(_corners(Ho) - _corners(H)).max() < 2.0 and (mk == mo).mean() >= 0.97
        agree += bool(ok)
    assert agree >= need
    assert kornia_cpu.homography(np.zeros((3, 2)), np.zeros((3, 2)), 4.0)[0] is None  # too few matches


def test_kornia_warp_equals_opencv_warp(kornia_cpu):
    """Tolerance: inside the photo at most 0.5 grey levels apart on average (rounding and float32) and the
    valid masks agree on 99.5% of the canonical pixels."""
    rng = np.random.default_rng(3)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8), (5, 5), 0)
    opencv = OpenCVGeometry()
    for H in (np.array([[1.2, 0.1, 40.0], [0.05, 1.1, 30.0], [1e-4, 0.0, 1.0]]),  # inside the photo
              np.array([[1.6, -0.2, 150.0], [0.3, 1.4, -40.0], [3e-4, 2e-4, 1.0]])):  # partly outside
        a, va = opencv.warp(photo, H, 224)
        b, vb = kornia_cpu.warp(photo, H, 224)
        assert a.shape == b.shape == (224, 224, 3) and b.dtype == np.uint8
        both = va & vb
        assert both.mean() > 0.3
        assert np.abs(a.astype(int) - b.astype(int))[both].mean() <= 0.5
        assert (va == vb).mean() >= 0.995
    crop, valid = kornia_cpu.warp(photo, np.zeros((3, 3)), 64)  # a degenerate homography sees nothing
    assert not valid.any() and crop.shape == (64, 64, 3)


def test_kornia_keypoints_are_rootsift_in_photo_pixels_and_batch_like_single(kornia_cpu, labels):
    from brandguard.images import load_image

    photos = [load_image(str(i.path)) for i in labels[:3]]
    photos.append(np.ascontiguousarray(photos[0][:, ::-1]))  # the same size as the first: one batch of two
    batch = kornia_cpu.detect_batch(photos, 512, 300)
    for img, kp in zip(photos, batch):
        one = kornia_cpu.detect(img, 512, 300)
        assert 0 < len(kp) <= 300 and len(one) == len(kp)
        assert np.allclose(kp.xy, one.xy, atol=0.02)
        assert np.allclose(np.linalg.norm(kp.desc, axis=1), 1.0, atol=1e-4) and (kp.desc >= 0).all()
        h, w = img.shape[:2]
        assert (kp.xy >= -1).all() and (kp.xy[:, 0] <= w).all() and (kp.xy[:, 1] <= h).all()
        assert np.all(np.diff(kp.response) <= 0)  # strongest first
    assert kornia_cpu.detect(np.zeros((8, 8, 3), np.uint8), 512, 100).xy.shape == (0, 2)


def test_a_detector_on_the_kornia_path_finds_the_opencv_paths_products_and_verdicts(saved_index, labels):
    """The index's reference keypoints are OpenCV's; kornia's query keypoints must find the same product
    with (nearly) the same outline. Tolerance: the same product on every photo, the outline within 6 px,
    at most one verdict of the eight different, scores within 0.05 on most photos."""
    from brandguard.detector import Detector

    photos = [i for i in labels if i.label == "authentic"][:4] + [i for i in labels if i.label == "counterfeit"][:4]
    paths = [str(i.path) for i in photos]
    cpu = Detector.load(saved_index, device="cpu", geometry="opencv")
    gpu_path = Detector.load(saved_index, device="cpu", geometry="kornia")
    assert isinstance(gpu_path.index.geometry, KorniaGeometry) and isinstance(cpu.index.geometry, OpenCVGeometry)
    a, b = cpu.predict_batch(paths), gpu_path.predict_batch(paths)
    assert [(p.brand, p.product) for p in a] == [(p.brand, p.product) for p in b]
    assert sum(p.verdict != q.verdict for p, q in zip(a, b)) <= 1
    assert np.median([abs(p.score - q.score) for p, q in zip(a, b)]) <= 0.05
    for p, q in zip(a, b):
        if p.quad is not None and q.quad is not None:
            assert np.abs(p.quad - q.quad).max() <= 6.0, (p.source, p.quad, q.quad)


def test_kornia_warps_a_grey_image_as_opencv_does(kornia_cpu):
    grey = cv2.GaussianBlur(np.random.default_rng(4).integers(0, 256, (120, 160), dtype=np.uint8), (5, 5), 0)
    H = np.array([[0.5, 0.05, 10.0], [0.0, 0.45, 8.0], [0.0, 0.0, 1.0]])
    (a, va), (b, vb) = OpenCVGeometry().warp(grey, H, 96), kornia_cpu.warp(grey, H, 96)
    assert a.shape == b.shape == (96, 96) and (va == vb).all()
    assert np.abs(a.astype(int) - b.astype(int))[va].mean() <= 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_kornia_on_cuda_agrees_with_kornia_on_cpu_tensors(kornia_cpu, labels):
    """On a GPU: the same stages within float tolerance of the CPU tensors' (TF32 convolutions and CUDA's
    random stream make them differ slightly; see KorniaGeometry)."""
    from brandguard.images import load_image

    gpu = KorniaGeometry("cuda")
    photo = load_image(str(labels[0].path))
    a, b = kornia_cpu.detect(photo, 512, 300), gpu.detect(photo, 512, 300)
    assert abs(len(a) - len(b)) <= 0.1 * len(a)
    close = np.linalg.norm(a.xy[:, None] - b.xy[None], axis=2).min(1) < 1.0
    assert close.mean() >= 0.8
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 384, (300, 2))
    H = np.array([[0.9, 0.12, 40.0], [-0.08, 1.1, 25.0], [2e-4, -1e-4, 1.0]])
    p = np.c_[src, np.ones(len(src))] @ H.T
    dst = p[:, :2] / p[:, 2:] + rng.normal(0, 0.7, (len(src), 2))
    out = rng.random(len(src)) < 0.6
    dst[out] = rng.uniform(0, 500, (out.sum(), 2))
    Hg, _ = gpu.homography(src, dst, 4.0)
    assert Hg is not None and np.abs(_corners(Hg) - _corners(H)).max() < 2.0
    (c1, v1), (c2, v2) = kornia_cpu.warp(photo, H, 224), gpu.warp(photo, H, 224)
    assert (v1 == v2).mean() >= 0.995 and np.abs(c1.astype(int) - c2.astype(int))[v1 & v2].mean() <= 0.5


def test_libraries_on_one_core_nests_across_threads_and_restores_the_settings() -> None:
    """Scoring calls from several threads of a service overlap: the first sets OpenCV (and OpenBLAS) to one
    thread, the last to leave restores what was there before, whatever the order they leave in."""
    import threading

    import cv2
    from threadpoolctl import threadpool_info, threadpool_limits

    from brandguard.accel import libraries_on_one_core

    def blas() -> list[int]:
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    old = cv2.getNumThreads()
    cv2.setNumThreads(3)  # a setting the test can tell from one thread
    try:
        entered, leave_a = threading.Barrier(2), threading.Event()
        seen: dict[str, int] = {}

        def a() -> None:
            with libraries_on_one_core():
                entered.wait()
                leave_a.wait()  # a leaves first, while b is still inside
            seen["a left"] = cv2.getNumThreads()

        def b() -> None:
            with libraries_on_one_core():
                entered.wait()
                leave_a.set()
                ta.join()
                seen["b inside"] = cv2.getNumThreads()

        ta, tb = threading.Thread(target=a), threading.Thread(target=b)
        ta.start()
        tb.start()
        tb.join()
        assert seen == {"a left": 1, "b inside": 1}  # one thread while anyone is inside
        assert cv2.getNumThreads() == 3  # both left: restored
        with threadpool_limits(limits=2, user_api="blas"):  # numpy's OpenBLAS, from the calling thread
            before = blas()
            with libraries_on_one_core():
                assert blas() == [1] * len(before)
            assert blas() == before
    finally:
        cv2.setNumThreads(old)
