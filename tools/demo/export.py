"""Writes the demo models in the standard on-disk formats (safetensors), atomically.

A directory is written beside its target and swapped in with renames, so a reader (the
registry, a test) never sees a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffusers import ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from .components import build_identity_vae, build_scheduler

__all__ = ["export_pipeline", "export_controlnet", "export_clip", "write_atomically", "record"]


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_dir)`` then swap ``tmp_dir`` into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def export_pipeline(out: Path, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel,
                    unet: UNet2DConditionModel) -> None:
    """A complete ``StableDiffusionPipeline`` directory (identity VAE, no safety checker)."""
    pipe = StableDiffusionPipeline(
        vae=build_identity_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=build_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    write_atomically(out / "pipeline", lambda d: pipe.save_pretrained(d, safe_serialization=True))


def export_controlnet(out: Path, controlnet: ControlNetModel) -> None:
    write_atomically(out / "controlnet-depth",
                     lambda d: controlnet.save_pretrained(d, safe_serialization=True))


def export_clip(out: Path, model: CLIPModel, tokenizer: CLIPTokenizer) -> None:
    """CLIPModel + tokenizer + image processor, loadable as ``CLIPProcessor``/``CLIPModel``."""
    from transformers import CLIPImageProcessor

    size = model.config.vision_config.image_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_convert_rgb=True,
    )

    def write(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)
        tokenizer.save_pretrained(d)
        processor.save_pretrained(d)

    write_atomically(out / "clip", write)


def record(out: Path, phase: str, info: dict[str, Any]) -> None:
    """Keep TRAINING.json beside the models: what each phase ran, for reproduction."""
    path = out / "TRAINING.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[phase] = info
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
