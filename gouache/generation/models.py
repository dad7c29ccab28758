"""ModelRegistry: load each configured model once and hand out its components.

The loop runs its own denoising, so it needs the parts rather than a pipeline object: tokenizers,
text encoders, the denoiser (a UNet or a transformer), VAE, the scheduler config, and the optional
depth ControlNet and preview decoder. Which parts a model has, and what they mean, is its
family's (``families/``), read from the folder's ``model_index.json``. Everything goes through
``from_pretrained`` (``local_files_only`` when offline),
including ``builtin:tiny``, which is built once into the cache and loaded back like any model.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gouache import messages
from gouache.config import BUILTIN_DEMO, BUILTIN_TINY, ModelSpec
from gouache.errors import NotFound
from gouache.generation.families import family_for
from gouache.generation.families.base import LoadedModel
from gouache.generation.loop.speed import EAGER, SpeedOptions, apply_speed_options
from gouache.generation.loras.bank import LoraBank

__all__ = ["LoadedModel", "ModelRegistry", "demo_root"]

_LIBRARIES = frozenset({"diffusers", "transformers"})  # never import a module named in a file
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def demo_root() -> Path:
    """Where the shipped demo model lives (pipeline/, controlnet-depth/, clip/)."""
    return Path(__file__).resolve().parent.parent / "models" / "demo"


class ModelRegistry:
    """Loads each named model once, on first use, and keeps it for the life of the worker."""

    def __init__(
        self,
        specs: dict[str, ModelSpec],
        *,
        cache_dir: Path,
        device: str = "auto",
        offline: bool = True,
        speed: SpeedOptions = EAGER,
        loras: Callable[[str], Path | None] | None = None,
        lora_budget_bytes: int = 1 << 30,
    ) -> None:
        self._specs = dict(specs)
        self._lora_paths = loras or (lambda name: None)  # a LoRA's file by name
        self._lora_budget = lora_budget_bytes
        self.speed = speed
        self._cache_dir = Path(cache_dir)
        self.device = _pick_device(device)
        self._offline = offline
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, name: str) -> ModelSpec:
        """The spec of a configured model; an unknown name is the user's error."""
        try:
            return self._specs[name]
        except KeyError:
            raise NotFound(messages.unknown_model(name, self._specs)) from None

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it on first use (once, even with concurrent callers)."""
        spec = self.spec(name)
        with self._lock:
            if name not in self._loaded:
                model = self._load(name, spec)
                apply_speed_options(model, self.speed)
                model.loras = LoraBank(model, self._lora_paths, self._lora_budget)
                self._loaded[name] = model
            return self._loaded[name]

    # -- loading -----------------------------------------------------------------------------

    def _load(self, name: str, spec: ModelSpec) -> LoadedModel:
        path = self._pipeline_path(spec)
        index = self._model_index(path, spec)
        family = family_for(name, index, spec.family)
        dtype = _pick_dtype(spec.dtype, self.device)
        parts = {
            part: self._component(path, spec, index, part, dtype)
            for part in (*family.text_parts, family.denoiser_part, "vae")
        }
        scheduler_cls = _import_class(index["scheduler"])
        scheduler_config = dict(
            scheduler_cls.load_config(path, subfolder="scheduler", **self._hub_kwargs(spec))
        )
        controlnet = preview = None
        if spec.depth_controlnet:
            from diffusers import ControlNetModel

            controlnet = ControlNetModel.from_pretrained(
                self._helper_path(spec.depth_controlnet, "controlnet-depth"),
                dtype=dtype,
                **self._hub_kwargs(spec),
            )
        if spec.preview_decoder:
            from diffusers import AutoencoderTiny

            preview = AutoencoderTiny.from_pretrained(
                self._helper_path(spec.preview_decoder, "preview-decoder"),
                dtype=dtype,
                **self._hub_kwargs(spec),
            )
        modules = [
            m for m in (*parts.values(), controlnet, preview) if isinstance(m, torch.nn.Module)
        ]
        for module in modules:
            module.to(self.device).eval().requires_grad_(False)
        return LoadedModel(
            name=name,
            spec=spec,
            family=family,
            device=self.device,
            dtype=dtype,
            tokenizers=tuple(
                p for k in family.text_parts if k.startswith("tokenizer") and (p := parts[k]) is not None
            ),
            text_encoders=tuple(
                p for k in family.text_parts if k.startswith("text_encoder") and (p := parts[k]) is not None
            ),
            denoiser=parts[family.denoiser_part],
            vae=parts["vae"],
            scheduler_config=scheduler_config,
            force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", False)),
            controlnet=controlnet,
            preview_decoder=preview,
            clip_path=self._helper_path(spec.clip_model, "clip") if spec.clip_model else None,
            image_encoder_path=self._helper_path(spec.image_encoder, "clip")
            if spec.image_encoder
            else None,
            style_encoder_path=self._helper_path(spec.style_encoder, "clip")
            if spec.style_encoder
            else None,
            label=spec.label,
        )

    def _component(
        self,
        path: str,
        spec: ModelSpec,
        index: dict[str, Any],
        part: str,
        dtype: torch.dtype | None,
    ) -> Any:
        entry = index.get(part)
        if not entry or entry[0] is None:
            return None
        cls = _import_class(entry)
        kwargs: dict[str, Any] = {"subfolder": part, **self._hub_kwargs(spec)}
        if not part.startswith(("tokenizer", "scheduler")):
            kwargs["dtype"] = dtype
            if entry[0] == "transformers" and self.device.type == "cuda":
                kwargs["attn_implementation"] = "sdpa"
        return cls.from_pretrained(path, **kwargs)

    def _model_index(self, path: str, spec: ModelSpec) -> dict[str, Any]:
        from diffusers import DiffusionPipeline

        return dict(DiffusionPipeline.load_config(path, **self._hub_kwargs(spec)))

    def _hub_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"local_files_only": self._offline}
        if spec.revision:
            kwargs["revision"] = spec.revision
        return kwargs

    def _pipeline_path(self, spec: ModelSpec) -> str:
        return self._helper_path(spec.path, "pipeline")

    def _helper_path(self, value: str, subfolder: str) -> str:
        """Resolve ``builtin:*`` names to their folders; anything else is a path or hub id."""
        if value == BUILTIN_TINY:
            from gouache.generation.tiny import ensure_tiny

            return str(ensure_tiny(self._cache_dir / "builtin-tiny") / subfolder)
        if value == BUILTIN_DEMO:
            root = demo_root()
            if not (root / subfolder).is_dir():
                raise NotFound(messages.demo_not_installed(root / subfolder))
            return str(root / subfolder)
        return value


def _import_class(entry: list[Any] | tuple[Any, ...]) -> Any:
    library, name = entry
    if library not in _LIBRARIES:
        raise ValueError(f"unsupported component library {library!r} in model_index.json")
    return getattr(importlib.import_module(library), name)


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return _DTYPES[dtype]
    return torch.float16 if device.type == "cuda" else torch.float32
