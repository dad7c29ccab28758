"""Deficit round robin (Shreedhar and Varghese, SIGCOMM 1995) keyed by user, charged in work.

Who gets the free rows of a running batch when there are more waiting lanes than rows? Plain
round robin by job would let one user's 4-image 50-step jobs take as much as ten users' 1-image
20-step jobs; FIFO would let a burst from one user crowd everyone else out. DRR gives every user
with waiting work a ``quantum`` of credit per round and serves their queue while the head's cost
(image-steps: one lane of ``steps`` steps costs ``steps``) fits the credit, so over time each
backlogged user receives the same image-steps, whatever sizes their jobs have.

Pure Python, no torch: the benchmark and the worker's claim logic can use it as it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["DeficitRoundRobin", "jain_index"]

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    item: T
    cost: float


class DeficitRoundRobin(Generic[T]):
    """Queues per user, served in deficit-round-robin order.

    ``peek()`` returns what ``pop()`` would return, so a caller can check that the next item fits
    (enough free rows) before taking it; peeking twice changes nothing more than peeking once.
    """

    def __init__(self, quantum: float = 20.0) -> None:
        if quantum <= 0:
            raise ValueError(f"quantum must be positive, not {quantum}")
        self.quantum = float(quantum)
        self._queues: dict[Hashable, deque[_Entry[T]]] = {}
        self._deficit: dict[Hashable, float] = {}
        self._active: deque[Hashable] = deque()  # users with waiting items, in round order
        self._credited = False  # the head user already got this visit's quantum

    def push(self, user: Hashable, item: T, cost: float) -> None:
        """Queue ``item`` for ``user``; ``cost`` is the work it will receive (image-steps)."""
        if cost <= 0:
            raise ValueError(f"cost must be positive, not {cost}")
        queue = self._queues.setdefault(user, deque())
        if not queue:
            self._active.append(user)
            self._deficit[user] = 0.0
        queue.append(_Entry(item, float(cost)))

    def peek(self) -> T | None:
        """The next item in DRR order (None when empty), without taking it."""
        while self._active:
            user = self._active[0]
            if not self._credited:
                self._deficit[user] += self.quantum
                self._credited = True
            head = self._queues[user][0]
            if head.cost <= self._deficit[user]:
                return head.item
            self._active.rotate(-1)  # not enough credit: the next user's turn
            self._credited = False
        return None

    def pop(self) -> T | None:
        """Take the next item in DRR order (None when empty)."""
        item = self.peek()
        if item is None:
            return None
        user = self._active[0]
        entry = self._queues[user].popleft()
        self._deficit[user] -= entry.cost
        if not self._queues[user]:
            self._drop_user(user)
        return item

    def remove(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out every waiting item for which ``predicate`` holds (cancelled jobs)."""
        removed: list[T] = []
        for user in list(self._active):
            queue = self._queues[user]
            kept = deque(e for e in queue if not predicate(e.item))
            removed += [e.item for e in queue if predicate(e.item)]
            self._queues[user] = kept
            if not kept:
                self._drop_user(user)
        return removed

    def users(self) -> list[Hashable]:
        """Users with waiting items, in the order of the current round."""
        return list(self._active)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __iter__(self) -> Iterator[T]:
        for user in self._active:
            yield from (e.item for e in self._queues[user])

    def _drop_user(self, user: Hashable) -> None:
        # An idle user keeps no credit (classic DRR): waiting is not saving up.
        was_head = bool(self._active) and self._active[0] == user
        self._active.remove(user)
        self._deficit.pop(user, None)
        self._queues.pop(user, None)
        if was_head:
            self._credited = False


def jain_index(amounts: list[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when equal, 1/n when one takes all."""
    if not amounts:
        return 1.0
    total = sum(amounts)
    squares = sum(x * x for x in amounts)
    if squares == 0:
        return 1.0
    return total * total / (len(amounts) * squares)
