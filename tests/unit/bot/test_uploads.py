"""Upload rules shared by every platform."""

from __future__ import annotations

import pytest

from gouache.bot.uploads import attach, check_size, sniff_upload
from gouache.config import Limits
from gouache.errors import InvalidRequest, TooLarge
from gouache.request import Kind
from gouache.storage.jobs import ArtifactKind
from tests.support.factories import make_request


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[:, None], (1, 16))  # a smooth grey map
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()
LIMITS = Limits(max_upload_bytes=1024)


def test_depth_takes_exactly_one_file() -> None:
    depth = make_request(kind=Kind.DEPTH)
    request, inputs = attach(depth, PNG, LIMITS)
    assert request.attachment == "input-0.png"
    assert [(a.name, a.kind, a.mime) for a in inputs] == [("input-0.png", ArtifactKind.INPUT, "image/png")]
    with pytest.raises(InvalidRequest, match="/depth needs a depth map"):
        attach(depth, None, LIMITS)
    with pytest.raises(InvalidRequest, match="/diversity takes no file: remove it, or use /imagine or /depth"):
        attach(make_request(kind=Kind.DIVERSITY, count=2), PNG, LIMITS)
    assert attach(make_request(), None, LIMITS)[1] == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", ("image/jpeg", "jpg")),
        (b"RIFF\0\0\0\0WEBPVP8 ", ("image/webp", "webp")),
        (b"\x93NUMPY\x01\x00", ("application/x-npy", "npy")),
    ],
)
def test_type_comes_from_the_bytes(data: bytes, expected: tuple[str, str]) -> None:
    assert sniff_upload(data) == expected


def test_other_files_and_big_files_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="PNG, JPEG or WEBP"):
        sniff_upload(b"GIF89a...")
    with pytest.raises(TooLarge, match="2,048 bytes; the limit is 1,024"):
        check_size(2048, LIMITS)
    with pytest.raises(TooLarge):
        attach(make_request(kind=Kind.DEPTH), PNG + b"\0" * 2048, LIMITS)
