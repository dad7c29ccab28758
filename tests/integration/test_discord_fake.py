"""The fake refuses what Discord refuses, so a bot bug in any of these fails a test here."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from gouache.storage import open_storage
from tests.fakes.fake_discord import FakeDiscord, OptionRejected
from tests.support.discord_bot import make_settings, running_bot

BOT = {"Authorization": "Bot fake-token"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(upload_limit=1000) as server:
        yield server


async def _call(fake: FakeDiscord, method: str, path: str, *, headers: dict[str, str] = BOT,
                data: Any = None, files: list[tuple[str, bytes]] = ()) -> tuple[int, dict]:  # fmt: skip
    async with aiohttp.ClientSession() as http:
        body: Any
        if files:
            body = aiohttp.FormData()
            body.add_field("payload_json", json.dumps(data), content_type="application/json")
            for i, (name, blob) in enumerate(files):
                body.add_field(f"files[{i}]", blob, filename=name)
        elif data is not None:
            body = json.dumps(data)
            headers = {**headers, "Content-Type": "application/json"}
        else:
            body = None
        async with http.request(method, fake.api_base + path, data=body, headers=headers) as r:
            return r.status, await r.json()


async def test_every_bot_route_needs_the_bot_token(fake: FakeDiscord) -> None:
    for path in ("/users/@me", "/gateway/bot", "/channels/1/messages",
                 f"/applications/{fake.application_id}/commands"):  # fmt: skip
        for headers in ({}, {"Authorization": "Bot wrong"}, {"Authorization": "fake-token"}):
            assert (await _call(fake, "GET", path, headers=headers))[0] == 401, (path, headers)
    assert (await _call(fake, "GET", "/users/@me"))[0] == 200


async def test_a_wrong_token_cannot_log_in(fake: FakeDiscord, tmp_path: Path) -> None:
    from gouache.bot.adapters.discord.client import DiscordAdapter
    from gouache.config import DiscordSettings
    from tests.support.adapters import adapter_deps

    wrong = DiscordSettings(token="nope", application_id=fake.application_id, api_base=fake.api_base)
    settings = make_settings(tmp_path, fake, discord=wrong)
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        client = DiscordAdapter(adapter_deps(settings, storage))
        try:
            with pytest.raises(discord.LoginFailure):
                await asyncio.wait_for(client.start(), 10)
        finally:
            await client.close()
    assert not fake.identified.is_set()


async def test_messages_over_discords_limits_are_refused(fake: FakeDiscord) -> None:
    path = "/channels/1/messages"
    assert (await _call(fake, "POST", path, data={"content": "x" * 2000}))[0] == 200
    status, body = await _call(fake, "POST", path, data={"content": "x" * 2001})
    assert (status, body["code"]) == (400, 50035) and "content" in body["errors"]
    eleven = [(f"f{i}.png", b"x") for i in range(11)]
    status, body = await _call(fake, "POST", path, data={"content": ""}, files=eleven)
    assert (status, body["code"]) == (400, 50035) and "attachments" in body["errors"]
    status, body = await _call(fake, "POST", path, data={}, files=[("big.png", b"x" * 1001)])
    assert (status, body["code"]) == (413, 40005)
    assert (await _call(fake, "POST", path, data={}, files=[("ok.png", b"x" * 1000)]))[0] == 200


async def test_request_bodies_must_be_json(fake: FakeDiscord) -> None:
    headers = {**BOT, "Content-Type": "text/plain"}
    url = fake.api_base + "/channels/1/messages"
    async with aiohttp.ClientSession() as http, http.post(url, data="hi", headers=headers) as r:
        assert r.status == 400 and (await r.json())["code"] == 50109
        assert r.content_type == "application/json"


async def test_command_definitions_are_checked(fake: FakeDiscord) -> None:
    path = f"/applications/{fake.application_id}/commands"
    choices = [{"name": f"c{i}", "value": f"c{i}"} for i in range(26)]
    bad = [
        [{"name": "Imagine", "description": "x"}],
        [{"name": "x", "description": "x", "options": [
            {"type": 3, "name": "o", "description": "o", "choices": choices}]}],
        [{"name": "x", "description": "x", "options": [
            {"type": 4, "name": "o", "description": "o", "min_value": 5, "max_value": 1}]}],
        [{"name": "x", "description": "x", "options": [
            {"type": 3, "name": "a", "description": "a"},
            {"type": 3, "name": "b", "description": "b", "required": True}]}],
        [{"name": "x", "description": "x", "options": [
            {"type": 3, "name": "a", "description": "a", "autocomplete": True,
             "choices": choices[:2]}]}],
    ]  # fmt: skip
    for commands in bad:
        status, body = await _call(fake, "PUT", path, data=commands)
        assert (status, body["code"]) == (400, 50035), commands
    assert fake.commands == {}


async def test_option_values_are_checked_against_the_registered_range(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, tmp_path):
        for options in ({"prompt": "x", "count": 17}, {"prompt": "x", "guidance": 31.0},
                        {"prompt": "x", "steps": 0}, {"prompt": "x", "aspect_ratio": "5:4"},
                        {"prompt": "x", "steps": 2.5}, {"prompt": ""}, {"negative": "x"}):  # fmt: skip
            with pytest.raises(OptionRejected):
                await fake.slash_command("imagine", options)
        with pytest.raises(OptionRejected, match="not registered"):
            await fake.slash_command("frobnicate", {"prompt": "x"})


async def test_autocomplete_answers_over_25_choices_are_refused(fake: FakeDiscord) -> None:
    payload = fake._base_interaction(4, "1", "2", "3", 0.0)  # noqa: SLF001
    fake._dispatched[payload["id"]] = time.monotonic()  # noqa: SLF001
    path = f"/interactions/{payload['id']}/{payload['token']}/callback"
    choices = [{"name": f"c{i}", "value": f"c{i}"} for i in range(26)]
    status, body = await _call(fake, "POST", path, data={"type": 8, "data": {"choices": choices}})
    assert (status, body["code"]) == (400, 50035)


async def test_a_first_response_after_three_seconds_is_unknown(fake: FakeDiscord) -> None:
    payload = fake._base_interaction(2, "1", "2", "3", 0.0)  # noqa: SLF001
    fake._dispatched[payload["id"]] = time.monotonic() - 3.5  # noqa: SLF001
    path = f"/interactions/{payload['id']}/{payload['token']}/callback"
    status, body = await _call(fake, "POST", path, data={"type": 5})
    assert (status, body["code"]) == (404, 10062)
    wrong = f"/interactions/{payload['id']}/not-its-token/callback"
    assert (await _call(fake, "POST", wrong, data={"type": 5}))[0] == 404


async def test_the_bot_defers_inside_the_window(fake: FakeDiscord, tmp_path: Path) -> None:
    fake.response_window = 3.0
    async with running_bot(fake, tmp_path) as bot:
        payload, _ = await bot.command("imagine", {"prompt": "a cube"})
        [callback] = fake.find("POST", f"/interactions/{payload['id']}/")
        assert callback.status == 200


async def test_a_webhook_token_dies_after_fifteen_minutes(fake: FakeDiscord) -> None:
    payload = fake._base_interaction(2, "1", "2", "3", 15.5 * 60)  # noqa: SLF001
    path = f"/webhooks/{fake.application_id}/{payload['token']}"
    status, body = await _call(fake, "POST", path, data={"content": "late"}, headers={})
    assert (status, body["code"]) == (401, 50027)


async def test_components_over_discords_limits_are_refused(fake: FakeDiscord) -> None:
    def row(n: int, label: str = "ok") -> dict:
        return {"type": 1, "components": [
            {"type": 2, "style": 2, "label": label, "custom_id": f"b{i}"} for i in range(n)]}

    path = "/channels/1/messages"
    for components in ([row(6)], [row(1)] * 6, [row(1, "x" * 81)]):
        status, body = await _call(fake, "POST", path, data={"content": "", "components": components})
        assert (status, body["code"]) == (400, 50035)
    assert (await _call(fake, "POST", path, data={"components": [row(5)] * 5}))[0] == 200
