"""Files that come with a command: which commands take one, how big, and of what type.

Every platform delivers uploads differently (a Discord attachment option, a file on a Slack
message, a multipart part); the rules are the same: only /depth takes a file and it needs one,
the size is capped before the bytes are read where the platform says the size first, and the
type comes from the bytes themselves, never from the user's filename.
"""

from __future__ import annotations

from dataclasses import replace

from gouache import messages
from gouache.config import Limits
from gouache.errors import InvalidRequest, TooLarge
from gouache.request import KINDS, Kind, Request
from gouache.storage.jobs import Artifact, ArtifactKind

__all__ = ["check_size", "sniff_upload", "attach", "takes_file"]

_TYPES = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x93NUMPY", "application/x-npy", "npy"),
)


def takes_file(kind: Kind) -> bool:
    """Whether a command takes an upload (the one answer every platform asks for)."""
    return KINDS[kind].upload != "none"


def _takes_files() -> list[str]:
    return [f"/{kind.value}" for kind in KINDS if takes_file(kind)]


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_upload_bytes:
        raise TooLarge(f"The file is {size:,} bytes; the limit is {limits.max_upload_bytes:,}.")


def sniff_upload(data: bytes) -> tuple[str, str]:
    """(mime, extension) from the bytes themselves; the client's filename is never used."""
    for magic, mime, ext in _TYPES:
        if data.startswith(magic):
            return mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    raise InvalidRequest("Upload a PNG, JPEG or WEBP image, or a .npy depth map.")


def attach(request: Request, data: bytes | None, limits: Limits) -> tuple[Request, list[Artifact]]:
    """Pair a request with its upload: /depth needs exactly one file, the others take none."""
    takes_file = request.spec.upload == "required"
    if data is None:
        if takes_file:
            raise InvalidRequest(f"/{request.kind.value} needs a depth map (PNG or .npy) or a photo attached.")
        return request, []
    if not takes_file:
        raise InvalidRequest(messages.no_file_here(request.kind.value, _takes_files()))
    check_size(len(data), limits)
    mime, ext = sniff_upload(data)
    name = f"input-0.{ext}"
    return replace(request, attachment=name), [Artifact("", name, ArtifactKind.INPUT, mime, data)]
