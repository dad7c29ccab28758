"""Slack file downloads that arrive whole, or are refused with a reason the user can act on.

Slack serves ``url_private_download`` only with the bot token; without the ``files:read``
scope it answers 200 with its HTML sign-in page, which must not be mistaken for an image. The
body is streamed chunk by chunk up to the size cap (a single ``read(n)`` returns only what is
buffered, which over a real network is a fraction of the file), a declared size over the cap is
refused before any byte is read, and a body shorter than Slack said the file is counts as
damaged in transit.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gouache.bot.adapters.slack import replies
from gouache.bot.uploads import check_size
from gouache.config import Limits
from gouache.errors import InvalidRequest

__all__ = ["download", "file_url", "CHUNK_BYTES"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_read=30)
_HTML = (b"<!doctype html", b"<html", b"<!--")


def file_url(file: Mapping[str, Any]) -> str:
    return str(file.get("url_private_download") or file.get("url_private") or "")


async def download(
    file: Mapping[str, Any], token: str, limits: Limits, hosts: Collection[str]
) -> bytes:
    """The bytes of a Slack file object (from an event, a modal's file_input or a shortcut)."""
    url = file_url(file)
    if urlsplit(url).scheme not in ("https", "http") or urlsplit(url).netloc not in hosts:
        raise InvalidRequest(replies.NOT_A_SLACK_FILE)
    declared = _int(file.get("size"))
    if declared is not None:
        check_size(declared, limits)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(url, headers=headers) as resp,
        ):
            if resp.status != 200:
                raise InvalidRequest(replies.download_failed(resp.status))
            if resp.content_type in ("text/html", "application/xhtml+xml"):
                raise InvalidRequest(replies.SIGN_IN_PAGE)
            if resp.content_length is not None:
                check_size(resp.content_length, limits)  # refuse before reading the body
            data = await _read_capped(resp, limits)
    except aiohttp.ClientPayloadError as exc:
        raise InvalidRequest(replies.truncated(None, declared)) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("slack file download failed: %s", type(exc).__name__)
        raise InvalidRequest(replies.download_failed(None)) from exc
    if data[:64].lstrip().lower().startswith(_HTML):
        raise InvalidRequest(replies.SIGN_IN_PAGE)
    if declared is not None and len(data) != declared:
        raise InvalidRequest(replies.truncated(len(data), declared))
    return data


async def _read_capped(resp: aiohttp.ClientResponse, limits: Limits) -> bytes:
    """Every chunk until the end of the body, refusing as soon as the cap is passed."""
    parts: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        total += len(chunk)
        check_size(total, limits)
        parts.append(chunk)
    if resp.content_length is not None and total != resp.content_length:
        raise InvalidRequest(replies.truncated(total, resp.content_length))
    return b"".join(parts)


def _int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None
