"""Queue semantics on both backends: idempotency, leases, dead jobs, cancel, stale workers."""

from __future__ import annotations

import asyncio

import pytest

from gouache.errors import NotFound
from gouache.storage import Artifact, ArtifactKind, JobStatus, LeaseLost
from tests.support.factories import make_request

LEASE = 30.0


def _image(job_id: str, name: str, data: bytes = b"png") -> Artifact:
    return Artifact(job_id, name, ArtifactKind.IMAGE, "image/png", data)


async def _expire(storage, max_attempts: int = 3):
    await asyncio.sleep(0.25)
    return await storage.requeue_expired(max_attempts)


async def test_enqueue_is_idempotent_on_platform_request_id(storage):
    upload = Artifact("", "input-0.png", ArtifactKind.INPUT, "image/png", b"depth")
    first, created = await storage.enqueue(make_request(request_id="i-1", platform="discord"), [upload])
    again, created_again = await storage.enqueue(make_request(request_id="i-1", platform="discord"))
    other, other_created = await storage.enqueue(make_request(request_id="i-1", platform="slack"))
    assert (created, created_again, other_created) == (True, False, True)
    assert again.id == first.id != other.id
    assert len(await storage.list_jobs()) == 2
    assert [(a.name, a.data) for a in await storage.artifacts(first.id)] == [("input-0.png", b"depth")]
    assert first.status is JobStatus.QUEUED and first.attempts == 0
    assert (await storage.get_job(first.id)).request == first.request


async def test_claim_sets_lease_worker_and_counts_the_attempt(storage):
    job, _ = await storage.enqueue(make_request())
    [claimed] = await storage.claim_batch("w1", 4, LEASE)
    assert claimed.id == job.id and claimed.status is JobStatus.RUNNING
    assert claimed.attempts == 1 and claimed.worker_id == "w1"
    assert claimed.lease_until is not None and claimed.started_at is not None
    assert await storage.claim_batch("w2", 4, LEASE) == []


@pytest.mark.parametrize("by", ["batch_key", "shape_key"])
async def test_a_model_on_the_card_goes_first_until_the_other_model_has_waited_its_patience(storage, by):
    older, _ = await storage.enqueue(make_request(user="ann", model="other"))
    newer = [(await storage.enqueue(make_request(user=u, model="loaded")))[0].id for u in ("bob", "cid")]
    claim = lambda prefer, patience: storage.claim_batch(  # noqa: E731
        "w1", 4, LEASE, by=by, prefer=prefer, patience_seconds=patience)
    assert [j.id for j in await claim(["loaded"], 60.0)] == newer  # "other" would mean a switch
    await storage.release("w1")
    assert [j.id for j in await claim([], 60.0)] == [older.id]  # nothing loaded: fair order
    await storage.release("w1")
    assert [j.id for j in await claim(["loaded"], 0.0)] == [older.id]  # no patience: fair order
    await storage.release("w1")
    await asyncio.sleep(0.3)
    assert [j.id for j in await claim(["loaded"], 0.25)] == [older.id]  # it has waited long enough


async def test_expired_lease_goes_back_to_the_queue(storage):
    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("w1", 1, 0.1)
    [requeued] = await _expire(storage)
    assert requeued.id == job.id and requeued.status is JobStatus.QUEUED and requeued.attempts == 1
    [again] = await storage.claim_batch("w2", 1, LEASE)
    assert again.attempts == 2 and again.worker_id == "w2"
    assert await storage.requeue_expired(3) == []  # a live lease is left alone


async def test_dead_after_exactly_three_attempts_while_others_complete(storage):
    crasher, _ = await storage.enqueue(make_request(user="mallory", steps=9))
    others = [(await storage.enqueue(make_request(user=u)))[0].id for u in ("ann", "bob")]
    claims = 0
    for _ in range(12):
        batch = await storage.claim_batch("w", 1, 0.1)
        if not batch:
            if not await _expire(storage):
                break
            continue
        [job] = batch
        if job.id == crasher.id:
            claims += 1  # the worker dies: no complete, the lease runs out
            await _expire(storage)
        else:
            await storage.complete(job.id, "w", [_image(job.id, "image-0.png")])
    dead = await storage.get_job(crasher.id)
    assert claims == 3 and dead.status is JobStatus.DEAD and dead.attempts == 3
    assert "3 times" in dead.error and dead.finished_at is not None
    assert [(await storage.get_job(i)).status for i in others] == [JobStatus.SUCCEEDED] * 2
    assert await storage.claim_batch("w", 1, LEASE) == []


async def test_cancel_queued_is_immediate(storage):
    job, _ = await storage.enqueue(make_request())
    cancelled = await storage.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    assert await storage.claim_batch("w", 4, LEASE) == []
    with pytest.raises(NotFound):
        await storage.cancel("no-such-job")


async def test_cancel_running_is_requested_then_honoured(storage):
    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("w", 1, LEASE)
    requested = await storage.cancel(job.id)
    assert requested.status is JobStatus.RUNNING and requested.cancel_requested
    assert await storage.heartbeat("w", [job.id], LEASE) == {job.id}
    stopped = await storage.fail(job.id, "w", "stopped on request")
    assert stopped.status is JobStatus.CANCELLED


async def test_heartbeat_extends_the_lease_and_reports_lost_jobs(storage):
    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("w", 1, 0.3)
    for _ in range(5):
        await asyncio.sleep(0.1)
        assert await storage.heartbeat("w", [job.id], 0.3) == set()
    assert await storage.requeue_expired(3) == []
    assert await storage.heartbeat("intruder", [job.id], 5) == {job.id}  # not its job
    assert (await storage.stats()).last_worker_seen is not None


async def test_stale_worker_cannot_complete_or_resurrect(storage):
    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("old", 1, 0.1)
    await _expire(storage)
    await storage.claim_batch("new", 1, LEASE)
    with pytest.raises(LeaseLost):
        await storage.complete(job.id, "old", [_image(job.id, "image-0.png", b"stale")])
    with pytest.raises(LeaseLost):
        await storage.fail(job.id, "old", "late failure")
    done = await storage.complete(job.id, "new", [_image(job.id, "image-0.png", b"fresh")])
    assert done.status is JobStatus.SUCCEEDED and done.worker_id == "new"
    with pytest.raises(LeaseLost):  # after success, too
        await storage.complete(job.id, "old", [_image(job.id, "image-1.png")])
    assert [(a.name, a.data) for a in await storage.artifacts(job.id)] == [("image-0.png", b"fresh")]
    assert (await storage.get_job(job.id)).status is JobStatus.SUCCEEDED


async def test_rerun_never_duplicates_artifacts(storage):
    job, _ = await storage.enqueue(make_request(count=2))
    await storage.claim_batch("w", 4, LEASE)
    outputs = [_image(job.id, f"image-{i}.png", b"v1") for i in range(2)]
    await storage.complete(job.id, "w", outputs)
    again = await storage.complete(job.id, "w", [_image(job.id, "image-0.png", b"v2")])  # retried
    assert again.status is JobStatus.SUCCEEDED
    names = [a.name for a in await storage.artifacts(job.id)]
    assert names == ["image-0.png", "image-1.png"]


async def test_progress_only_for_the_lease_holder(storage):
    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("w", 1, LEASE)
    assert await storage.set_progress(job.id, 0.5, "w")
    assert not await storage.set_progress(job.id, 0.9, "other")
    assert (await storage.get_job(job.id)).progress == pytest.approx(0.5)


async def test_queue_position_in_fair_order(storage):
    a1, _ = await storage.enqueue(make_request(user="ann", count=2))
    a2, _ = await storage.enqueue(make_request(user="ann"))
    b1, _ = await storage.enqueue(make_request(user="bob", count=3))
    assert await storage.queue_position(a1.id) == (1, 2)
    assert await storage.queue_position(b1.id) == (2, 5)  # bob's first before ann's second
    assert await storage.queue_position(a2.id) == (3, 6)
    await storage.claim_batch("w", 2, LEASE)  # takes a1 (2 images)
    assert await storage.queue_position(a1.id) is None
    assert await storage.queue_position(b1.id) == (1, 3)
    stats = await storage.stats("ann")
    assert (stats.queued_jobs, stats.queued_images, stats.running_jobs) == (2, 4, 1)
    assert stats.user_pending == 2


async def test_delivery_receipt_is_written_once(storage):
    job, _ = await storage.enqueue(make_request(platform="discord"))
    await storage.claim_batch("w", 1, LEASE)
    await storage.complete(job.id, "w", [])
    assert [j.id for j in await storage.undelivered(["discord"])] == [job.id]
    assert await storage.undelivered(["slack"]) == []
    assert await storage.mark_delivered(job.id, "msg-1") is True
    assert await storage.mark_delivered(job.id, "msg-2") is False
    assert await storage.undelivered(["discord"]) == []


async def test_concurrent_workers_never_claim_the_same_job(storage, open_more):
    for i in range(30):
        await storage.enqueue(make_request(user=f"u{i % 5}"))
    handles = [storage] + [await open_more() for _ in range(3)]

    async def drain(handle, name):
        got = []
        while batch := await handle.claim_batch(name, 2, LEASE):
            got += [j.id for j in batch]
        return got

    results = await asyncio.gather(*(drain(h, f"w{i}") for i, h in enumerate(handles)))
    claimed = [job_id for ids in results for job_id in ids]
    assert len(claimed) == 30 == len(set(claimed))


async def test_reopening_does_not_migrate_twice(storage, open_more):
    await storage.enqueue(make_request(request_id="keep"))
    other = await open_more()
    assert len(await other.list_jobs()) == 1


async def test_a_poison_job_in_a_batch_dies_alone(storage):
    """Batched with the crasher, innocent jobs crash once, then run alone and succeed."""
    crasher, _ = await storage.enqueue(make_request(user="mallory"))
    others = [(await storage.enqueue(make_request(user=u)))[0].id for u in ("ann", "bob")]
    sizes = []
    for _ in range(12):
        batch = await storage.claim_batch("w", 4, 0.1)
        if not batch:
            if not await _expire(storage):
                break
            continue
        sizes.append(len(batch))
        if any(job.id == crasher.id for job in batch):
            await _expire(storage)  # the whole batch dies with its worker
            continue
        for job in batch:
            await storage.complete(job.id, "w", [])
    dead = await storage.get_job(crasher.id)
    assert dead.status is JobStatus.DEAD and dead.attempts == 3
    for job_id in others:
        job = await storage.get_job(job_id)
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    assert sizes[0] == 3 and max(sizes[1:]) == 1, sizes
