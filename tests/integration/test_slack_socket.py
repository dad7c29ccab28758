"""Socket Mode against a local websocket server that speaks Slack's envelope protocol.

The real ``AsyncSocketModeHandler`` fetches its URL from ``apps.connections.open`` on the fake
Web API (with the app-level token), receives ``hello``, acks each envelope by its id, moves to
a new connection on a ``disconnect`` envelope, and comes back after the socket is dropped.
Commands sent around those moments must each become exactly one job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gouache.storage import open_storage
from tests.fakes.fake_slack_socket import FakeSlackSocket, SocketSender
from tests.fakes.slack_app import SlackApp, slack_app

ACK_LIMIT = 3.0  # Slack's own deadline


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[SlackApp]:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, mode="socket"
    ) as harness:  # fmt: skip
        yield harness


def _socket(app: SlackApp) -> FakeSlackSocket:
    assert app.socket is not None
    return app.socket


async def test_connects_with_the_app_token_and_acks_every_envelope_within_3_s(app: SlackApp) -> None:
    [opened] = app.fake.find("apps.connections.open")
    assert opened.token == app.fake.app_token  # the app-level token, not the bot token
    sent = [await app.slack.command("/imagine", f"cube {i}") for i in range(5)]
    envelopes = [e for e in _socket(app).envelopes.values()]
    assert len(envelopes) == 5 and all(e.acked_at is not None for e in envelopes)
    slowest = max(e.ack_seconds or 0 for e in envelopes)
    assert slowest < ACK_LIMIT, slowest
    await app.replies(5)
    assert sorted(j.request.prompt for j in await app.jobs()) == [f"cube {i}" for i in range(5)]
    assert {j.request.origin.request_id for j in await app.jobs()} == {s["trigger_id"] for s in sent}


async def test_disconnect_envelope_moves_to_a_new_connection_without_losing_a_command(
    app: SlackApp,
) -> None:
    socket = _socket(app)
    await app.slack.command("/imagine", "before")
    await socket.disconnect()  # Slack's routine refresh
    await socket.wait_connected(2)
    assert len(app.fake.find("apps.connections.open")) == 2  # a fresh URL for the new socket
    await app.slack.command("/imagine", "after")
    await app.replies(2)
    assert sorted(j.request.prompt for j in await app.jobs()) == ["after", "before"]
    assert [c.ticket for c in socket.connections][0] != socket.connections[1].ticket


async def test_dropped_socket_reconnects_and_a_resent_envelope_is_not_worked_twice(
    app: SlackApp,
) -> None:
    socket = _socket(app)
    client = app.adapter.socket.handler.client  # type: ignore[union-attr]
    client.ping_interval = 0.2  # how often the client checks its connection (10 s in service)
    assert isinstance(app.slack, SocketSender)
    first = await app.slack.command("/imagine", "only once")
    envelope = app.slack.last
    assert envelope is not None
    await socket.drop()
    await socket.wait_connected(2, timeout=15)
    # Slack re-sends an envelope it thinks was lost, with retry_attempt raised: same id
    again = await socket.send("slash_commands", envelope.payload, retry_attempt=1)
    again.acked_at = None
    await socket.send("slash_commands", envelope.payload, retry_attempt=2, envelope_id=again.id)
    await socket.acked(again)
    await app.slack.command("/imagine", "after the drop")
    await app.replies(2)
    await asyncio.sleep(0.2)
    jobs = await app.jobs()
    assert sorted(j.request.prompt for j in jobs) == ["after the drop", "only once"]
    assert len(app.fake.find("response")) == 2  # the re-sent envelope got no second reply
    assert [j.request.origin.request_id for j in jobs if j.request.prompt == "only once"] == [
        first["trigger_id"]
    ]


async def test_envelope_never_acked_is_resent_on_the_next_connection_and_done_once(
    app: SlackApp,
) -> None:
    """Like Slack: an envelope whose connection went before the ack comes again, retried."""
    socket = _socket(app)
    client = app.adapter.socket.handler.client  # type: ignore[union-attr]
    client.ping_interval = 0.2
    envelope = await socket.send("slash_commands", {
        "token": "legacy", "team_id": "T0001", "channel_id": "C0001", "user_id": "U0001",
        "command": "/imagine", "text": "in flight", "api_app_id": "A0001",
        "response_url": app.fake.response_url(), "trigger_id": "1.2.inflight",
    })  # fmt: skip
    await socket.acked(envelope)
    envelope.acked_at = None  # pretend the ack was lost with the connection
    await socket.drop()
    await socket.wait_connected(2, timeout=15)
    await socket.acked(envelope)
    assert envelope.sends == 2 and envelope.retry_attempt == 1
    await app.replies(1)
    await asyncio.sleep(0.2)
    assert [j.request.prompt for j in await app.jobs()] == ["in flight"]
    assert len(app.fake.find("response")) == 1
