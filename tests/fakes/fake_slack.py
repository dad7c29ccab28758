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
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.slack_payloads import Payloads, SlackSender, sign

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
    gate: asyncio.Event | None = None  # the body is held back until the test sets it


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
        gate: asyncio.Event | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A file object as Slack puts it on a message event or in a modal's file_input."""
        file_id = f"F{next(_ids):06d}"
        self.files[file_id] = _File(data, chunk, pause, html, short_by, length, gate)
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
            if file.gate is not None:
                await file.gate.wait()
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

