"""Handing jobs back (a draining worker) and model-group claims, on both backends."""

from __future__ import annotations

from gouache.storage import JobStatus
from tests.support.factories import make_request

LEASE = 30.0


async def test_released_jobs_are_queued_at_once_without_counting_the_attempt(storage):
    a, _ = await storage.enqueue(make_request(user="ann"))
    b, _ = await storage.enqueue(make_request(user="bob"))
    claimed = await storage.claim_batch("leaving", 4, LEASE)
    assert {j.id for j in claimed} == {a.id, b.id}
    released = await storage.release("leaving", [a.id, b.id])
    assert {j.id for j in released} == {a.id, b.id}
    for job in released:
        assert job.status is JobStatus.QUEUED and job.attempts == 0
        assert job.lease_until is None and job.progress == 0
    assert await storage.requeue_expired(3) == []  # nothing left waiting for a lease
    again = await storage.claim_batch("staying", 4, LEASE)
    assert {j.id for j in again} == {a.id, b.id}
    assert all(j.attempts == 1 and j.worker_id == "staying" for j in again)


async def test_release_touches_only_what_this_worker_holds(storage):
    mine, _ = await storage.enqueue(make_request(user="ann"))
    await storage.claim_batch("leaving", 1, LEASE)
    theirs, _ = await storage.enqueue(make_request(user="bob"))
    await storage.claim_batch("other", 1, LEASE)
    queued, _ = await storage.enqueue(make_request(user="cid"))
    released = await storage.release("leaving", [mine.id, theirs.id, queued.id, "no-such-job"])
    assert [j.id for j in released] == [mine.id]
    assert (await storage.get_job(theirs.id)).status is JobStatus.RUNNING
    assert (await storage.get_job(theirs.id)).worker_id == "other"
    assert (await storage.get_job(queued.id)).status is JobStatus.QUEUED
    assert await storage.release("leaving", []) == []


async def test_a_released_job_whose_cancel_was_requested_ends_cancelled(storage):
    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("leaving", 1, LEASE)
    await storage.cancel(job.id)
    [released] = await storage.release("leaving", [job.id])
    assert released.status is JobStatus.CANCELLED and released.finished_at is not None


async def test_a_stale_result_after_release_cannot_finish_the_job(storage):
    from gouache.storage import LeaseLost

    job, _ = await storage.enqueue(make_request())
    await storage.claim_batch("leaving", 1, LEASE)
    await storage.release("leaving", [job.id])
    try:
        await storage.complete(job.id, "leaving", [])
    except LeaseLost:
        pass
    else:
        raise AssertionError("a released job was completed by the worker that gave it back")
    assert (await storage.get_job(job.id)).status is JobStatus.QUEUED


async def test_a_worker_of_one_model_group_claims_only_its_models(storage):
    sdxl, _ = await storage.enqueue(make_request(user="ann", model="builtin:demo", width=32, height=32))
    tiny, _ = await storage.enqueue(make_request(user="bob", model="builtin:tiny"))
    for by in ("batch_key", "shape_key"):
        [got] = await storage.claim_batch("tiny-worker", 8, LEASE, by=by, models=["builtin:tiny"])
        assert got.id == tiny.id
        await storage.release("tiny-worker", [got.id])
    assert await storage.claim_batch("w", 8, LEASE, models=["no-such-model"]) == []
    everything = await storage.claim_batch("any-worker", 8, LEASE, by="shape_key")
    assert everything[0].id == sdxl.id  # no group: the fairest job of any model


async def test_releasing_everything_a_worker_holds(storage):
    ids = [(await storage.enqueue(make_request(user=u)))[0].id for u in ("ann", "bob")]
    await storage.claim_batch("leaving", 4, LEASE)
    other, _ = await storage.enqueue(make_request(user="cid"))
    await storage.claim_batch("other", 4, LEASE)
    released = await storage.release("leaving")
    assert sorted(j.id for j in released) == sorted(ids)
    assert (await storage.get_job(other.id)).status is JobStatus.RUNNING
