"""What Slack sends an app, and how: ``Payloads`` builds it, ``SlackSender`` posts it signed.

Slash commands, events, button presses, modal submissions and message shortcuts as dicts;
``SlackSender`` posts them to the HTTP endpoint signed (v0 HMAC over
``v0:<timestamp>:<body>``) with an optional ``X-Slack-Retry-Num``, and
``tests.fakes.fake_slack_socket.SocketSender`` sends the same ones as Socket Mode envelopes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp

if TYPE_CHECKING:
    from tests.fakes.fake_slack import FakeSlack

__all__ = ["Payloads", "SlackSender", "sign"]

_ids = itertools.count(1000)


def sign(secret: str, body: str, timestamp: str) -> str:
    base = f"v0:{timestamp}:{body}".encode("utf-8", "surrogateescape")
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class Payloads:
    """What Slack sends an app, as dicts; ``send(kind, payload, **options)`` delivers them.

    ``kind`` is the Socket Mode envelope type: ``slash_commands`` (form fields),
    ``events_api`` (the event envelope) or ``interactive`` (buttons, modals, shortcuts).
    """

    fake: FakeSlack

    async def send(self, kind: str, payload: dict[str, Any], **options: Any) -> Any:
        raise NotImplementedError

    async def command(
        self, command: str, text: str, *, user: str = "U0001", channel: str = "C0001",
        trigger_id: str | None = None, **options: Any,
    ) -> dict[str, Any]:  # fmt: skip
        form: dict[str, Any] = {
            "token": "legacy", "team_id": "T0001", "team_domain": "test", "channel_id": channel,
            "channel_name": "general", "user_id": user, "user_name": "someone",
            "command": command, "text": text, "api_app_id": "A0001",
            "response_url": self.fake.response_url(),
            "trigger_id": trigger_id or f"{next(_ids)}.{int(time.time())}.abcdef",
        }  # fmt: skip
        form["status"], form["reply"] = await self.send("slash_commands", dict(form), **options)
        return form

    async def press(
        self, value: str, *, user: str = "U0001", channel: str = "C0001", **options: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": "block_actions", "team": {"id": "T0001", "domain": "test"},
            "user": {"id": user, "username": "someone", "team_id": "T0001"},
            "api_app_id": "A0001", "token": "legacy", "container": {"type": "message"},
            "trigger_id": f"{next(_ids)}.{int(time.time())}.fedcba",
            "channel": {"id": channel, "name": "general"},
            "response_url": self.fake.response_url(),
            "actions": [{"type": "button", "action_id": value, "block_id": "b1",
                         "text": {"type": "plain_text", "text": "Reroll"}, "value": value,
                         "action_ts": f"{time.time():.6f}"}],
        }  # fmt: skip
        payload["status"], payload["reply"] = await self.send("interactive", dict(payload), **options)
        return payload

    async def mention(
        self, text: str, *, files: list[dict[str, Any]] | None = None, user: str = "U0001",
        channel: str = "C0001", event_id: str | None = None, thread_ts: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:  # fmt: skip
        event: dict[str, Any] = {"type": "app_mention", "user": user, "text": text,
                                 "ts": f"{time.time():.6f}", "channel": channel,
                                 "event_ts": f"{time.time():.6f}"}  # fmt: skip
        if files:
            event["files"] = files
        if thread_ts:
            event["thread_ts"] = thread_ts
        envelope: dict[str, Any] = {
            "token": "legacy", "team_id": "T0001", "api_app_id": "A0001", "event": event,
            "type": "event_callback", "event_id": event_id or f"Ev{next(_ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}],
        }  # fmt: skip
        envelope["status"], envelope["reply"] = await self.send("events_api", dict(envelope),
                                                                **options)  # fmt: skip
        return envelope

    async def message(
        self, text: str, *, thread_ts: str | None = None, user: str = "U0001", channel: str = "C0001",
        event_id: str | None = None, **fields: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """A ``message`` event (the app subscribes to ``message.channels``): in a thread when
        ``thread_ts`` is given; ``fields`` (``bot_id``, ``subtype``) are added to the event."""
        event: dict[str, Any] = {"type": "message", "channel_type": "channel", "user": user,
                                 "text": text, "ts": f"{time.time():.6f}", "channel": channel,
                                 "event_ts": f"{time.time():.6f}", **fields}  # fmt: skip
        if thread_ts:
            event["thread_ts"] = thread_ts
        envelope: dict[str, Any] = {
            "token": "legacy", "team_id": "T0001", "api_app_id": "A0001", "event": event,
            "type": "event_callback", "event_id": event_id or f"Ev{next(_ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}],
        }  # fmt: skip
        envelope["status"], envelope["reply"] = await self.send("events_api", dict(envelope))
        return envelope

    async def submit(
        self, view: dict[str, Any], *, prompt: str | None = None, options: str | None = None,
        files: list[dict[str, Any]] | None = None, user: str = "U0001", **send: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """Submit a modal the bot opened (``view`` as recorded by views.open), filled in."""
        values: dict[str, Any] = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element = block["element"]
            typed = {"prompt": prompt, "options": options}.get(block["block_id"])
            if element["type"] == "file_input":
                state: dict[str, Any] = {"type": "file_input", "files": files or []}
            else:
                value = typed if typed is not None else element.get("initial_value")
                state = {"type": "plain_text_input", "value": value}
            values[block["block_id"]] = {element["action_id"]: state}
        payload: dict[str, Any] = {
            "type": "view_submission", "team": {"id": "T0001", "domain": "test"},
            "user": {"id": user, "username": "someone", "team_id": "T0001"},
            "api_app_id": "A0001", "token": "legacy",
            "trigger_id": f"{next(_ids)}.{int(time.time())}.view",
            "view": {**view, "state": {"values": values}, "hash": f"h{next(_ids)}"},
            "response_urls": [],
        }  # fmt: skip
        payload["status"], payload["reply"] = await self.send("interactive", dict(payload), **send)
        return payload

    async def shortcut(
        self, message: dict[str, Any], *, user: str = "U0001", channel: str = "C0001",
        callback_id: str = "gouache_use_as_depth", **options: Any,
    ) -> dict[str, Any]:  # fmt: skip
        payload: dict[str, Any] = {
            "type": "message_action", "callback_id": callback_id,
            "team": {"id": "T0001", "domain": "test"},
            "user": {"id": user, "username": "someone", "team_id": "T0001"},
            "channel": {"id": channel, "name": "general"}, "api_app_id": "A0001",
            "token": "legacy", "trigger_id": f"{next(_ids)}.{int(time.time())}.short",
            "response_url": self.fake.response_url(), "message_ts": message.get("ts", "1.0"),
            "message": message, "action_ts": f"{time.time():.6f}",
        }  # fmt: skip
        payload["status"], payload["reply"] = await self.send("interactive", dict(payload), **options)
        return payload


class SlackSender(Payloads):
    """Sends what Slack sends to an app's request URL, signed with ``signing_secret``."""

    def __init__(self, url: str, signing_secret: str, fake: FakeSlack) -> None:
        self.url = url
        self.secret = signing_secret
        self.fake = fake

    async def send(self, kind: str, payload: dict[str, Any], **options: Any) -> tuple[int, str]:
        if kind == "slash_commands":
            return await self.post(urlencode(payload), "application/x-www-form-urlencoded", **options)
        if kind == "interactive":
            return await self.post(urlencode({"payload": json.dumps(payload)}),
                                   "application/x-www-form-urlencoded", **options)  # fmt: skip
        return await self.post(json.dumps(payload), "application/json", **options)

    async def post(
        self,
        body: str | bytes,
        content_type: str,
        *,
        retry_num: int | None = None,
        timestamp: str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        data = body.encode() if isinstance(body, str) else body
        ts = timestamp if timestamp is not None else str(int(time.time()))
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature
            if signature is not None
            else sign(self.secret, data.decode("utf-8", "surrogateescape"), ts),
        }
        if retry_num is not None:
            sent["X-Slack-Retry-Num"] = str(retry_num)
            sent["X-Slack-Retry-Reason"] = "http_timeout"
        if headers is not None:
            sent = headers
        async with (
            aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as session,
            session.post(self.url, data=data, headers=sent) as resp,
        ):
            return resp.status, await resp.text()
