"""The one command language every platform shares.

Slack text, Discord options, the web API and the CLI all become a ``Command`` (what the user
typed), and ``build_request`` turns a ``Command`` into a complete, validated ``Request``: model
defaults filled in, seed chosen, size snapped to multiples of 8 with a note saying so.
``format_command`` writes a request back as text that parses to the same request.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from gouache import messages
from gouache.bot.loras import Styled
from gouache.bot.loras import resolve as resolve_loras
from gouache.bot.prompt_length import PromptCheck
from gouache.config import Limits, ModelSpec, Settings
from gouache.errors import InvalidRequest
from gouache.model_families import FamilyFacts, facts_for
from gouache.request import (
    COMMAND_NAMES,
    DEFAULT_ENLARGE,
    ENLARGE_METHODS,
    GUIDANCE_DECIMALS,
    IMAGE_STRENGTH,
    INTERPOLATE_FRAMES,
    INTERPOLATE_MAX_FRAMES,
    KINDS,
    LISTINGS,
    STRENGTH_RANGE,
    SWEEP_MAX_AXES,
    SWEEP_MAX_CELLS,
    UPSCALE_MAX_SCALE,
    Kind,
    Listing,
    Origin,
    Request,
)  # fmt: skip

__all__ = [
    "Command",
    "parse_text",
    "parse_listing",
    "listing_model",
    "refusal",
    "resolve_model",
    "parse_arguments",
    "from_options",
    "build_request",
    "format_command",
    "size_for_upload",
    "strip_invisible",
]

SEED_MAX = 2**32 - 1
# Flag spelling -> option key. Phones turn "--" into an em or en dash, so both are accepted.
_FLAGS: Mapping[str, str] = MappingProxyType({
    "ar": "aspect_ratio", "size": "size", "seed": "seed", "steps": "steps",
    "cfg": "guidance", "guidance": "guidance", "no": "negative", "n": "count",
    "count": "count", "sampler": "sampler", "model": "model", "gif": "gif",
    "diversify": "diversify", "strength": "strength", "sweep": "sweep", "process": "process",
    "frames": "frames", "enlarge": "enlarge", "input": "depth_input", "scale": "scale",
    "lora": "lora", "style": "style", "no-trigger": "no_trigger", "no_trigger": "no_trigger",
})  # fmt: skip
_FORMS: Mapping[str, str] = MappingProxyType({
    "aspect_ratio": "16:9", "size": "768x512", "seed": "7", "steps": "30", "guidance": "7",
    "negative": "blurry, text", "count": "2", "sampler": "euler-a", "model": "NAME",
    "strength": "0.8", "sweep": "cfg=3,7,12", "frames": "16", "depth_input": "photo",
    "scale": "2", "lora": "NAME:0.8", "style": "NAME",
})  # fmt: skip
_SHOWN_FLAGS = ("--ar", "--size", "--seed", "--steps", "--cfg", "--no", "--n", "--sampler",
                "--model", "--gif", "--diversify", "--strength", "--sweep", "--process",
                "--frames", "--enlarge", "--input", "--scale", "--lora", "--style",
                "--no-trigger")  # fmt: skip
_FLAG_RE = re.compile(r"^(?:--|[\u2013\u2014])([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$", re.S)
# "/word" or "/word" glued to nothing else: a command, known or not (paths like "/a/b" are prompts).
_COMMAND_RE = re.compile(r"^/[A-Za-z][A-Za-z0-9_-]*$")
_INT_RE = re.compile(r"^[+-]?[0-9]{1,30}$")
_FLOAT_RE = re.compile(r"^[+-]?(?:[0-9]{1,30}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?$")
_RATIO_RE = re.compile(r"^([0-9]{1,6}):([0-9]{1,6})$")
_SIZE_RE = re.compile(r"^([0-9]{1,6})[xX\u00d7]([0-9]{1,6})$")
_BOOL_WORDS = MappingProxyType({"true": True, "yes": True, "1": True, "on": True,
                                "false": False, "no": False, "0": False, "off": False})  # fmt: skip
_SWITCH_WORDS = MappingProxyType({"yes": True, "true": True, "no": False, "false": False})
_OPTION_KEYS = frozenset({"negative", "seed", "steps", "guidance", "aspect_ratio", "width",
                          "height", "sampler", "count", "model", "gif", "diversify",
                          "attachment", "strength", "sweep", "process", "frames", "seed_b", "enlarge",
                          "depth_input", "scale", "lora", "style", "no_trigger"})  # fmt: skip
_OPTION_ALIASES = MappingProxyType({"negative_prompt": "negative", "cfg": "guidance",
                                    "ar": "aspect_ratio", "n": "count",
                                    "input": "depth_input", "loras": "lora",
                                    "no-trigger": "no_trigger"})  # fmt: skip
_DEPTH_INPUTS = ("auto", "depth", "photo")


@dataclass(frozen=True)
class Command:
    """What the user asked for, before defaults: ``options`` holds only what they gave."""

    kind: Kind
    prompt: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


# Parsing -------------------------------------------------------------------------------------


def parse_text(text: str) -> Command:
    """Parse ``[/imagine|/depth|/diversity] prompt --flag value ...`` as typed in chat.

    A leading ``/word`` that is not a command is refused with the list of commands, rather
    than generated as an /imagine prompt.
    """
    words = strip_invisible(text).split()
    kind = Kind.IMAGINE
    if words and _COMMAND_RE.match(words[0]):
        if words[0].lower() not in COMMAND_NAMES:
            raise InvalidRequest(messages.unknown_command(words[0], COMMAND_NAMES))
        kind = Kind(words.pop(0)[1:].lower())
    prompt, options = _scan(words)
    return Command(kind, prompt, options)


def parse_message(text: str) -> Command:
    """A chat message to the bot (a Slack mention, a reply to a result): ``depth a hill`` is
    ``/depth a hill``, like ``/depth a hill``; anything else is ``parse_text``'s."""
    first, *rest = strip_invisible(text).split(maxsplit=1) or [""]
    if first.lower() in {k.value for k in Kind}:
        return parse_arguments(Kind(first.lower()), " ".join(rest))
    return parse_text(text)


def parse_arguments(kind: Kind, text: str) -> Command:
    """Parse ``prompt --flag value ...`` for a command whose kind the platform already knows
    (a Slack slash command, the /depth modal): the text is taken as it is, a leading
    ``/word`` included, as the prompt's first word."""
    prompt, options = _scan(strip_invisible(text).split())
    return Command(kind, prompt, options)


def parse_listing(text: str, *, bare: bool = False) -> tuple[Listing, str] | None:
    """``/help [MODEL]`` or ``/loras --model NAME``: the listing and the rest of the text;
    None when ``text`` is not one. ``bare`` (a Slack mention) also takes ``help``/``loras``
    without the slash, when at most a model name follows (``help me draw a cat`` is a prompt)."""
    words = strip_invisible(text).split()
    first = words[0].lower() if words else ""
    names = {f"/{listing.value}": listing for listing in LISTINGS}
    if first in names:
        return names[first], " ".join(words[1:])
    rest = words[1:]
    if bare and f"/{first}" in names and (len(rest) <= 1 or len(rest) == 2 and _FLAG_RE.match(rest[0])):
        return names[f"/{first}"], " ".join(rest)
    return None


def listing_model(listing: Listing, text: str, settings: Settings) -> str:
    """The model a listing's arguments name (``MODEL`` or ``--model MODEL``; the default when
    none), resolved as ``--model`` is; any other option is refused."""
    prompt, options = _scan(strip_invisible(text).split())
    if set(options) - {"model"} or (prompt and options) or len(prompt.split()) > 1:
        raise InvalidRequest(messages.listing_takes_a_model(f"/{listing.value}"))
    return resolve_model(str(options.get("model") or prompt or settings.default_model), settings)


def _scan(words: list[str]) -> tuple[str, dict[str, Any]]:
    """Split words into prompt words and flag values; ``--no`` takes words up to the next flag."""
    prompt: list[str] = []
    options: dict[str, Any] = {}
    seen: set[str] = set()
    i = 0
    while i < len(words):
        match = _FLAG_RE.match(words[i])
        if not match:
            prompt.append(words[i])
            i += 1
            continue
        name, inline = match.group(1).lower(), match.group(2)
        flag = f"--{name}"
        key = _FLAGS.get(name)
        if key is None:
            raise InvalidRequest(messages.unknown_option(words[i], _SHOWN_FLAGS))
        if key in seen and key not in ("sweep", "lora"):  # given once per axis / per LoRA
            raise InvalidRequest(messages.duplicate_option(flag))
        seen.add(key)
        values = [] if inline is None else [inline] if inline else []
        i += 1
        if key == "enlarge":  # an optional method name
            if inline is None and i < len(words) and words[i].lower() in ENLARGE_METHODS:
                inline = words[i]
                i += 1
            options[key] = _parse_enlarge(flag, inline or DEFAULT_ENLARGE)
            continue
        if key in {"gif", "diversify", "process", "no_trigger"}:
            # A switch; "--gif yes" / "--gif=no" are read as the switch, never as prompt words.
            if inline is None and i < len(words) and words[i].lower() in _SWITCH_WORDS:
                inline = words[i]
                i += 1
            if inline is not None and inline.lower() not in _SWITCH_WORDS:
                raise InvalidRequest(messages.bad_value(flag, "given alone, or yes or no", inline))
            options[key] = _SWITCH_WORDS[inline.lower()] if inline is not None else True
            continue
        limit = len(words) if key == "negative" else i + (inline is None)
        while i < min(limit, len(words)) and not _FLAG_RE.match(words[i]):
            values.append(words[i])
            i += 1
        if not values:
            raise InvalidRequest(messages.missing_value(flag, _FORMS[key]))
        _store(options, key, flag, " ".join(values))
    if "aspect_ratio" in options and "width" in options:
        raise InvalidRequest(messages.conflicting_options("--ar", "--size"))
    return " ".join(prompt), options


def _store(options: dict[str, Any], key: str, flag: str, value: str) -> None:
    if key == "size":
        options["width"], options["height"] = _parse_size(flag, value)
    elif key == "aspect_ratio":
        options[key] = _parse_ratio(flag, value)
    elif key == "seed" and "," in value:  # /interpolate --seed A,B
        first, _, second = value.partition(",")
        options["seed"], options["seed_b"] = _parse_int(flag, first), _parse_int(flag, second)
    elif key in {"seed", "steps", "count", "frames"}:
        options[key] = _parse_int(flag, value)
    elif key in {"guidance", "strength", "scale"}:
        options[key] = _parse_float(flag, value)
    elif key == "depth_input":
        options[key] = _parse_depth_input(flag, value)
    elif key == "sweep":
        options.setdefault(key, []).append(_parse_sweep_axis(flag, value))
    elif key == "lora":
        options.setdefault(key, []).append(value)
    else:
        options[key] = value


def _parse_enlarge(name: str, value: Any) -> str:
    method = str(value).strip().lower()
    if method in {"", "true", "yes", "on", "1"}:
        return DEFAULT_ENLARGE
    if method not in ENLARGE_METHODS:
        raise InvalidRequest(messages.bad_value(name, f"one of {', '.join(ENLARGE_METHODS)}", str(value)))
    return method


def _parse_depth_input(name: str, value: Any) -> str:
    word = str(value).strip().lower()
    if word not in _DEPTH_INPUTS:
        raise InvalidRequest(messages.bad_value(name, "depth or photo", str(value)))
    return word


_SWEEP_NAMES = MappingProxyType({"cfg": "cfg", "guidance": "cfg", "steps": "steps",
                                 "sampler": "sampler", "seed": "seed", "ar": "ar",
                                 "size": "size", "strength": "strength", "prompt": "prompt"})  # fmt: skip


def _parse_sweep_axis(flag: str, value: str) -> tuple[str, list[str]]:
    """``cfg=3,7,12`` -> ("cfg", ["3", "7", "12"]); names as in ``_SWEEP_NAMES``."""
    name, equals, listed = value.strip().partition("=")
    values = [part.strip() for part in listed.split(",")]
    axis = _SWEEP_NAMES.get(name.strip().lower())
    if not equals or axis is None or not all(values):
        raise InvalidRequest(messages.bad_value(flag, messages.sweep_form(), value))
    return axis, values


def _coerce_sweep(value: Any) -> list[tuple[str, list[str]]]:
    """Typed options: "cfg=3,7 steps=10,20", or a list of such strings."""
    texts = value.split() if isinstance(value, str) else [str(v) for v in value]
    return [_parse_sweep_axis("sweep", text) for text in texts]


def _parse_int(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        return int(value.strip())
    raise InvalidRequest(messages.bad_value(name, "a whole number", str(value)))


def _parse_float(name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        number = float(value.strip())
    else:
        raise InvalidRequest(messages.bad_value(name, "a number like 7 or 7.5", str(value)))
    if not math.isfinite(number):
        raise InvalidRequest(messages.bad_value(name, "a number like 7 or 7.5", str(value)))
    return number


def _parse_ratio(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, tuple | list) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    match = _RATIO_RE.match(str(value).strip())
    if not match or 0 in (w := int(match.group(1)), h := int(match.group(2))):
        raise InvalidRequest(messages.bad_value(name, "two whole numbers like 16:9", str(value)))
    return w, h


def _parse_size(name: str, value: str) -> tuple[int, int]:
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise InvalidRequest(messages.bad_value(name, "width x height like 768x512", value))
    return int(match.group(1)), int(match.group(2))


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise InvalidRequest(messages.bad_value(name, "true or false", str(value)))


def from_options(kind: Kind, options: Mapping[str, Any]) -> Command:
    """Typed options (Discord, web API, CLI). Flags typed inside the prompt count too."""
    given: dict[str, Any] = {}
    for raw_key, value in options.items():
        key = _OPTION_ALIASES.get(raw_key, raw_key)
        if value is None or raw_key == "prompt":
            continue
        if key not in _OPTION_KEYS:
            raise InvalidRequest(messages.unknown_option(str(raw_key), sorted(_OPTION_KEYS)))
        if key in given:
            raise InvalidRequest(messages.duplicate_option(key))
        given[key] = _coerce(key, value)
    prompt, typed = _scan(str(options.get("prompt") or "").split())
    for key, value in typed.items():
        if key == "lora" and key in given:  # typed options and --lora in the prompt add up
            given[key] = [*given[key], *value]
            continue
        if key in given:
            raise InvalidRequest(messages.duplicate_option(key))
        given[key] = value
    if "aspect_ratio" in given and ("width" in given or "height" in given):
        raise InvalidRequest(messages.conflicting_options("aspect_ratio", "width/height"))
    return Command(Kind(kind), prompt, given)


def _coerce(key: str, value: Any) -> Any:
    if key in {"seed", "steps", "count", "width", "height", "frames", "seed_b"}:
        return _parse_int(key, value)
    if key in {"guidance", "strength", "scale"}:
        return _parse_float(key, value)
    if key == "depth_input":
        return _parse_depth_input("input", value)
    if key == "aspect_ratio":
        return _parse_ratio(key, value)
    if key in {"gif", "diversify", "process", "no_trigger"}:
        return _parse_bool(key, value)
    if key == "lora":  # "a:0.7 b" or ["a:0.7", "b"]
        texts = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
        return [text for text in texts if text]
    if key == "enlarge":
        return "" if value is False else _parse_enlarge(key, value)
    if key == "sweep":
        return _coerce_sweep(value)
    return str(value)


# Validation ----------------------------------------------------------------------------------


def build_request(
    command: Command,
    origin: Origin,
    settings: Settings,
    *,
    prompt_overflow: PromptCheck | None = None,
    rng: random.Random | None = None,
) -> Request:
    """Fill defaults from the model, choose a seed, and validate everything against limits."""
    opts, limits = command.options, settings.limits
    model = resolve_model(str(opts.get("model") or settings.default_model), settings)
    spec = settings.models[model]
    prompt = _clean_text(command.prompt, "prompt", limits)
    negative = _clean_text(str(opts.get("negative", "")), "negative prompt", limits)
    if not prompt and command.kind is not Kind.UPSCALE:  # /upscale: the image's own prompt
        raise InvalidRequest(messages.prompt_empty())
    styled = _styled(command, settings, model, prompt, negative)
    default_steps = styled.steps if styled.steps is not None else spec.default_steps
    steps = _in_range("steps", opts.get("steps", min(default_steps, limits.max_steps)),
                      1, limits.max_steps)  # fmt: skip
    default_guidance = styled.guidance if styled.guidance is not None else spec.default_guidance
    given = float(opts.get("guidance", min(default_guidance, limits.max_guidance)))
    given = _in_range("guidance", given, 0, limits.max_guidance)
    guidance = round(given, GUIDANCE_DECIMALS)
    count = _count(command.kind, opts.get("count"), limits)
    facts = facts_for(spec.path, spec.family)
    sampler = _resolve_sampler(str(opts.get("sampler") or spec.default_sampler), model, facts)
    if "seed" in opts:
        seed = _in_range("seed", opts["seed"], 0, SEED_MAX)
    else:
        seed = (rng or random.SystemRandom()).randint(0, SEED_MAX)
    if opts.get("diversify") and not KINDS[command.kind].scored:
        raise InvalidRequest(messages.only_with("--diversify", "/diversity"))
    if opts.get("enlarge") and not KINDS[command.kind].scored:
        raise InvalidRequest(messages.only_with("--enlarge", "/diversity"))
    if (refused := refusal(command.kind, model, spec)) is not None:
        raise InvalidRequest(refused)
    if "depth_input" in opts and KINDS[command.kind].depth_map == "none":
        raise InvalidRequest(messages.only_with("--input", "/depth"))
    takes_upload = KINDS[command.kind].takes_file
    strength = _strength(command.kind, opts.get("strength"))
    denoise = _image_strength(command.kind, opts.get("strength"), steps)
    scale = _scale(command.kind, opts.get("scale"))
    if command.kind is Kind.UPSCALE and count != 1:
        raise InvalidRequest(messages.only_with("--n", "/imagine"))
    width, height, notes = _resolve_size(opts, spec, limits)
    if guidance != given:
        notes.append(messages.guidance_rounded(given, guidance, GUIDANCE_DECIMALS))
    if facts is not None and facts.guidance != "cfg":  # the reply says what --cfg meant
        notes.append(messages.guidance_meaning(model, facts.guidance, guidance, bool(negative)))
    # /depth without --ar/--size: bot/uploads.attach gives the output the upload's aspect.
    size_from_upload = takes_upload and not {"aspect_ratio", "width", "height"} & set(opts)
    _check_overflow(prompt_overflow, model, styled.prompt, styled.negative)
    request = Request(
        kind=command.kind, prompt=prompt, origin=origin, model=model, width=width,
        height=height, steps=steps, guidance=guidance, sampler=sampler, seed=seed,
        count=count, negative_prompt=negative, gif=bool(opts.get("gif", False)),
        diversify=bool(opts.get("diversify", False)), attachment=opts.get("attachment"),
        enlarge=str(opts.get("enlarge") or ""), strength=strength,
        depth_input=str(opts.get("depth_input", "auto")),
        size_from_upload=size_from_upload, notes=tuple(notes), process=bool(opts.get("process", False)),
        denoise=denoise, scale=scale, tile=_comfortable_side(spec) if command.kind is Kind.UPSCALE else 0,
        loras=styled.loras, style=str(opts.get("style") or ""), no_trigger=bool(opts.get("no_trigger", False)),
        model_prompt=styled.prompt if styled.prompt != prompt else "",
        model_negative=styled.negative if styled.negative != negative else "",
        guidance_kind=facts.guidance if facts is not None else "cfg",
    )  # fmt: skip
    if opts.get("sweep"):
        request = _with_sweep(command, request, settings, prompt_overflow)
    if command.kind is Kind.INTERPOLATE:
        request = _interpolation(command, request, limits, prompt_overflow)
    elif "frames" in opts or "seed_b" in opts:
        raise InvalidRequest(messages.only_with("--frames and --seed A,B", "/interpolate"))
    return request


def _styled(command: Command, settings: Settings, model: str, prompt: str, negative: str) -> Styled:
    """The style and LoRAs of a request (``bot/loras.py``); not for /interpolate."""
    opts = command.options
    if command.kind is Kind.INTERPOLATE and (opts.get("lora") or opts.get("style")):
        raise InvalidRequest(messages.only_with("--lora and --style", "/imagine, /depth and /diversity"))
    return resolve_loras(settings, model, prompt, negative, list(opts.get("lora") or ()),
                         str(opts.get("style") or ""), bool(opts.get("no_trigger", False)))  # fmt: skip


def _interpolation(
    command: Command,
    base: Request,
    limits: Limits,
    prompt_overflow: PromptCheck | None,
) -> Request:
    """``A | B``: two endpoints (prompts and/or seeds) and the frames between them."""
    first, bar, second = base.prompt.partition("|")
    first, second = first.strip(), second.strip()
    if not bar or not first or not second or "|" in second:
        raise InvalidRequest(messages.bad_value("/interpolate", messages.interpolate_form(), base.prompt))
    if base.sweep or base.gif or base.process or base.count != 1:
        raise InvalidRequest(messages.only_with("--sweep, --gif, --process and --n", "/imagine"))
    opts = command.options
    seed_b = _in_range("seed", opts["seed_b"], 0, SEED_MAX) if "seed_b" in opts else base.seed
    frames = _in_range("frames", opts.get("frames", INTERPOLATE_FRAMES), 2, INTERPOLATE_MAX_FRAMES)
    _check_overflow(prompt_overflow, base.model, second, "")
    return replace(base, prompt=first, prompt_b=second, seed_b=seed_b, frames=frames)


def _with_sweep(
    command: Command,
    base: Request,
    settings: Settings,
    prompt_overflow: PromptCheck | None,
) -> Request:
    """Validate every axis value as a cell of its own and store the canonical values.

    Each value is checked by building the cell's request through ``build_request`` (limits,
    snapping, rounding), so a sweep is exactly the requests its cells would be on their own.
    """
    axes: list[tuple[str, list[str]]] = list(command.options["sweep"])
    names = [name for name, _ in axes]
    if KINDS[command.kind].scored:
        raise InvalidRequest(messages.only_with("--sweep", "/imagine or /depth"))
    if len(axes) > SWEEP_MAX_AXES:
        raise InvalidRequest(messages.sweep_refused(f"at most {SWEEP_MAX_AXES} axes (got {len(axes)})"))
    if len(set(names)) < len(names) or {"ar", "size"} <= set(names):
        raise InvalidRequest(messages.sweep_refused("each parameter can be one axis only"))
    cells = math.prod(len(values) for _, values in axes)
    if cells > SWEEP_MAX_CELLS:
        raise InvalidRequest(messages.sweep_refused(f"{cells} cells, at most {SWEEP_MAX_CELLS}"))
    if base.count != 1:
        raise InvalidRequest(messages.sweep_refused("a sweep makes one image per cell; leave out --n"))
    if base.gif or base.process:
        raise InvalidRequest(messages.sweep_refused("--gif and --process are for single images"))
    if "strength" in names and KINDS[command.kind].pipeline != "depth":
        raise InvalidRequest(messages.sweep_refused("strength is not a parameter of this command"))
    if "prompt" in names and "{}" not in base.prompt:
        raise InvalidRequest(messages.sweep_refused("a prompt axis fills a {} in the prompt"))
    fixed = {k: v for k, v in command.options.items() if k != "sweep"}
    fixed["seed"] = base.seed  # every cell uses the same seed unless seed is an axis
    notes = list(base.notes)
    stored: list[tuple[str, tuple[str, ...]]] = []
    for name, values in axes:
        canonical = []
        for value in values:
            opts, prompt = dict(fixed), command.prompt
            if name == "prompt":
                prompt = prompt.replace("{}", value)
            elif name == "ar":
                opts.pop("width", None), opts.pop("height", None)
                _store(opts, "aspect_ratio", "--sweep ar", value)
            elif name == "size":
                opts.pop("aspect_ratio", None)
                _store(opts, "size", "--sweep size", value)
            else:
                key = {"cfg": "guidance"}.get(name, name)
                opts[key] = _coerce(key, value) if key in _OPTION_KEYS else value
            cell = build_request(Command(command.kind, prompt, opts), base.origin, settings,
                                 prompt_overflow=prompt_overflow)  # fmt: skip
            canonical.append(_cell_value(name, value, cell))
            notes += [note for note in cell.notes if note not in notes]
        stored.append(("size" if name == "ar" else name, tuple(canonical)))
    return replace(base, sweep=tuple(stored), notes=tuple(notes))


def _cell_value(name: str, given: str, cell: Request) -> str:
    if name == "cfg":
        return _number(cell.guidance)
    if name in {"ar", "size"}:
        return f"{cell.width}x{cell.height}"
    if name == "prompt":
        return given
    if not hasattr(cell, name):  # e.g. strength, before /depth --strength exists
        raise InvalidRequest(messages.sweep_refused(f"{name} is not a parameter of this command"))
    return _number(value) if isinstance(value := getattr(cell, name), float) else str(value)


def _in_range(name: str, value: Any, low: float, high: float) -> Any:
    if not low <= value <= high:
        raise InvalidRequest(messages.out_of_range(name, low, high, value))
    return value


def _strength(kind: Kind, value: float | None) -> float:
    """``--strength``: only where a control image steers (``/depth``), within ``STRENGTH_RANGE``."""
    if value is None or KINDS[kind].image != "none":
        return 1.0
    if KINDS[kind].pipeline != "depth":
        raise InvalidRequest(messages.only_with("--strength", "/depth, /upscale or /imagine with an image"))
    return float(_in_range("strength", value, *STRENGTH_RANGE))


def _image_strength(kind: Kind, value: float | None, steps: int) -> float:
    """``--strength`` on a command that starts from an image: 0 < s <= 1, and s x steps >= 1
    (the engine runs ``int(steps * s)`` steps); 0.0 when not given (the command's default)."""
    if KINDS[kind].image == "none":
        return 0.0
    if value is None:
        value = IMAGE_STRENGTH.get(kind.value, IMAGE_STRENGTH["imagine"])
        given = False
    else:
        given = True
    if not 0.0 < value <= 1.0:
        raise InvalidRequest(messages.image_strength_out_of_range(value))
    if int(steps * value) < 1:
        raise InvalidRequest(messages.image_strength_too_low(value, steps))
    return float(value) if given else 0.0


def _comfortable_side(spec: ModelSpec) -> int:
    """The largest tile an upscale's pass runs in on this model: 1.5x its default side
    (``bot/uploads.attach_image`` clears it when the whole output fits)."""
    return _snap(max(spec.default_width, spec.default_height) * 1.5)


def _scale(kind: Kind, value: float | None) -> float:
    """``/upscale --scale``: more than 1, at most ``UPSCALE_MAX_SCALE``."""
    if value is None:
        return 0.0
    if kind is not Kind.UPSCALE:
        raise InvalidRequest(messages.only_with("--scale", "/upscale"))
    if not 1.0 < value <= UPSCALE_MAX_SCALE:
        raise InvalidRequest(messages.upscale_scale_out_of_range(value, UPSCALE_MAX_SCALE))
    return float(value)


def _count(kind: Kind, value: int | None, limits: Limits) -> int:
    spec = KINDS[kind]
    if spec.default_images == "diversity_count":
        high = max(limits.max_images, limits.diversity_count)
        default = limits.diversity_count
    else:
        high, default = limits.max_images, 1
    return _in_range("count", default if value is None else value, spec.min_images, high)


_ZWJ = "\u200d"
_EMOJI_BEFORE_ZWJ = {"So", "Sk", "Mn"}  # a symbol, or its variation selector (U+FE0F)


def strip_invisible(text: str) -> str:
    """Drop format characters (Unicode ``Cf``): bidi overrides and isolates, zero-width
    spaces and joiners, BOMs, soft hyphens. Echoed to a chat they reorder or hide text; a
    zero-width joiner inside an emoji sequence is kept."""
    kept: list[str] = []
    for char in text:
        if unicodedata.category(char) != "Cf" or char == _ZWJ and kept and unicodedata.category(kept[-1]) in _EMOJI_BEFORE_ZWJ:
            kept.append(char)
    return "".join(kept)


def _clean_text(text: str, name: str, limits: Limits) -> str:
    """Collapse whitespace; drop invisible format characters; refuse control characters,
    lone surrogates and options in text."""
    words = strip_invisible(text).split()
    for word in words:
        if _FLAG_RE.match(word):
            raise InvalidRequest(messages.bad_value(f"the {name}", "plain text", word))
    cleaned = " ".join(words)
    for char in cleaned:
        if unicodedata.category(char) in {"Cc", "Cs"}:
            raise InvalidRequest(messages.control_character(name, char))
    if len(cleaned) > limits.max_prompt_chars:
        raise InvalidRequest(
            messages.prompt_too_many_chars(len(cleaned), limits.max_prompt_chars, field=name)
        )
    return cleaned


def refusal(kind: Kind, model: str, spec: ModelSpec) -> str | None:
    """Why ``model`` cannot run command ``kind`` (None: it can); /help leaves such commands out."""
    if kind is Kind.EDIT:  # no editing family exists yet (Flux Kontext, Qwen-Image-Edit)
        return messages.no_edit_model()
    if KINDS[kind].pipeline == "depth" and not spec.depth_controlnet:
        return messages.no_depth_controlnet(model)
    return None


def resolve_model(name: str, settings: Settings) -> str:
    """A configured model's name as configured (letter case may differ), else refused."""
    if name in settings.models:
        return name
    folded = [known for known in settings.models if known.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise InvalidRequest(messages.unknown_model(name, settings.models))


def _resolve_sampler(name: str, model: str = "", facts: FamilyFacts | None = None) -> str:
    """A known sampler of the kind the model's family takes (unknown family: any known one)."""
    # Imported here: the sampler table imports diffusers, which `import gouache.bot` must not.
    from gouache.generation.loop.samplers import SAMPLERS, sampler_entry, samplers_of_kind

    if name.lower() not in SAMPLERS:
        raise InvalidRequest(messages.unknown_sampler(name, SAMPLERS))
    if facts is not None and sampler_entry(name.lower()).kind != facts.sampler_kind:
        raise InvalidRequest(messages.sampler_not_for_family(
            name, model, facts.name, facts.sampler_kind, samplers_of_kind(facts.sampler_kind)))  # fmt: skip
    return name.lower()


def _check_overflow(overflow: PromptCheck | None, model: str, prompt: str, negative: str) -> None:
    if overflow is None:
        return
    for field_name, text in (("prompt", prompt), ("negative prompt", negative)):
        found = overflow(model, text) if text else None
        if found is not None:
            raise InvalidRequest(messages.prompt_too_long(found.cut, found.limit, field=field_name))


# Sizes ---------------------------------------------------------------------------------------


def _snap(value: float) -> int:
    return max(8, int(value + 4) // 8 * 8)


def _resolve_size(
    opts: Mapping[str, Any], spec: ModelSpec, limits: Limits
) -> tuple[int, int, list[str]]:
    if "aspect_ratio" in opts:
        return _size_from_ratio(opts["aspect_ratio"], spec, limits)
    width = opts.get("width", spec.default_width)
    height = opts.get("height", spec.default_height)
    new_w, new_h = _snap(width), _snap(height)
    for name, side in (("width", new_w), ("height", new_h)):
        if not limits.min_side <= side <= limits.max_side:
            got = width if name == "width" else height
            raise InvalidRequest(messages.out_of_range(name, limits.min_side, limits.max_side, got))
    if new_w * new_h > limits.max_pixels:
        side = math.isqrt(limits.max_pixels) // 8 * 8
        raise InvalidRequest(
            messages.size_too_large(width, height, limits.max_pixels, f"{side}x{side}")
        )
    notes = [] if (new_w, new_h) == (width, height) else [
        messages.snapped(width, height, new_w, new_h)]  # fmt: skip
    return new_w, new_h, notes


def _size_from_ratio(
    ratio: tuple[int, int], spec: ModelSpec, limits: Limits
) -> tuple[int, int, list[str]]:
    """Keep the model's default pixel area at the requested shape, within every limit."""
    low, high = _snap_up(limits.min_side), limits.max_side // 8 * 8
    widest = min(high / low, limits.max_pixels / (low * low))
    r = ratio[0] / ratio[1]
    shown = f"{ratio[0]}:{ratio[1]}"
    if r > widest or 1 / r > widest:
        raise InvalidRequest(messages.aspect_ratio_out_of_range(shown, max(1, int(widest))))
    width, height = _size_for_area(r, spec.default_width * spec.default_height, limits)
    exact = width * ratio[1] == height * ratio[0]
    return width, height, [] if exact else [messages.aspect_ratio_result(shown, width, height)]


def size_for_upload(width: int, height: int, area: int, limits: Limits) -> tuple[int, int]:
    """The output size for a /depth upload of ``width`` x ``height`` when no --ar/--size was
    given: ``area`` pixels (the request's default size) at the upload's aspect, snapped to
    multiples of 8; an aspect beyond the limits is clamped to the widest allowed."""
    low, high = _snap_up(limits.min_side), limits.max_side // 8 * 8
    widest = min(high / low, limits.max_pixels / (low * low))
    r = min(max(width / height, 1 / widest), widest)
    return _size_for_area(r, area, limits)


def _size_for_area(r: float, area: int, limits: Limits) -> tuple[int, int]:
    low, high = _snap_up(limits.min_side), limits.max_side // 8 * 8
    area = min(area, limits.max_pixels)
    w, h = math.sqrt(area * r), math.sqrt(area / r)
    grow = max(1.0, low / min(w, h))
    shrink = min(1.0, high / (max(w, h) * grow))
    w, h = w * grow * shrink, h * grow * shrink
    width, height = (min(max(_snap(s), low), high) for s in (w, h))
    while width * height > limits.max_pixels:
        if width >= height and width - 8 >= low:
            width -= 8
        elif height - 8 >= low:
            height -= 8
        else:
            break
    return width, height


def _snap_up(value: int) -> int:
    return -(-value // 8) * 8


# Formatting ----------------------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_command(request: Request) -> str:
    """The text that ``parse_text`` + ``build_request`` turn back into ``request``."""
    prompt = f"{request.prompt} | {request.prompt_b}" if request.frames else request.prompt
    parts = [f"/{request.kind.value}", prompt]
    if request.negative_prompt:
        parts += ["--no", request.negative_prompt]
    parts += [
        f"--size {request.width}x{request.height}",
        f"--steps {request.steps}",
        f"--cfg {_number(request.guidance)}",
        f"--sampler {request.sampler}",
        f"--seed {request.seed}" + (f",{request.seed_b}" if request.frames else ""),
        f"--n {request.count}",
        f"--model {request.model}",
    ]
    if request.depth_input != "auto":
        parts.append(f"--input {request.depth_input}")
    if request.gif:
        parts.append("--gif")
    if request.diversify:
        parts.append("--diversify")
    if request.enlarge:
        parts.append(f"--enlarge {request.enlarge}")
    if request.strength != 1.0:
        parts.append(f"--strength {_number(request.strength)}")
    if request.denoise:
        parts.append(f"--strength {_number(request.denoise)}")
    if request.scale:
        parts.append(f"--scale {_number(request.scale)}")
    if request.process:
        parts.append("--process")
    if request.frames:
        parts.append(f"--frames {request.frames}")
    for axis, values in request.sweep:
        parts.append(f"--sweep {axis}={','.join(values)}")
    if request.style:
        parts.append(f"--style {request.style}")
    parts += [f"--lora {name}:{_number(scale)}" for name, scale in request.loras]
    if request.no_trigger:
        parts.append("--no-trigger")
    return " ".join(parts)
