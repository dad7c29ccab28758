"""deploy/slack-manifest.yaml is what a user pastes into Slack: it must match the code.

The commands it declares are the ones the adapter registers (and each is answered when sent
through the real bolt app), its shortcut's callback id is the one the adapter listens for,
Socket Mode is on, and the scopes cover every Web API method the adapter calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gouache.bot.adapters.slack import modal
from gouache.bot.adapters.slack.app import COMMANDS
from gouache.request import KINDS, LISTINGS
from gouache.storage import open_storage
from tests.fakes.slack_app import slack_app

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "slack-manifest.yaml"


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text("utf-8"))


def test_manifest_commands_are_the_registered_commands() -> None:
    declared = [c["command"] for c in manifest()["features"]["slash_commands"]]
    assert declared == list(COMMANDS) == [*(f"/{kind.value}" for kind in KINDS),
                                          *(f"/{listing.value}" for listing in LISTINGS)]


def test_manifest_shortcut_socket_mode_and_scopes() -> None:
    data = manifest()
    shortcuts = data["features"]["shortcuts"]
    assert {s["type"] for s in shortcuts} == {"message"}
    assert [s["callback_id"] for s in shortcuts] == list(modal.SHORTCUTS)
    assert data["settings"]["socket_mode_enabled"] is True
    assert data["settings"]["interactivity"]["is_enabled"] is True
    events = data["settings"]["event_subscriptions"]["bot_events"]
    assert events == ["app_mention", "message.channels", "message.groups", "message.im"]
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "files:read", "files:write", "app_mentions:read",
            "im:write", "channels:history", "groups:history", "im:history"} <= scopes  # fmt: skip


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_every_manifest_command_is_answered_by_the_real_app(tmp_path: Path, mode: str) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, mode=mode
    ) as app:  # fmt: skip
        for entry in manifest()["features"]["slash_commands"]:
            sent = await app.slack.command(entry["command"], "a cube")
            assert sent["status"] == 200, entry
        await app.replies(2)  # /imagine and /diversity queue; the commands a file needs open
        # the file modal (/depth, /upscale, /edit); /interpolate without its "|" is refused
        needs_file = [k for k, spec in KINDS.items() if spec.needs_file]
        assert len(needs_file) == 3 and len(app.fake.find("views.open")) == len(needs_file)
        assert {j.request.kind.value for j in await app.jobs()} == {"imagine", "diversity"}
