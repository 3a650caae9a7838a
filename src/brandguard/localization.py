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
from typing import Any

import cv2
import numpy as np

__all__ = [
    "Alignment",
    "Keypoints",
    "canonical_to_image_corners",
    "crop_canonical",
    "detect_keypoints",
    "estimate_homography",
    "estimate_noise",
    "homography_is_sane",
    "match_pair",
    "points_in_quad",
    "product_side",
    "resize_transform",
    "source_noise",
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
        support: canonical positions of the inlier keypoints, or None.
    """

    product_id: int
    inliers: int
    H: np.ndarray
    inlier_ratio: float
    sane: bool = True
    #: ``(n, 2)`` canonical-frame positions of the inlier keypoints (where the photo and the references agree
    #: in geometry: see :func:`support_mask`), or None when not recorded
    support: np.ndarray | None = None


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
    if not np.all(np.isfinite(H)) or abs(float(np.linalg.det(np.asarray(H, np.float64)))) < 1e-12:
        # a degenerate homography maps the frame nowhere (OpenCV can hang on it): nothing of the photo is seen
        return np.zeros((size, size, 3), np.uint8), np.zeros((size, size), bool)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    crop = cv2.warpPerspective(image, H, (size, size), flags=flags, borderMode=cv2.BORDER_REFLECT)
    ones = np.ones(image.shape[:2], np.uint8)
    valid = cv2.warpPerspective(ones, H, (size, size), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, valid.astype(bool)


def support_mask(support: np.ndarray | None, size: int, margin: int, min_cover: float = 0.3) -> np.ndarray | None:
    """The part of the canonical frame a photo's alignment vouches for: the convex hull of its inlier
    keypoints grown by ``margin`` pixels.

    One homography is exact only where the matches that fitted it lie; beyond them, on a bottle whose label
    curves away, a carton seen across an edge or a package in a hand, it extrapolates and the comparison
    would light up on geometry, not print (issue 12: "comparing only the part of the package that the photo
    and the references both show"). Edits inside the package stay inside the hull of the matches around them.

    Args:
        support: ``(n, 2)`` canonical positions of inlier keypoints (``Alignment.support``), or None.
        size: side of the canonical frame (pixels).
        margin: pixels the hull is grown by (0: no restriction, None returned).
        min_cover: a hull (after growing) covering less than this share of the frame is not trusted to
            bound the product (too few or clustered matches): None, compare everything.

    Returns:
        ``(size, size)`` bool mask, or None (compare the whole frame).
    """
    if margin <= 0 or support is None or len(support) < 8:
        return None
    pts = np.clip(np.asarray(support, np.float32), 0, size - 1).reshape(-1, 1, 2)
    hull = cv2.convexHull(pts).astype(np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    k = 2 * int(margin) + 1
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if mask.mean() < min_cover:
        return None
    return mask.astype(bool)


def product_side(H: np.ndarray, size: int, scale: tuple[float, float] | float = 1.0) -> float:
    """How large the product is in a photo: the square root of the area (pixels) of the canonical frame's
    outline, ``H`` mapping canonical pixels to working-copy pixels and ``scale`` (``sx, sy`` or one factor)
    turning working-copy pixels into full-resolution ones. 0.0 when the outline is degenerate."""
    sx, sy = (scale, scale) if np.isscalar(scale) else scale  # type: ignore[misc]
    quad = canonical_to_image_corners(H, size)
    if quad is None or not np.all(np.isfinite(quad)):
        return 0.0
    quad = quad * np.array([sx, sy])
    return float(np.sqrt(abs(cv2.contourArea(quad.astype(np.float32)))))


def points_in_quad(xy: np.ndarray, quad: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """``(K,)`` bool: which points ``(K, 2)`` lie inside the polygon ``quad`` ``(4, 2)`` (or within ``margin``
    pixels outside it)."""
    if len(xy) == 0:
        return np.zeros(0, bool)
    poly = quad.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= -margin for x, y in xy], bool)


def estimate_noise(image: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Standard deviation (grey levels, 0..255) of the sensor noise of a photo or crop.

    Immerkaer's estimator (J. Immerkaer, "Fast noise variance estimation", CVIU 64(2), 1996): the response
    to the 3x3 Laplacian difference kernel ``[[1,-2,1],[-2,4,-2],[1,-2,1]]`` cancels smooth shading and
    keeps ``6 sigma`` of white noise. The median of its magnitude (not the mean) keeps print edges, which
    cover a minority of a package, out of the estimate.

    Fine print finer than the estimator's 3 pixels (a sharp halftone) reads as noise: the median assumes that
    most of the region is flat or smoothly shaded at that scale.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` / ``(H, W, 1)`` grey, in grey levels 0..255 (uint8 or float).
        valid: ``(H, W)`` bool, the pixels to use (None: all).

    Returns:
        sigma in grey levels; 0.0 when fewer than 64 pixels are usable.

    Raises:
        DataError: an image that is not 2-D grey or 3-channel colour.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        from brandguard.errors import DataError

        raise DataError(f"estimate_noise expects an (H, W) or (H, W, 3) image, got shape {img.shape}")
    if img.size == 0:
        return 0.0
    img = np.ascontiguousarray(img, np.uint8 if img.dtype == np.uint8 else np.float32)
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    kern = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = np.abs(cv2.filter2D(grey.astype(np.float32), -1, kern, borderType=cv2.BORDER_REFLECT))
    ok = np.ones(grey.shape, bool) if valid is None else \
        cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ok[:2], ok[-2:], ok[:, :2], ok[:, -2:] = False, False, False, False
    if ok.sum() < 64:
        return 0.0
    vals = r[ok]
    if vals.size > 1_000_000:  # a whole phone photo: a regular subsample gives the same median
        vals = vals[::vals.size // 1_000_000 + 1]
    return float(np.median(vals) / (6.0 * 0.6745))


def source_noise(source: np.ndarray, H: np.ndarray, size: int) -> float:
    """The sensor noise of the product's region of ``source``, as it lands in the canonical frame.

    The noise is measured where it is white, at the source's own resolution (:func:`estimate_noise` inside
    the product's outline), and multiplied by the enlargement into the frame (canonical pixels per source
    pixel, at least 1): a product enlarged 3 times carries grains of 3 pixels, which need 3 times the blur
    to clean (:func:`brandguard.mismatch.noise_blur` takes this value).

    Args:
        source: ``(h, w, 3)`` the image the crop is warped from.
        H: ``3x3`` canonical -> ``source`` pixels.
        size: side of the canonical frame (pixels).

    Returns:
        noise in grey levels of the canonical frame; 0.0 when the outline is degenerate or too small.
    """
    quad = canonical_to_image_corners(H, size)
    if quad is None or not np.all(np.isfinite(quad)):
        return 0.0
    h, w = source.shape[:2]
    x0, y0 = (max(0, int(np.floor(v))) for v in quad.min(0))
    x1, y1 = min(w, int(np.ceil(quad[:, 0].max())) + 1), min(h, int(np.ceil(quad[:, 1].max())) + 1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0.0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad - (x0, y0)).astype(np.int32), 1)
    area = float(cv2.contourArea(quad.astype(np.float32)))
    enlargement = max(1.0, size / np.sqrt(max(area, 1.0)))
    return estimate_noise(source[y0:y1, x0:x1], mask.astype(bool)) * enlargement


def crop_canonical(image: np.ndarray, full: np.ndarray, H: np.ndarray, size: int,
                   max_oversample: float = 1.5, *, with_noise: bool = False) -> Any:
    """The product's aligned crop, taken from the full-resolution photo.

    ``H`` maps canonical pixels to the working copy ``image``; it is scaled to ``full``
    (``H_full = diag(sx, sy, 1) @ H``), and only the product's bounding box of ``full`` is used. When the
    product is larger than ``max_oversample * size`` pixels there, that box is first reduced (area
    averaging, no aliasing) to about that size, then warped. When ``full`` is ``image`` (a photo not larger
    than the working size) this is exactly :func:`warp_to_canonical` of ``image``.

    Args:
        image: ``(h, w, 3)`` working copy the homography was found on.
        full: ``(H, W, 3)`` the same photo at full resolution (or ``image`` itself).
        H: ``3x3`` canonical -> working-copy pixels.
        size: side of the canonical frame (pixels).
        max_oversample: the product's longest outline edge is reduced to at most this many canonical sides.

        with_noise: also return the sensor noise of what was warped (:func:`source_noise`).

    Returns:
        ``(crop, valid)`` as :func:`warp_to_canonical`: ``(size, size, 3)`` uint8 and ``(size, size)`` bool;
        ``(crop, valid, noise)`` with ``with_noise``.
    """
    source, Hs = _crop_source(image, full, H, size, max_oversample)
    crop, valid = warp_to_canonical(source, Hs, size)
    return (crop, valid, source_noise(source, Hs, size)) if with_noise else (crop, valid)


def _crop_source(image: np.ndarray, full: np.ndarray, H: np.ndarray, size: int,
                 max_oversample: float) -> tuple[np.ndarray, np.ndarray]:
    """The image :func:`crop_canonical` warps and the homography (canonical -> its pixels) it warps with."""
    if full is image or full.shape[:2] == image.shape[:2]:
        return image, H
    sx, sy = full.shape[1] / image.shape[1], full.shape[0] / image.shape[0]
    Hf = resize_transform(sx, sy) @ H
    quad = canonical_to_image_corners(Hf, size)
    if quad is None or not np.all(np.isfinite(quad)):
        return image, H
    fh, fw = full.shape[:2]
    pad = 2.0 * max(sx, sy)
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in quad.min(0))
    x1, y1 = int(min(fw, np.ceil(quad[:, 0].max() + pad))), int(min(fh, np.ceil(quad[:, 1].max() + pad)))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the outline lies outside the photo: nothing better to take
        return image, H
    region = full[y0:y1, x0:x1]
    longest = float(np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1).max())
    d = min(1.0, max_oversample * size / max(longest, 1.0))
    T = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    if d < 1.0:
        w, h = max(2, round((x1 - x0) * d)), max(2, round((y1 - y0) * d))
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        T = resize_transform(w / (x1 - x0), h / (y1 - y0)) @ T
    # the region's border is the photo's where the outline reaches it; elsewhere the outline lies inside
    return np.ascontiguousarray(region), T @ Hf


def resize_transform(sx: float, sy: float) -> np.ndarray:
    """``3x3`` map from pixel coordinates of an image to those of the same image resized by ``sx, sy``
    (pixel centres at integers, as OpenCV's warps and keypoints have them)."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
