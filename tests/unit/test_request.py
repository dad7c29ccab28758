"""The table of kinds, the one batch-key encoding, the guidance precision rule, image seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from gouache.bot.adapter import buttons_for
from gouache.bot.commands import build_request, parse_text
from gouache.bot.uploads import attach, takes_file
from gouache.config import Limits, Settings
from gouache.errors import InvalidRequest
from gouache.request import (
    COMMAND_NAMES,
    GUIDANCE_DECIMALS,
    KINDS,
    PER_IMAGE,
    FollowUp,
    Kind,
    Origin,
    Request,
    ShapeKey,
)
from gouache.storage.jobs import Job, JobStatus
from gouache.worker.jobs import artifacts_for
from tests.support.factories import make_request

ORIGIN = Origin(platform="web", request_id="r1", user="u1")


def test_every_kind_has_one_row_and_a_command_name() -> None:
    assert set(KINDS) == set(Kind)
    assert COMMAND_NAMES == ("/imagine", "/depth", "/diversity", "/interpolate", "/upscale", "/edit")


def test_the_shape_key_has_one_encoding() -> None:
    """Steps, sampler and guidance are per lane: only the model and size are in the key."""
    plain = make_request(steps=20, sampler="ddim", guidance=3.0)
    other = make_request(steps=9, sampler="euler", guidance=8.0)
    assert plain.shape == other.shape == ShapeKey(plain.model, plain.width, plain.height)
    assert plain.shape_key == other.shape_key == plain.shape.key
    assert plain.shape.key == f"{plain.model}|{plain.width}x{plain.height}"  # as migration 0003
    assert make_request(width=plain.width + 8).shape_key != plain.shape_key
    sweep = make_request(sweep=(("cfg", ("3", "7")),))
    assert sweep.shape_key == "experiment|" + sweep.batch_key  # experiments never join


def test_near_equal_guidance_values_never_share_a_batch() -> None:
    exact, near = make_request(guidance=7.0), make_request(guidance=7.0000001)
    assert exact.batch_key != near.batch_key
    assert make_request(guidance=7.0).batch_key == exact.batch_key


@pytest.mark.parametrize(("typed", "used", "noted"), [
    ("7", 7.0, False), ("7.25", 7.25, False), ("7.0000001", 7.0, True), ("3.14159", 3.14, True),
])  # fmt: skip
def test_guidance_is_kept_to_two_decimals_and_rounding_is_reported(
    tmp_path: Path, typed: str, used: float, noted: bool
) -> None:
    settings = Settings(data_dir=tmp_path)
    request = build_request(parse_text(f"a fox --cfg {typed}"), ORIGIN, settings)
    assert request.guidance == used
    notes = [n for n in request.notes if n.startswith("Guidance")]
    assert bool(notes) == noted
    if noted:
        assert f"{GUIDANCE_DECIMALS} decimal places" in notes[0] and typed in notes[0]


def test_jobs_built_from_near_equal_guidance_run_and_batch_at_the_value_they_show(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    a = build_request(parse_text("a fox --cfg 7 --seed 1"), ORIGIN, settings)
    b = build_request(parse_text("a fox --cfg 7.0000001 --seed 2"), ORIGIN, settings)
    assert a.batch_key == b.batch_key and b.guidance == 7.0


def test_image_i_uses_seed_plus_i_and_artifacts_carry_their_index() -> None:
    from PIL import Image

    from gouache.config import GifSettings
    from gouache.generation.loop.batch import BatchItem, ItemResult

    request = make_request(seed=41, count=3)
    assert [request.image_seed(i) for i in range(3)] == [41, 42, 43]
    assert BatchItem("x", "p", seed=41, count=3).image_seed(2) == 43
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    result = ItemResult("x", images=images, frames=[[], [images[1]], []])
    made = artifacts_for("j", request, result, GifSettings())
    assert [(a.name, a.index) for a in made] == [
        ("image-0.png", 0), ("image-1.png", 1), ("image-2.png", 2), ("denoise-1.gif", 1)]


def test_uploads_and_buttons_follow_the_table() -> None:
    assert [k for k in Kind if takes_file(k)] == [Kind.IMAGINE, Kind.DEPTH, Kind.UPSCALE, Kind.EDIT]
    assert [k for k in Kind if KINDS[k].depth_map != "none"] == [Kind.DEPTH]
    assert [k for k in Kind if KINDS[k].image == "required"] == [Kind.UPSCALE, Kind.EDIT]
    with pytest.raises(InvalidRequest, match="/diversity takes no file.*/imagine or /depth"):
        attach(make_request(kind=Kind.DIVERSITY, count=2), b"\x89PNG\r\n\x1a\n", Limits())
    with pytest.raises(InvalidRequest, match="/depth needs"):
        attach(make_request(kind=Kind.DEPTH), None, Limits())
    job = _job(make_request(kind=Kind.DIVERSITY, count=4))
    assert [b.action for b in buttons_for(job) if b.index is None] == [
        a for a in KINDS[Kind.DIVERSITY].buttons if a not in PER_IMAGE]
    per_image = [b.token for b in buttons_for(_job(make_request(count=4))) if b.index is not None]
    assert per_image[:3] == ["upscale.0", "vary-subtle.0", "vary-strong.0"] and len(per_image) == 12
    assert FollowUp.DIVERSIFY not in KINDS[Kind.DIVERSITY].buttons
    assert [b.action for b in buttons_for(_job(make_request(gif=True))) if b.index is None] == [
        FollowUp.REROLL, FollowUp.VARIATIONS, FollowUp.DIVERSIFY]


@pytest.mark.parametrize("text", ["/nosuchcommand x", "/upscalex a fox", "/IMAGINEX fox"])
def test_an_unknown_leading_command_is_refused_with_the_list(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_text(text)
    message = caught.value.message
    assert text.split()[0] in message and all(name in message for name in COMMAND_NAMES)


@pytest.mark.parametrize("text", ["/IMAGINE a fox", "a path /usr/bin in the prompt", "/a/b c"])
def test_known_commands_any_case_and_slashes_inside_prompts_still_parse(text: str) -> None:
    assert parse_text(text).prompt


def _job(request: Request) -> Job:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return Job(id="j1", request=request, status=JobStatus.SUCCEEDED, attempts=1,
               created_at=now, updated_at=now)  # fmt: skip
