"""`service.serve` as `gouache run` wires it, with Discord, Slack and the web all on.

Each test here failed before adapters received typed ``AdapterDeps``: (a) admissions on chat
platforms never woke delivery, (b) Discord's 413 fallback had no links, (c) the prompt length
check ran only in the CLI, (d) ``flagged_action = "spoiler"`` showed flagged images in the
clear on Slack and the web. The worker is played by the test (claim + complete in storage).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

import gouache.service
from gouache.bot.delivery import Delivery
from gouache.config import Admission as AdmissionSettings
from gouache.config import DiscordSettings, Moderation, Settings, SlackSettings, WebSettings
from gouache.request import COMMAND_NAMES
from gouache.service import serve
from gouache.storage import Artifact, ArtifactKind, Job, Storage, open_storage
from gouache.storage.jobs import verdict_artifact
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_slack import FakeSlack, SlackSender

SECRET = "wiring-signing-secret"
LONG_PROMPT = " ".join(["red"] * 40)  # the demo tokenizer keeps 32 tokens


def png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, "PNG")
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    settings: Settings
    discord: FakeDiscord
    slack: FakeSlack
    sender: SlackSender
    storage: Storage
    base: str

    def edits(self, token: str) -> list[Any]:
        path = f"/webhooks/{self.discord.application_id}/{token}/messages/@original"
        return self.discord.find("PATCH", path)

    async def discord_reply(self, token: str) -> str:
        await self.discord.wait_for(lambda f: self.edits(token), timeout=15)
        return str(self.edits(token)[0].content)

    async def finish(self, job: Job, *, flag: bool = False) -> None:
        """Play the worker: one image per job (flagged by the classifier when ``flag``)."""
        [claimed] = await self.storage.claim_batch("w-test", 1, 60.0)
        assert claimed.id == job.id
        image = Artifact(job.id, "image-0.png", ArtifactKind.IMAGE, "image/png", png("red"), 0)
        done = [image] + ([verdict_artifact(job.id, ["image-0.png"])] if flag else [])
        await self.storage.complete(job.id, "w-test", done)

    async def jobs(self, platform: str) -> list[Job]:
        return [j for j in await self.storage.list_jobs(limit=100)
                if j.request.origin.platform == platform]  # fmt: skip

    async def web(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.request(
            method, self.base + path, json=body
        ) as resp:  # fmt: skip
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw


@pytest.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    # Delivery polls once a minute here, so only a wake-up can deliver within seconds.
    monkeypatch.setattr(gouache.service, "Delivery", functools.partial(Delivery, poll_seconds=60))
    port = free_port()
    async with FakeDiscord() as discord, FakeSlack() as slack:
        settings = Settings(
            data_dir=tmp_path / "data", port=port,
            discord=DiscordSettings(token="fake-token", application_id=discord.application_id,
                                    api_base=discord.api_base),
            slack=SlackSettings(bot_token=slack.bot_token, signing_secret=SECRET,
                                api_base=slack.api_base),
            web=WebSettings(public_url=f"http://127.0.0.1:{port}"),
            moderation=Moderation(flagged_action="spoiler"),
            admission=AdmissionSettings(rate_per_minute=600, burst=50),
        )  # fmt: skip
        stop = asyncio.Event()
        service = asyncio.create_task(serve(settings, stop=stop, spawn_worker=False))
        try:
            await asyncio.wait_for(discord.identified.wait(), 90)
            async with open_storage(settings.resolved_database_url) as storage:
                sender = SlackSender(f"http://127.0.0.1:{port}/slack/events", SECRET, slack)
                yield Running(settings, discord, slack, sender, storage, f"http://127.0.0.1:{port}")
        finally:
            stop.set()
            assert await asyncio.wait_for(service, 30) == 0


async def test_a_chat_admission_wakes_delivery(running: Running) -> None:
    """(a) A finished job is posted as soon as anyone is admitted, not at the next poll."""
    first = await running.discord.slash_command("imagine", {"prompt": "a cube"})
    assert (await running.discord_reply(first["token"])).startswith("Queued")
    [job] = await running.jobs("discord")
    await running.finish(job)
    await asyncio.sleep(0.3)  # delivery is asleep for a minute now
    results = f"/webhooks/{running.discord.application_id}/{first['token']}"
    assert not running.discord.find("POST", results)
    second = await running.discord.slash_command("imagine", {"prompt": "a sphere"})
    await running.discord.wait_for(lambda f: f.find("POST", results), timeout=5)
    assert second["token"] != first["token"]


async def test_discords_413_fallback_links_to_the_files(running: Running) -> None:
    """(b) When Discord refuses every upload, the message links to signed artifact URLs."""
    fake = running.discord
    payload = await fake.slash_command("imagine", {"prompt": "a cube"})
    await running.discord_reply(payload["token"])
    [job] = await running.jobs("discord")
    fake.fail_next("POST", f"/webhooks/{fake.application_id}/", 413, times=3)  # all, compressed, one
    await running.finish(job)
    await running.discord.slash_command("imagine", {"prompt": "wake delivery"})
    path = f"/webhooks/{fake.application_id}/{payload['token']}"
    await fake.wait_for(lambda f: f.find("POST", path), timeout=10)
    [post] = fake.find("POST", path)
    assert post.files == []
    [link] = [w for w in str(post.content).split() if w.startswith(running.base + "/files/")]
    status, body = await running.web("GET", link.removeprefix(running.base))
    assert status == 200 and body == png("red")
    tampered = link.replace(f"/files/{job.id}/", "/files/someone-else/")
    assert (await running.web("GET", tampered.removeprefix(running.base)))[0] == 404


async def test_a_prompt_too_long_for_the_text_encoder_is_refused_everywhere(running: Running) -> None:
    """(c) The token-limit check (the demo tokenizer reads 32) runs on Discord, Slack and the web."""
    payload = await running.discord.slash_command("imagine", {"prompt": LONG_PROMPT})
    assert "longer than this model reads (32 tokens)" in await running.discord_reply(payload["token"])
    await running.sender.command("/imagine", LONG_PROMPT)
    await running.slack.wait_for(lambda f: f.find("response"))
    assert "longer than this model reads (32 tokens)" in running.slack.find("response")[0].args["text"]
    status, body = await running.web("POST", "/api/jobs", {"command": LONG_PROMPT})
    assert status == 400 and "longer than this model reads (32 tokens)" in body["error"]
    assert await running.storage.list_jobs(limit=10) == []


async def test_flagged_images_are_never_shown_in_the_clear(running: Running) -> None:
    """(d) "spoiler": blurred on the web, withheld on Slack (no spoilers there)."""
    status, created = await running.web("POST", "/api/jobs", {"command": "a red cube"})
    assert status == 202
    [web_job] = await running.jobs("web")
    await running.finish(web_job, flag=True)
    status, view = await running.web("GET", f"/api/jobs/{web_job.id}")
    [image] = [a for a in view["artifacts"] if a["kind"] == "image"]
    assert image["hidden"] is True

    await running.sender.command("/imagine", "a red cube")
    await running.slack.wait_for(lambda f: f.find("response"))
    [slack_job] = await running.jobs("slack")
    await running.finish(slack_job, flag=True)
    await running.web("POST", "/api/jobs", {"command": "wake delivery"})
    await running.slack.wait_for(
        lambda f: any("held back" in str(c.args.get("text", "")) for c in f.calls), timeout=10
    )
    assert running.slack.find("upload") == []  # the flagged image was never sent


@pytest.mark.parametrize("text", ["/nosuchcommand x", "/inpaint a fox"])
async def test_an_unknown_command_is_refused_with_the_list(running: Running, text: str) -> None:
    status, body = await running.web("POST", "/api/jobs", {"command": text})
    assert status == 400
    assert text.split()[0] in body["error"]
    assert all(name in body["error"] for name in COMMAND_NAMES)
    await running.sender.mention(f"<@UBOT> {text}")
    await running.slack.wait_for(lambda f: f.find("chat.postEphemeral") or f.find("chat.postMessage"))
    said = [str(c.args.get("text")) for c in running.slack.calls if c.method.startswith("chat.")]
    assert any("Unknown command" in t for t in said)
    assert await running.storage.list_jobs(limit=10) == []
