"""Queue policy without a database: batch selection, token buckets, the window, named SQL."""

from __future__ import annotations

import pytest

from gouache.storage.batching import (
    Head,
    claim_with_window,
    refill,
    seconds_until_token,
    select_batch,
)
from gouache.storage.migrations import discover
from gouache.storage.postgres import to_positional
from gouache.storage.queries import load_queries


def test_select_batch_fills_in_fair_order_and_skips_what_does_not_fit():
    assert select_batch([("a", 3, 0), ("b", 2, 0), ("c", 1, 0), ("d", 1, 0)], 4) == ["a", "c"]
    assert select_batch([("big", 9, 0), ("b", 1, 0)], 4) == ["big"]
    assert select_batch([], 4) == []


def test_retried_jobs_run_alone():
    assert select_batch([("r", 1, 1), ("a", 1, 0)], 4) == ["r"]
    assert select_batch([("a", 1, 0), ("r", 1, 2), ("b", 1, 0)], 4) == ["a", "b"]


def test_token_bucket_math():
    assert refill(0.0, 30.0, 0.1, 5) == pytest.approx(3.0)
    assert refill(4.5, 100.0, 0.1, 5) == 5.0
    assert refill(2.0, -50.0, 0.1, 5) == 2.0  # a clock going backwards adds nothing
    assert seconds_until_token(0.25, 0.1) == pytest.approx(7.5)
    assert seconds_until_token(1.0, 0.1) == 0.0


def test_named_parameters_become_positional_and_casts_survive():
    sql, names = to_positional("SELECT :a::text, 'x:y', :b, :a FROM t WHERE c = ANY(:ids::text[])")
    assert sql == "SELECT $1::text, 'x:y', $2, $1 FROM t WHERE c = ANY($3::text[])"
    assert names == ["a", "b", "ids"]


def test_both_dialects_define_the_same_queries_and_migrations():
    assert set(load_queries("sqlite")) == set(load_queries("postgres"))
    assert [m.version for m in discover("sqlite")] == [m.version for m in discover("postgres")]


async def test_window_claims_at_once_when_full_and_after_the_window_otherwise():
    """On a simulated clock: each wait ages the head job by the time it asked to sleep."""
    claimed: list[str] = []
    waits: list[float] = []
    age = 0.0

    async def claim(key: str) -> list[str]:
        claimed.append(key)
        return [key]

    async def wait(timeout: float) -> bool:
        nonlocal age
        waits.append(timeout)
        age += timeout
        return False

    async def full() -> Head:
        return Head("k", age, 8)

    async def partial() -> Head:
        return Head("k", age, 1)

    assert await claim_with_window(full, claim, wait, 8, 5.0, 0.05) == ["k"]
    assert waits == []  # a full batch never waits
    assert await claim_with_window(partial, claim, wait, 8, 0.3, 0.05) == ["k"]
    assert sum(waits) == pytest.approx(0.3) and max(waits) <= 0.05  # polls until the window ends
    assert claimed == ["k", "k"]
    waits.clear()
    assert await claim_with_window(partial, claim, wait, 8, 0.3, 0.05) == ["k"]
    assert waits == []  # the head has waited its window already: claimed at once
