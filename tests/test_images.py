"""Tests for brandguard.images: every input a user can hand load_image, and folder listing.

All images are generated in tmp_path at test time; nothing is fetched.
"""

from __future__ import annotations

import builtins
import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from brandguard.errors import BrandguardError, ImageLoadError
from brandguard.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    is_image_path,
    list_images,
    load_image,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _two_tone(width: int, height: int) -> np.ndarray:
    """Left half red, right half blue: orientation and resizing are visible in the result."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:, : width // 2] = RED
    arr[:, width // 2 :] = BLUE
    return arr


def _png_declaring(width: int, height: int) -> bytes:
    """A real 16x16 PNG whose IHDR header is patched to declare width x height (valid CRC)."""
    data = bytearray(_encode(Image.new("L", (16, 16)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _assert_rgb(arr: np.ndarray, shape: tuple[int, int]) -> None:
    assert arr.shape == (*shape, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous
    assert arr.flags.writeable


# ------------------------------------------------------------------------------------------------
# Ordinary files, bytes, PIL images
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp")]
)
def test_loads_common_formats_from_path_as_rgb(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(_two_tone(64, 48)).save(path, format=fmt)

    arr = load_image(path)

    _assert_rgb(arr, (48, 64))
    assert np.abs(arr[24, 8].astype(int) - RED).max() <= 12  # lossy formats allowed a little drift
    assert np.abs(arr[24, 56].astype(int) - BLUE).max() <= 12
    assert np.array_equal(load_image(str(path)), arr)  # str and PathLike alike


def test_bytes_and_pil_inputs_match_the_file(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = _noise(rng, 40, 50)
    data = _encode(Image.fromarray(pixels), "PNG")
    path = tmp_path / "noise.png"
    path.write_bytes(data)

    from_path = load_image(path)
    assert np.array_equal(from_path, pixels)
    assert np.array_equal(load_image(data), pixels)
    assert np.array_equal(load_image(bytearray(data)), pixels)
    assert np.array_equal(load_image(Image.open(io.BytesIO(data))), pixels)


def test_pil_input_is_not_modified(rng: np.random.Generator) -> None:
    image = Image.fromarray(_noise(rng, 64, 64)).convert("RGBA")
    before = image.tobytes()

    out = load_image(image, max_side=32)

    _assert_rgb(out, (32, 32))
    assert image.mode == "RGBA" and image.size == (64, 64) and image.tobytes() == before


# ------------------------------------------------------------------------------------------------
# Files that cannot be loaded
# ------------------------------------------------------------------------------------------------


def test_missing_path_raises_image_load_error(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not found") as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.source == str(tmp_path / "nope.jpg")
    assert isinstance(info.value, BrandguardError)


def test_directory_raises_image_load_error(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(folder)


def test_permission_denied_raises_image_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"
    Image.new("RGB", (32, 32)).save(path)
    real_open = builtins.open

    def deny(file: Any, *args: Any, **kwargs: Any) -> Any:  # chmod does not stop root, so simulate
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty file \(0 bytes\)"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize(
    "content,fact",
    [
        (b"this is a plain text file, not a photo\n" * 3, "not an image: text"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML page"),
        (bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
    ],
    ids=["text", "html", "random-bytes"],
)
def test_non_image_content_is_refused(tmp_path: Path, content: bytes, fact: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=fact) as info:
        load_image(path)
    assert "expected a JPEG" in str(info.value)
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(content)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused_not_half_decoded(
    tmp_path: Path, rng: np.random.Generator, fmt: str
) -> None:
    data = _encode(Image.fromarray(_noise(rng, 128, 128)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on globally


def test_truncated_header_is_reported_as_truncated(tmp_path: Path) -> None:
    data = _encode(Image.new("RGB", (32, 32)), "PNG")
    with pytest.raises(ImageLoadError, match="truncated or corrupt PNG"):
        load_image(data[:20])


def test_heic_photo_gets_a_specific_message() -> None:
    heic_head = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    with pytest.raises(ImageLoadError, match="HEIC"):
        load_image(heic_head)


# ------------------------------------------------------------------------------------------------
# Decompression bombs and size limits
# ------------------------------------------------------------------------------------------------


def test_bomb_is_refused_from_its_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy_load(self: ImageFile.ImageFile) -> Any:
        decoded.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    limit_before = Image.MAX_IMAGE_PIXELS

    with pytest.raises(ImageLoadError, match="pixels") as info:
        load_image(_png_declaring(5000, 5000), max_pixels=1_000_000)

    message = str(info.value)
    assert "5000x5000" in message and "1,000,000" in message and "max_pixels" in message
    assert decoded == []  # refused before any pixel data was decoded
    assert Image.MAX_IMAGE_PIXELS == limit_before  # Pillow's global limit untouched


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["above-ours", "above-pillows"])
def test_bomb_is_refused_at_the_default_limit(side: int) -> None:
    with pytest.raises(ImageLoadError, match="pixels") as info:
        load_image(_png_declaring(side, side))
    assert f"{side * side:,} pixels" in str(info.value)
    assert f"{DEFAULT_MAX_PIXELS:,}" in str(info.value)
    assert "decompression" in str(info.value)


def test_small_on_disk_large_image_obeys_max_pixels(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("1", (2000, 1000), 1).save(path)  # a few kB on disk, 2 Mpx declared

    with pytest.raises(ImageLoadError, match="2000x1000"):
        load_image(path, max_pixels=1_000_000)

    arr = load_image(path, max_pixels=2_000_000, max_side=100)
    _assert_rgb(arr, (50, 100))
    assert arr.min() == 255  # '1' mode white -> RGB white


@pytest.mark.parametrize("size", [(15, 40), (40, 15), (8, 8)])
def test_too_small_image_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ImageLoadError, match="too small"):
        load_image(_encode(Image.new("RGB", size), "PNG"))
    with pytest.raises(ImageLoadError, match="too small"):
        load_image(np.zeros((size[1], size[0], 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------------
# max_side and JPEG draft decoding
# ------------------------------------------------------------------------------------------------


def test_max_side_shrinks_with_jpeg_draft_and_keeps_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "large.jpg"
    Image.fromarray(_two_tone(1600, 1200)).save(path, quality=90)
    drafts: list[tuple[str | None, tuple[int, int] | None]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy_draft(self: Any, mode: str | None, size: tuple[int, int] | None) -> Any:
        drafts.append((mode, size))
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy_draft)

    arr = load_image(path, max_side=200)

    _assert_rgb(arr, (150, 200))
    assert drafts == [("RGB", (200, 150))]
    assert np.abs(arr[75, 20].astype(int) - RED).max() <= 12
    assert np.abs(arr[75, 180].astype(int) - BLUE).max() <= 12


def test_max_side_never_upscales(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(_two_tone(64, 32)).save(path)
    _assert_rgb(load_image(path, max_side=4096), (32, 64))
    _assert_rgb(load_image(np.zeros((32, 64), np.uint8), max_side=4096), (32, 64))


def test_max_side_applies_to_arrays() -> None:
    _assert_rgb(load_image(_two_tone(300, 100), max_side=60), (20, 60))


@pytest.mark.parametrize("bad", [0, 8, -5, 2.5, True])
def test_invalid_max_side_is_a_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_side"):
        load_image(np.zeros((32, 32), np.uint8), max_side=bad)


# ------------------------------------------------------------------------------------------------
# EXIF orientation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation,turns", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turns: int) -> None:
    stored = np.zeros((48, 96, 3), dtype=np.uint8)  # wide, with a red top-left quarter
    stored[:24, :48] = RED
    stored[:24, 48:] = BLUE
    stored[24:] = WHITE
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)

    arr = load_image(path)

    expected = np.rot90(stored, k=turns)  # k=-1: 90 degrees clockwise, as orientation 6 asks
    assert arr.shape == expected.shape
    assert np.abs(arr.astype(int) - expected.astype(int)).mean() < 4
    small = load_image(path, max_side=48)  # orientation also applied on the reduced-size path
    assert small.shape == (np.rot90(np.zeros((24, 48)), k=turns).shape + (3,))


# ------------------------------------------------------------------------------------------------
# Colour modes
# ------------------------------------------------------------------------------------------------


def _palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.paste(1, (16, 0, 32, 32))
    if transparent:
        image.info["transparency"] = 1
    return image


def _la_image() -> Image.Image:
    gray = Image.new("L", (32, 32), 0)
    alpha = Image.new("L", (32, 32), 255)
    alpha.paste(0, (16, 0, 32, 32))
    return Image.merge("LA", (gray, alpha))


def _rgba_image() -> Image.Image:
    arr = np.zeros((32, 32, 4), dtype=np.uint8)
    arr[:, :16] = (*RED, 255)
    arr[:, 16:] = (*RED, 0)
    return Image.fromarray(arr)


def _pa_image() -> Image.Image:
    image = _palette_image(transparent=False).convert("PA")
    alpha = Image.new("L", (32, 32), 255)
    alpha.paste(0, (16, 0, 32, 32))
    image.putalpha(alpha)
    return image


def _i16(mode: str) -> Image.Image:
    ramp = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (32, 1))
    if mode == "I;16B":
        return Image.frombytes("I;16B", (32, 32), ramp.astype(">u2").tobytes())
    if mode == "I":
        return Image.fromarray(ramp.astype(np.int32))
    return Image.fromarray(ramp)


# mode -> (image factory, expected RGB at column 0, expected RGB at column 31)
MODE_CASES: dict[str, tuple[Any, tuple[int, int, int], tuple[int, int, int]]] = {
    "1": (lambda: Image.new("1", (32, 32), 1), WHITE, WHITE),
    "L": (lambda: Image.new("L", (32, 32), 128), (128, 128, 128), (128, 128, 128)),
    "LA": (_la_image, (0, 0, 0), WHITE),
    "P": (lambda: _palette_image(transparent=False), RED, BLUE),
    "P-transparency": (lambda: _palette_image(transparent=True), RED, WHITE),
    "PA": (_pa_image, RED, WHITE),
    "RGBA": (_rgba_image, RED, WHITE),
    "CMYK": (lambda: Image.new("CMYK", (32, 32), (0, 255, 255, 0)), RED, RED),
    "I;16": (lambda: _i16("I;16"), (0, 0, 0), WHITE),
    "I;16B": (lambda: _i16("I;16B"), (0, 0, 0), WHITE),
    "I": (lambda: _i16("I"), (0, 0, 0), WHITE),
    "F": (
        lambda: Image.fromarray(np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))),
        (0, 0, 0),
        WHITE,
    ),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_pillow_mode_becomes_8bit_rgb(case: str) -> None:
    factory, left, right = MODE_CASES[case]
    image = factory()

    arr = load_image(image)

    _assert_rgb(arr, (32, 32))
    assert np.abs(arr[5, 0].astype(int) - left).max() <= 1
    assert np.abs(arr[5, 31].astype(int) - right).max() <= 1


def test_16bit_grayscale_png_is_scaled_by_bit_depth_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "depth16.png"
    _i16("I;16").save(path)

    arr = load_image(path)

    _assert_rgb(arr, (32, 32))
    assert arr.min() == 0 and arr.max() == 255
    assert len(np.unique(arr[0, :, 0])) == 32  # a full ramp, not saturated at 255
    assert abs(int(arr[0, 16, 0]) - round(16 / 31 * 255)) <= 1


def test_16bit_rgb_png_is_read(tmp_path: Path) -> None:
    rgb16 = np.zeros((20, 20, 3), dtype=np.uint16)
    rgb16[..., 0], rgb16[..., 1] = 65535, 32896

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 20, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    path = tmp_path / "rgb16.png"
    path.write_bytes(png)

    arr = load_image(path)

    _assert_rgb(arr, (20, 20))
    assert np.abs(arr[0, 0].astype(int) - (255, 128, 0)).max() <= 1


def test_cmyk_jpeg_and_transparent_png_files(tmp_path: Path) -> None:
    cmyk = tmp_path / "print.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(cmyk, quality=95)
    assert np.abs(load_image(cmyk)[10, 10].astype(int) - RED).max() <= 8

    palette = tmp_path / "logo.png"
    _palette_image(transparent=True).save(palette, transparency=1)
    arr = load_image(palette)
    assert tuple(arr[0, 0]) == RED and tuple(arr[0, 31]) == WHITE


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_multiframe_file_gives_first_frame(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 2

    arr = load_image(path)

    _assert_rgb(arr, (32, 32))
    assert np.abs(arr.reshape(-1, 3).mean(axis=0) - RED).max() <= 4


# ------------------------------------------------------------------------------------------------
# numpy inputs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array,expected",
    [
        (np.full((20, 30), 7, np.uint8), (7, 7, 7)),
        (np.full((20, 30, 1), 7, np.uint8), (7, 7, 7)),
        (np.full((20, 30, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.full((20, 30, 4), (255, 0, 0, 0), np.uint8), WHITE),
        (np.full((20, 30, 4), (0, 0, 0, 255), np.uint8), (0, 0, 0)),
        (np.full((20, 30, 3), 65535, np.uint16), WHITE),
        (np.full((20, 30, 3), 32896, np.dtype(">u2")), (128, 128, 128)),
        (np.full((20, 30), 0.5, np.float32), (128, 128, 128)),
        (np.full((20, 30, 3), 1.0, np.float64), WHITE),
    ],
    ids=["gray", "gray1", "rgb", "rgba-clear", "rgba-opaque", "u16", "u16-big-endian", "f32", "f64"],
)
def test_numpy_inputs(array: np.ndarray, expected: tuple[int, int, int]) -> None:
    arr = load_image(array)
    _assert_rgb(arr, (20, 30))
    assert np.abs(arr.astype(int) - expected).max() <= 1


def test_numpy_result_is_a_copy() -> None:
    source = np.zeros((20, 20, 3), np.uint8)
    out = load_image(source)
    out[:] = 99
    assert source.max() == 0
    assert load_image(np.asfortranarray(source)).flags.c_contiguous


@pytest.mark.parametrize(
    "array,fact",
    [
        (np.zeros((20, 20, 2), np.uint8), "shape"),
        (np.zeros((2, 20, 20, 3), np.uint8), "shape"),
        (np.zeros(400, np.uint8), "shape"),
        (np.zeros((20, 20, 3), np.int64), "dtype"),
        (np.zeros((20, 20, 3), bool), "dtype"),
        (np.full((20, 20, 3), 255.0, np.float32), "0..1"),
        (np.full((20, 20), np.nan, np.float32), "NaN"),
    ],
    ids=["2-channels", "4d", "1d", "int64", "bool", "float-255", "nan"],
)
def test_unsupported_numpy_inputs_are_refused(array: np.ndarray, fact: str) -> None:
    with pytest.raises(ImageLoadError, match=fact) as info:
        load_image(array)
    assert "HxWx3" in str(info.value)


def test_unsupported_input_type_is_refused() -> None:
    with pytest.raises(ImageLoadError, match="unsupported input type int"):
        load_image(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Listing folders
# ------------------------------------------------------------------------------------------------


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_is_image_path_is_case_insensitive() -> None:
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    assert is_image_path("a/B.JPG") and is_image_path(Path("x.Tiff")) and is_image_path("y.webp")
    assert not is_image_path("notes.txt") and not is_image_path("jpg") and not is_image_path("a.jpg.bak")


def test_list_images_is_sorted_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "zeta.png",
        "Alpha.JPG",
        "b/2.webp",
        "b/10.jpeg",
        "a/c/deep.tif",
        "a/readme.txt",
        "a/labels.csv",
        ".hidden.jpg",
        "._resource_fork.jpg",
        ".cache/skipped.png",
        "b/.thumbs/skipped.png",
    )

    found = list_images(tmp_path)

    relative = [p.relative_to(tmp_path).as_posix() for p in found]
    assert relative == ["Alpha.JPG", "a/c/deep.tif", "b/10.jpeg", "b/2.webp", "zeta.png"]
    assert all(p.is_file() and p.parent.is_relative_to(tmp_path) for p in found)
    assert list_images(tmp_path) == found  # stable across calls
    assert [p.name for p in list_images(str(tmp_path), recursive=False)] == ["Alpha.JPG", "zeta.png"]


def test_list_images_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="folder not found"):
        list_images(tmp_path / "missing")
    _touch(tmp_path, "file.jpg")
    with pytest.raises(ImageLoadError, match="not a folder"):
        list_images(tmp_path / "file.jpg")


def test_list_images_skips_unreadable_subfolder_with_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _touch(tmp_path, "ok/1.jpg", "locked/2.jpg", "top.png")
    locked = tmp_path / "locked"
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # chmod does not stop root, so simulate
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    with pytest.warns(UserWarning, match="locked"):
        found = list_images(tmp_path)

    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["ok/1.jpg", "top.png"]


def test_list_images_survives_symlink_loop(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.jpg")
    try:
        (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    except OSError:
        pytest.skip("symlinks not available")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/1.jpg"]


def test_photos_decoded_on_several_threads_leave_no_warning_filter_behind(tmp_path: Path) -> None:
    """The index build and scoring decode photos on several threads at once. Pillow's decompression-bomb
    warning is filtered while a header is parsed; the filters are process-wide, and two threads saving and
    restoring them at once left ``error::DecompressionBombWarning`` behind for the whole process."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "p.png"
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(path)
    before = list(warnings.filters)
    with ThreadPoolExecutor(4) as ex:
        for _ in range(5):
            assert all(a.shape == (40, 60, 3) for a in ex.map(lambda _: load_image(path), range(400)))
            assert warnings.filters == before
