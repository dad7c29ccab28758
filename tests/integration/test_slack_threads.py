"""One thread per job, progress edits within the workspace budget, restarts, fallbacks.

Runs on both storage backends where the state that must survive a restart is involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gouache.bot.adapter import Progress
from gouache.bot.adapters.slack.app import SlackAdapter
from gouache.errors import NotFound
from gouache.storage import Artifact, ArtifactKind, Job, Storage, open_storage
from gouache.storage.jobs import verdict_artifact
from tests.fakes.slack_app import SlackApp, png, slack_app
from tests.support.adapters import adapter_deps

GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"  # noqa: E501


async def _queued(app: SlackApp, prompt: str, channel: str = "C0001") -> Job:
    before = {j.id for j in await app.jobs()}
    await app.slack.command("/imagine", prompt, channel=channel)
    await app.replies(len(before) + 1)
    [job] = [j for j in await app.jobs() if j.id not in before]
    return job


async def test_delivery_state_round_trips_on_both_backends(storage: Storage) -> None:
    from tests.support.factories import make_request

    job, _ = await storage.enqueue(make_request())
    assert await storage.delivery_state(job.id) == {}
    await storage.set_delivery_state(job.id, {"channel": "C1", "progress": "1.2"})
    await storage.set_delivery_state(job.id, {"channel": "C1", "progress": "1.2", "n": 3})
    assert await storage.delivery_state(job.id) == {"channel": "C1", "progress": "1.2", "n": 3}
    with pytest.raises(NotFound):
        await storage.set_delivery_state("no-such-job", {})


async def test_a_thread_finds_its_latest_succeeded_job_on_both_backends(storage: Storage) -> None:
    """``job_in_thread``: by the channel and thread of the delivery state, the newest succeeded
    job of that platform; a job still running there, another thread or platform: not it."""
    from tests.support.factories import make_request

    jobs = [(await storage.enqueue(make_request(prompt=f"a cube {n}", platform="slack")))[0]
            for n in range(4)]  # fmt: skip
    first, second, running, elsewhere = jobs
    for job in jobs:
        await storage.set_delivery_state(job.id, {"channel": "C1", "thread": "1.5", "progress": "1.5"})
    await storage.set_delivery_state(elsewhere.id, {"channel": "C2", "thread": "1.5"})
    assert await storage.job_in_thread("slack", "C1", "1.5") is None  # nothing has succeeded
    assert {j.id for j in await storage.claim_batch("worker-1", 8, 60.0)} == {j.id for j in jobs}
    for job in (first, second, elsewhere):
        await storage.complete(job.id, "worker-1", [Artifact(job.id, "image-0.png", ArtifactKind.IMAGE,
                                                             "image/png", png(), index=0)])  # fmt: skip
    found = await storage.job_in_thread("slack", "C1", "1.5")
    assert found is not None and found.id == second.id
    other = await storage.job_in_thread("slack", "C2", "1.5")
    assert other is not None and other.id == elsewhere.id
    assert await storage.job_in_thread("slack", "C1", "9.9") is None
    assert await storage.job_in_thread("discord", "C1", "1.5") is None


async def test_a_restarted_adapter_edits_the_same_progress_message(
    storage: Storage, tmp_path: Path
) -> None:
    async with slack_app(storage, tmp_path, progress_seconds=0) as app:
        job = await _queued(app, "a cube")
        await app.adapter.show_progress(Progress(job=job, fraction=0.2))
        [root] = app.fake.find("chat.postMessage")
        reborn = SlackAdapter(adapter_deps(app.settings, storage))  # a new process, same DB
        await reborn.show_progress(Progress(job=job, fraction=0.6))
        assert len(app.fake.find("chat.postMessage")) == 1  # no second progress message
        [update] = app.fake.find("chat.update")
        assert update.args["ts"] == root.extra["response"]["ts"] and "60%" in update.args["text"]
        await app.finish(job)
        app.adapter = reborn
        assert await app.deliver() == 1
        [complete] = app.fake.find("files.completeUploadExternal")
        assert complete.args["thread_ts"] == root.extra["response"]["ts"]
        assert len(app.fake.find("chat.postMessage")) == 1


async def test_each_job_gets_its_own_thread_and_a_mention_uses_its_own(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, progress_seconds=0
    ) as app:  # fmt: skip
        first, second = await _queued(app, "one"), await _queued(app, "two")
        mention = await app.slack.mention("<@UBOT> imagine three", thread_ts=None)
        await app.fake.wait_for(lambda f: f.find("chat.postEphemeral"))
        [third] = [j for j in await app.jobs() if j.request.prompt == "three"]
        for job in (first, second, third):
            await app.adapter.show_progress(Progress(job=job, fraction=0.5))
            await app.finish(job)
        assert await app.deliver() == 3
        roots = {c.args["text"].split("“")[1].split("”")[0]: c for c in app.fake.find("chat.postMessage")}
        assert roots["three"].args["thread_ts"] == mention["event"]["ts"]  # the mention's thread
        assert "thread_ts" not in roots["one"].args or not roots["one"].args["thread_ts"]
        threads = [c.args["thread_ts"] for c in app.fake.find("files.completeUploadExternal")]
        expected = [roots["one"].extra["response"]["ts"], roots["two"].extra["response"]["ts"],
                    mention["event"]["ts"]]  # fmt: skip
        assert sorted(threads) == sorted(expected) and len(set(threads)) == 3


async def test_progress_edits_stay_within_the_workspace_budget(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, progress_seconds=0, updates_per_minute=5
    ) as app:  # fmt: skip
        jobs = [await _queued(app, f"cube {i}") for i in range(4)]
        for step in range(1, 11):
            for job in jobs:
                await app.adapter.show_progress(Progress(job=job, fraction=step / 10))
        assert len(app.fake.find("chat.postMessage")) == 4  # one progress message per job
        edits = app.fake.find("chat.update")
        assert len(edits) == 5  # the rest were skipped, not queued
        for job in jobs:
            await app.finish(job)
        assert await app.deliver() == 4
        assert len(app.fake.find("chat.update")) == 5 + 4  # final edits always go out
        assert all(c.args["text"].startswith("Done") for c in app.fake.find("chat.update")[5:])


async def test_not_in_channel_falls_back_to_a_dm_and_says_how_to_invite(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path
    ) as app:  # fmt: skip
        app.fake.not_member.add("C0009")
        job = await _queued(app, "private cube", channel="C0009")
        await app.finish(job)
        assert await app.deliver() == 1
        assert app.fake.refused("chat.postMessage")[0].args["channel"] == "C0009"
        [opened] = app.fake.find("conversations.open")
        assert opened.args["users"] == "U0001"
        told = [r for r in await app.replies(2) if "/invite" in r["text"]]
        assert told and "<#C0009>" in told[0]["text"] and told[0]["response_type"] == "ephemeral"
        [root] = app.fake.find("chat.postMessage")
        assert root.args["channel"] == "DU0001"
        [complete] = app.fake.find("files.completeUploadExternal")
        assert complete.args["channel_id"] == "DU0001"
        assert complete.args["thread_ts"] == root.extra["response"]["ts"]
        assert [u.data for u in app.fake.find("upload")] == [png()]


async def test_a_delivery_given_up_on_tells_the_user(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path
    ) as app:  # fmt: skip
        job = await _queued(app, "doomed cube")
        await app.finish(job)
        app.fake.fail_next("files.completeUploadExternal", 500, error="internal_error", times=10)
        delivered = [await app.deliver() for _ in range(4)]
        assert delivered == [0, 0, 0, 1]  # retried, then given up on
        [told] = [r for r in await app.replies(2) if "could not post" in r["text"]]
        assert "doomed cube" in told["text"] and "internal_error" in told["text"]
        assert await app.deliver() == 0  # and not tried again


async def test_results_carry_gif_bytes_and_a_full_caption_and_flagged_images_are_withheld(
    tmp_path: Path,
) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path
    ) as app:  # fmt: skip
        job = await _queued(app, "two cubes --n 2 --seed 9 --cfg 4.5 --steps 6")
        flagged, clean = png("pink"), png("blue")
        await app.finish(job, [
            Artifact(job.id, "image-0.png", ArtifactKind.IMAGE, "image/png", flagged, index=0),
            Artifact(job.id, "image-1.png", ArtifactKind.IMAGE, "image/png", clean, index=1),
            Artifact(job.id, "denoise-1.gif", ArtifactKind.GIF, "image/gif", GIF, index=1),
            verdict_artifact(job.id, ["image-0.png"]),
        ])  # fmt: skip
        assert await app.deliver(flagged_action="spoiler") == 1  # Slack cannot hide: withheld
        assert sorted(u.data for u in app.fake.find("upload")) == sorted([clean, GIF])
        [complete] = app.fake.find("files.completeUploadExternal")
        caption = complete.args["initial_comment"]
        for part in ("seed 9", "6 steps", "CFG scale 4.5", "ddim", "32×32", "took", "held back"):
            assert part in caption, (part, caption)
        files = json.loads(complete.args["files"])
        assert {f["title"] for f in files} == {"image-1.png", "denoise-1.gif"}


async def test_a_failed_job_replaces_its_progress_message(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path
    ) as app:  # fmt: skip
        job = await _queued(app, "a <b> cube")
        await app.adapter.show_progress(Progress(job=job, fraction=0.1))
        await app.adapter.show_progress(Progress(job=job, fraction=0.2))  # within 3 s: dropped
        [post] = app.fake.find("chat.postMessage")
        assert post.args["text"].startswith("Generating… 10%") and "&lt;b&gt;" in post.args["text"]
        assert app.fake.find("chat.update") == []
        await app.storage.claim_batch("worker-1", 8, 60.0)
        await app.storage.fail(job.id, "worker-1", "Out of memory.")
        assert await app.deliver() == 1
        [update] = app.fake.find("chat.update")
        assert update.args["ts"] == post.extra["response"]["ts"]
        assert update.args["text"].startswith("Out of memory.")
