"""Scenes of real listing photos: the ways a marketplace photo departs from "one product, filling the frame".

Each scene is a value of the ``scene`` column of a scene data set's ``labels.csv`` (see
:func:`make_scene_dataset`), so every figure can be read per scene. The photos are taken by the demo
photo model (:func:`brandguard.synth.photograph`: its backgrounds, lighting and camera) and then staged:

``small_product``  the product is small in a wide shot: its face is 18-30 % of the photo's height
``thumbnail``      a marketplace thumbnail: long side 256-320 px, re-encoded at JPEG quality 35-55
``rotated``        the photo is turned by 90, 180 or 270 deg (the EXIF orientation was lost)
``watermark``      the seller's name tiled over the whole photo, semi-transparent, at an angle
``phone``          a full-resolution phone photo: long side 1600-2400 px, the package rendered sharp
``collage``        2-4 views of the product tiled in one image with white gutters
``multi_unit``     two or three units of the product side by side in one photo
``studio_white``   a seller's own studio shot on pure white, straight on
``bottle``         the face wrapped as a label round a cylinder (bottle, can): the middle 100-150 deg show,
                   the edges are compressed and shaded

Every function is a pure function of the package images and the ``rng`` passed in.

Example:
    >>> import numpy as np
    >>> from brandguard.synth import make_design, render_package
    >>> from brandguard.synth.scenes import scene_photo
    >>> pkg = render_package(make_design("nike", 0), 0.5)
    >>> img, quads = scene_photo(pkg, np.random.default_rng(0), "thumbnail")
    >>> max(img.shape[:2]) <= 320, len(quads)
    (True, 1)
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from .dataset import _encode, _write_csv, _write_shuffled
from .design import render_package, stable_seed
from .edits import EDITS
from .photo import _background, _camera, _lighting, photograph, quad_area

__all__ = ["SCENES", "SceneDataset", "make_scene_dataset", "scene_photo"]

SCENES = ("small_product", "thumbnail", "rotated", "watermark", "phone", "collage", "multi_unit", "studio_white",
          "bottle")
#: Scale the ``phone`` scene renders packages at (faces of 1000-1650 px instead of 375-615 px).
PHONE_RENDER_SCALE = 2.0

_SELLERS = ("© bestdeals_shop", "© SuperSeller88", "@kims.closet", "© TopTrade", "fastship.example", "© Lena's Finds",
            "© OUTLET 24/7", "@mega.bargains")


def _rgba(package: Image.Image | np.ndarray) -> np.ndarray:
    pkg = np.asarray(package.convert("RGBA") if isinstance(package, Image.Image) else package)
    if pkg.ndim != 3 or pkg.shape[2] != 4 or pkg.dtype != np.uint8:
        raise DataError(f"scene photos need an RGBA uint8 package image, got shape {pkg.shape} {pkg.dtype}")
    return pkg


def _paste(img: np.ndarray, pkg: np.ndarray, quad: np.ndarray, rng: np.random.Generator,
           shadow: float = 0.4) -> np.ndarray:
    """Warp ``pkg`` onto ``quad`` of ``img`` (float32 HxWx3) with a soft drop shadow."""
    H, W = img.shape[:2]
    ph, pw = pkg.shape[:2]
    k = math.sqrt(quad_area(quad) / (pw * ph))
    src = pkg
    if k < 0.8:
        src = cv2.resize(pkg, (max(2, int(pw * k * 1.15)), max(2, int(ph * k * 1.15))), interpolation=cv2.INTER_AREA)
    sh, sw = src.shape[:2]
    M = cv2.getPerspectiveTransform(np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32), quad.astype(np.float32))
    warped = cv2.warpPerspective(src, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0, 0)).astype(np.float32)
    alpha = warped[..., 3:] / 255.0
    if shadow > 0:
        off = rng.uniform(-1, 1, 2) * math.sqrt(quad_area(quad)) * 0.03
        m = np.zeros((max(1, H // 4), max(1, W // 4)), np.float32)  # a soft shadow needs no full resolution
        cv2.fillConvexPoly(m, np.round((quad + off) / 4 * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
        m = cv2.GaussianBlur(m, (0, 0), max(1.0, math.sqrt(quad_area(quad)) * 0.005))
        m = cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)
        img = img * (1 - shadow * rng.uniform(0.6, 1.0) * m[..., None])
    return img + (warped[..., :3] - img) * alpha


def _quad(rng: np.random.Generator, pw: int, ph: int, height: float, centre: np.ndarray, max_rot: float = 8.0,
          persp: float = 0.05) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of a face ``height`` pixels tall (before rotation) around ``centre``."""
    h = height
    w = h * pw / ph
    q = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    q = q + rng.uniform(-persp, persp, (4, 2)) * np.array([w, h])
    a = math.radians(rng.uniform(-max_rot, max_rot))
    c, s = math.cos(a), math.sin(a)
    return (q @ np.array([[c, s], [-s, c]]) + centre).astype(np.float32)


def _finish(rng: np.random.Generator, img: np.ndarray, style: str = "listing") -> np.ndarray:
    """Light and camera of the demo photo model (``style``: ``listing`` or ``studio``)."""
    img = _lighting(rng, img, style)
    cam = _camera(style)
    cam.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    return np.ascontiguousarray(cam(image=np.clip(img, 0, 255).astype(np.uint8))["image"])


def _frame(rng: np.random.Generator, long_side: float, pw: int, ph: int) -> tuple[int, int]:
    portrait = ph > pw * 1.1 if rng.random() < 0.7 else rng.random() < 0.5
    short = round(long_side * 3 / 4)
    return (short, int(long_side)) if portrait else (int(long_side), short)


def _small_product(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    ph, pw = pkg.shape[:2]
    W, H = _frame(rng, rng.uniform(900, 1200), pw, ph)
    frac = rng.uniform(0.19, 0.29)
    for _ in range(20):
        centre = rng.uniform([0.2 * W, 0.2 * H], [0.8 * W, 0.8 * H])
        q = _quad(rng, pw, ph, frac * H, centre, max_rot=6.0, persp=0.03)
        span = q[:, 1].max() - q[:, 1].min()
        q = ((q - centre) * (frac * H / span) + centre).astype(np.float32)  # the face spans exactly frac of H
        if q.min() >= 0 and q[:, 0].max() < W and q[:, 1].max() < H:
            break
    bg = _background(rng, W, H, "listing")
    return _finish(rng, _paste(bg, pkg, q, rng)), [q]


def _multi_unit(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    ph, pw = pkg.shape[:2]
    n = int(rng.integers(2, 4))
    W = int(rng.uniform(900, 1100))
    gap = rng.uniform(0.02, 0.06) * W
    w_unit = (W * 0.9 - gap * (n - 1)) / n
    h_unit = w_unit * ph / pw
    H = int(max(h_unit / rng.uniform(0.6, 0.8), W * 0.5))
    bg = _background(rng, W, H, "listing")
    quads = []
    x = W * 0.05 + w_unit / 2
    for _ in range(n):
        centre = np.array([x, H / 2 + rng.normal(0, 0.03) * H])
        q = _quad(rng, pw, ph, h_unit * 0.95, centre, max_rot=4.0, persp=0.03)
        bg = _paste(bg, pkg, q, rng)
        quads.append(q)
        x += w_unit + gap
    return _finish(rng, bg), quads


def _studio_white(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    ph, pw = pkg.shape[:2]
    side = int(rng.uniform(800, 1000))
    W = H = side
    img = np.full((H, W, 3), 255.0, np.float32)
    h = rng.uniform(0.6, 0.8) * H / max(1.0, pw / ph)
    q = _quad(rng, pw, ph, h, np.array([W / 2, H / 2]), max_rot=0.0, persp=0.0)
    img = _paste(img, pkg, q, rng, shadow=0.15)
    cam = _camera("studio")
    cam.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    return np.ascontiguousarray(cam(image=np.clip(img, 0, 255).astype(np.uint8))["image"]), [q]


def _phone(rng: np.random.Generator, pkg_hi: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    ph, pw = pkg_hi.shape[:2]
    W, H = _frame(rng, rng.uniform(1600, 2400), pw, ph)
    cover = rng.uniform(0.25, 0.6)
    h = math.sqrt(cover * W * H * ph / pw)
    h = min(h, 0.9 * H, 0.9 * W * ph / pw)
    centre = np.array([W, H]) / 2 + rng.uniform(-0.1, 0.1, 2) * [W, H]
    q = _quad(rng, pw, ph, h, centre, max_rot=10.0, persp=0.06)
    q = np.clip(q, 1, [W - 2, H - 2]).astype(np.float32)
    bg = cv2.resize(_background(rng, W // 2, H // 2, "listing"), (W, H), interpolation=cv2.INTER_LINEAR)
    return _finish(rng, _paste(bg, pkg_hi, q, rng)), [q]


def _thumbnail(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    img, q = photograph(pkg, rng, "listing")
    H, W = img.shape[:2]
    long_side = int(rng.integers(256, 321))
    k = long_side / max(H, W)
    small = cv2.resize(img, (max(1, round(W * k)), max(1, round(H * k))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 56))])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise DataError("could not JPEG-encode a thumbnail")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - OpenCV decodes what it encoded
        raise DataError("could not decode a thumbnail")
    out = decoded[..., ::-1]
    return np.ascontiguousarray(out), [q * np.array([small.shape[1] / W, small.shape[0] / H], np.float32)]


def _rotated(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    img, q = photograph(pkg, rng, "listing")
    H, W = img.shape[:2]
    k = int(rng.integers(1, 4))  # quarter turns counter-clockwise
    out = np.ascontiguousarray(np.rot90(img, k))
    x, y = q[:, 0].copy(), q[:, 1].copy()
    for _ in range(k):  # np.rot90 (counter-clockwise): (x, y) in a WxH image -> (y, W - 1 - x)
        x, y, W, H = y, W - 1 - x, H, W
    return out, [np.stack([x, y], 1).astype(np.float32)]


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), size)
    except (ImportError, OSError):  # pragma: no cover - matplotlib is a synth dependency
        return ImageFont.load_default()


def _watermark(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    img, q = photograph(pkg, rng, "listing")
    H, W = img.shape[:2]
    text = str(rng.choice(_SELLERS))
    size = int(rng.uniform(0.045, 0.08) * max(H, W))
    D = int(math.hypot(H, W)) + 2 * size
    layer = Image.new("L", (D, D), 0)
    draw = ImageDraw.Draw(layer)
    font = _font(size)
    tw = draw.textlength(text, font=font)
    step_x, step_y = tw + size * rng.uniform(1.0, 2.5), size * rng.uniform(2.2, 3.5)
    y, row = 0.0, 0
    while y < D:
        x = -(row % 2) * step_x / 2
        while x < D:
            draw.text((x, y), text, fill=255, font=font)
            x += step_x
        y += step_y
        row += 1
    layer = layer.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BILINEAR)
    off = (D - W) // 2, (D - H) // 2
    mask = np.asarray(layer, np.float32)[off[1] : off[1] + H, off[0] : off[0] + W, None] / 255.0
    colour = np.float32(rng.choice([255.0, 235.0, 40.0]))
    opacity = rng.uniform(0.25, 0.45)
    out = img.astype(np.float32) * (1 - opacity * mask) + colour * opacity * mask
    return np.clip(out, 0, 255).astype(np.uint8), [q]


def _collage(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    n = int(rng.integers(2, 5))
    cols, rows = {2: (2, 1), 3: (3, 1), 4: (2, 2)}[n]
    cell = int(rng.uniform(360, 480))
    gutter = int(rng.integers(6, 16))
    W, H = cols * cell + (cols + 1) * gutter, rows * cell + (rows + 1) * gutter
    out = np.full((H, W, 3), 255, np.uint8)
    quads = []
    for i in range(n):
        img, q = photograph(pkg, rng, "listing")
        h, w = img.shape[:2]
        s = min(cell / w, cell / h)
        tile = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        th, tw = tile.shape[:2]
        x0 = gutter + (i % cols) * (cell + gutter) + (cell - tw) // 2
        y0 = gutter + (i // cols) * (cell + gutter) + (cell - th) // 2
        out[y0 : y0 + th, x0 : x0 + tw] = tile
        quads.append((q * np.array([tw / w, th / h], np.float32) + np.array([x0, y0], np.float32)).astype(np.float32))
    return out, quads


def _bottle(rng: np.random.Generator, pkg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The face as a label round a cylinder: ``cv2.remap`` from bottle pixels to label coordinates."""
    ph, pw = pkg.shape[:2]
    arc = math.radians(rng.uniform(100, 150))  # angle of the label that faces the camera
    W, H = _frame(rng, rng.uniform(700, 900), 3, 4)
    label_h = rng.uniform(0.45, 0.65) * H
    radius = label_h * pw / ph / arc  # label width = radius * (full arc it covers); we see ``arc`` of it
    if 2 * radius > 0.8 * W:
        radius = 0.4 * W
        label_h = radius * arc * ph / pw
    cx, cy = W / 2 + rng.uniform(-0.1, 0.1) * W, H / 2 + rng.uniform(-0.08, 0.08) * H
    half_w = radius * math.sin(arc / 2)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    rel = np.clip((xs - cx) / radius, -1, 1)
    theta = np.arcsin(rel)
    u = (theta / arc + 0.5) * pw  # label column seen at this bottle column
    tilt = rng.uniform(0.03, 0.08) * label_h  # the label's edges curve: we look slightly down on the bottle
    v = (ys - (cy - label_h / 2) - tilt * (1 - np.cos(theta))) / label_h * ph
    inside = (np.abs(xs - cx) <= half_w) & (v >= 0) & (v < ph)
    mapped = cv2.remap(pkg, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0)).astype(np.float32)
    alpha = mapped[..., 3:] / 255.0 * inside[..., None]
    # the bottle's body above and below the label, lit like a cylinder, with a specular stripe
    shade = (0.55 + 0.45 * np.cos(theta)) + 0.35 * np.exp(-((rel - rng.uniform(-0.5, -0.2)) / 0.08) ** 2)
    body_col = np.asarray(rng.choice([[240, 240, 235], [60, 110, 60], [150, 90, 40], [200, 210, 220]]), np.float32)
    body = (np.abs(xs - cx) <= radius) & (ys > cy - label_h / 2 - 0.35 * H) & (ys < cy + label_h / 2 + 0.12 * H)
    bg = _background(rng, W, H, "listing")
    img = np.where(body[..., None], body_col * shade[..., None], bg)
    img = img + (mapped[..., :3] * shade[..., None] - img) * alpha
    corners = np.array([[cx - half_w, cy - label_h / 2], [cx + half_w, cy - label_h / 2],
                        [cx + half_w, cy + label_h / 2], [cx - half_w, cy + label_h / 2]], np.float32)
    return _finish(rng, img), [corners]


_SCENE_FUNCS = {"small_product": _small_product, "thumbnail": _thumbnail, "rotated": _rotated,
                "watermark": _watermark, "collage": _collage, "multi_unit": _multi_unit,
                "studio_white": _studio_white, "bottle": _bottle}


def scene_photo(package: Image.Image | np.ndarray, rng: np.random.Generator, scene: str,
                package_hi: Image.Image | np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """One listing photo of a package in ``scene`` (see the module docstring).

    Args:
        package: The face, RGBA (e.g. ``render_package(design, 0.75)``).
        rng: Source of all randomness.
        scene: One of :data:`SCENES`.
        package_hi: For ``phone``: the face rendered larger (``render_package(design, PHONE_RENDER_SCALE)``);
            ``package`` upscaled when missing.

    Returns:
        ``(image, quads)``: ``HxWx3`` uint8 RGB photo and, per unit of the product in it, the face's corners
        (``4x2`` float32: the face's top-left, top-right, bottom-right, bottom-left, wherever they are in
        the photo; for ``bottle`` the label's visible part).

    Raises:
        DataError: For an unknown scene or a package that is not RGBA.
    """
    if scene not in SCENES:
        raise DataError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    pkg = _rgba(package)
    if scene == "phone":
        hi = _rgba(package_hi) if package_hi is not None else cv2.resize(
            pkg, None, fx=PHONE_RENDER_SCALE, fy=PHONE_RENDER_SCALE, interpolation=cv2.INTER_CUBIC)
        return _phone(rng, hi)
    return _SCENE_FUNCS[scene](rng, pkg)


# ---------------------------------------------------------------------------------------------------------
# A labelled data set of scenes
# ---------------------------------------------------------------------------------------------------------

#: Per scene and data set size: (authentic, counterfeit, unrelated) listings.
SCENE_COUNTS = {"full": (16, 20, 4), "small": (3, 4, 1)}
#: Per data set size: authentic calibration photos per scene, added to the demo data set's flat ones (81 flat +
#: 9 x 9 staged at ``full``: calibrated on photos of the kinds scored, as the README advises)
SCENE_CALIBRATION = {"full": 9, "small": 2}


@dataclass(frozen=True)
class SceneDataset:
    """Where a scene data set lives: the :class:`~brandguard.synth.DemoDataset` fields plus ``scenes``.

    Attributes:
        root: The output folder.
        refs_dir: ``root/refs``: the demo data set's references.
        listings_dir: ``root/listings``: the scene listing photos ``s_XXXX.jpg``.
        labels_csv: ``listings/labels.csv``: ``path,label,brand,product,manipulation,strength,scene``.
        calibration_dir: ``root/calibration``: the demo data set's calibration photos.
        calibration_csv: ``calibration/labels.csv``.
        n_listings: Number of listing photos.
        scenes: The scenes photographed, in order.
    """

    root: Path
    refs_dir: Path
    listings_dir: Path
    labels_csv: Path
    calibration_dir: Path
    calibration_csv: Path
    n_listings: int
    scenes: tuple[str, ...]


def make_scene_dataset(out_dir: str | Path, *, seed: int = 0, artwork: str = "demo", size: str = "full",
                       scenes: Sequence[str] = SCENES, progress: bool = False) -> SceneDataset:
    """Generate a labelled data set whose listings are staged in the :data:`SCENES`.

    References and calibration photos are exactly those of ``make_demo_dataset(out_dir, seed=seed,
    artwork=artwork, size=size)`` (demo photo model); the listings are new: per scene, authentic photos,
    counterfeits (every edit type in turn, subtle and gross alternating) and photos of unrelated brands.

    Args:
        out_dir: Output folder (as for :func:`~brandguard.synth.make_demo_dataset`).
        seed: Everything is a function of this seed.
        artwork: ``"demo"`` or ``"heldout"``.
        size: ``"full"`` (16 authentic, 20 counterfeit, 4 unrelated listings per scene) or ``"small"``
            (3, 4, 1).
        scenes: Which scenes, each from :data:`SCENES`.
        progress: Show a progress bar (tqdm) on stderr.

    Returns:
        A :class:`SceneDataset`; ``listings/labels.csv`` has columns
        ``path,label,brand,product,manipulation,strength,scene``.

    Raises:
        DataError: For an unknown scene, artwork or size, or an ``out_dir`` holding other data.
    """
    from .dataset import RENDER_SCALE, SIZES, _products, make_demo_dataset

    scenes = tuple(scenes)
    bad = [s for s in scenes if s not in SCENES]
    if bad or not scenes:
        raise DataError(f"scenes must be a non-empty selection of {', '.join(SCENES)}, got {list(scenes)}")
    if size not in SCENE_COUNTS:
        raise DataError(f"size must be one of {', '.join(SCENE_COUNTS)}, got {size!r}")
    base = make_demo_dataset(out_dir, seed=seed, artwork=artwork, size=size, per_edit=0, unrelated=0, authentic=0)
    known, unknown = _products(artwork, seed, SIZES[size])
    n_auth, n_fake, n_unrel = SCENE_COUNTS[size]
    edits = list(EDITS)
    jobs: list[tuple[str, int, int, str, str, str]] = []  # scene, product index, photo index, label, edit, strength
    for si, scene in enumerate(scenes):
        rng = np.random.default_rng(stable_seed("scene-plan", seed, artwork, scene))
        perm = rng.permutation(len(known))
        jobs += [(scene, int(perm[i % len(known)]), i, "authentic", "", "") for i in range(n_auth)]
        perm = rng.permutation(len(known))
        jobs += [(scene, int(perm[i % len(known)]), i, "counterfeit", edits[(i + si) % len(edits)],
                  "subtle" if (i // len(edits)) % 2 == i % 2 else "gross") for i in range(n_fake)]
        perm = rng.permutation(len(unknown))
        jobs += [(scene, len(known) + int(perm[i % len(unknown)]), i, "unrelated", "", "") for i in range(n_unrel)]
    products = known + unknown
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="scene photos", unit="photo")
    cal_jobs: list[tuple[str, int, int, str, str, str]] = []
    for scene in scenes:  # authentic calibration photos staged in every scene (other draws than the listings')
        rng = np.random.default_rng(stable_seed("scene-calibration-plan", seed, artwork, scene))
        perm = rng.permutation(len(known))
        cal_jobs += [(scene, int(perm[i % len(known)]), i, "calibration", "", "") for i in range(SCENE_CALIBRATION[size])]
    jobs += cal_jobs
    rows: list[tuple[bytes, dict[str, str]]] = []
    cal_rows: list[tuple[bytes, dict[str, str]]] = []
    rendered: dict[tuple[int, float], Image.Image] = {}  # authentic faces, rendered once per scale

    def face(pidx: int, scale: float, edited: object) -> Image.Image:
        if edited is not None:
            return render_package(edited, scale)  # type: ignore[arg-type]
        if (pidx, scale) not in rendered:
            rendered[(pidx, scale)] = render_package(products[pidx], scale)
        return rendered[(pidx, scale)]

    for scene, pidx, idx, label, edit, strength in jobs:
        d = products[pidx]
        edited = None
        if edit:
            edited = d = EDITS[edit](d, strength, np.random.default_rng(
                stable_seed("scene-edit", seed, artwork, scene, pidx, idx, edit, strength)))
        rng = np.random.default_rng(stable_seed("scene-photo", seed, artwork, size, scene, label, pidx, idx, edit,
                                                strength))
        hi = face(pidx, PHONE_RENDER_SCALE, edited) if scene == "phone" else None
        img, _ = scene_photo(face(pidx, RENDER_SCALE, edited), rng, scene, package_hi=hi)
        if label == "calibration":
            cal_rows.append((_encode(img), {"label": "authentic", "brand": d.brand, "product": d.product_slug,
                                            "manipulation": "none", "strength": "", "scene": scene}))
        else:
            rows.append((_encode(img), {"label": label, "brand": d.brand, "product": d.product_slug,
                                          "manipulation": edit or ("unrelated" if label == "unrelated" else "none"),
                                          "strength": strength, "scene": scene}))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out_rows = _write_shuffled(rows, base.listings_dir, "s", stable_seed("scene-shuffle", seed, artwork, size))
    _write_csv(base.labels_csv, out_rows, extra=("scene",))
    with open(base.calibration_csv, newline="", encoding="utf-8") as fh:
        flat = [{**r, "scene": "flat"} for r in csv.DictReader(fh)]
    staged = _write_shuffled(cal_rows, base.calibration_dir, "cs", stable_seed("scene-calibration-shuffle", seed,
                                                                               artwork, size))
    _write_csv(base.calibration_csv, flat + staged, extra=("scene",))
    meta_path = Path(base.root) / "dataset.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    counts: dict[str, int] = {}
    for r in out_rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    meta["scenes"] = list(scenes)
    meta["counts"]["listings"] = counts
    meta["counts"]["calibration"] = len(flat) + len(staged)
    tmp_meta = meta_path.with_name("dataset.json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    tmp_meta.replace(meta_path)
    return SceneDataset(root=base.root, refs_dir=base.refs_dir, listings_dir=base.listings_dir,
                        labels_csv=base.labels_csv, calibration_dir=base.calibration_dir,
                        calibration_csv=base.calibration_csv, n_listings=len(out_rows), scenes=scenes)
