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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gouache import messages
from gouache.config import Limits, ModelSpec, Settings
from gouache.errors import InvalidRequest, NotFound
from gouache.request import COMMAND_NAMES, GUIDANCE_DECIMALS, KINDS, Kind, Origin, Request

__all__ = ["Command", "parse_text", "from_options", "build_request", "format_command", "size_for_upload"]

SEED_MAX = 2**32 - 1
# Flag spelling -> option key. Phones turn "--" into an em or en dash, so both are accepted.
_FLAGS: Mapping[str, str] = MappingProxyType({
    "ar": "aspect_ratio", "size": "size", "seed": "seed", "steps": "steps",
    "cfg": "guidance", "guidance": "guidance", "no": "negative", "n": "count",
    "count": "count", "sampler": "sampler", "model": "model", "gif": "gif",
    "diversify": "diversify", "strength": "strength", "input": "depth_input",
})  # fmt: skip
_FORMS: Mapping[str, str] = MappingProxyType({
    "aspect_ratio": "16:9", "size": "768x512", "seed": "7", "steps": "30", "guidance": "7",
    "negative": "blurry, text", "count": "2", "sampler": "euler-a", "model": "NAME",
    "strength": "0.8", "depth_input": "photo",
})  # fmt: skip
_SHOWN_FLAGS = ("--ar", "--size", "--seed", "--steps", "--cfg", "--no", "--n", "--sampler",
                "--model", "--gif", "--diversify", "--strength", "--input")  # fmt: skip
_FLAG_RE = re.compile(r"^(?:--|[\u2013\u2014])([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$", re.S)
# "/word" or "/word" glued to nothing else: a command, known or not (paths like "/a/b" are prompts).
_COMMAND_RE = re.compile(r"^/[A-Za-z][A-Za-z0-9_-]*$")
_INT_RE = re.compile(r"^[+-]?[0-9]{1,30}$")
_FLOAT_RE = re.compile(r"^[+-]?(?:[0-9]{1,30}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?$")
_RATIO_RE = re.compile(r"^([0-9]{1,6}):([0-9]{1,6})$")
_SIZE_RE = re.compile(r"^([0-9]{1,6})[xX\u00d7]([0-9]{1,6})$")
_BOOL_WORDS = MappingProxyType({"true": True, "yes": True, "1": True, "on": True,
                                "false": False, "no": False, "0": False, "off": False})  # fmt: skip
_OPTION_KEYS = frozenset({"negative", "seed", "steps", "guidance", "aspect_ratio", "width",
                          "height", "sampler", "count", "model", "gif", "diversify",
                          "attachment", "strength", "depth_input"})  # fmt: skip
_OPTION_ALIASES = MappingProxyType({"negative_prompt": "negative", "cfg": "guidance",
                                    "ar": "aspect_ratio", "n": "count",
                                    "input": "depth_input"})  # fmt: skip
STRENGTH_MAX = 2.0
STRENGTH_DECIMALS = 2
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
    words = text.split()
    kind = Kind.IMAGINE
    if words and _COMMAND_RE.match(words[0]):
        if words[0].lower() not in COMMAND_NAMES:
            raise InvalidRequest(messages.unknown_command(words[0], COMMAND_NAMES))
        kind = Kind(words.pop(0)[1:].lower())
    prompt, options = _scan(words)
    return Command(kind, prompt, options)


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
        if key in seen:
            raise InvalidRequest(messages.duplicate_option(flag))
        seen.add(key)
        values = [] if inline is None else [inline] if inline else []
        i += 1
        if key in {"gif", "diversify"}:
            if inline is not None:
                raise InvalidRequest(messages.bad_value(flag, "given without a value", inline))
            options[key] = True
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
    elif key in {"seed", "steps", "count"}:
        options[key] = _parse_int(flag, value)
    elif key in {"guidance", "strength"}:
        options[key] = _parse_float(flag, value)
    elif key == "depth_input":
        options[key] = _parse_depth_input(flag, value)
    else:
        options[key] = value


def _parse_depth_input(name: str, value: Any) -> str:
    word = str(value).strip().lower()
    if word not in _DEPTH_INPUTS:
        raise InvalidRequest(messages.bad_value(name, "depth or photo", str(value)))
    return word


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
        if key in given:
            raise InvalidRequest(messages.duplicate_option(key))
        given[key] = value
    if "aspect_ratio" in given and ("width" in given or "height" in given):
        raise InvalidRequest(messages.conflicting_options("aspect_ratio", "width/height"))
    return Command(Kind(kind), prompt, given)


def _coerce(key: str, value: Any) -> Any:
    if key in {"seed", "steps", "count", "width", "height"}:
        return _parse_int(key, value)
    if key in {"guidance", "strength"}:
        return _parse_float(key, value)
    if key == "depth_input":
        return _parse_depth_input("input", value)
    if key == "aspect_ratio":
        return _parse_ratio(key, value)
    if key in {"gif", "diversify"}:
        return _parse_bool(key, value)
    return str(value)


# Validation ----------------------------------------------------------------------------------


def build_request(
    command: Command,
    origin: Origin,
    settings: Settings,
    *,
    prompt_overflow: Callable[[str, str], str | None] | None = None,
    rng: random.Random | None = None,
) -> Request:
    """Fill defaults from the model, choose a seed, and validate everything against limits."""
    opts, limits = command.options, settings.limits
    model = _resolve_model(str(opts.get("model") or settings.default_model), settings)
    spec = settings.models[model]
    prompt = _clean_text(command.prompt, "prompt", limits)
    negative = _clean_text(str(opts.get("negative", "")), "negative prompt", limits)
    if not prompt:
        raise InvalidRequest(messages.prompt_empty())
    steps = _in_range("steps", opts.get("steps", min(spec.default_steps, limits.max_steps)),
                      1, limits.max_steps)  # fmt: skip
    given = float(opts.get("guidance", min(spec.default_guidance, limits.max_guidance)))
    given = _in_range("guidance", given, 0, limits.max_guidance)
    guidance = round(given, GUIDANCE_DECIMALS)
    count = _count(command.kind, opts.get("count"), limits)
    sampler = _resolve_sampler(str(opts.get("sampler") or spec.default_sampler))
    if "seed" in opts:
        seed = _in_range("seed", opts["seed"], 0, SEED_MAX)
    else:
        seed = (rng or random.SystemRandom()).randint(0, SEED_MAX)
    if opts.get("diversify") and not KINDS[command.kind].scored:
        raise InvalidRequest(messages.only_with("--diversify", "/diversity"))
    takes_upload = KINDS[command.kind].upload != "none"
    for key, flag in (("strength", "--strength"), ("depth_input", "--input")):
        if key in opts and not takes_upload:
            raise InvalidRequest(messages.only_with(flag, "/depth"))
    strength = round(float(_in_range("strength", opts.get("strength", 1.0), 0, STRENGTH_MAX)),
                     STRENGTH_DECIMALS)  # fmt: skip
    width, height, notes = _resolve_size(opts, spec, limits)
    if guidance != given:
        notes.append(messages.guidance_rounded(given, guidance, GUIDANCE_DECIMALS))
    # /depth without --ar/--size: bot/uploads.attach gives the output the upload's aspect.
    size_from_upload = takes_upload and not {"aspect_ratio", "width", "height"} & set(opts)
    _check_overflow(prompt_overflow, model, prompt, negative)
    return Request(
        kind=command.kind, prompt=prompt, origin=origin, model=model, width=width,
        height=height, steps=steps, guidance=guidance, sampler=sampler, seed=seed,
        count=count, negative_prompt=negative, gif=bool(opts.get("gif", False)),
        diversify=bool(opts.get("diversify", False)), attachment=opts.get("attachment"),
        strength=strength, depth_input=str(opts.get("depth_input", "auto")),
        size_from_upload=size_from_upload, notes=tuple(notes),
    )  # fmt: skip


def _in_range(name: str, value: Any, low: float, high: float) -> Any:
    if not low <= value <= high:
        raise InvalidRequest(messages.out_of_range(name, low, high, value))
    return value


def _count(kind: Kind, value: int | None, limits: Limits) -> int:
    spec = KINDS[kind]
    if spec.default_images == "diversity_count":
        high = max(limits.max_images, limits.diversity_count)
        default = limits.diversity_count
    else:
        high, default = limits.max_images, 1
    return _in_range("count", default if value is None else value, spec.min_images, high)


def _clean_text(text: str, name: str, limits: Limits) -> str:
    """Collapse whitespace; refuse control characters, lone surrogates and options in text."""
    words = text.split()
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


def _resolve_model(name: str, settings: Settings) -> str:
    if name in settings.models:
        return name
    folded = [known for known in settings.models if known.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise NotFound(messages.unknown_model(name, settings.models))


def _resolve_sampler(name: str) -> str:
    # Imported here: the sampler table imports diffusers, which `import gouache.bot` must not.
    from gouache.generation.samplers import SAMPLERS

    if name.lower() not in SAMPLERS:
        raise InvalidRequest(messages.unknown_sampler(name, SAMPLERS))
    return name.lower()


def _check_overflow(
    overflow: Callable[[str, str], str | None] | None, model: str, prompt: str, negative: str
) -> None:
    if overflow is None:
        return
    for field_name, text in (("prompt", prompt), ("negative prompt", negative)):
        cut = overflow(model, text) if text else None
        if cut:
            raise InvalidRequest(messages.prompt_too_long(cut, field=field_name))


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
    parts = [f"/{request.kind.value}", request.prompt]
    if request.negative_prompt:
        parts += ["--no", request.negative_prompt]
    parts += [
        f"--size {request.width}x{request.height}",
        f"--steps {request.steps}",
        f"--cfg {_number(request.guidance)}",
        f"--sampler {request.sampler}",
        f"--seed {request.seed}",
        f"--n {request.count}",
        f"--model {request.model}",
    ]
    if request.strength != 1.0:
        parts.append(f"--strength {_number(request.strength)}")
    if request.depth_input != "auto":
        parts.append(f"--input {request.depth_input}")
    if request.gif:
        parts.append("--gif")
    if request.diversify:
        parts.append("--diversify")
    return " ".join(parts)
