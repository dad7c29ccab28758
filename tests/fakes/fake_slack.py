"""A local Slack: the Web API methods gouache calls, file uploads and response_url posts.

``FakeSlack`` records every call (method, arguments, token) so tests assert what the bot
posted, and ``fail_next`` answers 429 with ``Retry-After``. ``SlackSender`` plays Slack's side
of the HTTP endpoint: correctly signed slash commands, button presses and events (v0 HMAC
over ``v0:<timestamp>:<body>``), with an optional ``X-Slack-Retry-Num``.
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

__all__ = ["FakeSlack", "SlackCall", "SlackSender", "sign"]

_ids = itertools.count(1)


@dataclass
class SlackCall:
    method: str  # "chat.postMessage", "upload", "response"
    args: dict[str, Any]
    token: str = ""
    status: int = 200
    data: bytes = b""  # uploaded file bytes
    extra: dict[str, Any] = field(default_factory=dict)


class FakeSlack:
    """Use as ``async with FakeSlack() as fake:``; set ``slack.api_base = fake.api_base``."""

    def __init__(self, bot_token: str = "xoxb-fake") -> None:
        self.bot_token = bot_token
        self.calls: list[SlackCall] = []
        self.files: dict[str, bytes] = {}  # downloadable files (for app_mention uploads)
        self._failures: list[tuple[str, int, float]] = []
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

    def add_file(self, data: bytes, name: str = "depth.png") -> dict[str, Any]:
        """A file object as Slack puts it on a message event."""
        file_id = f"F{next(_ids):06d}"
        self.files[file_id] = data
        url = f"{self.base}/files/{file_id}"
        return {"id": file_id, "name": name, "size": len(data), "mimetype": "image/png",
                "url_private": url, "url_private_download": url}  # fmt: skip

    def fail_next(self, method: str, status: int = 429, retry_after: float = 0) -> None:
        self._failures.append((method, status, retry_after))

    def find(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method and c.status == 200]

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
                call.status = failure[1]
                await self._record(call)
                return web.json_response({"ok": False, "error": "ratelimited"}, status=failure[1],
                                         headers={"Retry-After": str(int(failure[2]))})  # fmt: skip
        if token != self.bot_token:
            call.status = 401
            await self._record(call)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = self._answer(method, call.args)
        call.extra["response"] = body
        await self._record(call)
        return web.json_response(body)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"{time.time():.6f}"
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

    async def _download(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.Response(status=403)
        return web.Response(body=self.files.get(request.match_info["id"], b""))


def sign(secret: str, body: str, timestamp: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackSender:
    """Sends what Slack sends to an app's request URL, signed with ``signing_secret``."""

    def __init__(self, url: str, signing_secret: str, fake: FakeSlack) -> None:
        self.url = url
        self.secret = signing_secret
        self.fake = fake

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        retry_num: int | None = None,
        timestamp: str | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        ts = timestamp if timestamp is not None else str(int(time.time()))
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature
            if signature is not None
            else sign(self.secret, body, ts),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, data=body.encode(), headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    async def command(
        self, command: str, text: str, *, user: str = "U0001", channel: str = "C0001",
        trigger_id: str | None = None, **kwargs: Any,
    ) -> dict[str, str]:  # fmt: skip
        form = {
            "token": "legacy", "team_id": "T0001", "team_domain": "test", "channel_id": channel,
            "channel_name": "general", "user_id": user, "user_name": "someone",
            "command": command, "text": text, "api_app_id": "A0001",
            "response_url": self.fake.response_url(),
            "trigger_id": trigger_id or f"{next(_ids)}.{int(time.time())}.abcdef",
        }  # fmt: skip
        form["status"], form["reply"] = map(str, await self.post(
            urlencode(form), "application/x-www-form-urlencoded", **kwargs))  # fmt: skip
        return form

    async def press(
        self, value: str, *, user: str = "U0001", channel: str = "C0001", **kwargs: Any
    ) -> dict[str, Any]:
        payload = {
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
        status, reply = await self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded",
            **kwargs,
        )  # fmt: skip
        payload["status"], payload["reply"] = status, reply
        return payload

    async def mention(
        self, text: str, *, files: list[dict[str, Any]] | None = None, user: str = "U0001",
        channel: str = "C0001", event_id: str | None = None, **kwargs: Any,
    ) -> dict[str, Any]:  # fmt: skip
        event: dict[str, Any] = {"type": "app_mention", "user": user, "text": text,
                                 "ts": f"{time.time():.6f}", "channel": channel,
                                 "event_ts": f"{time.time():.6f}"}  # fmt: skip
        if files:
            event["files"] = files
        envelope = {
            "token": "legacy", "team_id": "T0001", "api_app_id": "A0001", "event": event,
            "type": "event_callback", "event_id": event_id or f"Ev{next(_ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}],
        }  # fmt: skip
        status, reply = await self.post(json.dumps(envelope), "application/json", **kwargs)
        envelope["status"], envelope["reply"] = status, reply
        return envelope
