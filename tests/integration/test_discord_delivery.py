"""Uploads that always fit (10 files and the upload limit a message, each 413 step) and
errors that reach only their owner, with the real client against the fake."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from gouache import messages
from tests.fakes.fake_discord import Call, FakeDiscord
from tests.support.discord_bot import LINK, NO_MENTIONS, Bot, gif, noise_png, png, running_bot

MiB = 1024 * 1024


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Bot]:
    async with running_bot(fake, tmp_path) as running:
        yield running


def _posts(fake: FakeDiscord, token: str) -> list[Call]:
    return fake.find("POST", f"/webhooks/{fake.application_id}/{token}")


def _attempts(fake: FakeDiscord) -> list[int]:
    return [c.status for c in fake.calls if c.method == "POST" and "/webhooks/" in c.path]


def _names(call: Call) -> list[str]:
    return [name for name, _ in call.files]


async def _finished(bot: Bot, images: list[bytes], gifs: list[bytes] = (), **kw: object):  # type: ignore[assignment]
    payload, _ = await bot.command("imagine", {"prompt": "a cube", "count": len(images)}, **kw)
    [job] = await bot.jobs()
    await bot.finish(job, images=images, gifs=gifs)
    return payload, job


async def test_fifteen_images_are_split_ten_to_a_message(bot: Bot) -> None:
    payload, job = await _finished(bot, [png(c) for c in ["red", "blue", "green"] * 5])
    assert await bot.deliver() == 1
    first, second = _posts(bot.fake, payload["token"])
    assert _names(first) == [f"image-{i}.png" for i in range(10)]
    assert _names(second) == [f"image-{i}.png" for i in range(10, 15)]
    assert first.content.startswith("“a cube”") and f"seed {job.request.seed}" in first.content
    assert f"{job.request.width}x{job.request.height}" in first.content
    assert first.json["components"] and second.content == "(2/2)"
    assert second.allowed_mentions == NO_MENTIONS
    assert _attempts(bot.fake) == [200, 200]  # planned: Discord never had to refuse


async def test_files_are_planned_against_the_interactions_upload_limit(tmp_path: Path) -> None:
    async with FakeDiscord(upload_limit=70_000) as fake, running_bot(fake, tmp_path) as bot:
        payload, _ = await _finished(bot, [noise_png(seed=i) for i in range(5)])  # 27.8 kB each
        assert await bot.deliver() == 1
        posts = _posts(fake, payload["token"])
        assert [len(p.files) for p in posts] == [2, 2, 1]
        assert _attempts(fake) == [200, 200, 200]


async def test_a_file_too_large_alone_is_re_encoded_before_posting(tmp_path: Path) -> None:
    async with FakeDiscord(upload_limit=20_000) as fake, running_bot(fake, tmp_path) as bot:
        payload, _ = await _finished(bot, [noise_png()])
        assert await bot.deliver() == 1
        [post] = _posts(fake, payload["token"])
        assert _names(post) == ["image-0.webp"] and _attempts(fake) == [200]


async def test_a_limit_that_moved_is_answered_by_re_encoding(tmp_path: Path) -> None:
    # The interaction says 10 MiB; Discord refuses at 20 kB (discord-api-docs#6078).
    fake = FakeDiscord(upload_limit=20_000, advertised_limit=10 * MiB)
    async with fake, running_bot(fake, tmp_path) as bot:
        payload, _ = await _finished(bot, [noise_png(seed=1), noise_png(seed=2)])
        assert await bot.deliver() == 1
        assert _attempts(fake) == [413, 200]
        [post] = _posts(fake, payload["token"])
        assert _names(post) == ["image-0.webp", "image-1.webp"]
        assert messages.reencoded_to_fit() in post.content


def _frames(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return image.n_frames


@pytest.mark.parametrize("refusals", [1, 2, 3])
async def test_each_413_step(bot: Bot, refusals: int) -> None:
    """1: WebP and a GIF with fewer frames; 2: JPEG and a GIF under a byte cap; 3: links."""
    original = gif(frames=8)
    payload, job = await _finished(bot, [noise_png(seed=1), noise_png(seed=2)], [original])
    bot.fake.fail_next("POST", f"/webhooks/{bot.fake.application_id}/", 413, times=refusals)
    assert await bot.deliver() == 1
    assert _attempts(bot.fake) == [413] * refusals + [200]
    [post] = _posts(bot.fake, payload["token"])
    files = dict(post.files)
    if refusals == 1:
        assert _names(post) == ["image-0.webp", "image-1.webp", "denoise-0.gif"]
        assert _frames(files["denoise-0.gif"]) < 8
    elif refusals == 2:
        assert _names(post) == ["image-0.jpg", "image-1.jpg", "denoise-0.gif"]
        assert len(files["denoise-0.gif"]) <= len(original) // 2
    else:
        assert post.files == []
        for name in ("image-0.png", "image-1.png", "denoise-0.gif"):
            assert LINK.format(job=job.id, name=name) in post.content
    if refusals < 3:
        assert messages.reencoded_to_fit() in post.content
    assert post.json["components"]  # the buttons survive every step


async def test_links_step_without_a_public_address_says_what_was_left_out(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, tmp_path, links=False) as bot:
        payload, _ = await _finished(bot, [noise_png()], [gif()])
        fake.fail_next("POST", f"/webhooks/{fake.application_id}/", 413, times=3)
        assert await bot.deliver() == 1
        [post] = _posts(fake, payload["token"])
        assert post.files == [] and messages.too_large_here(2) in post.content


async def test_channel_posts_after_the_token_window_are_split_too(bot: Bot) -> None:
    payload, _ = await _finished(bot, [png()] * 12, age=14.5 * 60)
    assert await bot.deliver() == 1
    posts = bot.fake.find("POST", f"/channels/{payload['channel_id']}/messages")
    assert [len(p.files) for p in posts] == [10, 2]
    assert not _posts(bot.fake, payload["token"])


async def test_a_failure_after_the_token_window_goes_to_a_dm_not_the_channel(bot: Bot) -> None:
    fake = bot.fake
    payload, _ = await bot.command("imagine", {"prompt": "my private idea"}, age=14.5 * 60)
    [job] = await bot.jobs()
    await bot.storage.claim_batch("worker-1", 8, 60.0)
    await bot.storage.fail(job.id, "worker-1", "The GPU ran out of memory.")
    assert await bot.deliver() == 1
    [dm] = list(fake.dm_channels)
    assert fake.dm_channels[dm] == payload["member"]["user"]["id"]
    [post] = fake.find("POST", f"/channels/{dm}/messages")
    assert "The GPU ran out of memory." in post.content and "my private idea" in post.content
    assert post.allowed_mentions == NO_MENTIONS
    assert not fake.find("POST", f"/channels/{payload['channel_id']}/messages")


async def test_a_failure_nobody_can_be_told_privately_is_not_posted_publicly(bot: Bot) -> None:
    fake = bot.fake
    fake.refuse_dms = True
    payload, _ = await bot.command("imagine", {"prompt": "my private idea"}, age=14.5 * 60)
    [job] = await bot.jobs()
    await bot.storage.claim_batch("worker-1", 8, 60.0)
    await bot.storage.fail(job.id, "worker-1", "The GPU ran out of memory.")
    assert await bot.deliver() == 1
    assert not [c for c in fake.calls if c.method == "POST" and "/messages" in c.path]
    assert not _posts(fake, payload["token"])


async def test_a_restart_after_a_failed_second_message_posts_only_what_is_missing(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gouache.storage import open_storage

    async with open_storage(f"sqlite:///{tmp_path / 'queue.db'}") as storage:
        async with running_bot(fake, tmp_path, storage) as first:
            payload, _ = await _finished(first, [png()] * 12)
            outbox = first.client._outbox  # noqa: SLF001
            real_post, posted = outbox._post, []  # noqa: SLF001

            async def post_once_then_drop(*args: object, **kw: object) -> str:
                if posted:  # the connection drops before the second message
                    raise ConnectionResetError("dropped")
                posted.append(await real_post(*args, **kw))  # type: ignore[arg-type]
                return posted[-1]

            monkeypatch.setattr(outbox, "_post", post_once_then_drop)
            assert await first.deliver() == 0
            assert [len(p.files) for p in _posts(fake, payload["token"])] == [10]
        async with running_bot(fake, tmp_path, storage) as second:  # the bot restarted
            assert await second.deliver() == 1
            assert [len(p.files) for p in _posts(fake, payload["token"])] == [10, 2]
