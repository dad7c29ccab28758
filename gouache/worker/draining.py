"""Leaving cleanly on SIGTERM (a scale-down): finish what fits the grace period, hand back the rest.

The signal sets ``stop``: the loop stops claiming and the running batch stops taking joiners, but
its lanes go on. ``drain`` gives them ``worker.drain_seconds``; whatever still runs then is
released to the queue at once (``Storage.release``: queued again, the attempt not counted), so
another worker starts it within its poll interval instead of after a lease expiry, and this
process exits 0. The loop is cancelled before the release, so nothing it does can store a
released job; the engine's current call cannot be interrupted from a thread, so the process
exits without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from gouache.storage.base import Storage, StorageError

__all__ = ["drain"]

log = logging.getLogger("gouache.worker")


async def drain(
    work: Coroutine[Any, Any, None], stop: asyncio.Event, storage: Storage, worker_id: str,
    drain_seconds: float,
) -> bool:  # fmt: skip
    """Run ``work`` (the worker loop) to its end; once ``stop`` is set, for ``drain_seconds`` more.

    Returns True when lanes were handed back and ``work`` was cancelled mid-call (an engine
    thread may still be busy: the caller should exit without waiting for it).
    """
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("worker %s stopping: no new claims; %gs for running lanes", worker_id, drain_seconds)
            await asyncio.wait({task}, timeout=drain_seconds)
    except BaseException:
        task.cancel()
        raise
    finally:
        stopping.cancel()
    if task.done():
        task.result()  # DeviceLost and other failures propagate
        return False
    # Stop the loop first (at whatever it awaits: a step's thread, a claim), then hand back
    # everything it still holds: nothing can be claimed or stored by this worker in between.
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        released = await storage.release(worker_id)
    except StorageError as exc:  # the database is away: the leases expire and the sweeper re-queues
        log.warning("could not hand back running jobs, their leases will expire: %s", exc)
        released = []
    log.info("worker %s handed back %d unfinished job(s): %s", worker_id, len(released),
             " ".join(sorted(job.id for job in released)))  # fmt: skip
    return True
