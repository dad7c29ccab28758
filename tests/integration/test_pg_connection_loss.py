"""PostgreSQL connections die (restart, failover, pg_terminate_backend): nothing is lost.

Operations retry for a few seconds on a fresh connection; LISTEN is re-opened so wake-ups keep
coming; polling would cover the gap either way.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gouache.storage import JobStatus
from tests.support.factories import make_request

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


async def _terminate_all(url: str) -> int:
    """Kill every other backend connected to this test database (the pools' and LISTEN's)."""
    admin = await asyncpg.connect(url)
    try:
        return await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()


async def test_terminated_connections_lose_nothing_and_recover(storage, storage_url):
    before = [(await storage.enqueue(make_request(user=f"u{i}")))[0].id for i in range(5)]
    [running] = await storage.claim_batch("w", 1, 30)
    assert await _terminate_all(storage_url) >= 1

    # Reconnects rather than hanging (the guard fails it instead of the suite's timeout).
    again, created = await asyncio.wait_for(storage.enqueue(make_request(user="u0", request_id="after")), 60)
    assert created
    done = await storage.complete(running.id, "w", [])
    assert done.status is JobStatus.SUCCEEDED
    jobs = {j.id: j for j in await storage.list_jobs(limit=100)}
    assert set(before) | {again.id} == set(jobs)
    assert sum(j.status is JobStatus.QUEUED for j in jobs.values()) == 5


async def test_operations_during_the_drop_all_land(storage, storage_url):
    async def submit(i: int):
        await asyncio.sleep(0.01 * i)
        return await storage.enqueue(make_request(user=f"u{i % 4}", request_id=f"r{i}"))

    results = await asyncio.gather(*(submit(i) for i in range(40)), _terminate_all(storage_url))
    assert all(created for _, created in results[:-1])
    assert len(await storage.list_jobs(limit=100)) == 40


async def test_listen_is_reopened_after_the_connection_dies(storage, open_more, storage_url):
    listener = await open_more(poll_seconds=30.0)  # only NOTIFY can wake it quickly
    producer = storage
    assert await listener.list_jobs() == []
    await asyncio.sleep(0.3)  # LISTEN is up
    await _terminate_all(storage_url)
    await asyncio.sleep(1.5)  # time to reconnect (backoff starts at 0.1 s)
    assert await listener.wait_for_event(0.3) is False  # quiet: the reconnect wake-up is over
    waiter = asyncio.create_task(listener.wait_for_event(10.0))
    await asyncio.sleep(0.1)
    await producer.enqueue(make_request())
    assert await waiter is True  # woken by NOTIFY: the poll is 30 s and the wait gives up at 10
