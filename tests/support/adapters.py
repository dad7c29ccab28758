"""Adapter dependencies for tests that build an adapter by hand, every field explicit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gouache.bot.adapter import AdapterDeps
from gouache.bot.admission import Admission
from gouache.bot.prompt_length import Overflow, PromptCheck
from gouache.config import Settings
from gouache.storage import Storage


def no_links(job_id: str, name: str) -> str | None:
    return None


def fits(model: str, text: str) -> Overflow | None:
    return None


def adapter_deps(
    settings: Settings,
    storage: Storage,
    admission: Any = None,
    *,
    on_admitted: Callable[[], None] = lambda: None,
    artifact_url: Callable[[str, str], str | None] = no_links,
    prompt_overflow: PromptCheck = fits,
) -> AdapterDeps:
    """``AdapterDeps`` with a real ``Admission`` unless one is given."""
    return AdapterDeps(
        settings, storage, admission if admission is not None else Admission(storage, settings),
        on_admitted=on_admitted, artifact_url=artifact_url, prompt_overflow=prompt_overflow,
    )  # fmt: skip
