"""Fixtures shared by every test layer: settings built directly, never read from the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_host_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own GOUACHE_* variables must not change what a test sees."""
    for key in list(os.environ):
        if key.startswith("GOUACHE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def settings(tmp_path: Path):
    from gouache.config import Settings

    return Settings(data_dir=tmp_path / "data")
