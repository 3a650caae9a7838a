"""Finding the product in a photo: SIFT keypoints, FAISS matching and RANSAC homographies.

Whole-photo features match backgrounds as much as products, so brandguard localises first: RootSIFT
keypoints of the photo are matched (FAISS) against the keypoints of every product's references, which
are stored in that product's *canonical frame* (a square frame cut around the product in one of its
references). Matches vote for products; the best candidates are verified with a RANSAC homography, whose
inliers both identify the product and give the transform that brings the photo into the canonical frame
for local comparison.

Example:
    >>> import numpy as np
    >>> from brandguard.localization import detect_keypoints
    >>> kp = detect_keypoints(np.zeros((64, 64, 3), np.uint8), side=64, n=100)
    >>> kp.desc.shape[1]
    128
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Alignment",
    "Keypoints",
    "canonical_to_image_corners",
    "detect_keypoints",
    "estimate_homography",
    "homography_is_sane",
    "match_pair",
    "warp_to_canonical",
]


@dataclass
class Keypoints:
    """Keypoints of one image.

    Attributes:
        xy: ``(K, 2)`` float32 positions in the pixel coordinates of the decoded image.
        desc: ``(K, 128)`` float32 RootSIFT descriptors (unit L2 norm).
        response: ``(K,)`` float32 detector responses (higher is stronger).
    """

    xy: np.ndarray
    desc: np.ndarray
    response: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)


@dataclass
class Alignment:
    """A verified match of a photo to a product.

    Attributes:
        product_id: index of the product in the reference index.
        inliers: number of geometrically consistent keypoint matches.
        H: ``3x3`` homography mapping canonical-frame pixels to photo pixels.
        inlier_ratio: inliers / tentative matches of that product.
        sane: whether the homography is a plausible view of the product (not folded, not degenerate).
    """

    product_id: int
    inliers: int
    H: np.ndarray
    inlier_ratio: float
    sane: bool = True


def _sift(n: int) -> cv2.SIFT:
    return cv2.SIFT_create(nfeatures=int(n))


def detect_keypoints(image: np.ndarray, side: int, n: int) -> Keypoints:
    """RootSIFT keypoints of an RGB image, detected on a grey copy whose long side is ``side`` pixels.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        side: long side of the detection image (downscaled only).
        n: at most this many keypoints (strongest first).
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    kps, desc = _sift(n).detectAndCompute(grey, None)
    if desc is None or not kps:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros((0,), np.float32))
    xy = np.array([k.pt for k in kps], np.float32) / scale
    resp = np.array([k.response for k in kps], np.float32)
    desc = desc.astype(np.float32)
    desc /= desc.sum(axis=1, keepdims=True) + 1e-7  # RootSIFT: L1-normalise, then square root
    desc = np.sqrt(desc)
    return Keypoints(xy, desc, resp)


def estimate_homography(src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC homography ``src -> dst`` (deterministic); returns ``(H or None, inlier mask)``."""
    if len(src) < 4:
        return None, np.zeros(len(src), bool)
    H, mask = cv2.findHomography(src.astype(np.float32), dst.astype(np.float32), cv2.RANSAC, threshold,
                                 maxIters=2000, confidence=0.995)
    if H is None or mask is None or not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        return None, np.zeros(len(src), bool)
    return H / H[2, 2], mask.ravel().astype(bool)


def match_pair(a: Keypoints, b: Keypoints, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Mutual-free Lowe-ratio matches from ``a`` to ``b``: returns index arrays ``(ia, ib)``."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    knn = matcher.knnMatch(a.desc, b.desc, k=2)
    ia, ib = [], []
    for pair in knn:
        if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
            ia.append(pair[0].queryIdx)
            ib.append(pair[0].trainIdx)
    return np.asarray(ia, int), np.asarray(ib, int)


def canonical_to_image_corners(H: np.ndarray, size: int) -> np.ndarray | None:
    """The canonical square's corners in photo pixels, or None when a corner maps to infinity."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [size, size, 1], [0, size, 1]], np.float64).T
    p = H @ corners
    if np.any(p[2] <= 1e-9):
        return None
    return (p[:2] / p[2]).T


def homography_is_sane(H: np.ndarray, size: int, image_shape: tuple[int, int], min_area: float = 0.01,
                       max_area: float = 4.0) -> bool:
    """Whether ``H`` (canonical -> photo) maps the canonical square to a plausible convex quad."""
    quad = canonical_to_image_corners(H, size)
    if quad is None or not np.all(np.isfinite(quad)):
        return False
    if not cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)):
        return False
    area = abs(cv2.contourArea(quad.astype(np.float32)))
    img_area = float(image_shape[0] * image_shape[1])
    if not (min_area * img_area <= area <= max_area * img_area):
        return False
    sides = np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
    return bool(sides.min() > 0.15 * sides.max())


def warp_to_canonical(image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp a photo into the canonical frame given ``H`` (canonical -> photo).

    Returns:
        ``(crop, valid)``: the ``(size, size, 3)`` uint8 crop and a ``(size, size)`` bool mask of the
        pixels that came from inside the photo.
    """
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    crop = cv2.warpPerspective(image, H, (size, size), flags=flags, borderMode=cv2.BORDER_REFLECT)
    ones = np.ones(image.shape[:2], np.uint8)
    valid = cv2.warpPerspective(ones, H, (size, size), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, valid.astype(bool)
