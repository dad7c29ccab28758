"""The engine's shape, read from the source: the denoiser is called in one place per family
(its ``predict``, which the one loop asks), and family names are branched on only inside
``generation/families/``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "gouache"
FAMILIES = ROOT / "generation" / "families"
NAMES = {"sd", "sdxl", "flux", "flux-dev", "flux-schnell", "flux2-klein", "z-image", "sd3"}


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "models" not in p.relative_to(ROOT).parts[:1])


def _denoiser_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "denoiser_call"]  # fmt: skip


def _family_name_branches(path: Path) -> list[int]:
    """Comparisons of anything with a family name literal (``x == "sdxl"``, ``in ("sd",)``)."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
            if any(isinstance(v, ast.Constant) and v.value in NAMES for v in values):
                lines.append(node.lineno)
    return lines


def test_one_place_calls_the_denoiser() -> None:
    """Each family's ``predict`` is the one call of its denoiser; the loop asks it."""
    callers = {p: lines for p in _modules() if (lines := _denoiser_calls(p))}
    assert callers and all(p.is_relative_to(FAMILIES) for p in callers), callers
    assert all(len(lines) == 1 for lines in callers.values()), callers


def test_family_names_are_branched_on_only_in_the_family_modules() -> None:
    found = {str(p.relative_to(ROOT)): lines for p in _modules()
             if not p.is_relative_to(FAMILIES) and (lines := _family_name_branches(p))}  # fmt: skip
    # The tiny builders name the family they build; model_families.py is the bot's (torch-free)
    # table that picks a family, as families/__init__.py is the worker's.
    allowed = {"generation/tiny.py", "generation/tiny_transformers.py", "model_families.py"}
    assert set(found) <= allowed, found


def test_the_checks_see_a_planted_branch(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('def f(model):\n    if model.family.name == "sdxl":\n        return model.denoiser_call(1)\n')
    assert _family_name_branches(planted) == [2] and _denoiser_calls(planted) == [3]
