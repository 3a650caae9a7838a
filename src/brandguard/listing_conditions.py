"""Simulated listing conditions: what a seller's camera does to a product that a studio reference lacks.

References are clean studio shots; listing photos are not. Comparing references with each other therefore
says little about how far an *authentic listing photo* departs from them. Before any ``calibrate`` (the
cold start), the index learns authentic variation from references re-photographed under listing
conditions instead: each simulated photo is localised, warped and compared with the product's other
references exactly like a listing photo (:func:`brandguard.comparison.compare`).

The conditions are deliberately broader than any one camera: perspective and in-plane rotation, a smaller
product in the frame (fewer pixels on it), glare (a quarter of the photos), something on top of the package
(a fifth: a finger, a sticker), uneven light, colour casts, exposure, gamma, motion or defocus blur, sensor
noise and JPEG compression (quality 35-92), drawn with albumentations.

Example:
    >>> import numpy as np
    >>> from brandguard.listing_conditions import simulate_listing_photos
    >>> photo = np.full((240, 320, 3), 128, np.uint8)
    >>> sims = simulate_listing_photos(photo, np.random.default_rng(0), 2)
    >>> len(sims), sims[0].shape
    (2, (240, 320, 3))
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import cv2
import numpy as np

__all__ = ["simulate_listing_photos"]


_LOCAL = threading.local()  # one pipeline per thread: each call re-seeds it, so threads never wait for each other


def _pipeline() -> Any:
    pipe = getattr(_LOCAL, "pipeline", None)
    if pipe is None:
        pipe = _LOCAL.pipeline = _make_pipeline()
    return pipe


def _make_pipeline() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check on import
    import albumentations as A

    return A.Compose([
        A.ColorJitter(brightness=(0.75, 1.25), contrast=(0.7, 1.25), saturation=(0.65, 1.3), hue=(-0.04, 0.04),
                      p=0.9),
        A.RandomGamma(gamma_limit=(75, 130), p=0.5),
        A.OneOf([
            A.MotionBlur(blur_limit=(3, 9), p=1.0),
            A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.4), p=1.0),
            A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.5, 1.6), p=1.0),
        ], p=0.7),
        A.OneOf([
            A.ISONoise(color_shift=(0.01, 0.05), intensity=(0.1, 0.5), p=1.0),
            A.GaussNoise(std_range=(0.01, 0.05), p=1.0),
        ], p=0.8),
        A.ImageCompression(quality_range=(35, 92), p=1.0),
    ])


def _geometry(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, float]:
    """A random homography of the photo onto itself: smaller, turned, seen at an angle, moved a little."""
    s = rng.uniform(0.5, 1.0)
    ang = math.radians(rng.uniform(-15.0, 15.0))
    c, sn = math.cos(ang) * s, math.sin(ang) * s
    cx, cy = w / 2.0, h / 2.0
    tx, ty = rng.uniform(-0.08, 0.08) * w * (1.0 - s + 0.2), rng.uniform(-0.08, 0.08) * h * (1.0 - s + 0.2)
    A = np.array([[c, -sn, cx - c * cx + sn * cy + tx], [sn, c, cy - sn * cx - c * cy + ty], [0, 0, 1]])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.uniform(-0.06, 0.06, (4, 2)) * [w, h] * s
    dst = cv2.perspectiveTransform(src[None], A)[0] + jitter
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32)), s


def _light(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Uneven light (a gradient, sometimes a vignette) and a colour cast (white balance)."""
    h, w = img.shape[:2]
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    a = rng.uniform(0, 2 * math.pi)
    gain = 1.0 + rng.uniform(0.0, 0.5) * (xs * math.cos(a) + ys * math.sin(a))
    if rng.random() < 0.4:
        gain = gain * (1.0 - rng.uniform(0.1, 0.4) * 2 * (xs ** 2 + ys ** 2))
    cast = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    out = img.astype(np.float32)
    np.multiply(out, gain[..., None], out=out)  # in place: the same numbers as (img * gain) * cast, fewer copies
    np.multiply(out, cast, out=out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _glare_and_cover(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Sometimes glare (a soft bright spot) and sometimes something on top of the package (a finger, a
    sticker: a soft-edged blob of another colour), near the middle of the frame where the product is."""
    h, w = img.shape[:2]
    glare, cover = rng.random() < 0.25, None
    if not glare:
        cover = rng.random() < 0.2
        if not cover:
            return img  # neither (about 60% of the photos): nothing to draw
    out: np.ndarray = img.astype(np.float32)
    side = math.sqrt(h * w)
    if glare:
        m: np.ndarray = np.zeros((h, w), np.float32)
        centre = (int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7)))
        r = side * rng.uniform(0.05, 0.12)
        cv2.ellipse(m, centre, (int(r), int(r * rng.uniform(0.3, 0.8))), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        # blurred where the blur can reach (the spot and a whole kernel around it): the rest stays exactly 0
        sigma = max(1.0, r / 3)
        reach = int(r) + (round(8 * sigma + 1) | 1) + 2
        ya, yb = max(0, centre[1] - reach), min(h, centre[1] + reach + 1)
        xa, xb = max(0, centre[0] - reach), min(w, centre[0] + reach + 1)
        m[ya:yb, xa:xb] = cv2.GaussianBlur(np.ascontiguousarray(m[ya:yb, xa:xb]), (0, 0), sigma)
        out = out + (255 - out) * m[..., None] * rng.uniform(0.35, 0.7)
    if cover is None:  # drawn after the glare's own numbers
        cover = rng.random() < 0.2
    if cover:
        m = np.zeros((h, w), np.float32)
        c = np.array([w * rng.uniform(0.25, 0.75), h * rng.uniform(0.25, 0.75)])
        r = side * rng.uniform(0.05, 0.13)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 7))
        pts = c + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.5, 1.3, (7, 1))
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1.0)
        m = cv2.GaussianBlur(m, (0, 0), 1.5)
        colour = rng.uniform(40, 235, 3).astype(np.float32)
        out = out * (1 - m[..., None]) + colour * m[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def simulate_listing_photos(photo: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` simulated listing photos of a reference photo (see the module docstring).

    Args:
        photo: ``(H, W, 3)`` uint8 RGB reference photo.
        rng: source of all randomness (albumentations is re-seeded from it), so the result is a pure function
            of the photo and the generator state.
        n: how many photos.

    Returns:
        ``n`` arrays of the photo's shape, uint8 RGB.
    """
    h, w = photo.shape[:2]
    pipe = _pipeline()
    out = []
    for _ in range(n):
        H, s = _geometry(rng, w, h)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        # shrink first (area averaging, as a camera further away would), then warp at about unit scale
        small = cv2.resize(photo, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
        Hs = H @ np.diag([w / small.shape[1], h / small.shape[0], 1.0])
        img = cv2.warpPerspective(small, Hs, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=fill)
        img = _light(rng, _glare_and_cover(rng, img))
        pipe.set_random_seed(int(rng.integers(0, 2 ** 31 - 1)))
        img = pipe(image=img)["image"]
        out.append(np.ascontiguousarray(img))
    return out
