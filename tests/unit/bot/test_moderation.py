"""The prompt blocklist refuses at admission; the classifier seam withholds or spoilers."""

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
from gouache.storage.jobs import Artifact, ArtifactKind
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


class _FlagOdd:
    async def flagged(self, artifact: Artifact) -> bool:
        return artifact.name.endswith("1.png")


def _artifacts() -> list[Artifact]:
    return [
        Artifact("j", "image-0.png", ArtifactKind.IMAGE, "image/png", b"a"),
        Artifact("j", "image-1.png", ArtifactKind.IMAGE, "image/png", b"b"),
        Artifact("j", "report.json", ArtifactKind.REPORT, "application/json", b"{}"),
    ]


async def test_without_a_classifier_everything_passes() -> None:
    screened = await screen(_artifacts(), None, "withhold")
    assert len(screened.artifacts) == 3 and not screened.spoiler and screened.withheld == 0


async def test_flagged_images_are_withheld() -> None:
    screened = await screen(_artifacts(), _FlagOdd(), "withhold")
    assert [a.name for a in screened.artifacts] == ["image-0.png", "report.json"]
    assert screened.withheld == 1 and not screened.spoiler


async def test_flagged_images_are_sent_as_spoilers() -> None:
    screened = await screen(_artifacts(), _FlagOdd(), "spoiler")
    assert len(screened.artifacts) == 3 and screened.spoiler and screened.withheld == 0


async def test_every_refusal_is_reported_once() -> None:
    refused: list[str] = []
    admission = ModeratedAdmission(
        _filter(blocked_words=["gore"]), _Recorder(), on_refused=lambda e: refused.append(e.message)
    )
    with pytest.raises(NotAllowed):
        await admission.admit(make_request(prompt="gore"))
    await admission.admit(make_request(prompt="a meadow"))
    assert refused == [BLOCKED_MESSAGE]
