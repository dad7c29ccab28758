"""Batch claims on both backends: round-robin fairness across users and the batch window."""

from __future__ import annotations

import asyncio
import time

from gouache.storage import JobStatus
from tests.support.factories import make_request

LEASE = 30.0


async def _run_worker(storage, max_images: int) -> list[list[str]]:
    """Claim and complete until the queue is empty; returns each batch's users in order."""
    batches = []
    while batch := await storage.claim_batch("w", max_images, LEASE):
        batches.append([job.user for job in batch])
        for job in batch:
            await storage.complete(job.id, "w", [])
    return batches


def _start_index(batches: list[list[str]]) -> dict[tuple[str, int], int]:
    """(user, nth job of that user) -> index of the batch it started in."""
    seen: dict[str, int] = {}
    out = {}
    for index, users in enumerate(batches):
        for user in users:
            seen[user] = seen.get(user, 0) + 1
            out[(user, seen[user])] = index
    return out


async def _heavy_then_light(storage) -> None:
    for _ in range(20):
        await storage.enqueue(make_request(user="heavy"))
    for i in range(9):
        await storage.enqueue(make_request(user=f"light{i}"))


async def test_light_users_start_before_the_heavy_users_third_job(storage):
    await _heavy_then_light(storage)
    started = _start_index(await _run_worker(storage, max_images=1))
    third = started[("heavy", 3)]
    assert all(started[(f"light{i}", 1)] < third for i in range(9)), started
    assert len(started) == 29


async def test_fairness_survives_service_already_given(storage):
    for _ in range(20):
        await storage.enqueue(make_request(user="heavy"))
    [first] = await storage.claim_batch("w", 1, LEASE)  # the worker is busy with heavy's first
    await storage.complete(first.id, "w", [])
    for i in range(9):
        await storage.enqueue(make_request(user=f"light{i}"))
    started = _start_index([["heavy"]] + await _run_worker(storage, max_images=1))
    assert all(started[(f"light{i}", 1)] < started[("heavy", 3)] for i in range(9)), started


async def test_fair_batches_fill_up_round_robin(storage):
    await _heavy_then_light(storage)
    batches = await _run_worker(storage, max_images=4)
    assert batches[0] == ["heavy", "light0", "light1", "light2"]
    started = _start_index(batches)
    assert all(started[(f"light{i}", 1)] <= started[("heavy", 3)] for i in range(9))
    assert all(len(b) == 4 for b in batches[:-1])


async def test_batch_holds_one_key_and_respects_image_counts(storage):
    big, _ = await storage.enqueue(make_request(user="ann", count=3))
    other_key, _ = await storage.enqueue(make_request(user="bob", steps=30))
    small, _ = await storage.enqueue(make_request(user="cid", count=2))
    tiny, _ = await storage.enqueue(make_request(user="dan", count=1))
    batch = await storage.claim_batch("w", 4, LEASE)
    assert [j.id for j in batch] == [big.id, tiny.id]  # cid's 2 do not fit; dan's 1 does
    assert sum(j.images for j in batch) == 4
    assert {j.request.batch_key for j in batch} == {big.request.batch_key}
    assert (await storage.get_job(other_key.id)).status is JobStatus.QUEUED


async def test_oversized_job_still_runs_alone(storage):
    huge, _ = await storage.enqueue(make_request(count=6))
    assert [j.id for j in await storage.claim_batch("w", 4, LEASE)] == [huge.id]


# A window no test waits out: a claim that returns at all did not wait for it. GUARD turns a
# claim that wrongly waits into a failure instead of a hung suite; no test measures speed.
HOUR = 3600.0
GUARD = 60.0


async def test_window_waits_when_the_batch_is_not_full(storage):
    await storage.enqueue(make_request())
    start = time.monotonic()
    batch = await storage.claim_batch("w", 4, LEASE, window_seconds=0.6)
    # Only a lower bound: a slow machine waits longer, never shorter.
    assert len(batch) == 1 and time.monotonic() - start >= 0.45


async def test_window_never_waits_when_full(storage):
    for user in "abcd":
        await storage.enqueue(make_request(user=user))
    batch = await asyncio.wait_for(storage.claim_batch("w", 4, LEASE, window_seconds=HOUR), GUARD)
    assert len(batch) == 4


async def test_window_returns_as_soon_as_the_batch_fills(storage, open_more):
    producer = await open_more()  # another process's writes: seen by wake-up or poll
    await storage.enqueue(make_request(user="a"))

    async def later():
        await asyncio.sleep(0.3)
        await producer.enqueue(make_request(user="b", count=3))

    claim = asyncio.wait_for(storage.claim_batch("w", 4, LEASE, window_seconds=HOUR), GUARD)
    batch, _ = await asyncio.gather(claim, later())
    assert sorted(j.user for j in batch) == ["a", "b"]  # it waited for b, not for the window


async def test_window_counts_from_the_head_jobs_arrival(storage):
    """The queue reports how long the head job has waited (a head past its window is claimed
    at once: tests/unit/storage/test_batching.py, on a simulated clock)."""
    await storage.enqueue(make_request())
    await asyncio.sleep(0.5)
    head = await storage._peek()
    assert head is not None and head.images == 1 and head.age_seconds >= 0.45
    batch = await asyncio.wait_for(storage.claim_batch("w", 4, LEASE, window_seconds=0.5), GUARD)
    assert len(batch) == 1


async def test_empty_queue_returns_at_once(storage):
    assert await asyncio.wait_for(storage.claim_batch("w", 4, LEASE, window_seconds=HOUR), GUARD) == []


async def test_step_level_claims_group_by_shape_not_settings(storage):
    """``by="shape_key"``: different steps, samplers and guidance share a claim; sizes do not."""
    mixed = [make_request(user=f"u{i}", steps=s, sampler=k, guidance=g)
             for i, (s, k, g) in enumerate([(4, "ddim", 5.0), (20, "euler", 7.5), (30, "pndm", 1.0)])]  # fmt: skip
    other_size = make_request(user="w", width=96, height=64)
    for request in [*mixed, other_size]:
        await storage.enqueue(request)
    assert len({r.batch_key for r in mixed}) == 3 and len({r.shape_key for r in mixed}) == 1
    first = await storage.claim_batch("w", 8, LEASE, by="shape_key")
    assert sorted(j.user for j in first) == ["u0", "u1", "u2"]
    [second] = await storage.claim_batch("w", 8, LEASE, by="shape_key")
    assert second.request.shape_key == other_size.shape_key


async def test_joiners_are_claimed_by_shape_in_fair_order_within_the_budget(storage):
    for user in ("a", "a", "b", "c"):
        await storage.enqueue(make_request(user=user, steps=7))
    await storage.enqueue(make_request(user="d", width=96))
    shape = make_request().shape_key
    joined = await storage.claim_joiners("w", shape, 3, LEASE)
    assert [j.user for j in joined] == ["a", "b", "c"]  # a's second job waits its round
    assert all(j.status is JobStatus.RUNNING for j in joined)
    assert await storage.claim_joiners("w", shape, 0, LEASE) == []
    [last] = await storage.claim_joiners("w", shape, 8, LEASE)
    assert last.user == "a"
    assert await storage.claim_joiners("w", shape, 8, LEASE) == []


async def test_fair_rounds_are_charged_in_image_steps(storage):
    # One user's 4-image 50-step jobs (200 image-steps each) beside five users' 1-image 20-step
    # jobs: round robin by job would start one big job per light job.
    for _ in range(3):
        await storage.enqueue(make_request(user="heavy", count=4, steps=50))
    for _ in range(12):
        for i in range(5):
            await storage.enqueue(make_request(user=f"light{i}", steps=20))
    order: list[str] = []
    while batch := await storage.claim_batch("w", 1, LEASE):
        order += [job.user for job in batch]
        for job in batch:
            await storage.complete(job.id, "w", [])
    assert len(order) == 3 + 60
    # Before heavy's second job starts, every light user has had ten jobs: 200 image-steps each.
    second = [n for n, user in enumerate(order) if user == "heavy"][1]
    assert all(order[:second].count(f"light{i}") == 10 for i in range(5)), order
