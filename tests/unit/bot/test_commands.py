"""The command language: every flag, every error message, and round-trips under hypothesis."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from gouache import messages
from gouache.bot.commands import (
    Command,
    build_request,
    format_command,
    from_options,
    parse_arguments,
    parse_text,
    strip_invisible,
)
from gouache.bot.prompt_length import Overflow
from gouache.config import Settings
from gouache.errors import InvalidRequest, UserError
from gouache.request import Kind, Origin, Request

ORIGIN = Origin(platform="slack", request_id="t-1", user="U1", channel="C1")


def fuzz(examples: int):
    """Hypothesis settings for these tests: no deadline (the first call imports diffusers)."""
    return hyp_settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    """Defaults plus one SD-sized model, so area-keeping sizes are realistic."""
    return Settings(
        data_dir=tmp_path,
        default_model="sd15",
        models={"sd15": {"path": "/models/sd15", "default_width": 512, "default_height": 512,
                         "default_steps": 30, "default_guidance": 7.0,
                         "default_sampler": "euler-a", "depth_controlnet": "/models/cn-depth"}},
    )  # fmt: skip


def build(text: str, cfg: Settings, **kwargs) -> Request:
    return build_request(parse_text(text), ORIGIN, cfg, **kwargs)


def error_of(text: str, cfg: Settings) -> str:
    with pytest.raises(UserError) as info:
        build(text, cfg)
    return info.value.message


# parse_text: the flags ------------------------------------------------------------------------


def test_the_example_from_the_issue_parses_every_part() -> None:
    command = parse_text("/imagine a red fox --ar 16:9 --seed 7 --no blurry, text --n 2")
    assert command == Command(
        Kind.IMAGINE,
        "a red fox",
        {"aspect_ratio": (16, 9), "seed": 7, "negative": "blurry, text", "count": 2},
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [("/imagine fox", Kind.IMAGINE), ("/DEPTH fox", Kind.DEPTH),
     ("/diversity fox", Kind.DIVERSITY), ("fox", Kind.IMAGINE), ("fox /depth", Kind.IMAGINE)],
)  # fmt: skip
def test_leading_command_word_picks_the_kind(text: str, kind: Kind) -> None:
    assert parse_text(text).kind is kind


@pytest.mark.parametrize("kind", list(Kind))
def test_a_known_kind_takes_the_arguments_as_typed(kind: Kind) -> None:
    """A Slack slash command knows its kind: nothing is glued on for parse_text to strip."""
    for arguments in ("a hill --steps 20 --no fog", "/depth a hill", "/nosuch hill", ""):
        assert parse_arguments(kind, arguments) == parse_text(f"/{kind.value} {arguments}")
    assert parse_arguments(kind, "/depth a hill").prompt == "/depth a hill"


def test_only_typed_options_are_recorded() -> None:
    assert dict(parse_text("just a fox").options) == {}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("--size 768x512", {"width": 768, "height": 512}),
        ("--size 768×512", {"width": 768, "height": 512}),
        ("--steps 20", {"steps": 20}),
        ("--cfg 7.5", {"guidance": 7.5}),
        ("--guidance 4", {"guidance": 4.0}),
        ("--n 3", {"count": 3}),
        ("--count 3", {"count": 3}),
        ("--sampler dpmpp-2m", {"sampler": "dpmpp-2m"}),
        ("--model sd15", {"model": "sd15"}),
        ("--gif", {"gif": True}),
        ("--diversify", {"diversify": True}),
        ("--seed=42", {"seed": 42}),
        ("--SEED 42", {"seed": 42}),
        ("—ar 3:2 –seed 9", {"aspect_ratio": (3, 2), "seed": 9}),
        ("--no a  b --steps 5", {"negative": "a b", "steps": 5}),
    ],
)
def test_each_flag(flags: str, expected: dict) -> None:
    command = parse_text(f"a fox {flags}")
    assert command.prompt == "a fox"
    assert dict(command.options) == expected


def test_flags_may_come_first_and_prompt_words_are_joined() -> None:
    command = parse_text("/imagine --ar 1:1 a\n red   fox --seed 3 at dawn")
    assert command.prompt == "a red fox at dawn"
    assert dict(command.options) == {"aspect_ratio": (1, 1), "seed": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fox --foo 1", messages.unknown_option("--foo", [
            "--ar", "--size", "--seed", "--steps", "--cfg", "--no", "--n", "--sampler",
            "--model", "--gif", "--diversify", "--strength", "--sweep", "--process", "--frames", "--enlarge",
            "--input", "--scale", "--lora", "--style", "--no-trigger"])),
        ("fox --seed", "--seed needs a value, like --seed 7."),
        ("fox --steps --seed 3", "--steps needs a value, like --steps 30."),
        ("fox --no --seed 3", "--no needs a value, like --no blurry, text."),
        ("fox --seed 1 --seed 2", "--seed is given more than once; give it once."),
        ("fox --cfg 3 --guidance 4", "--guidance is given more than once; give it once."),
        ("fox --steps many", "--steps must be a whole number (got “many”)."),
        ("fox --seed 1.5", "--seed must be a whole number (got “1.5”)."),
        ("fox --cfg lots", "--cfg must be a number like 7 or 7.5 (got “lots”)."),
        ("fox --cfg 1e999", "--cfg must be a number like 7 or 7.5 (got “1e999”)."),
        ("fox --ar wide", "--ar must be two whole numbers like 16:9 (got “wide”)."),
        ("fox --ar 0:1", "--ar must be two whole numbers like 16:9 (got “0:1”)."),
        ("fox --size big", "--size must be width x height like 768x512 (got “big”)."),
        ("fox --gif=maybe", "--gif must be given alone, or yes or no (got “maybe”)."),
        ("fox --ar 1:1 --size 64x64", "Use either --ar or --size, not both."),
    ],
)
def test_parse_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_text(text)
    assert info.value.message == message


# build_request: defaults, ranges, sizes --------------------------------------------------------


def test_defaults_come_from_the_model(cfg: Settings) -> None:
    request = build("a fox", cfg, rng=random.Random(3))
    assert (request.model, request.width, request.height) == ("sd15", 512, 512)
    assert (request.steps, request.guidance, request.sampler, request.count) == (
        30, 7.0, "euler-a", 1)  # fmt: skip
    assert request.seed == random.Random(3).randint(0, 2**32 - 1)
    assert request.notes == ()


def test_other_model_uses_its_own_defaults(cfg: Settings) -> None:
    request = build("a fox --model BUILTIN:tiny", cfg)
    assert (request.model, request.width, request.steps, request.sampler) == (
        "builtin:tiny", 64, 10, "ddim")  # fmt: skip


def test_random_seeds_differ_without_an_rng(cfg: Settings) -> None:
    seeds = {build("a fox", cfg).seed for _ in range(5)}
    assert len(seeds) > 1
    assert all(0 <= s <= 2**32 - 1 for s in seeds)


def test_typed_values_are_kept(cfg: Settings) -> None:
    request = build("/diversity owl --no blur --steps 12 --cfg 2.5 --seed 9 --n 3 "
                    "--sampler DDIM --gif --diversify", cfg)  # fmt: skip
    assert request.kind is Kind.DIVERSITY and request.negative_prompt == "blur"
    assert (request.steps, request.guidance, request.seed, request.count) == (12, 2.5, 9, 3)
    assert (request.sampler, request.gif, request.diversify) == ("ddim", True, True)


def test_diversity_defaults_to_the_configured_count(cfg: Settings) -> None:
    assert build("/diversity owl", cfg).count == cfg.limits.diversity_count


def test_aspect_ratio_keeps_the_default_area_and_reports_rounding(cfg: Settings) -> None:
    request = build("fox --ar 16:9", cfg)
    assert (request.width, request.height) == (680, 384)
    assert request.notes == ("aspect ratio 16:9 rounded to 680x384 (multiples of 8)",)
    assert build("fox --ar 1:1", cfg).notes == ()
    tall = build("fox --ar 2:3", cfg)
    assert tall.width % 8 == 0 and tall.height % 8 == 0 and tall.height > tall.width
    assert abs(tall.width * tall.height - 512 * 512) < 0.05 * 512 * 512


def test_aspect_ratio_respects_min_side_on_a_tiny_model(cfg: Settings) -> None:
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"min_side": 64})})
    request = build("fox --ar 16:9 --model builtin:tiny", cfg)
    assert request.height == cfg.limits.min_side == 64
    assert request.width == 112
    demo = build("fox --ar 3:2 --model builtin:demo", Settings(data_dir=cfg.data_dir))
    assert (demo.width, demo.height) == (48, 32)  # the 32x32 model grows to the 32 px floor


def test_size_is_snapped_to_multiples_of_8_and_reported(cfg: Settings) -> None:
    request = build("fox --size 770x514", cfg)
    assert (request.width, request.height) == (768, 512)
    assert request.notes == ("size 770x514 snapped to 768x512 (multiples of 8)",)
    assert build("fox --size 768x512", cfg).notes == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fox --steps 500", "steps must be between 1 and 60 (got 500)."),
        ("fox --steps 0", "steps must be between 1 and 60 (got 0)."),
        ("fox --cfg 31", "guidance must be between 0 and 30 (got 31)."),
        ("fox --cfg -1", "guidance must be between 0 and 30 (got -1)."),
        ("fox --n 5", "count must be between 1 and 4 (got 5)."),
        ("/diversity fox --n 1", "count must be between 2 and 4 (got 1)."),
        ("fox --seed -1", "seed must be between 0 and 4294967295 (got -1)."),
        ("fox --seed 4294967296", "seed must be between 0 and 4294967295 (got 4294967296)."),
        ("fox --size 16x512", "width must be between 32 and 2048 (got 16)."),
        ("fox --size 512x4000", "height must be between 32 and 2048 (got 4000)."),
        ("fox --size 2048x1024", "Size 2048x1024 is too large: at most 1,048,576 pixels "
                                 "(for example 1024x1024)."),
        ("fox --ar 65:1", "Aspect ratio must be between 1:64 and 64:1 for this size limit "
                          "(got 65:1)."),
        ("--seed 3", "Please describe the image: the prompt is empty."),
        ("fox --sampler nope", "Unknown sampler “nope”. Choose one of: "),
        ("fox --diversify", "--diversify only works with /diversity."),
        ("fox\x00bar", "The prompt contains a control character (U+0000); please remove it."),
    ],
)  # fmt: skip
def test_validation_messages(cfg: Settings, text: str, message: str) -> None:
    assert error_of(text, cfg).startswith(message)


def test_unknown_model_lists_the_known_ones(cfg: Settings) -> None:
    with pytest.raises(InvalidRequest) as info:
        build("fox --model sdxl", cfg)
    assert info.value.message == (
        "Unknown model “sdxl”. Available models: builtin:demo, builtin:tiny, sd15.")


def test_prompt_character_limit(tmp_path: Path) -> None:
    cfg = Settings(data_dir=tmp_path, limits={"max_prompt_chars": 10})
    assert build("abcdefghij", cfg).prompt == "abcdefghij"
    too_long = r"^The prompt must be at most 10 characters \(got 11\)"
    with pytest.raises(InvalidRequest, match=too_long):
        build("abcdefghijk", cfg)
    with pytest.raises(InvalidRequest, match="negative prompt must be at most 10"):
        build("fox --no abcdefghijk", cfg)


def test_prompt_overflow_shows_the_part_that_would_be_cut(cfg: Settings) -> None:
    calls = []

    def overflow(model: str, prompt: str) -> Overflow | None:
        calls.append((model, prompt))
        return Overflow(77, "in the style of " * 20) if "long" in prompt else None

    assert build("a fox", cfg, prompt_overflow=overflow).prompt == "a fox"
    assert calls == [("sd15", "a fox")]
    with pytest.raises(InvalidRequest) as info:
        build("a long fox", cfg, prompt_overflow=overflow)
    text = info.value.message
    assert "77 tokens" in text and "“in the style of in the style of" in text and "…" in text
    assert len(text) < 200


# from_options -------------------------------------------------------------------------------


def test_discord_options_build_the_same_request_as_text(cfg: Settings) -> None:
    typed = from_options(Kind.IMAGINE, {
        "prompt": "a red fox", "negative": "blurry", "seed": 7, "steps": 20, "guidance": 6.5,
        "aspect_ratio": "16:9", "sampler": "ddim", "count": 2, "model": "sd15", "gif": True,
        "width": None,
    })  # fmt: skip
    text = parse_text("a red fox --no blurry --seed 7 --steps 20 --cfg 6.5 --ar 16:9 "
                      "--sampler ddim --n 2 --model sd15 --gif")  # fmt: skip
    assert build_request(typed, ORIGIN, cfg) == build_request(text, ORIGIN, cfg)


def test_flags_typed_into_the_prompt_option_count(cfg: Settings) -> None:
    command = from_options(Kind.IMAGINE, {"prompt": "a fox --ar 3:2", "seed": 1})
    assert command.prompt == "a fox"
    assert dict(command.options) == {"seed": 1, "aspect_ratio": (3, 2)}
    with pytest.raises(InvalidRequest, match="seed is given more than once"):
        from_options(Kind.IMAGINE, {"prompt": "a fox --seed 2", "seed": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt": "x", "steps": "lots"}, "steps must be a whole number (got “lots”)."),
        ({"prompt": "x", "seed": True}, "seed must be a whole number (got “True”)."),
        ({"prompt": "x", "gif": "maybe"}, "gif must be true or false (got “maybe”)."),
        ({"prompt": "x", "aspect_ratio": "16:9", "width": 512},
         "Use either aspect_ratio or width/height, not both."),
        ({"prompt": "x", "colour": "red"}, "Unknown option colour."),
    ],
)  # fmt: skip
def test_from_options_errors(options: dict, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        from_options(Kind.IMAGINE, options)
    assert info.value.message.startswith(message)


def test_width_alone_keeps_the_default_height(cfg: Settings) -> None:
    request = build_request(from_options(Kind.IMAGINE, {"prompt": "x", "width": 768}), ORIGIN, cfg)
    assert (request.width, request.height) == (768, 512)


def test_negative_option_may_not_smuggle_flags(cfg: Settings) -> None:
    command = from_options(Kind.IMAGINE, {"prompt": "x", "negative": "blur --seed 3"})
    with pytest.raises(InvalidRequest, match="negative prompt must be plain text"):
        build_request(command, ORIGIN, cfg)


# format_command -----------------------------------------------------------------------------


def test_format_command_writes_every_field(cfg: Settings) -> None:
    request = build("/depth a fox --no text --size 768x512 --seed 5 --cfg 7.25 --gif", cfg)
    assert format_command(request) == (
        "/depth a fox --no text --size 768x512 --steps 30 --cfg 7.25 --sampler euler-a "
        "--seed 5 --n 1 --model sd15 --gif")  # fmt: skip


# Properties ---------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from([
    "--ar", "--size", "--seed", "--steps", "--cfg", "--guidance", "--no", "--n", "--count",
    "--sampler", "--model", "--gif", "--diversify", "—ar", "–seed", "--seed=", "--x", "/depth",
    "/imagine", "16:9", "0:0", "770x514", "1e9", "-1", "7", "7.5", "nan", "99999999999", "ddim",
    "builtin:tiny", "fox", "\x00", "\ud800", "--", "—", "x" * 50,
])  # fmt: skip


@fuzz(300)
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.lists(_FRAGMENTS | st.text(max_size=6), max_size=12).map(" ".join),
    )
)
def test_arbitrary_text_raises_only_user_errors(cfg: Settings, text: str) -> None:
    try:
        request = build(text, cfg)
    except UserError as exc:
        assert exc.message and len(exc.message) < 300
    else:
        assert request.prompt and request.width % 8 == 0 and request.height % 8 == 0


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
_KEYS = st.sampled_from(["prompt", "negative", "seed", "steps", "guidance", "aspect_ratio",
                         "width", "height", "sampler", "count", "model", "gif", "diversify"])


@fuzz(200)
@given(options=st.dictionaries(_KEYS, _VALUES, max_size=6), kind=st.sampled_from(list(Kind)))
def test_arbitrary_options_raise_only_user_errors(cfg: Settings, options: dict, kind: Kind) -> None:
    try:
        build_request(from_options(kind, options), ORIGIN, cfg)
    except UserError as exc:
        assert exc.message


_WORD = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1, max_size=8,
).filter(lambda w: not w.startswith(("--", "—", "–")) and w.split() == [w])


@st.composite
def valid_options(draw: st.DrawFn) -> tuple[Kind, dict]:
    kind = draw(st.sampled_from(list(Kind)))
    options: dict = {"prompt": " ".join(draw(st.lists(_WORD, min_size=1, max_size=6)))}
    optional = {
        "negative": st.lists(_WORD, min_size=1, max_size=4).map(" ".join),
        "seed": st.integers(0, 2**32 - 1),
        "steps": st.integers(1, 60),
        "guidance": st.floats(0, 30, allow_nan=False) | st.integers(0, 30),
        "sampler": st.sampled_from(["ddim", "euler-a", "DPMPP-2M", "unipc"]),
        "model": st.sampled_from(["sd15", "builtin:tiny", "builtin:demo"]),
        "gif": st.booleans(),
        "count": st.integers(2, 4),
        "size": st.one_of(
            st.tuples(st.integers(1, 32), st.integers(1, 32)).map(lambda r: {"aspect_ratio": r}),
            st.tuples(st.integers(60, 1030), st.integers(60, 1000)).map(
                lambda s: {"width": s[0], "height": s[1]}),
        ),
    }  # fmt: skip
    for key, strategy in optional.items():
        if draw(st.booleans()):
            value = draw(strategy)
            options.update(value) if key == "size" else options.__setitem__(key, value)
    if kind is Kind.DIVERSITY and draw(st.booleans()):
        options["diversify"] = True
    return kind, options


@fuzz(300)
@given(case=valid_options())
def test_format_command_round_trips(cfg: Settings, case: tuple[Kind, dict]) -> None:
    kind, options = case
    try:
        request = build_request(from_options(kind, options), ORIGIN, cfg)
    except UserError:
        assume(False)  # e.g. a drawn size over max_pixels; the other tests cover the errors
        return
    again = build_request(parse_text(format_command(request)), ORIGIN, cfg)
    assert again == request
    assert again.notes == ()  # formatted text needs no further normalisation


@pytest.mark.parametrize(
    ("text", "method"),
    [("/diversity owl --enlarge cads", "cads"), ("/diversity owl --enlarge variants", "variants"),
     ("/diversity owl --enlarge=interval", "interval"), ("/diversity owl --enlarge", "variants"),
     ("/diversity owl --enlarge --n 3", "variants"), ("/diversity owl", "")],
)  # fmt: skip
def test_enlarge_takes_an_optional_method(text: str, method: str, cfg: Settings) -> None:
    request = build(text, cfg)
    assert request.enlarge == method and request.prompt == "owl"
    again = build(format_command(request), cfg)
    assert again.enlarge == method and again.batch_key == request.batch_key


def test_enlarge_is_checked_and_part_of_the_batch_key(cfg: Settings) -> None:
    with pytest.raises(InvalidRequest, match="--enlarge must be one of cads, variants, interval"):
        build("/diversity owl --enlarge=magic", cfg)
    with pytest.raises(InvalidRequest, match="--enlarge only works with /diversity"):
        build("owl --enlarge cads", cfg)
    plain, cads = build("/diversity owl --seed 1", cfg), build("/diversity owl --seed 1 --enlarge cads", cfg)
    assert plain.batch_key != cads.batch_key
    typed = build_request(from_options(Kind.DIVERSITY, {"prompt": "owl", "enlarge": "interval"}),
                          Origin("web", "r", "u"), cfg)  # fmt: skip
    assert typed.enlarge == "interval"


def test_strength_is_for_depth_and_between_0_and_2() -> None:
    from gouache.config import Settings
    from gouache.request import Origin

    settings = Settings()
    origin = Origin("discord", "1", "u")
    depth = build_request(parse_text("/depth a hill --strength 0.5"), origin, settings)
    assert depth.strength == 0.5 and "--strength 0.5" in format_command(depth)
    assert build_request(parse_text("/depth a hill"), origin, settings).strength == 1.0
    assert depth.batch_key != build_request(parse_text("/depth a hill"), origin, settings).batch_key
    with pytest.raises(InvalidRequest, match=r"strength must be between 0(\.0)? and 2"):
        build_request(parse_text("/depth a hill --strength 2.5"), origin, settings)
    with pytest.raises(InvalidRequest, match="--strength only works with /depth"):
        build_request(parse_text("/diversity a fox --strength 0.5"), origin, settings)


@pytest.mark.parametrize(
    "invisible",
    ["\u202e", "\u2066", "\u2069", "\u200b", "\u200c", "\u200f", "\u2060", "\ufeff", "\u00ad"],
)
def test_bidi_and_zero_width_characters_are_stripped_from_prompts(
    invisible: str, cfg: Settings
) -> None:
    """Echoed to a chat, a bidi override reverses what follows and zero-width characters hide
    words; they are dropped, and an emoji's zero-width joiner is kept."""
    text = f"/imagine a{invisible} red{invisible}fox 👩\u200d💻 --no blur{invisible}ry"
    request = build_request(parse_text(text), ORIGIN, cfg)
    assert request.prompt == "a redfox 👩\u200d💻"
    assert request.negative_prompt == "blurry"
    assert strip_invisible("\u200dx") == "x"


@pytest.mark.parametrize(
    ("text", "gif"),
    [("a red circle --gif yes", True), ("a red circle --gif", True), ("a red circle --gif=true", True),
     ("a red circle --gif no", False), ("a red circle --gif=no --seed 3", False)],
)  # fmt: skip
def test_a_switch_takes_yes_or_no_and_never_adds_it_to_the_prompt(text: str, gif: bool) -> None:
    command = parse_text(text)
    assert command.prompt == "a red circle"
    assert command.options["gif"] is gif
