"""What a chat platform must do for gouache, and the messages it is handed.

An adapter translates: events in (to a ``Request``, done elsewhere) and these four outgoing
messages out. It never decides limits, batching or who gets what: ``Delivery`` calls it with
finished jobs, and the adapter only renders them for its platform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gouache.config import Settings
from gouache.request import (
    DEFAULT_ENLARGE,
    PER_IMAGE,
    VARIATION_COUNT,
    VARY_STRENGTH,
    FollowUp,
    Kind,
    Origin,
    Request,
)
from gouache.storage.base import Storage
from gouache.storage.jobs import Artifact, ArtifactKind, Job

if TYPE_CHECKING:
    from gouache.bot.admission import Admits
    from gouache.bot.prompt_length import PromptCheck

__all__ = [
    "Action",
    "Button",
    "Acknowledgement",
    "Progress",
    "Result",
    "Adapter",
    "buttons_for",
    "follow_up",
    "parse_press",
    "AdapterDeps",
]


Action = FollowUp  # the buttons a result gets; which ones per command: ``request.KINDS``


@dataclass(frozen=True)
class Button:
    action: Action
    job_id: str
    label: str
    index: int | None = None  # U and V: which image of the result (0-based)

    @property
    def token(self) -> str:
        """The action as a press carries it: ``upscale.2`` for image 2 (``parse_press``)."""
        return self.action.value if self.index is None else f"{self.action.value}.{self.index}"


def parse_press(token: str) -> tuple[Action, int | None]:
    """A pressed button's ``Button.token`` back to (action, image index); ValueError if not one."""
    name, dot, index = token.partition(".")
    action = Action(name)
    if not dot:
        if action in PER_IMAGE:
            raise ValueError(token)
        return action, None
    if action not in PER_IMAGE or not index.isdigit() or len(index) > 2:
        raise ValueError(token)
    return action, int(index)


@dataclass(frozen=True)
class Acknowledgement:
    """Sent right after admission: the user learns their place in the queue."""

    job: Job
    created: bool  # False when the platform re-sent a request we already had
    position: int | None
    eta_seconds: float | None


@dataclass(frozen=True)
class Progress:
    job: Job
    fraction: float  # 0..1
    position: int | None = None


@dataclass(frozen=True)
class Result:
    """A finished job as the user should see it."""

    job: Job
    artifacts: tuple[Artifact, ...]
    buttons: tuple[Button, ...] = ()
    hidden: frozenset[str] = frozenset()  # flagged, shown behind a spoiler (``screen``)
    withheld: int = 0  # images the classifier held back
    notes: tuple[str, ...] = field(default=())

    @property
    def spoiler(self) -> bool:
        return bool(self.hidden)

    def of_kind(self, kind: ArtifactKind) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind is kind]


@dataclass(frozen=True)
class AdapterDeps:
    """Everything a chat adapter is handed by the composition root (``service.py``).

    Every field is required: an adapter that is not given a collaborator cannot silently do
    without it (a missed wake-up, a 413 fallback without links, an unchecked prompt length).
    """

    settings: Settings
    storage: Storage
    admission: Admits
    on_admitted: Callable[[], None]  # wakes delivery, so acknowledgements go out at once
    artifact_url: Callable[[str, str], str | None]  # (job id, name) -> a public link, if any
    prompt_overflow: PromptCheck  # (model, text) -> the part the text encoder would drop


@runtime_checkable
class Adapter(Protocol):
    """One chat platform (or the web playground) as ``Delivery`` sees it."""

    platform: str
    can_hide_images: bool  # a spoiler or blur exists; else flagged images are withheld

    async def acknowledge(self, ack: Acknowledgement) -> None:
        """Tell the user their job is queued (position, ETA)."""

    async def show_progress(self, progress: Progress) -> None:
        """Update the user's view of a running job; may be dropped when rate-limited."""

    async def deliver(self, result: Result) -> str:
        """Post the images, GIF and report; returns a reference to what was posted."""

    async def report_error(self, job: Job, message: str) -> str:
        """Tell the user their job failed (``message`` is user-facing); returns a reference."""

    def routes(self) -> list[Any]:
        """aiohttp routes the web server mounts for this platform (Slack's events endpoint)."""


_LABELS = {Action.REROLL: "Reroll", Action.VARIATIONS: "Variations", Action.GIF: "Make GIF",
           Action.DIVERSIFY: "Diversify"}  # fmt: skip


_PER_IMAGE_LABELS = {Action.UPSCALE: "U{n}", Action.VARY_SUBTLE: "V{n} subtle",
                     Action.VARY_STRONG: "V{n} strong"}  # fmt: skip


def buttons_for(job: Job) -> tuple[Button, ...]:
    """The follow-up buttons that make sense for a finished job: U and V once per image
    (not under sweeps and interpolations, whose images are cells and frames)."""
    request = job.request
    actions = [a for a in request.spec.buttons if not (a is Action.GIF and request.gif)]
    out = [Button(a, job.id, _LABELS[a]) for a in actions if a not in PER_IMAGE]
    if not (request.sweep or request.frames):
        out += [Button(a, job.id, _PER_IMAGE_LABELS[a].format(n=i + 1), i)
                for i in range(request.count) for a in actions if a in PER_IMAGE]  # fmt: skip
    return tuple(out)


def follow_up(
    request: Request, action: Action, origin: Origin, *, seed: int, diversity_count: int,
    max_images: int = VARIATION_COUNT, seed_max: int = 2**32 - 1, index: int | None = None,
) -> Request:  # fmt: skip
    """The request a button press stands for; ``origin`` is the presser, not the author.

    The source request was validated when it was admitted, and each action changes only
    fields that need no new validation. Depth jobs keep their attachment name; the caller
    copies the input artifact to the new job. Variations are ``VARIATION_COUNT`` images (at
    most ``max_images``) on the seeds right after this job's own, so none repeats an image
    already shown and any one of them can be made alone again.
    """
    base = replace(request, origin=origin, notes=())
    if action in PER_IMAGE:  # the caller attaches that image (``actions.ButtonActions``)
        start = replace(base, count=1, gif=False, diversify=False, enlarge="", sweep=(), process=False,
                        frames=0, prompt_b="", seed_b=None, strength=1.0, depth_input="auto",
                        attachment=None, size_from_upload=False, scale=0.0, tile=0)  # fmt: skip
        if action is Action.UPSCALE:
            side = int(max(request.width, request.height) * 1.5 + 4) // 8 * 8  # as commands' rule
            return replace(start, kind=Kind.UPSCALE, seed=request.image_seed(index or 0), denoise=0.0,
                           tile=side)  # fmt: skip
        return replace(start, kind=Kind.IMAGINE, seed=seed, denoise=VARY_STRENGTH[action.value])
    if action is Action.REROLL:
        return replace(base, seed=seed)
    if action is Action.VARIATIONS:
        count = max(1, min(VARIATION_COUNT, max_images))
        first = request.seed + request.count
        if first + count - 1 > seed_max:  # at the top of the range: the seeds just below
            first = max(0, request.seed - count)
        kind = Kind.IMAGINE if request.kind is Kind.DIVERSITY else request.kind
        return replace(base, kind=kind, seed=first, count=count, gif=False, diversify=False)
    if action is Action.GIF:
        return replace(base, gif=True)
    if request.kind is Kind.DEPTH:  # diversify a depth job: same control image, more variety
        return replace(base, diversify=True, seed=seed, gif=False, sweep=())
    # Paired like /diversity --enlarge: the baseline keeps the source's seed (its image 1 is the
    # image the button was under) and the enlarged set runs on the same seeds.
    count = max(request.count, diversity_count)
    return replace(base, kind=Kind.DIVERSITY, diversify=False, enlarge=DEFAULT_ENLARGE,
                   seed=request.seed, gif=False, count=count, sweep=(), process=False)  # fmt: skip


def input_artifacts(artifacts: Sequence[Artifact]) -> list[Artifact]:
    return [a for a in artifacts if a.kind is ArtifactKind.INPUT]
