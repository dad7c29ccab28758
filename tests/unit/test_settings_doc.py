"""docs/settings.md is generated from gouache/config.py and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from gouache.config import Settings
from tools import settings_doc


def test_the_committed_reference_is_what_the_code_generates() -> None:
    assert settings_doc.DOC.read_text() == settings_doc.render(), (
        "docs/settings.md is out of date: run python -m tools.settings_doc"
    )


def test_every_setting_has_a_description_and_a_row() -> None:
    text = settings_doc.render()
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no Field(description=...)"
        nested = info.annotation
        if isinstance(nested, type) and hasattr(nested, "model_fields"):
            for sub, sub_info in nested.model_fields.items():
                assert sub_info.description, f"{name}.{sub} has no Field(description=...)"
                assert f"`{name}.{sub}`" in text
                assert f"`GOUACHE_{name.upper()}__{sub.upper()}`" in text


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "settings.md"
    stale.write_text(settings_doc.render().replace("max_steps", "most_steps"))
    assert settings_doc.main(["--check", "--out", str(stale)]) == 1
    stale.write_text(settings_doc.render())
    assert settings_doc.main(["--check", "--out", str(stale)]) == 0


def test_every_model_setting_has_a_description() -> None:
    from gouache.config import ModelSpec

    text = settings_doc.render()
    for name, info in ModelSpec.model_fields.items():
        assert info.description, f"models.<name>.{name} has no Field(description=...)"
        assert f"`GOUACHE_MODELS__<NAME>__{name.upper()}`" in text
