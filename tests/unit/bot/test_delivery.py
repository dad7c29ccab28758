"""Delivery: the owning adapter gets each finished job once, also after a restart."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from gouache.bot.adapter import Action, Result
from gouache.bot.delivery import Delivery
from gouache.storage.jobs import Artifact, ArtifactKind, Job, JobStatus
from tests.support.factories import make_request

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _job(job_id: str, status: JobStatus, platform: str = "web", **fields: object) -> Job:
    return Job(id=job_id, request=make_request(platform=platform), status=status, attempts=1,
               created_at=NOW, updated_at=NOW, **fields)  # type: ignore[arg-type]


class FakeStorage:
    """Only what Delivery reads and writes, with the receipts table's once-only rule."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = {j.id: j for j in jobs}
        self.receipts: dict[str, str] = {}
        self.files = {
            j.id: [
                Artifact(j.id, "image-0.png", ArtifactKind.IMAGE, "image/png", b"png"),
                Artifact(j.id, "input-0.png", ArtifactKind.INPUT, "image/png", b"in"),
            ]
            for j in jobs
        }

    async def undelivered(self, platforms, limit=50):
        return [j for j in self.jobs.values()
                if j.is_terminal and j.id not in self.receipts
                and j.request.origin.platform in platforms][:limit]  # fmt: skip

    async def mark_delivered(self, job_id, ref=""):
        if job_id in self.receipts:
            return False
        self.receipts[job_id] = ref
        return True

    async def artifacts(self, job_id):
        return list(self.files[job_id])

    async def list_jobs(self, *, user=None, status=None, limit=50):
        return [j for j in self.jobs.values() if status is None or j.status is status][:limit]


class RecordingAdapter:
    can_hide_images = True

    def __init__(self, platform: str = "web", fail_times: int = 0) -> None:
        self.platform = platform
        self.results: list[Result] = []
        self.errors: list[tuple[str, str]] = []
        self.progress: list[tuple[str, float]] = []
        self.fail_times = fail_times

    async def acknowledge(self, ack):
        pass

    async def show_progress(self, progress):
        self.progress.append((progress.job.id, progress.fraction))

    async def deliver(self, result):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("platform down")
        self.results.append(result)
        return f"msg-{result.job.id}"

    async def report_error(self, job, message):
        self.errors.append((job.id, message))
        return f"err-{job.id}"


async def test_each_finished_job_goes_to_its_platform_once() -> None:
    storage = FakeStorage([
        _job("a", JobStatus.SUCCEEDED),
        _job("b", JobStatus.FAILED, error="Generation failed: out of memory"),
        _job("c", JobStatus.SUCCEEDED, platform="discord"),
        _job("d", JobStatus.RUNNING),
    ])
    web, discord = RecordingAdapter("web"), RecordingAdapter("discord")
    delivery = Delivery(storage, {"web": web, "discord": discord})
    assert await delivery.deliver_pending() == 3
    assert await delivery.deliver_pending() == 0  # receipts make a second pass a no-op
    assert [r.job.id for r in web.results] == ["a"]
    assert [r.job.id for r in discord.results] == ["c"]
    assert web.errors == [("b", "Generation failed: out of memory")]
    assert storage.receipts == {"a": "msg-a", "b": "err-b", "c": "msg-c"}


async def test_results_carry_outputs_and_buttons_but_not_the_upload() -> None:
    storage = FakeStorage([_job("a", JobStatus.SUCCEEDED)])
    web = RecordingAdapter()
    await Delivery(storage, {"web": web}).deliver_pending()
    (result,) = web.results
    assert [a.name for a in result.artifacts] == ["image-0.png"]
    assert [b.action for b in result.buttons] == [
        Action.REROLL, Action.VARIATIONS, Action.GIF, Action.DIVERSIFY,
        Action.UPSCALE, Action.VARY_SUBTLE, Action.VARY_STRONG]


async def test_a_restarted_bot_delivers_what_finished_while_it_was_down() -> None:
    storage = FakeStorage([_job("a", JobStatus.RUNNING)])
    first = RecordingAdapter()
    await Delivery(storage, {"web": first}).deliver_pending()
    assert first.results == []
    # The bot goes down; the worker finishes the job; a new bot process starts.
    storage.jobs["a"] = replace(storage.jobs["a"], status=JobStatus.SUCCEEDED)
    second = RecordingAdapter()
    await Delivery(storage, {"web": second}).deliver_pending()
    third = RecordingAdapter()
    await Delivery(storage, {"web": third}).deliver_pending()
    assert [r.job.id for r in second.results] == ["a"] and third.results == []


async def test_platforms_without_an_adapter_are_left_for_their_owner() -> None:
    storage = FakeStorage([_job("a", JobStatus.SUCCEEDED, platform="slack")])
    await Delivery(storage, {"web": RecordingAdapter()}).deliver_pending()
    assert storage.receipts == {}


async def test_a_failing_adapter_is_retried_then_given_up() -> None:
    storage = FakeStorage([_job("a", JobStatus.SUCCEEDED)])
    flaky = RecordingAdapter(fail_times=2)
    delivery = Delivery(storage, {"web": flaky})
    assert await delivery.deliver_pending() == 0
    assert await delivery.deliver_pending() == 0
    assert await delivery.deliver_pending() == 1
    assert storage.receipts == {"a": "msg-a"}

    storage = FakeStorage([_job("b", JobStatus.SUCCEEDED)])
    dead = RecordingAdapter(fail_times=100)
    delivery = Delivery(storage, {"web": dead})
    for _ in range(5):
        await delivery.deliver_pending()
    assert storage.receipts == {"b": "gave-up"}


async def test_progress_is_forwarded_in_steps() -> None:
    storage = FakeStorage([_job("a", JobStatus.RUNNING, progress=0.0)])
    web = RecordingAdapter()
    delivery = Delivery(storage, {"web": web})
    for value in (0.0, 0.05, 0.3, 0.35, 0.9):
        storage.jobs["a"] = replace(storage.jobs["a"], progress=value)
        await delivery.show_progress()
    assert web.progress == [("a", 0.0), ("a", 0.3), ("a", 0.9)]
