"""Files that come with a command: which commands take one, how big, and of what type.

Every platform delivers uploads differently (a Discord attachment option, a file on a Slack
message, a multipart part); the rules are the same: only /depth takes a file and it needs one,
the size is capped before the bytes are read where the platform says the size first, and the
type comes from the bytes themselves, never from the user's filename.

Admission reads the upload with the worker's own code (``generation.depth.read_upload``:
header checks, decode, depth-map-or-photo, normalisation), so a file the worker would refuse
is refused here, before a rate token is spent. Only depth estimation (a model) is left to
the worker. This is also where the output's size is fixed for a /depth request without
``--ar``/``--size`` (``Request.size_from_upload``): the request's default area at the upload's
aspect (``commands.size_for_upload``), with a note saying so.
"""

from __future__ import annotations

from dataclasses import replace

from gouache import messages
from gouache.bot.commands import size_for_upload
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
        raise TooLarge(messages.upload_too_large(size, limits.max_upload_bytes))


def sniff_upload(data: bytes) -> tuple[str, str]:
    """(mime, extension) from the bytes themselves; the client's filename is never used."""
    for magic, mime, ext in _TYPES:
        if data.startswith(magic):
            return mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    from gouache.generation.inputs.uploads import inspect_upload

    inspect_upload(data, max_bytes=len(data) + 1, max_pixels=2**62)  # a specific message
    raise InvalidRequest(messages.UNREADABLE_UPLOAD)


def attach(request: Request, data: bytes | None, limits: Limits) -> tuple[Request, list[Artifact]]:
    """Pair a request with its upload: /depth needs exactly one file, the others take none."""
    takes_file = request.spec.upload == "required"
    if data is None:
        if takes_file:
            raise InvalidRequest(messages.upload_needed(request.kind.value))
        return request, []
    if not takes_file:
        raise InvalidRequest(messages.no_file_here(request.kind.value, _takes_files()))
    check_size(len(data), limits)
    from gouache.generation.inputs.uploads import read_upload  # numpy + Pillow only, no models

    upload = read_upload(
        data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_upload_pixels,
        input_mode=request.depth_input,
    )  # fmt: skip
    mime, ext = sniff_upload(data)
    name = f"input-0.{ext}"
    notes = list(request.notes)
    if request.depth_input == "auto":
        say = messages.depth_map_used if upload.kind == "depth" else messages.photo_used
        notes.append(say(upload.reason))
    notes.extend(upload.notes)
    width, height = request.width, request.height
    up_w, up_h = upload.header.width, upload.header.height
    if request.size_from_upload:
        width, height = size_for_upload(up_w, up_h, request.width * request.height, limits)
        if (width, height) != (request.width, request.height):
            notes.append(messages.size_from_upload(width, height, up_w, up_h))
    from gouache.generation.inputs.uploads import padded_fraction

    if padded_fraction((up_h, up_w), width, height) > 0.02:
        notes.append(messages.depth_padded(up_w, up_h, width, height))
    updated = replace(request, attachment=name, width=width, height=height,
                      size_from_upload=False, notes=tuple(notes))  # fmt: skip
    return updated, [Artifact("", name, ArtifactKind.INPUT, mime, data)]
