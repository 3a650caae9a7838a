"""Photo models: who takes the reference and listing photos, with which camera, where.

A generated data set is only as honest as the photo model behind it: a detector tuned on photos from one
photo model can learn that model's habits (its backgrounds, its blur, its JPEG quality) instead of what a
counterfeit looks like. So :mod:`brandguard.synth` ships two photo models that differ the way two cameras
and two photographers do, and every figure is reported on both:

``demo``
    The model every design decision is made on (:func:`brandguard.synth.photograph`): references are two
    studio shots on light, graded paper and four listing-style photos per product; listings are 640x480,
    480x640 or 600x600 photos on scikit-image / matplotlib sample photos or procedural wood, fabric,
    marble, tiles, concrete and desk clutter, product over 30-85 % of the frame, rotation up to 15 deg,
    blur (motion 3-7 px, defocus 1-2 px, Gaussian sigma 0.4-1.1) in 55 %, Gaussian or ISO noise,
    JPEG quality 55-90.
``studio-casual``
    Never tuned on; read only to check. References are e-commerce packshots only (three per product,
    square 900-1000 px on seamless white, straight on, JPEG 92-98); listings are casual photos by
    someone else: long side 720-1024 px in 4:3, 3:4, 16:9, 9:16 or 1:1, on other backgrounds (bedding,
    rugs, granite, cardboard, a room's wall and floor, store shelves, scikit-learn's sample photos; see
    :mod:`~brandguard.synth.backgrounds`), product over 12-60 % of the frame, rotation up to 30 deg,
    stronger perspective, tungsten / fluorescent / flash / dim light, blur in 70 % (Gaussian sigma
    0.8-2.2, motion 7-13 px or a low-resolution sensor), phone sharpening, chroma noise and JPEG
    quality 30-70, a hand or sticker over the package in 30 %.

A photo model is a :class:`PhotoModel`; the parametric ones are made of :class:`Shot` settings (one per
style), so a third model is a few lines. Everything is drawn from the ``rng`` passed in.

Example:
    >>> import numpy as np
    >>> from brandguard.synth import get_photo_model, make_design, render_package
    >>> model = get_photo_model("studio-casual")
    >>> img, quad = model.photograph(render_package(make_design("nike", 0), 0.6), np.random.default_rng(0))
    >>> img.dtype.name, quad.shape
    ('uint8', (4, 2))
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from ..errors import DataError
from .backgrounds import BACKGROUNDS
from .photo import _glare, _occlude, _side_face, photograph, quad_area

__all__ = ["PHOTO_MODELS", "PhotoModel", "Shot", "get_photo_model"]


@dataclass(frozen=True)
class Shot:
    """How one kind of photo (a reference or a listing) is taken, as ranges drawn per photo.

    Attributes:
        long_side: Range of the photo's long side, pixels.
        aspects: Possible width/height ratios (a photo of a tall package prefers a tall frame).
        coverage: Range of the share of the frame's area the package face covers.
        max_rotation: Largest in-plane rotation, degrees.
        perspective: Largest corner displacement, as a share of the face's width and height.
        centred: Centre the product (studio) or place it anywhere in the frame.
        backgrounds: Names in :data:`~brandguard.synth.backgrounds.BACKGROUNDS`, or ``"white"`` (seamless
            white sweep with a soft floor reflection).
        lights: Probabilities of ``(tungsten, fluorescent, flash, dim)`` light; the rest is daylight.
        side_face: Probability of a visible box side along one edge.
        glare: Probability of a specular highlight on the package.
        occlusion: Probability of a finger, price sticker or object over up to 15 % of the package.
        blur: Probability of one of: Gaussian blur, motion blur, a low-resolution sensor.
        blur_sigma: Gaussian blur sigma range, pixels.
        motion: Motion blur kernel range, pixels (odd).
        downscale: Low-resolution sensor: scale range before upsampling back.
        sharpen: Probability of phone-style sharpening (halos).
        noise: Probability of chroma (ISO) noise.
        noise_intensity: ISO noise intensity range.
        jpeg: JPEG quality range.
    """

    long_side: tuple[int, int]
    aspects: tuple[float, ...]
    coverage: tuple[float, float]
    max_rotation: float
    perspective: float
    centred: bool
    backgrounds: tuple[str, ...]
    lights: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    side_face: float = 0.0
    glare: float = 0.0
    occlusion: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.8, 2.2)
    motion: tuple[int, int] = (7, 13)
    downscale: tuple[float, float] = (0.45, 0.7)
    sharpen: float = 0.0
    noise: float = 0.0
    noise_intensity: tuple[float, float] = (0.3, 0.8)
    jpeg: tuple[int, int] = (92, 98)


@dataclass(frozen=True)
class PhotoModel:
    """A photo model: how references and listings of a data set are photographed.

    Attributes:
        name: Registry name (``brandguard demo --photo-model NAME``).
        description: One line for summaries.
        shots: ``{"studio": Shot, "listing": Shot}``; empty for the built-in demo model, which is
            :func:`brandguard.synth.photograph` unchanged.
        references: Reference photos per product, all in the ``studio`` style; ``None`` keeps the data set
            size's mix of studio and listing-style references (the demo model's).
    """

    name: str
    description: str
    shots: dict[str, Shot] = field(default_factory=dict)
    references: int | None = None

    def photograph(
        self, package: Image.Image | np.ndarray, rng: np.random.Generator, style: str = "listing"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Photograph a package face in this model's ``style`` (``"studio"`` or ``"listing"``).

        Args:
            package: RGBA face (PIL image or ``HxWx4`` uint8 array), e.g. from ``render_package``.
            rng: Source of all randomness.
            style: ``"studio"`` (references) or ``"listing"``.

        Returns:
            ``(image, quad)``: ``HxWx3`` uint8 RGB photo and the face's corners in it (``4x2`` float32,
            TL, TR, BR, BL).

        Raises:
            DataError: For an unknown style or a package that is not RGBA.
        """
        if not self.shots:
            return photograph(package, rng, style)
        if style not in self.shots:
            raise DataError(f"photo model {self.name!r} has styles {sorted(self.shots)}, got {style!r}")
        return _shoot(package, rng, self.shots[style])


def _white(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Seamless white sweep: nearly flat 244-255, a faint floor gradient."""
    top = rng.uniform(246, 255)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - rng.uniform(0.0, 0.04) * yy**2), (h, w, 3)).astype(np.float32)


def _frame(rng: np.random.Generator, shot: Shot, pw: int, ph: int) -> tuple[int, int]:
    long_side = int(rng.integers(shot.long_side[0], shot.long_side[1] + 1))
    r = pw / ph
    aspects = list(shot.aspects)
    if rng.random() < 0.7:  # most photographers turn the camera with the package
        same = [a for a in aspects if (a >= 1) == (r >= 1)] or aspects
        aspects = same
    a = float(aspects[int(rng.integers(len(aspects)))])
    W, H = (long_side, round(long_side / a)) if a >= 1 else (round(long_side * a), long_side)
    return W, H


def _place(rng: np.random.Generator, shot: Shot, pw: int, ph: int, W: int, H: int) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of the face: coverage, rotation and perspective drawn from ``shot``."""
    target = float(rng.uniform(*shot.coverage))
    rot = math.radians(rng.uniform(-shot.max_rotation, shot.max_rotation))
    h = math.sqrt(target * W * H * ph / pw)
    w = h * pw / ph
    q = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    q = q + rng.uniform(-shot.perspective, shot.perspective, (4, 2)) * np.array([w, h])
    c, s = math.cos(rot), math.sin(rot)
    q = q @ np.array([[c, s], [-s, c]])
    q *= math.sqrt(target * W * H / quad_area(q))
    margin = 0.01
    span = q.max(0) - q.min(0)
    q *= min(1.0, (1 - 2 * margin) * W / span[0], (1 - 2 * margin) * H / span[1])
    lo = -q.min(0) + margin * np.array([W, H])
    hi = np.array([W, H]) * (1 - margin) - q.max(0)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    centre = np.array([W, H]) / 2 + rng.normal(0, 0.015, 2) * [W, H] if shot.centred else rng.uniform(lo, hi)
    return (q + np.clip(centre, lo, hi)).astype(np.float32)


def _light(rng: np.random.Generator, img: np.ndarray, shot: Shot, quad: np.ndarray) -> np.ndarray:
    """Colour of the light and exposure: tungsten, fluorescent, flash, dim or daylight."""
    H, W = img.shape[:2]
    p = rng.random()
    cum = np.cumsum(shot.lights)
    if p < cum[0]:  # tungsten: warm
        img = img * np.array([rng.uniform(1.08, 1.2), 1.0, rng.uniform(0.68, 0.82)], np.float32)
    elif p < cum[1]:  # fluorescent: green-magenta shift
        img = img * np.array([rng.uniform(0.9, 0.97), rng.uniform(1.03, 1.1), rng.uniform(0.92, 1.0)], np.float32)
    elif p < cum[2]:  # on-camera flash: hot centre, dark corners
        xs = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
        ys = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
        c = (quad.mean(0) / [W, H] * 2 - 1) * rng.uniform(0.3, 1.0)
        r2 = (xs - c[0]) ** 2 + (ys - c[1]) ** 2
        img = img * (rng.uniform(1.1, 1.3) - rng.uniform(0.35, 0.6) * np.clip(r2, 0, 2))[..., None]
    elif p < cum[3]:  # dim room: underexposed, lifted later by the phone (noise follows)
        img = 255.0 * (np.clip(img, 0, 255) / 255.0 * rng.uniform(0.45, 0.7)) ** rng.uniform(0.8, 0.95)
    return img


@functools.lru_cache(maxsize=8)
def _camera(shot: Shot):  # type: ignore[no-untyped-def]
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI on import otherwise
    try:
        import albumentations as A
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("brandguard.synth needs albumentations: pip install albumentations") from e
    m0, m1 = shot.motion
    steps = [
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=0, sigma_limit=shot.blur_sigma, p=1.0),
                A.MotionBlur(blur_limit=(m0 | 1, m1 | 1), p=1.0),
                A.Downscale(scale_range=shot.downscale, p=1.0),
            ],
            p=shot.blur,
        ),
        A.Sharpen(alpha=(0.2, 0.5), lightness=(0.9, 1.1), p=shot.sharpen),
        A.ISONoise(color_shift=(0.03, 0.08), intensity=shot.noise_intensity, p=shot.noise),
        A.ImageCompression(quality_range=shot.jpeg, p=1.0),
    ]
    return A.Compose([s for s in steps if s.p > 0])


def _shoot(package: Image.Image | np.ndarray, rng: np.random.Generator, shot: Shot) -> tuple[np.ndarray, np.ndarray]:
    pkg = np.asarray(package.convert("RGBA") if isinstance(package, Image.Image) else package)
    if pkg.ndim != 3 or pkg.shape[2] != 4 or pkg.dtype != np.uint8:
        raise DataError(f"photograph expects an RGBA uint8 package image, got shape {pkg.shape} {pkg.dtype}")
    ph, pw = pkg.shape[:2]
    W, H = _frame(rng, shot, pw, ph)
    name = shot.backgrounds[int(rng.integers(len(shot.backgrounds)))]
    if name == "white":
        bg = _white(rng, H, W)
    else:
        bg = cv2.resize(BACKGROUNDS[name](rng, H // 2, W // 2), (W, H), interpolation=cv2.INTER_LINEAR)
    quad = _place(rng, shot, pw, ph, W, H)

    k = math.sqrt(quad_area(quad) / (pw * ph))
    src = pkg
    if k < 0.8:
        src = cv2.resize(pkg, (max(2, int(pw * k * 1.15)), max(2, int(ph * k * 1.15))), interpolation=cv2.INTER_AREA)
    sh, sw = src.shape[:2]
    M = cv2.getPerspectiveTransform(np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32), quad)
    warped = cv2.warpPerspective(src, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0, 0)).astype(np.float32)
    alpha = warped[..., 3:] / 255.0

    scale = math.sqrt(quad_area(quad))
    if name == "white":  # a soft reflection on the sweep, mirrored about the product's bottom edge
        y_floor = float(quad[2:, 1].max())
        mirror = np.array([[1, 0, 0], [0, -1, 2 * y_floor], [0, 0, 1]], np.float64)
        refl = cv2.warpPerspective(src, mirror @ M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=(0, 0, 0, 0)).astype(np.float32)
        fade = np.clip(1 - (np.arange(H, dtype=np.float32) - y_floor) / (0.15 * H), 0, 1)[:, None, None]
        ra = refl[..., 3:] / 255.0 * fade * rng.uniform(0.06, 0.15)
        bg = bg + (refl[..., :3] - bg) * ra
    off = rng.uniform(-1, 1, 2) * scale * rng.uniform(0.01, 0.06)
    small = np.zeros((H // 4, W // 4), np.float32)
    cv2.fillConvexPoly(small, np.round((quad + off) / 4 * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
    sm = cv2.resize(cv2.GaussianBlur(small, (0, 0), float(rng.uniform(2.0, 6.0))), (W, H))
    bg = bg * (1 - rng.uniform(0.15, 0.5) * sm[..., None])
    if rng.random() < shot.side_face:
        bg = _side_face(rng, bg, quad, pkg)
    img = bg + (warped[..., :3] - bg) * alpha
    if rng.random() < shot.glare:
        img = img * (1 - alpha) + _glare(rng, img, quad) * alpha
    if rng.random() < shot.occlusion:
        img = _occlude(rng, img, quad, alpha[..., 0])
    img = _light(rng, img, shot, quad)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cam = _camera(shot)
    cam.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    img = cam(image=img)["image"]
    return np.ascontiguousarray(img), quad.astype(np.float32)


_CASUAL_BACKGROUNDS = ("bedding", "carpet", "granite", "cardboard", "room", "shelf", "photo")

#: Photo models by name. ``demo`` is the one designs are decided on; ``studio-casual`` is only read to check.
PHOTO_MODELS: dict[str, PhotoModel] = {
    "demo": PhotoModel(
        name="demo",
        description="the demo's photos: studio + listing-style references, 640x480 listings, JPEG 55-90",
    ),
    "studio-casual": PhotoModel(
        name="studio-casual",
        description="another photographer: white-sweep packshot references, casual phone listings, JPEG 30-70",
        shots={
            "studio": Shot(long_side=(900, 1000), aspects=(1.0,), coverage=(0.35, 0.5), max_rotation=0.0,
                           perspective=0.02, centred=True, backgrounds=("white",), jpeg=(92, 98)),
            "listing": Shot(long_side=(720, 1024), aspects=(4 / 3, 3 / 4, 16 / 9, 9 / 16, 1.0), coverage=(0.12, 0.6),
                            max_rotation=30.0, perspective=0.13, centred=False, backgrounds=_CASUAL_BACKGROUNDS,
                            lights=(0.3, 0.15, 0.2, 0.15), side_face=0.35, glare=0.3, occlusion=0.3, blur=0.7,
                            sharpen=0.4, noise=0.75, jpeg=(30, 70)),
        },
        references=3,
    ),
}


def get_photo_model(name: str | PhotoModel) -> PhotoModel:
    """The photo model called ``name`` (a :class:`PhotoModel` is returned as is).

    Raises:
        DataError: For an unknown name; the message lists the known ones.
    """
    if isinstance(name, PhotoModel):
        return name
    if name not in PHOTO_MODELS:
        raise DataError(f"unknown photo model {name!r}; known: {', '.join(PHOTO_MODELS)}")
    return PHOTO_MODELS[name]
