"""Packaging designs around real brand artwork, and their rendering.

A :class:`PackageDesign` is a plain, frozen description of the front face of a product's packaging: colours,
decoration, the logo (a Simple Icons icon) with its placement and any distortion, the wordmark, the product
line and the small print. :func:`make_design` invents one deterministically from ``(slug, product index,
seed)``; :func:`render_package` draws it. Counterfeit edits (:mod:`brandguard.synth.edits`) are functions
from design to design, so an edited package differs from the authentic one only where the edit says.

Example:
    >>> from brandguard.synth import make_design, render_package
    >>> d = make_design("nike", 0, seed=0)
    >>> img = render_package(d, scale=0.5)
    >>> img.mode, img.size == (round(d.width * 0.5), round(d.height * 0.5))
    ('RGBA', True)
"""

from __future__ import annotations

import colorsys
import functools
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from .artwork import font_path, get_icon, icon_aspect, icon_polygons, render_icon

__all__ = [
    "RGB",
    "LogoSpec",
    "MarkSpec",
    "PackageDesign",
    "TextSpec",
    "logo_box",
    "make_design",
    "render_package",
    "stable_seed",
]

RGB = tuple[int, int, int]


def stable_seed(*parts: object) -> list[int]:
    """A seed sequence for :func:`numpy.random.default_rng` from strings and ints, stable across processes."""
    out: list[int] = []
    for p in parts:
        if isinstance(p, (int, np.integer)):
            out.append(int(p) & 0xFFFFFFFF)
        else:
            out.append(zlib.crc32(str(p).encode("utf-8")))
    return out


# ---------------------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogoSpec:
    """Where and how the logo is drawn on the package face.

    Attributes:
        slug: Simple Icons slug of the icon drawn.
        color: Fill colour, RGB 0..255.
        cx: Centre x, fraction of the package width.
        cy: Centre y, fraction of the package height.
        width: Width of the logo's tight bounding box before distortion, fraction of the package width.
        rotation: In-plane rotation in degrees, counter-clockwise.
        mirrored: Drawn left-right mirrored.
        stretch_x: Horizontal scale factor (1 = undistorted).
        stretch_y: Vertical scale factor.
        shear: Horizontal shear (x += shear * y, in logo units).
        erase: Part of the logo left out: ``("rect", x0, y0, x1, y1)`` or ``("disc", cx, cy, r, 0)`` in
            coordinates normalised to the icon's bounding box (0..1 each way); ``None`` for the whole logo.
        plate: ``None`` or ``("circle"|"rounded", (r, g, b), pad)``: a badge drawn behind the logo, padded by
            ``pad`` times the logo's larger side.
    """

    slug: str
    color: RGB
    cx: float
    cy: float
    width: float
    rotation: float = 0.0
    mirrored: bool = False
    stretch_x: float = 1.0
    stretch_y: float = 1.0
    shear: float = 0.0
    erase: tuple[str, float, float, float, float] | None = None
    plate: tuple[str, RGB, float] | None = None


@dataclass(frozen=True)
class TextSpec:
    """A line of text on the package.

    Attributes:
        text: The characters drawn.
        font: Font key of :data:`brandguard.synth.artwork.FONTS`.
        color: RGB 0..255.
        x: Anchor x, fraction of the package width (centre, left or right edge per ``align``).
        y: Vertical centre, fraction of the package height.
        size: Font size in pixels as a fraction of the package height.
        max_width: The text is shrunk to fit this fraction of the package width.
        align: ``"center"``, ``"left"`` or ``"right"``.
        mirrored: Drawn left-right mirrored.
    """

    text: str
    font: str
    color: RGB
    x: float
    y: float
    size: float
    max_width: float = 0.9
    align: str = "center"
    mirrored: bool = False


@dataclass(frozen=True)
class MarkSpec:
    """A secondary mark: badge, star burst, sticker, text tag, barcode or recycling sign.

    Attributes:
        kind: ``"badge"`` (disc), ``"star"`` (burst), ``"tag"`` (rounded rectangle), ``"sticker"`` (large
            rounded rectangle), ``"barcode"`` or ``"recycle"``.
        cx: Centre x, fraction of the package width.
        cy: Centre y, fraction of the package height.
        size: Side of the mark's square box as a fraction of ``sqrt(width * height)`` of the package.
        color: Fill colour.
        text: Text inside the mark ('' for none).
        text_color: Colour of that text.
        aspect: Width / height of the mark's box (tags, stickers, barcodes).
        seed: Drives the mark's own pattern (barcode bars).
    """

    kind: str
    cx: float
    cy: float
    size: float
    color: RGB
    text: str = ""
    text_color: RGB = (255, 255, 255)
    aspect: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class PackageDesign:
    """The front face of one product's packaging.

    Attributes:
        brand: Brand slug (Simple Icons slug of the authentic logo).
        brand_title: The brand's name.
        product: Product name (e.g. ``"Air Glide Running Socks"``).
        product_slug: File-system friendly product id, unique within the brand.
        category: Product category (``sportswear``, ``drink``...).
        width: Face width in design pixels.
        height: Face height in design pixels.
        shape: ``"box"`` (flat face) or ``"can"`` (cylindrical shading).
        background: Background colours, RGB; the first is the base colour, the others decoration colours.
        decoration: ``"plain"``, ``"stripes"``, ``"bands"``, ``"gradient"``, ``"circles"``, ``"pattern"`` or
            ``"split"``.
        decoration_params: Numbers that fix the decoration (angles, counts, positions).
        logo: The logo.
        wordmark: The brand name as text.
        product_line: The product line text.
        small_print: Small lines of text (contents, address, batch...).
        marks: Secondary marks (barcode, badges, stickers).
    """

    brand: str
    brand_title: str
    product: str
    product_slug: str
    category: str
    width: int
    height: int
    shape: str
    background: tuple[RGB, ...]
    decoration: str
    decoration_params: tuple[float, ...]
    logo: LogoSpec
    wordmark: TextSpec
    product_line: TextSpec
    small_print: tuple[TextSpec, ...] = ()
    marks: tuple[MarkSpec, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------------------
# Colour helpers
# ---------------------------------------------------------------------------------------------------------


def _hsv(c: RGB) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(c[0] / 255.0, c[1] / 255.0, c[2] / 255.0)


def _rgb(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def luminance(c: RGB) -> float:
    """Relative luminance (WCAG) of an RGB colour, 0..1."""

    def lin(u: float) -> float:
        u /= 255.0
        return u / 12.92 if u <= 0.04045 else ((u + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])


def contrast(a: RGB, b: RGB) -> float:
    """WCAG contrast ratio of two colours (1..21)."""
    la, lb = luminance(a), luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend ``a*(1-t) + b*t``."""
    return tuple(round(a[i] * (1 - t) + b[i] * t) for i in range(3))  # type: ignore[return-value]


def shift_hue(c: RGB, degrees: float) -> RGB:
    """Rotate a colour's hue by ``degrees``, keeping saturation and value."""
    h, s, v = _hsv(c)
    return _rgb(h + degrees / 360.0, s, v)


WHITE: RGB = (255, 255, 255)
BLACK: RGB = (20, 20, 22)
_ACCENTS: tuple[RGB, ...] = (
    (235, 90, 30),
    (0, 150, 200),
    (220, 30, 60),
    (250, 190, 20),
    (40, 170, 90),
    (120, 70, 200),
    (0, 90, 170),
)


def _readable_on(bg: RGB, preferred: RGB) -> RGB:
    if contrast(bg, preferred) >= 2.6:
        return preferred
    return WHITE if luminance(bg) < 0.35 else BLACK


# ---------------------------------------------------------------------------------------------------------
# Inventing designs
# ---------------------------------------------------------------------------------------------------------

_PRODUCTS: dict[str, list[tuple[str, list[str]]]] = {
    "sportswear": [
        ("Running Socks", ["3 pairs", "Cushioned sole", "Size 39-42"]),
        ("Training Cap", ["One size", "Adjustable strap", "100% cotton"]),
        ("Performance Tee", ["Size M", "Quick-dry fabric", "Machine wash 30"]),
        ("Trainers", ["EU 42 / UK 8", "Breathable mesh", "Rubber outsole"]),
        ("Sports Bottle", ["750 ml", "BPA free", "Leak-proof lid"]),
    ],
    "drink": [
        ("Original Taste", ["330 ml", "Serve chilled", "Contains caffeine"]),
        ("Zero Sugar", ["500 ml", "No added sugar", "Best before: see base"]),
        ("Energy Drink", ["250 ml", "High caffeine content", "Not for children"]),
        ("Limited Edition", ["330 ml", "Sparkling", "Recyclable can"]),
    ],
    "food": [
        ("Spicy Wings Sauce", ["250 g", "Keep refrigerated", "Serves 4"]),
        ("Classic Seasoning", ["120 g", "Gluten free", "Store in a dry place"]),
        ("Family Meal Box", ["4 portions", "Heat before serving", "Best before: see side"]),
        ("Crispy Snack", ["150 g", "Sharing bag", "Made with sunflower oil"]),
    ],
    "electronics": [
        ("Wireless Earbuds", ["Bluetooth 5.3", "30 h battery", "USB-C charging"]),
        ("Controller", ["Wireless", "Rechargeable", "Model CF-2041"]),
        ("USB-C Charger", ["65 W", "Fast charging", "100-240 V"]),
        ("Portable Speaker", ["Waterproof IP67", "12 h playtime", "Model SP-300"]),
        ("Smart Watch", ["GPS", "Heart-rate sensor", "5 ATM"]),
    ],
    "car": [
        ("Scale Model 1:43", ["Die-cast metal", "Ages 14+", "Collector edition"]),
        ("Car Care Shampoo", ["500 ml", "pH neutral", "For all paint types"]),
        ("Leather Keyring", ["Genuine leather", "Official merchandise", "Gift box"]),
        ("Air Freshener", ["New car scent", "Lasts 30 days", "Vent clip"]),
    ],
    "fashion": [
        ("Eau de Parfum", ["50 ml / 1.7 fl oz", "Vaporisateur spray", "Made in France"]),
        ("Silk Scarf", ["90 x 90 cm", "100% silk", "Dry clean only"]),
        ("Leather Wallet", ["Calf leather", "8 card slots", "Made in Italy"]),
    ],
    "cosmetics": [
        ("Hydrating Cream", ["50 ml", "Dermatologically tested", "For all skin types"]),
        ("Vitamin C Serum", ["30 ml", "Fragrance free", "Use within 6 months"]),
        ("SPF 50 Sun Lotion", ["200 ml", "Water resistant", "UVA / UVB protection"]),
    ],
    "gaming": [
        ("Collector's Edition", ["PEGI 16", "Includes art book", "Online play optional"]),
        ("Gift Card", ["50 EUR", "Redeem online", "No expiry"]),
        ("Game Controller Grip", ["Ergonomic", "Non-slip", "Fits most pads"]),
    ],
    "household": [
        ("Reusable Bag", ["Holds 15 kg", "Washable", "Recycled fibres"]),
        ("Gift Box", ["Assorted", "Ready to give", "Ages 3+"]),
    ],
}

_LINES = (
    "Pro",
    "Ultra",
    "Classic",
    "Max",
    "Air",
    "Prime",
    "Sport",
    "Elite",
    "Flow",
    "Nova",
    "Core",
    "Edge",
    "Plus",
)
_SIZES = {
    "drink": [(500, 820, "can"), (520, 800, "can"), (800, 540, "box")],
    "food": [(700, 700, "box"), (800, 600, "box"), (600, 800, "box")],
    "sportswear": [(800, 500, "box"), (600, 800, "box"), (700, 700, "box")],
    "electronics": [(640, 780, "box"), (800, 600, "box"), (700, 700, "box")],
    "car": [(800, 600, "box"), (620, 800, "box")],
    "fashion": [(600, 800, "box"), (700, 700, "box")],
    "cosmetics": [(520, 820, "can"), (600, 800, "box")],
    "gaming": [(600, 800, "box"), (640, 780, "box")],
    "household": [(700, 700, "box"), (800, 600, "box")],
}
_DECORATIONS = ("plain", "stripes", "bands", "gradient", "circles", "pattern", "split")


def _brand_style(slug: str) -> dict:
    """Properties shared by every product of a brand (its 'identity'): font, case, accent colour."""
    rng = np.random.default_rng(stable_seed("brand-style", slug))
    font = str(rng.choice(["sans-bold", "sans-bold", "sans-bold", "sans", "serif-bold", "sans-boldoblique"]))
    if not get_icon(slug).title.isascii() and font in ("sans-cm", "serif-cm"):
        font = "sans-bold"
    return {
        "font": font,
        "upper": bool(rng.random() < 0.45),
        "accent": _ACCENTS[int(rng.integers(len(_ACCENTS)))],
    }


def _palette(brand: RGB, accent: RGB, variant: int) -> tuple[RGB, RGB, RGB, RGB]:
    """(background, decoration colour, logo colour, text colour) for one of several palette variants."""
    _h, s, v = _hsv(brand)
    chroma = s > 0.25 and v > 0.2
    key = brand if chroma else accent
    if variant == 0:  # brand colour field, white artwork
        bg = brand if chroma else BLACK
        deco = _rgb(_hsv(bg)[0], _hsv(bg)[1], max(0.0, _hsv(bg)[2] * 0.75)) if chroma else accent
        logo = _readable_on(bg, WHITE)
        return bg, deco, logo, _readable_on(bg, WHITE)
    if variant == 1:  # light field, brand-coloured artwork
        kh, _ks, _ = _hsv(key)
        bg = _rgb(kh, 0.06, 0.97)
        deco = _rgb(kh, 0.25, 0.92) if chroma else key
        logo = _readable_on(bg, brand if chroma else BLACK)
        return bg, deco, logo, _readable_on(bg, BLACK)
    # dark field with brand-coloured (or white) artwork
    kh = _hsv(key)[0]
    bg = _rgb(kh, 0.45, 0.18)
    deco = key
    logo = _readable_on(bg, brand if chroma and luminance(brand) > 0.12 else WHITE)
    return bg, deco, logo, WHITE


def _fit_logo_width(
    slug: str, width: int, height: int, area_frac: float, max_w: float, max_h: float
) -> float:
    """Logo bounding-box width (fraction of face width) giving ``area_frac`` of the face, within limits."""
    asp = icon_aspect(slug)
    bw = math.sqrt(area_frac * width * height * asp)
    bw = min(bw, max_w * width, max_h * height * asp)
    return bw / width


def make_design(slug: str, product_index: int, seed: int = 0) -> PackageDesign:
    """Invent the packaging of one product of a brand, deterministically.

    Args:
        slug: Brand slug (a bundled Simple Icons icon).
        product_index: Which of the brand's products (0, 1, ...): a different product line, layout and
            palette with the same logo and wordmark.
        seed: Data-set seed.

    Returns:
        The authentic :class:`PackageDesign`.

    Example:
        >>> make_design("puma", 1, seed=3) == make_design("puma", 1, seed=3)
        True
    """
    icon = get_icon(slug)
    style = _brand_style(slug)
    rng = np.random.default_rng(stable_seed("design", seed, slug, product_index))
    cat = icon.category
    products = _PRODUCTS.get(cat, _PRODUCTS["household"])
    base_i = int(np.random.default_rng(stable_seed("design-base", seed, slug)).integers(len(products)))
    pname, facts = products[(base_i + product_index) % len(products)]
    line = _LINES[int(rng.integers(len(_LINES)))]
    product = f"{line} {pname}"
    product_slug = "".join(ch if ch.isalnum() else "-" for ch in product.lower()).strip("-")
    product_slug = "-".join(p for p in product_slug.split("-") if p)
    w, h, shape = _SIZES.get(cat, _SIZES["household"])[
        int(rng.integers(len(_SIZES.get(cat, _SIZES["household"]))))
    ]
    portrait = h > w * 1.15
    landscape = w > h * 1.15

    variant = (int(np.random.default_rng(stable_seed("palette", seed, slug)).integers(3)) + product_index) % 3
    bg, deco_c, logo_c, text_c = _palette(icon.rgb, style["accent"], variant)
    decoration = _DECORATIONS[int(rng.integers(len(_DECORATIONS)))]
    dparams = tuple(float(x) for x in rng.random(6))

    # ---- layout
    layout = int(rng.integers(3))
    asp = icon_aspect(slug)
    area = float(rng.uniform(0.16, 0.30))
    wm_size = float(rng.uniform(0.075, 0.10) if not landscape else rng.uniform(0.10, 0.13))
    plate_kind = None
    if rng.random() < 0.3 and 0.75 < asp < 1.3:
        plate_kind = "circle" if rng.random() < 0.6 else "rounded"
    side_layout = landscape and layout == 2 and asp < 2.2
    lw = _fit_logo_width(slug, w, h, area, 0.42 if side_layout else 0.78, 0.66 if side_layout else 0.46)
    if plate_kind:
        lw *= 0.8
    for _ in range(12):
        lh = lw * w / asp / h
        # how far a plate reaches beyond the logo's box, above and below (fraction of the height)
        ext = 0.0
        if plate_kind == "circle":
            ext = 0.5 * math.hypot(lw * w, lh * h) * (1 + 0.16 * 0.6) / h - lh / 2
        elif plate_kind == "rounded":
            ext = max(lw * w, lh * h) * (0.5 + 0.16) / h - lh / 2
        if side_layout:
            # logo on the left, text on the right
            cx, cy = 0.06 + lw / 2 + ext * h / w, 0.45
            text_x, text_align, text_w = 0.55, "left", 0.42
            wm_y, pl_y = 0.36, 0.56
            ok = cy - lh / 2 - ext > 0.04 and cy + lh / 2 + ext < 0.8
        elif layout == 1:
            # wordmark at the top; logo and product line centred in the space below
            text_x, text_align, text_w = 0.5, "center", 0.84
            wm_y = 0.05 + wm_size * 0.6
            top, bottom = wm_y + wm_size * 0.6 + 0.04, 0.81
            stack = 2 * ext + lh + 0.04 + wm_size * 0.5
            free = bottom - top - stack
            t0 = top + max(free, 0.0) * 0.45
            cx, cy = 0.5, t0 + ext + lh / 2
            pl_y = t0 + 2 * ext + lh + 0.04 + wm_size * 0.25
            ok = free >= 0
        else:
            # logo, wordmark and product line stacked, the stack a little above the centre of the free space
            text_x, text_align, text_w = 0.5, "center", 0.84
            top, bottom = 0.06, 0.81
            stack = 2 * ext + lh + 0.035 + wm_size * 1.1 + wm_size * 0.55
            free = bottom - top - stack
            t0 = top + max(free, 0.0) * 0.4
            cx, cy = 0.5, t0 + ext + lh / 2
            wm_y = t0 + 2 * ext + lh + 0.035 + wm_size * 0.55
            pl_y = wm_y + wm_size * 1.05
            ok = free >= 0
        if ok:
            break
        lw *= 0.93
    lh_frac = lw * w / asp / h
    jitter = rng.uniform(-0.015, 0.015, 2)
    cx = float(np.clip(cx + jitter[0], lw / 2 + 0.04, 1 - lw / 2 - 0.04))
    cy = float(np.clip(cy + jitter[1], lh_frac / 2 + 0.04, 1 - lh_frac / 2 - 0.04))

    plate = None
    if plate_kind:
        pc = _readable_on(logo_c, mix(bg, WHITE if luminance(bg) < 0.4 else BLACK, 0.15))
        if contrast(pc, logo_c) < 2.6:
            pc = WHITE if luminance(logo_c) < 0.4 else BLACK
        plate = (plate_kind, pc, 0.16)
    logo = LogoSpec(
        slug=slug,
        color=logo_c,
        cx=cx,
        cy=cy,
        width=float(lw),
        rotation=float(rng.choice([0.0, 0.0, 0.0, rng.uniform(-8, 8)])),
        plate=plate,
    )
    title = icon.title.upper() if style["upper"] else icon.title
    wordmark = TextSpec(
        text=title,
        font=style["font"],
        color=text_c,
        x=text_x,
        y=wm_y,
        size=wm_size,
        max_width=text_w,
        align=text_align,
    )
    pl_font = "sans" if style["font"] != "sans" else "sans-oblique"
    product_line = TextSpec(
        text=product,
        font=pl_font,
        color=text_c,
        x=text_x,
        y=pl_y,
        size=wm_size * 0.5,
        max_width=text_w,
        align=text_align,
    )
    sp_size = 0.024 if portrait else 0.032
    small: list[TextSpec] = []
    small_y = 0.86
    for i, fact in enumerate(facts[:3]):
        small.append(
            TextSpec(
                text=fact,
                font="sans",
                color=text_c,
                x=0.07,
                y=small_y + i * sp_size * 1.35,
                size=sp_size,
                max_width=0.5,
                align="left",
            )
        )
    # barcode bottom right, sometimes a volume badge or recycling sign
    marks = [
        MarkSpec(
            kind="barcode",
            cx=0.83,
            cy=0.9,
            size=0.11,
            color=WHITE,
            text_color=BLACK,
            aspect=1.5,
            seed=int(rng.integers(1 << 30)),
        )
    ]
    if rng.random() < 0.35:
        marks.append(MarkSpec(kind="recycle", cx=0.62, cy=0.92, size=0.05, color=text_c))
    return PackageDesign(
        brand=slug,
        brand_title=icon.title,
        product=product,
        product_slug=product_slug,
        category=cat,
        width=int(w),
        height=int(h),
        shape=shape,
        background=(bg, deco_c),
        decoration=decoration,
        decoration_params=dparams,
        logo=logo,
        wordmark=wordmark,
        product_line=product_line,
        small_print=tuple(small),
        marks=tuple(marks),
    )


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def _paint(
    canvas: np.ndarray, mask: np.ndarray, x0: int, y0: int, color: RGB | np.ndarray, alpha: float = 1.0
) -> None:
    """Composite ``color`` through ``mask`` (float 0..1) into ``canvas`` (HxWx3 float32) at ``(x0, y0)``."""
    H, W = canvas.shape[:2]
    h, w = mask.shape
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + w, W), min(y0 + h, H)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    m = mask[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0, None] * alpha
    win = canvas[ay0:ay1, ax0:ax1]
    col = np.asarray(color, np.float32)
    if col.ndim == 3:
        col = col[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    win *= 1.0 - m
    win += m * col


def logo_matrix(logo: LogoSpec, W: int, H: int) -> np.ndarray:
    """2x3 affine map from the icon's view box to package pixels for a rendered face of ``W x H``."""
    _, (x0, y0, x1, y1), _ = icon_polygons(logo.slug)
    bw = max(x1 - x0, 1e-6)
    k = logo.width * W / bw
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    S = np.diag([k * logo.stretch_x * (-1.0 if logo.mirrored else 1.0), k * logo.stretch_y])
    Sh = np.array([[1.0, logo.shear], [0.0, 1.0]])
    a = math.radians(logo.rotation)
    R = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    lin = R @ Sh @ S
    t = np.array([logo.cx * W, logo.cy * H]) - lin @ c
    return np.hstack([lin, t[:, None]])


def logo_box(design: PackageDesign, W: int | None = None, H: int | None = None) -> tuple[int, int, int, int]:
    """Pixel bounding box ``(x0, y0, x1, y1)`` of the logo on a face rendered at ``W x H`` (design size default)."""
    W = design.width if W is None else W
    H = design.height if H is None else H
    M = logo_matrix(design.logo, W, H)
    _, (x0, y0, x1, y1), _ = icon_polygons(design.logo.slug)
    pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ M[:, :2].T + M[:, 2]
    return (
        math.floor(pts[:, 0].min()),
        math.floor(pts[:, 1].min()),
        math.ceil(pts[:, 0].max()),
        math.ceil(pts[:, 1].max()),
    )


def _draw_logo(canvas: np.ndarray, logo: LogoSpec) -> None:
    H, W = canvas.shape[:2]
    M = logo_matrix(logo, W, H)
    _, (x0, y0, x1, y1), _ = icon_polygons(logo.slug)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ M[:, :2].T + M[:, 2]
    bx0, by0 = np.floor(corners.min(0)).astype(int) - 2
    bx1, by1 = np.ceil(corners.max(0)).astype(int) + 2
    if logo.plate is not None:
        kind, pc, pad = logo.plate
        cxy = corners.mean(0)
        side = max(bx1 - bx0, by1 - by0)
        r = side * (0.5 + pad)
        if kind == "circle":
            r = 0.5 * math.hypot(bx1 - bx0, by1 - by0) * (1 + pad * 0.6)
        _paint_shape(canvas, kind, cxy, r, r, pc)
    Mw = M.copy()
    Mw[:, 2] -= [bx0, by0]
    mask = render_icon(logo.slug, Mw, (int(by1 - by0), int(bx1 - bx0)))
    if logo.erase is not None:
        mask = mask * (1.0 - _erase_mask(logo, Mw, mask.shape))
    _paint(canvas, mask, int(bx0), int(by0), logo.color)


def _erase_mask(logo: LogoSpec, Mw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if logo.erase is None:
        raise ValueError(f"logo {logo.slug!r} has no erased region to draw; expected LogoSpec.erase to be set")
    kind, a, b, c, d = logo.erase
    _, (x0, y0, x1, y1), _ = icon_polygons(logo.slug)
    bw, bh = x1 - x0, y1 - y0
    if kind == "rect":
        pts = np.array([[a, b], [c, b], [c, d], [a, d]], np.float64)
    else:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        # radius is relative to the larger side, so the disc stays round on wide logos
        rr = c * max(bw, bh)
        pts = np.stack([a + rr / bw * np.cos(t), b + rr / bh * np.sin(t)], 1)
    vb = np.stack([x0 + pts[:, 0] * bw, y0 + pts[:, 1] * bh], 1)
    px = vb @ Mw[:, :2].T + Mw[:, 2]
    m = np.zeros((shape[0] * 4, shape[1] * 4), np.uint8)
    cv2.fillPoly(m, [np.round(px * 4 * 8).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=3)
    return cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _paint_shape(
    canvas: np.ndarray,
    kind: str,
    cxy: np.ndarray,
    rx: float,
    ry: float,
    color: RGB,
    alpha: float = 1.0,
    n_points: int = 5,
) -> None:
    """Draw an antialiased disc / rounded square / star centred at ``cxy`` with half-sizes ``rx, ry``."""
    import cv2

    ss = 4
    x0, y0 = math.floor(cxy[0] - rx) - 1, math.floor(cxy[1] - ry) - 1
    w, h = math.ceil(2 * rx) + 3, math.ceil(2 * ry) + 3
    if w <= 1 or h <= 1:
        return
    m = np.zeros((h * ss, w * ss), np.uint8)
    c = ((cxy[0] - x0) * ss, (cxy[1] - y0) * ss)
    if kind == "circle":
        cv2.ellipse(
            m,
            (int(c[0] * 16), int(c[1] * 16)),
            (int(rx * ss * 16), int(ry * ss * 16)),
            0,
            0,
            360,
            255,
            -1,
            cv2.LINE_8,
            4,
        )
    elif kind == "star":
        t = np.arange(2 * n_points) * np.pi / n_points - np.pi / 2
        rad = np.where(np.arange(2 * n_points) % 2 == 0, 1.0, 0.72 if n_points > 8 else 0.45)
        pts = np.stack([c[0] + rad * rx * ss * np.cos(t), c[1] + rad * ry * ss * np.sin(t)], 1)
        cv2.fillPoly(m, [np.round(pts * 8).astype(np.int32)], 255, cv2.LINE_8, 3)
    else:  # rounded rectangle
        r = int(min(rx, ry) * ss * 0.35)
        X0, Y0 = int(c[0] - rx * ss), int(c[1] - ry * ss)
        X1, Y1 = int(c[0] + rx * ss), int(c[1] + ry * ss)
        cv2.rectangle(m, (X0 + r, Y0), (X1 - r, Y1), 255, -1)
        cv2.rectangle(m, (X0, Y0 + r), (X1, Y1 - r), 255, -1)
        for px, py in ((X0 + r, Y0 + r), (X1 - r, Y0 + r), (X0 + r, Y1 - r), (X1 - r, Y1 - r)):
            cv2.circle(m, (px, py), r, 255, -1)
    mk = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    _paint(canvas, mk, x0, y0, color, alpha)


@functools.lru_cache(maxsize=256)
def _font(key: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(key), max(4, px))


def _text_mask(text: str, font_key: str, px: int) -> np.ndarray:
    if font_key in ("sans-cm", "serif-cm") and not text.isascii():
        font_key = "sans" if font_key == "sans-cm" else "serif"
    font = _font(font_key, px)
    x0, y0, x1, y1 = (math.floor(v) for v in font.getbbox(text))
    w, h = max(1, x1 - x0 + 2), max(1, y1 - y0 + 2)
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((1 - x0, 1 - y0), text, font=font, fill=255)
    return np.asarray(im, np.float32) / 255.0


def _draw_text(canvas: np.ndarray, t: TextSpec) -> None:
    H, W = canvas.shape[:2]
    px = max(4, round(t.size * H))
    mask = _text_mask(t.text, t.font, px)
    maxw = t.max_width * W
    if mask.shape[1] > maxw:
        px = max(4, int(px * maxw / mask.shape[1]))
        mask = _text_mask(t.text, t.font, px)
    if t.mirrored:
        mask = mask[:, ::-1]
    h, w = mask.shape
    if t.align == "left":
        x0 = t.x * W
    elif t.align == "right":
        x0 = t.x * W - w
    else:
        x0 = t.x * W - w / 2
    y0 = t.y * H - h / 2
    _paint(canvas, mask, round(x0), round(y0), t.color)


def _draw_mark(canvas: np.ndarray, m: MarkSpec) -> None:
    H, W = canvas.shape[:2]
    side = m.size * math.sqrt(W * H)
    rx, ry = side / 2 * math.sqrt(m.aspect), side / 2 / math.sqrt(m.aspect)
    c = np.array([m.cx * W, m.cy * H])
    if m.kind == "barcode":
        _paint_shape(canvas, "rounded", c, rx, ry, m.color)
        rng = np.random.default_rng(m.seed)
        bars = rng.integers(1, 4, 40)
        x = c[0] - rx * 0.85
        unit = (1.7 * rx) / bars.sum() / 1.0
        on = True
        for b in bars:
            if on:
                x0 = round(x)
                x1 = max(x0 + 1, round(x + b * unit))
                canvas[int(c[1] - ry * 0.75) : int(c[1] + ry * 0.55), x0:x1] = np.asarray(
                    m.text_color, np.float32
                )
            x += b * unit
            on = not on
        digits = "".join(str(d) for d in rng.integers(0, 10, 13))
        _draw_text(
            canvas,
            TextSpec(
                digits,
                "mono",
                m.text_color,
                m.cx,
                (c[1] + ry * 0.75) / H,
                ry * 0.32 / H * 2,
                max_width=1.7 * rx / W,
            ),
        )
        return
    if m.kind == "recycle":
        for k in range(3):
            a = math.radians(90 + 120 * k)
            p = c + np.array([math.cos(a), -math.sin(a)]) * rx * 0.5
            _paint_shape(canvas, "star", p, rx * 0.45, ry * 0.45, m.color, n_points=3)
        return
    shape = {"badge": "circle", "star": "star", "tag": "rounded", "sticker": "rounded"}.get(m.kind, "rounded")
    n_pts = 16 if m.kind == "star" else 5
    if m.kind == "sticker":
        # a printed sticker with a darker border
        _paint_shape(canvas, shape, c, rx, ry, mix(m.color, BLACK, 0.35))
        _paint_shape(canvas, shape, c, rx * 0.93, ry * 0.93, m.color)
    else:
        _paint_shape(canvas, shape, c, rx, ry, m.color, n_points=n_pts)
    if m.text:
        lines = m.text.split("\n")
        fs = ry * 2 * (0.42 if len(lines) == 1 else 0.3) / H
        for i, line in enumerate(lines):
            dy = (i - (len(lines) - 1) / 2) * fs * 1.15
            _draw_text(
                canvas,
                TextSpec(
                    line,
                    "sans-bold",
                    m.text_color,
                    m.cx,
                    m.cy + dy,
                    fs,
                    max_width=(1.45 if shape != "rounded" else 1.8) * rx / W,
                ),
            )


def _draw_background(canvas: np.ndarray, d: PackageDesign) -> None:
    import cv2

    H, W = canvas.shape[:2]
    bg = np.asarray(d.background[0], np.float32)
    canvas[:] = bg
    deco = d.background[1] if len(d.background) > 1 else d.background[0]
    p = d.decoration_params + (0.5,) * (6 - len(d.decoration_params))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if d.decoration == "stripes":
        ang = math.radians(20 + 50 * p[0])
        period = (0.12 + 0.1 * p[1]) * max(W, H)
        u = (xx * math.cos(ang) + yy * math.sin(ang)) / period
        frac = u - np.floor(u)
        m = np.clip((0.35 - np.abs(frac - 0.5)) * period * 0.5, 0, 1) * (0.55 + 0.4 * p[2])
        # stripes only on one diagonal half so the artwork stays legible
        m *= np.clip((xx / W + yy / H - (0.9 + 0.4 * p[3])) * 8, 0, 1)
        _paint(canvas, m, 0, 0, deco)
    elif d.decoration == "bands":
        top = 0.05 + 0.06 * p[0]
        bot = 0.80 + 0.06 * p[1]
        m = ((yy < top * H) | (yy > bot * H)).astype(np.float32)
        m = cv2.GaussianBlur(m, (0, 0), 0.6)
        _paint(canvas, m, 0, 0, deco)
        thin = (np.abs(yy - (bot - 0.025) * H) < 0.006 * H).astype(np.float32)
        _paint(canvas, thin, 0, 0, mix(deco, WHITE, 0.5))
    elif d.decoration == "gradient":
        t = np.clip((yy / H) * (0.8 + 0.4 * p[0]) - 0.1, 0, 1) ** (0.7 + p[1])
        col = np.asarray(deco, np.float32)
        canvas[:] = bg * (1 - t[..., None] * 0.75) + col * (t[..., None] * 0.75)
    elif d.decoration == "circles":
        for k in range(3):
            r = (0.25 + 0.35 * p[k]) * max(W, H)
            cx = (p[(k + 3) % 6] if k % 2 else 1 - p[(k + 3) % 6]) * W
            cy = (0.1 + 0.8 * p[(k + 1) % 6]) * H
            _paint_shape(canvas, "circle", np.array([cx, cy]), r, r, deco, alpha=0.22 + 0.1 * k)
    elif d.decoration == "pattern":
        step = (0.06 + 0.04 * p[0]) * max(W, H)
        dots = (
            (np.mod(xx + (np.floor(yy / step) % 2) * step / 2, step) - step / 2) ** 2
            + (np.mod(yy, step) - step / 2) ** 2
        ) < (step * (0.12 + 0.1 * p[1])) ** 2
        m = cv2.GaussianBlur(dots.astype(np.float32), (0, 0), 0.7) * 0.5
        _paint(canvas, m, 0, 0, deco)
    elif d.decoration == "split":
        ang = (p[0] - 0.5) * 0.6
        yline = (0.72 + 0.12 * p[1]) * H + (xx - W / 2) * math.tan(ang)
        m = np.clip(yy - yline, 0, 1).astype(np.float32)
        _paint(canvas, m, 0, 0, deco)


def render_package(design: PackageDesign, scale: float = 1.0) -> Image.Image:
    """Draw a package face.

    Args:
        design: What to draw.
        scale: Output pixels per design pixel.

    Returns:
        ``RGBA`` image of ``round(width*scale) x round(height*scale)``; alpha is the face's outline (slightly
        rounded corners).

    Raises:
        DataError: If ``scale`` gives an empty image.

    Example:
        >>> from brandguard.synth import make_design
        >>> render_package(make_design("adidas", 0), 0.25).size[0] > 0
        True
    """
    W, H = round(design.width * scale), round(design.height * scale)
    if W < 8 or H < 8:
        raise DataError(f"render_package: scale {scale} gives a {W}x{H} image; use a larger scale")
    canvas = np.empty((H, W, 3), np.float32)
    _draw_background(canvas, design)
    for m in design.marks:
        if m.kind in ("barcode", "recycle"):
            _draw_mark(canvas, m)
    for t in design.small_print:
        _draw_text(canvas, t)
    _draw_text(canvas, design.product_line)
    _draw_logo(canvas, design.logo)
    _draw_text(canvas, design.wordmark)
    for m in design.marks:
        if m.kind not in ("barcode", "recycle"):
            _draw_mark(canvas, m)
    if design.shape == "can":
        x = (np.arange(W, dtype=np.float32) + 0.5) / W * 2 - 1
        shade = 0.80 + 0.22 * np.sqrt(np.clip(1 - x**2, 0, 1)) + 0.10 * np.exp(-((x + 0.45) ** 2) / 0.01)
        canvas *= shade[None, :, None]
    else:
        yy = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
        canvas *= 1.02 - 0.06 * yy
    rgb = np.clip(canvas, 0, 255).astype(np.uint8)
    alpha = _face_alpha(W, H, design.shape)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


@functools.lru_cache(maxsize=64)
def _face_alpha(W: int, H: int, shape: str) -> np.ndarray:
    m = np.zeros((H, W, 3), np.float32)
    r = min(W, H) * (0.06 if shape == "can" else 0.02)
    _paint_shape(m, "rounded", np.array([W / 2, H / 2]), W / 2, H / 2, (255, 255, 255)) if r > 0 else None
    a = m[..., 0]
    if shape != "can":
        # _paint_shape rounds corners by 35% of the half side; boxes want sharper corners
        a = np.full((H, W), 255.0, np.float32)
        k = max(1, int(r))
        yy, xx = np.mgrid[0:k, 0:k]
        corner = np.clip(k - np.hypot(k - xx - 0.5, k - yy - 0.5) + 0.5, 0, 1) * 255
        a[:k, :k] = corner
        a[:k, -k:] = corner[:, ::-1]
        a[-k:, :k] = corner[::-1]
        a[-k:, -k:] = corner[::-1, ::-1]
    out = a.astype(np.uint8)
    out.flags.writeable = False
    return out
