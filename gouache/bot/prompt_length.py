"""The bot's check that a prompt fits the text encoder, with no model loaded.

The text encoder reads at most ``model_max_length`` tokens (77 on Stable Diffusion, 32 on the
demo model) and silently drops the rest, so a long prompt is refused before it is queued,
showing the user what would be lost. Only the tokenizer folders are read (``tokenizer`` and,
for SDXL, ``tokenizer_2``), found through ``model_index.json`` as plain JSON, and loaded with
the tokenizer class that file names: transformers' tokenizers run on the Rust ``tokenizers``
library and import no torch, so the scale-out front end (``gouache run --no-worker``) never
loads torch or diffusers (tests/unit/test_layering.py proves it).

The part that would be lost is cut from the user's own text at the character offset of the
first dropped token, never decoded from token ids: a vocabulary that lacks a script's bytes
decodes them as ``<|endoftext|>``.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gouache import messages
from gouache.config import BUILTIN_DEMO, BUILTIN_TINY, ModelSpec, Settings
from gouache.errors import NotFound, UserError

__all__ = ["Overflow", "PromptCheck", "TokenLimit", "demo_pipeline", "prompt_length_checker"]

log = logging.getLogger(__name__)

_TOKENIZER_PARTS = ("tokenizer", "tokenizer_2")
_TINY_FOLDER = Path("models") / "builtin-tiny" / "pipeline"  # under data_dir, built by the worker


@dataclass(frozen=True)
class Overflow:
    """A prompt longer than the text encoder reads: its limit and the text it would drop."""

    limit: int  # tokens the encoder reads, start and end markers included
    cut: str  # the end of the user's text that would be ignored, as they typed it


PromptCheck = Callable[[str, str], "Overflow | None"]  # (model name, text) -> overflow or None


class TokenLimit:
    """One tokenizer and its limit: the part of a text beyond what the encoder keeps."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.limit = int(tokenizer.model_max_length)

    def overflow(self, text: str) -> Overflow | None:
        encoded = self._tokenizer(
            text, truncation=False, return_offsets_mapping=True, verbose=False
        )
        ids: Sequence[int] = encoded["input_ids"]
        if len(ids) <= self.limit:
            return None
        # The encoder keeps the start marker and limit - 2 tokens, then its end marker: the
        # first token lost is at index limit - 1 (the one diffusers reports as truncated).
        start = encoded["offset_mapping"][self.limit - 1][0]
        cut = text[start:].strip()
        # Cut inside a word (or a script written without spaces): say the text goes on before.
        return Overflow(self.limit, cut if start == 0 or text[start - 1].isspace() else "…" + cut)


def demo_pipeline() -> Path:
    """The shipped demo model's diffusers folder (``builtin:demo``)."""
    return Path(__file__).resolve().parents[1] / "models" / "demo" / "pipeline"


def prompt_length_checker(settings: Settings) -> PromptCheck:
    """``(model, text) -> Overflow | None`` for the configured models, tokenizers loaded on
    first use and kept.

    A tokenizer that cannot be loaded is the worker's problem to report, not a reason to refuse
    every prompt: that is logged once and the model's prompts go unchecked. ``builtin:tiny`` is
    checked once the worker has built it (``<data_dir>/models/builtin-tiny``).
    """
    limits: dict[str, tuple[TokenLimit, ...]] = {}
    broken: set[str] = set()
    lock = threading.Lock()

    def check(model: str, text: str) -> Overflow | None:
        if model in broken or model not in settings.models:
            return None
        with lock:
            if model not in limits:
                try:
                    loaded = _load(settings, settings.models[model])
                except UserError:
                    raise
                except Exception:
                    broken.add(model)
                    log.warning("cannot load the tokenizer of %s; prompt lengths go unchecked",
                                model, exc_info=True)  # fmt: skip
                    return None
                if loaded is None:
                    return None  # builtin:tiny, not built yet
                limits[model] = loaded
        found = [o for t in limits[model] if (o := t.overflow(text)) is not None]
        return max(found, key=lambda o: len(o.cut), default=None)

    return check


def _load(settings: Settings, spec: ModelSpec) -> tuple[TokenLimit, ...] | None:
    """The model's tokenizers; None for ``builtin:tiny`` before the worker has built it."""
    if spec.path == BUILTIN_TINY:
        folder = settings.data_dir / _TINY_FOLDER
        if not (folder / "model_index.json").is_file():
            return None
        return _tokenizers(str(folder), spec, offline=True)
    if spec.path == BUILTIN_DEMO:
        folder = demo_pipeline()
        if not folder.is_dir():
            raise NotFound(messages.demo_not_installed(folder))
        return _tokenizers(str(folder), spec, offline=True)
    return _tokenizers(spec.path, spec, offline=settings.offline)


def _tokenizers(path: str, spec: ModelSpec, *, offline: bool) -> tuple[TokenLimit, ...]:
    index = _model_index(path, spec, offline=offline)
    found = []
    for part in _TOKENIZER_PARTS:
        entry = index.get(part)
        if not entry or entry[0] is None:
            continue
        library, name = entry
        if library != "transformers":  # never import a module a downloaded file names
            raise ValueError(f"unsupported tokenizer library {library!r} in model_index.json")
        cls = getattr(importlib.import_module("transformers"), name)
        hub: dict[str, Any] = {"local_files_only": offline, "revision": spec.revision}
        found.append(TokenLimit(cls.from_pretrained(path, subfolder=part, **hub)))
    return tuple(found)


def _model_index(path: str, spec: ModelSpec, *, offline: bool) -> dict[str, Any]:
    """``model_index.json`` of a folder or a hub id (from the Hugging Face cache when offline)."""
    local = Path(path)
    if local.is_dir():
        file = local / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download

        file = Path(hf_hub_download(path, "model_index.json", revision=spec.revision,
                                    local_files_only=offline))  # fmt: skip
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{file} is not a JSON object")
    return data
