"""A local Discord: enough REST API v10 and gateway for a real ``discord.Client``.

The client logs in (GET /users/@me), finds the gateway through GET /gateway/bot, identifies
over a websocket and receives the INTERACTION_CREATE events a test injects. Every REST call is
recorded with its JSON payload, uploaded files and ``allowed_mentions``, so tests assert what
the bot posted. ``fail_next`` makes the next matching call answer 413, 429 or any status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import discord_payloads as payloads
from tests.fakes.discord_payloads import snowflake

__all__ = ["FakeDiscord", "Call", "snowflake"]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Exactly ``application/json``: discord.py treats anything else (a charset) as text."""
    body = json.dumps(data).encode()
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


@dataclass
class Call:
    """One REST request the client made."""

    method: str
    path: str
    json: dict[str, Any] | list[Any] | None
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (filename, bytes)
    status: int = 200

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        return self.json.get("allowed_mentions") if isinstance(self.json, dict) else None

    @property
    def content(self) -> str | None:
        return self.json.get("content") if isinstance(self.json, dict) else None


@dataclass
class _Failure:
    match: Callable[[str, str], bool]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class FakeDiscord:
    """Use as ``async with FakeDiscord() as fake:``; point the client at ``fake.api_base``."""

    def __init__(self, *, application_id: str = "100000000000000001", bot_id: str = "") -> None:
        self.application_id = application_id
        self.bot_id = bot_id or application_id
        self.calls: list[Call] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> commands
        self.messages: dict[str, dict[str, Any]] = {}
        self.identified = asyncio.Event()
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._failures: list[_Failure] = []
        self._uploads: dict[str, bytes] = {}
        self._answered: set[str] = set()  # interaction ids with an initial response
        self._token_channel: dict[str, str] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def fail_next(
        self,
        method: str,
        path_contains: str,
        status: int,
        *,
        retry_after: float = 0.05,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching calls with ``status`` (413, 429, 500...)."""
        body: dict[str, Any] = {"message": "fake failure", "code": 0}
        headers: dict[str, str] = {}
        if status == 429:
            body = {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": False,
            }
            headers = {"Retry-After": str(retry_after), "Via": "1.1 google",
                       "X-RateLimit-Scope": "user"}  # fmt: skip
        elif status == 413:
            body = {"message": "Request entity too large", "code": 40005}
        for _ in range(times):
            self._failures.append(
                _Failure(lambda m, p: m == method and path_contains in p, status, body, headers)
            )

    # --- what a test reads -----------------------------------------------------------------
    def find(self, method: str | None = None, contains: str = "") -> list[Call]:
        return [
            c for c in self.calls
            if (method is None or c.method == method) and contains in c.path and c.status < 300
        ]  # fmt: skip

    async def wait_for(self, predicate: Callable[[FakeDiscord], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate(self)`` is truthy (re-checked after every recorded call)."""
        async with self._changed:
            result = await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self)), timeout
            )
        return result

    # --- injecting events ------------------------------------------------------------------
    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await asyncio.wait_for(self.identified.wait(), 10)
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        for ws in list(self._sockets):
            await ws.send_str(json.dumps(frame))

    def _base_interaction(
        self, kind: int, user_id: str, channel_id: str, guild_id: str | None, age: float
    ) -> dict[str, Any]:
        payload = payloads.interaction(
            kind, self.application_id, user_id, channel_id, guild_id, age
        )
        self._token_channel[payload["token"]] = channel_id
        return payload

    async def slash_command(
        self,
        name: str,
        options: dict[str, Any],
        *,
        user_id: str = "300000000000000001",
        channel_id: str = "400000000000000001",
        guild_id: str | None = "500000000000000001",
        attachments: dict[str, dict[str, Any]] | None = None,
        age: float = 0.0,
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send an application command; re-send the returned payload to simulate a duplicate."""
        if payload is None:
            payload = self._base_interaction(2, user_id, channel_id, guild_id, age)
            scope = guild_id if guild_id in self.commands else "global"
            known = {c["name"]: c for c in self.commands.get(scope, [])}
            types = {o["name"]: o["type"] for o in known.get(name, {}).get("options", [])}
            opts = [{"name": k, "type": types.get(k, 3), "value": v} for k, v in options.items()]
            data: dict[str, Any] = {
                "id": known.get(name, {}).get("id", snowflake()), "name": name, "type": 1,
                "options": opts,
            }  # fmt: skip
            if guild_id:
                data["guild_id"] = guild_id
            if attachments:
                data["resolved"] = {"attachments": attachments}
            payload["data"] = data
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def press_button(
        self,
        custom_id: str,
        *,
        message_id: str | None = None,
        user_id: str = "300000000000000001",
        channel_id: str = "400000000000000001",
        guild_id: str | None = "500000000000000001",
    ) -> dict[str, Any]:
        payload = self._base_interaction(3, user_id, channel_id, guild_id, 0.0)
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        message = self.messages.get(message_id or "")
        if message is None:  # discord.py rebuilds the button from the message: include it
            button = {"type": 2, "style": 2, "label": "button", "custom_id": custom_id}
            row = {"type": 1, "components": [button]}
            message = self._message(channel_id, {"content": "", "components": [row]})
        payload["message"] = message
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def attachment(
        self, filename: str, data: bytes, content_type: str = "image/png"
    ) -> dict[str, Any]:
        """A resolved attachment whose URL this fake serves (GET /attachments/<id>)."""
        att_id = snowflake()
        self._uploads[att_id] = data
        return {"id": att_id, "filename": filename, "size": len(data),
                "url": f"http://127.0.0.1:{self.port}/api/v10/attachments/{att_id}",
                "proxy_url": f"http://127.0.0.1:{self.port}/api/v10/attachments/{att_id}",
                "content_type": content_type}  # fmt: skip

    # --- gateway ---------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    await self._ready(ws)
                elif op == 6:
                    self._seq += 1
                    await ws.send_str(
                        json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}})
                    )
                    self.identified.set()
        finally:
            self._sockets.remove(ws)
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        self._seq += 1
        ready = {
            "v": 10, "user": self._bot_user(), "guilds": [], "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url, "private_channels": [],
            "application": {"id": self.application_id, "flags": 0},
        }  # fmt: skip
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        self.identified.set()

    def _bot_user(self) -> dict[str, Any]:
        return payloads.user(self.bot_id, bot=True)

    # --- REST ------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        payload, files = await self._read_body(request)
        call = Call(request.method, path, payload, files)
        for failure in self._failures:
            if failure.match(request.method, path):
                self._failures.remove(failure)
                call.status = failure.status
                await self._record(call)
                return _json(failure.body, status=failure.status, headers=failure.headers)
        response = self._route(request.method, path, payload, files, request)
        call.status = response.status
        await self._record(call)
        return response

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        if not request.can_read_body:
            return None, []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            files = [
                (v.filename, v.file.read()) for k, v in form.items()
                if k.startswith("files[") and hasattr(v, "file")
            ]  # fmt: skip
            raw = form.get("payload_json")
            return (json.loads(raw) if isinstance(raw, str) else None), files
        text = await request.text()
        return (json.loads(text) if text else None), []

    def _route(
        self, method: str, path: str, payload: Any, files: list[tuple[str, bytes]],
        request: web.Request,
    ) -> web.StreamResponse:  # fmt: skip
        parts = path.strip("/").split("/")
        if path == "/users/@me":
            if request.headers.get("Authorization", "") != "Bot fake-token":
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            return _json(self._bot_user())
        if path == "/oauth2/applications/@me":
            return _json({"id": self.application_id, "name": "gouache", "description": "",
                          "icon": None, "bot_public": True, "bot_require_code_grant": False,
                          "owner": self._bot_user(), "verify_key": "0" * 64, "flags": 0})  # fmt: skip
        if path == "/gateway/bot":
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            return _json({"url": self.gateway_url, "shards": 1,
                                      "session_start_limit": limit})  # fmt: skip
        if path == "/gateway":
            return _json({"url": self.gateway_url})
        if parts[0] == "attachments" and method == "GET":
            return web.Response(body=self._uploads.get(parts[1], b""), content_type="image/png")
        if parts[0] == "applications" and "commands" in parts:
            return self._commands(method, parts, payload)
        if parts[0] == "interactions":  # /interactions/{id}/{token}/callback
            if parts[1] in self._answered:  # as Discord: one initial response per interaction
                message = {"message": "Interaction has already been acknowledged.", "code": 40060}
                return _json(message, status=400)
            self._answered.add(parts[1])
            return _json({"interaction": {"id": parts[1], "type": (payload or {}).get("type", 5)}})
        if parts[0] == "webhooks":  # /webhooks/{app}/{token}[/messages/{id}]
            return self._webhook(method, parts, payload, files)
        if parts[0] == "channels" and parts[2:3] == ["messages"]:
            return self._channel_message(method, parts, payload, files)
        return _json({"message": f"fake: no route {method} {path}", "code": 0}, status=404)

    def _commands(self, method: str, parts: list[str], payload: Any) -> web.Response:
        scope = parts[3] if parts[2] == "guilds" else "global"
        if method == "PUT":
            stored = [dict(c, id=snowflake(), application_id=self.application_id, version="1")
                      for c in payload or []]  # fmt: skip
            if scope != "global":
                for c in stored:
                    c["guild_id"] = scope
            self.commands[scope] = stored
            return _json(stored)
        return _json(self.commands.get(scope, []))

    def _message(
        self, channel_id: str, payload: dict[str, Any],
        files: Sequence[tuple[str, bytes]] = (), message_id: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        attachments = [
            {"id": snowflake(), "filename": name, "size": len(data),
             "url": f"http://127.0.0.1:{self.port}/cdn/{name}", "proxy_url": "", "content_type": ""}
            for name, data in files
        ]  # fmt: skip
        message = payloads.message(channel_id, payload, self._bot_user(), attachments, message_id)
        self.messages[message["id"]] = message
        return message

    def _webhook(
        self, method: str, parts: list[str], payload: Any, files: list[tuple[str, bytes]]
    ) -> web.Response:
        token = parts[2]
        target = parts[4] if len(parts) > 4 else None  # a message id or "@original"
        key = f"original-{token}" if target == "@original" else target
        payload = payload or {}
        if method == "PATCH" and key in self.messages:
            message = self.messages[key]
            fresh = self._message(message["channel_id"], payload, files, message["id"])
            message.update({k: fresh[k] for k in ("content", "components", "embeds", "flags")
                            if k in payload})  # fmt: skip
            if files or "attachments" in payload:
                message["attachments"] = fresh["attachments"]
            self.messages[message["id"]] = message
        else:
            message = self._message(self._token_channel.get(token, "0"), payload, files)
        if key:
            self.messages[key] = message
        return _json(message)

    def _channel_message(
        self, method: str, parts: list[str], payload: Any, files: list[tuple[str, bytes]]
    ) -> web.Response:
        message_id = parts[3] if len(parts) > 3 else None
        return _json(self._message(parts[1], payload or {}, files, message_id))
