"""The generation engine: one denoising loop over a batch of compatible items.

The loop is diffusers' own, taken apart so that the batch is ours: every image is a *lane* with
its own generator and scheduler, so an item can leave the running batch at a step boundary (its
rows are dropped) and, later, items could join one. Where the loop follows diffusers it says so,
and ``tests/unit/generation/test_parity.py`` holds it to the real pipelines' output.

Out of memory, the batch is split in halves down to single items, then the VAE is tiled, then
that one item fails with ``ResourceExhausted`` while the others complete. Sticky CUDA errors
poison the process: they surface as ``FatalDeviceError`` so the worker exits and restarts.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from gouache.errors import InvalidRequest, ResourceExhausted
from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult, ShapeKey, split_in_halves
from gouache.generation.loop.conditioning import (
    annealed,
    encode_sd,
    encode_sdxl,
    guidance_embedding,
    guidance_scales,
    prepare_control,
)
from gouache.generation.loop.decoding import decode_frames, decode_latents, to_pil
from gouache.generation.loop.device import (
    FatalDeviceError,
    Fault,
    OnStep,
    ShouldStop,
    free_device_memory,
    sticky_device_errors,
)
from gouache.generation.loop.running import RunningBatch
from gouache.generation.loop.samplers import make_scheduler, timed_scheduler
from gouache.generation.models import LoadedModel, ModelRegistry

__all__ = ["Engine", "FatalDeviceError", "Fault", "OnStep", "ShouldStop"]


_CADS_SEED = 0x5EED_CAD5  # CADS noise must not reuse the latents' random stream


@dataclass
class _Lane:
    """One image being denoised: its item, its seed's generator and its own scheduler state."""

    item: BatchItem
    generator: torch.Generator
    scheduler: Any
    step_kwargs: dict[str, Any]
    frames: list[Any] = field(default_factory=list)
    # CADS noise for /diversity --diversify; seeded apart from the latents' generator.
    cads_generator: torch.Generator | None = None


class Engine:
    """Runs batches of compatible items on a registry's models."""

    def __init__(self, registry: ModelRegistry, *, fault: Fault | None = None) -> None:
        self._registry = registry
        self._fault = fault  # called before each UNet step and decode; tests raise OOM from it

    def warm_up(self, model: str) -> None:
        """Load ``model`` now rather than on the first batch."""
        self._registry.get(model)

    def running_batch(self, shape: ShapeKey, *, row_budget: int, decode_chunk: int) -> RunningBatch:
        """A step-level ``RunningBatch`` on this engine's models (``generation/loop/running.py``)."""
        return RunningBatch(self._registry, shape, row_budget=row_budget,
                            decode_chunk=decode_chunk, fault=self._fault)  # fmt: skip

    def generate(
        self,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: OnStep | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[ItemResult]:
        """Generate every item's images; one result per item, in order.

        A user error in the batch key (unknown model or sampler, no depth ControlNet) raises;
        problems of one item (no control image, out of memory alone) are that item's result.
        ``on_step(done, total)`` ticks once per sampler step; after an OOM split each half
        counts from 1 again. ``key.diversify`` turns on condition-annealed sampling (CADS).
        """
        model = self._registry.get(key.model)
        make_scheduler(key.sampler, model.scheduler_config)  # unknown sampler: fail before work
        _check_key(key, model)
        results: dict[str, ItemResult] = {}
        runnable = []
        for item in items:
            if key.pipeline == "depth" and item.control_image is None:
                results[item.item_id] = ItemResult(
                    item.item_id, error=InvalidRequest("A depth image is required for /depth.")
                )
            else:
                runnable.append(item)
        with sticky_device_errors():
            for result in self._split_on_oom(model, key, runnable, on_step, should_stop):
                results[result.item_id] = result
        return [results[item.item_id] for item in items]

    def _split_on_oom(
        self,
        model: LoadedModel,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: OnStep | None,
        should_stop: ShouldStop | None,
        tiled: bool = False,
    ) -> list[ItemResult]:
        """Halve the batch on OOM down to single items, then tile the VAE, then give up."""
        if not items:
            return []
        try:
            return self._denoise(model, key, items, on_step, should_stop, tiled)
        except torch.OutOfMemoryError:
            free_device_memory()
        if len(items) > 1:
            first, second = split_in_halves(items)
            return [
                *self._split_on_oom(model, key, first, on_step, should_stop, tiled),
                *self._split_on_oom(model, key, second, on_step, should_stop, tiled),
            ]
        if not tiled:
            return self._split_on_oom(model, key, items, on_step, should_stop, tiled=True)
        (item,) = items
        size = f"{key.width}x{key.height}"
        return [
            ItemResult(
                item.item_id,
                error=ResourceExhausted(
                    f"The GPU ran out of memory for this request ({item.count} image(s) at {size}, "
                    f"{key.steps} steps) even on its own. Try fewer images or a smaller size."
                ),
            )
        ]

    @torch.inference_mode()
    def _denoise(
        self,
        model: LoadedModel,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: OnStep | None,
        should_stop: ShouldStop | None,
        tiled: bool,
    ) -> list[ItemResult]:
        # Adapted from diffusers 0.42.1 StableDiffusionPipeline.__call__,
        # StableDiffusionXLPipeline.__call__ and StableDiffusionControlNetPipeline.__call__,
        # with per-item prompts, negatives and generators, and lanes that can leave the batch.
        device = model.device
        unet = model.unet

        # 1. Define call parameters: one lane per image, image i of an item uses seed + i.
        #    (CFG is off for guidance <= 1 and for guidance-distilled UNets, as in diffusers.)
        do_cfg = key.guidance > 1 and unet.config.time_cond_proj_dim is None
        template = timed_scheduler(key.sampler, model.scheduler_config, key.steps, device)

        # 2. Encode input prompts (per item, then repeated per image like num_images_per_prompt).
        counts = torch.tensor([item.count for item in items])
        if model.family == "sdxl":
            cond = encode_sdxl(model, items, do_cfg, key.height, key.width)
        else:
            cond = encode_sd(model, items, do_cfg)
        # 3. Prepare the control image (StableDiffusionControlNetPipeline.prepare_image).
        if key.pipeline == "depth":
            cond.control_image = prepare_control(model, items, key.height, key.width)
        cond = cond.take(torch.arange(len(items)).repeat_interleave(counts))

        # 4. Prepare timesteps (retrieve_timesteps), done in timed_scheduler with the begin index
        #    pinned to 0, as SDXL does, so repeated Karras timesteps step by index.
        timesteps = template.timesteps
        step_params = set(inspect.signature(template.step).parameters)

        # 5. Prepare latents, one generator per image (randn_tensor with a list of generators).
        lanes: list[_Lane] = []
        noise = []
        shape = (
            1,
            unet.config.in_channels,
            key.height // model.vae_scale_factor,
            key.width // model.vae_scale_factor,
        )
        for item in items:
            for index in range(item.count):
                generator = torch.Generator("cpu").manual_seed(item.image_seed(index))
                noise.append(
                    randn_tensor(
                        shape, generator=generator, device=device, dtype=cond.prompt_embeds.dtype
                    )
                )
                # 6. Prepare extra step kwargs (prepare_extra_step_kwargs) for this lane.
                step_kwargs = {"eta": 0.0} if "eta" in step_params else {}
                if "generator" in step_params:
                    step_kwargs["generator"] = generator
                cads = None
                if key.diversify:
                    cads = torch.Generator("cpu").manual_seed(item.image_seed(index) ^ _CADS_SEED)
                lanes.append(
                    _Lane(
                        item, generator, copy.deepcopy(template), step_kwargs, cads_generator=cads
                    )
                )
        latents = torch.cat(noise) * template.init_noise_sigma

        # 7. Optionally get the guidance scale embedding (LCM-distilled UNets).
        if unet.config.time_cond_proj_dim is not None:
            guidance = torch.tensor(key.guidance - 1).repeat(len(lanes))
            cond.timestep_cond = guidance_embedding(guidance, unet.config.time_cond_proj_dim).to(
                device=device, dtype=latents.dtype
            )

        # 8. Denoising loop.
        order = template.order
        num_warmup_steps = max(len(timesteps) - key.steps * order, 0)
        cancelled: set[str] = set()
        embeds, added_cond, control = cond.model_inputs(do_cfg)
        steps_done = 0
        for i, t in enumerate(timesteps):
            # 8.1 Drop the rows of items that were cancelled; their batch-mates go on.
            leaving = _stopping(lanes, should_stop)
            if leaving:
                cancelled |= leaving
                keep = torch.tensor(
                    [r for r, lane in enumerate(lanes) if lane.item.item_id not in leaving]
                )
                lanes = [lane for lane in lanes if lane.item.item_id not in leaving]
                if not lanes:
                    break
                latents = latents.index_select(0, keep.to(latents.device))
                cond = cond.take(keep)
                embeds, added_cond, control = cond.model_inputs(do_cfg)
            self._check_fault("unet", lanes)
            if key.diversify:  # CADS: an annealed, noisier condition early on (conditioning.py)
                noise_level = float(t) / template.config.num_train_timesteps
                generators = [lane.cads_generator for lane in lanes]
                embeds, added_cond, control = annealed(cond, noise_level, generators).model_inputs(
                    do_cfg
                )

            # 8.2 Expand the latents for classifier-free guidance and scale them per lane.
            scaled = torch.cat(
                [
                    lane.scheduler.scale_model_input(latents[r : r + 1], t)
                    for r, lane in enumerate(lanes)
                ]
            )
            latent_model_input = torch.cat([scaled] * 2) if do_cfg else scaled

            # 8.3 ControlNet residuals for the depth pipeline.
            residuals: dict[str, Any] = {}
            if control is not None:
                down, mid = model.controlnet(
                    latent_model_input,
                    t,
                    encoder_hidden_states=embeds,
                    controlnet_cond=control,
                    conditioning_scale=1.0,
                    guess_mode=False,
                    added_cond_kwargs=added_cond,
                    return_dict=False,
                )
                # Per-row conditioning scale (each item's --strength), as diffusers multiplies
                # the residuals by conditioning_scale, here one value per row.
                scale = torch.tensor(
                    [lane.item.control_scale for lane in lanes] * (2 if do_cfg else 1),
                    device=mid.device,
                    dtype=mid.dtype,
                ).view(-1, 1, 1, 1)
                down, mid = [d * scale for d in down], mid * scale
                residuals = {
                    "down_block_additional_residuals": down,
                    "mid_block_additional_residual": mid,
                }

            # 8.4 Predict the noise residual.
            noise_pred = model.unet_call(
                latent_model_input,
                t,
                encoder_hidden_states=embeds,
                timestep_cond=cond.timestep_cond,
                added_cond_kwargs=added_cond,
                return_dict=False,
                **residuals,
            )[0]

            # 8.5 Perform guidance.
            if do_cfg:
                noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                level = float(t) / template.config.num_train_timesteps  # guidance_interval
                scales = guidance_scales([lane.item for lane in lanes], key.guidance, level)
                noise_pred = noise_pred_uncond + scales.to(noise_pred) * (
                    noise_pred_text - noise_pred_uncond
                )

            # 8.6 Compute the previous noisy sample x_t -> x_t-1, lane by lane.
            latents = torch.cat(
                [
                    lane.scheduler.step(
                        noise_pred[r : r + 1],
                        t,
                        latents[r : r + 1],
                        **lane.step_kwargs,
                        return_dict=False,
                    )[0]
                    for r, lane in enumerate(lanes)
                ]
            )

            # 8.7 Report progress (when diffusers' progress bar would tick) and keep frames.
            if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % order == 0):
                steps_done += 1
                if on_step is not None:
                    on_step(steps_done, key.steps)
                if steps_done < key.steps:
                    self._keep_frames(model, lanes, latents, steps_done)

        # 9. Decode with the VAE and post-process to images; the final image is the last frame.
        results = {item.item_id: ItemResult(item.item_id) for item in items}
        for item_id in cancelled:
            results[item_id].cancelled = True
        if lanes:
            self._check_fault("decode", lanes)
            images = self._postprocess(decode_latents(model, latents, tiled), model)
            for lane, image in zip(lanes, images, strict=True):
                result = results[lane.item.item_id]
                result.images.append(image)
                if lane.item.frames_every:
                    result.frames.append([*lane.frames, image])
        return [results[item.item_id] for item in items]

    def _keep_frames(
        self, model: LoadedModel, lanes: list[_Lane], latents: torch.Tensor, step: int
    ) -> None:
        """Decode the current latents of lanes whose item wants a frame at this step."""
        rows = [
            r
            for r, lane in enumerate(lanes)
            if lane.item.frames_every and step % lane.item.frames_every == 0
        ]
        if not rows:
            return
        picked = latents.index_select(0, torch.tensor(rows, device=latents.device))
        decoded = decode_frames(model, picked)
        for r, frame in zip(rows, self._postprocess(decoded, model), strict=True):
            lanes[r].frames.append(frame)

    def _postprocess(self, image: torch.Tensor, model: LoadedModel) -> list[Any]:
        """Decoded [-1, 1] tensors to PIL images (parity tests override this to keep floats)."""
        return to_pil(image, model)

    def _check_fault(self, stage: str, lanes: Sequence[_Lane]) -> None:
        if self._fault is not None:
            self._fault(stage, [lane.item.item_id for lane in lanes])


def _check_key(key: BatchKey, model: LoadedModel) -> None:
    if key.pipeline not in ("txt2img", "depth"):
        raise InvalidRequest(f"Unknown pipeline {key.pipeline!r}: use txt2img or depth.")
    if key.pipeline == "depth" and model.controlnet is None:
        raise InvalidRequest(f"Model {key.model!r} has no depth ControlNet configured.")
    if key.width % 8 or key.height % 8 or key.steps < 1:
        raise InvalidRequest(
            f"Size {key.width}x{key.height} must be multiples of 8 and steps ({key.steps}) at least 1."
        )


def _stopping(lanes: Sequence[_Lane], should_stop: ShouldStop | None) -> set[str]:
    if should_stop is None:
        return set()
    return {
        item_id
        for item_id in dict.fromkeys(lane.item.item_id for lane in lanes)
        if should_stop(item_id)
    }
