from __future__ import annotations

from pathlib import Path

import pytest

from gouache.config import BUILTIN_DEMO, BUILTIN_TINY, Settings


def test_env_nested_and_file_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "discord-token"
    secret.write_text("abc.def.ghi\n")
    monkeypatch.setenv("GOUACHE_PORT", "9090")
    monkeypatch.setenv("GOUACHE_LIMITS__MAX_STEPS", "25")
    monkeypatch.setenv("GOUACHE_DISCORD__TOKEN_FILE", str(secret))
    s = Settings()
    assert s.port == 9090
    assert s.limits.max_steps == 25
    assert s.discord.token is not None and s.discord.token.get_secret_value() == "abc.def.ghi"
    assert "abc.def" not in repr(s)


def test_toml_file_with_models_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "gouache.toml"
    cfg.write_text(
        'default_model = "sd15"\n'
        "port = 7000\n"
        "[models]\n"
        'xl = "/models/sdxl"  # shorthand for {path = ...}\n'
        "[models.sd15]\n"
        'path = "/models/sd15"\n'
        "default_steps = 25\n"
    )
    monkeypatch.setenv("GOUACHE_PORT", "7001")
    s = Settings.load(cfg)
    assert s.default_model == "sd15"
    assert s.models["sd15"].path == "/models/sd15" and s.models["sd15"].default_steps == 25
    assert s.models["xl"].path == "/models/sdxl"
    assert s.port == 7001  # the environment beats the file
    assert {BUILTIN_TINY, BUILTIN_DEMO} <= set(s.models)


def test_unknown_default_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="default_model 'nope' is not one of"):
        Settings(default_model="nope")


def test_missing_config_file() -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Settings.load("/nonexistent/gouache.toml")


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path.as_posix()}/gouache.db"
