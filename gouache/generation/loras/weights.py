"""A LoRA file as low-rank factors per module of one loaded model, normalised by diffusers.

diffusers' ``lora_state_dict`` (the classmethod ``load_lora_weights`` itself calls) reads the
file and converts kohya/A1111 keys to its own; ``convert_unet_state_dict_to_peft`` and, for
the text encoders, ``convert_state_dict_to_diffusers`` + ``convert_state_dict_to_peft`` bring
every format to PEFT's ``<module>.lora_A/.lora_B`` names, as ``load_lora_into_unet`` and
``load_lora_into_text_encoder`` do. The per-module scaling is PEFT's ``lora_alpha / r``
(``/ sqrt(r)`` with rsLoRA): from the adapter config diffusers' ``save_lora_weights`` writes into
the file's metadata (``lora_alpha``, ``alpha_pattern``, ``rank_pattern``, as ``LoraConfig``
reads them), else the file's network alpha for the module (its most common alpha when one is
missing), or 1 without alphas (diffusers' ``get_peft_kwargs``). Nothing here touches the
model's weights.
"""

from __future__ import annotations

import collections
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel

__all__ = ["Factor", "LoraWeights", "LoraFileError", "load_lora", "part_device", "parts_of"]


class LoraFileError(ValueError):
    """The file cannot be used with this model; the message says why (shown to the user)."""


@dataclass
class Factor:
    """One module's update ``up @ down`` (Linear: (r, in) and (out, r); Conv2d: kernels)."""

    down: torch.Tensor
    up: torch.Tensor
    scaling: float  # lora_alpha / r


@dataclass
class LoraWeights:
    """Every factor of one file: part ("unet", "text_encoder", "text_encoder_2") -> module."""

    name: str
    parts: dict[str, dict[str, Factor]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for part in self.parts.values()
                   for f in part.values() for t in (f.down, f.up))  # fmt: skip


def parts_of(model: LoadedModel) -> dict[str, torch.nn.Module]:
    """The modules a LoRA file may touch, under the prefixes diffusers' files use."""
    parts: dict[str, torch.nn.Module] = {"unet": model.denoiser}
    for i, encoder in enumerate(model.text_encoders):
        parts["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = encoder
    return parts


def load_lora(name: str, path: Path, model: LoadedModel) -> LoraWeights:
    """Read ``path`` into factors for ``model`` on its device and dtype (``LoraFileError``)."""
    try:
        state_dict, alphas, config = _read(path, model)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise LoraFileError(f"cannot read {path.name}: {exc}") from exc
    out = LoraWeights(name)
    for prefix, module in parts_of(model).items():
        factors = _factors(prefix, module, state_dict, alphas or {}, _adapter_config(prefix, config))
        if factors:
            out.parts[prefix] = {k: _placed(f, model, part_device(model, prefix)) for k, f in factors.items()}
    if not out.parts:
        raise LoraFileError(f"{path.name} holds no LoRA weights for this model's modules")
    return out


def _read(path: Path, model: LoadedModel) -> tuple[dict[str, torch.Tensor], dict[str, float] | None,
                                                   dict[str, Any] | None]:  # fmt: skip
    """The file's tensors in diffusers' names, its network alphas and diffusers' adapter
    metadata (``<part>.lora_alpha`` and the like), read as ``load_lora_weights`` reads them."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    if not path.is_file():
        raise OSError(f"no such file: {path}")
    mixin = StableDiffusionXLLoraLoaderMixin if len(model.text_encoders) > 1 else StableDiffusionLoraLoaderMixin
    state_dict, alphas, config = mixin.lora_state_dict(str(path), unet_config=model.denoiser.config,
                                                       return_lora_metadata=True)  # fmt: skip
    return dict(state_dict), alphas, config


def _adapter_config(prefix: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """One part's ``LoraConfig`` fields from diffusers' metadata (keys ``<part>.<field>``)."""
    return {k.removeprefix(prefix + "."): v for k, v in (metadata or {}).items() if k.startswith(prefix + ".")}


def _pattern(patterns: dict[str, Any], module: str) -> Any:
    """PEFT's rule for ``alpha_pattern``/``rank_pattern``: the first key that names the module
    or a suffix of it (keys are regular expressions), else None."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?(?:{key})", module):
            return value
    return None


def _scaling(module: str, rank: int, config: dict[str, Any], fallback_alpha: float) -> float:
    """PEFT's per-module scaling: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA)."""
    if not config:
        return fallback_alpha / rank
    alpha = _pattern(config.get("alpha_pattern") or {}, module)
    alpha = float(alpha if alpha is not None else config.get("lora_alpha", rank))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _factors(
    prefix: str, root: torch.nn.Module, state_dict: dict[str, torch.Tensor], alphas: dict[str, float],
    config: dict[str, Any] | None = None,
) -> dict[str, Factor]:
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    mine = {k.removeprefix(prefix + "."): v for k, v in state_dict.items() if k.split(".")[0] == prefix}
    if not mine:
        return {}
    if prefix == "unet":
        if not any("lora_A" in k for k in mine):
            mine = convert_unet_state_dict_to_peft(mine)
    elif not any("lora_A" in k for k in mine):
        mine = convert_state_dict_to_peft(_text_to_diffusers(mine))
        if not hasattr(root, "text_model"):
            mine = {k.removeprefix("text_model."): v for k, v in mine.items()}
    module_alphas = _alphas(prefix, alphas)
    common = collections.Counter(module_alphas.values()).most_common(1)
    out: dict[str, Factor] = {}
    for key, down in mine.items():
        if ".lora_A." not in key or not key.endswith(".weight"):
            continue
        module = key.split(".lora_A.")[0]
        up = mine.get(f"{module}.lora_B.weight")
        if up is None:
            raise LoraFileError(f"{module} has a lora_A matrix without its lora_B")
        rank = up.shape[1]
        alpha = module_alphas.get(module, module_alphas.get(module.removeprefix("text_model."),
                                                            common[0][0] if common else rank))  # fmt: skip
        _check_fits(prefix, root, module, down, up)
        out[module] = Factor(down, up, _scaling(module, rank, config or {}, float(alpha)))
    return out


def _text_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' text-encoder conversion; its guess of the layout needs an ``out_proj`` key,
    so a kohya file that trained only some projections is named as the old layout it is."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from diffusers.utils.state_dict_utils import StateDictType

    try:
        return convert_state_dict_to_diffusers(state_dict)
    except ValueError:
        return convert_state_dict_to_diffusers(state_dict, original_type=StateDictType.DIFFUSERS_OLD)


def _alphas(prefix: str, alphas: dict[str, float]) -> dict[str, float]:
    """Network alphas by module name (``<prefix>.<module>.alpha`` in diffusers' conversion)."""
    out = {}
    for key, value in alphas.items():
        if key.split(".")[0] != prefix:
            continue
        module = key.removeprefix(prefix + ".").removesuffix(".alpha")
        out[module.removesuffix(".lora_linear_layer")] = float(value)
    return out


def _check_fits(prefix: str, root: torch.nn.Module, module: str, down: torch.Tensor, up: torch.Tensor) -> None:
    try:
        target: Any = root.get_submodule(module)
    except AttributeError:
        raise LoraFileError(f"{prefix}.{module} is not a module of this model (a LoRA for another model?)") from None
    while hasattr(target, "_key") and hasattr(target, "base"):  # already wrapped by a bank
        target = target.base
    if isinstance(target, torch.nn.Linear):
        fits = down.ndim == 2 and down.shape[1] == target.in_features and up.shape[0] == target.out_features
    elif isinstance(target, torch.nn.Conv2d):
        fits = down.ndim == 4 and down.shape[1] == target.in_channels and up.shape[0] == target.out_channels
    else:
        raise LoraFileError(f"{prefix}.{module} is a {type(target).__name__}, not a Linear or Conv2d layer")
    if not fits:
        raise LoraFileError(
            f"{prefix}.{module}: LoRA shapes {tuple(down.shape)}/{tuple(up.shape)} do not fit this model"
            " (a LoRA for another model?)"
        )


def part_device(model: LoadedModel, part: str) -> torch.device:
    """Where a part's layers (and so its LoRA factors) live: the text encoders' device or the
    denoiser's."""
    return model.text_device if part.startswith("text_encoder") else model.device


def _placed(factor: Factor, model: LoadedModel, device: torch.device) -> Factor:
    return Factor(factor.down.to(device, model.dtype), factor.up.to(device, model.dtype),
                  factor.scaling)  # fmt: skip
