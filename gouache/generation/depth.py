"""Depth maps in: a PNG or ``.npy`` upload becomes the control image a depth ControlNet reads.

Convention throughout: 1.0 (bright) is *near*, 0.0 (dark) is far, as in the MiDaS-style maps
the depth ControlNets were trained on. PNG maps are taken as stored (scaled by bit depth);
``.npy`` arrays are min-max normalised, so save metric depth as ``1 / depth``.

``.npy`` uploads are hostile: ``np.load`` trusts the header and allocates whatever shape it
claims before reading data (a 144-byte file can ask for 6 GiB). So the header is parsed and
checked here first, and only then is the array read, never with pickles.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image

from gouache.errors import InvalidRequest, TooLarge
from gouache.generation.images import human_size, open_image

__all__ = ["load_depth_map", "depth_to_control_image"]

_NPY_MAGIC = b"\x93NUMPY"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NPY_MAX_HEADER = 10_000
_NUMERIC_KINDS = "uif"  # unsigned, signed, float: no bool, complex, object, string, void


def load_depth_map(data: bytes, filename: str, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """A float32 HxW array in [0, 1] (1 = near) from PNG (8/16-bit, grey or RGB) or ``.npy``.

    The file's own bytes decide its format; ``filename`` only words an error message and is
    never used as a path.
    """
    if len(data) > max_bytes:
        raise TooLarge(
            f"The depth map is {human_size(len(data))}; the limit is {human_size(max_bytes)}."
        )
    if data.startswith(_NPY_MAGIC):
        return _normalise(_load_npy(data, max_bytes=max_bytes, max_pixels=max_pixels))
    if not data.startswith(_PNG_MAGIC):
        shown = filename.replace("\\", "/").rsplit("/", 1)[-1][:40] or "That file"
        raise InvalidRequest(
            f"“{shown}” is not a depth map: upload a PNG (8 or 16-bit) or a .npy array."
        )
    image = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels, formats=("PNG",))
    return _from_png(image)


def _from_png(image: Image.Image) -> np.ndarray:
    """Scale by bit depth, not by content: a PNG's grey levels are the map's own units."""
    if image.mode.startswith("I"):  # 16-bit grey ("I;16", "I;16B") or 32-bit "I"
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        return np.clip(array / peak, 0.0, 1.0).astype(np.float32)
    if image.mode == "F":
        return _normalise(np.asarray(image, dtype=np.float32))
    if image.mode != "L":
        image = image.convert("RGB").convert("L")
    return (np.asarray(image, dtype=np.float32) / 255.0).astype(np.float32)


def _load_npy(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    stream = io.BytesIO(data)
    shape, fortran, dtype = _read_npy_header(stream)
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise InvalidRequest("The .npy file must hold plain numbers, not objects or records.")
    if dtype.kind not in _NUMERIC_KINDS or dtype.itemsize > 8:
        raise InvalidRequest(
            f"The .npy file holds {dtype.name} values; use integers or float16/32/64."
        )
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) != 2 or min(shape) < 1:
        raise InvalidRequest(
            f"The .npy depth map must be 2-D (height x width) but has shape {shape}."
        )
    height, width = shape
    if height * width > max_pixels:
        raise TooLarge(
            f"The depth map is {width}x{height} = {width * height:,} values; "
            f"the limit is {max_pixels:,}."
        )
    expected = height * width * dtype.itemsize
    if expected > max_bytes or len(data) - stream.tell() != expected:
        raise InvalidRequest(
            f"The .npy file is truncated or padded: its header promises {expected:,} bytes "
            f"of data but it holds {len(data) - stream.tell():,}."
        )
    stream.seek(0)
    array = np.load(stream, allow_pickle=False)
    del fortran  # np.load honours the order itself; read only to validate the header
    return array.reshape(height, width)


def _read_npy_header(stream: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(stream, max_header_size=_NPY_MAX_HEADER)
    except (ValueError, SyntaxError, TypeError, KeyError, EOFError, OverflowError,
            RecursionError, MemoryError) as exc:  # fmt: skip
        raise InvalidRequest("The .npy file's header is damaged.") from exc
    raise InvalidRequest(f"Unsupported .npy format version {version[0]}.{version[1]}.")


def _normalise(array: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] in float32; non-finite values become far (0)."""
    values = array.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        raise InvalidRequest("The depth map holds no finite numbers.")
    low, high = values[finite].min(), values[finite].max()
    span = high - low
    out = np.zeros(values.shape, dtype=np.float32)
    if span > 0:
        out[finite] = ((values[finite] - low) / span).astype(np.float32)
    return out


def depth_to_control_image(depth: np.ndarray, width: int, height: int) -> Image.Image:
    """An RGB control image, near = bright, resized to the generation size."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D, got shape {depth.shape}")
    values = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    grey = Image.fromarray((np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.BICUBIC)
    return grey.convert("RGB")
