"""Build valid Requests without going through a chat platform."""

from __future__ import annotations

import itertools
from typing import Any

from gouache.request import Kind, Origin, Request

_ids = itertools.count(1)


def make_request(user: str = "alice", prompt: str = "a red fox", **overrides: Any) -> Request:
    n = next(_ids)
    origin = Origin(
        platform=overrides.pop("platform", "web"),
        request_id=overrides.pop("request_id", f"req-{n}"),
        user=user,
        channel=overrides.pop("channel", "c1"),
        guild=overrides.pop("guild", ""),
    )
    fields: dict[str, Any] = {
        "kind": Kind.IMAGINE,
        "prompt": prompt,
        "origin": origin,
        "model": "builtin:tiny",
        "width": 64,
        "height": 64,
        "steps": 4,
        "guidance": 5.0,
        "sampler": "ddim",
        "seed": n,
    }
    fields.update(overrides)
    return Request(**fields)
