"""A local Slack: the Web API methods gouache calls, file uploads and response_url posts.

``FakeSlack`` records every call (method, arguments, token, arrival time) so tests assert
what the bot posted, and ``fail_next`` answers 429 with ``Retry-After``. Channels in
``not_member`` answer ``not_in_channel`` as Slack does for a bot that was never invited.
Files are served the way a real network delivers them: in ``chunk`` byte pieces with a pause
between, over a real loopback socket; ``add_file(..., html=True)`` serves Slack's sign-in page
instead and ``short_by`` ends the body early. ``apps.connections.open`` (with the app-level
token) hands out the ``ws://`` URL of a ``FakeSlackSocket``.

``Payloads`` builds what Slack sends an app (slash commands, events, button presses, modal
submissions, message shortcuts); ``SlackSender`` posts them to the HTTP endpoint signed (v0
HMAC over ``v0:<timestamp>:<body>``), with an optional ``X-Slack-Retry-Num``;
``tests.fakes.fake_slack_socket.SocketSender`` sends the same payloads as Socket Mode envelopes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

__all__ = ["FakeSlack", "SlackCall", "SlackSender", "Payloads", "sign", "blocks_of"]

_ids = itertools.count(1)


@dataclass
class SlackCall:
    method: str  # "chat.postMessage", "upload", "response"
    args: dict[str, Any]
    token: str = ""
    status: int = 200
    data: bytes = b""  # uploaded file bytes
    extra: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass
class _File:
    data: bytes
    chunk: int = 16 * 1024
    pause: float = 0.0005
    html: bool = False
    short_by: int = 0
    length: bool = False  # send Content-Length (else chunked transfer encoding)


class FakeSlack:
    """Use as ``async with FakeSlack() as fake:``; set ``slack.api_base = fake.api_base``."""

    def __init__(self, bot_token: str = "xoxb-fake", app_token: str = "xapp-1-fake") -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.calls: list[SlackCall] = []
        self.files: dict[str, _File] = {}  # downloadable files (uploads on messages, modals)
        self.downloads: list[str] = []  # file ids fetched, in order
        self.served: dict[str, int] = {}  # file id -> bytes written before the client stopped
        self.not_member: set[str] = set()  # channels the bot was never invited to
        self.socket_url: Callable[[], str] | None = None  # set by FakeSlackSocket
        self._failures: list[tuple[str, int, float, str]] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/files/{id}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/api/"

    def response_url(self) -> str:
        return f"{self.base}/response/{next(_ids)}"

    def add_file(
        self, data: bytes, name: str = "depth.png", *, chunk: int = 16 * 1024,
        pause: float = 0.0005, html: bool = False, short_by: int = 0, length: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """A file object as Slack puts it on a message event or in a modal's file_input."""
        file_id = f"F{next(_ids):06d}"
        self.files[file_id] = _File(data, chunk, pause, html, short_by, length)
        url = f"{self.base}/files/{file_id}"
        return {"id": file_id, "name": name, "size": len(data), "mimetype": "image/png",
                "url_private": url, "url_private_download": url}  # fmt: skip

    def fail_next(
        self, method: str, status: int = 429, retry_after: float = 0, *, error: str = "",
        times: int = 1,
    ) -> None:  # fmt: skip
        """The next ``times`` calls of ``method`` fail: 429 ``ratelimited`` with
        ``Retry-After`` by default, else ``{"ok": false, "error": error}`` with ``status``."""
        for _ in range(times):
            self._failures.append((method, status, retry_after, error))

    def find(self, method: str) -> list[SlackCall]:
        """The calls of ``method`` that succeeded."""
        return [c for c in self.calls if c.method == method and c.status == 200
                and c.extra.get("response", {}).get("ok", True)]  # fmt: skip

    def refused(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method and c not in self.find(method)]

    async def wait_for(self, predicate: Callable[[FakeSlack], Any], timeout: float = 10.0) -> Any:
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    async def _record(self, call: SlackCall) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    # --- handlers --------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)  # slack_sdk sends some methods' args here
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        call = SlackCall(method, dict(args), token)
        for failure in self._failures:
            if failure[0] == method:
                self._failures.remove(failure)
                call.status = failure[1] if failure[1] != 200 else 599
                await self._record(call)
                return web.json_response({"ok": False, "error": failure[3] or "ratelimited"},
                                         status=failure[1],
                                         headers={"Retry-After": str(int(failure[2]))})  # fmt: skip
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != wanted:
            call.status = 401
            await self._record(call)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = self._answer(method, call.args)
        call.extra["response"] = body
        await self._record(call)
        return web.json_response(body)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"{time.time():.6f}"
        channel = str(args.get("channel") or args.get("channel_id") or "")
        if channel in self.not_member and method in (
            "chat.postMessage", "chat.update", "chat.postEphemeral", "files.completeUploadExternal"
        ):  # fmt: skip
            return {"ok": False, "error": "not_in_channel"}
        if method == "apps.connections.open":
            if self.socket_url is None:
                return {"ok": False, "error": "socket_mode_not_enabled"}
            return {"ok": True, "url": self.socket_url()}
        if method == "views.open":
            return {"ok": True, "view": {**_json(args.get("view")), "id": f"V{next(_ids):06d}"}}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args.get("users", "")).split(",")[0]}}
        if method == "auth.test":
            return {"ok": True, "url": f"{self.base}/", "team": "test", "user": "gouache",
                    "team_id": "T0001", "user_id": "UBOT", "bot_id": "BBOT"}  # fmt: skip
        if method == "chat.postMessage":
            return {"ok": True, "channel": args.get("channel"), "ts": ts,
                    "message": {"text": args.get("text"), "ts": ts}}  # fmt: skip
        if method == "chat.update":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": ts}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(_ids):06d}"
            return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = args.get("files")
            files = json.loads(files) if isinstance(files, str) else files or []
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}
        return {"ok": False, "error": "unknown_method"}

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        await self._record(SlackCall("upload", {"file_id": request.match_info["file_id"]},
                                     data=data))  # fmt: skip
        return web.Response(text=f"OK - {len(data)}")

    async def _response(self, request: web.Request) -> web.Response:
        args = await request.json()
        await self._record(SlackCall("response", args, extra={"url": str(request.url)}))
        return web.Response(text="ok")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.Response(status=403)
        file = self.files.get(request.match_info["id"])
        if file is None:
            return web.Response(status=404)
        self.downloads.append(request.match_info["id"])
        if file.html:  # what Slack serves a token without files:read
            page = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"
            return web.Response(body=page, content_type="text/html")
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        data = file.data[: len(file.data) - file.short_by]
        if file.length:
            response.content_length = len(data)
        else:
            response.enable_chunked_encoding()  # no Content-Length: the size check must stream
        await response.prepare(request)
        file_id = request.match_info["id"]
        self.served[file_id] = 0
        try:
            for start in range(0, len(data), file.chunk):
                await response.write(data[start : start + file.chunk])
                self.served[file_id] += len(data[start : start + file.chunk])
                await asyncio.sleep(file.pause)
            await response.write_eof()
        except ConnectionError:  # the client stopped reading (a refused download): fine
            pass
        return response


def _json(value: Any) -> dict[str, Any]:
    value = json.loads(value) if isinstance(value, str) else value
    return value if isinstance(value, dict) else {}


def blocks_of(call: SlackCall) -> list[dict[str, Any]]:
    blocks = call.args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


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
