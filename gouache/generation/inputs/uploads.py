"""/depth inputs: an upload (depth map or photo) becomes the depth map a depth ControlNet reads.

Convention throughout: 1.0 (bright) is *near*, 0.0 (dark) is far, as in the MiDaS-style maps
the depth ControlNets were trained on.

**What is accepted** (``read_upload``; admission in the bot and the worker run this very code,
so whatever the worker would refuse before estimating is refused before a rate token is spent):

- PNG: 8-bit grey, 16-bit grey, 8-bit RGB/RGBA (alpha ignored); JPEG (grey or RGB); WEBP;
  ``.npy`` (2-D, or HxWx1, of integers or floats). Palette and 1-bit PNGs, 16-bit colour PNGs,
  CMYK JPEGs, animated images, oversized EXIF blocks, data after the image's end (polyglots)
  and anything else are refused, each with a message that says what to send instead.
- Pixels come from ``images.decode_image`` (EXIF orientation applied, first frame); caps on
  bytes and pixels are checked before any pixel is decoded; ``.npy`` headers are parsed and
  checked before ``np.load(allow_pickle=False)`` reads a byte of data.

**Depth map or photo** (``classify``), unless ``--input depth|photo`` forces it:

1. ``.npy`` is a depth map.
2. An image is *grey* when its channels are equal: one channel, or RGB whose channels differ
   by at most 1 level on average and at most ``GREY_SPREAD`` levels at the 99.5th percentile
   (JPEG chroma noise passes, any real colour does not).
3. A grey image is a depth map when it is *smooth*: the median absolute difference between a
   pixel and the mean of its 3x3 neighbourhood is at most ``SMOOTH_TEXTURE`` of its value
   range (depth maps are piecewise smooth; a grey photo has texture almost everywhere).
4. Everything else is a photo, and the model's depth estimator turns it into a depth map.

**Normalising a map**: PNGs scale by bit depth, ``.npy`` min-max to [0, 1] (non-finite values
count as far). A map whose histogram is a single level is refused (nothing to follow). A map
that *looks inverted* (far = bright, like metric depth) is flipped and a note says so
(``looks_inverted``, maps of at least 8x8: the top band is brighter than the bottom band by more than 0.15 and
brighter than the mean; or the border is brighter than the centre by more than 0.25).

**Shape**: the map is never stretched. ``fit_depth`` scales it to fit inside the output size
keeping its aspect, then pads the rest by repeating its edge pixels (no cropping). The output's
aspect follows the upload's unless ``--ar``/``--size`` was given (``bot/uploads.attach``).
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image

from gouache import messages
from gouache.errors import BadUpload, InvalidRequest, TooLarge
from gouache.generation.inputs.images import decode_image, open_image

__all__ = [
    "DepthInput",
    "INPUT_MODES",
    "Upload",
    "UploadHeader",
    "DepthEstimatorLike",
    "inspect_upload",
    "read_upload",
    "read_image",
    "made_with",
    "classify",
    "looks_inverted",
    "normalise_map",
    "fit_depth",
    "depth_to_image",
    "depth_to_control_image",
    "load_depth_map",
    "GREY_SPREAD",
    "SMOOTH_TEXTURE",
    "MAX_EXIF_BYTES",
]

DepthInput = Literal["auto", "depth", "photo"]
INPUT_MODES: tuple[str, ...] = ("auto", "depth", "photo")

_NPY_MAGIC = b"\x93NUMPY"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NPY_MAX_HEADER = 10_000
_NUMERIC_KINDS = "uif"  # unsigned, signed, float: no bool, complex, object, string, void
GREY_SPREAD = 8  # levels (of 255) that JPEG chroma noise may add between channels
SMOOTH_TEXTURE = 0.015  # median local deviation / value range at or under which grey is a map
MAX_EXIF_BYTES = 64 * 1024  # what a JPEG APP1 segment can hold; larger is a bomb, not a photo
_PNG_OK_MODES = ("L", "LA", "I;16", "I;16B", "I;16L", "I", "RGB", "RGBA")
# Leading bytes of things people attach by mistake (or on purpose), each with its own message.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "a GIF"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
    (b"<svg", "an SVG drawing"),
    (b"\x00\x00\x01\x00", "an icon file"),
)


# What came in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadHeader:
    """What admission learns from the header alone: format and size."""

    format: Literal["PNG", "JPEG", "WEBP", "NPY"]
    width: int
    height: int
    mode: str  # Pillow's mode, or the .npy dtype


@dataclass(frozen=True)
class Upload:
    """A decoded, classified upload: a normalised depth map (near = bright) or a photo."""

    header: UploadHeader
    kind: Literal["depth", "photo"]
    reason: str  # why it was taken as a map or a photo (shown in a note when auto-detected)
    depth: np.ndarray | None = field(default=None, compare=False)  # HxW float32 in [0, 1]
    photo: Image.Image | None = field(default=None, compare=False)  # RGB
    notes: tuple[str, ...] = ()


class DepthEstimatorLike(Protocol):
    """``generation.estimators.DepthEstimator``: photo in, HxW depth in [0, 1] out."""

    name: str

    def estimate(self, image: Image.Image) -> np.ndarray: ...


def _shown(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1][:40] or "That file"


def _sniff_other(data: bytes) -> str | None:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return "a web page (HTML)"
    if head.startswith(b"<?xml"):
        return "an XML document"
    for magic, what in _OTHER_MAGIC:
        if data.startswith(magic):
            return what
    if data[:4] == b"RIFF":
        return "a RIFF file that is not a WEBP image"
    return None


def inspect_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> UploadHeader:
    """Format and dimensions from the bytes' header, with every structural check that needs no
    pixels: magic, caps, PNG chunk walk (truncation, trailing data, 16-bit colour, palette),
    WEBP container size, EXIF size, frame count, ``.npy`` header. Raises a ``UserError``."""
    if len(data) > max_bytes:
        raise TooLarge(messages.file_too_large(len(data), max_bytes))
    if not data:
        raise BadUpload(messages.upload_empty())
    if data.startswith(_NPY_MAGIC):
        shape, dtype, _ = _npy_header(data, max_bytes=max_bytes, max_pixels=max_pixels)
        return UploadHeader("NPY", shape[1], shape[0], dtype.str)
    if data.startswith(_PNG_MAGIC):
        _walk_png(data)
        fmt: Literal["PNG", "JPEG", "WEBP"] = "PNG"
    elif data.startswith(b"\xff\xd8\xff"):
        fmt = "JPEG"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _check_riff(data)
        fmt = "WEBP"
    else:
        other = _sniff_other(data)
        if other is not None:
            raise BadUpload(messages.upload_is_other(other))
        raise BadUpload(messages.upload_unknown_kind())
    image = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels, formats=(fmt,), load=False)
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise BadUpload(messages.upload_animated(fmt, frames))
    exif = image.info.get("exif") or b""
    if len(exif) > MAX_EXIF_BYTES:
        raise BadUpload(messages.upload_exif_too_large(fmt, len(exif), MAX_EXIF_BYTES))
    mode = image.mode
    if mode == "CMYK":
        raise BadUpload(messages.upload_cmyk())
    if mode in ("P", "PA"):
        raise BadUpload(messages.upload_palette())
    if mode == "1":
        raise BadUpload(messages.upload_one_bit())
    if fmt == "PNG" and mode not in _PNG_OK_MODES:
        raise BadUpload(messages.png_mode_unsupported(mode))
    if fmt != "PNG" and mode not in ("L", "RGB", "RGBA", "RGBX"):
        raise BadUpload(messages.image_mode_unsupported(fmt, mode))
    width, height = image.size
    return UploadHeader(fmt, width, height, mode)


def _walk_png(data: bytes) -> None:
    """Walk the chunks: truncation, 16-bit colour, and bytes after IEND are refused."""
    pos, seen_ihdr = 8, False
    while True:
        if pos + 8 > len(data):
            raise BadUpload(messages.png_truncated())
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 2**31 - 1 or end > len(data):
            raise BadUpload(messages.png_chunk_past_end())
        if not seen_ihdr:
            if kind != b"IHDR" or length != 13:
                raise BadUpload(messages.png_no_header())
            seen_ihdr = True
            bit_depth, colour_type = data[pos + 16], data[pos + 17]
            if bit_depth == 16 and colour_type in (2, 6):
                raise BadUpload(messages.png_16bit_colour())
        if kind == b"IEND":
            if end != len(data):
                raise BadUpload(messages.png_trailing_data(len(data) - end))
            return
        pos = end


def _check_riff(data: bytes) -> None:
    (size,) = struct.unpack("<I", data[4:8])
    if size + 8 > len(data):
        raise BadUpload(messages.webp_truncated())
    if size + 8 < len(data) - 1:  # one pad byte is allowed
        raise BadUpload(messages.webp_trailing_data(len(data) - size - 8))


# .npy -----------------------------------------------------------------------------------------


def _npy_header(
    data: bytes, *, max_bytes: int, max_pixels: int
) -> tuple[tuple[int, int], np.dtype, int]:
    """(shape, dtype, data offset) after every check; nothing is allocated from the header."""
    stream = io.BytesIO(data)
    shape, _fortran, dtype = _read_npy_header(stream)
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise BadUpload(messages.npy_not_numbers())
    if dtype.kind not in _NUMERIC_KINDS or dtype.itemsize > 8:
        raise BadUpload(messages.npy_dtype(dtype.name))
    if any(not isinstance(side, int) or side < 0 for side in shape):
        raise BadUpload(messages.npy_bad_shape(shape))
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) != 2:
        raise BadUpload(messages.npy_not_2d(shape))
    if min(shape) < 1:
        raise BadUpload(messages.npy_empty(shape))
    height, width = shape
    if height * width > max_pixels:
        raise TooLarge(messages.depth_map_too_large(width, height, max_pixels))
    expected = height * width * dtype.itemsize
    if expected > max_bytes or len(data) - stream.tell() != expected:
        raise BadUpload(messages.npy_size_mismatch(expected, len(data) - stream.tell()))
    return (height, width), dtype, stream.tell()


def _read_npy_header(stream: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(stream, max_header_size=_NPY_MAX_HEADER)
    except Exception as exc:  # numpy's header parser raises many kinds (tokenize errors too)
        raise BadUpload(messages.npy_header_damaged()) from exc
    raise BadUpload(messages.npy_version(version[0], version[1]))


def _load_npy(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    (height, width), _, _ = _npy_header(data, max_bytes=max_bytes, max_pixels=max_pixels)
    array = np.load(io.BytesIO(data), allow_pickle=False)
    return np.asarray(array).reshape(height, width)


# Reading and classifying ----------------------------------------------------------------------


def read_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    input_mode: str = "auto",
    filename: str = "",
) -> Upload:
    """Check, decode and classify an upload; a map comes back normalised (near = bright).

    Everything but depth estimation happens here, so admission (the bot) and the worker accept
    and refuse exactly the same files.
    """
    if input_mode not in INPUT_MODES:
        raise InvalidRequest(messages.input_mode_invalid(input_mode))
    header = inspect_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)
    if header.format == "NPY":
        if input_mode == "photo":
            raise BadUpload(messages.npy_is_not_photo())
        raw = _load_npy(data, max_bytes=max_bytes, max_pixels=max_pixels)
        return _map_upload(header, raw.astype(np.float64), "a .npy array", scale=None)
    image = decode_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, formats=(header.format,),
        keep_bit_depth=True,
    )  # fmt: skip
    if input_mode == "photo":
        return Upload(header, "photo", "--input photo", photo=image.convert("RGB"))
    if image.mode == "I":  # 16-bit grey PNG: always a map
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if header.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        return _map_upload(header, array, "16-bit grey", scale=peak)
    if input_mode == "depth":
        grey = np.asarray(image.convert("L"), dtype=np.float64)
        return _map_upload(header, grey, "--input depth", scale=255.0)
    kind, reason = classify(image)
    if kind == "photo":
        return Upload(header, "photo", reason, photo=image.convert("RGB"))
    return _map_upload(header, np.asarray(image.convert("L"), dtype=np.float64), reason, scale=255.0)


def read_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """An image to start from (remix, upscale, vary) as upright RGB, through the same header
    checks and decoder as /depth's ``read_upload``: the same file is refused the same way."""
    header = inspect_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)
    if header.format == "NPY":
        raise BadUpload(messages.npy_is_not_an_image())
    image = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, formats=(header.format,))
    return image.convert("RGB")


def made_with(data: bytes) -> tuple[str, str] | None:
    """(prompt, negative prompt) from the A1111 ``parameters`` text our PNGs carry, if any
    (``png.png_parameters`` writes it); read after ``read_image`` accepted the file."""
    try:
        text = Image.open(io.BytesIO(data), formats=["PNG"]).info.get("parameters")
    except Exception:  # not a PNG, or no text: nothing to read
        return None
    if not isinstance(text, str) or "\nSteps: " not in text:
        return None
    head = text.rsplit("\nSteps: ", 1)[0]
    prompt, _, negative = head.partition("\nNegative prompt: ")
    return prompt.strip(), negative.strip()


def classify(image: Image.Image) -> tuple[Literal["depth", "photo"], str]:
    """The stated rule (module docstring): grey and smooth is a depth map, else a photo."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    mean_diff = max(float(np.abs(rgb[..., a] - rgb[..., b]).mean()) for a, b in ((0, 1), (1, 2)))
    if mean_diff > 1.0 or float(np.percentile(spread, 99.5)) > GREY_SPREAD:
        return "photo", "it has colour"
    grey = rgb.mean(axis=2)
    texture = local_texture(grey)
    if texture > SMOOTH_TEXTURE:
        return "photo", f"it is grey but textured ({texture:.3f} > {SMOOTH_TEXTURE})"
    return "depth", "it is grey and smooth"


def local_texture(grey: np.ndarray) -> float:
    """Median |pixel - mean of its 3x3 neighbourhood| as a fraction of the value range."""
    low, high = np.percentile(grey, (1, 99))
    span = float(high - low)
    if span <= 0 or min(grey.shape) < 3:
        return 0.0
    padded = np.pad(grey, 1, mode="edge")
    h, w = grey.shape
    box = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    return float(np.median(np.abs(grey - box)) / span)


def _map_upload(header: UploadHeader, raw: np.ndarray, reason: str, *, scale: float | None) -> Upload:
    depth, notes = normalise_map(raw, scale=scale)
    return Upload(header, "depth", reason, depth=depth, notes=tuple(notes))


def normalise_map(raw: np.ndarray, *, scale: float | None) -> tuple[np.ndarray, list[str]]:
    """float32 HxW in [0, 1], near = bright. ``scale``: divide by it (image bit depth); None:
    min-max over the finite values (``.npy``). Flat maps are refused; inverted ones flipped."""
    values = raw.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        raise BadUpload(messages.depth_no_finite())
    notes: list[str] = []
    low, high = float(values[finite].min()), float(values[finite].max())
    if high - low <= 0:
        raise BadUpload(messages.depth_flat(low))
    if not finite.all():
        notes.append(messages.depth_nonfinite_taken_far(int((~finite).sum())))
    if scale is None:
        out = np.zeros(values.shape, dtype=np.float32)
        out[finite] = ((values[finite] - low) / (high - low)).astype(np.float32)
    else:
        out = np.clip(np.where(finite, values, 0.0) / scale, 0.0, 1.0).astype(np.float32)
    if looks_inverted(out):
        out = (1.0 - out).astype(np.float32)
        out[~finite] = 0.0
        notes.append(messages.depth_flipped())
    return out, notes


def looks_inverted(depth: np.ndarray) -> bool:
    """Far = bright? Scenes are far at the top (sky, back wall) and near at the bottom (ground),
    and objects stand in front of their surroundings: so a map whose top band is clearly
    brighter than its bottom band, or whose border is clearly brighter than its centre, is
    taken to be inverted."""
    h, w = depth.shape
    if h < 8 or w < 8:  # too small to tell a scene's layout: never flipped
        return False
    band_h, band_w = max(1, h // 10), max(1, w // 10)
    top, bottom = float(depth[:band_h].mean()), float(depth[-band_h:].mean())
    if top - bottom > 0.15 and top > float(depth.mean()):
        return True
    border = np.ones(depth.shape, dtype=bool)
    border[band_h : h - band_h, band_w : w - band_w] = False
    centre = depth[h // 4 : h - h // 4, w // 4 : w - w // 4]
    if not border.any() or border.all() or centre.size == 0:
        return False
    return float(depth[border].mean()) - float(centre.mean()) > 0.25


# Estimating, fitting, output ------------------------------------------------------------------


def resolve_depth(
    upload: Upload, estimator: Callable[[], DepthEstimatorLike | None]
) -> tuple[np.ndarray, list[str]]:
    """The upload's depth map: itself, or the model's estimate from the photo."""
    notes = list(upload.notes)
    if upload.kind == "depth":
        assert upload.depth is not None
        return upload.depth, notes
    assert upload.photo is not None
    model = estimator()
    if model is None:
        raise BadUpload(messages.photo_without_estimator())
    depth = np.asarray(model.estimate(upload.photo), dtype=np.float64)
    finite = np.isfinite(depth)
    if depth.ndim != 2 or not finite.any() or float(np.ptp(depth[finite])) <= 1e-6:
        raise BadUpload(messages.depth_estimate_flat())
    low, high = float(depth[finite].min()), float(depth[finite].max())
    out = np.where(finite, (depth - low) / (high - low), 0.0).astype(np.float32)
    notes.append(messages.depth_estimated_with(model.name))
    return out, notes


def fit_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fit inside ``width`` x ``height`` keeping the aspect, then pad by repeating the
    edge pixels. Never stretches, never crops."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D, got shape {depth.shape}")
    h, w = depth.shape
    scale = min(width / w, height / h)
    new_w = min(width, max(1, round(w * scale)))
    new_h = min(height, max(1, round(h * scale)))
    values = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    image = Image.fromarray(values, mode="F")
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    scaled = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    pad = ((top, height - new_h - top), (left, width - new_w - left))
    return np.pad(scaled, pad, mode="edge").astype(np.float32)


def padded_fraction(shape: tuple[int, int], width: int, height: int) -> float:
    """How much of the output ``fit_depth`` fills by padding (0 when the aspects agree)."""
    h, w = shape
    scale = min(width / w, height / h)
    return 1.0 - (min(width, round(w * scale)) * min(height, round(h * scale))) / (width * height)


def depth_to_image(depth: np.ndarray) -> Image.Image:
    """8-bit grey, near = bright: the depth map used, as users receive it."""
    values = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return Image.fromarray((np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")


def depth_to_control_image(depth: np.ndarray, width: int, height: int) -> Image.Image:
    """The RGB control image, near = bright, fitted (not stretched) to the generation size."""
    return depth_to_image(fit_depth(depth, width, height)).convert("RGB")


def load_depth_map(data: bytes, filename: str, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """A depth map upload as float32 HxW in [0, 1] (near = bright); photos are refused."""
    upload = read_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, filename=filename)
    if upload.kind != "depth" or upload.depth is None:
        raise BadUpload(messages.photo_not_depth_map(_shown(filename), upload.reason))
    return upload.depth


def aspect(width: int, height: int) -> float:
    return width / height if height else math.inf
