"""Uploaded images in: hostile-input decoding (PNG, JPEG, WEBP only; pixel caps before pixels).

Uploads are hostile. Only PNG, JPEG and WEBP decoders are ever consulted, and the header's
dimensions are checked against *our* pixel cap before any pixel is decoded: Pillow's own
decompression-bomb limit (89 M pixels) is far above what a bot should accept, and a 66-byte PNG
can claim 20000x20000. The messages shown to users live in ``gouache.messages``.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gouache import messages
from gouache.errors import InvalidRequest, TooLarge

__all__ = [
    "ALLOWED_FORMATS",
    "open_image",
    "decode_image",
]

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
# What a damaged or hostile file makes Pillow's decoders raise.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  IndexError, KeyError, TypeError, MemoryError)  # fmt: skip


def open_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    formats: Sequence[str] = ALLOWED_FORMATS,
    load: bool = True,
) -> Image.Image:
    """Decode the first frame of ``data`` with every cap checked before pixels are read.

    Returns the image in its stored mode (16-bit grey stays ``I;16``); ``decode_image`` is the
    normal entry point. ``load=False`` stops after the header checks (format, dimensions): what
    admission needs to know without decoding a single pixel.
    """
    if len(data) > max_bytes:
        raise TooLarge(messages.file_too_large(len(data), max_bytes))
    names = "/".join(formats)
    if not data:
        raise InvalidRequest(messages.image_file_empty(names))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
    except Image.DecompressionBombError as exc:
        raise TooLarge(messages.image_too_many_pixels(max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidRequest(messages.not_an_image(names)) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidRequest(messages.image_damaged(names)) from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidRequest(messages.image_no_pixels())
    if width * height > max_pixels:
        raise TooLarge(messages.image_pixels_over(width, height, max_pixels))
    if not load:
        return image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(0)
            image.load()
    except Image.DecompressionBombError as exc:  # pragma: no cover - caught by our cap first
        raise TooLarge(messages.image_too_many_pixels(max_pixels)) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidRequest(messages.image_truncated(image.format or names)) from exc
    return image


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    formats: Sequence[str] = ALLOWED_FORMATS,
    keep_bit_depth: bool = False,
) -> Image.Image:
    """An uploaded PNG/JPEG/WEBP as an upright ``RGB`` or ``L`` image (first frame only).

    The one production decoder: every upload's pixels come through here. ``keep_bit_depth``
    keeps 16-bit grey as mode ``I`` (32-bit integers holding the 16-bit values), for depth maps
    whose grey levels are their units.
    """
    image = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels, formats=formats)
    with contextlib.suppress(*_DECODE_ERRORS):  # damaged EXIF: keep the pixels as stored
        image = ImageOps.exif_transpose(image)
    if keep_bit_depth and image.mode.startswith("I"):
        return image.convert("I") if image.mode != "I" else image.copy()
    return _to_rgb_or_l(image)


def _to_rgb_or_l(image: Image.Image) -> Image.Image:
    """Flatten every stored mode to 8-bit RGB or L: what pipelines and annotators accept."""
    if image.mode in ("RGB", "L"):
        return image.copy()
    if image.mode in ("1", "LA", "La"):
        return image.convert("L")
    if image.mode.startswith(("I", "F")):  # 16-bit or float grey
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")
