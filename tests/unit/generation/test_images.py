"""Hostile uploads: bombs, truncation, wrong formats, EXIF, and .npy headers that lie."""

from __future__ import annotations

import builtins
import io
import pathlib
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy_format
from PIL import Image, ImageFile

from gouache.errors import InvalidRequest, TooLarge
from gouache.generation.inputs.images import decode_image
from gouache.generation.inputs.uploads import depth_to_control_image, load_depth_map
from gouache.generation.png import encode_png, png_parameters

MB = 1024 * 1024
CAPS = {"max_bytes": 10 * MB, "max_pixels": 4096 * 4096}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def header_only_png(width: int, height: int) -> bytes:
    """A valid-looking PNG that claims ``width`` x ``height`` but carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16, 9)[:9]
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue: orientation is visible in the pixels."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


# decode_image ---------------------------------------------------------------------------------


def test_66_byte_png_claiming_20000_squared_is_refused_from_its_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused before any pixel is decoded (decoding would allocate 1.2 GB): Pillow's decoder
    (``ImageFile.load``, which tracemalloc cannot see) is never started."""
    bomb = header_only_png(20000, 20000)
    assert len(bomb) == 66
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(TooLarge, match="too many pixels"):
        decode_image(bomb, **CAPS)
    assert loads == []
    decode_image(encode_png(Image.new("RGB", (8, 8))), **CAPS)
    assert loads  # the probe does see a real decode


def test_our_pixel_cap_applies_below_pillows_own_limit() -> None:
    # 5000x5000 = 25 M pixels: under Pillow's 89 M default, over our 16.7 M cap.
    with pytest.raises(TooLarge) as info:
        decode_image(header_only_png(5000, 5000), **CAPS)
    assert info.value.message == (
        "The image is 5000x5000 = 25,000,000 pixels; the limit is 16,777,216 pixels."
    )


def test_byte_cap_is_checked_before_decoding() -> None:
    data = encoded(halves(), "PNG")
    with pytest.raises(TooLarge, match=r"^The file is .*; the limit is 1 KB\.$"):
        decode_image(data + b"\x00" * 2048, max_bytes=1024, max_pixels=10**6)


def test_truncated_png_is_an_invalid_request() -> None:
    rng = np.random.default_rng(1)
    data = encoded(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(InvalidRequest, match="truncated or damaged"):
        decode_image(data[: len(data) // 2], **CAPS)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP", "ICO"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidRequest, match="^That file is not a PNG/JPEG/WEBP image.$"):
        decode_image(encoded(halves(), fmt), **CAPS)


@pytest.mark.parametrize("data", [b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_is_an_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_image(data, **CAPS)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = encoded(halves(), "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image(data, **CAPS)
    assert image.size == (20, 40) and image.mode == "RGB"
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red went to the top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize(
    ("source", "mode"),
    [(Image.new("RGBA", (8, 8), (10, 20, 30, 128)), "RGB"),
     (Image.new("LA", (8, 8), (100, 7)), "L"),
     (Image.new("P", (8, 8), 3), "RGB"),
     (Image.new("L", (8, 8), 77), "L"),
     (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "RGB")],
)  # fmt: skip
def test_modes_are_flattened_to_rgb_or_l(source: Image.Image, mode: str) -> None:
    fmt = "JPEG" if source.mode == "CMYK" else "PNG"
    assert decode_image(encoded(source, fmt), **CAPS).mode == mode


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    array = np.array([[0, 32768], [65535, 257]], dtype=np.uint16)
    image = decode_image(encoded(Image.fromarray(array), "PNG"), **CAPS)
    assert image.mode == "L"
    assert np.asarray(image).tolist() == [[0, 128], [255, 1]]


def test_only_the_first_frame_of_an_animation_is_read() -> None:
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    for fmt in ("PNG", "WEBP"):
        data = encoded(red, fmt, save_all=True, append_images=[blue], lossless=True)
        assert decode_image(data, **CAPS).getpixel((4, 4)) == (255, 0, 0)


# encode_png and parameters ---------------------------------------------------------------------


class _Fields:
    prompt = "a red fox"
    negative_prompt = "blurry, text"
    steps = 30
    sampler = "euler-a"
    guidance = 7.0
    seed = 7
    width = 768
    height = 512
    model = "sd15"
    guidance_kind = "cfg"


def test_png_parameters_follow_the_a1111_layout() -> None:
    assert png_parameters(_Fields()) == (
        "a red fox\nNegative prompt: blurry, text\n"
        "Steps: 30, Sampler: euler-a, CFG scale: 7, Seed: 7, Size: 768x512, Model: sd15"
    )
    no_negative = _Fields()
    no_negative.negative_prompt = ""
    no_negative.guidance = 7.5
    assert png_parameters(no_negative, seed=8) == (
        "a red fox\nSteps: 30, Sampler: euler-a, CFG scale: 7.5, Seed: 8, Size: 768x512, Model: sd15"
    )


@pytest.mark.parametrize("text", ["a red fox\nSteps: 3", "猫 🦊 café"])
def test_encode_png_round_trips_the_parameters_chunk(text: str) -> None:
    data = encode_png(halves(), text)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.info["parameters"] == text
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(halves()))
    assert b"tEXtparameters" in data if text.isascii() else b"iTXtparameters" in data
    assert "parameters" not in Image.open(io.BytesIO(encode_png(halves(), None))).info


# depth maps ------------------------------------------------------------------------------------


def npy_bytes(shape: tuple, descr: str = "<f4", payload: bytes = b"", version=(1, 0)) -> bytes:
    """A hand-written .npy: the header says whatever the test wants, the payload is separate."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    length = "<H" if version == (1, 0) else "<I"
    used = len(npy_format.MAGIC_PREFIX) + 2 + struct.calcsize(length) + len(header) + 1
    header += b" " * (-used % 64) + b"\n"
    return npy_format.MAGIC_PREFIX + bytes(version) + struct.pack(length, len(header)) + header + payload


def test_144_byte_npy_claiming_40000_squared_is_rejected_without_allocating() -> None:
    bomb = npy_bytes((40000, 40000), payload=b"\x00" * 16)
    assert len(bomb) == 144
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match="40000x40000"):
            load_depth_map(bomb, "depth.npy", **CAPS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * MB


class _Boom:
    triggered: list[str] = []

    def __reduce__(self):
        return (_Boom.triggered.append, ("unpickled",))


def test_object_dtype_npy_is_rejected_and_never_unpickled() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([[_Boom(), _Boom()]], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidRequest, match="plain numbers"):
        load_depth_map(buffer.getvalue(), "x.npy", **CAPS)
    assert _Boom.triggered == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (npy_bytes((2, 2, 2), payload=b"\x00" * 32), "must be 2-D"),
        (npy_bytes((4,), payload=b"\x00" * 16), "must be 2-D"),
        (npy_bytes((0, 4)), "is empty"),
        (npy_bytes((2, 2), "<c8", b"\x00" * 32), "complex64"),
        (npy_bytes((2, 2), "<U3", b"\x00" * 48), "use integers or float"),
        (npy_bytes((2, 2), [("a", "<f4")], b"\x00" * 16), "plain numbers"),
        (npy_bytes((4, 4), "<f4", b"\x00" * 10), "truncated or padded"),
        (npy_bytes((2, 2), "<f4", b"\x00" * 64), "truncated or padded"),
        (npy_bytes((2, 2), version=(3, 0)) + b"\x00" * 16, "version 3.0"),
        (b"\x93NUMPY\x01\x00\x20\x00{'descr': <f4, 'shape': (2,2)}   \n", "header is damaged"),
        (b"\x93NUMPY\x01\x00\xff\xff{", "header is damaged"),
        (b"GIF89a....", "is a GIF: /depth takes a PNG, JPEG or WEBP image, or a .npy depth map"),
    ],
)  # fmt: skip
def test_bad_depth_files_get_specific_messages(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        load_depth_map(data, "../../etc/passwd", **CAPS)


def test_npy_is_normalised_and_hwx1_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_files(*args, **kwargs):
        raise AssertionError("depth loading must not touch the file system")

    monkeypatch.setattr(builtins, "open", no_files)
    monkeypatch.setattr(pathlib.Path, "open", no_files)
    buffer = io.BytesIO()
    np.save(buffer, np.array([[2.0, 4.0], [6.0, np.nan]], dtype=">f8").reshape(2, 2, 1))
    depth = load_depth_map(buffer.getvalue(), "../../../etc/passwd.npy", **CAPS)
    assert depth.dtype == np.float32 and depth.shape == (2, 2)
    assert depth.tolist() == [[0.0, 0.5], [1.0, 0.0]]


def test_fortran_order_and_big_endian_integers() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(np.array([[0, 10], [20, 30]], dtype=">u2")))
    assert load_depth_map(buffer.getvalue(), "d.npy", **CAPS).tolist() == [
        [0.0, pytest.approx(1 / 3)], [pytest.approx(2 / 3), 1.0]]  # fmt: skip


def test_npy_pixel_cap() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((100, 100), dtype=np.uint8))
    with pytest.raises(TooLarge, match="100x100 = 10,000 values; the limit is 9,999"):
        load_depth_map(buffer.getvalue(), "d.npy", max_bytes=MB, max_pixels=9999)


def test_png_depth_maps_scale_by_bit_depth() -> None:
    sixteen = Image.fromarray(np.array([[0, 65535], [32768, 0]], dtype=np.uint16))
    assert load_depth_map(encoded(sixteen, "PNG"), "d.png", **CAPS).tolist() == [
        [0.0, 1.0], [pytest.approx(32768 / 65535), 0.0]]  # fmt: skip
    eight = Image.fromarray(np.array([[0, 255], [51, 0]], dtype=np.uint8))
    assert load_depth_map(encoded(eight, "PNG"), "d.png", **CAPS).tolist() == [
        [0.0, 1.0], [pytest.approx(0.2), 0.0]]  # fmt: skip
    rgb = Image.new("RGB", (2, 1), (255, 255, 255))
    rgb.putpixel((0, 0), (0, 0, 0))
    assert load_depth_map(encoded(rgb, "PNG"), "d.png", **CAPS).tolist() == [[0.0, 1.0]]


def test_png_depth_bomb_and_jpeg_refused() -> None:
    with pytest.raises(TooLarge):
        load_depth_map(header_only_png(20000, 20000), "d.png", **CAPS)
    with pytest.raises(InvalidRequest, match="not a depth map"):
        load_depth_map(encoded(halves(), "JPEG"), "d.jpg", **CAPS)


def test_control_image_is_rgb_near_bright_and_fitted_not_stretched() -> None:
    depth = np.array([[0.0, 0.5, 1.0]] * 3, dtype=np.float32)
    image = depth_to_control_image(depth, 30, 20)
    assert image.mode == "RGB" and image.size == (30, 20)
    row = np.asarray(image)[10, :, 0].astype(int)
    assert row[0] < 5 and row[-1] > 250 and abs(row[15] - 128) < 16
    assert np.all(np.diff(row) >= 0)  # far (0) stays dark, near (1) bright
    # the square map fills a 20x20 square; the 5 columns either side repeat its edges
    assert (row[:5] == row[5]).all() and (row[-5:] == row[-6]).all()
    same = depth_to_control_image(depth, 3, 3)
    assert np.asarray(same)[0, :, 1].tolist() == [0, 128, 255]
