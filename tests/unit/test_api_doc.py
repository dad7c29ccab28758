"""docs/api.md against the code: routes, commands, flags, artifact kinds and actions."""

from __future__ import annotations

import re
from pathlib import Path

from gouache.bot.adapter import Action
from gouache.bot.adapters.web import WebAdapter
from gouache.bot.commands import _SHOWN_FLAGS
from gouache.config import Settings
from gouache.request import Kind
from gouache.storage.jobs import ArtifactKind
from gouache.web.app import AppDeps, make_app

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
_NOT_SHOWN = {ArtifactKind.INPUT, ArtifactKind.MODERATION}  # never served to users


def _routes() -> set[tuple[str, str]]:
    adapter = object.__new__(WebAdapter)  # routes() needs only the bound handlers
    app = make_app(AppDeps(Settings(), adapter, health=None, metrics=None))  # type: ignore[arg-type]
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        found.add((route.method, route.resource.canonical))
    return found


def test_every_route_is_documented() -> None:
    routes = _routes()
    assert ("POST", "/api/jobs") in routes and ("GET", "/healthz") in routes
    for method, path in routes:
        pattern = rf"`{method} {re.escape(path)}(?:`|\?|/)"
        assert re.search(pattern, DOC), f"{method} {path} is not in docs/api.md"


def test_every_documented_endpoint_exists() -> None:
    routes = _routes()
    documented = re.findall(r"^### `(GET|POST|PUT|DELETE) (/[^`?]*?)(?:/\.\.\.)?[`?]", DOC, re.M)
    assert len(documented) >= 10
    for method, path in documented:
        assert (method, path) in routes, f"docs/api.md documents {method} {path}, which the server lacks"


def test_commands_flags_artifact_kinds_and_actions_are_documented() -> None:
    for kind in Kind:
        assert f"`/{kind.value}" in DOC, f"/{kind.value}"
    for flag in _SHOWN_FLAGS:
        assert f"`{flag}" in DOC, flag
    for artifact in ArtifactKind:
        if artifact not in _NOT_SHOWN:
            assert f"| `{artifact.value}` |" in DOC, artifact.value
    for action in Action:
        assert f"`{action.value}`" in DOC, action.value
