"""A storage call cancelled half-way must not leave the SQLite connection inside a transaction.

Found by the chaos run (benchmarks/chaos.py): the worker cancels its heartbeat task when a
batch ends, and a cancel that lands while ``BEGIN IMMEDIATE`` (or a query, or ``COMMIT``) is
running on aiosqlite's thread skipped the rollback. The connection stayed in the transaction
for good: every later call failed with "cannot start a transaction within a transaction", and
since the open transaction held the file's write lock, every other process's writes stalled.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gouache.storage import open_storage
from tests.support.factories import make_request


async def test_cancelled_calls_leave_the_connection_usable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with open_storage(url) as storage, open_storage(url) as other:
        job, _ = await storage.enqueue(make_request(request_id="first"))
        for ticks in range(12):  # cancel at every await point of one transaction in turn
            call = asyncio.create_task(storage.heartbeat("w1", [job.id], 30))
            for _ in range(ticks):
                await asyncio.sleep(0)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            made, created = await asyncio.wait_for(
                storage.enqueue(make_request(request_id=f"after-{ticks}")), 10
            )
            assert created, ticks
            # ...and no write lock was left behind for the other processes on the file.
            assert (await asyncio.wait_for(other.enqueue(make_request(request_id=f"o-{ticks}")), 10))[1]
