"""ModelRegistry: load each configured model once and hand out its components.

The loop runs its own denoising, so it needs the parts rather than a pipeline object: tokenizers,
text encoders, the denoiser (a UNet or a transformer), VAE, the scheduler config, and the optional
depth ControlNet and preview decoder. Which parts a model has, and what they mean, is its
family's (``families/``), read from the folder's ``model_index.json``. Folders and hub ids go
through ``from_pretrained`` (``local_files_only`` when offline), trying the configured
``variant`` (unset: full precision, then ``fp16``), including ``builtin:tiny``, which is built
once into the cache and loaded back like any model. A single ``.safetensors``/``.ckpt`` file
goes through diffusers' ``from_single_file`` with a config folder, never the network
(``single_file.py``). Whatever goes wrong while loading (a missing file, a wrong format, out of
memory) is a ``ModelUnavailable`` naming the model and the cause: that job fails, the worker
goes on.
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
from gouache.errors import InvalidRequest, ModelUnavailable, NotFound, UserError
from gouache.generation.families import family_for
from gouache.generation.families.base import LoadedModel
from gouache.generation.loop.speed import EAGER, SpeedOptions, apply_speed_options
from gouache.generation.loras.bank import LoraBank
from gouache.generation.single_file import builtin_config, check_config_folder, is_single_file

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
        """The loaded model, loading it on first use (once, even with concurrent callers).

        Raises ``ModelUnavailable`` (a ``UserError``: the job fails, not the worker) when the
        model cannot be loaded; a sticky device error still escapes as ``FatalDeviceError``.
        """
        spec = self.spec(name)
        with self._lock:
            if name not in self._loaded:
                model = self._load_reporting(name, spec)
                apply_speed_options(model, self.speed)
                model.loras = LoraBank(model, self._lora_paths, self._lora_budget)
                self._loaded[name] = model
            return self._loaded[name]

    # -- loading -----------------------------------------------------------------------------

    def _load_reporting(self, name: str, spec: ModelSpec) -> LoadedModel:
        from gouache.generation.loop.device import (
            free_device_memory,
            is_out_of_memory,
            raise_if_sticky,
        )

        try:
            return self._load(name, spec)
        except UserError:
            raise
        except Exception as exc:
            raise_if_sticky(exc)
            if is_out_of_memory(exc):
                free_device_memory()
                cause = "out of memory while loading"
            elif isinstance(exc, (FileNotFoundError, OSError)):
                cause = "missing file"
            else:
                cause = "wrong format"
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(messages.model_load_failed(name, cause, detail)) from exc

    def _load(self, name: str, spec: ModelSpec) -> LoadedModel:
        dtype = _pick_dtype(spec.dtype, self.device)
        if is_single_file(spec.path):
            path, index, family, parts = self._load_single_file(name, spec, dtype)
            hub: dict[str, Any] = {"local_files_only": True}
        else:
            path = self._pipeline_path(spec)
            index = self._model_index(path, spec)
            family = family_for(name, index, spec.family)
            parts = {
                part: self._component(path, spec, index, part, dtype)
                for part in (*family.text_parts, family.denoiser_part, "vae")
            }
            hub = self._hub_kwargs(spec)
        vae = parts["vae"]
        if dtype == torch.float16 and getattr(family, "upcast_vae", False) and vae.config.get(
            "force_upcast", False
        ):
            vae.to(dtype=torch.float32)  # once, here: decode never casts the shared VAE
        scheduler_cls = _import_class(index["scheduler"])
        scheduler_config = dict(scheduler_cls.load_config(path, subfolder="scheduler", **hub))
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
            pipeline_config={k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)},
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

    def _load_single_file(
        self, name: str, spec: ModelSpec, dtype: torch.dtype
    ) -> tuple[str, dict[str, Any], Any, dict[str, Any]]:
        """One checkpoint file through ``from_single_file`` with a config folder, offline."""
        import diffusers

        file = Path(spec.path).expanduser()
        config = Path(spec.config).expanduser() if spec.config else builtin_config(name, file)
        index = self._model_index(str(config), spec)
        family = family_for(name, index, spec.family)
        if not family.single_file:
            raise InvalidRequest(messages.single_file_not_supported(name, family.name))
        check_config_folder(name, config, index)
        pipeline_cls = getattr(diffusers, str(index["_class_name"]))
        pipe = pipeline_cls.from_single_file(
            str(file), config=str(config), local_files_only=True, torch_dtype=dtype
        )
        parts = {part: pipe.components.get(part) for part in (*family.text_parts, family.denoiser_part, "vae")}
        return str(config), index, family, parts

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
        if part.startswith(("tokenizer", "scheduler")):
            return cls.from_pretrained(path, **kwargs)
        kwargs["dtype"] = dtype
        if entry[0] == "transformers" and self.device.type == "cuda":
            kwargs["attn_implementation"] = "sdpa"
        return _first_variant(lambda variant: cls.from_pretrained(path, **kwargs, variant=variant), spec.variant)

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


def _first_variant(load: Any, variant: str | None) -> Any:
    """``load(variant)`` with the configured variant, then full precision; unset, full
    precision then ``fp16`` (a folder that holds only ``*.fp16.safetensors``)."""
    order = [variant, None] if variant else [None, "fp16"]
    first: Exception | None = None
    for choice in order:
        try:
            return load(choice)
        except (OSError, ValueError) as exc:
            first = first or exc
    assert first is not None
    raise first


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
