"""`--sweep` and `--process` in the command language: parsing, validation, charging, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from gouache.bot.commands import build_request, format_command, from_options, parse_text
from gouache.config import Settings
from gouache.errors import UserError
from gouache.request import Kind, Origin, Request

ORIGIN = Origin(platform="slack", request_id="t-1", user="U1", channel="C1")


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        default_model="sd15",
        models={"sd15": {"path": "/models/sd15", "default_width": 512, "default_height": 512,
                         "default_steps": 30, "default_guidance": 7.0,
                         "default_sampler": "euler-a"}},
    )  # fmt: skip


def build(text: str, cfg: Settings) -> Request:
    return build_request(parse_text(text), ORIGIN, cfg)


def error_of(text: str, cfg: Settings) -> str:
    with pytest.raises(UserError) as info:
        build(text, cfg)
    return info.value.message


def test_two_axes_are_stored_canonically_and_charged_as_cells(cfg: Settings) -> None:
    request = build("a lighthouse --sweep cfg=3,7,12.5 --sweep steps=10,25,50 --seed 4", cfg)
    assert request.sweep == (("cfg", ("3", "7", "12.5")), ("steps", ("10", "25", "50")))
    assert request.cells == 9 and request.images == 9 and request.count == 1
    assert request.seed == 4 and request.prompt == "a lighthouse"


def test_axis_values_go_through_the_same_validation_as_the_flags(cfg: Settings) -> None:
    assert "steps must be between" in error_of("a cat --sweep steps=10,500", cfg)
    assert "nope" in error_of("a cat --sweep sampler=ddim,nope", cfg)
    rounded = build("a cat --sweep cfg=3.333,7", cfg)
    assert rounded.sweep == (("cfg", ("3.33", "7")),) and any("3.33" in n for n in rounded.notes)


def test_aspect_ratios_become_the_sizes_they_give(cfg: Settings) -> None:
    request = build("a cat --sweep ar=1:1,16:9", cfg)
    assert request.sweep[0][0] == "size"
    assert request.sweep[0][1][0] == "512x512"
    w, h = map(int, request.sweep[0][1][1].split("x"))
    assert w > h and w % 8 == 0 and h % 8 == 0


def test_prompt_fragments_fill_the_braces(cfg: Settings) -> None:
    request = build("a {} car --sweep prompt=red,blue,green --sweep seed=1,2", cfg)
    assert request.sweep == (("prompt", ("red", "blue", "green")), ("seed", ("1", "2")))
    assert "{}" in error_of("a car --sweep prompt=red,blue", cfg)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a cat --sweep cfg=1,2 --sweep steps=5,6 --sweep seed=1,2", "at most 2 axes"),
        ("a cat --sweep cfg=1,2,3,4,5 --sweep steps=5,6,7,8", "20 cells, at most 16"),
        ("a cat --sweep cfg=1,2 --n 2", "leave out --n"),
        ("a cat --sweep cfg=1,2 --gif", "--gif"),
        ("a cat --sweep cfg=1,2 --sweep cfg=3,4", "one axis only"),
        ("a cat --sweep ar=1:1,2:1 --sweep size=512x512,256x256", "one axis only"),
        ("a cat --sweep colour=1,2", "NAME=v1,v2"),
        ("a cat --sweep cfg=", "NAME=v1,v2"),
        ("a cat --sweep strength=0.3,0.6", "strength"),
        ("/diversity a cat --sweep cfg=1,2", "--sweep"),
    ],
)
def test_refusals_say_why(cfg: Settings, text: str, fragment: str) -> None:
    assert fragment in error_of(text, cfg)


def test_format_command_round_trips_a_sweep(cfg: Settings) -> None:
    request = build("a {} lighthouse --sweep prompt=red,blue --sweep cfg=3,7 --seed 9", cfg)
    again = build_request(parse_text(format_command(request)), ORIGIN, cfg)
    assert again == request and again.batch_key == request.batch_key


def test_sweep_requests_survive_the_queue_and_never_share_a_batch(cfg: Settings) -> None:
    request = build("a cat --sweep cfg=3,7 --seed 1", cfg)
    assert Request.from_json(request.to_json()) == request
    plain = build("a cat --seed 1", cfg)
    assert plain.batch_key != request.batch_key
    assert plain.sweep == () and plain.cells == 1 and plain.images == 1


def test_process_flag_and_typed_options(cfg: Settings) -> None:
    request = build("a cat --process", cfg)
    assert request.process and Request.from_json(request.to_json()).process
    assert build_request(parse_text(format_command(request)), ORIGIN, cfg) == request
    typed = build_request(from_options(Kind.IMAGINE, {"prompt": "a cat", "sweep": "cfg=3,7 steps=10,20",
                                                      "seed": 3}), ORIGIN, cfg)  # fmt: skip
    assert typed.sweep == (("cfg", ("3", "7")), ("steps", ("10", "20")))


# /interpolate --------------------------------------------------------------------------------


def test_interpolate_takes_two_prompts_two_seeds_and_frames(cfg: Settings) -> None:
    request = build("/interpolate a red fox | a blue whale --seed 3,9 --frames 8", cfg)
    assert (request.prompt, request.prompt_b, request.seed, request.seed_b, request.frames) == (
        "a red fox", "a blue whale", 3, 9, 8)
    assert request.images == 8 and request.kind is Kind.INTERPOLATE
    assert build_request(parse_text(format_command(request)), ORIGIN, cfg) == request
    assert Request.from_json(request.to_json()) == request
    plain = build("/interpolate a | b --seed 4", cfg)
    assert plain.seed == plain.seed_b == 4 and plain.frames == 16


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("/interpolate a red fox", "<prompt A> | <prompt B>"),
        ("/interpolate a | b | c", "<prompt A> | <prompt B>"),
        ("/interpolate a | b --frames 1", "frames must be between 2 and 32"),
        ("/interpolate a | b --frames 99", "frames must be between 2 and 32"),
        ("/interpolate a | b --sweep cfg=1,2", "only works with /imagine"),
        ("a cat --frames 4", "/interpolate"),
        ("a cat --seed 1,2", "/interpolate"),
    ],
)
def test_interpolate_refusals(cfg: Settings, text: str, fragment: str) -> None:
    assert fragment in error_of(text, cfg)


def test_interpolate_from_typed_options(cfg: Settings) -> None:
    typed = from_options(Kind.INTERPOLATE, {"prompt": "a | b", "seed": 1, "seed_b": 2, "frames": 4})
    request = build_request(typed, ORIGIN, cfg)
    assert (request.seed, request.seed_b, request.frames) == (1, 2, 4)
