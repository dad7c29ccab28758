"""The platform-neutral request: what every chat platform, the web page and the CLI produce.

A ``Request`` is complete and validated: defaults are filled in from the model, the seed is
chosen, sizes are snapped. The jobs table stores exactly ``Request.to_json()``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

__all__ = ["Kind", "Origin", "Request"]


class Kind(StrEnum):
    IMAGINE = "imagine"
    DEPTH = "depth"
    DIVERSITY = "diversity"


@dataclass(frozen=True)
class Origin:
    """Where a request came from and where its results go back to."""

    platform: str  # "discord" | "slack" | "web" | "cli"
    request_id: str  # the platform's idempotency key (interaction id, trigger id, uuid)
    user: str
    channel: str = ""
    guild: str = ""  # Discord guild or Slack workspace ("" for DMs, web, CLI)
    reply_token: str = ""  # e.g. Discord interaction token / Slack response_url; never logged

    def __repr__(self) -> str:  # keep reply tokens out of logs
        return (
            f"Origin(platform={self.platform!r}, request_id={self.request_id!r}, "
            f"user={self.user!r}, channel={self.channel!r}, guild={self.guild!r})"
        )


@dataclass(frozen=True)
class Request:
    """One validated generation command."""

    kind: Kind
    prompt: str
    origin: Origin
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    seed: int
    count: int = 1
    negative_prompt: str = ""
    gif: bool = False
    diversify: bool = False  # /diversity: deliberately enlarge diversity
    # Name of an input artifact (a depth map or photo) uploaded with the request.
    attachment: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)  # normalisations reported back

    @property
    def pipeline(self) -> Literal["txt2img", "depth"]:
        return "depth" if self.kind is Kind.DEPTH else "txt2img"

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one pipeline call (seeds and prompts may differ)."""
        return "|".join(
            str(part)
            for part in (
                self.model,
                self.pipeline,
                self.width,
                self.height,
                self.steps,
                self.sampler,
                f"{self.guidance:g}",
                int(self.diversify),
            )
        )

    def with_seed(self, seed: int) -> Request:
        return replace(self, seed=seed, notes=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["notes"] = list(self.notes)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        data = dict(data)
        data["kind"] = Kind(data["kind"])
        data["origin"] = Origin(**data["origin"])
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Request:
        return cls.from_dict(json.loads(text))
