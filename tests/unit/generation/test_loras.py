"""LoRAs per row: diffusers parity (PEFT and kohya files), mixed batches, the bank, the catalog.

Targets: a request with LoRAs equals diffusers' pipeline after ``load_lora_weights`` and
``set_adapters(names, adapter_weights)`` within 2/255 per pixel (measured 0.0 on the tiny
models); rows with different LoRA sets in one denoiser call equal each request alone within
1e-4 in latents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec
from gouache.generation.loop.samplers import make_scheduler
from tests.unit.generation.lora_files import write_kohya, write_peft

STEPS = 3
PIXEL_TOL = 2 / 255
LATENT_TOL = 1e-4


@pytest.fixture(scope="module")
def sd_pipe(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir / "pipeline", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def xl_pipe(tiny_xl_model_dir):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_xl_model_dir / "pipeline", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory, sd_pipe, xl_pipe) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "a": write_peft(root / "a.safetensors", sd_pipe.unet, sd_pipe.text_encoder, seed=1),
        "b": write_kohya(root / "b.safetensors", sd_pipe.unet, sd_pipe.text_encoder, seed=2),
        "xl": write_peft(root / "xl.safetensors", xl_pipe.unet, xl_pipe.text_encoder, seed=3),
        # alpha 2 at rank 4 (scaling 0.5), alpha 8 (scaling 2) on every attn2.to_k: as diffusers'
        # save_lora_weights writes a PEFT config with lora_alpha != r into the file's metadata
        "alpha": write_peft(root / "alpha.safetensors", sd_pipe.unet, sd_pipe.text_encoder, seed=4,
                            config={"lora_alpha": 2, "alpha_pattern": {"attn2.to_k": 8}}),
        "broken": _broken(root / "broken.safetensors"),
    }


def _broken(path: Path) -> Path:
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return path


@pytest.fixture(scope="module")
def lora_registry(tiny_specs, tiny_cache_dir, lora_files):
    """A registry of its own: the bank wraps its models' layers."""
    from gouache.generation.models import ModelRegistry

    return ModelRegistry(tiny_specs, cache_dir=tiny_cache_dir, device="cpu", loras=lora_files.get)


def _images(engine, key: BatchKey, items: list[BatchItem]) -> np.ndarray:
    results = engine.generate(key, items)
    assert all(r.ok for r in results), [r.error for r in results]
    return np.stack([image for r in results for image in r.images])


def _reference(pipe, files, loras, model, **call):
    pipe.scheduler = make_scheduler("ddim", model.scheduler_config)
    names = [name for name, _ in loras]
    for name in names:
        pipe.load_lora_weights(str(files[name]), adapter_name=name)
    pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])
    try:
        return pipe(num_inference_steps=STEPS, height=64, width=64, output_type="np", **call).images
    finally:
        pipe.unload_lora_weights()


@pytest.mark.parametrize("loras", [(("a", 0.7),), (("b", 1.0),), (("a", 1.0), ("b", 0.5)), (("alpha", 1.0),)],
                         ids=["peft", "kohya", "stacked", "peft-with-alpha-metadata"])  # fmt: skip
def test_sd_lora_matches_diffusers(loras, sd_pipe, lora_files, lora_registry, float_engine_cls):
    pytest.importorskip("peft")
    model = lora_registry.get("builtin:tiny")
    key = BatchKey("builtin:tiny", "txt2img", 64, 64, STEPS, "ddim", 5.0)
    ours = _images(float_engine_cls(lora_registry), key,
                   [BatchItem("x", "a red cat", "blurry", seed=7, loras=loras)])  # fmt: skip
    plain = _images(float_engine_cls(lora_registry), key, [BatchItem("y", "a red cat", "blurry", seed=7)])
    reference = _reference(sd_pipe, lora_files, loras, model, prompt="a red cat",
                           negative_prompt="blurry", guidance_scale=5.0,
                           generator=torch.Generator().manual_seed(7))  # fmt: skip
    assert np.abs(plain - reference).max() > 0.01  # the LoRA changes the image
    assert np.abs(ours - reference).max() <= PIXEL_TOL


def test_sdxl_lora_matches_diffusers(xl_pipe, lora_files, lora_registry, float_engine_cls):
    pytest.importorskip("peft")
    model = lora_registry.get("tiny-xl")
    key = BatchKey("tiny-xl", "txt2img", 64, 64, STEPS, "ddim", 5.0)
    loras = (("xl", 0.8),)
    ours = _images(float_engine_cls(lora_registry), key,
                   [BatchItem("x", "a red cat", "blurry", seed=3, loras=loras)])  # fmt: skip
    reference = _reference(xl_pipe, lora_files, loras, model, prompt="a red cat",
                           negative_prompt="blurry", guidance_scale=5.0,
                           generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert np.abs(ours - reference).max() <= PIXEL_TOL


def _latents(running_cls, registry, admitted: list[BatchItem], spec: LaneSpec) -> dict[str, torch.Tensor]:
    from gouache.request import ShapeKey

    seen: dict[str, torch.Tensor] = {}

    class Keeping(running_cls):
        def _decode_chunk(self):
            for lane in self._finished[: self.decode_chunk]:
                seen[lane.item.item_id] = lane.latents.clone()
            return super()._decode_chunk()

    batch = Keeping(registry, ShapeKey("builtin:tiny", 64, 64), row_budget=64)
    for item in admitted:
        batch.admit(item, spec)
    results = batch.run()
    assert all(r.ok for r in results)
    return seen


def test_a_mixed_batch_equals_each_request_alone(lora_registry, float_running_cls):
    spec = LaneSpec(STEPS, "euler-a", 5.0)
    items = [
        BatchItem("none", "a red cat", "blurry", seed=5),
        BatchItem("a", "a red cat", "blurry", seed=5, loras=(("a", 0.7),)),
        BatchItem("ab", "a blue dog", "", seed=9, loras=(("a", 1.0), ("b", 0.5))),
    ]
    mixed = _latents(float_running_cls, lora_registry, items, spec)
    for item in items:
        alone = _latents(float_running_cls, lora_registry, [item], spec)
        assert (mixed[item.item_id] - alone[item.item_id]).abs().max() <= LATENT_TOL, item.item_id
    assert (mixed["none"] - mixed["a"]).abs().max() > 1e-2  # same seed and prompt: the LoRA differs


def test_base_weights_are_never_changed(lora_registry, float_engine_cls):
    model = lora_registry.get("builtin:tiny")
    def weights() -> dict[str, torch.Tensor]:  # a wrapped layer's weights live under .base
        return {k.replace(".base.", "."): v.clone() for k, v in model.denoiser.state_dict().items()}

    before = weights()
    key = BatchKey("builtin:tiny", "txt2img", 64, 64, 2, "ddim", 5.0)
    _images(float_engine_cls(lora_registry), key, [BatchItem("x", "cat", seed=1, loras=(("b", 1.0),))])
    after = weights()
    assert before.keys() == after.keys()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.loras.active is None


def test_a_broken_file_fails_its_item_at_admission(lora_registry, float_running_cls):
    from gouache.request import ShapeKey

    batch = float_running_cls(lora_registry, ShapeKey("builtin:tiny", 64, 64))
    with pytest.raises(InvalidRequest, match="broken"):
        batch.admit(BatchItem("x", "cat", loras=(("broken", 1.0),)), LaneSpec(2, "ddim", 5.0))
    with pytest.raises(InvalidRequest, match="xl"):  # an SDXL LoRA on an SD model
        batch.admit(BatchItem("y", "cat", loras=(("xl", 1.0),)), LaneSpec(2, "ddim", 5.0))
    assert len(batch) == 0


def test_the_bank_drops_the_least_recently_used_over_its_budget(lora_registry):
    from gouache.generation.loras.bank import LoraBank

    model = lora_registry.get("builtin:tiny")
    bank = LoraBank(model, model.loras.path_of, budget_bytes=1)
    bank.prepare(["a"])
    bank.prepare(["b"])
    assert bank.loaded == ("b",)  # "a" was dropped for "b"; the one in use always stays
    bank.budget_bytes = 1 << 30
    bank.prepare(["a"])
    assert bank.loaded == ("b", "a")
