"""Load any image input as an ``HxWx3`` ``uint8`` RGB array, and find image files in folders.

Every photo enters brandguard through :func:`load_image`: file paths, raw bytes, Pillow images and
numpy arrays all come out the same way, with EXIF orientation applied, transparency composited onto
white and high bit depths scaled to 8 bits. Inputs that cannot be used (missing, empty, truncated,
not an image, a decompression bomb, too small) raise :class:`~brandguard.errors.ImageLoadError` with a
message that says what was expected and what came.

Example:
    >>> import numpy as np
    >>> load_image(np.zeros((32, 48), dtype=np.uint8)).shape
    (32, 48, 3)
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import stat
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TypeAlias

import numpy as np
from PIL import Image, UnidentifiedImageError

from brandguard.errors import ImageLoadError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MIN_IMAGE_SIDE",
    "ImageSource",
    "Photo",
    "is_image_path",
    "list_images",
    "load_image",
    "load_photo",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
"""File extensions (lower-case, with the dot) that :func:`list_images` treats as images."""

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest declared ``width * height`` :func:`load_image` decodes (a decompression-bomb guard)."""

MIN_IMAGE_SIDE: int = 16
"""Images whose width or height is below this many pixels are refused as too small to compare."""

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
"""Anything :func:`load_image` accepts: a file path, encoded bytes, a Pillow image or a pixel array."""

_EXPECTED = "expected a JPEG/PNG/WebP/BMP/TIFF/GIF image"
_EXPECTED_ARRAY = (
    "expected an HxW, HxWx1, HxWx3 or HxWx4 array of uint8 (0..255), uint16 (0..65535) or float (0..1)"
)

# Magic numbers of the formats we expect, used to tell "truncated" from "not an image".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# EXIF orientation tag value -> the transpose that undoes it (as in PIL.ImageOps.exif_transpose).
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_FIX: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_image(
    source: ImageSource,
    *,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load an image as an ``HxWx3`` ``uint8`` RGB C-contiguous array.

    Files and bytes are decoded in full (a truncated file is an error, never half an image), after
    checking the size their header declares against ``max_pixels``. The EXIF orientation is applied,
    transparency is composited onto white, CMYK, palette, 1-bit, 16-bit and float images are
    converted to 8-bit RGB, and only the first frame of an animated GIF or multi-page TIFF is used.
    The returned array is always a fresh copy the caller may modify.

    Args:
        source: A path to an image file; the encoded bytes of one; a :class:`PIL.Image.Image` (its
            current frame is used); or a numpy array of shape ``HxW``, ``HxWx1``, ``HxWx3`` or
            ``HxWx4`` with dtype ``uint8``, ``uint16`` (scaled from 0..65535) or float (0..1).
        max_side: If given, shrink the image so that its longer side is at most this many pixels
            (never enlarged). JPEGs are then decoded at a reduced scale, which is much faster.
        max_pixels: Refuse images whose declared ``width * height`` is larger, before decoding them.

    Returns:
        An array of shape ``(height, width, 3)``, dtype ``uint8``, C-contiguous, in RGB order.

    Raises:
        ImageLoadError: If the input is missing, unreadable, empty, not an image, truncated,
            larger than ``max_pixels``, smaller than 16 pixels on a side, or an unsupported array.
        ValueError: If ``max_side`` or ``max_pixels`` is not a positive integer.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO()
        >>> Image.new("RGBA", (640, 480), (255, 0, 0, 255)).save(buf, format="PNG")
        >>> rgb = load_image(buf.getvalue(), max_side=320)
        >>> rgb.shape, rgb.dtype, rgb[0, 0].tolist()
        ((240, 320, 3), dtype('uint8'), [255, 0, 0])
    """
    _check_positive_int("max_side", max_side, minimum=MIN_IMAGE_SIDE, allow_none=True)
    _check_positive_int("max_pixels", max_pixels, minimum=1, allow_none=False)

    if isinstance(source, np.ndarray):
        return _load_array(source, max_side=max_side, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return _load_pil(source, label=None, max_side=max_side, max_pixels=max_pixels, own=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageLoadError(f"empty input (0 bytes); {_EXPECTED}")
        return _load_stream(io.BytesIO(data), label=None, max_side=max_side, max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, max_side=max_side, max_pixels=max_pixels)
    raise ImageLoadError(
        f"unsupported input type {type(source).__name__}; expected a file path, encoded image bytes, "
        "a PIL.Image.Image or a numpy array"
    )


@dataclass(frozen=True)
class Photo:
    """A photo as brandguard uses it: a working copy to find the product on, and the full resolution to
    take the product's crop from.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB working copy, long side <= ``max_side``: exactly what
            ``load_image(source, max_side=max_side)`` returns. Keypoints, homographies, heatmaps and
            quads are in its pixels.
        full: ``(H, W, 3)`` uint8 RGB at full resolution (long side <= ``full_side``); the very same array
            as ``image`` when the photo is not larger than ``max_side``.
    """

    image: np.ndarray
    full: np.ndarray

    @property
    def scale(self) -> float:
        """Full-resolution pixels per working-copy pixel along the long side (1.0 when they are one)."""
        return max(self.full.shape[:2]) / max(self.image.shape[:2])


def load_photo(
    source: ImageSource,
    *,
    max_side: int,
    full_side: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Photo:
    """Load a photo twice over: a working copy (long side <= ``max_side``) and its full resolution.

    The full resolution is decoded first (bounded by ``full_side`` and, before decoding, by
    ``max_pixels``, the decompression-bomb guard). A photo not larger than ``max_side`` is decoded once and
    both fields hold the same array; a larger one gets its working copy decoded as :func:`load_image` does
    (JPEG at reduced scale), so keypoints and localisation are the same as from ``load_image``.

    Args:
        source: as for :func:`load_image`.
        max_side: long side (pixels) of the working copy.
        full_side: long side (pixels) the full resolution is capped at (>= ``max_side``).
        max_pixels: refuse images whose declared ``width * height`` is larger.

    Returns:
        a :class:`Photo`.

    Raises:
        ImageLoadError: as :func:`load_image`.
        ValueError: ``max_side``, ``full_side`` or ``max_pixels`` is not a positive integer, or
            ``full_side < max_side``.

    Example:
        >>> import numpy as np
        >>> p = load_photo(np.zeros((100, 2000, 3), np.uint8), max_side=640, full_side=4096)
        >>> p.image.shape, p.full.shape, round(p.scale, 3)
        ((32, 640, 3), (100, 2000, 3), 3.125)
    """
    _check_positive_int("max_side", max_side, minimum=MIN_IMAGE_SIDE, allow_none=False)
    _check_positive_int("full_side", full_side, minimum=MIN_IMAGE_SIDE, allow_none=False)
    if full_side < max_side:
        raise ValueError(f"full_side must be >= max_side, got {full_side} < {max_side}")
    full = load_image(source, max_side=full_side, max_pixels=max_pixels)
    if max(full.shape[:2]) <= max_side:
        return Photo(full, full)
    return Photo(load_image(source, max_side=max_side, max_pixels=max_pixels), full)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Tell whether a path names an image file, judging by its extension only (case-insensitive).

    The file is not opened and need not exist.

    Args:
        path: A file path.

    Returns:
        True if the extension is one of :data:`IMAGE_EXTENSIONS`.

    Example:
        >>> is_image_path("shoes/IMG_0001.JPG"), is_image_path("notes.txt")
        (True, False)
    """
    return pathlib.PurePath(os.fsdecode(path)).suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike[str], *, recursive: bool = True) -> list[pathlib.Path]:
    """List the image files under a folder, in a stable order.

    Files are kept when :func:`is_image_path` accepts them. Hidden files and folders (names starting
    with ``.``, such as ``.DS_Store`` or macOS ``._IMG.jpg`` resource forks) are skipped. Symbolic
    links to folders are followed once each, and only when their target lies inside ``root``: the
    listing never leaves the folder (``loop -> ..``). Every entry named like an image is listed, even
    when it is not a readable regular file (a dangling link, a FIFO, a folder named ``x.jpg``), so
    that a caller gives it an ``error`` row instead of losing it; :func:`load_image` says why without
    opening it. A subfolder that cannot be read is skipped with a warning naming it, so one bad folder
    does not stop a batch.

    Args:
        root: The folder to search.
        recursive: Also search subfolders (default); otherwise only files directly in ``root``.

    Returns:
        Paths (``root`` joined with each file's relative path), sorted by relative POSIX path.

    Raises:
        ImageLoadError: If ``root`` does not exist, is not a folder, or cannot be read.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = Path(tempfile.mkdtemp())
        >>> for name in ["b.jpg", "a.PNG", "notes.txt", ".hidden.jpg"]:
        ...     _ = (tmp / name).write_bytes(b"")
        >>> [p.name for p in list_images(tmp)]
        ['a.PNG', 'b.jpg']
    """
    root_path = pathlib.Path(os.fsdecode(root))
    if not root_path.exists():
        raise ImageLoadError("folder not found; expected a folder of images", source=str(root_path))
    if not root_path.is_dir():
        raise ImageLoadError("not a folder; expected a folder of images", source=str(root_path))
    try:
        with os.scandir(root_path):
            pass
    except OSError as exc:
        raise ImageLoadError(
            f"cannot read folder ({exc.strerror or exc}); check its permissions", source=str(root_path)
        ) from exc

    relative = sorted(_walk_images(root_path, recursive=recursive), key=lambda rel: rel.as_posix())
    return [root_path / rel for rel in relative]


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def _load_path(path: str | os.PathLike[str], *, max_side: int | None, max_pixels: int) -> np.ndarray:
    label = os.fsdecode(path)
    file_path = pathlib.Path(label)
    try:
        kind = os.stat(file_path).st_mode
    except FileNotFoundError as exc:
        if os.path.islink(file_path):
            raise ImageLoadError("dangling symbolic link (its target does not exist); "
                                 f"{_EXPECTED} file", source=label) from exc
        raise ImageLoadError(f"file not found; {_EXPECTED} file", source=label) from exc
    except OSError as exc:  # a symlink loop, a permission error on a folder above...
        raise ImageLoadError(f"cannot read file ({exc.strerror or exc}); {_EXPECTED}", source=label) from exc
    if stat.S_ISDIR(kind):
        raise ImageLoadError(f"is a directory; {_EXPECTED} file", source=label)
    if not stat.S_ISREG(kind):  # never open a FIFO (it blocks), a socket or a device
        raise ImageLoadError(f"not a regular file (a FIFO, socket or device); {_EXPECTED} file", source=label)
    try:
        with open(file_path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size == 0:
                raise ImageLoadError(f"empty file (0 bytes); {_EXPECTED}", source=label)
            return _load_stream(stream, label=label, max_side=max_side, max_pixels=max_pixels)
    except FileNotFoundError as exc:
        raise ImageLoadError(f"file not found; {_EXPECTED} file", source=label) from exc
    except IsADirectoryError as exc:
        raise ImageLoadError(f"is a directory; {_EXPECTED} file", source=label) from exc
    except PermissionError as exc:
        if file_path.is_dir():  # Windows reports opening a directory as a permission error
            raise ImageLoadError(f"is a directory; {_EXPECTED} file", source=label) from exc
        raise ImageLoadError(
            "permission denied; the file exists but cannot be read, check its permissions",
            source=label,
        ) from exc
    except OSError as exc:  # e.g. an I/O error on a network drive
        raise ImageLoadError(f"cannot read file ({exc.strerror or exc}); {_EXPECTED}", source=label) from exc


def _load_stream(
    stream: IO[bytes], *, label: str | None, max_side: int | None, max_pixels: int
) -> np.ndarray:
    """Open (lazily), check the declared size, then decode an encoded image from a binary stream."""
    with _bomb_warnings_as_errors(max_pixels):
        try:
            image = Image.open(stream)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(None, max_pixels, label, detail=str(exc)) from exc
        except UnidentifiedImageError as exc:
            raise ImageLoadError(_describe_unreadable(stream), source=label) from exc
        except Exception as exc:  # plugins raise assorted errors on malformed headers
            raise ImageLoadError(
                f"{_describe_unreadable(stream)} ({type(exc).__name__}: {exc})", source=label
            ) from exc
        with image:
            return _load_pil(image, label=label, max_side=max_side, max_pixels=max_pixels, own=True)


def _load_pil(
    image: Image.Image, *, label: str | None, max_side: int | None, max_pixels: int, own: bool
) -> np.ndarray:
    """Decode (if still lazy) and convert a Pillow image. ``own``: we opened it and may mutate it."""
    width, height = image.size
    if width * height > max_pixels:
        raise _bomb_error((width, height), max_pixels, label)
    _check_min_side(width, height, label)

    target = _target_size(width, height, max_side)
    if own and target != (width, height) and image.format in ("JPEG", "MPO"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the final size.
        image.draft("RGB", target)

    # Pillow warns while decoding only a frame larger than its limit: for the others no warning filter (process-wide
    # state, see _bomb_warnings_as_errors) is needed, and decoding runs side by side on every thread
    pillow_limit = Image.MAX_IMAGE_PIXELS
    large = pillow_limit is not None and width * height > pillow_limit
    with _bomb_warnings_as_errors(max_pixels) if large else contextlib.nullcontext():
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error((width, height), max_pixels, label, detail=str(exc)) from exc
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
            kind = image.format or "image"
            raise ImageLoadError(
                f"truncated or corrupt {kind} data ({exc}); the file may be an incomplete download "
                "or damaged",
                source=label,
            ) from exc

    orientation = _exif_orientation(image, label)
    rgb = _to_rgb(image, label)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation is not None:
        rgb = rgb.transpose(orientation)
    return _as_output(np.asarray(rgb, dtype=np.uint8))


def _load_array(array: np.ndarray, *, max_side: int | None, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(f"unsupported array of shape {array.shape}; {_EXPECTED_ARRAY}")
    height, width = array.shape[:2]
    if width * height > max_pixels:
        raise _bomb_error((width, height), max_pixels, None)
    _check_min_side(width, height, None)

    if array.dtype.kind == "u" and array.dtype.itemsize == 1:
        pixels = array
    elif array.dtype.kind == "u" and array.dtype.itemsize == 2:  # either byte order
        pixels = _scale_to_uint8(array, 65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"float array contains NaN or infinity; {_EXPECTED_ARRAY}")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageLoadError(f"float array has values in {low:g}..{high:g}; {_EXPECTED_ARRAY}")
        pixels = _scale_to_uint8(array, 1.0)
    else:
        raise ImageLoadError(f"unsupported array dtype {array.dtype}; {_EXPECTED_ARRAY}")

    if pixels.ndim == 2:
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    elif pixels.shape[2] == 4:
        rgb = _composite_on_white(pixels[:, :, :3], pixels[:, :, 3])
    else:
        rgb = pixels

    target = _target_size(width, height, max_side)
    if target != (width, height):
        resized = Image.fromarray(np.ascontiguousarray(rgb)).resize(
            target, Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        rgb = np.asarray(resized)
    return _as_output(rgb)


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image, label: str | None) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB, compositing alpha onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":  # I, I;16, I;16B, I;16L, I;16N, F
        gray = _high_depth_to_uint8(np.asarray(image), mode)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info
    if has_alpha:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = np.asarray(image)
        return Image.fromarray(_composite_on_white(rgba[:, :, :3], rgba[:, :, 3]))
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageLoadError(
            f"unsupported colour mode {mode!r} ({exc}); {_EXPECTED} in RGB, grayscale, palette or CMYK",
            source=label,
        ) from exc


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16/32-bit integer or float grayscale to 0..255 by its bit depth, never by clipping."""
    if mode == "F":
        data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(data.min()), float(data.max())
        if low >= 0.0 and high <= 1.0:
            return _scale_to_uint8(data, 1.0)
        if low >= 0.0 and high <= 255.0:
            return _scale_to_uint8(data, 255.0)
        return _scale_to_uint8(data - low, max(high - low, 1e-12))
    data = values.astype(np.int64)
    low, high = int(data.min()), int(data.max())
    if mode.startswith("I;16") or (low >= 0 and high <= 65535):  # 16-bit data, also when held in "I"
        return _scale_to_uint8(data, 65535.0)
    return _scale_to_uint8(data - low, float(max(high - low, 1)))  # genuine 32-bit range


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    scaled = values.astype(np.float64) * (255.0 / full_scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float32)[:, :, None] / 255.0
    blended = rgb.astype(np.float32) * weight + 255.0 * (1.0 - weight)
    out: np.ndarray = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _as_output(rgb: np.ndarray) -> np.ndarray:
    """A fresh, writable, C-contiguous uint8 copy (never a view of the caller's data)."""
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _exif_orientation(image: Image.Image, label: str | None) -> Image.Transpose | None:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except Exception as exc:  # noqa: BLE001 - Pillow's EXIF parser raises many types; keep the photo
        warnings.warn(
            f"{label or 'image'}: could not read EXIF orientation ({exc}); using the stored orientation",
            stacklevel=2,
        )
        return None
    return _ORIENTATION_FIX.get(value) if isinstance(value, int) else None


# --------------------------------------------------------------------------------------------------
# Checks and messages
# --------------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object, *, minimum: int, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_min_side(width: int, height: int, label: str | None) -> None:
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise ImageLoadError(
            f"image is {width}x{height} pixels, too small to compare; expected at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}",
            source=label,
        )


def _bomb_error(
    size: tuple[int, int] | None, max_pixels: int, label: str | None, *, detail: str | None = None
) -> ImageLoadError:
    if size is not None:
        declared = f"image declares {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    elif detail and (found := re.search(r"\((\d+) pixels\)", detail)):  # Pillow's own check fired
        declared = f"image declares {int(found.group(1)):,} pixels"
    else:
        declared = "image declares too many pixels"
    message = (
        f"{declared}, more than the limit of {max_pixels:,} pixels (decompression-bomb guard); "
        f"if the file is trusted, pass a larger max_pixels to load_image"
    )
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is not None and max_pixels > 2 * pillow_limit:
        message += f" and raise PIL.Image.MAX_IMAGE_PIXELS (now {pillow_limit:,})"
    if detail:
        message += f" [{detail}]"
    return ImageLoadError(message, source=label)


#: held while Pillow's decompression-bomb warning is filtered (see :func:`_bomb_warnings_as_errors`)
_WARNING_FILTERS = threading.Lock()


@contextlib.contextmanager
def _bomb_warnings_as_errors(max_pixels: int) -> Iterator[None]:
    """Locally turn Pillow's DecompressionBombWarning into an error when it implies our limit.

    Pillow warns above ``PIL.Image.MAX_IMAGE_PIXELS``. If ``max_pixels`` is at most that, the warning
    means our limit is exceeded too; if the caller allowed more, our own check is the authority and
    the warning is silenced. Pillow's global settings are never touched.

    The warning filters are process-wide state that ``warnings.catch_warnings`` saves and restores: two threads
    inside it at once (the index build's and scoring's decoding threads) could leave a filter behind for the
    whole process. So one thread at a time holds them (:data:`_WARNING_FILTERS`); the block is Pillow's header
    parse, or the decoding of an image larger than Pillow's limit.
    """
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with _WARNING_FILTERS, warnings.catch_warnings():
        if pillow_limit is None or max_pixels <= pillow_limit:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        else:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _describe_unreadable(stream: IO[bytes]) -> str:
    """Say what a stream Pillow could not identify looks like."""
    try:
        stream.seek(0)
        head = stream.read(512)
    except (OSError, ValueError):
        head = b""
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"truncated or corrupt {kind} file: its header could not be parsed; {_EXPECTED}"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"truncated or corrupt WebP file: its header could not be parsed; {_EXPECTED}"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"avif"):
        return (
            f"not an image brandguard can read: a HEIC/HEIF/AVIF photo ({head[8:12].decode()}); "
            f"convert it to JPEG, or {_EXPECTED}"
        )
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return f"not an image: an HTML page (often a failed download); {_EXPECTED}"
    if stripped.startswith((b"<svg", b"<?xml")):
        return f"not an image: XML/SVG text, not a raster image; {_EXPECTED}"
    if head and _looks_like_text(head):
        preview = head[:40].decode("utf-8", errors="replace").strip()
        return f"not an image: text ({preview!r}...); {_EXPECTED}"
    return f"not an image: unrecognised data (starts with {head[:8].hex(' ') or 'nothing'}); {_EXPECTED}"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


# --------------------------------------------------------------------------------------------------
# Folder walking
# --------------------------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    """Whether resolved ``path`` is ``root`` or below it (both resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_images(root: pathlib.Path, *, recursive: bool) -> Iterator[pathlib.PurePosixPath]:
    """Yield paths relative to ``root`` of image files, skipping hidden and unreadable entries."""
    seen_dirs: set[tuple[int, int]] = set()
    pending: list[tuple[pathlib.Path, pathlib.PurePosixPath]] = [(root, pathlib.PurePosixPath())]
    real_root = os.path.realpath(root)
    while pending:
        folder, relative = pending.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen_dirs:
                continue  # a symlink loop or a folder linked twice
            seen_dirs.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError as exc:
            warnings.warn(f"skipping unreadable folder {folder} ({exc.strerror or exc})", stacklevel=3)
            continue
        for entry in listed:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
                is_link = entry.is_symlink()
            except OSError:
                is_dir, is_link = False, True
            if is_dir and is_link and not _inside(os.path.realpath(folder / entry.name), real_root):
                continue  # never leave the listings folder through a link (``loop -> ..``)
            if is_dir and recursive:
                pending.append((folder / entry.name, relative / entry.name))
            if is_image_path(entry.name):
                # anything named like a photo gets listed, so it gets a row: a regular file is scored, a
                # dangling link, a FIFO or a folder named ``x.jpg`` becomes an error row saying why
                # (:func:`load_image` never opens what is not a regular file)
                yield relative / entry.name
