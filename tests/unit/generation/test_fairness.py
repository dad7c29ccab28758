"""FairShare: per-step deficit round robin by user, charged in image-steps; Jain's index."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gouache.generation.loop.fairness import FairShare, jain_index


@dataclass(eq=False)
class Lane:
    user: str
    steps: int
    rows: int = 2
    done: int = 0


def _select(share: FairShare, lanes: list[Lane], budget: int) -> list[Lane]:
    return share.select(lanes, budget, user=lambda x: x.user, rows=lambda x: x.rows)


def _run(share: FairShare, lanes: list[Lane], budget: int, steps: int, refill=None) -> dict:
    """Step ``steps`` times; lanes that finish are replaced by ``refill(lane)`` (closed loop)."""
    got: dict[str, int] = {}
    for _ in range(steps):
        chosen = _select(share, lanes, budget)
        share.charge([x.user for x in chosen])
        for lane in chosen:
            got[lane.user] = got.get(lane.user, 0) + 1
            lane.done += 1
        for lane in [x for x in chosen if x.done == x.steps]:
            lanes.remove(lane)
            if refill is not None:
                lanes.append(refill(lane))
    return got


def test_backlogged_users_receive_equal_image_steps_whatever_their_job_sizes():
    # A heavy user's 4-image 50-step jobs beside ten users' 1-image 20-step jobs, each user
    # always backlogged: round robin by job would give heavy 200 image-steps per 20.
    lanes = [Lane("heavy", 50) for _ in range(8)]
    lanes += [Lane(f"light{u}", 20) for u in range(10) for _ in range(2)]
    got = _run(FairShare(), lanes, budget=32, steps=120, refill=lambda x: Lane(x.user, x.steps))
    assert max(got.values()) - min(got.values()) <= 1
    assert jain_index(list(got.values())) > 0.999


def test_a_long_lane_gives_its_rows_back_when_others_arrive():
    share = FairShare()
    lanes = [Lane("heavy", 50) for _ in range(4)]
    assert len(_select(share, lanes, budget=8)) == 4  # alone, the heavy user takes every row
    share.charge(["heavy"] * 4)
    lanes += [Lane("a", 20), Lane("b", 20)]
    chosen = _select(share, lanes, budget=8)
    # The newcomers start level with heavy: one lane each per pass, heavy's two others pause.
    assert sorted(x.user for x in chosen) == ["a", "b", "heavy", "heavy"]


def test_a_user_who_leaves_keeps_no_credit_and_a_newcomer_starts_level():
    share = FairShare()
    busy = [Lane("a", 100, rows=1), Lane("b", 100, rows=1)]
    _run(share, busy, budget=2, steps=10)
    assert share.served("a") == share.served("b") == 10
    # a leaves; when a comes back it starts at b's level, not with 10 steps of history
    _run(share, [x for x in busy if x.user == "b"], budget=2, steps=5)
    assert share.served("a") == 0 and share.served("b") == 15
    back = [Lane("b", 100, rows=1), Lane("a", 100, rows=1), Lane("c", 100, rows=1)]
    _select(share, back, budget=2)
    assert share.served("a") == share.served("c") == share.served("b") == 15


def test_order_within_a_user_is_kept_and_the_partial_pass_goes_to_who_is_behind():
    share = FairShare()
    a1, a2, a3, b1 = Lane("a", 9), Lane("a", 9), Lane("a", 9), Lane("b", 9)
    share.charge(["a"])  # a is one image-step ahead of b once both are present
    share.select([a1, b1], 8, user=lambda x: x.user, rows=lambda x: x.rows)
    share.charge(["a"])
    chosen = _select(share, [a1, a2, a3, b1], budget=6)  # room for three 2-row lanes
    assert chosen == [b1, a1, a2]


def test_rows_fit_the_budget_and_small_lanes_fill_what_is_left():
    share = FairShare()
    cfg = [Lane("a", 9, rows=2) for _ in range(3)]
    plain = [Lane("b", 9, rows=1) for _ in range(3)]
    chosen = _select(share, [*cfg, *plain], budget=4)
    # a, b, then a's second 2-row lane does not fit the 1 row left, and b's second does
    assert [x.user for x in chosen] == ["a", "b", "b"] and sum(x.rows for x in chosen) == 4
    # A lane larger than the whole budget still runs alone (out of memory shrank the budget).
    assert _select(FairShare(), [Lane("a", 9, rows=2)], budget=1) != []
    assert _select(FairShare(), [], budget=4) == []


def test_jain_index():
    assert jain_index([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_index([]) == 1.0
