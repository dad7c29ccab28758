"""Prompt blocklist at admission, and the image classifier's verdicts applied at delivery.

The blocklist runs before a job is queued so a refused prompt costs no GPU time. The optional
image classifier (``moderation.classifier``, ``generation/safety.py``) runs in the worker on
finished images and records its verdicts as a ``moderation`` artifact; what happens to flagged
images is configuration (``moderation.flagged_action``: withhold them or send them as spoilers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gouache.config import Moderation as ModerationSettings
from gouache.errors import NotAllowed, UserError
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind, flagged_names

if TYPE_CHECKING:
    from gouache.bot.admission import Admits

__all__ = [
    "PromptFilter",
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
    """What a surface may show of a finished job, after the worker's verdicts."""

    artifacts: tuple[Artifact, ...]
    hidden: frozenset[str] = frozenset()  # names to show only behind a spoiler or blur
    withheld: int = 0

    @property
    def spoiler(self) -> bool:
        return bool(self.hidden)


def screen(artifacts: Sequence[Artifact], action: str, *, can_hide: bool) -> Screened:
    """The one rule for flagged images, asked by every surface (Discord, Slack, the web).

    ``withhold``: flagged images and GIFs are left out and counted. ``spoiler``: they are
    shown hidden (Discord's spoiler, the playground's blur) where the surface ``can_hide``
    them, and withheld where it cannot (Slack has no spoilers): a flagged image is never
    shown in the clear. The verdicts themselves are never shown.
    """
    flagged = flagged_names(artifacts)
    shown = [a for a in artifacts if a.kind is not ArtifactKind.MODERATION]
    hits = [a for a in shown if a.name in flagged]
    if action == "spoiler" and can_hide:
        return Screened(tuple(shown), hidden=frozenset(a.name for a in hits))
    return Screened(tuple(a for a in shown if a.name not in flagged), withheld=len(hits))


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
