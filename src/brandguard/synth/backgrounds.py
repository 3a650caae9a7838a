"""Background sources of the second photo model (``studio-casual``), none shared with the demo model.

The demo photo model (:mod:`brandguard.synth.photo`) puts packages on scikit-image / matplotlib sample
photos and on procedural wood, fabric, marble, tiles, concrete and desk clutter. The sources here are
deliberately other ones, the way another photographer's home and shop differ from the first one's:

``bedding``     a duvet or bed sheet with soft folds, sometimes printed with dots or stripes
``carpet``      a rug: fine pile noise over patchy colour, sometimes with a patterned border
``granite``     a speckled kitchen countertop, light or dark
``cardboard``   a shipping box: corrugation, packing tape, printed handling marks
``room``        a painted wall meeting a floor (skirting board), seen from a chair
``shelf``       a store shelf with rows of other, unbranded boxes
``photo``       scikit-learn's two bundled sample photos (a temple in China, a flower), cropped and
                colour-jittered

Every function takes ``(rng, h, w)`` and returns an ``h x w x 3`` float32 image in 0..255, drawn only
from ``rng``.

Example:
    >>> import numpy as np
    >>> from brandguard.synth.backgrounds import BACKGROUNDS
    >>> BACKGROUNDS["granite"](np.random.default_rng(0), 60, 80).shape
    (60, 80, 3)
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .photo import _fbm

__all__ = ["BACKGROUNDS", "Background"]

Background = Callable[[np.random.Generator, int, int], np.ndarray]

_PASTELS = ((235, 225, 215), (205, 215, 235), (240, 215, 220), (215, 235, 215), (245, 240, 225),
            (180, 190, 205), (120, 130, 150), (230, 230, 235))


def _jitter(rng: np.random.Generator, base: tuple[float, float, float], amount: float = 10.0) -> np.ndarray:
    c = np.asarray(base, np.float32) * rng.uniform(0.85, 1.1)
    return np.clip(c + rng.normal(0, amount, 3).astype(np.float32), 0, 255)


def bedding(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A duvet with soft folds (a few long sinusoidal ridges, warped), sometimes printed."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = _fbm(rng, h, w, cells=2, octaves=2) * rng.uniform(15, 40)
    shade = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        a = rng.uniform(0, math.pi)
        period = rng.uniform(0.25, 0.7) * max(h, w)
        u = xx * math.cos(a) + yy * math.sin(a) + warp
        shade += np.sin(u * 2 * math.pi / period + rng.uniform(0, 6.3)) ** 3 * rng.uniform(0.04, 0.1)
    img = _jitter(rng, _PASTELS[int(rng.integers(len(_PASTELS)))])[None, None] * (1 + shade)[..., None]
    kind = rng.random()
    if kind < 0.3:  # polka dots
        step = rng.uniform(14, 30)
        d = np.hypot(np.mod(xx + warp, step) - step / 2, np.mod(yy + warp * 0.5, step) - step / 2)
        dot = (d < step * rng.uniform(0.12, 0.25))[..., None]
        img = np.where(dot, img * rng.uniform(0.55, 0.8, 3).astype(np.float32), img)
    elif kind < 0.55:  # stripes
        step = rng.uniform(12, 40)
        s = (np.mod(xx + 0.3 * warp, step) < step * 0.35)[..., None]
        img = np.where(s, img * rng.uniform(0.7, 0.9), img)
    return img.astype(np.float32)


def carpet(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A rug: per-pixel pile noise over patchy colour, sometimes a geometric border."""
    base = _jitter(rng, ((150, 60, 50), (70, 90, 120), (190, 170, 140), (90, 90, 85), (60, 100, 80))[
        int(rng.integers(5))], 12)
    patch = _fbm(rng, h, w, cells=5, octaves=3)
    pile = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 0.7) - 0.5
    img = base[None, None] * (1 + 0.12 * patch[..., None] + rng.uniform(0.35, 0.6) * pile[..., None])
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        band = rng.uniform(0.1, 0.3) * h
        y0 = rng.uniform(0, h)
        inside = (np.abs(yy - y0) < band / 2)[..., None]
        step = rng.uniform(10, 24)
        zig = (np.mod(xx + np.abs(yy - y0) * rng.choice([-1.0, 1.0]), step) < step / 2)[..., None]
        accent = _jitter(rng, (220, 200, 150), 30)
        img = np.where(inside & zig, accent[None, None] * (1 + 0.4 * pile[..., None]), img)
    return img.astype(np.float32)


def granite(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A speckled stone countertop (dark or light), with a faint polish highlight."""
    dark = rng.random() < 0.5
    base = _jitter(rng, (45, 42, 40) if dark else (205, 200, 190), 6)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    img *= (1 + 0.06 * _fbm(rng, h, w, cells=4, octaves=3))[..., None]
    for _ in range(3):
        col = _jitter(rng, ((20, 20, 20), (230, 225, 215), (150, 110, 90), (110, 110, 115))[int(rng.integers(4))], 15)
        seeds = (rng.random((h, w)) < rng.uniform(0.03, 0.12)).astype(np.float32)
        m = cv2.GaussianBlur(seeds, (0, 0), float(rng.uniform(0.5, 1.4)))
        spots = np.clip(m * rng.uniform(1.5, 3.0), 0, 1)[..., None]
        img = img * (1 - spots) + col[None, None] * spots
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.3 * max(h, w)) ** 2))
    return (img + (255 - img) * spot[..., None] * rng.uniform(0.05, 0.2)).astype(np.float32)


_HANDLING = ("THIS SIDE UP", "FRAGILE", "HANDLE WITH CARE", "KEEP DRY", "No. 4471-B", "PARCEL", "0.85 kg")


def cardboard(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A shipping box: brown board, corrugation, a strip of packing tape and printed handling marks."""
    base = _jitter(rng, (185, 145, 100), 8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vertical = rng.random() < 0.5
    a = xx if vertical else yy
    corr = np.sin(a * 2 * math.pi / rng.uniform(4, 7)) * 0.025
    fib = _fbm(rng, h, w, cells=8, octaves=4, persistence=0.7) * 0.06
    img = base[None, None] * (1 + corr + fib)[..., None]
    # packing tape across the box
    tw = rng.uniform(0.08, 0.16) * min(h, w)
    b = yy if not vertical else xx
    b0 = rng.uniform(0.2, 0.8) * (h if not vertical else w)
    tape = (np.abs(b - b0) < tw / 2)[..., None]
    tape_col = _jitter(rng, (200, 170, 120), 6) if rng.random() < 0.6 else _jitter(rng, (235, 235, 230), 4)
    img = np.where(tape, tape_col[None, None] * (1 + 0.25 * np.exp(-((b - b0) / (tw / 3)) ** 2))[..., None], img)
    img8 = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    ink = tuple(float(c) for c in rng.uniform(20, 70, 3))
    for _ in range(int(rng.integers(1, 4))):
        cv2.putText(img8, str(rng.choice(_HANDLING)), (int(rng.uniform(0, 0.6) * w), int(rng.uniform(0.1, 1) * h)),
                    cv2.FONT_HERSHEY_DUPLEX, float(rng.uniform(0.5, 1.2)), ink, int(rng.integers(1, 3)), cv2.LINE_AA)
    if rng.random() < 0.5:  # "this way up" arrows
        x0, y0 = int(rng.uniform(0.1, 0.8) * w), int(rng.uniform(0.3, 0.9) * h)
        for k in range(2):
            cv2.arrowedLine(img8, (x0 + 22 * k, y0), (x0 + 22 * k, y0 - 35), ink, 3, cv2.LINE_AA, tipLength=0.35)
    return img8.astype(np.float32)


def room(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A painted wall above a floor, parted by a skirting board; the horizon is tilted a little."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = rng.uniform(0.35, 0.75) * h + (xx - w / 2) * math.tan(math.radians(rng.uniform(-8, 8)))
    wall = _jitter(rng, _PASTELS[int(rng.integers(len(_PASTELS)))], 8)
    wall_img = wall[None, None] * (1 - 0.15 * (yy / h) + 0.03 * _fbm(rng, h, w, cells=3, octaves=2))[..., None]
    floor_col = _jitter(rng, ((160, 150, 140), (95, 80, 70), (200, 195, 185), (120, 120, 125))[int(rng.integers(4))], 10)
    grain = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.2) - 0.5
    floor_img = floor_col[None, None] * (0.85 + 0.2 * (yy / h) + 0.3 * grain)[..., None]
    skirting = rng.uniform(0.03, 0.07) * h
    board = _jitter(rng, (240, 238, 232), 5)
    img = np.where((yy < horizon)[..., None], wall_img, floor_img)
    img = np.where(((yy >= horizon - skirting) & (yy < horizon))[..., None], board[None, None] * 0.95, img)
    return img.astype(np.float32)


def shelf(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A store shelf: metal shelf edges and rows of other, unbranded boxes and tins."""
    img8 = np.empty((h, w, 3), np.uint8)
    img8[:] = _jitter(rng, (70, 70, 75), 10).astype(np.uint8)
    y = -rng.uniform(0, 0.3) * h
    while y < h:
        row_h = rng.uniform(0.3, 0.5) * h
        x = -rng.uniform(0, 0.1) * w
        while x < w:
            bw = rng.uniform(0.08, 0.2) * w
            bh = row_h * rng.uniform(0.6, 0.92)
            rgb = rng.uniform(30, 240, 3)
            col = tuple(float(c) for c in rgb * 0.6 + rgb.mean() * 0.4)
            top = int(y + row_h - bh)
            cv2.rectangle(img8, (int(x), top), (int(x + bw) - 2, int(y + row_h)), col, -1)
            band = tuple(float(c) for c in rng.uniform(40, 230, 3) * 0.6 + 0.4 * 135)
            by = int(top + bh * rng.uniform(0.2, 0.6))
            cv2.rectangle(img8, (int(x), by), (int(x + bw) - 2, by + int(bh * rng.uniform(0.1, 0.25))), band, -1)
            if rng.random() < 0.5:
                cv2.circle(img8, (int(x + bw / 2), int(top + bh * 0.25)), int(bw * rng.uniform(0.12, 0.25)),
                           tuple(255.0 - c for c in col), -1, cv2.LINE_AA)
            x += bw
        edge = int(rng.uniform(0.03, 0.06) * h)
        cv2.rectangle(img8, (0, int(y + row_h)), (w, int(y + row_h) + edge),
                      tuple(float(c) for c in _jitter(rng, (200, 200, 205), 8)), -1)
        # price labels on the shelf edge
        for _ in range(int(rng.integers(1, 4))):
            lx = int(rng.uniform(0, w))
            cv2.rectangle(img8, (lx, int(y + row_h) + 2), (lx + int(0.06 * w), int(y + row_h) + edge - 2),
                          (250, 250, 240), -1)
        y += row_h + edge
    img = img8.astype(np.float32)
    # the aisle is lit from above: darker towards the bottom
    return img * (1.05 - 0.3 * np.linspace(0, 1, h, dtype=np.float32)[:, None, None])


@functools.lru_cache(maxsize=1)
def _sample_photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled sample photos (china.jpg, flower.jpg), when installed."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
    out = []
    for name in ("china.jpg", "flower.jpg"):
        p = folder / name
        if p.is_file():
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
            arr.flags.writeable = False
            out.append(arr)
    return tuple(out)


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A crop of one of scikit-learn's sample photos (falls back to :func:`room` when none is installed)."""
    lib = _sample_photos()
    if not lib:
        return room(rng, h, w)
    src = lib[int(rng.integers(len(lib)))]
    sh, sw = src.shape[:2]
    s = rng.uniform(0.3, 0.9)
    ch = max(8, int(min(sh, sw * h / w) * s))
    cw = max(8, min(sw, int(ch * w / h)))
    y0 = int(rng.integers(0, sh - ch + 1))
    x0 = int(rng.integers(0, sw - cw + 1))
    crop = src[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    gray = img.mean(2, keepdims=True)
    return gray + (img - gray) * rng.uniform(0.5, 1.2)


#: Background sources of the ``studio-casual`` photo model, by name.
BACKGROUNDS: dict[str, Background] = {
    "bedding": bedding,
    "carpet": carpet,
    "granite": granite,
    "cardboard": cardboard,
    "room": room,
    "shelf": shelf,
    "photo": photo,
}
