"""HTTP mode: POST /slack/events, checked here before slack-bolt parses or logs anything.

Every forged, stale, missing or malformed timestamp or signature is answered 401 with the
same empty reply, and only the body's length is logged. bolt 1.30 cannot be left to do this:
it answers 500 to a timestamp that is not a number, ``SignatureVerifier`` raises on a
signature with non-ASCII characters (``hmac.compare_digest`` of ``str``), and bolt logs the
body of a request whose signature fails. The check runs on the raw bytes, so bolt's own
verification (which would re-check a decoded copy) is switched off in ``app.py``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import Clock, SignatureVerifier

__all__ = ["SignedEndpoint", "SLACK_PATH", "MAX_SKEW_SECONDS"]

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
MAX_SKEW_SECONDS = 300  # Slack's own advice: refuse requests older than five minutes
MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are a few KB; files never come this way
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: "²" and "٣" are digits to int()
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class SignedEndpoint:
    """The aiohttp handler for Slack's request URL; hands verified requests to bolt."""

    def __init__(
        self, app: AsyncApp, signing_secret: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._app = app
        self._clock = clock
        self._verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))

    def routes(self) -> list[web.RouteDef]:
        return [web.post(SLACK_PATH, self.handle)]

    def verified(self, body: bytes, timestamp: str, signature: str) -> bool:
        """The whole check; never raises, whatever the headers hold."""
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return False
        if abs(self._clock() - int(timestamp)) > MAX_SKEW_SECONDS:
            return False
        return self._verifier.is_valid(body, timestamp, signature)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _read_capped(request)
        except Exception:  # a client that hung up or sent a broken chunked body
            return _refused(0)
        timestamp = _one(request, "X-Slack-Request-Timestamp")
        signature = _one(request, "X-Slack-Signature")
        if len(body) > MAX_BODY_BYTES or not self.verified(body, timestamp, signature):
            return _refused(len(body))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # signed, so from Slack: still nothing bolt could parse
            return web.Response(status=400)
        bolt_request = AsyncBoltRequest(
            body=text,
            query=request.query_string,
            headers={k: request.headers.getall(k) for k in request.headers},
        )
        return await to_aiohttp_response(await self._app.async_dispatch(bolt_request))


async def _read_capped(request: web.Request) -> bytes:
    """The body, at most one byte past the cap (a single ``read(n)`` stops at the buffer)."""
    parts: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        parts.append(chunk)
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            break
    return b"".join(parts)


class _Clock(Clock):
    """``SignatureVerifier`` takes an object with ``now()``; tests move time with ours."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


def _one(request: web.Request, name: str) -> str:
    """The header's value when it appears exactly once; "" (refused) otherwise."""
    values = request.headers.getall(name, [])
    return values[0] if len(values) == 1 else ""


def _refused(size: int) -> web.Response:
    log.warning("rejected a Slack request with a missing, stale or bad signature (%d bytes)", size)
    return web.Response(status=401, text="invalid request")
