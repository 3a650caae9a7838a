"""Simulated photographs of a package: studio reference shots and hard marketplace listing photos.

:func:`photograph` places a rendered package face (RGBA) into a scene under a random homography and returns
the photo and the package's four corners in it. Two styles:

``"studio"``
    A clean reference shot: plain or softly graded light background, product centred and covering 60-85 % of
    the frame, mild perspective, a soft shadow, little noise.
``"listing"``
    What sellers upload: the product covers 30-85 % of the frame, in-plane rotation up to 15 deg, random
    perspective, busy backgrounds (real photos bundled with scikit-image and matplotlib, or procedural wood,
    fabric, marble, tiles, concrete and desk clutter), uneven lighting, colour casts, glare, shadows, motion
    or defocus blur, sensor noise, JPEG artefacts (quality 55-90) and, in about 15 % of photos, a finger,
    price sticker or object covering at most 15 % of the package.

Everything is drawn from the ``rng`` passed in (albumentations is re-seeded from it), so a photo is a pure
function of the package and the generator state.

Example:
    >>> import numpy as np
    >>> from brandguard.synth import make_design, photograph, render_package
    >>> img, quad = photograph(render_package(make_design("nike", 0), 0.6), np.random.default_rng(0), "listing")
    >>> img.dtype.name, quad.shape
    ('uint8', (4, 2))
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import DataError

__all__ = ["OUTPUT_SIZES", "PHOTO_STYLES", "photograph", "quad_area"]

PHOTO_STYLES = ("studio", "listing")
#: Possible output sizes ``(width, height)``.
OUTPUT_SIZES = ((640, 480), (480, 640), (600, 600))

_REAL_PHOTOS = (
    # (file, tint for grayscale images or None)
    ("skimage", "astronaut.png"),
    ("skimage", "coffee.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "camera.png"),
    ("skimage", "coins.png"),
    ("skimage", "brick.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "motorcycle_right.png"),
    ("skimage", "page.png"),
    ("skimage", "text.png"),
    ("skimage", "clock_motion.png"),
    ("skimage", "moon.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
)
_TINTS = {
    "brick.png": (1.15, 0.8, 0.65),
    "grass.png": (0.75, 1.05, 0.6),
    "gravel.png": (1.05, 1.0, 0.9),
    "coins.png": (1.05, 0.95, 0.8),
    "page.png": (1.05, 1.02, 0.95),
    "text.png": (1.0, 1.0, 0.95),
}


def quad_area(quad: np.ndarray) -> float:
    """Area (pixels) of a quadrilateral given as 4x2 corners in order."""
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@functools.lru_cache(maxsize=1)
def _photo_library() -> tuple[np.ndarray, ...]:
    """The real photos available offline (those whose files exist), as RGB uint8 arrays."""
    dirs: dict[str, Path] = {}
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        dirs["skimage"] = Path(next(iter(spec.submodule_search_locations))) / "data"
    try:
        import matplotlib

        dirs["matplotlib"] = Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:  # pragma: no cover - matplotlib is a synth dependency
        pass
    out = []
    for src, name in _REAL_PHOTOS:
        p = dirs.get(src, Path("/nonexistent")) / name
        if not p.is_file():
            continue
        with Image.open(p) as im:
            gray = im.mode in ("L", "I", "I;16", "LA")
            arr = np.asarray(im.convert("RGB"), np.float32)
        if gray:
            arr = arr * np.asarray(_TINTS.get(name, (1.0, 0.98, 0.93)), np.float32)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        arr.flags.writeable = False
        out.append(arr)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# Procedural textures (float32 HxWx3, 0..255)
# ---------------------------------------------------------------------------------------------------------


def _fbm(
    rng: np.random.Generator, h: int, w: int, cells: int = 3, octaves: int = 4, persistence: float = 0.55
) -> np.ndarray:
    """Fractal value noise in about [-1, 1]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        n = cells * (2**k)
        g = rng.random((max(2, int(n * h / max(h, w))) + 1, n + 1)).astype(np.float32)
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    return (out / total - 0.5) * 2.0


def _color(rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 8.0) -> np.ndarray:
    """A natural variant of ``base``: brightness change plus a small per-channel cast."""
    b = np.asarray(base, np.float32) * rng.uniform(0.8, 1.15)
    return np.clip(b + rng.normal(0, jitter, 3).astype(np.float32), 0, 255)


_WOODS = ((200, 160, 110), (120, 80, 50), (220, 185, 135), (205, 195, 180), (85, 58, 40), (170, 110, 70))


def _tex_wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vertical = rng.random() < 0.5
    a, b = (xx, yy) if vertical else (yy, xx)
    n = _fbm(rng, h, w, cells=2, octaves=3)
    freq = rng.uniform(0.08, 0.2)
    rings = np.sin(a * freq + n * rng.uniform(6, 14) + 0.02 * b * rng.uniform(-1, 1)) * 0.5 + 0.5
    rings = rings ** rng.uniform(1.5, 4)
    light = _color(rng, _WOODS[int(rng.integers(len(_WOODS)))])
    dark = light * rng.uniform(0.55, 0.75)
    # fine grain: noise stretched along the grain
    gshape = (max(2, h // 24), w) if vertical else (h, max(2, w // 24))
    grain = cv2.resize(rng.random(gshape).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) - 0.5
    rings = np.clip(rings + grain * rng.uniform(0.3, 0.6), 0, 1)
    img = light[None, None] * (1 - rings[..., None]) + dark[None, None] * rings[..., None]
    # planks
    plank = rng.uniform(0.15, 0.35) * (w if vertical else h)
    idx = np.floor(a / plank)
    shade = (1 + 0.12 * np.sin(idx * 12.9898 + rng.random() * 10))[..., None]
    seam = (np.abs(a - (idx + 0.5) * plank) > plank / 2 - 1.2)[..., None]
    img = img * shade * np.where(seam, 0.55, 1.0)
    return img.astype(np.float32)


_FABRICS = (
    (60, 80, 120),
    (40, 55, 90),
    (150, 150, 150),
    (70, 70, 72),
    (200, 185, 160),
    (110, 40, 50),
    (50, 80, 55),
    (180, 120, 90),
    (225, 220, 210),
    (120, 100, 140),
)


def _tex_fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.5, 1.2)
    weave = (np.sin(xx * f) * np.sin(yy * f)) * 0.5 + 0.5
    base = _color(rng, _FABRICS[int(rng.integers(len(_FABRICS)))])
    n = _fbm(rng, h, w, cells=4, octaves=3)
    img = base[None, None] * (0.82 + 0.18 * weave[..., None] + 0.12 * n[..., None])
    if rng.random() < 0.4:  # tartan / stripes
        period = rng.uniform(20, 60)
        s = ((np.mod(xx, period) < period * 0.25) | (np.mod(yy, period) < period * 0.25))[..., None]
        img = np.where(s, img * rng.uniform(0.6, 0.85), img)
    return img.astype(np.float32)


def _tex_marble(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n = _fbm(rng, h, w, cells=3, octaves=5)
    ang = rng.uniform(0, np.pi)
    u = (xx * math.cos(ang) + yy * math.sin(ang)) * rng.uniform(0.02, 0.05)
    veins = np.abs(np.sin(u + n * rng.uniform(4, 9))) ** rng.uniform(0.15, 0.35)
    base = _color(rng, (232, 230, 225), 5)
    vein_c = base * rng.uniform(0.35, 0.6)
    return (vein_c[None, None] + (base - vein_c)[None, None] * veins[..., None]).astype(np.float32)


def _tex_tiles(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    size = rng.uniform(25, 80)
    ix, iy = np.floor(xx / size), np.floor(yy / size)
    base = _color(rng, _FABRICS[int(rng.integers(len(_FABRICS)))]) * rng.uniform(0.9, 1.2)
    var = np.sin(ix * 12.9898 + iy * 78.233) * 43758.5453
    var = (var - np.floor(var) - 0.5)[..., None]
    img = base[None, None] * (1 + 0.18 * var)
    if rng.random() < 0.3:
        img = np.where(((ix + iy) % 2 == 0)[..., None], img, img * 0.6)
    grout = ((np.mod(xx, size) < 2.5) | (np.mod(yy, size) < 2.5))[..., None]
    img = np.where(grout, _color(rng, (200, 200, 195))[None, None], img)
    return (img * (1 + 0.08 * _fbm(rng, h, w)[..., None])).astype(np.float32)


def _tex_concrete(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _color(rng, (150, 148, 140))
    n = _fbm(rng, h, w, cells=6, octaves=5, persistence=0.7)
    speck = (rng.random((h, w)) < 0.02).astype(np.float32) * rng.uniform(-60, 60)
    return (base[None, None] * (1 + 0.25 * n[..., None]) + speck[..., None]).astype(np.float32)


_WORDS = (
    "SALE",
    "Receipt",
    "Total",
    "Notes",
    "Meeting 10:30",
    "milk eggs bread",
    "Invoice #2231",
    "Hello",
    "Q3 report",
    "TODO",
    "12.99",
    "Thank you!",
    "Shipping",
    "Fragile",
    "Order 4471",
    "www.shop.example",
)


def _tex_clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = _tex_wood(rng, h, w) if rng.random() < 0.4 else _tex_concrete(rng, h, w)
    img = np.ascontiguousarray(
        np.clip(img, 0, 255).astype(np.uint8)
    )  # OpenCV draws text on 8-bit images only
    for _ in range(int(rng.integers(8, 22))):
        kind = rng.random()
        rgb = rng.uniform(20, 250, 3)
        col = tuple(float(c) for c in rgb * 0.65 + rgb.mean() * 0.35)
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        if kind < 0.35:  # paper / book / box
            bw, bh = rng.uniform(0.1, 0.45) * w, rng.uniform(0.1, 0.45) * h
            box = cv2.boxPoints(((cx, cy), (bw, bh), float(rng.uniform(0, 180))))
            cv2.fillConvexPoly(img, box.astype(np.int32), col, cv2.LINE_AA)
            if rng.random() < 0.6:
                for k in range(int(rng.integers(1, 5))):
                    cv2.putText(
                        img,
                        str(rng.choice(_WORDS)),
                        (int(cx - bw / 3), int(cy - bh / 4 + k * 14)),
                        cv2.FONT_HERSHEY_SIMPLEX,
                        float(rng.uniform(0.35, 0.7)),
                        tuple(float(c) * 0.3 for c in col),
                        1,
                        cv2.LINE_AA,
                    )
        elif kind < 0.55:  # cup / plate / coin
            r = float(rng.uniform(0.03, 0.15) * max(h, w))
            cv2.circle(img, (int(cx), int(cy)), int(r), col, -1, cv2.LINE_AA)
            cv2.circle(img, (int(cx), int(cy)), int(r * 0.8), tuple(c * 0.8 for c in col), 2, cv2.LINE_AA)
        elif kind < 0.75:  # cable / pen
            pts = np.cumsum(rng.normal(0, 30, (6, 2)), 0) + [cx, cy]
            cv2.polylines(img, [pts.astype(np.int32)], False, col, int(rng.integers(2, 7)), cv2.LINE_AA)
        else:  # text
            cv2.putText(
                img,
                str(rng.choice(_WORDS)),
                (int(cx), int(cy)),
                int(rng.choice([0, 2, 3, 4])),
                float(rng.uniform(0.5, 1.6)),
                col,
                int(rng.integers(1, 3)),
                cv2.LINE_AA,
            )
    return img.astype(np.float32)


_TEXTURES = (_tex_wood, _tex_fabric, _tex_marble, _tex_tiles, _tex_concrete, _tex_clutter)


def _real_background(rng: np.random.Generator, W: int, H: int) -> np.ndarray:
    lib = _photo_library()
    src = lib[int(rng.integers(len(lib)))]
    sh, sw = src.shape[:2]
    s = rng.uniform(0.45, 1.0)
    ch = int(min(sh, sw * H / W) * s)
    cw = int(ch * W / H)
    y0 = int(rng.integers(0, sh - ch + 1))
    x0 = int(rng.integers(0, sw - cw + 1))
    crop = src[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(crop), (W, H), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    # colour jitter: per-channel gain, brightness, saturation
    gray = img.mean(2, keepdims=True)
    img = gray + (img - gray) * rng.uniform(0.6, 1.3)
    img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32) * rng.uniform(0.75, 1.15)
    if rng.random() < 0.35:  # shallow depth of field
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 4)))
    return img


def _studio_background(rng: np.random.Generator, W: int, H: int) -> np.ndarray:
    hue_col = np.asarray([rng.uniform(225, 250)] * 3, np.float32) + rng.normal(0, 6, 3).astype(np.float32)
    if rng.random() < 0.25:  # coloured paper sweep
        hue_col = (0.45 * rng.uniform(150, 250, 3) + 0.55 * 235).astype(np.float32)
    yy = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
    grad = 1.0 - rng.uniform(0.05, 0.2) * yy**1.5 - rng.uniform(0.0, 0.12) * (xx**2)
    return hue_col[None, None] * grad[..., None]


def _background(rng: np.random.Generator, W: int, H: int, style: str) -> np.ndarray:
    if style == "studio":
        return _studio_background(rng, W, H)
    if _photo_library() and rng.random() < 0.45:
        return _real_background(rng, W, H)
    tex = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    small = tex(rng, H // 2, W // 2)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------


def _place(rng: np.random.Generator, pw: int, ph: int, W: int, H: int, style: str) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of the package in the photo."""
    lo, hi = (0.60, 0.85) if style == "studio" else (0.30, 0.85)
    max_rot = 4.0 if style == "studio" else 15.0
    persp = 0.035 if style == "studio" else 0.09
    margin = 0.01
    target = float(rng.uniform(lo, hi))
    aspect = pw / ph
    best: np.ndarray | None = None
    for attempt in range(12):
        rot = math.radians(rng.uniform(-max_rot, max_rot)) * (0.6**attempt if attempt > 4 else 1.0)
        h = math.sqrt(target * W * H / aspect)
        w = h * aspect
        q = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        q = q + rng.uniform(-persp, persp, (4, 2)) * np.array([w, h])
        c, s = math.cos(rot), math.sin(rot)
        q = q @ np.array([[c, s], [-s, c]])
        q *= math.sqrt(target * W * H / quad_area(q))
        span = q.max(0) - q.min(0)
        k = min(1.0, (1 - 2 * margin) * W / span[0], (1 - 2 * margin) * H / span[1])
        q *= k
        if quad_area(q) / (W * H) >= lo + 0.005:
            best = q
            break
        if best is None or quad_area(q) > quad_area(best):
            best = q
    if best is None:
        raise RuntimeError("photograph: no placement of the package was tried; the attempt count must be positive")
    q = best
    lo_xy = -q.min(0) + margin * np.array([W, H])
    hi_xy = np.array([W, H]) * (1 - margin) - q.max(0)
    if style == "studio":
        centre = np.array([W, H]) / 2 + rng.normal(0, 0.02, 2) * np.array([W, H])
    else:
        centre = rng.uniform(np.minimum(lo_xy, hi_xy), np.maximum(lo_xy, hi_xy))
    centre = np.clip(centre, np.minimum(lo_xy, hi_xy), np.maximum(lo_xy, hi_xy))
    return (q + centre).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Occluders and lighting
# ---------------------------------------------------------------------------------------------------------

_SKIN = ((224, 172, 140), (198, 134, 96), (141, 85, 58), (240, 200, 170), (170, 110, 80))


def _occluder(rng: np.random.Generator, quad: np.ndarray, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask float HxW, colour image HxWx3) of a finger, price sticker or object near the package."""
    mask = np.zeros((H, W), np.float32)
    img = np.zeros((H, W, 3), np.float32)
    kind = rng.random()
    side = int(rng.integers(4))
    a, b = quad[side], quad[(side + 1) % 4]
    t = rng.uniform(0.2, 0.8)
    edge_pt = a + (b - a) * t
    centre = quad.mean(0)
    inward = centre - edge_pt
    inward /= np.linalg.norm(inward) + 1e-6
    scale = math.sqrt(quad_area(quad))
    if kind < 0.5:  # finger coming over the edge
        wid = scale * rng.uniform(0.09, 0.14)
        length = scale * rng.uniform(0.35, 0.6)
        tip = edge_pt + inward * rng.uniform(0.05, 0.22) * scale
        base = tip - inward * length
        ang = math.degrees(math.atan2(inward[1], inward[0]))
        mid = (tip + base) / 2
        cv2.ellipse(
            mask,
            (int(mid[0]), int(mid[1])),
            (int(length / 2), int(wid / 2)),
            ang,
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        col = np.asarray(_SKIN[int(rng.integers(len(_SKIN)))], np.float32) * rng.uniform(0.85, 1.1)
        img[:] = col
        # rounded shading across the finger and a nail near the tip
        nail = tip - inward * wid * 0.55
        cv2.ellipse(
            img,
            (int(nail[0]), int(nail[1])),
            (int(wid * 0.35), int(wid * 0.3)),
            ang,
            0,
            360,
            tuple(float(c) for c in np.minimum(col * 1.12 + 15, 255)),
            -1,
            cv2.LINE_AA,
        )
    elif kind < 0.8:  # price sticker
        wid = scale * rng.uniform(0.18, 0.28)
        hei = wid * rng.uniform(0.45, 0.6)
        pos = edge_pt + inward * rng.uniform(0.02, 0.15) * scale
        box = cv2.boxPoints(((float(pos[0]), float(pos[1])), (wid, hei), float(rng.uniform(-30, 30))))
        cv2.fillConvexPoly(mask, box.astype(np.int32), 1.0, cv2.LINE_AA)
        col = np.asarray(
            [(250, 250, 245), (255, 230, 60), (255, 140, 150), (180, 230, 255)][int(rng.integers(4))],
            np.float32,
        )
        img8 = np.empty((H, W, 3), np.uint8)
        img8[:] = col.astype(np.uint8)
        price = f"{rng.integers(3, 99)}.{rng.choice(['99', '49', '00', '95'])}"
        cv2.putText(
            img8,
            price,
            (int(pos[0] - wid * 0.38), int(pos[1] + hei * 0.18)),
            cv2.FONT_HERSHEY_DUPLEX,
            float(hei / 40.0),
            (30, 30, 30),
            max(1, int(hei / 25)),
            cv2.LINE_AA,
        )
        img = img8.astype(np.float32)
    else:  # another object: a pen or the rim of a cup
        obj_col = tuple(float(c) for c in rng.uniform(20, 240, 3))
        if rng.random() < 0.5:
            p0 = edge_pt - inward * scale * 0.4
            p1 = edge_pt + inward * scale * rng.uniform(0.1, 0.3)
            cv2.line(
                mask,
                tuple(int(v) for v in p0),
                tuple(int(v) for v in p1),
                1.0,
                max(3, int(scale * rng.uniform(0.03, 0.05))),
                cv2.LINE_AA,
            )
        else:
            r = scale * rng.uniform(0.2, 0.3)
            c = edge_pt - inward * r * rng.uniform(0.6, 0.85)
            cv2.circle(mask, (int(c[0]), int(c[1])), int(r), 1.0, -1, cv2.LINE_AA)
        img[:] = obj_col
    return mask, img


def _occlude(
    rng: np.random.Generator, img: np.ndarray, quad: np.ndarray, pkg_alpha: np.ndarray
) -> np.ndarray:
    H, W = img.shape[:2]
    pkg_area = float(pkg_alpha.sum()) + 1e-6
    for _ in range(4):
        mask, occ = _occluder(rng, quad, W, H)
        if float((mask * pkg_alpha).sum()) / pkg_area <= 0.15:
            # soft contact shadow, shaded occluder
            shadow = cv2.GaussianBlur(mask, (0, 0), 4.0)
            img = img * (1 - 0.35 * shadow[..., None])
            lit = occ * (0.85 + 0.2 * cv2.GaussianBlur(mask, (0, 0), 6.0)[..., None])
            return img * (1 - mask[..., None]) + lit * mask[..., None]
    return img


def _lighting(rng: np.random.Generator, img: np.ndarray, style: str) -> np.ndarray:
    H, W = img.shape[:2]
    xs = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None]
    strength = 0.08 if style == "studio" else rng.uniform(0.1, 0.45)
    ang = rng.uniform(0, 2 * np.pi)
    gain = 1.0 + strength * (xs * math.cos(ang) + ys * math.sin(ang))
    if style == "listing" and rng.random() < 0.5:  # vignette
        gain = gain * (1.0 - rng.uniform(0.1, 0.35) * 2 * (xs**2 + ys**2))
    if style == "listing":
        wb = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # white balance
        img *= gain[..., None] * wb
    else:
        img *= gain[..., None]
    if (
        style == "listing" and rng.random() < 0.2
    ):  # a soft shadow across the scene (the photographer, a shelf)
        m = np.zeros((H // 4, W // 4), np.float32)
        pts = rng.uniform(0, 1, (4, 2)) * [W // 4, H // 4]
        pts[:2] = pts[:2] * [1, 0.2]
        cv2.fillConvexPoly(m, cv2.convexHull(pts.astype(np.int32)), 1.0)
        m = cv2.resize(cv2.GaussianBlur(m, (0, 0), 3), (W, H))
        img = img * (1 - rng.uniform(0.2, 0.45) * m[..., None])
    return img


@functools.lru_cache(maxsize=2)
def _camera(style: str):  # type: ignore[no-untyped-def]
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI on import otherwise
    try:
        import albumentations as A
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("brandguard.synth needs albumentations: pip install albumentations") from e
    if style == "studio":
        return A.Compose(
            [
                A.ColorJitter(
                    brightness=(0.95, 1.05),
                    contrast=(0.95, 1.05),
                    saturation=(0.95, 1.05),
                    hue=(-0.01, 0.01),
                    p=1.0,
                ),
                A.GaussNoise(std_range=(0.003, 0.012), p=0.6),
                A.ImageCompression(quality_range=(88, 96), p=1.0),
            ]
        )
    return A.Compose(
        [
            A.ColorJitter(
                brightness=(0.8, 1.2), contrast=(0.75, 1.2), saturation=(0.7, 1.25), hue=(-0.03, 0.03), p=0.9
            ),
            A.RandomGamma(gamma_limit=(80, 125), p=0.5),
            A.OneOf(
                [
                    A.MotionBlur(blur_limit=(3, 7), p=1.0),
                    A.Defocus(radius=(1, 2), alias_blur=(0.1, 0.3), p=1.0),
                    A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.4, 1.1), p=1.0),
                ],
                p=0.55,
            ),
            A.OneOf(
                [
                    A.ISONoise(color_shift=(0.01, 0.04), intensity=(0.1, 0.4), p=0.35),
                    A.GaussNoise(std_range=(0.01, 0.035), p=0.65),
                ],
                p=0.7,
            ),
            A.ImageCompression(quality_range=(55, 90), p=1.0),
        ]
    )


def _glare(rng: np.random.Generator, img: np.ndarray, quad: np.ndarray) -> np.ndarray:
    H, W = img.shape[:2]
    c = quad.mean(0) + rng.uniform(-0.35, 0.35, 2) * (quad.max(0) - quad.min(0))
    r = math.sqrt(quad_area(quad)) * rng.uniform(0.08, 0.2)
    m = np.zeros((H // 4, W // 4), np.float32)
    cv2.ellipse(
        m,
        (int(c[0] / 4), int(c[1] / 4)),
        (max(1, int(r / 4)), max(1, int(r / 4 * rng.uniform(0.3, 0.8)))),
        float(rng.uniform(0, 180)),
        0,
        360,
        1.0,
        -1,
    )
    m = cv2.resize(cv2.GaussianBlur(m, (0, 0), max(1.0, r / 12)), (W, H))
    return img + (255 - img) * m[..., None] * rng.uniform(0.35, 0.7)


def _side_face(rng: np.random.Generator, bg: np.ndarray, quad: np.ndarray, pkg: np.ndarray) -> np.ndarray:
    """Draw the visible side of a box (or the thickness of a card) along one edge of the face."""
    side = int(rng.integers(4))
    a, b = quad[side], quad[(side + 1) % 4]
    out = (a + b) / 2 - quad.mean(0)
    out /= np.linalg.norm(out) + 1e-6
    depth = math.sqrt(quad_area(quad)) * rng.uniform(0.03, 0.12)
    shear = (b - a) / (np.linalg.norm(b - a) + 1e-6) * depth * rng.uniform(-0.4, 0.4)
    poly = np.array([a, b, b + out * depth + shear, a + out * depth + shear])
    H, W = bg.shape[:2]
    if poly.min() < 0 or (poly[:, 0] > W).any() or (poly[:, 1] > H).any():
        return bg
    edge = [
        pkg[2:6].reshape(-1, 4),
        pkg[:, -6:-2].reshape(-1, 4),
        pkg[-6:-2].reshape(-1, 4),
        pkg[:, 2:6].reshape(-1, 4),
    ]
    col = edge[side][:, :3].astype(np.float32).mean(0) * rng.uniform(0.55, 0.8)
    m = np.zeros((H, W), np.float32)
    cv2.fillConvexPoly(m, np.round(poly * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
    return bg * (1 - m[..., None]) + col * m[..., None]


# ---------------------------------------------------------------------------------------------------------


def photograph(
    package: Image.Image | np.ndarray, rng: np.random.Generator, style: str = "listing"
) -> tuple[np.ndarray, np.ndarray]:
    """Photograph a package face into a scene.

    Args:
        package: The face as an RGBA image or ``HxWx4`` uint8 array (e.g. from
            :func:`~brandguard.synth.render_package`); about 500-650 px on its long side gives the sharpest
            photos.
        rng: Source of all randomness.
        style: ``"studio"`` or ``"listing"`` (see the module docstring).

    Returns:
        ``(image, quad)``: the photo as ``HxWx3`` uint8 RGB (640x480, 480x640 or 600x600) and the package's
        corners in it, a ``4x2`` float32 array (top-left, top-right, bottom-right, bottom-left of the face).

    Raises:
        DataError: For an unknown style or a package that is not RGBA.

    Example:
        >>> import numpy as np
        >>> from brandguard.synth import make_design, photograph, render_package
        >>> img, quad = photograph(render_package(make_design("bmw", 0), 0.6), np.random.default_rng(1), "studio")
        >>> bool((quad >= 0).all() and (quad[:, 0] <= img.shape[1]).all())
        True
    """
    if style not in PHOTO_STYLES:
        raise DataError(f"photo style must be one of {PHOTO_STYLES}, got {style!r}")
    pkg = np.asarray(package.convert("RGBA") if isinstance(package, Image.Image) else package)
    if pkg.ndim != 3 or pkg.shape[2] != 4 or pkg.dtype != np.uint8:
        raise DataError(f"photograph expects an RGBA uint8 package image, got shape {pkg.shape} {pkg.dtype}")
    ph, pw = pkg.shape[:2]
    # frame: match the package's orientation in studio shots and most listings
    if style == "studio" or rng.random() < 0.65:
        r = pw / ph
        W, H = OUTPUT_SIZES[0] if r > 1.15 else OUTPUT_SIZES[1] if r < 0.87 else OUTPUT_SIZES[2]
    else:
        W, H = OUTPUT_SIZES[int(rng.integers(3))]
    bg = _background(rng, W, H, style)
    quad = _place(rng, pw, ph, W, H, style)

    # resample the package close to its size in the photo first, so the warp does not alias
    k = math.sqrt(quad_area(quad) / (pw * ph))
    src = pkg
    if k < 0.8:
        src = cv2.resize(
            pkg, (max(2, int(pw * k * 1.15)), max(2, int(ph * k * 1.15))), interpolation=cv2.INTER_AREA
        )
    sh, sw = src.shape[:2]
    corners = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    M = cv2.getPerspectiveTransform(corners, quad)
    warped = cv2.warpPerspective(
        src, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0)
    ).astype(np.float32)
    alpha = warped[..., 3:] / 255.0

    # drop shadow
    off = rng.uniform(-1, 1, 2) * math.sqrt(quad_area(quad)) * (0.02 if style == "studio" else 0.04)
    small = np.zeros((H // 4, W // 4), np.float32)
    cv2.fillConvexPoly(small, np.round((quad + off) / 4 * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
    sm = cv2.resize(cv2.GaussianBlur(small, (0, 0), float(rng.uniform(1.5, 4.0))), (W, H))
    bg = bg * (1 - rng.uniform(0.25, 0.55) * sm[..., None])

    if style == "listing" and rng.random() < 0.5:
        bg = _side_face(rng, bg, quad, pkg)
    face = warped[..., :3]
    if style == "listing":
        # uneven light on the package itself (it is not parallel to the background)
        a = rng.uniform(0, 2 * np.pi)
        k = rng.uniform(0, 0.25)
        gx = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :] * (k * math.cos(a))
        gy = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None] * (k * math.sin(a))
        face = face * (1 + gx + gy)[..., None]
    img = bg + (face - bg) * alpha

    if style == "listing" and rng.random() < 0.25:
        img = img * (1 - alpha) + _glare(rng, img, quad) * alpha
    if style == "listing" and rng.random() < 0.15:
        img = _occlude(rng, img, quad, alpha[..., 0])
    img = _lighting(rng, img, style)
    img = np.clip(img, 0, 255).astype(np.uint8)

    cam = _camera(style)
    cam.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    img = cam(image=img)["image"]
    return np.ascontiguousarray(img), quad.astype(np.float32)
