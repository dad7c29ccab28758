"""The platform-neutral request: what every chat platform, the web page and the CLI produce.

A ``Request`` is complete and validated: defaults are filled in from the model, the seed is
chosen, sizes are snapped. The jobs table stores exactly ``Request.to_json()``.

``KINDS`` is the one table of commands: which pipeline each runs, whether it takes an upload,
how many images it makes and which follow-up buttons its result gets. Every platform, the
admission rules, the worker and the captions ask this table; adding a command starts here.
``batch_key`` is the one encoding of "these jobs may share an engine call", and
``image_seed`` the one rule for which seed image *i* of a request uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "Kind",
    "KindSpec",
    "KINDS",
    "COMMAND_NAMES",
    "FollowUp",
    "Origin",
    "Request",
    "GUIDANCE_DECIMALS",
    "image_seed",
]

# Guidance is kept to this many decimal places (finer values are rounded, with a note), so
# the value a job runs with is the value it shows and equal values share a batch.
GUIDANCE_DECIMALS = 2


class Kind(StrEnum):
    IMAGINE = "imagine"
    DEPTH = "depth"
    DIVERSITY = "diversity"


class FollowUp(StrEnum):
    """The buttons a finished result can get (what each does lives in ``bot/adapter.py``)."""

    REROLL = "reroll"  # same request, new seed
    GIF = "gif"  # same request and seed, with the denoising GIF
    DIVERSIFY = "diversify"  # same prompt as a /diversity batch


@dataclass(frozen=True)
class KindSpec:
    """Everything that differs between commands, in one row."""

    pipeline: Literal["txt2img", "depth"]
    upload: Literal["none", "required"]  # does the command take a file?
    summary: str  # one line for help texts and the list of commands
    min_images: int = 1
    default_images: Literal["one", "diversity_count"] = "one"
    buttons: tuple[FollowUp, ...] = (FollowUp.REROLL, FollowUp.GIF, FollowUp.DIVERSIFY)
    scored: bool = False  # the worker writes a diversity report for it


KINDS: dict[Kind, KindSpec] = {
    Kind.IMAGINE: KindSpec("txt2img", "none", "generate images from a prompt"),
    Kind.DEPTH: KindSpec("depth", "required", "generate following an uploaded depth map or photo"),
    Kind.DIVERSITY: KindSpec(
        "txt2img", "none", "several images scored for semantic and style diversity",
        min_images=2, default_images="diversity_count",
        buttons=(FollowUp.REROLL, FollowUp.GIF), scored=True,
    ),
}  # fmt: skip
COMMAND_NAMES = tuple(f"/{kind.value}" for kind in KINDS)


def image_seed(seed: int, index: int) -> int:
    """Image ``index`` of a request uses ``seed + index``, so any image can be made alone."""
    return seed + index


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
    strength: float = 1.0  # /depth: ControlNet conditioning scale, 0..2
    # Name of an input artifact (a depth map or photo) uploaded with the request.
    attachment: str | None = None
    # /depth: is the upload a depth map or a photo? "auto" decides from its pixels.
    depth_input: str = "auto"
    # /depth without --ar/--size: the output's aspect follows the upload's (bot/uploads.attach).
    size_from_upload: bool = field(default=False, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)  # normalisations reported back

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    @property
    def pipeline(self) -> Literal["txt2img", "depth"]:
        return self.spec.pipeline

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one engine call (seeds and prompts may differ).

        The one encoding of that rule: every field exactly (``repr`` of the float, so 7.0 and
        7.0000001 never share a call), joined by ``|``.
        """
        parts = (self.model, self.pipeline, self.width, self.height, self.steps, self.sampler,
                 repr(float(self.guidance)), int(self.diversify), repr(float(self.strength)))  # fmt: skip
        return "|".join(str(part) for part in parts)

    def image_seed(self, index: int) -> int:
        return image_seed(self.seed, index)

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
