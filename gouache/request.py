"""The platform-neutral request: what every chat platform, the web page and the CLI produce.

A ``Request`` is complete and validated: defaults are filled in from the model, the seed is
chosen, sizes are snapped. The jobs table stores exactly ``Request.to_json()``.

``KINDS`` is the one table of commands: which pipeline each runs, whether it takes an upload,
how many images it makes and which follow-up buttons its result gets. Every platform, the
admission rules, the worker and the captions ask this table; adding a command starts here.
``LISTINGS`` is its other half, the commands that answer with text instead of a job
(``/help``, ``/loras``): every platform offers each of them (``bot/listings.py`` answers).
``batch_key`` is the one encoding of "these jobs may share an engine call", ``ShapeKey.key``
the one encoding of "these jobs may share a step-level running batch" (the jobs table's
``shape_key`` column and the worker's claim of joiners), and ``image_seed`` the one rule for
which seed image *i* of a request uses.
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
    "Listing",
    "ListingSpec",
    "LISTINGS",
    "LISTING_NAMES",
    "FollowUp",
    "Origin",
    "Request",
    "ShapeKey",
    "GUIDANCE_DECIMALS",
    "ENLARGE_METHODS",
    "DEFAULT_ENLARGE",
    "STRENGTH_RANGE",
    "IMAGE_STRENGTH",
    "VARY_STRENGTH",
    "UPSCALE_SCALE",
    "UPSCALE_MAX_SCALE",
    "PER_IMAGE",
    "VARIATION_COUNT",
    "image_seed",
    "SWEEP_AXES",
    "SWEEP_MAX_AXES",
    "SWEEP_MAX_CELLS",
    "INTERPOLATE_FRAMES",
    "INTERPOLATE_MAX_FRAMES",
]

# Guidance is kept to this many decimal places (finer values are rounded, with a note), so
# the value a job runs with is the value it shows and equal values share a batch.
GUIDANCE_DECIMALS = 2
STRENGTH_RANGE = (0.0, 2.0)  # /depth: how strongly the depth map steers (ControlNet scale)
VARIATION_COUNT = 4  # images a Variations press asks for (capped by limits.max_images)
# Starting from an image (remix, upscale, vary): ``--strength`` is the share of the schedule
# redrawn, 0 < s <= 1 (diffusers' img2img ``strength``); the default per command.
IMAGE_STRENGTH = {"imagine": 0.6, "upscale": 0.35}
VARY_STRENGTH = {"vary-subtle": 0.35, "vary-strong": 0.7}  # the V buttons
UPSCALE_SCALE = 2.0  # /upscale's default --scale
UPSCALE_MAX_SCALE = 4.0  # and its limit (the output must also fit limits.max_side)

# `--sweep NAME=v1,v2,...`: the axes a sweep may vary (``ar`` is stored as the sizes it gives),
# at most two of them and this many cells in all; every cell is charged as an image.
SWEEP_AXES = ("cfg", "steps", "sampler", "seed", "size", "strength", "prompt")
SWEEP_MAX_AXES = 2
SWEEP_MAX_CELLS = 16
# `/interpolate A | B [--seed A,B] [--frames 16]`: frames charged as images.
INTERPOLATE_FRAMES = 16
INTERPOLATE_MAX_FRAMES = 32

# /diversity --enlarge METHOD (gouache/generation/diversity/enlarge.py); the bare flag and the Diversify
# button use the default, the method benchmarks/diversity.py measured best.
ENLARGE_METHODS = ("cads", "variants", "interval")
DEFAULT_ENLARGE = "variants"


class Kind(StrEnum):
    IMAGINE = "imagine"
    DEPTH = "depth"
    DIVERSITY = "diversity"
    INTERPOLATE = "interpolate"
    UPSCALE = "upscale"
    EDIT = "edit"


class FollowUp(StrEnum):
    """The buttons a finished result can get (what each does lives in ``bot/adapter.py``)."""

    REROLL = "reroll"  # same request, new seed
    GIF = "gif"  # same request and seed, with the denoising GIF
    DIVERSIFY = "diversify"  # same prompt as a /diversity batch
    VARIATIONS = "variations"  # four images on the seeds around this one
    # Per image of a result (the button carries the image's index): a 2x /upscale of it, and
    # image-to-image from it with a new seed at VARY_STRENGTH.
    UPSCALE = "upscale"
    VARY_SUBTLE = "vary-subtle"
    VARY_STRONG = "vary-strong"


PER_IMAGE = frozenset({FollowUp.UPSCALE, FollowUp.VARY_SUBTLE, FollowUp.VARY_STRONG})


@dataclass(frozen=True)
class KindSpec:
    """Everything that differs between commands, in one row."""

    pipeline: Literal["txt2img", "depth"]
    depth_map: Literal["none", "required"]  # does it take a depth map (or photo) to follow?
    summary: str  # one line for help texts and the list of commands
    min_images: int = 1
    default_images: Literal["one", "diversity_count"] = "one"
    buttons: tuple[FollowUp, ...] = (
        FollowUp.REROLL, FollowUp.VARIATIONS, FollowUp.GIF, FollowUp.DIVERSIFY,
        FollowUp.UPSCALE, FollowUp.VARY_SUBTLE, FollowUp.VARY_STRONG,
    )  # fmt: skip
    scored: bool = False  # the worker writes a diversity report for it
    # Does it take an image to start from (image-to-image: remix, upscale, edit)?
    image: Literal["none", "optional", "required"] = "none"

    @property
    def takes_file(self) -> bool:
        """Whether any upload is accepted (a depth map or an image)."""
        return self.depth_map != "none" or self.image != "none"

    @property
    def needs_file(self) -> bool:
        return self.depth_map == "required" or self.image == "required"


KINDS: dict[Kind, KindSpec] = {
    Kind.IMAGINE: KindSpec("txt2img", "none", "generate images from a prompt (and an image to remix)",
                           image="optional"),
    Kind.DEPTH: KindSpec("depth", "required", "generate following an uploaded depth map or photo"),
    Kind.DIVERSITY: KindSpec(
        "txt2img", "none", "several images scored for semantic and style diversity",
        min_images=2, default_images="diversity_count",
        buttons=(FollowUp.REROLL, FollowUp.GIF), scored=True,
    ),
    Kind.INTERPOLATE: KindSpec(
        "txt2img", "none", "walk from one prompt (and seed) to another: a looping GIF and a strip",
        buttons=(FollowUp.REROLL,),
    ),
    Kind.UPSCALE: KindSpec(
        "txt2img", "none", "enlarge an image (--scale, default 2x) and redraw its detail",
        image="required", buttons=(FollowUp.VARY_SUBTLE, FollowUp.VARY_STRONG),
    ),
    Kind.EDIT: KindSpec(
        "txt2img", "none", "change an image by instruction (needs an editing model)",
        image="required", buttons=(),
    ),
}  # fmt: skip
COMMAND_NAMES = tuple(f"/{kind.value}" for kind in KINDS)


class Listing(StrEnum):
    """The commands that answer with text about a model rather than queue a job."""

    HELP = "help"
    LORAS = "loras"


@dataclass(frozen=True)
class ListingSpec:
    summary: str  # one line for help texts, Discord's command list and Slack's manifest


# Each is a Discord slash command, a Slack slash command (and ``@gouache NAME``) and
# ``GET /api/NAME`` on the web, all with an optional model (the default model otherwise).
LISTINGS: dict[Listing, ListingSpec] = {
    Listing.HELP: ListingSpec("the commands and options a model takes"),
    Listing.LORAS: ListingSpec("the LoRAs and styles you can use with a model"),
}
LISTING_NAMES = tuple(f"/{listing.value}" for listing in LISTINGS)


def image_seed(seed: int, index: int) -> int:
    """Image ``index`` of a request uses ``seed + index``, so any image can be made alone."""
    return seed + index


@dataclass(frozen=True)
class ShapeKey:
    """What must be equal for lanes to share one denoiser call: the model and the latent size."""

    model: str
    width: int
    height: int

    @property
    def key(self) -> str:
        """The one string encoding, stored with each job and matched when a running batch
        claims joiners (migration 0003 backfilled old rows with this same form)."""
        return f"{self.model}|{self.width}x{self.height}"


@dataclass(frozen=True)
class Origin:
    """Where a request came from and where its results go back to."""

    platform: str  # "discord" | "slack" | "web" | "cli"
    request_id: str  # the platform's idempotency key (interaction id, trigger id, uuid)
    user: str
    channel: str = ""
    guild: str = ""  # Discord guild or Slack workspace ("" for DMs, web, CLI)
    reply_token: str = ""  # e.g. Discord interaction token / Slack response_url; never logged
    upload_limit: int = 0  # bytes one message may upload, as the platform said (0: unknown)

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
    # /diversity --enlarge METHOD: a baseline and the set enlarged by METHOD (cads, variants,
    # interval) on the same seeds, reported before -> after; "" for none.
    enlarge: str = ""
    # Name of an input artifact (a depth map or photo) uploaded with the request.
    attachment: str | None = None
    # /depth: is the upload a depth map or a photo? "auto" decides from its pixels.
    depth_input: str = "auto"
    # /depth without --ar/--size: the output's aspect follows the upload's (bot/uploads.attach).
    size_from_upload: bool = field(default=False, compare=False)
    strength: float = 1.0  # /depth: conditioning scale, STRENGTH_RANGE
    notes: tuple[str, ...] = field(default=(), compare=False)  # normalisations reported back
    # `--sweep`: ((axis, (value, ...)), ...) in canonical form (see SWEEP_AXES); every
    # combination is one cell with the same seed, posted as one labelled grid plus the cells.
    sweep: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # `--process`: the final image noised step by step by the scheduler, then denoised.
    process: bool = False
    # /interpolate: ``prompt`` and ``seed`` are the first endpoint, these the second.
    prompt_b: str = ""
    seed_b: int | None = None
    frames: int = 0
    # Image-to-image (an /imagine with an image, /upscale, the V buttons): the share of the
    # schedule redrawn, 0 < s <= 1 (``--strength`` on those commands); 0: not given.
    denoise: float = 0.0
    scale: float = 0.0  # /upscale --scale (the output size already includes it)
    # /upscale past the model's comfortable size: the tile side its pass runs in (0: whole).
    tile: int = 0
    # `--lora NAME[:SCALE]` (and a style's LoRAs): (name, scale) pairs, applied to this
    # request's rows only; never part of a batch or shape key.
    loras: tuple[tuple[str, float], ...] = ()
    style: str = ""  # `--style NAME`
    no_trigger: bool = False  # `--no-trigger`: the LoRAs' trigger words are not added
    # What the model reads when a style or trigger words changed the text ("": as typed).
    model_prompt: str = ""
    model_negative: str = ""
    # What ``--cfg`` meant for the model (``model_families.GuidanceKind``: "cfg", "distilled"
    # or "none"), so the caption and the PNG say "CFG scale" or "Distilled guidance".
    guidance_kind: str = field(default="cfg", compare=False)

    @property
    def text(self) -> str:
        """The prompt the model reads (the style's template and trigger words applied)."""
        return self.model_prompt or self.prompt

    @property
    def negative_text(self) -> str:
        """The negative prompt the model reads (the style's negative added)."""
        return self.model_negative or self.negative_prompt

    def __post_init__(self) -> None:
        low, high = STRENGTH_RANGE
        if not low <= self.strength <= high:
            raise ValueError(f"strength {self.strength!r} is outside {low}..{high}")
        if not 0.0 <= self.denoise <= 1.0:
            raise ValueError(f"denoise {self.denoise!r} is outside 0..1")

    @property
    def from_image(self) -> bool:
        """Whether it starts from an uploaded image (image-to-image) rather than from noise."""
        return self.spec.image != "none" and self.attachment is not None

    @property
    def image_strength(self) -> float:
        """The image-to-image strength it runs with: as given, else the command's default."""
        return self.denoise or IMAGE_STRENGTH.get(self.kind.value, IMAGE_STRENGTH["imagine"])

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    @property
    def pipeline(self) -> Literal["txt2img", "depth"]:
        return self.spec.pipeline

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one engine call (seeds and prompts may differ).

        The one encoding of that rule: every field exactly (``repr`` of the floats, so 7.0 and
        7.0000001 never share a call; strength too, a ControlNet scale is per call), joined
        by ``|``.
        """
        parts: list[object] = [self.model, self.pipeline, self.width, self.height, self.steps,
                               self.sampler, repr(float(self.guidance)), int(self.diversify),
                               repr(float(self.strength)), self.enlarge]  # fmt: skip
        if self.from_image:  # the strength is per lane, but experiments run whole
            parts.append(f"image={self.image_strength!r}")
        if self.sweep:  # a sweep's cells are batched by the worker, never with other jobs
            parts.append("sweep=" + json.dumps(self.sweep, separators=(",", ":")))
        if self.tile:  # a tiled upscale runs alone
            parts.append(f"tile={self.tile}")
        if self.frames:  # an interpolation's lanes carry their own noise and embeddings
            parts.append(f"frames={self.frames}")
        return "|".join(str(part) for part in parts)

    @property
    def runs_whole(self) -> bool:
        """Sweeps and tiled upscales (many lanes of running batches of their own, of their own
        shapes) and /diversity --enlarge (a baseline and an enlarged set, paired): the worker
        runs such a job whole rather than admitting it as lanes of a shared batch. Interpolation
        frames and ``--process`` jobs are lanes of the shared batch like any image."""
        return bool(self.sweep or self.enlarge or self.tile)

    @property
    def shape_key(self) -> str:
        """Jobs with equal shape keys can share a step-level batch: one model, one latent size.

        Steps, sampler, guidance and ControlNet or not are per lane, so they are not in it.
        Jobs run whole are keyed by their whole batch key: they never join a running batch.
        """
        if self.runs_whole:
            return "experiment|" + self.batch_key
        return self.shape.key

    @property
    def shape(self) -> ShapeKey:
        """The model and latent size this request's lanes need in a running batch."""
        return ShapeKey(self.model, self.width, self.height)

    @property
    def cells(self) -> int:
        """Sweep cells (1 without a sweep): every combination of the axes' values."""
        total = 1
        for _, values in self.sweep:
            total *= len(values)
        return total

    @property
    def images(self) -> int:
        """Images this request makes, what admission, batch sizes and ETAs charge."""
        return self.count * self.cells * max(1, self.frames)

    @property
    def image_steps(self) -> int:
        """The denoising work this request asks for (images x steps): what fairness charges."""
        return self.images * self.steps

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
        data["sweep"] = tuple((str(axis), tuple(values)) for axis, values in data.get("sweep", ()))
        data["loras"] = tuple((str(name), float(scale)) for name, scale in data.get("loras", ()))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Request:
        return cls.from_dict(json.loads(text))
