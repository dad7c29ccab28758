"""What Discord checks before it accepts a request, as the fake applies it.

Each check returns an error body (Discord's JSON error shape) or None. Sources: Discord's API
reference (message ``content`` 2,000 characters, 10 attachments, 25 choices and options,
option names and value ranges) and the error codes it documents (50035 Invalid Form Body,
40005 Request entity too large, 10062 Unknown interaction).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_CONTENT", "MAX_FILES", "MAX_CHOICES", "form_error", "check_message",
    "check_commands", "check_choices", "check_option_value", "OptionRejected",
]

MAX_CONTENT = 2000
MAX_FILES = 10
MAX_CHOICES = 25
MAX_OPTIONS = 25
_NAME = re.compile(r"^[-_\w]{1,32}$")
_INT_LIMIT = 2**53
_STRING, _INTEGER, _NUMBER = 3, 4, 10
_SUB, _GROUP = 1, 2


class OptionRejected(ValueError):
    """Discord's own client refuses to send this option value (so a test cannot either)."""


def form_error(field: str, message: str) -> dict[str, Any]:
    return {"message": "Invalid Form Body", "code": 50035,
            "errors": {field: {"_errors": [{"code": "BASE_TYPE_BAD", "message": message}]}}}  # fmt: skip


def check_message(payload: Any, file_count: int) -> dict[str, Any] | None:
    data = payload if isinstance(payload, dict) else {}
    content = data.get("content") or ""
    if not isinstance(content, str) or len(content) > MAX_CONTENT:
        return form_error("content", f"Must be {MAX_CONTENT} or fewer in length.")
    if file_count > MAX_FILES or len(data.get("attachments") or []) > MAX_FILES:
        return form_error("attachments", f"Must be {MAX_FILES} or fewer in length.")
    return _check_components(data.get("components") or [])


def _check_components(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """At most 5 action rows of 5 buttons; labels up to 80 and custom ids up to 100 characters."""
    if len(rows) > 5 or any(len(row.get("components") or []) > 5 for row in rows):
        return form_error("components", "At most 5 rows of 5 components.")
    for row in rows:
        for item in row.get("components") or []:
            if len(item.get("label") or "") > 80 or len(item.get("custom_id") or "") > 100:
                return form_error("components", "Label up to 80, custom_id up to 100 characters.")
    return None


def check_choices(choices: Any) -> dict[str, Any] | None:
    if not isinstance(choices, list) or len(choices) > MAX_CHOICES:
        return form_error("data.choices", f"Must be {MAX_CHOICES} or fewer in length.")
    for choice in choices:
        name, value = choice.get("name", ""), choice.get("value")
        if not 1 <= len(name) <= 100 or (isinstance(value, str) and len(value) > 100):
            return form_error("data.choices", "Choice name or value is 1 to 100 characters.")
    return None


def check_commands(commands: Any) -> dict[str, Any] | None:
    if not isinstance(commands, list):
        return form_error("_root", "Expected a list.")
    for command in commands:
        problem = _check_command(command)
        if problem:
            return form_error(command.get("name", "?"), problem)
    return None


def _check_command(command: dict[str, Any]) -> str | None:
    if not _NAME.match(command.get("name", "")) or command["name"] != command["name"].lower():
        return "Command name must match ^[-_\\w]{1,32}$ in lower case."
    if command.get("type", 1) == 1 and not 1 <= len(command.get("description", "")) <= 100:
        return "Description must be 1 to 100 characters."
    return _check_options(command.get("options") or [])


def _check_options(options: list[dict[str, Any]]) -> str | None:
    if len(options) > MAX_OPTIONS:
        return f"At most {MAX_OPTIONS} options."
    seen_optional = False
    for option in options:
        name = option.get("name", "")
        if not _NAME.match(name) or not 1 <= len(option.get("description", "")) <= 100:
            return f"Option {name!r}: bad name or description."
        if option.get("type") in (_SUB, _GROUP):
            problem = _check_options(option.get("options") or [])
            if problem:
                return problem
            continue
        if option.get("required"):
            if seen_optional:
                return f"Required option {name!r} after an optional one."
        else:
            seen_optional = True
        problem = _check_option_rules(option)
        if problem:
            return problem
    return None


def _check_option_rules(option: dict[str, Any]) -> str | None:
    name, kind = option["name"], option.get("type")
    choices = option.get("choices") or []
    if len(choices) > MAX_CHOICES:
        return f"Option {name!r}: at most {MAX_CHOICES} choices."
    if choices and option.get("autocomplete"):
        return f"Option {name!r}: choices and autocomplete are exclusive."
    low, high = option.get("min_value"), option.get("max_value")
    if kind in (_INTEGER, _NUMBER):
        for value in (low, high):
            if value is not None and not -_INT_LIMIT <= value <= _INT_LIMIT:
                return f"Option {name!r}: min/max must be within ±2^53."
        if low is not None and high is not None and low > high:
            return f"Option {name!r}: min_value is above max_value."
    if kind == _STRING:
        for key in ("min_length", "max_length"):
            value = option.get(key)
            if value is not None and not 0 <= value <= 6000:
                return f"Option {name!r}: {key} must be 0 to 6000."
    return None


def check_option_value(option: dict[str, Any] | None, value: Any) -> None:
    """Raise ``OptionRejected`` for a value Discord's client would not let the user send."""
    if option is None:
        raise OptionRejected("no such option is registered")
    name, kind = option["name"], option.get("type")
    if option.get("choices") and value not in [c["value"] for c in option["choices"]]:
        raise OptionRejected(f"{name}: {value!r} is not one of the choices")
    if kind in (_INTEGER, _NUMBER):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OptionRejected(f"{name}: {value!r} is not a number")
        if kind == _INTEGER and not float(value).is_integer():
            raise OptionRejected(f"{name}: {value!r} is not an integer")
        low, high = option.get("min_value"), option.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise OptionRejected(f"{name}: {value!r} is outside {low}..{high}")
    if kind == _STRING:
        low, high = option.get("min_length", 0), option.get("max_length", 6000)
        if not isinstance(value, str) or not low <= len(value) <= high:
            raise OptionRejected(f"{name}: length of {value!r} is outside {low}..{high}")
