"""No function in ``gouache/generation/`` is longer than 80 lines.

The engine once held a 192-line denoising function that had drifted from its twin; a bound
keeps each step of the loop, the families and the readers small enough to read and test alone.
Nested functions count on their own as well as inside their parent.
"""

from __future__ import annotations

import ast
from pathlib import Path

GENERATION = Path(__file__).resolve().parents[2] / "gouache" / "generation"
LIMIT = 80


def long_functions(folder: Path, limit: int = LIMIT) -> list[str]:
    """``module:function (lines)`` for every (async) function over ``limit`` lines."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(folder).as_posix()}:{node.name} ({length})")
    return found


def test_no_function_in_generation_is_over_80_lines():
    assert long_functions(GENERATION) == []


def test_a_long_function_is_reported(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT - 1))  # with the def: LIMIT lines
    (tmp_path / "fits.py").write_text(f"def fits():\n{body}")
    inner = "".join(f"            y{i} = {i}\n" for i in range(LIMIT))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.py").write_text(f"class C:\n    async def outer(self):\n"
                                                f"        def inner():\n{inner}")  # fmt: skip
    assert long_functions(tmp_path) == ["sub/nested.py:outer (82)", "sub/nested.py:inner (81)"]
