"""Button presses mean the same on every platform."""

from __future__ import annotations

import pytest

from gouache.bot.actions import ButtonActions
from gouache.bot.adapter import Action
from gouache.config import Limits
from gouache.errors import InvalidRequest, NotAllowed
from gouache.request import Kind, Origin
from gouache.storage import JobStatus, open_storage
from gouache.storage.jobs import Artifact, ArtifactKind
from tests.support.factories import make_request


@pytest.fixture
async def storage(tmp_path):
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as handle:
        yield handle


async def test_only_the_author_cancels_and_only_unfinished_jobs(storage) -> None:
    actions = ButtonActions(storage, Limits())
    job, _ = await storage.enqueue(make_request(user="ann"))
    with pytest.raises(NotAllowed, match="your own"):
        await actions.cancel(job.id, "bob")
    assert (await actions.cancel(job.id, "ann")).status is JobStatus.CANCELLED
    with pytest.raises(InvalidRequest, match="already finished"):
        await actions.cancel(job.id, "ann")


async def test_reroll_gets_a_new_seed_and_depth_follow_ups_keep_the_upload(storage) -> None:
    actions = ButtonActions(storage, Limits(diversity_count=5))
    upload = Artifact("", "input-0.png", ArtifactKind.INPUT, "image/png", b"\x89PNG...")
    source = make_request(user="ann", kind=Kind.DEPTH, attachment="input-0.png", seed=7)
    job, _ = await storage.enqueue(source, [upload])
    presser = Origin("web", "press-1", "bob")
    rerolled, inputs = await actions.follow_up(job.id, Action.REROLL, presser)
    assert rerolled.origin == presser and rerolled.prompt == source.prompt
    assert rerolled.seed != 7 or (await actions.follow_up(job.id, Action.REROLL, presser))[0].seed != 7
    assert [(a.name, a.data) for a in inputs] == [("input-0.png", b"\x89PNG...")]
    gif, _ = await actions.follow_up(job.id, Action.GIF, presser)
    assert gif.gif and gif.seed == 7


async def test_diversify_turns_an_imagine_into_a_diversity_batch(storage) -> None:
    actions = ButtonActions(storage, Limits(diversity_count=5))
    job, _ = await storage.enqueue(make_request(count=1))
    request, inputs = await actions.follow_up(job.id, Action.DIVERSIFY, Origin("web", "p", "ann"))
    assert request.kind is Kind.DIVERSITY and request.diversify and request.count == 5
    assert inputs == []


def test_variations_take_the_seeds_after_this_job_within_limits() -> None:
    from dataclasses import replace as _replace

    from gouache.bot.adapter import Action, follow_up
    from gouache.request import Kind, Origin, Request

    source = Request(kind=Kind.DIVERSITY, prompt="p", origin=Origin("web", "1", "u"),
                     model="m", width=64, height=64, steps=4, guidance=5.0, sampler="ddim",
                     seed=10, count=3, diversify=True)  # fmt: skip
    presser = Origin("web", "2", "v")
    made = follow_up(source, Action.VARIATIONS, presser, seed=0, diversity_count=4)
    assert (made.kind, made.seed, made.count, made.diversify) == (Kind.IMAGINE, 13, 4, False)
    assert follow_up(source, Action.VARIATIONS, presser, seed=0, diversity_count=4,
                     max_images=2).count == 2  # fmt: skip
    top = _replace(source, seed=2**32 - 2, count=1)
    near_top = follow_up(top, Action.VARIATIONS, presser, seed=0, diversity_count=4)
    assert near_top.seed == 2**32 - 6 and near_top.seed + near_top.count - 1 <= 2**32 - 1
