"""Every string a user reads comes from ``gouache/messages.py``.

A ``UserError`` (``gouache/errors.py``: InvalidRequest, NotFound, TooLarge, ...) carries the
text shown to the person who sent the command, so building one from a string literal or an
f-string anywhere else scatters the wording the project promises to keep in one place.
``bot/adapters/slack/replies.py`` is exempt: it is the deliberate per-platform strings module.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gouache"
EXEMPT = {"messages.py", "bot/adapters/slack/replies.py"}
# Raises in modules other engineers were rewriting when this test landed; each entry must still
# hold an offender (the test says so when one is fixed), so the list can only shrink.
PENDING: set[str] = set()


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def user_error_names(package: Path) -> set[str]:
    """``UserError`` and every class under ``package`` that derives from it, by name."""
    classes: list[ast.ClassDef] = []
    for path in package.rglob("*.py"):
        classes += [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
    names = {"UserError"}
    while True:
        grown = names | {c.name for c in classes if any(_called_name(b) in names for b in c.bases)}
        if grown == names:
            return names
        names = grown


def _is_literal_text(node: ast.expr) -> bool:
    """A string literal, an f-string, or text glued or formatted from one."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp):  # "a" + b, "%s" % b
        return _is_literal_text(node.left) or _is_literal_text(node.right)
    if isinstance(node, ast.IfExp):
        return _is_literal_text(node.body) or _is_literal_text(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):  # "...".format(...)
        return node.func.attr in {"format", "join"} and _is_literal_text(node.func.value)
    return False


def offenders(package: Path) -> dict[str, list[int]]:
    """Module (relative to ``package``) -> lines where a UserError is built from literal text."""
    errors = user_error_names(package)
    found: dict[str, list[int]] = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name in EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or _called_name(node.func) not in errors:
                continue
            arguments = [*node.args, *(k.value for k in node.keywords)]
            if any(_is_literal_text(a) for a in arguments):
                found.setdefault(name, []).append(node.lineno)
    return found


def test_user_errors_take_their_text_from_messages():
    found = offenders(PACKAGE)
    new = {name: lines for name, lines in found.items() if name not in PENDING}
    assert not new, (
        "user-facing text built outside gouache/messages.py (add a function there and call "
        f"it): {new}"
    )
    fixed = sorted(PENDING - set(found))
    assert not fixed, f"{fixed} no longer raise literal text: remove them from PENDING"


def _all_but_python(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".py") and not (Path(folder) / n).is_dir()]


def test_a_planted_literal_raise_is_found(tmp_path):
    """The check fails on the forms it exists to catch, in a copy of the real package."""
    copy = tmp_path / "gouache"
    shutil.copytree(PACKAGE, copy, ignore=_all_but_python)
    baseline = offenders(copy)
    images = copy / "generation" / "inputs" / "images.py"
    text = images.read_text()
    call = "raise InvalidRequest(messages.image_no_pixels())"
    assert call in text
    images.write_text(text.replace(call, 'raise InvalidRequest("The image has no pixels.")'))
    (copy / "worker" / "planted.py").write_text(
        "from gouache import messages\n"
        "from gouache.errors import BadUpload, TooLarge\n"
        "class Refused(BadUpload):\n"
        "    pass\n"
        "def check(size: int, limit: int) -> None:\n"
        "    if size > limit:\n"
        "        raise TooLarge(f'{size} is over {limit}')\n"  # line 7
        "    if size < 0:\n"
        "        raise Refused('negative: ' + str(size))\n"  # line 9: a subclass, glued text
        "    if size == 0:\n"
        "        raise Refused(messages.upload_empty())\n"  # allowed
    )
    found = offenders(copy)
    assert found["worker/planted.py"] == [7, 9]
    line = text[: text.index(call)].count("\n") + 1
    assert found["generation/inputs/images.py"] == [line]
    assert {k: v for k, v in found.items() if k not in {"worker/planted.py",
            "generation/inputs/images.py"}} == baseline  # fmt: skip


def test_exempt_strings_module_is_not_scanned(tmp_path):
    copy = tmp_path / "gouache"
    (copy / "bot" / "adapters" / "slack").mkdir(parents=True)
    (copy / "errors.py").write_text("class UserError(Exception):\n    pass\n")
    bad = "from gouache.errors import UserError\nraise UserError('text')\n"
    (copy / "bot" / "adapters" / "slack" / "replies.py").write_text(bad)
    (copy / "messages.py").write_text(bad)
    assert offenders(copy) == {}
    (copy / "bot" / "adapters" / "slack" / "blocks.py").write_text(bad)
    assert offenders(copy) == {"bot/adapters/slack/blocks.py": [2]}
