"""Deficit round robin by user, charged in image-steps, and Jain's index."""

from __future__ import annotations

import pytest

from gouache.generation.fairness import DeficitRoundRobin, jain_index


def test_backlogged_users_receive_equal_work_whatever_their_job_sizes():
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(quantum=20)
    for n in range(1000):
        drr.push("heavy", f"h{n}", cost=50)  # a 50-step lane
        drr.push("light", f"l{n}", cost=20)
        drr.push("tiny", f"t{n}", cost=4)
    served = {"heavy": 0.0, "light": 0.0, "tiny": 0.0}
    cost = {"h": 50, "l": 20, "t": 4}
    for _ in range(300):
        item = drr.pop()
        user = {"h": "heavy", "l": "light", "t": "tiny"}[item[0]]
        served[user] += cost[item[0]]
    spread = max(served.values()) - min(served.values())
    assert spread <= 50 + 20  # within one max cost plus one quantum
    assert jain_index(list(served.values())) > 0.99


def test_fifo_within_a_user_and_round_robin_across():
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(quantum=10)
    for item in ("a1", "a2", "a3"):
        drr.push("a", item, cost=10)
    drr.push("b", "b1", cost=10)
    drr.push("c", "c1", cost=10)
    assert [drr.pop() for _ in range(5)] == ["a1", "b1", "c1", "a2", "a3"]
    assert drr.pop() is None and len(drr) == 0


def test_peek_is_what_pop_takes_and_changes_nothing_more():
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(quantum=5)
    drr.push("a", "big", cost=12)
    drr.push("b", "small", cost=3)
    assert drr.peek() == drr.peek() == "small"  # a needs three rounds of credit
    assert drr.pop() == "small"
    assert drr.peek() == "big" and drr.pop() == "big"


def test_an_idle_user_keeps_no_credit_and_remove_takes_items_out():
    drr: DeficitRoundRobin[str] = DeficitRoundRobin(quantum=100)
    drr.push("a", "a1", cost=1)
    assert drr.pop() == "a1"  # a leaves with 99 unused credit...
    drr.push("b", "b1", cost=60)
    drr.push("a", "a2", cost=60)
    drr.push("a", "a3", cost=60)
    assert drr.pop() == "b1" and drr.pop() == "a2"  # ...so a3 waits for a's next round
    assert drr.users() == ["a"]
    assert drr.remove(lambda item: item == "a3") == ["a3"]
    assert len(drr) == 0 and drr.users() == []


def test_bad_costs_and_quanta_are_refused():
    with pytest.raises(ValueError):
        DeficitRoundRobin(quantum=0)
    with pytest.raises(ValueError):
        DeficitRoundRobin().push("a", "x", cost=0)


def test_jain_index():
    assert jain_index([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_index([]) == 1.0
