"""The import arrows of the design, read from the real import graph (AST, every import in a
module, including those inside functions and ``TYPE_CHECKING`` blocks).

adapters -> bot -> storage <- worker -> generation; storage and generation import no chat
code; only ``bot/adapters/`` imports a chat SDK; ``import gouache`` loads neither torch nor
a chat SDK; no import cycles in ``gouache/`` or ``tools/``. ``test_the_rules_catch_a_bad_import``
and ``test_a_cycle_in_tools_is_found`` prove the checks can fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gouache"
TOOLS = ROOT / "tools"  # the offline demo training and evaluation: cycles count there too
CHAT_SDKS = ("discord", "slack_bolt", "slack_sdk")

# (the modules a rule covers, the imports they must not make, why)
RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("gouache.storage", ("gouache.bot", "gouache.generation", "gouache.worker", *CHAT_SDKS),
     "the queue knows no chat and no engine"),
    ("gouache.generation", ("gouache.storage", "gouache.bot", "gouache.worker", "tools", *CHAT_SDKS),
     "generation is pure compute"),
    ("gouache.worker", ("gouache.bot", *CHAT_SDKS), "the worker imports no chat code"),
    ("gouache.request", ("gouache.bot", "gouache.storage", "gouache.generation", "gouache.worker",
                         *CHAT_SDKS), "the request is the bottom of the stack"),
    ("gouache.bot", ("gouache.worker", "gouache.generation.loop.engine", "gouache.generation.models"),
     "the bot process never runs the engine"),
    ("gouache", ("tools",), "the runtime never imports the offline demo training"),
)  # fmt: skip


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every module a source file imports, relative imports resolved against ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                name = ".".join(prefix + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def graph(*packages: Path, root: Path = ROOT) -> dict[str, set[str]]:
    """The import graph of ``packages`` (default: gouache/ and tools/), keyed by module name."""
    return {
        module_name(path, root): set(
            imports_of(path.read_text(), module_name(path, root), path.name == "__init__.py")
        )
        for package in packages or (PACKAGE, TOOLS)
        for path in package.rglob("*.py")
    }


def _covers(prefix: str, module: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(edges.items()):
        for scope, banned, why in RULES:
            if not _covers(scope, module):
                continue
            for name in sorted(imported):
                if any(_covers(b, name) for b in banned):
                    found.append(f"{module} imports {name}: {why}")
        sdk = {n for n in imported if n.split(".")[0] in CHAT_SDKS}
        if sdk and not _covers("gouache.bot.adapters", module):
            found.append(f"{module} imports {sorted(sdk)}: only gouache.bot.adapters may")
    return found


def test_the_import_graph_follows_the_arrows() -> None:
    edges = graph()
    assert "gouache.bot.adapters.discord.client" in edges  # the walk sees the whole tree
    assert violations(edges) == []


def test_the_rules_catch_a_bad_import(tmp_path: Path) -> None:
    """A copy of the tree with deliberate bad imports, one per rule kind, inside functions."""
    bad = {
        "gouache/storage/leak.py": "def f():\n    from gouache.bot import commands\n",
        "gouache/generation/leak.py": "from ..storage import jobs\n",
        "gouache/worker/leak.py": "def f():\n    import discord\n",
        "gouache/bot/leak.py": "import slack_sdk\n",
    }
    for name, text in bad.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    found = violations(graph(tmp_path / "gouache", root=tmp_path))
    assert any(v.startswith("gouache.storage.leak imports gouache.bot") for v in found)
    assert any(v.startswith("gouache.generation.leak imports gouache.storage") for v in found)
    assert any(v.startswith("gouache.worker.leak imports discord") for v in found)
    assert any(v.startswith("gouache.bot.leak imports ['slack_sdk']") for v in found)


@pytest.mark.parametrize(
    "module",
    ["gouache", "gouache.request", "gouache.bot.commands", "gouache.bot.delivery",
     "gouache.storage", "gouache.worker", "gouache.generation.loop.samplers"],
)  # fmt: skip
def test_importing_the_core_loads_no_torch_and_no_chat_sdk(module: str) -> None:
    code = (
        f"import sys, {module};"
        "bad = [m for m in ('torch', 'discord', 'slack_bolt', 'slack_sdk', 'diffusers')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# Cycles the tree still has (each a lazy or TYPE_CHECKING import between close modules); a new
# one fails the test below. Remove an entry when its cycle is broken.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()  # none left: keep it so


def import_cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected groups of two or more modules (Tarjan), over imports of modules."""
    inner = {a: {b for b in bs if b in edges and b != a} for a, bs in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in inner[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for v in sorted(inner):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_cycles() -> None:
    edges = graph()
    assert {"tools.demo.train", "tools.demo.controlnet_training"} <= set(edges)  # tools/ is seen
    cycles = set(import_cycles(edges))
    assert cycles - KNOWN_CYCLES == set(), sorted(map(sorted, cycles - KNOWN_CYCLES))
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_a_cycle_in_tools_is_found(tmp_path: Path) -> None:
    """Two trainers importing each other, one of them lazily (as train.py and
    controlnet_training.py did before the shared objective moved to objective.py)."""
    demo = tmp_path / "tools" / "demo"
    demo.mkdir(parents=True)
    (tmp_path / "tools" / "__init__.py").write_text("")
    (demo / "__init__.py").write_text("")
    (demo / "train.py").write_text("def main():\n    from .controlnet import train\n")
    (demo / "controlnet.py").write_text("from .train import encode\n")
    cycles = import_cycles(graph(tmp_path / "tools", root=tmp_path))
    assert cycles == [frozenset({"tools.demo.train", "tools.demo.controlnet"})]
