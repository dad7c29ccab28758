"""The prompt blocklist refuses at admission; the worker's verdicts withhold or spoiler."""

from __future__ import annotations

import pytest

from gouache.bot.moderation import (
    BLOCKED_MESSAGE,
    ModeratedAdmission,
    PromptFilter,
    screen,
)
from gouache.config import Moderation
from gouache.errors import NotAllowed
from gouache.storage.jobs import Artifact, ArtifactKind, verdict_artifact
from tests.support.factories import make_request


def _filter(**cfg: object) -> PromptFilter:
    return PromptFilter(Moderation(**cfg))


@pytest.mark.parametrize(
    ("prompt", "blocked"),
    [
        ("a Gory battle", True),
        ("gory", True),
        ("an allegory of spring", False),  # whole words only
        ("a red fox", False),
        ("a SPLATTER-painting", True),  # pattern
    ],
)
def test_blocked_words_match_whole_words_in_any_case(prompt: str, blocked: bool) -> None:
    prompts = _filter(blocked_words=["gory"], blocked_patterns=[r"splatter\W"])
    assert prompts.is_blocked(prompt) is blocked


def test_empty_configuration_blocks_nothing() -> None:
    prompts = _filter()
    assert not prompts.enabled
    prompts.check(make_request(prompt="anything at all"))


def test_negative_prompt_may_name_blocked_words() -> None:
    prompts = _filter(blocked_words=["gore"])
    prompts.check(make_request(prompt="a meadow", negative_prompt="gore"))


def test_bad_pattern_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="blocked_patterns"):
        _filter(blocked_patterns=["(unclosed"])


class _Recorder:
    def __init__(self) -> None:
        self.admitted: list[object] = []

    async def admit(self, request, **kwargs):
        self.admitted.append(request)
        return "ok"


async def test_moderated_admission_refuses_before_enqueue_with_a_clear_message() -> None:
    inner = _Recorder()
    admission = ModeratedAdmission(_filter(blocked_words=["gore"]), inner)
    with pytest.raises(NotAllowed) as caught:
        await admission.admit(make_request(prompt="lots of GORE"))
    assert caught.value.message == BLOCKED_MESSAGE
    assert inner.admitted == []
    assert await admission.admit(make_request(prompt="a lighthouse")) == "ok"


def _artifacts(flagged: list[str] | None = None) -> list[Artifact]:
    found = [
        Artifact("j", "image-0.png", ArtifactKind.IMAGE, "image/png", b"a"),
        Artifact("j", "image-1.png", ArtifactKind.IMAGE, "image/png", b"b"),
        Artifact("j", "denoise-1.gif", ArtifactKind.GIF, "image/gif", b"c"),
        Artifact("j", "report.json", ArtifactKind.REPORT, "application/json", b"{}"),
    ]
    if flagged is not None:
        found.append(verdict_artifact("j", flagged))
    return found


def test_without_verdicts_everything_passes() -> None:
    screened = screen(_artifacts(), "withhold", can_hide=True)
    assert len(screened.artifacts) == 4 and not screened.spoiler and screened.withheld == 0


def test_flagged_images_and_their_gifs_are_withheld_and_verdicts_never_shown() -> None:
    screened = screen(_artifacts(["image-1.png", "denoise-1.gif"]), "withhold", can_hide=True)
    assert [a.name for a in screened.artifacts] == ["image-0.png", "report.json"]
    assert screened.withheld == 2 and not screened.spoiler


def test_flagged_images_are_sent_as_spoilers() -> None:
    screened = screen(_artifacts(["image-1.png"]), "spoiler", can_hide=True)
    assert [a.name for a in screened.artifacts] == ["image-0.png", "image-1.png", "denoise-1.gif", "report.json"]
    assert screened.spoiler and screened.withheld == 0
    assert screened.hidden == {"image-1.png"}


def test_a_surface_that_cannot_hide_withholds_flagged_images_instead() -> None:
    """Slack has no spoilers: "spoiler" must never mean "in the clear" there."""
    screened = screen(_artifacts(["image-1.png", "denoise-1.gif"]), "spoiler", can_hide=False)
    assert [a.name for a in screened.artifacts] == ["image-0.png", "report.json"]
    assert screened.withheld == 2 and not screened.hidden


def test_clean_verdicts_change_nothing_but_are_hidden() -> None:
    screened = screen(_artifacts([]), "spoiler", can_hide=True)
    assert len(screened.artifacts) == 4 and not screened.spoiler
    assert all(a.kind is not ArtifactKind.MODERATION for a in screened.artifacts)
