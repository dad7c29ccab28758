"""Who gets a running batch's rows: deficit round robin by user, charged in image-steps.

When more lanes wait than the row budget holds, plain FIFO lets one user's burst crowd everyone
out, and round robin by job lets a 4-image 50-step job take as much as ten 1-image 20-step
jobs. ``FairShare`` is deficit round robin (Shreedhar and Varghese, SIGCOMM 1995) at step
granularity: every UNet step is a round in which each user with lanes gets one lane-step per
pass, passes repeat while rows are left, and a user's deficit is the image-steps it has
received, so the last, partial pass goes to whoever is behind. Over any stretch of steps,
backlogged users receive the same image-steps, whatever the sizes of their jobs.

Rows are given per step, not once per lane: a lane that is not chosen is paused (it keeps its
latents, scheduler state and generator, so its result is unchanged) and resumes when its user's
turn comes. Charging a lane its whole cost when it starts and letting it keep its rows to the
end (DRR over admissions) is fair only over times much longer than a lane: a 50-step lane that
started while the other users' jobs were between submissions kept its rows for 50 steps, and in
the throughput benchmark's heavy-user case that gave the heavy user twice a light user's work.

Pure Python, no torch: the benchmark and tests use it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

__all__ = ["FairShare", "jain_index"]

T = TypeVar("T")


class FairShare:
    """Per-step lane selection by user, least-served user first; remembers what each received.

    A user with no lanes left is forgotten (waiting is not saving up); a user who (re)appears
    starts level with the least-served user present, so a newcomer neither jumps the queue with
    credit it never earned nor waits behind everyone's history.
    """

    def __init__(self) -> None:
        self._served: dict[Hashable, int] = {}  # image-steps received while present

    def select(
        self,
        lanes: Sequence[T],
        budget: int,
        *,
        user: Callable[[T], Hashable],
        rows: Callable[[T], int],
    ) -> list[T]:
        """The lanes to run this step, at most ``budget`` rows (one lane at least, if any).

        ``lanes`` come in each user's own priority order (the caller puts started lanes first);
        that order is kept within a user. A lane that does not fit the rows left is passed over
        for this step, and smaller ones behind it may still take the rows.
        """
        queues: dict[Hashable, list[T]] = {}
        for lane in lanes:
            queues.setdefault(user(lane), []).append(lane)
        self._forget_absent(queues)
        floor = min((self._served[u] for u in queues if u in self._served), default=0)
        for u in queues:
            self._served.setdefault(u, floor)
        order = sorted(queues, key=lambda u: self._served[u])  # stable: ties keep arrival order
        chosen: list[T] = []
        left = budget
        depth = 0
        while left > 0 and any(depth < len(q) for q in queues.values()):
            for u in order:
                queue = queues[u]
                if depth < len(queue) and (rows(queue[depth]) <= left or not chosen):
                    chosen.append(queue[depth])
                    left -= rows(queue[depth])
            depth += 1
        return chosen

    def charge(self, users: Sequence[Hashable]) -> None:
        """Record one image-step for each entry (a user once per lane stepped)."""
        for u in users:
            self._served[u] = self._served.get(u, 0) + 1

    def served(self, u: Hashable) -> int:
        """Image-steps ``u`` received while present (0 for a user not present)."""
        return self._served.get(u, 0)

    def _forget_absent(self, present: dict[Hashable, list[T]]) -> None:
        for u in [u for u in self._served if u not in present]:
            del self._served[u]


def jain_index(amounts: list[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when equal, 1/n when one takes all."""
    if not amounts:
        return 1.0
    total = sum(amounts)
    squares = sum(x * x for x in amounts)
    if squares == 0:
        return 1.0
    return total * total / (len(amounts) * squares)
