"""The Slack adapter's pure parts: the update budget, the modal's fields, settings and modes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gouache.bot.adapters.slack import modal
from gouache.bot.adapters.slack.budget import UpdateBudget
from gouache.config import Settings, SlackSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_is_per_workspace_and_refills_as_the_minute_slides() -> None:
    clock = Clock()
    budget = UpdateBudget(3, clock)
    assert [budget.try_spend("T1") for _ in range(4)] == [True, True, True, False]
    assert budget.try_spend("T2")  # another workspace has its own minute
    clock.now += 30
    assert not budget.try_spend("T1")
    clock.now += 30.5  # the first three are now over a minute old
    assert budget.left("T1") == 3


def test_final_edits_are_counted_even_over_budget() -> None:
    clock = Clock()
    budget = UpdateBudget(2, clock)
    budget.spend("T1")
    budget.spend("T1")
    budget.spend("T1")
    assert budget.left("T1") == 0 and not budget.try_spend("T1")


@pytest.mark.parametrize(("text", "split"), [
    ("a hill --steps 5 --seed 2", ("a hill", "--steps 5 --seed 2")),
    ("a hill", ("a hill", "")),
    ("--steps 5", ("", "--steps 5")),
    ("", ("", "")),
])  # fmt: skip
def test_modal_splits_prompt_from_options(text: str, split: tuple[str, str]) -> None:
    assert modal.split_options(text) == split


def test_submission_prefers_the_uploaded_file_and_reads_its_metadata() -> None:
    shortcut_file = {"id": "F1", "url_private": "https://files.slack.com/a"}
    view = modal.depth_view("a hill --steps 5", channel="C1", response_url="https://r",
                            file=shortcut_file)  # fmt: skip
    assert json.loads(view["private_metadata"])["file"]["id"] == "F1"
    [file_block] = [b for b in view["blocks"] if b.get("block_id") == "file"]
    assert file_block["optional"] is True  # the shortcut already chose one
    uploaded = {"id": "F2", "url_private": "https://files.slack.com/b"}
    state = {"values": {"prompt": {"prompt": {"value": "a lake"}},
                        "options": {"options": {"value": None}},
                        "file": {"file": {"files": [uploaded]}}}}  # fmt: skip
    sub = modal.read_submission({**view, "state": state})
    assert (sub.text, sub.channel, sub.response_url) == ("a lake", "C1", "https://r")
    assert sub.files == [uploaded]
    state["values"]["file"]["file"]["files"] = []
    assert modal.read_submission({**view, "state": state}).files == [shortcut_file]


def test_image_file_skips_non_images() -> None:
    message = {"files": [{"id": "F1", "mimetype": "text/plain"},
                         {"id": "F2", "mimetype": "image/png", "url_private": "u", "extra": 1}]}  # fmt: skip
    assert modal.image_file(message) == {"id": "F2", "mimetype": "image/png", "url_private": "u"}
    assert modal.image_file({"files": [{"mimetype": "application/pdf"}]}) is None


def test_slack_mode_follows_the_tokens() -> None:
    assert SlackSettings().mode is None
    assert SlackSettings(bot_token="xoxb-1").mode is None
    assert SlackSettings(bot_token="xoxb-1", signing_secret="s").mode == "http"
    assert SlackSettings(bot_token="xoxb-1", signing_secret="s", app_token="xapp-1-x").mode == "socket"
    with pytest.raises(ValidationError, match="xapp-"):
        SlackSettings(app_token="xoxb-not-an-app-token")
    settings = Settings(slack=SlackSettings(bot_token="xoxb-1", app_token="xapp-1-secret"))
    assert "xapp-1-secret" in settings.secret_values()


def test_service_configures_and_describes_slack_by_mode() -> None:
    from gouache.service import _CHAT_PLATFORMS

    [slack] = [p for p in _CHAT_PLATFORMS if p.name == "Slack"]
    socket = Settings(slack=SlackSettings(bot_token="xoxb-1", app_token="xapp-1-x"))
    http = Settings(slack=SlackSettings(bot_token="xoxb-1", signing_secret="s"))
    assert slack.configured(socket) and slack.configured(http)
    assert not slack.configured(Settings(slack=SlackSettings(bot_token="xoxb-1")))
    assert "Socket Mode" in slack.describe(socket) and "no public URL" in slack.describe(socket)
    assert "HTTP mode" in slack.describe(http) and "/slack/events" in slack.describe(http)
