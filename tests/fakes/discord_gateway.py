"""The fake Discord's gateway: HELLO, IDENTIFY (the bot token checked), READY, RESUME, events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import discord_payloads as payloads

__all__ = ["FakeGateway"]


class FakeGateway:
    """Mixed into ``FakeDiscord``, which sets these attributes."""

    token: str
    application_id: str
    bot_id: str
    identified: asyncio.Event
    _sockets: list[web.WebSocketResponse]
    _seq: int

    @property
    def gateway_url(self) -> str:
        raise NotImplementedError

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await asyncio.wait_for(self.identified.wait(), 10)
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        for ws in list(self._sockets):
            await ws.send_str(json.dumps(frame))

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
                    if frame.get("d", {}).get("token") != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
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

