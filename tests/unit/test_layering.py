"""The import arrows of the design, checked: cheap core, SDKs only in adapters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gouache"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_import_gouache_pulls_in_no_torch_and_no_chat_sdk() -> None:
    code = (
        "import sys, gouache, gouache.bot.commands, gouache.storage, gouache.generation.samplers;"
        "bad = [m for m in ('torch', 'discord', 'slack_bolt', 'diffusers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_adapters_import_chat_sdks() -> None:
    for path in PACKAGE.rglob("*.py"):
        sdk = {m for m in _imports(path) if m.split(".")[0] in {"discord", "slack_bolt", "slack_sdk"}}
        if sdk:
            assert path.name.endswith("_adapter.py") or "fakes" in path.parts, (path, sdk)


def test_generation_imports_neither_storage_nor_bot() -> None:
    for path in (PACKAGE / "generation").rglob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("gouache.storage", "gouache.bot"))}
        assert not bad, (path, bad)
