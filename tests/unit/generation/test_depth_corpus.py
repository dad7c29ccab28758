"""The hostile-upload corpus: hundreds of bad /depth files, each refused with its own message.

Every file goes through both doors, admission (``bot.uploads.attach``) and the worker
(``worker.jobs.prepare_depth``, which runs ``depth.read_upload``): both must raise the same
``UserError`` with the kind's specific message, with no other exception, in bounded memory
(pytest's timeout bounds the time). Files are built in code, deterministically.
"""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from gouache.bot.uploads import attach
from gouache.config import GifSettings, Limits
from gouache.errors import UserError
from gouache.request import Kind
from gouache.storage.jobs import Artifact, ArtifactKind
from gouache.worker.jobs import prepare_depth
from tests.support.factories import make_request

MB = 1024 * 1024
LIMITS = Limits(max_upload_bytes=8 * MB, max_upload_pixels=2048 * 2048)
RNG = np.random.default_rng(2026)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, *, bit_depth: int = 8, colour: int = 0, rows: bytes | None = None,
         extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:  # fmt: skip
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = 1 + width * channels * bit_depth // 8
    if rows is None:
        comp = zlib.compressobj(9)
        body = b"".join(comp.compress(b"\x00" * row) for _ in range(min(height, 4096))) + comp.flush()
    else:
        body = zlib.compress(rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    chunks = [_chunk(b"IHDR", ihdr), *(_chunk(k, v) for k, v in extra), _chunk(b"IDAT", body)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _chunk(b"IEND", b"")


def _bomb(width: int, height: int) -> bytes:
    """A real, complete PNG of zeros: a few KB that decode to width x height pixels."""
    row = b"\x00" * (1 + width)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _photo(width: int = 48, height: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _npy_header(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    size = struct.pack("<H", len(text)) if version[0] == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + size + text + data


def _cases() -> Iterator[tuple[str, str, bytes, str]]:
    """(kind, variant, bytes, --input mode)."""
    good_png = _encoded(_photo(64, 48), "PNG")
    good_jpeg = _encoded(_photo(64, 48, 1), "JPEG", quality=90)
    good_webp = _encoded(_photo(64, 48, 2), "WEBP", quality=80)
    yield "empty file", "0 bytes", b"", "auto"
    for w, h in ((0, 10), (10, 0), (0, 0), (0, 1), (1, 0), (0, 4096)):
        yield "zero-size image", f"{w}x{h}", _png(w, h), "auto"
    for cut in (8, 12, 20, 33, 40, 60, len(good_png) // 2, len(good_png) - 20, len(good_png) - 4, len(good_png) - 1):
        yield "truncated PNG", f"cut at {cut}", good_png[:cut], "auto"
    for frac in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98):
        yield "truncated JPEG", f"{frac:.0%}", good_jpeg[: int(len(good_jpeg) * frac)], "auto"
    for frac in (0.3, 0.5, 0.7, 0.9, 0.99):
        yield "truncated WEBP", f"{frac:.0%}", good_webp[: int(len(good_webp) * frac)], "auto"
    for i in range(20):
        junk = bytes(RNG.integers(0, 256, 64 + 37 * i, dtype=np.uint8))
        if junk[:1] in (b"\x89", b"\xff", b"\x93", b"R", b"G", b"B", b"I", b"M", b"%", b"P",
                        b"\x1f", b"\x80", b"\x7f", b"<", b"\x00"):  # fmt: skip
            junk = b"J" + junk[1:]
        yield "wrong magic", f"random {i}", junk, "auto"
    for i, page in enumerate((b"<!DOCTYPE html><html><body><img src=x></body></html>",
                              b"<html><head><title>image.png</title></head></html>",
                              b"  \n<!doctype HTML>\n<p>403 Forbidden</p>",
                              b"<script>alert(1)</script>", b"<body>\x89PNG\r\n\x1a\n</body>",
                              b"<HTML>" + b"A" * 5000)):  # fmt: skip
        yield "HTML pretending to be PNG", f"page {i}", page, "auto"
    yield "XML", "svg-ish", b"<?xml version='1.0'?><svg/>", "auto"
    others = {"GIF": _encoded(_photo(8, 8), "GIF"), "BMP": _encoded(_photo(8, 8), "BMP"),
              "TIFF": _encoded(_photo(8, 8), "TIFF"), "PDF": b"%PDF-1.7\n%...",
              "ZIP": b"PK\x03\x04" + b"\x00" * 40, "gzip": zlib.compress(b"x")[:0] + b"\x1f\x8b\x08" + b"\x00" * 20,
              "pickle": b"\x80\x04\x95" + b"\x00" * 20, "pickle5": b"\x80\x05\x95" + b"\x00" * 20,
              "ELF": b"\x7fELF" + b"\x00" * 60, "EXE": b"MZ" + b"\x00" * 60, "SVG": b"<svg xmlns='x'/>",
              "ICO": b"\x00\x00\x01\x00" + b"\x00" * 30, "RIFF WAVE": b"RIFF\x24\x00\x00\x00WAVEfmt "}  # fmt: skip
    for name, data in others.items():
        yield "another format", name, data, "auto"
    for w, h in ((5000, 5000), (20000, 20000), (2049, 2048), (1, 2**24), (2**24, 1), (65535, 65535),
                 (2**31 - 1, 1), (4097, 4097)):  # fmt: skip
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _chunk(b"IEND", b"")
        yield "huge dimensions", f"{w}x{h}", data, "auto"
    for w, h in ((3000, 3000), (2100, 2100), (8000, 600), (600, 8000)):
        yield "decompression bomb", f"{w}x{h}", _bomb(w, h), "auto"
    for i, obj in enumerate(([{"a": 1}], [[1, "x"], [2, "y"]], [None, None], [print], [b"b", 1.0],
                             [[1.0, 2.0], [3.0, None]])):  # fmt: skip
        yield "pickled .npy", f"object {i}", _npy(np.array(obj, dtype=object)), "auto"
    for i, dt in enumerate(("i4,f4", [("x", "f8"), ("y", "f8")], "(2,)f4", "i2,i2,i2")):
        yield "structured .npy", f"dtype {i}", _npy(np.zeros((4, 4), dtype=dt)), "auto"
    for name, arr in {"bool": np.ones((4, 4), bool), "complex": np.ones((4, 4), complex),
                      "str": np.full((4, 4), "ab"), "bytes": np.full((4, 4), b"ab"),
                      "datetime": np.zeros((4, 4), "M8[s]"), "longdouble": np.ones((4, 4), np.longdouble),
                      "timedelta": np.zeros((4, 4), "m8[s]")}.items():  # fmt: skip
        yield "non-numeric .npy", name, _npy(arr), "auto"
    for shape in ((40000, 40000), (2049, 2048), (10**9, 10), (4097, 4097), (3000, 3000, 1), (2**31, 2**31)):
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
        yield "huge .npy shape", str(shape), _npy_header(header), "auto"
    good = _npy(RNG.random((16, 16)).astype(np.float32))
    for cut in (-1, -4, -64, -512, 200):
        data = good[:cut] if cut < 0 else good + b"\x00" * cut
        yield "truncated or padded .npy", f"{cut:+d}", data, "auto"
    for i, header in enumerate(("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4)",
                                "{'descr': '<f4'}", "not a dict at all",
                                "{'descr': '<f4', 'fortran_order': False, 'shape': 'big', }",
                                "{'descr': 'zz', 'fortran_order': False, 'shape': (4, 4), }",
                                "{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 4), }",
                                "__import__('os').system('true')",
                                "{'descr': '<f4', 'fortran_order': 'x', 'shape': (4, 4), 'extra': 1}")):  # fmt: skip
        yield "damaged .npy header", f"header {i}", _npy_header(header, b"\x00" * 64), "auto"
    for version in ((9, 9), (0, 1), (4, 0)):
        yield "unsupported .npy version", f"{version}", b"\x93NUMPY" + bytes(version) + b"\x10\x00" + b" " * 16, "auto"
    for name, arr in {"all NaN": np.full((8, 8), np.nan), "all +inf": np.full((8, 8), np.inf),
                      "all -inf": np.full((8, 8), -np.inf), "NaN and inf": np.array([[np.nan, np.inf], [-np.inf, np.nan]]),
                      "float16 NaN": np.full((8, 8), np.nan, np.float16), "float32 inf": np.full((3, 5), np.inf, np.float32)}.items():  # fmt: skip
        yield "NaN/inf map", name, _npy(arr), "auto"
    for name, arr in {"zeros": np.zeros((16, 16)), "ones": np.ones((16, 16), np.float32),
                      "int 7": np.full((9, 9), 7, np.int32), "uint16 max": np.full((4, 4), 65535, np.uint16),
                      "one pixel": np.ones((1, 1)), "const with NaN": np.where(np.eye(8) > 0, np.nan, 0.5)}.items():  # fmt: skip
        yield "constant map", f".npy {name}", _npy(arr), "auto"
    for level in (0, 128, 255):
        yield "constant map", f"PNG grey {level}", _encoded(Image.new("L", (32, 24), level), "PNG"), "auto"
    yield "constant map", "PNG 16-bit", _encoded(Image.new("I;16", (32, 24), 4000), "PNG"), "auto"
    yield "constant map", "forced grey RGB", _encoded(Image.new("RGB", (20, 20), (9, 9, 9)), "PNG"), "depth"
    for shape in ((0, 10), (10, 0), (0, 0), (0, 1)):
        yield "zero-size .npy", str(shape), _npy(np.zeros(shape, np.float32)), "auto"
    for shape in ((4, 4, 3), (2, 3, 4), (8, 8, 2), (1, 4, 4), (16, 16, 4)):
        yield "3-D array", str(shape), _npy(np.ones(shape, np.float32)), "auto"
    for shape in ((1, 4, 4, 1), (2, 2, 2, 2), (1, 1, 8, 8), (4, 4, 1, 1)):
        yield "4-D array", str(shape), _npy(np.ones(shape, np.float32)), "auto"
    for shape in ((16,), (), (1,)):
        yield "1-D or 0-D array", str(shape), _npy(np.ones(shape, np.float32)), "auto"
    frames = [_photo(32, 32, s) for s in range(3)]
    for fmt in ("PNG", "WEBP", "PNG", "WEBP"):
        n = 2 if len(frames) == 2 else 3
        yield "animated image", fmt, _encoded(frames[0], fmt, save_all=True, append_images=frames[1:n], duration=100), "auto"
        frames = frames[:2] if fmt == "WEBP" else frames
    for i in range(4):
        cmyk = _photo(24 + 8 * i, 24, i).convert("CMYK")
        yield "CMYK JPEG", f"{i}", _encoded(cmyk, "JPEG", quality=80 + i), "auto"
    for i in range(5):
        yield "palette PNG", f"{i}", _encoded(_photo(20, 20 + i, i).convert("P", palette=Image.Palette.ADAPTIVE, colors=4 + i), "PNG"), "auto"
    for colour in (2, 6):
        for w in (4, 8, 16):
            yield "16-bit colour PNG", f"type {colour} w{w}", _png(w, 4, bit_depth=16, colour=colour), "auto"
    for i in range(3):
        yield "1-bit PNG", f"{i}", _encoded(_photo(16 + i, 16, i).convert("1"), "PNG"), "auto"
    for size in (65 * 1024, 256 * 1024, 2 * MB):
        exif = b"Exif\x00\x00II*\x00" + b"\x00" * size
        yield "EXIF bomb", f"PNG {size}", _png(8, 8, colour=2, extra=((b"eXIf", exif[6:]),)), "auto"
        yield "EXIF bomb", f"WEBP {size}", _encoded(_photo(8, 8), "WEBP", exif=exif), "auto"
    for name, tail in {"zip": b"PK\x03\x04" + b"\x00" * 100, "html": b"<html><script>x</script></html>",
                       "php": b"<?php system($_GET['c']); ?>", "jar": b"PK\x05\x06" + b"\x00" * 18,
                       "second png": good_png}.items():  # fmt: skip
        yield "polyglot", f"PNG + {name}", good_png + tail, "auto"
        yield "polyglot", f"WEBP + {name}", good_webp + tail + b"\x00" * (len(tail) % 2), "auto"
    corrupt = bytearray(good_png)
    corrupt[60:200] = bytes(140)
    yield "damaged PNG data", "zeroed IDAT", bytes(corrupt), "auto"
    for i in range(4):
        rows = bytes(RNG.integers(0, 256, 40, dtype=np.uint8))
        data = _png(16, 16, colour=0, rows=rows)  # far too few rows
        data = data.replace(b"IDAT" + zlib.compress(rows), b"IDAT" + zlib.compress(rows)[:-2] + b"\x00\x00")
        yield "damaged PNG data", f"short rows {i}", data, "auto"
    for i in range(3):
        yield "PNG without a header chunk", f"{i}", b"\x89PNG\r\n\x1a\n" + _chunk(b"IDAT", b"\x00" * (i + 1)) + _chunk(b"IEND", b""), "auto"
    for i in range(3):
        yield ".npy forced as a photo", f"{i}", _npy(RNG.random((8 + i, 8))), "photo"


CASES = list(_cases())
KIND_MESSAGES: dict[str, str] = {
    "empty file": r"^The file is empty",
    "zero-size image": r"no pixels|cannot be read|not a PNG",
    "truncated PNG": r"PNG is truncated|PNG is damaged",
    "truncated JPEG": r"JPEG image is truncated or damaged",
    "truncated WEBP": r"WEBP is truncated",
    "wrong magic": r"^That file is not a PNG, JPEG or WEBP image or a \.npy depth map\.$",
    "HTML pretending to be PNG": r"^That file is a web page \(HTML\)",
    "XML": r"^That file is an XML document",
    "another format": r"^That file is (a|an) (GIF|BMP|TIFF|PDF|ZIP|gzip|Python pickle|program|Windows|SVG|icon|RIFF)",
    "huge dimensions": r"^The image (is \d+x\d+ = [\d,]+ pixels; the limit is 4,194,304 pixels|has too many pixels \(limit 4,194,304\))\.$",
    "decompression bomb": r"^The image is \d+x\d+ = [\d,]+ pixels; the limit",
    "pickled .npy": r"^The \.npy file must hold plain numbers, not objects or records\.$",
    "structured .npy": r"^The \.npy file must hold plain numbers, not objects or records\.$|must be 2-D",
    "non-numeric .npy": r"^The \.npy file holds \S+ values; use integers or float16/32/64\.$",
    "huge .npy shape": r"^The depth map is \d+x\d+ = [\d,]+ values; the limit is 4,194,304\.$",
    "truncated or padded .npy": r"^The \.npy file is truncated or padded",
    "damaged .npy header": r"^The \.npy file's header is damaged\.$|shape .* is not a list of sizes",
    "unsupported .npy version": r"Unsupported \.npy format version|header is damaged",
    "NaN/inf map": r"^The depth map holds no finite numbers",
    "constant map": r"^The depth map is one flat value",
    "zero-size .npy": r"^The \.npy depth map is empty: shape",
    "3-D array": r"^The \.npy depth map must be 2-D \(height x width\) but has 3 dimensions",
    "4-D array": r"^The \.npy depth map must be 2-D \(height x width\) but has 4 dimensions",
    "1-D or 0-D array": r"^The \.npy depth map must be 2-D \(height x width\) but has [01] dimension",
    "animated image": r"^That (PNG|WEBP) is animated \(\d frames\): attach a still image\.$",
    "CMYK JPEG": r"^That JPEG is in CMYK",
    "palette PNG": r"^That PNG uses a colour palette",
    "16-bit colour PNG": r"^That PNG has 16-bit colour",
    "1-bit PNG": r"^That PNG is black and white only",
    "EXIF bomb": r"^That (PNG|WEBP)'s EXIF metadata is",
    "polyglot": r"^That (PNG|WEBP) has [\d,]+ bytes after its end",
    "damaged PNG data": r"PNG image is truncated or damaged|PNG is truncated",
    "PNG without a header chunk": r"does not start with an image header",
    ".npy forced as a photo": r"is a \.npy array, which is a depth map, not a photo",
}


def _refusal(call: Callable[[], object]) -> UserError:
    try:
        call()
    except UserError as exc:
        return exc
    raise AssertionError("accepted")


def test_the_corpus_is_big_and_varied() -> None:
    kinds = {kind for kind, *_ in CASES}
    assert len(CASES) >= 200
    assert len(kinds) >= 20
    assert kinds == set(KIND_MESSAGES)


@pytest.mark.parametrize(("kind", "variant", "data", "mode"), CASES, ids=[f"{k}:{v}" for k, v, *_ in CASES])
def test_every_bad_upload_is_refused_at_both_doors(kind: str, variant: str, data: bytes, mode: str) -> None:
    request = make_request(kind=Kind.DEPTH, depth_input=mode)
    tracemalloc.start()
    try:
        at_admission = _refusal(lambda: attach(request, data, LIMITS))
        artifact = Artifact("job", "input-0.bin", ArtifactKind.INPUT, "application/octet-stream", data)
        in_worker = _refusal(lambda: prepare_depth(request, [artifact], LIMITS, None))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MB, f"{kind}/{variant} peaked at {peak / MB:.1f} MB"
    assert at_admission.message == in_worker.message  # one rule, two doors
    message = in_worker.message
    assert 10 < len(message) < 300 and "Traceback" not in message
    assert re.search(KIND_MESSAGES[kind], message), f"{kind}/{variant}: {message}"


def test_kinds_get_messages_of_their_own() -> None:
    first: dict[str, str] = {}
    for kind, _variant, data, mode in CASES:
        if kind not in first:
            request = make_request(kind=Kind.DEPTH, depth_input=mode)
            first[kind] = _refusal(lambda r=request, d=data: attach(r, d, LIMITS)).message
    assert len(set(first.values())) >= 25, first


def test_good_uploads_pass_both_doors() -> None:
    """The corpus's own good sources are accepted, so the refusals above are about the damage."""
    for data in (_encoded(_photo(64, 48), "PNG"), _encoded(_photo(64, 48, 1), "JPEG"),
                 _encoded(_photo(64, 48, 2), "WEBP"), _npy(RNG.random((16, 12)).astype(np.float32))):  # fmt: skip
        request, inputs = attach(make_request(kind=Kind.DEPTH), data, LIMITS)
        assert inputs and request.attachment
    assert GifSettings()  # imported for parity with the worker's signature
