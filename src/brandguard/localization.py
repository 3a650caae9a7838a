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

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "NOISE_SCALES",
    "Alignment",
    "Keypoints",
    "Surface",
    "canonical_to_image_corners",
    "crop_canonical",
    "detect_keypoints",
    "detection_copy",
    "estimate_homography",
    "estimate_noise",
    "fit_surface",
    "flat_print",
    "homography_is_sane",
    "match_pair",
    "points_in_quad",
    "print_turn",
    "product_side",
    "resize_transform",
    "search_cylinder",
    "source_noise",
    "surface_offsets",
    "surface_valid",
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
class Surface:
    """How a label wrapped on a cylinder (a bottle, can or jar) departs from the plane its homography
    describes (:func:`search_cylinder`, :func:`fit_surface`).

    Canonical pixel ``q`` shows at photo pixel ``H @ (q + offset(q))``, ``offset`` interpolated bilinearly
    from ``grid``.

    Attributes:
        grid: ``(g, g, 2)`` float32 offsets (canonical pixels, x then y) at the nodes
            ``(j, i) * (size - 1) / (g - 1)`` of the canonical frame (row ``i``, column ``j``).
        detail: ``(g, g)`` float32 the photo's local detail at each node relative to the plane's at the same
            node (smallest singular value of the offset map's Jacobian): 1 on a flat face, ``cos(theta)``
            where a label turns away from the camera by ``theta``.
        inliers: sampled pixels whose optical flow the cylinder follows within 2 pixels (0: not refined).
        axis: 0 the cylinder stands (the label wraps along canonical x), 1 it lies.
        params: the cylinder's :data:`CYLINDER_PARAMS` parameters: curvature ``k`` (radians of label per
            half frame), the line facing the camera ``c`` (-1..1), the rows' bend ``t0, t1``, a projective
            correction (8) and the turn of the wrap's direction (see :func:`_cylinder_offsets`).
        gain: how much the cylinder raised the profiles' correlation with the reference's over the plane
            (:func:`search_cylinder`).
        plane_inliers: of the same samples, those the homography alone puts within 2 pixels.
    """

    grid: np.ndarray
    detail: np.ndarray
    inliers: int
    axis: int = 0
    params: np.ndarray | None = None
    gain: float = 0.0
    plane_inliers: int = 0


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
    #: the cylinder a wrapped label was compared through (:class:`Surface`; set by the detector, see
    #: :func:`search_cylinder`), or None: the homography alone
    surface: Surface | None = None
    #: pixels of the image the inliers' keypoints were detected on per working-copy pixel (an alignment refined
    #: on the full resolution, or searched there, saw the product at more detail), or None: the working copy's
    #: own keypoint image (``localization.query_detect_side``); see ``Detector`` (inlier density)
    detail: float | None = None


def _sift(n: int) -> cv2.SIFT:
    return cv2.SIFT_create(nfeatures=int(n))


#: RootSIFT distance under which two keypoints of one photo look alike (unit descriptors; on the scene set's
#: listing photos a keypoint has a median of 0 such look-alikes, a corner of a checkerboard background dozens)
REPEAT_DISTANCE = 0.2
#: a keypoint with at least this many look-alikes in its own photo is a background texture's, not a product's
REPEAT_COUNT = 24
#: when more than this share of a photo's strongest keypoints are a texture's, it is detected again
#: (measured on the scene set at 8 look-alikes: at most 26% on any photo, 3% on average; 67-100% on
#: checkerboard backgrounds)
REPEAT_SHARE = 0.4


def _sift_once(grey: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kps, desc = _sift(n).detectAndCompute(grey, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros((0,), np.float32)
    xy = np.array([k.pt for k in kps], np.float32)
    resp = np.array([k.response for k in kps], np.float32)
    desc = desc.astype(np.float32)
    desc /= desc.sum(axis=1, keepdims=True) + 1e-7  # RootSIFT: L1-normalise, then square root
    return xy, np.sqrt(desc), resp


def repeated_keypoints(desc: np.ndarray, among: np.ndarray | None = None, distance: float = REPEAT_DISTANCE,
                       count: int = REPEAT_COUNT) -> np.ndarray:
    """``(n,)`` bool: which of ``desc`` (``(n, 128)`` RootSIFT) have at least ``count`` look-alikes (closer
    than ``distance``) among ``among`` (default: ``desc`` itself, each keypoint not counting itself): the
    corners of a checkerboard, tiles or a printed fabric, which no reference holds and which are ambiguous
    to match."""
    ref = desc if among is None else among
    if len(desc) == 0 or len(ref) == 0:
        return np.zeros(len(desc), bool)
    close = np.zeros(len(desc), np.int64)
    lim = 1.0 - distance * distance / 2.0  # unit vectors: |a - b| < d  <=>  a.b > 1 - d^2 / 2
    for s in range(0, len(desc), 2048):
        close[s:s + 2048] = (desc[s:s + 2048] @ ref.T > lim).sum(1)
    if among is None:
        close -= 1
    return close >= count


def _representatives(desc: np.ndarray, radius: float = 0.05) -> np.ndarray:
    """A few rows of ``desc`` (unit RootSIFT) such that every row lies within ``radius`` of one of them
    (greedy, in order)."""
    if len(desc) == 0:
        return desc
    close = desc @ desc.T > 1.0 - radius * radius / 2.0
    covered = np.zeros(len(desc), bool)
    reps = []
    for i in range(len(desc)):
        if not covered[i]:
            reps.append(i)
            covered |= close[i]
    return desc[reps]


def detection_copy(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The grey copy keypoints are detected on: ``(H, W, 3)`` uint8 RGB reduced (area averaging, never
    enlarged) to a long side of at most ``side`` pixels; returns ``(grey, scale)``, ``scale`` <= 1."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return grey, scale


def detect_keypoints(image: np.ndarray, side: int, n: int) -> Keypoints:
    """RootSIFT keypoints of an RGB image, detected on a grey copy whose long side is ``side`` pixels.

    SIFT keeps the ``n`` strongest keypoints; a high-contrast background texture (a checkerboard, tiles, a
    printed fabric) can take all of them, and the product is then never found. So when more than
    :data:`REPEAT_SHARE` of them repeat in the photo (:func:`repeated_keypoints`), every keypoint is
    detected, those that look like the texture's are dropped and the ``n`` strongest of the rest kept.
    Other photos keep exactly what SIFT gives them.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        side: long side of the detection image (downscaled only).
        n: at most this many keypoints (strongest first).
    """
    grey, scale = detection_copy(image, side)
    xy, desc, resp = _sift_once(grey, n)
    texture = repeated_keypoints(desc)
    if len(desc) and texture.mean() > REPEAT_SHARE:
        # every keypoint SIFT finds, less those that look like the texture's; the texture's look-alikes among
        # the n kept join it and are dropped in turn (a few rounds: its corners at other scales). The texture
        # is held as a few representatives, so the work stays linear in the keypoints (a 2000-px photo of a
        # fine checkerboard: 59,000 keypoints, 1.2 s on one core; 0.1 s without the rule)
        xy2, desc2, resp2 = _sift_once(grey, 0)
        order = np.argsort(-resp2, kind="stable")
        xy2, desc2, resp2 = xy2[order], desc2[order], resp2[order]
        protos = _representatives(desc[texture])
        keep = np.ones(len(desc2), bool)
        for _ in range(3):
            keep &= ~repeated_keypoints(desc2, protos, count=1)
            top = np.flatnonzero(keep)[:n]
            again = repeated_keypoints(desc2[top])
            if len(top) == 0 or again.mean() <= REPEAT_SHARE / 4:
                break
            protos = np.vstack([protos, _representatives(desc2[top[again]])])
        top = np.flatnonzero(keep)[:n]
        xy, desc, resp = xy2[top], desc2[top], resp2[top]
    return Keypoints(xy / scale, desc, resp)


#: RANSAC's iteration budget and confidence (:func:`estimate_homography`)
RANSAC_ITERS = 10_000
RANSAC_CONFIDENCE = 0.999


def estimate_homography(src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC homography ``src -> dst`` (OpenCV, deterministic); returns ``(H or None, inlier mask)``.

    RANSAC stops once it is :data:`RANSAC_CONFIDENCE` sure to have drawn a sample of four inliers, after at
    most :data:`RANSAC_ITERS` samples. A listing photo's tentative matches with a product can be only 10-15%
    inliers (clutter, a small product, the 1,600 keypoints of a second search): at 10%, 2,000 samples found
    the homography for 19 of 40 seeded synthetic match sets and 10,000 for all 40 (``tests/test_keypoints.py``), and
    which of two RANSAC runs found the product then turned on a single changed match. Match sets with many
    inliers stop after a few hundred samples either way; scoring the demo listings costs about 6 ms a photo
    more (README, "Throughput").

    Args:
        src, dst: ``(N, 2)`` matched points.
        threshold: reprojection error (pixels) under which a match is an inlier.
    """
    if len(src) < 4:
        return None, np.zeros(len(src), bool)
    H, mask = cv2.findHomography(src.astype(np.float32), dst.astype(np.float32), cv2.RANSAC, threshold,
                                 maxIters=RANSAC_ITERS, confidence=RANSAC_CONFIDENCE)
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


def _degenerate(H: np.ndarray) -> bool:
    """Whether a homography is not finite or (nearly) singular."""
    return not np.all(np.isfinite(H)) or abs(float(np.linalg.det(np.asarray(H, np.float64)))) < 1e-12


def warp_to_canonical(image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp a photo into the canonical frame given ``H`` (canonical -> photo).

    Returns:
        ``(crop, valid)``: the ``(size, size, 3)`` uint8 crop and a ``(size, size)`` bool mask of the
        pixels that came from inside the photo.
    """
    if _degenerate(H):  # it maps the frame nowhere (OpenCV can hang on it): nothing of the photo is seen
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


#: parameters of a cylinder's model (:func:`_cylinder_offsets`): curvature, centre, two of row bend, the
#: eight of a projective correction, and the turn of the wrap's direction
CYLINDER_PARAMS = 13


def _cylinder_offsets(p: np.ndarray, u: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Offsets (canonical pixels) of a label wrapped on a cylinder, seen through the homography that fits
    its middle: ``u`` ``(n, 2)`` canonical positions in -1..1; ``axis`` 0: the cylinder stands (the label
    wraps along x), 1: it lies. Parameters ``p`` (:data:`CYLINDER_PARAMS`): curvature ``k`` (radians of
    label per half frame), the line facing the camera ``c``, the bend of the label's rows ``t0 + t1 * v``
    (looking down on it), a projective correction of the wrapped point (8: translation ``a0, a3``, linear
    ``a1, a2, a4, a5`` and perspective ``g, h``, all 0 for none), and the angle ``phi`` (radians) by which
    the wrap's direction is turned from the frame's axis.

    Why these: RANSAC fits the homography to the keypoints of a curved label as a whole, so it is off by a
    small homography, not only an affine map, from the one of the plane that touches the label where it
    faces the camera (with an affine correction alone, honest bottles seen slightly from one side kept 2-5
    pixels of flow unexplained at one edge); and the canonical frame is the anchor reference's, where a
    card photographed askew stands at an angle, so the label's wrap need not run along the frame's axis."""
    k, c, t0, t1 = p[:4]
    a = p[4:12]
    phi = p[12]
    cs, sn = np.cos(phi), np.sin(phi)
    r = np.c_[cs * u[:, 0] + sn * u[:, 1], cs * u[:, 1] - sn * u[:, 0]]  # the label's own axes
    w, v = (r[:, 0], r[:, 1]) if axis == 0 else (r[:, 1], r[:, 0])
    d = w - c
    along = d * np.sinc(k * d / np.pi) - d  # sin(k d) / k - d
    across = (t0 + t1 * v) * (1.0 - np.cos(k * d))
    ox, oy = (along, across) if axis == 0 else (across, along)
    x, y = u[:, 0] + cs * ox - sn * oy, u[:, 1] + sn * ox + cs * oy  # turned back into the frame
    den = 1.0 + a[6] * x + a[7] * y
    xn = ((1.0 + a[1]) * x + a[2] * y + a[0]) / den
    yn = (a[4] * x + (1.0 + a[5]) * y + a[3]) / den
    half = (size - 1) / 2.0
    return np.c_[xn - u[:, 0], yn - u[:, 1]] * half


def _cylinder_residual(p: np.ndarray, u: np.ndarray, f: np.ndarray, axis: int, size: int) -> np.ndarray:
    return (_cylinder_offsets(p, u, axis, size) - f).ravel()


#: the most a label's rows bend (half-frames per unit of ``1 - cos``): a camera 17 degrees above the label
_MAX_BEND = 0.3
#: the largest perspective terms of the correction (per half frame): one edge of the frame seen 1.5 times
#: as large as the other
_MAX_PERSPECTIVE = 0.2
#: the most the wrap's direction turns from the canonical frame's axis (radians: 34 degrees; see
#: :func:`print_turn`)
_MAX_TURN = 0.6


def _surface_of(axis: int, params: np.ndarray, size: int, grid: int = 17) -> Surface:
    """The :class:`Surface` of a cylinder (see :func:`_cylinder_offsets`), with its detail map."""
    t = np.linspace(-1.0, 1.0, grid)
    gyy, gxx = np.meshgrid(t, t, indexing="ij")
    field = _cylinder_offsets(params, np.c_[gxx.ravel(), gyy.ravel()], axis, size).reshape(grid, grid, 2)
    # the Jacobian of q -> q + offset(q) (crop pixels per canonical pixel), by central differences
    dt = 2.0 / (grid - 1)
    per_px = 2.0 / max(size - 1, 1)
    dx = np.gradient(field, dt, axis=1) * per_px
    dy = np.gradient(field, dt, axis=0) * per_px
    J = np.stack([np.stack([1 + dx[..., 0], dy[..., 0]], -1), np.stack([dx[..., 1], 1 + dy[..., 1]], -1)], -2)
    det = np.linalg.det(J)
    detail = np.where(det > 0, np.linalg.svd(J, compute_uv=False)[..., -1], 0.0).astype(np.float32)
    return Surface(np.clip(field, -0.5 * size, 0.5 * size).astype(np.float32), detail, 0, axis,
                   np.asarray(params, np.float64))


def print_turn(structure: np.ndarray, valid: np.ndarray | None = None, *, bins: int = 90) -> float:
    """The angle (radians) at which a package's print stands in its canonical frame: the mode of its
    strokes' orientations modulo 90 degrees (text lines, rules, edges and box outlines run along the
    package's two axes), weighted by stroke strength, within +-:data:`_MAX_TURN`.

    The canonical frame is the anchor reference's, and the anchor is often a card photographed askew, so a
    label wrapped on a bottle wraps along this direction, not the frame's axis: :func:`fit_surface` turns
    its cylinder by it. It is measured once on the product's reference, never on the photo, so an edit that
    turns, shears or squeezes a logo cannot turn the cylinder to hide itself.

    Args:
        structure: ``(S, S)`` float32 the reference's structure (:func:`brandguard.mismatch.structure_map`).
        valid: ``(S, S)`` bool where it is valid (None: everywhere).
        bins: histogram bins over the 90 degrees.

    Returns:
        The angle: the package's own x axis runs along ``(cos a, sin a)`` in frame pixels (y down); 0.0 where
        no direction stands out (fewer than 2% of the strokes in the peak's 5 degrees above a uniform spread)
        or where the peak lies beyond +-:data:`_MAX_TURN`.
    """
    ref = np.nan_to_num(np.asarray(structure, np.float32))
    gx = cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=3)
    w = gx * gx + gy * gy
    if valid is not None:
        w = np.where(np.asarray(valid, bool), w, 0.0)
    strong = w > np.quantile(w, 0.9)
    if not strong.any() or float(w[strong].sum()) <= 0.0:
        return 0.0
    theta = np.mod(np.arctan2(gy[strong], gx[strong]), np.pi / 2)  # a stroke across x or y: the same axis
    hist, _ = np.histogram(theta, bins=bins, range=(0.0, np.pi / 2), weights=w[strong])
    hist = hist / hist.sum()
    k = max(1, round(5 * bins / 90)) | 1  # a 5-degree window, circular
    smooth = np.convolve(np.r_[hist[-(k // 2):], hist, hist[:k // 2]], np.ones(k), mode="valid")
    i = int(np.argmax(smooth))
    if smooth[i] < k / bins + 0.02:
        return 0.0
    a = (i + 0.5) * (np.pi / 2) / bins
    a = a - np.pi / 2 if a > np.pi / 4 else a  # -45..45 degrees
    return float(a) if abs(a) <= _MAX_TURN else 0.0


def search_cylinder(reference: np.ndarray, photo: np.ndarray, valid: np.ndarray, *, min_gain: float = 0.03,
                    min_curvature: float = 0.3, bins: int = 24, columns: int = 128) -> Surface | None:
    """Whether the photo shows the label wrapped on a cylinder, and roughly how: a direct search over the
    cylinder's curvature and the line facing the camera.

    A wrapped label is compressed towards its edges along the wrap and unchanged across it, so each
    column (or row) of the label keeps its print. The magnitude of the reference's and the photo's
    structure is averaged into ``bins`` x ``columns`` cells (profiles that a row bend of a few pixels does
    not disturb); for each
    curvature ``k`` (0 to 2.4 radians per half frame) and centre ``c``, the photo's profiles are resampled
    at ``c + sin(k (x - c)) / k`` and correlated with the reference's (normalised cross-correlation over
    the valid columns). A flat package's best curvature is 0; this costs a few milliseconds, and the dense
    refinement (:func:`fit_surface`) runs only where a cylinder explains the print better.

    Args:
        reference, photo: ``(S, S)`` float32 structure maps (:func:`brandguard.mismatch.structure_map`), the
            photo aligned by its homography.
        valid: ``(S, S)`` bool where both are valid.
        min_gain: the best cylinder must raise the correlation by this much over the plane (``k = 0``) ...
        min_curvature: ... and curve by at least this much (``k``; 0.3: a label seen over 34 degrees);
            otherwise None.
        bins: profile bins across the wrap.
        columns: profile columns along it.

    Returns:
        The cylinder as a :class:`Surface` (no correction yet), or None.

    Raises:
        ValueError: when the three arrays are not the same square shape.
    """
    _check_maps(reference, photo, valid)
    size = reference.shape[0]
    n = min(size, columns)  # profile columns along the wrap
    half = (n - 1) / 2.0
    vm = np.asarray(valid, np.float32)
    kk, cc = (g.ravel() for g in np.meshgrid(np.arange(0.0, 2.41, 0.15), np.arange(-0.5, 0.51, 0.1)))
    d = (np.arange(n) / half - 1.0)[None, :] - cc[:, None]
    src = (cc[:, None] + d * np.sinc(kk[:, None] * d / np.pi) + 1.0) * half  # (G, n) photo column per column
    i0 = np.clip(np.floor(src).astype(int), 0, n - 2)
    fr = np.clip(src - i0, 0.0, 1.0)
    best = (-np.inf, 0.0, 0, 0.0)  # gain over the plane, curvature, axis, centre
    x = np.broadcast_to(np.arange(n), i0.shape)
    for axis in (0, 1):
        r, p, m = (reference, photo, vm) if axis == 0 else (reference.T, photo.T, vm.T)
        # (bins, n) profiles: |structure| keeps what cancels in a plain mean (strokes are +/- around 0);
        # invalid pixels count as 0 in both
        R, P = (cv2.resize(np.ascontiguousarray(np.abs(np.nan_to_num(a)) * m, np.float32), (n, bins),
                           interpolation=cv2.INTER_AREA).astype(np.float64) for a in (r, p))
        R -= R.mean()
        P -= P.mean()
        # the correlation of R with P resampled at every (curvature, centre), through the (n, n) products of
        # their columns: linear interpolation keeps it a weighted sum of those
        M, Q = R.T @ P, P.T @ P
        num = ((1.0 - fr) * M[x, i0] + fr * M[x, i0 + 1]).sum(1)
        den = ((1.0 - fr) ** 2 * Q[i0, i0] + 2.0 * fr * (1.0 - fr) * Q[i0, i0 + 1] + fr ** 2 * Q[i0 + 1, i0 + 1]).sum(1)
        ncc = num / np.sqrt(float((R * R).sum()) * den + 1e-12)
        gain = ncc - float(ncc[kk == 0].max())
        g = int(np.argmax(gain))
        if gain[g] > best[0]:
            best = (float(gain[g]), float(kk[g]), axis, float(cc[g]))
    gain_best, k, axis, c = best
    if gain_best < min_gain or k < min_curvature:
        return None
    return dataclasses.replace(_surface_of(axis, np.r_[k, c, np.zeros(CYLINDER_PARAMS - 2)], size), gain=gain_best)


def _check_maps(reference: np.ndarray, photo: np.ndarray, valid: np.ndarray) -> None:
    r, p = np.shape(reference), np.shape(photo)
    if r != p or r != np.shape(valid) or len(r) != 2 or r[0] != r[1]:
        raise ValueError(f"need three (S, S) maps of one size (reference, photo, valid), got {r}, {p}, "
                         f"{np.shape(valid)}")


def fit_surface(reference: np.ndarray, photo: np.ndarray, valid: np.ndarray, prior: Surface, *,
                step: int = 4, min_points: int = 200, scale: float = 1.5, min_ratio: float = 1.3,
                min_inliers: int = 400, min_curvature: float = 0.45, min_side: float = 0.25,
                turn: float = 0.0) -> Surface | None:
    """A cylinder's fit refined on the dense optical flow between a reference and the photo's crop taken
    through it: the label wrapped on a bottle, can or jar, to about a pixel.

    The homography fits the flattest part of the label (RANSAC keeps the largest planar set of keypoint
    matches; the compressed edges of a wrapped label match few keypoints at all), so the label's edges
    land too far out and its rows bend; :func:`search_cylinder` finds the curvature roughly. Method: DIS
    optical flow (Kroeger et al., ECCV 2016; OpenCV's ``DISOpticalFlow``) from the reference's
    contrast-normalised grey to the photo's, sampled every ``step`` pixels where the reference has texture,
    added to ``prior``'s offsets; the cylinder's :data:`CYLINDER_PARAMS` parameters refitted to it under a
    soft-L1 loss (``scipy.optimize.least_squares``, scale ``scale`` pixels): the label's position along the
    wrap is ``sin(k d) / k`` of its distance ``d`` from the line facing the camera, its rows bend by
    ``(t0 + t1 v) (1 - cos(k d))`` (the camera above or below the label), the wrap may run at an angle to
    the frame's axis, plus a projective correction (:func:`_cylinder_offsets`). A local departure (a moved,
    mirrored or distorted logo, a missing part) is a jump in the flow that a few smooth parameters cannot
    follow, so its print is still compared. Calling this again on the crop taken through the result refines
    it where the compression was.

    Args:
        reference: ``(S, S)`` float32 a reference's structure in the canonical frame
            (:func:`brandguard.mismatch.structure_map`).
        photo: ``(S, S)`` float32 the structure of the photo's crop taken through its homography and ``prior``.
        valid: ``(S, S)`` bool where both are valid.
        prior: the surface the crop was taken through (:func:`search_cylinder` or an earlier call).
        step: sampling stride (pixels).
        min_points: fewer textured valid samples than this: None.
        scale: the loss's scale (pixels): flow further than this from the model counts less and less.
        min_ratio: the cylinder must put at least this many times more samples within 2 pixels than the
            homography alone does (``plane_inliers``) ...
        min_inliers: ... at least this many samples (of ``(S / step)^2``) ...
        min_curvature: ... and curve by at least this much (``k``: 0.45, a label turning 26 degrees at
            the frame's edge) ...
        turn: the direction (radians) the label wraps along in the frame, held fixed (:func:`print_turn` of
            the reference: the card's own tilt in the anchor reference; never fitted to the photo, whose
            edits could turn it).
        min_side: ... and at least this share of the samples it explains and the plane does not must lie
            on each side of the line facing the camera; otherwise None. A bottle's flow grows smoothly towards both edges of its
            label and the cylinder follows it nearly everywhere; a moved, distorted or look-alike logo on a
            flat package moves one region, which a cylinder fitted to it explains no better than the plane
            (on the demo listings these rules leave every flat package on its homography: README).

    Returns:
        A :class:`Surface` (canonical ``q`` shows at the homography's crop position ``q + offset(q)``;
        ``inliers``: the samples the model follows within 2 pixels), or None (see above, or
        too little texture to refine on).

    Raises:
        ValueError: when the three arrays are not the same square shape.
    """
    _check_maps(reference, photo, valid)
    ref = np.asarray(reference, np.float32)
    size = ref.shape[0]
    to8 = [np.clip(np.nan_to_num(np.asarray(m, np.float32)) * 40.0 + 128.0, 0, 255).astype(np.uint8)
           for m in (ref, photo)]
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(to8[0], to8[1], None)
    textured = np.hypot(cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=3)) > 0.5
    inner = cv2.erode(np.asarray(valid, np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    ys, xs = np.mgrid[step // 2:size:step, step // 2:size:step]
    pick = (inner & textured)[ys, xs]
    xs, ys = xs[pick], ys[pick]
    if len(xs) < min_points:
        return None
    # ref(q) ~ crop_prior(q + flow(q)) ~ crop_H(q + flow(q) + offset_prior(q)) for a smooth prior
    f = flow[ys, xs].astype(np.float64) + _surface_maps(prior, size)[0][ys, xs]
    q = np.c_[xs, ys].astype(np.float64)
    u = q / max(size - 1, 1) * 2.0 - 1.0
    sub = np.random.default_rng(0).choice(len(u), 400, replace=False) if len(u) > 400 else np.arange(len(u))
    x0 = np.zeros(CYLINDER_PARAMS) if prior.params is None else np.asarray(prior.params, np.float64).copy()
    lo, hi = np.full(CYLINDER_PARAMS, -np.inf), np.full(CYLINDER_PARAMS, np.inf)
    lo[0], hi[0] = 0.0, 2.5  # up to 143 degrees of label either side of the line facing the camera
    lo[2:4], hi[2:4] = -_MAX_BEND, _MAX_BEND
    lo[10:12], hi[10:12] = -_MAX_PERSPECTIVE, _MAX_PERSPECTIVE
    x0[12] = float(np.clip(turn, -_MAX_TURN, _MAX_TURN))  # the print's direction, fixed: never fitted to the photo
    lo[12], hi[12] = x0[12] - 1e-6, x0[12] + 1e-6
    x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
    fit = least_squares(_cylinder_residual, x0, args=(u[sub], f[sub], prior.axis, size), loss="soft_l1",
                        f_scale=scale, max_nfev=25, bounds=(lo, hi))
    agree = np.linalg.norm(f - _cylinder_offsets(fit.x, u, prior.axis, size), axis=1) < 2.0
    plane = np.linalg.norm(f, axis=1) < 2.0
    if agree.sum() < max(min_inliers, min_ratio * plane.sum()) or fit.x[0] < min_curvature:
        return None
    # a label turns away on both sides of the line facing the camera: what the cylinder explains and the
    # plane does not lies on both sides of it (a moved or distorted logo sits on one)
    gained = agree & ~plane
    side = u[gained, prior.axis] > fit.x[1]
    if len(side) == 0 or min(side.mean(), 1.0 - side.mean()) < min_side:
        return None
    surface = _surface_of(prior.axis, fit.x, size)
    return dataclasses.replace(surface, inliers=int(agree.sum()), gain=prior.gain, plane_inliers=int(plane.sum()))


def _surface_maps(surface: Surface, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(size, size, 2)`` offsets and ``(size, size)`` detail of ``surface`` at every canonical pixel
    (bilinear between the nodes, which sit on the frame's first and last pixels)."""
    g = surface.grid.shape[0]
    c = np.arange(size, dtype=np.float32) * (g - 1) / max(size - 1, 1)
    mx, my = np.meshgrid(c, c)
    off = cv2.remap(surface.grid, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    det = cv2.remap(surface.detail, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return off, det


def surface_offsets(surface: Surface, size: int) -> np.ndarray:
    """``(size, size, 2)`` float32 offsets (canonical pixels, x then y) of ``surface`` at every canonical
    pixel: canonical ``q`` shows at the homography's crop position ``q + offset(q)``."""
    return _surface_maps(surface, size)[0]


def surface_valid(surface: Surface, size: int, min_detail: float = 0.4) -> np.ndarray:
    """The part of the canonical frame a curved alignment shows in enough detail to compare: where the
    photo shows at least ``min_detail`` of the detail the plane shows there (the compressed edges of a
    label turning away from the camera hold too little print: on a cylinder, 0.4 keeps the label up to 66
    degrees from the line facing the camera).

    Returns:
        ``(size, size)`` bool mask.
    """
    _, detail = _surface_maps(surface, size)
    return detail >= min_detail


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


#: scales (source pixels) at which :func:`source_noise` measures the noise where the reference shows no print:
#: grain that JPEG blocks and phone sharpening leave is correlated over a few pixels, which the pixel-scale
#: estimate misses
NOISE_SCALES = (1, 2)
#: ``|structure|`` (:func:`brandguard.mismatch.structure_map`) under which every reference counts as flat there
#: (:func:`flat_print`): no print within the structure's 15-px normalisation window
FLAT_LEVEL = 0.25
_MIN_FLAT = 256  # source pixels of flat print the coarse-scale measure needs


def flat_print(structures: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(S, S)`` bool: where every reference's structure map is flat (below :data:`FLAT_LEVEL`), i.e. no
    print there or nearby, the canonical pixels :func:`source_noise` measures coarse grain on.

    The structure map is blurred by 1.5 px first, so print finer than about 4 canonical pixels (a fine
    halftone, a fine fabric texture) is erased there and counts as flat: the 2-px measure then reads that
    print as grain, and the comparison gets a blur it does not need (a known limit, see the README).

    Args:
        structures: ``(n, S, S)`` the references' structure maps (``ProductBank.structure``).
        valid: ``(n, S, S)`` bool, where each reference is valid (None: everywhere).
    """
    st = np.abs(np.asarray(structures, np.float32))
    flat: np.ndarray = np.asarray((st < FLAT_LEVEL).all(0), bool)
    if valid is not None:
        flat &= np.asarray(valid, bool).all(0)
    return flat


def _coarse_noise(grey: np.ndarray, ok: np.ndarray, s: int) -> float:
    """Immerkaer's estimate on ``grey`` averaged over ``s x s`` pixels, at every offset (a box blur, then the
    Laplacian-difference taps ``s`` pixels apart: no dependence on where the product starts), times ``s``:
    the white noise at pixel scale that would read as much. NaN with fewer than :data:`_MIN_FLAT` pixels."""
    box = cv2.blur(grey, (s, s))
    kern = np.zeros((2 * s + 1, 2 * s + 1), np.float32)
    kern[::s, ::s] = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]
    r = np.abs(cv2.filter2D(box, -1, kern, borderType=cv2.BORDER_REFLECT))
    ok = cv2.erode(ok.astype(np.uint8), np.ones((2 * s + 3, 2 * s + 3), np.uint8)) > 0
    if ok.sum() < _MIN_FLAT:
        return float("nan")
    return s * float(np.median(r[ok]) / (6.0 * 0.6745))


def source_noise(source: np.ndarray, H: np.ndarray, size: int, flat: np.ndarray | None = None,
                 scales: tuple[int, ...] = NOISE_SCALES) -> float:
    """The sensor noise of the product's region of ``source``, as it lands in the canonical frame.

    The noise is measured at the source's own resolution (:func:`estimate_noise` inside the product's
    outline) and multiplied by the enlargement into the frame (canonical pixels per source pixel, at least
    1): a product enlarged 3 times carries grains of 3 pixels, which need 3 times the blur to clean
    (:func:`brandguard.mismatch.noise_blur` takes this value).

    Given where the product's references show no print (``flat``, :func:`flat_print`), noise is also
    measured there at the coarser ``scales`` (:func:`_coarse_noise`: averaged over ``s x s`` pixels, as the
    white noise that would leave as much), the largest value counting. White noise reads the same at every
    scale; grain correlated over a few pixels (ISO noise under JPEG compression and phone sharpening) reads
    far more at 2 pixels than at 1, where JPEG's flattened 8x8 blocks read as almost no noise. Print is
    left out because averaged print reads as strong noise at a coarse scale; without ``flat`` (or with
    fewer than 256 flat pixels) only the pixel scale is measured.

    Args:
        source: ``(h, w, 3)`` the image the crop is warped from.
        H: ``3x3`` canonical -> ``source`` pixels.
        size: side of the canonical frame (pixels).
        flat: ``(size, size)`` bool canonical pixels where the references show no print, or None (a mask of
            another shape is ignored like None).
        scales: measuring scales (source pixels); ``(1,)``: the pixel scale only.

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
    region = source[y0:y1, x0:x1]
    noise = estimate_noise(region, mask.astype(bool)) if 1 in scales else 0.0
    coarse = [s for s in scales if s > 1]
    if coarse and flat is not None and np.shape(flat) == (size, size):
        T = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        where = cv2.warpPerspective(np.asarray(flat, np.uint8), T @ np.asarray(H, np.float64), (x1 - x0, y1 - y0),
                                    flags=cv2.INTER_NEAREST, borderValue=0) > 0
        img = np.asarray(region)
        img = np.ascontiguousarray(img, np.uint8 if img.dtype == np.uint8 else np.float32)
        grey = (img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)).astype(np.float32)
        for s in coarse:
            v = _coarse_noise(grey, where & (mask > 0), s)
            if np.isfinite(v):
                noise = max(noise, v)
    return noise * enlargement


def crop_canonical(image: np.ndarray, full: np.ndarray, H: np.ndarray, size: int,
                   max_oversample: float = 1.5, *, with_noise: bool = False, surface: Surface | None = None,
                   warp: Any = None, flat: np.ndarray | None = None) -> Any:
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

        with_noise: also return the sensor noise of what was warped (:func:`source_noise`, measured at
            coarser scales too where ``flat``: the product's references show no print, :func:`flat_print`).
        surface: a curved package's residual warp (:func:`fit_surface`), applied on top of ``H``.
        warp: the plane warp to use instead of :func:`warp_to_canonical` (same arguments and results: a
            :class:`brandguard.accel.Geometry`'s ``warp``); a curved warp is always OpenCV's.

    Returns:
        ``(crop, valid)`` as :func:`warp_to_canonical`: ``(size, size, 3)`` uint8 and ``(size, size)`` bool;
        ``(crop, valid, noise)`` with ``with_noise``.
    """
    source, Hs = _crop_source(image, full, H, size, max_oversample)
    crop, valid = (warp or warp_to_canonical)(source, Hs, size) if surface is None \
        else _warp_surface(source, Hs, surface, size)
    return (crop, valid, source_noise(source, Hs, size, flat)) if with_noise else (crop, valid)


def _warp_surface(image: np.ndarray, H: np.ndarray, surface: Surface, size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp_to_canonical` through a curved alignment: canonical ``q`` samples ``H @ (q + offset(q))``."""
    if _degenerate(H):
        return np.zeros((size, size, 3), np.uint8), np.zeros((size, size), bool)
    off, _ = _surface_maps(surface, size)
    q = np.stack(np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64)), -1) + off
    p = cv2.perspectiveTransform(q.reshape(1, -1, 2), np.asarray(H, np.float64)).reshape(size, size, 2)
    p = p.astype(np.float32)
    crop = cv2.remap(image, p[..., 0], p[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    h, w = image.shape[:2]
    valid = (p[..., 0] >= -0.5) & (p[..., 0] <= w - 0.5) & (p[..., 1] >= -0.5) & (p[..., 1] <= h - 0.5)
    return crop, valid


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
