"""Things that lie on top of a package in a listing photo: fingers, price stickers, pens or cups, glare
and hand shadows. Drawn onto aligned authentic training photos with the mask of what they cover, so
the fine-tuned network learns where a departure from the references is no evidence of counterfeiting.

They enter from the border of the aligned frame (a hand holding the product, an object beside it) or sit
near it (a shop's price sticker), with a soft contact shadow, as in real listing photos; counterfeit
edits (:mod:`brandguard.training.edits`) change the print itself.

Example:
    >>> import numpy as np
    >>> from brandguard.training.occluders import add_occluder
    >>> img = np.full((128, 128, 3), 200, np.uint8)
    >>> out, mask = add_occluder(img, np.ones((128, 128), bool), np.random.default_rng(0))
    >>> bool(mask.any()), out.shape
    (True, (128, 128, 3))
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["OCCLUDERS", "add_occluder"]

OCCLUDERS = ("finger", "price_sticker", "object", "glare", "shadow")

_SKIN = ((224, 172, 140), (198, 134, 100), (241, 194, 160), (141, 85, 60), (255, 213, 180), (170, 110, 80))
_STICKER = ((250, 250, 245), (255, 228, 70), (255, 150, 160), (180, 225, 255), (255, 170, 60), (170, 240, 160))
_TEXTS = ("{a}.99", "{a}.49", "{a}.00", "{a}.95", "SALE", "-{b}%", "${a}", "{a},90")


def _edge_point(rng: np.random.Generator, S: int) -> tuple[np.ndarray, np.ndarray]:
    """A point on the frame border and the unit vector pointing inwards."""
    side = int(rng.integers(4))
    t = rng.uniform(0.1, 0.9) * S
    pts = {0: ((t, 0.0), (0.0, 1.0)), 1: ((S - 1.0, t), (-1.0, 0.0)), 2: ((t, S - 1.0), (0.0, -1.0)),
           3: ((0.0, t), (1.0, 0.0))}
    p, d = pts[side]
    inward = np.array(d) + rng.normal(0, 0.25, 2)
    return np.array(p, np.float64), inward / (np.linalg.norm(inward) + 1e-9)


def _finger(rng: np.random.Generator, S: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((S, S), np.float32)
    edge, inward = _edge_point(rng, S)
    wid = S * rng.uniform(0.08, 0.16)
    length = S * rng.uniform(0.35, 0.7)
    tip = edge + inward * rng.uniform(0.06, 0.28) * S
    mid = tip - inward * length / 2
    ang = math.degrees(math.atan2(inward[1], inward[0]))
    cv2.ellipse(mask, (int(mid[0]), int(mid[1])), (int(length / 2), int(wid / 2)), ang, 0, 360, 1.0, -1, cv2.LINE_AA)
    col = np.asarray(_SKIN[int(rng.integers(len(_SKIN)))], np.float32) * rng.uniform(0.8, 1.1)
    img = np.empty((S, S, 3), np.float32)
    img[:] = col
    nail = tip - inward * wid * 0.55
    cv2.ellipse(img, (int(nail[0]), int(nail[1])), (int(wid * 0.35), int(wid * 0.3)), ang, 0, 360,
                tuple(float(c) for c in np.minimum(col * 1.12 + 15, 255)), -1, cv2.LINE_AA)
    return mask, img


def _sticker(rng: np.random.Generator, S: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((S, S), np.float32)
    edge, inward = _edge_point(rng, S)
    wid = S * rng.uniform(0.14, 0.3)
    hei = wid * rng.uniform(0.4, 0.7)
    pos = edge + inward * rng.uniform(-0.02, 0.22) * S
    box = cv2.boxPoints(((float(pos[0]), float(pos[1])), (wid, hei), float(rng.uniform(-35, 35))))
    cv2.fillConvexPoly(mask, box.astype(np.int32), 1.0, cv2.LINE_AA)
    col = np.clip(np.asarray(_STICKER[int(rng.integers(len(_STICKER)))], np.float32) + rng.normal(0, 8, 3), 0, 255)
    img8 = np.empty((S, S, 3), np.uint8)
    img8[:] = col.astype(np.uint8)
    text = str(rng.choice(_TEXTS)).format(a=int(rng.integers(2, 199)), b=int(rng.integers(10, 70)))
    scale = float(hei / 42.0)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, max(1, int(hei / 25)))
    cv2.putText(img8, text, (int(pos[0] - tw / 2), int(pos[1] + th / 2)), cv2.FONT_HERSHEY_DUPLEX, scale,
                (int(rng.integers(0, 60)),) * 3, max(1, int(hei / 25)), cv2.LINE_AA)
    return mask, img8.astype(np.float32)


def _object(rng: np.random.Generator, S: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((S, S), np.float32)
    edge, inward = _edge_point(rng, S)
    if rng.random() < 0.5:  # a pen or a cable
        p0, p1 = edge - inward * S * 0.3, edge + inward * S * rng.uniform(0.12, 0.35)
        cv2.line(mask, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1.0,
                 max(3, int(S * rng.uniform(0.025, 0.06))), cv2.LINE_AA)
    else:  # the rim of a cup or a lid
        r = S * rng.uniform(0.15, 0.3)
        c = edge - inward * r * rng.uniform(0.5, 0.85)
        cv2.circle(mask, (int(c[0]), int(c[1])), int(r), 1.0, -1, cv2.LINE_AA)
    img = np.empty((S, S, 3), np.float32)
    img[:] = rng.uniform(15, 240, 3)
    return mask, img


def add_occluder(img: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                 kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one occluder (random ``kind`` from :data:`OCCLUDERS` unless given).

    Args:
        img: ``(S, S, 3)`` uint8 aligned photo.
        valid: ``(S, S)`` bool, pixels inside the photo (the mask is restricted to them).
        rng: all randomness.

    Returns:
        ``(image, mask)``: the photo with the occluder and a ``(S, S)`` bool mask of what it covers
        (for glare and shadows: where they change the photo noticeably).
    """
    if img.ndim != 3 or img.shape[0] != img.shape[1] or img.dtype != np.uint8:
        raise ValueError(f"expected a square (S, S, 3) uint8 image, got {img.shape} {img.dtype}")
    kind = kind or str(rng.choice(OCCLUDERS, p=[0.3, 0.3, 0.15, 0.15, 0.1]))
    S = img.shape[0]
    x = img.astype(np.float32)
    if kind in ("finger", "price_sticker", "object"):
        mask, occ = {"finger": _finger, "price_sticker": _sticker, "object": _object}[kind](rng, S)
        shadow = cv2.GaussianBlur(mask, (0, 0), S / 96)
        shift = np.float32([[1, 0, rng.uniform(-1, 1) * S / 100], [0, 1, rng.uniform(0.3, 1) * S / 100]])
        shadow = cv2.warpAffine(shadow, shift, (S, S))
        x = x * (1 - 0.4 * shadow[..., None])
        lit = occ * (0.8 + 0.3 * cv2.GaussianBlur(mask, (0, 0), S / 64)[..., None])
        x = x * (1 - mask[..., None]) + lit * mask[..., None]
        covered = mask > 0.5
    elif kind == "glare":
        c = rng.uniform(0.15, 0.85, 2) * S
        ax = rng.uniform(0.05, 0.18, 2) * S
        blob = np.zeros((S, S), np.float32)
        cv2.ellipse(blob, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), float(ax.min()) / 2.5)
        strength = rng.uniform(0.5, 0.9)
        x = x + (255.0 - x) * (strength * blob)[..., None]
        covered = strength * blob > 0.25
    elif kind == "shadow":
        edge, inward = _edge_point(rng, S)
        blob = np.zeros((S, S), np.float32)
        c = edge + inward * rng.uniform(0.0, 0.2) * S
        cv2.ellipse(blob, (int(c[0]), int(c[1])), (int(S * rng.uniform(0.2, 0.4)), int(S * rng.uniform(0.1, 0.25))),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), S / 30)
        depth = rng.uniform(0.35, 0.6)
        x = x * (1 - depth * blob)[..., None]
        covered = depth * blob > 0.2
    else:
        raise ValueError(f"unknown occluder {kind!r}; expected one of {', '.join(OCCLUDERS)}")
    return np.clip(x, 0, 255).astype(np.uint8), covered & valid.astype(bool)
