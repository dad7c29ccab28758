"""Backend-neutral queue policy: fair order, batch selection, the batch window, token buckets.

Fairness is round-robin by user, charged in work. Ranking a user's *queued* jobs at claim time
forgets the service a user already got: once their oldest job is claimed their next one is rank 1
again and older than everyone else's. So each job gets its round once, at enqueue
(``fair_round``): the current round (the lowest queued, else the highest running) or the end of
the user's own latest unfinished job's turn, whichever is later. A turn lasts the job's
``fair_cost`` rounds, its image-steps in quanta of ``FAIR_QUANTUM``: a 1-image 20-step job
takes one round, a 4-image 50-step job ten, so ten light users each get ten jobs' worth of work
in the time a heavy user gets one big job (start-time fair queueing, Goyal et al. 1996, with
DRR's quantum). Claims order by ``(fair_round, created_at, id)``; inside a running batch the
rows are then shared per step by ``generation.fairness.FairShare``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "FAIR_QUANTUM",
    "Head",
    "fair_cost",
    "select_batch",
    "claim_with_window",
    "refill",
    "seconds_until_token",
]

T = TypeVar("T")

FAIR_QUANTUM = 20  # image-steps per fair round: one default 1-image 20-step job


def fair_cost(image_steps: int) -> int:
    """Rounds a job's turn lasts: its image-steps in quanta of ``FAIR_QUANTUM`` (at least 1)."""
    return max(1, -(-image_steps // FAIR_QUANTUM))


@dataclass(frozen=True)
class Head:
    """The fairest queued job's batch key, how long it has waited, and images waiting for it."""

    batch_key: str
    age_seconds: float
    images: int
    retried: bool = False  # runs alone (select_batch): no point waiting for company
    model: str = ""


def select_batch(candidates: Sequence[tuple[str, int, int]], max_images: int) -> list[str]:
    """Pick job ids, in fair order, from ``(id, images, attempts)`` that fit in ``max_images``.

    The first candidate is always taken (a job larger than a batch still has to run); later ones
    that do not fit are skipped so smaller jobs behind them can fill the batch. A job that was
    already tried (its worker died) runs alone: if it is poison, it cannot take the other
    users' jobs down with it again, and they do not burn attempts towards dead.
    """
    chosen: list[str] = []
    total = 0
    for job_id, images, attempts in candidates:
        if attempts > 0:
            if chosen:
                continue
            return [job_id]
        if chosen and total + images > max_images:
            continue
        chosen.append(job_id)
        total += images
        if total >= max_images:
            break
    return chosen


async def claim_with_window(
    peek: Callable[[], Awaitable[Head | None]],
    claim: Callable[[str], Awaitable[list[T]]],
    wait: Callable[[float], Awaitable[bool]],
    max_images: int,
    window_seconds: float,
    poll_seconds: float,
) -> list[T]:
    """Dynamic batching like Triton's max queue delay, between (never inside) transactions.

    Claims at once when the head's key has ``max_images`` waiting or its head job has already
    waited ``window_seconds``; otherwise sleeps until a wake-up or a poll and looks again.
    Returns [] at once when nothing is queued.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        head = await peek()
        if head is None:
            return []
        waited = max(head.age_seconds, loop.time() - started)
        remaining = window_seconds - waited
        if head.images >= max_images or remaining <= 0 or head.retried:
            jobs = await claim(head.batch_key)
            if jobs:
                return jobs
            await wait(0.01)  # another worker took them between peek and claim: look again
            continue
        await wait(min(remaining, poll_seconds))


def refill(tokens: float, elapsed: float, rate_per_second: float, burst: int) -> float:
    """Token bucket level after ``elapsed`` seconds (a clock going backwards adds nothing)."""
    return min(float(burst), tokens + max(0.0, elapsed) * rate_per_second)


def seconds_until_token(tokens: float, rate_per_second: float) -> float:
    return max(0.0, (1.0 - tokens) / rate_per_second)
