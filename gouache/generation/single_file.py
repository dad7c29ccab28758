"""Single-file checkpoints (``.safetensors`` / ``.ckpt``): which architecture, which configs.

diffusers' ``from_single_file`` reads the weights of one file in the original layout but needs
the pipeline's configs beside it: ``model_index.json``, each component's ``config.json`` (or
``scheduler_config.json``) and the tokenizers' files, in a diffusers-layout folder passed as
``config=``. Offline (``local_files_only=True``) it never fetches them, so gouache ships the
configs of SD 1.x, SD 2.x (768, v-prediction) and SDXL base under ``gouache/models/configs/``
and picks one from the file's keys (diffusers' ``infer_diffusers_model_type``). The one thing
not shipped is the CLIP tokenizers' vocabulary (``vocab.json`` + ``merges.txt``, ~1.5 MB of
byte-pair merges that cannot be regenerated): a user points ``config = "FOLDER"`` at the
small files of the base model (docs/deploy.md), which also covers any other architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gouache import messages
from gouache.errors import InvalidRequest

__all__ = ["CONFIGS", "builtin_config", "check_config_folder", "is_single_file", "model_type"]

SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
# diffusers' model type -> the shipped config folder
_BUILTIN = {"v1": "sd15", "v2": "sd2", "xl_base": "sdxl"}


def is_single_file(path: str) -> bool:
    """Whether ``path`` names one checkpoint file rather than a folder or a hub id."""
    return path.lower().endswith(SUFFIXES) and Path(path).expanduser().is_file()


def model_type(path: Path) -> str:
    """diffusers' name for the file's architecture (``v1``, ``v2``, ``xl_base``, ...).

    Read from the keys and shapes only: a safetensors header is parsed without loading the
    weights; a pickled ``.ckpt`` is memory-mapped.
    """
    import torch
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    return str(infer_diffusers_model_type(_shapes(path, torch)))


def _shapes(path: Path, torch: Any) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}  # noqa: SIM118
    state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    return dict(state.get("state_dict", state))


def builtin_config(model: str, path: Path) -> Path:
    """The shipped config folder for the file's architecture; a clear error for any other."""
    kind = model_type(path)
    if kind not in _BUILTIN:
        raise InvalidRequest(messages.single_file_unknown_architecture(model, kind))
    return CONFIGS / _BUILTIN[kind]


def check_config_folder(model: str, config: Path, index: dict[str, Any]) -> None:
    """Every tokenizer in ``config`` has its vocabulary (the shipped folders lack it)."""
    for part, entry in index.items():
        if not part.startswith("tokenizer") or not entry or entry[0] is None:
            continue
        folder = config / part
        if not any((folder / name).is_file() for name in ("vocab.json", "tokenizer.json")):
            raise InvalidRequest(messages.single_file_needs_tokenizer(model, str(folder)))
