"""Socket Mode: the bot dials out to Slack over a websocket, so it needs no public URL.

slack-bolt's ``AsyncSocketModeHandler`` (slack_sdk's aiohttp client underneath) asks
``apps.connections.open`` for a ``wss://`` URL with the app-level token, acks every envelope
with its ``envelope_id`` once the listener calls ``ack()``, and on a ``disconnect`` envelope
(Slack sends them routinely, e.g. ``refresh_requested``) opens a fresh URL and reconnects. An
envelope Slack re-sends because its ack was lost carries ``retry_attempt``; the adapter's
dedupe middleware answers it without doing the work twice.

Connecting runs as a background task: a Slack that cannot be reached at startup must not keep
the web server, delivery and the worker from starting; the client keeps retrying on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp

__all__ = ["SocketConnection"]

log = logging.getLogger(__name__)


class SocketConnection:
    """``start()`` once, ``close()`` at exit; ``connected`` for health checks and tests."""

    def __init__(self, app: AsyncApp, app_token: str, *, ping_interval: float = 10.0) -> None:
        self.handler = AsyncSocketModeHandler(app, app_token, ping_interval=ping_interval)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="slack-socket-mode")

    async def _connect(self) -> None:
        await self.handler.connect_async()
        log.info("Slack: Socket Mode connected")

    async def connected(self) -> bool:
        return bool(await self.handler.client.is_connected())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.handler.close_async()
