"""A per-workspace budget for ``chat.update``: progress edits that would overrun it are skipped.

Slack rate-limits ``chat.update`` per workspace (Tier 3, about 50 a minute) and the limit is
shared by every message the app edits there. A progress edit is only worth showing while it is
fresh, so an edit over budget is dropped, never queued: a queue would deliver stale percentages
late and delay the final "done" edit behind them. Final edits (results, errors) always go out
and are counted, so the progress edits after them back off.

This is a sliding one-minute window of timestamps rather than pyrate-limiter: that library
shares one bucket across names unless given a bucket factory and runs a leak thread per
limiter, while this is twenty lines, has no thread, and takes an injected clock in tests.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["UpdateBudget"]

WINDOW_SECONDS = 60.0


class UpdateBudget:
    """``try_spend(team)`` is True when an edit fits; ``spend(team)`` counts one regardless."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.per_minute = per_minute
        self._clock = clock
        self._spent: dict[str, deque[float]] = {}

    def _window(self, team: str) -> deque[float]:
        spent = self._spent.setdefault(team, deque())
        horizon = self._clock() - WINDOW_SECONDS
        while spent and spent[0] <= horizon:
            spent.popleft()
        return spent

    def left(self, team: str) -> int:
        return max(0, self.per_minute - len(self._window(team)))

    def try_spend(self, team: str) -> bool:
        """Take one edit from ``team``'s minute if any is left (progress edits)."""
        spent = self._window(team)
        if len(spent) >= self.per_minute:
            return False
        spent.append(self._clock())
        return True

    def spend(self, team: str) -> None:
        """Count an edit that must go out anyway (the final result or error)."""
        self._window(team).append(self._clock())
