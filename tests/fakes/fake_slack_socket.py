"""A local Socket Mode server: Slack's side of the websocket an app dials out to.

It speaks the envelope protocol slack_sdk's client expects: ``hello`` on connect; each
request as ``{"envelope_id", "type", "payload", "accepts_response_payload", "retry_attempt",
"retry_reason"}``; the app's ack ``{"envelope_id", "payload"?}`` recorded with the time it
took; ``disconnect`` envelopes (``refresh_requested``, as Slack sends them routinely), after
which the app must fetch a fresh URL from ``apps.connections.open`` on the fake Web API and
reconnect. Like Slack, an envelope not acked when its connection goes is sent again on the
next connection with ``retry_attempt`` raised, and ``send`` waits for a live connection, so a
test can tell lost, duplicated and late envelopes apart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.fake_slack import FakeSlack, Payloads

__all__ = ["FakeSlackSocket", "Envelope", "SocketSender"]

_tickets = itertools.count(1)


@dataclass
class Envelope:
    id: str
    type: str
    payload: dict[str, Any]
    retry_attempt: int = 0
    sent_at: float = 0.0
    acked_at: float | None = None
    ack: dict[str, Any] | None = None
    sends: int = 0  # how many times it went over a socket

    @property
    def ack_seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.sent_at


@dataclass
class _Connection:
    ticket: int
    ws: web.WebSocketResponse
    opened_at: float = field(default_factory=time.monotonic)


class FakeSlackSocket:
    """``async with FakeSlackSocket(fake_slack) as socket:``; the fake Web API hands out its URL."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack
        self.envelopes: dict[str, Envelope] = {}
        self.connections: list[_Connection] = []  # every connection ever made, in order
        self.unknown_acks: list[dict[str, Any]] = []
        self._live: _Connection | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FakeSlackSocket:
        app = web.Application()
        app.router.add_get("/link/", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.slack.socket_url = self.new_url
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self.connections:
            await connection.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def new_url(self) -> str:
        """What ``apps.connections.open`` answers: a fresh ticket each time."""
        return f"ws://127.0.0.1:{self.port}/link/?ticket={next(_tickets)}&app_id=A0001"

    # --- what a test does ------------------------------------------------------------------
    async def wait_connected(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until ``count`` connections were made and one is live."""
        await self._wait(lambda: len(self.connections) >= count and self._live is not None, timeout)

    async def send(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0,
        envelope_id: str | None = None, timeout: float = 10.0,
    ) -> Envelope:  # fmt: skip
        """Send one envelope on the live connection (waiting for one)."""
        envelope = self.envelopes.get(envelope_id or "") or Envelope(
            envelope_id or str(uuid.uuid4()), kind, payload, retry_attempt
        )
        envelope.retry_attempt = retry_attempt
        self.envelopes[envelope.id] = envelope
        await self._wait(lambda: self._live is not None, timeout)
        assert self._live is not None
        await self._transmit(self._live, envelope)
        return envelope

    async def acked(self, envelope: Envelope, timeout: float = 10.0) -> Envelope:
        await self._wait(lambda: envelope.acked_at is not None, timeout)
        return envelope

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the app to move to a new connection; the old one is closed once it has."""
        assert self._live is not None
        old = self._live
        await old.ws.send_str(json.dumps({"type": "disconnect", "reason": reason,
                                          "debug_info": {"host": "fake-socket"}}))  # fmt: skip
        count = len(self.connections)
        await self._wait(lambda: len(self.connections) > count, 10.0)
        await old.ws.close()

    async def drop(self) -> None:
        """The server closes the socket with no ``disconnect`` envelope first (a restart on
        Slack's side); the client must notice and fetch a new URL on its own."""
        assert self._live is not None
        live, self._live = self._live, None
        await live.ws.close()

    # --- the server ------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = _Connection(int(request.query.get("ticket", "0")), ws)
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": 1,
            "debug_info": {"host": "fake-socket", "build_number": 1,
                           "approximate_connection_time": 3600},
            "connection_info": {"app_id": "A0001"},
        }))  # fmt: skip
        async with self._changed:
            self.connections.append(connection)
            self._live = connection
            self._changed.notify_all()
        for envelope in list(self.envelopes.values()):  # Slack re-sends what was never acked
            if envelope.acked_at is None and envelope.sends:
                envelope.retry_attempt += 1
                await self._transmit(connection, envelope)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await self._on_ack(json.loads(message.data))
        async with self._changed:
            if self._live is connection:
                self._live = None
            self._changed.notify_all()
        return ws

    async def _transmit(self, connection: _Connection, envelope: Envelope) -> None:
        envelope.sent_at = time.monotonic()
        envelope.sends += 1
        await connection.ws.send_str(json.dumps({
            "envelope_id": envelope.id, "type": envelope.type, "payload": envelope.payload,
            "accepts_response_payload": envelope.type != "events_api",
            "retry_attempt": envelope.retry_attempt,
            "retry_reason": "timeout" if envelope.retry_attempt else "",
        }))  # fmt: skip

    async def _on_ack(self, message: dict[str, Any]) -> None:
        async with self._changed:
            envelope = self.envelopes.get(str(message.get("envelope_id")))
            if envelope is None:
                self.unknown_acks.append(message)
            elif envelope.acked_at is None:
                envelope.acked_at = time.monotonic()
                envelope.ack = message
            self._changed.notify_all()

    async def _wait(self, predicate: Any, timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)


class SocketSender(Payloads):
    """The same payloads as ``SlackSender``, as Socket Mode envelopes; returns (status, ack)."""

    def __init__(self, socket: FakeSlackSocket, fake: FakeSlack) -> None:
        self.socket = socket
        self.fake = fake
        self.last: Envelope | None = None

    async def send(self, kind: str, payload: dict[str, Any], **options: Any) -> tuple[int, str]:
        self.last = await self.socket.send(kind, payload, **options)
        await self.socket.acked(self.last)
        return 200, json.dumps(self.last.ack)
