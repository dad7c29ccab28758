"""What a chat platform must do for gouache, and the messages it is handed.

An adapter translates: events in (to a ``Request``, done elsewhere) and these four outgoing
messages out. It never decides limits, batching or who gets what: ``Delivery`` calls it with
finished jobs, and the adapter only renders them for its platform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

from gouache.request import Kind, Origin, Request
from gouache.storage.jobs import Artifact, ArtifactKind, Job

__all__ = [
    "Action",
    "Button",
    "Acknowledgement",
    "Progress",
    "Result",
    "Adapter",
    "buttons_for",
    "follow_up",
]


class Action(StrEnum):
    """The buttons every platform shows under a result."""

    REROLL = "reroll"  # same request, new seed
    GIF = "gif"  # same request and seed, with the denoising GIF
    DIVERSIFY = "diversify"  # same prompt as a /diversity batch


@dataclass(frozen=True)
class Button:
    action: Action
    job_id: str
    label: str


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
    spoiler: bool = False  # moderation flagged it and flagged_action is "spoiler"
    withheld: int = 0  # images the classifier held back
    notes: tuple[str, ...] = field(default=())

    def of_kind(self, kind: ArtifactKind) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind is kind]


@runtime_checkable
class Adapter(Protocol):
    """One chat platform (or the web playground) as ``Delivery`` sees it."""

    platform: str

    async def acknowledge(self, ack: Acknowledgement) -> None:
        """Tell the user their job is queued (position, ETA)."""

    async def show_progress(self, progress: Progress) -> None:
        """Update the user's view of a running job; may be dropped when rate-limited."""

    async def deliver(self, result: Result) -> str:
        """Post the images, GIF and report; returns a reference to what was posted."""

    async def report_error(self, job: Job, message: str) -> str:
        """Tell the user their job failed (``message`` is user-facing); returns a reference."""


_LABELS = {Action.REROLL: "Reroll", Action.GIF: "Make GIF", Action.DIVERSIFY: "Diversify"}


def buttons_for(job: Job) -> tuple[Button, ...]:
    """The follow-up buttons that make sense for a finished job."""
    actions = [Action.REROLL]
    if not job.request.gif:
        actions.append(Action.GIF)
    if job.request.kind is not Kind.DIVERSITY:
        actions.append(Action.DIVERSIFY)
    return tuple(Button(a, job.id, _LABELS[a]) for a in actions)


def follow_up(
    request: Request, action: Action, origin: Origin, *, seed: int, diversity_count: int
) -> Request:
    """The request a button press stands for; ``origin`` is the presser, not the author.

    The source request was validated when it was admitted, and each action changes only
    fields that need no new validation. Depth jobs keep their attachment name; the caller
    copies the input artifact to the new job.
    """
    base = replace(request, origin=origin, notes=())
    if action is Action.REROLL:
        return replace(base, seed=seed)
    if action is Action.GIF:
        return replace(base, gif=True)
    if request.kind is Kind.DEPTH:  # diversify a depth job: same control image, more variety
        return replace(base, diversify=True, seed=seed, gif=False)
    count = max(request.count, diversity_count)
    return replace(base, kind=Kind.DIVERSITY, diversify=True, seed=seed, gif=False, count=count)


def input_artifacts(artifacts: Sequence[Artifact]) -> list[Artifact]:
    return [a for a in artifacts if a.kind is ArtifactKind.INPUT]
