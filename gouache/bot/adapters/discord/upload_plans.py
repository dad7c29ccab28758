"""Uploads that always fit: files packed into messages, smaller encodings after a 413, links.

Discord takes at most ``MAX_FILES`` attachments and ``limit`` bytes (the interaction's
``attachment_size_limit``, or the guild's for channel posts) per message. ``plan`` packs the
files into as many messages as that takes, re-encoding any single file that is over the limit
on its own. When Discord still answers 413 (the limit moved), the message is retried at the next
``STEPS`` entry: PNG -> WebP and a GIF with fewer frames, then PNG -> JPEG and a GIF under a
byte cap (``generation.gif``), then links to the files. Only our own outputs are re-encoded.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image, ImageSequence

from gouache.generation.gif import encode_gif

__all__ = ["MAX_FILES", "DEFAULT_LIMIT", "STEPS", "Upload", "reencode", "plan", "pack"]

log = logging.getLogger(__name__)

MAX_FILES = 10  # attachments per message
DEFAULT_LIMIT = 10 * 1024 * 1024  # an unboosted guild's upload limit
STEPS = ("original", "reencoded", "smaller", "links")  # what each 413 moves on to


@dataclass(frozen=True)
class Upload:
    source: str  # the artifact's name: links and spoilers refer to it
    name: str  # the file name sent (its extension follows the encoding)
    data: bytes


def reencode(upload: Upload, step: int, budget: int | None = None) -> Upload | None:
    """``upload`` at ``STEPS[step]``; None when it cannot be made smaller (send a link)."""
    if step <= 0:
        return upload
    if step >= len(STEPS) - 1:
        return None
    try:
        if upload.source.lower().endswith(".gif"):
            half = len(upload.data) // 2  # a 413 says "smaller", whatever the stated limit
            return _gif(upload, step, min(budget, half) if budget else half)
        return _still(upload, step)
    except Exception as exc:  # noqa: BLE001 - not an image we can shrink: link it instead
        log.info("could not re-encode %s (%s); it becomes a link", upload.source, exc)
        return None


def _still(upload: Upload, step: int) -> Upload:
    with Image.open(io.BytesIO(upload.data), formats=["PNG", "JPEG", "WEBP"]) as image:
        out = io.BytesIO()
        rgb = image.convert("RGB")
        if step == 1:
            rgb.save(out, "WEBP", quality=85, method=4)
            ext = "webp"
        else:
            rgb.save(out, "JPEG", quality=70, optimize=True)
            ext = "jpg"
    return Upload(upload.source, f"{upload.source.rsplit('.', 1)[0]}.{ext}", out.getvalue())


def _gif(upload: Upload, step: int, budget: int) -> Upload:
    with Image.open(io.BytesIO(upload.data), formats=["GIF"]) as image:
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
        frame_ms = int(image.info.get("duration", 120) or 120)
    if step == 1:  # fewer frames: every other one, always keeping the final image
        kept = frames[::2] if len(frames) > 2 else frames[-1:]
        if kept[-1] is not frames[-1]:
            kept.append(frames[-1])
        data = encode_gif(kept, max_bytes=max(len(upload.data) - 1, 1024), frame_ms=frame_ms * 2)
    else:  # under a byte cap: gif.py drops frames, scales and reduces colours until it fits
        data = encode_gif(frames, max_bytes=max(budget, 1024), frame_ms=frame_ms)
    return replace(upload, data=data)


def pack(uploads: Sequence[Upload], limit: int, max_files: int = MAX_FILES) -> list[list[Upload]]:
    """In order, as few messages as fit: at most ``max_files`` and ``limit`` bytes each."""
    batches: list[list[Upload]] = []
    size = 0
    for upload in uploads:
        if not batches or len(batches[-1]) >= max_files or size + len(upload.data) > limit:
            batches.append([])
            size = 0
        batches[-1].append(upload)
        size += len(upload.data)
    return batches


def plan(
    uploads: Sequence[Upload], limit: int, max_files: int = MAX_FILES
) -> tuple[list[list[Upload]], list[Upload]]:
    """(messages of files, files too large to upload even re-encoded: those become links)."""
    fitted: list[Upload] = []
    too_large: list[Upload] = []
    for upload in uploads:
        for step in range(len(STEPS) - 1):
            candidate = reencode(upload, step, budget=limit)
            if candidate is not None and len(candidate.data) <= limit:
                fitted.append(candidate)
                break
        else:
            too_large.append(upload)
    return pack(fitted, limit, max_files), too_large
