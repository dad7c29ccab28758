"""A local Discord: enough REST API v10 and gateway for a real ``discord.Client``.

The client logs in (GET /users/@me), finds the gateway through GET /gateway/bot, identifies
over a websocket and receives the INTERACTION_CREATE events a test injects. Every REST call is
recorded with its JSON payload, uploaded files and ``allowed_mentions``, so tests assert what
the bot posted. ``fail_next`` makes the next matching call answer 413, 429 or any status.

It checks what Discord checks (``discord_checks``), so a bug there fails a test: the bot token
on every route (and in IDENTIFY), JSON content types, 2,000 characters of content, 10
attachments, the upload limit (413, code 40005), 25 choices, command definitions, option values
against the registered min/max and choices (``OptionRejected``: Discord's client would not send
them), the 3-second first response (then 404, code 10062) and the 15-minute interaction token
(then 401, code 50027).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import discord_checks as checks
from tests.fakes import discord_payloads as payloads
from tests.fakes.discord_checks import OptionRejected
from tests.fakes.discord_gateway import FakeGateway
from tests.fakes.discord_payloads import snowflake, snowflake_time

__all__ = ["FakeDiscord", "Call", "snowflake", "OptionRejected", "UNBOOSTED_LIMIT"]

UNBOOSTED_LIMIT = 10 * 1024 * 1024  # bytes a message may upload in an unboosted guild
TOKEN_LIFETIME = 15 * 60.0
_UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}
_UNKNOWN_INTERACTION = {"message": "Unknown interaction", "code": 10062}
_INVALID_WEBHOOK_TOKEN = {"message": "Invalid Webhook Token", "code": 50027}
_TOO_LARGE = {"message": "Request entity too large", "code": 40005}
_BAD_JSON = {"message": "The request body contains invalid JSON.", "code": 50109}


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


class FakeDiscord(FakeGateway):
    """Use as ``async with FakeDiscord() as fake:``; point the client at ``fake.api_base``."""

    def __init__(
        self, *, application_id: str = "100000000000000001", bot_id: str = "",
        token: str = "fake-token", upload_limit: int = UNBOOSTED_LIMIT,
        advertised_limit: int | None = None, response_window: float = 3.0,
    ) -> None:  # fmt: skip
        self.application_id = application_id
        self.bot_id = bot_id or application_id
        self.token = token
        self.upload_limit = upload_limit  # what a message may really upload (413 above it)
        self.advertised_limit = advertised_limit  # attachment_size_limit sent (default: the same)
        self.response_window = response_window  # seconds for the first response
        self.autocompleted: dict[str, list[dict[str, Any]]] = {}  # interaction id -> choices
        self.dm_channels: dict[str, str] = {}  # DM channel id -> recipient user id
        self.refuse_dms = False  # answer 403 50007, as for a user who blocks DMs
        self._dispatched: dict[str, float] = {}  # interaction id -> monotonic time sent
        self._interaction_token: dict[str, str] = {}  # interaction id -> its token
        self._token_born: dict[str, float] = {}  # token -> unix time of its interaction
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
            body = _TOO_LARGE
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
    async def _send_interaction(self, payload: dict[str, Any]) -> None:
        self._dispatched[payload["id"]] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)

    def _base_interaction(
        self, kind: int, user_id: str, channel_id: str, guild_id: str | None, age: float,
        roles: Sequence[str] = (),
    ) -> dict[str, Any]:  # fmt: skip
        limit = self.advertised_limit or self.upload_limit
        payload = payloads.interaction(
            kind, self.application_id, user_id, channel_id, guild_id, age, roles=roles,
            upload_limit=limit,
        )  # fmt: skip
        self._token_channel[payload["token"]] = channel_id
        self._interaction_token[payload["id"]] = payload["token"]
        self._token_born[payload["token"]] = snowflake_time(payload["id"])
        return payload

    def _command_data(
        self, name: str, options: dict[str, Any], guild_id: str | None, focused: str | None = None
    ) -> dict[str, Any]:
        scope = guild_id if guild_id in self.commands else "global"
        return payloads.command_data(self.commands.get(scope, []), name, options, guild_id, focused)

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
        roles: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Send an application command; re-send the returned payload to simulate a duplicate.

        Options are checked against the registered command first (``OptionRejected``).
        """
        if payload is None:
            payload = self._base_interaction(2, user_id, channel_id, guild_id, age, roles)
            data = self._command_data(name, options, guild_id)
            if attachments:
                data.setdefault("resolved", {})["attachments"] = attachments
            payload["data"] = data
        await self._send_interaction(payload)
        return payload

    async def autocomplete(
        self, name: str, options: dict[str, Any], focused: str, *,
        user_id: str = "300000000000000001", channel_id: str = "400000000000000001",
        guild_id: str | None = "500000000000000001",
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Type into option ``focused``; returns the choices the bot answered with."""
        payload = self._base_interaction(4, user_id, channel_id, guild_id, 0.0)
        payload["data"] = self._command_data(name, options, guild_id, focused)
        await self._send_interaction(payload)
        await self.wait_for(lambda f: payload["id"] in f.autocompleted)
        return self.autocompleted[payload["id"]]

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
        await self._send_interaction(payload)
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

    # --- REST ------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        try:
            payload, files = await self._read_body(request)
        except ValueError:
            payload, files = None, []
            refusal: web.Response | None = _json(_BAD_JSON, status=400)
        else:
            refusal = self._refuse(request, path, payload, files)
        call = Call(request.method, path, payload, files)
        if refusal is not None:
            call.status = refusal.status
            await self._record(call)
            return refusal
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
        """JSON or multipart with a ``payload_json`` part; ValueError for anything else."""
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
        if request.content_type != "application/json":
            raise ValueError(f"content type {request.content_type!r}")
        text = await request.text()
        return (json.loads(text) if text else None), []

    def _refuse(
        self, request: web.Request, path: str, payload: Any, files: list[tuple[str, bytes]]
    ) -> web.Response | None:
        """Discord's checks, before any route runs."""
        parts = path.strip("/").split("/")
        by_token = parts[0] in {"webhooks", "interactions", "attachments"}
        if not by_token and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json(_UNAUTHORIZED, status=401)
        if parts[0] == "interactions" and len(parts) > 3:
            if self._interaction_token.get(parts[1]) != parts[2]:
                return _json(_UNKNOWN_INTERACTION, status=404)
            sent = self._dispatched.get(parts[1], 0.0)
            if parts[1] not in self._answered and time.monotonic() - sent > self.response_window:
                return _json(_UNKNOWN_INTERACTION, status=404)
        born = self._token_born.get(parts[2], time.time()) if len(parts) > 2 else time.time()
        if parts[0] == "webhooks" and time.time() - born > TOKEN_LIFETIME:
            return _json(_INVALID_WEBHOOK_TOKEN, status=401)
        if request.method in {"POST", "PATCH"} and self._is_message(parts):
            message = (payload or {}).get("data", payload) if parts[0] == "interactions" else payload
            problem = checks.check_message(message, len(files))
            if problem:
                return _json(problem, status=400)
            if sum(len(data) for _, data in files) > self.upload_limit:
                return _json(_TOO_LARGE, status=413)
        return None

    @staticmethod
    def _is_message(parts: list[str]) -> bool:
        return parts[0] in {"webhooks", "interactions"} or (
            parts[0] == "channels" and parts[2:3] == ["messages"]
        )

    def _route(
        self, method: str, path: str, payload: Any, files: list[tuple[str, bytes]],
        request: web.Request,
    ) -> web.StreamResponse:  # fmt: skip
        parts = path.strip("/").split("/")
        if path == "/users/@me":
            return _json(self._bot_user())
        if path == "/users/@me/channels" and method == "POST":
            return self._dm_channel(str((payload or {}).get("recipient_id", "")))
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
            return self._callback(parts[1], payload or {})
        if parts[0] == "webhooks":  # /webhooks/{app}/{token}[/messages/{id}]
            return self._webhook(method, parts, payload, files)
        if parts[0] == "channels" and parts[2:3] == ["messages"]:
            return self._channel_message(method, parts, payload, files)
        return _json({"message": f"fake: no route {method} {path}", "code": 0}, status=404)

    def _callback(self, interaction_id: str, payload: dict[str, Any]) -> web.Response:
        if interaction_id in self._answered:  # as Discord: one initial response per interaction
            message = {"message": "Interaction has already been acknowledged.", "code": 40060}
            return _json(message, status=400)
        if payload.get("type") == 8:  # autocomplete result
            choices = (payload.get("data") or {}).get("choices")
            problem = checks.check_choices(choices)
            if problem:
                return _json(problem, status=400)
            self.autocompleted[interaction_id] = choices or []
        self._answered.add(interaction_id)
        return _json({"interaction": {"id": interaction_id, "type": payload.get("type", 5)}})

    def _dm_channel(self, recipient: str) -> web.Response:
        if self.refuse_dms or not recipient:
            body = {"message": "Cannot send messages to this user", "code": 50007}
            return _json(body, status=403)
        channel_id = snowflake()
        self.dm_channels[channel_id] = recipient
        return _json({"id": channel_id, "type": 1, "last_message_id": None,
                      "recipients": [payloads.user(recipient)]})  # fmt: skip

    def _commands(self, method: str, parts: list[str], payload: Any) -> web.Response:
        scope = parts[3] if parts[2] == "guilds" else "global"
        if method == "PUT":
            problem = checks.check_commands(payload)
            if problem:
                return _json(problem, status=400)
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
