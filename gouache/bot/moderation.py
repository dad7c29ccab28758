"""Prompt blocklist at admission, and the image classifier's verdicts applied at delivery.

The blocklist runs before a job is queued so a refused prompt costs no GPU time. The optional
image classifier (``moderation.classifier``, ``generation/safety.py``) runs in the worker on
finished images and records its verdicts as a ``moderation`` artifact; what happens to flagged
images is configuration (``moderation.flagged_action``: withhold them or send them as spoilers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gouache.config import Moderation as ModerationSettings
from gouache.errors import NotAllowed, UserError
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind

if TYPE_CHECKING:
    from gouache.bot.admission import Admits

__all__ = [
    "PromptFilter",
    "verdicts",
    "Screened",
    "screen",
    "ModeratedAdmission",
    "BLOCKED_MESSAGE",
]

BLOCKED_MESSAGE = "That prompt is not allowed here: it matches this server's blocklist."


class PromptFilter:
    """Blocked words (whole words, any case) and regular expressions, compiled once."""

    def __init__(self, settings: ModerationSettings) -> None:
        words = [w.strip() for w in settings.blocked_words if w.strip()]
        self._words = (
            re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.I)
            if words
            else None
        )
        try:
            self._patterns = [re.compile(p, re.I) for p in settings.blocked_patterns]
        except re.error as exc:  # a config mistake: fail at startup, not per request
            raise ValueError(f"moderation.blocked_patterns: {exc}") from exc

    @property
    def enabled(self) -> bool:
        return self._words is not None or bool(self._patterns)

    def is_blocked(self, text: str) -> bool:
        if self._words is not None and self._words.search(text):
            return True
        return any(p.search(text) for p in self._patterns)

    def check(self, request: Request) -> None:
        """Raise ``NotAllowed`` for a blocked prompt.

        Only the prompt is checked: negative prompts routinely name what people want to avoid.
        """
        if self.is_blocked(request.prompt):
            raise NotAllowed(BLOCKED_MESSAGE)


@dataclass(frozen=True)
class Screened:
    artifacts: tuple[Artifact, ...]
    spoiler: bool = False
    withheld: int = 0


def verdicts(flagged: Sequence[str], job_id: str) -> Artifact:
    """The worker's record of which artifacts its safety classifier flagged."""
    data = json.dumps({"flagged": sorted(flagged)}).encode()
    return Artifact(job_id, "moderation.json", ArtifactKind.MODERATION, "application/json", data)


def screen(artifacts: Sequence[Artifact], action: str) -> Screened:
    """Apply the worker's verdicts: withhold flagged images and GIFs, or mark them spoilers.

    The verdicts themselves are never shown; jobs without any pass untouched.
    """
    flagged: set[str] = set()
    shown: list[Artifact] = []
    for artifact in artifacts:
        if artifact.kind is ArtifactKind.MODERATION:
            flagged |= set(json.loads(artifact.data).get("flagged", []))
        else:
            shown.append(artifact)
    hits = [a for a in shown if a.name in flagged]
    if action == "withhold":
        return Screened(tuple(a for a in shown if a.name not in flagged), withheld=len(hits))
    return Screened(tuple(shown), spoiler=bool(hits))


class ModeratedAdmission:
    """Admission with the blocklist in front, so every adapter gets the same refusal."""

    def __init__(
        self,
        prompts: PromptFilter,
        admission: Admits,
        *,
        on_refused: Callable[[UserError], None] | None = None,
    ) -> None:
        self._prompts = prompts
        self._admission = admission
        self._on_refused = on_refused or (lambda exc: None)

    async def admit(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        """Blocklist, then the wrapped admission; every refusal is reported to ``on_refused``."""
        try:
            self._prompts.check(request)
            return await self._admission.admit(request, *args, **kwargs)
        except UserError as exc:
            self._on_refused(exc)
            raise
