"""ModelRegistry: load each configured model once and hand out its components.

The loop runs its own denoising, so it needs the parts rather than a pipeline object: tokenizers,
text encoders, the denoiser (a UNet or a transformer), VAE, the scheduler config, and the optional
depth ControlNet and preview decoder. Which parts a model has, and what they mean, is its
family's (``families/``), read from the folder's ``model_index.json``. Folders and hub ids go
through ``from_pretrained`` (``local_files_only`` when offline), trying the configured
``variant`` (unset: full precision, then ``fp16``), including ``builtin:tiny``, which is built
once into the cache and loaded back like any model. A single ``.safetensors``/``.ckpt`` file
goes through diffusers' ``from_single_file`` with a config folder, never the network
(``single_file.py``); so does a transformer family's ``transformer = FILE``, with the config of
the folder's ``transformer/`` and the other parts from the folder (a ``.gguf`` file keeps its
quantized weights: diffusers' ``GGUFQuantizationConfig``). ``dtype = "auto"`` is the family's on
CUDA (``Family.cuda_dtype``: bf16 for the transformers, fp16 for the UNets), float32 elsewhere.
Whatever goes wrong while loading (a missing file, a wrong format, out of memory) is a
``ModelUnavailable`` naming the model and the cause: that job fails, the worker
goes on.

Models stay resident on the device under a memory budget (``worker.model_memory_gb``): when
another must load, the least recently used leave the device (moved to the CPU, from where they
come back without reading their files again, or dropped, by ``worker.evicted_models``). The
worker asks ``resident`` to prefer jobs for models already on the card. Text encoders configured
``text_encoder_device = "cpu"`` stay on the CPU and outside the budget (``LoadedModel.text_device``;
the families encode there and ``Family.prompt`` moves the embeddings to the card).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from gouache import messages
from gouache.config import BUILTIN_DEMO, BUILTIN_TINY, ModelSpec
from gouache.errors import InvalidRequest, ModelUnavailable, NotFound, UserError
from gouache.generation.families import family_for
from gouache.generation.families.base import Family, LoadedModel
from gouache.generation.loop.speed import EAGER, SpeedOptions, apply_speed_options
from gouache.generation.loras.bank import LoraBank
from gouache.generation.single_file import builtin_config, check_config_folder, is_single_file

__all__ = ["LoadedModel", "ModelRegistry", "demo_root"]

log = logging.getLogger(__name__)
_LIBRARIES = frozenset({"diffusers", "transformers"})  # never import a module named in a file
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def demo_root() -> Path:
    """Where the shipped demo model lives (pipeline/, controlnet-depth/, clip/)."""
    return Path(__file__).resolve().parent.parent / "models" / "demo"


class ModelRegistry:
    """Loads each named model once, on first use, and keeps it on the device while it fits the
    memory budget (least recently used leave first)."""

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
        memory_budget_bytes: int | None = None,
        evict: Literal["cpu", "drop"] = "cpu",
    ) -> None:
        """``memory_budget_bytes``: what the resident models' weights may take on the device
        together (None: 85% of a CUDA card's memory, no limit elsewhere)."""
        self._specs = dict(specs)
        self._lora_paths = loras or (lambda name: None)  # a LoRA's file by name
        self._lora_budget = lora_budget_bytes
        self.speed = speed
        self._cache_dir = Path(cache_dir)
        self.device = _pick_device(device)
        self._offline = offline
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._resident: set[str] = set()  # the loaded models that are on the device
        self._bytes: dict[str, int] = {}
        self._budget = memory_budget_bytes if memory_budget_bytes is not None else _card_budget(self.device)
        self._evict_to = evict
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

    @property
    def resident(self) -> tuple[str, ...]:
        """The models on the device now, least recently used first."""
        with self._lock:
            return tuple(name for name in self._loaded if name in self._resident)

    def get(self, name: str) -> LoadedModel:
        """The loaded model on the device, loading it on first use (once, even with concurrent
        callers) and moving others off the device first when the budget asks.

        Raises ``ModelUnavailable`` (a ``UserError``: the job fails, not the worker) when the
        model cannot be loaded; a sticky device error still escapes as ``FatalDeviceError``.
        """
        spec = self.spec(name)
        with self._lock:
            model = self._loaded.get(name)
            if model is None:
                model = self._reporting(name, lambda: self._load(name, spec))
                self._bytes[name] = _weight_bytes(model)
                self._loaded[name] = model
            if name not in self._resident:
                self._make_room(name)
                self._reporting(name, lambda: _place(model, self.device))
                if model.loras is None:  # first load: compile wrappers after the move, as ever
                    apply_speed_options(model, self.speed)
                    model.loras = LoraBank(model, self._lora_paths, self._lora_budget)
                self._resident.add(name)
            self._loaded.move_to_end(name)
            return model

    def _make_room(self, name: str) -> None:
        """Move the least recently used models off the device until ``name`` fits the budget
        (a model larger than the budget alone still loads, alone)."""
        used = sum(self._bytes[n] for n in self._resident)
        victims = [n for n in self._loaded if n in self._resident and n != name]
        evicted = False
        while victims and used + self._bytes[name] > self._budget:
            victim = victims.pop(0)
            model = self._loaded[victim]
            self._resident.discard(victim)
            used -= self._bytes[victim]
            if self._evict_to == "drop":
                del self._loaded[victim]
            else:
                _place(model, torch.device("cpu"))
            if model.loras is not None:
                model.loras.clear()  # its LoRA factors live on the device: loaded again on use
            evicted = True
            log.info("model %s left the %s for %s (%s; budget %.1f GB)", victim, self.device, name,
                     "moved to the CPU" if self._evict_to == "cpu" else "dropped", self._budget / 1e9)  # fmt: skip
        if evicted:  # what the victims held goes back to the card before the newcomer moves in
            from gouache.generation.loop.device import free_device_memory

            free_device_memory()

    # -- loading -----------------------------------------------------------------------------

    def _reporting(self, name: str, action: Callable[[], Any]) -> Any:
        """``action`` (loading or placing ``name``), its failures as ``ModelUnavailable``."""
        from gouache.generation.loop.device import (
            free_device_memory,
            is_out_of_memory,
            raise_if_sticky,
        )

        try:
            return action()
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
        path, index, family, dtype, parts, hub = self._parts(name, spec)
        vae = parts["vae"]
        if dtype == torch.float16 and getattr(family, "upcast_vae", False) and vae.config.get(
            "force_upcast", False
        ):
            vae.to(dtype=torch.float32)  # once, here: decode never casts the shared VAE
        scheduler_cls = _import_class(index["scheduler"])
        scheduler_config = dict(scheduler_cls.load_config(path, subfolder="scheduler", **hub))
        controlnet, preview = self._helpers(spec, dtype)
        for module in (*parts.values(), controlnet, preview):
            if isinstance(module, torch.nn.Module):
                module.eval().requires_grad_(False)  # on the CPU: ``get`` places it
        return LoadedModel(
            name=name,
            spec=spec,
            family=family,
            device=self.device,
            text_device=torch.device("cpu") if spec.text_encoder_device == "cpu" else self.device,
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

    def _parts(
        self, name: str, spec: ModelSpec
    ) -> tuple[str, dict[str, Any], Family, torch.dtype, dict[str, Any], dict[str, Any]]:
        """The model's folder (or single file's config folder), ``model_index.json``, family,
        dtype, its parts by name, and the hub arguments that read its folder."""
        if is_single_file(spec.path):
            config = self._single_file_config(name, spec)
            index = self._model_index(str(config), spec)
            family = _family(name, index, spec)
            dtype = _pick_dtype(spec.dtype, self.device, family)
            parts = self._load_single_file(name, spec, config, index, family, dtype)
            return str(config), index, family, dtype, parts, {"local_files_only": True}
        path = self._pipeline_path(spec)
        index = self._model_index(path, spec)
        family = _family(name, index, spec)
        dtype = _pick_dtype(spec.dtype, self.device, family)
        parts = {
            part: self._component(name, path, spec, index, part, dtype)
            for part in (*family.text_parts, family.denoiser_part, "vae")
        }
        return path, index, family, dtype, parts, self._hub_kwargs(spec)

    def _helpers(self, spec: ModelSpec, dtype: torch.dtype) -> tuple[Any, Any]:
        """The optional depth ControlNet and preview decoder."""
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
        return controlnet, preview

    @staticmethod
    def _single_file_config(name: str, spec: ModelSpec) -> Path:
        file = Path(spec.path).expanduser()
        return Path(spec.config).expanduser() if spec.config else builtin_config(name, file)

    def _load_single_file(
        self, name: str, spec: ModelSpec, config: Path, index: dict[str, Any], family: Family,
        dtype: torch.dtype,
    ) -> dict[str, Any]:  # fmt: skip
        """One checkpoint file through ``from_single_file`` with a config folder, offline."""
        import diffusers

        if not family.single_file:
            raise InvalidRequest(messages.single_file_not_supported(name, family.name))
        check_config_folder(name, config, index)
        pipeline_cls = getattr(diffusers, str(index["_class_name"]))
        pipe = pipeline_cls.from_single_file(
            str(Path(spec.path).expanduser()), config=str(config), local_files_only=True, torch_dtype=dtype
        )
        return {part: pipe.components.get(part) for part in (*family.text_parts, family.denoiser_part, "vae")}

    def _transformer_file(
        self, name: str, path: str, spec: ModelSpec, index: dict[str, Any], dtype: torch.dtype
    ) -> Any:
        """The transformer from one file (``transformer = ...``), with the config of the
        folder's ``transformer/``: a ``.gguf`` file keeps its quantized weights (diffusers'
        ``GGUFLinear`` dequantizes them per call, computing in ``dtype``)."""
        assert spec.transformer is not None
        file = Path(spec.transformer).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"no such transformer file: {file}")
        kwargs: dict[str, Any] = {"config": path, "subfolder": "transformer", "torch_dtype": dtype,
                                  "local_files_only": self._offline}  # fmt: skip
        if spec.revision:
            kwargs["config_revision"] = spec.revision
        if file.suffix.lower() == ".gguf":
            kwargs["quantization_config"] = _gguf_config(name, dtype)
        return _import_class(index["transformer"]).from_single_file(str(file), **kwargs)

    def _component(
        self,
        name: str,
        path: str,
        spec: ModelSpec,
        index: dict[str, Any],
        part: str,
        dtype: torch.dtype,
    ) -> Any:
        entry = index.get(part)
        if not entry or entry[0] is None:
            return None
        if part == "transformer" and spec.transformer:
            return self._transformer_file(name, path, spec, index, dtype)
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


def _family(name: str, index: dict[str, Any], spec: ModelSpec) -> Family:
    """The model's family; a ``transformer = ...`` file only for a transformer family."""
    family = family_for(name, index, spec.family)
    if spec.transformer and family.denoiser_part != "transformer":
        raise InvalidRequest(messages.transformer_file_not_for_family(name, family.name))
    return family


def _modules(model: LoadedModel) -> list[torch.nn.Module]:
    """The model's modules that live on its device (the text encoders unless on the CPU)."""
    text = model.text_encoders if model.text_device == model.device else ()
    parts = (*text, model.denoiser, model.vae, model.controlnet, model.preview_decoder)
    return [m for m in parts if isinstance(m, torch.nn.Module)]


def _place(model: LoadedModel, device: torch.device) -> None:
    """The model's device parts on ``device``; text encoders kept on the CPU stay there."""
    for module in _modules(model):
        module.to(device)
    if model.text_device != model.device:
        for encoder in model.text_encoders:
            encoder.to(model.text_device)


def _weight_bytes(model: LoadedModel) -> int:
    """What the model's weights take on its device (parameters and buffers; a GGUF
    transformer's quantized bytes as stored)."""
    return sum(t.numel() * t.element_size() for m in _modules(model)
               for t in (*m.parameters(), *m.buffers()))  # fmt: skip


def _gguf_config(name: str, dtype: torch.dtype) -> Any:
    """diffusers' GGUF quantization config computing in ``dtype``; the gguf package missing
    is the operator's to fix, said plainly."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailable(messages.gguf_not_installed(name))
    from diffusers import GGUFQuantizationConfig

    return GGUFQuantizationConfig(compute_dtype=dtype)


def _card_budget(device: torch.device) -> int:
    """85% of a CUDA card's memory for the resident models' weights; no limit elsewhere."""
    if device.type != "cuda":
        return 1 << 62
    return int(torch.cuda.get_device_properties(device).total_memory * 0.85)


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


def _pick_dtype(dtype: str, device: torch.device, family: Family) -> torch.dtype:
    """The configured dtype; ``auto``: the family's on CUDA (``Family.cuda_dtype``), float32
    elsewhere."""
    if dtype != "auto":
        return _DTYPES[dtype]
    return family.cuda_dtype if device.type == "cuda" else torch.float32
