"""One image being denoised in a running batch: a lane, and how lanes become one UNet call.

A lane owns everything that makes its image equal to the image generated alone: its own
scheduler (built from the model's scheduler config and the sampler table, stepped by index), its
own ``torch.Generator`` seeded ``seed + i``, its own timestep index and its own conditioning
rows. ``assemble`` lays the rows of any set of lanes side by side (unconditional rows of the
CFG lanes first, then every lane's conditional row, as diffusers' ``torch.cat([x] * 2)`` does)
with one timestep per row, so lanes at different steps, with different samplers and guidance,
share one UNet call.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, LaneSpec
from gouache.generation.loop.conditioning import (
    Conditioning,
    annealed,
    encode_sd,
    encode_sdxl,
    guidance_embedding,
    prepare_control,
)
from gouache.generation.models import LoadedModel

__all__ = [
    "STATELESS_SCHEDULERS",
    "Lane",
    "Rows",
    "advance_lanes",
    "assemble",
    "check_spec",
    "encode_item",
    "new_lane",
]

_CADS_SEED = 0x5EED_CAD5  # the same stream Engine uses, so --diversify images match


@dataclass(eq=False)
class Lane:
    """Image ``index`` of ``item``: its scheduler state, generator, latents and progress."""

    item: BatchItem
    spec: LaneSpec
    index: int
    user: str
    cond: Conditioning  # one row (plus its negative when ``cfg``)
    cfg: bool
    scheduler: Any
    step_kwargs: dict[str, Any]
    latents: torch.Tensor
    cads_generator: torch.Generator | None = None
    i: int = 0  # the next entry of scheduler.timesteps (UNet calls made)
    steps_done: int = 0  # sampler steps, ticked as diffusers' progress bar ticks
    frames: list[Any] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """UNet rows per step: two with classifier-free guidance (the unconditional row)."""
        return 2 if self.cfg else 1

    @property
    def finished(self) -> bool:
        return self.i >= len(self.scheduler.timesteps)

    @property
    def timestep(self) -> torch.Tensor:
        return self.scheduler.timesteps[self.i]

    def advance(self, noise_pred: torch.Tensor) -> bool:
        """One scheduler step with this lane's noise prediction; True when a frame is due.

        Adapted from the denoising loop of diffusers' StableDiffusionPipeline.__call__: x_t ->
        x_t-1, then the progress tick where the pipeline's progress bar would tick.
        """
        self.latents = self.scheduler.step(
            noise_pred, self.timestep, self.latents, **self.step_kwargs, return_dict=False
        )[0]
        return self.tick()

    def tick(self) -> bool:
        """After a step: move to the next timestep; True when a denoising frame is due."""
        timesteps = self.scheduler.timesteps
        order = self.scheduler.order
        warmup = max(len(timesteps) - self.spec.steps * order, 0)
        i, self.i = self.i, self.i + 1
        if i == len(timesteps) - 1 or ((i + 1) > warmup and (i + 1) % order == 0):
            self.steps_done += 1
            every = self.item.frames_every
            return (
                bool(every) and self.steps_done < self.spec.steps and self.steps_done % every == 0
            )
        return False

    def step_group(self) -> tuple[Any, ...] | None:
        """Lanes with equal groups can take one batched ``scheduler.step`` (None: step alone).

        Within a running batch, sampler and steps fix the scheduler's config and timesteps;
        the index fixes where in them the lane is; the other step arguments must match.
        """
        if type(self.scheduler).__name__ not in STATELESS_SCHEDULERS:
            return None
        rest = tuple(sorted((k, v) for k, v in self.step_kwargs.items() if k != "generator"))
        device, dtype = self.latents.device, self.latents.dtype
        return (self.spec.sampler, self.spec.steps, self.i, rest, device, dtype)


# Schedulers whose step() keeps no per-sample history (their only state is the step index), so
# lanes at one index of one schedule can take a single step() over their stacked rows; the
# multistep solvers (DPM++, UniPC, PNDM, LMS) and Heun keep past predictions per lane.
STATELESS_SCHEDULERS = frozenset(
    {
        "DDIMScheduler",
        "DDPMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "LCMScheduler",
    }
)


def advance_lanes(
    lanes: list[Lane], predictions: dict[int, torch.Tensor], *, batched: bool
) -> list[Lane]:
    """One scheduler step for every lane (``predictions`` by ``id(lane)``); returns the lanes
    due a denoising frame, in ``lanes`` order.

    With ``batched``, lanes of one ``step_group`` are stepped by one call over their stacked
    rows (elementwise arithmetic, so each row equals its lane stepped alone; the random noise
    of ancestral samplers comes from each lane's generator, as ``randn_tensor`` draws one row
    per generator of a list).
    """
    groups: dict[Any, list[Lane]] = {}
    for lane in lanes:
        key = lane.step_group() if batched else None
        groups.setdefault(key if key is not None else id(lane), []).append(lane)
    due: set[int] = set()
    for group in groups.values():
        if len(group) == 1:
            if group[0].advance(predictions[id(group[0])]):
                due.add(id(group[0]))
            continue
        _step_together(group, predictions)
        due |= {id(lane) for lane in group if lane.tick()}
    return [lane for lane in lanes if id(lane) in due]


def _step_together(group: list[Lane], predictions: dict[int, torch.Tensor]) -> None:
    first = group[0]
    driver = first.scheduler
    kwargs = {k: v for k, v in first.step_kwargs.items() if k != "generator"}
    if "generator" in first.step_kwargs:
        kwargs["generator"] = [lane.step_kwargs["generator"] for lane in group]
    stepped = driver.step(
        torch.cat([predictions[id(lane)] for lane in group]),
        first.timestep,
        torch.cat([lane.latents for lane in group]),
        **kwargs,
        return_dict=False,
    )[0]
    index = getattr(driver, "_step_index", None)
    for r, lane in enumerate(group):
        lane.latents = stepped[r : r + 1]
        if lane is not first and hasattr(lane.scheduler, "_step_index"):
            lane.scheduler._step_index = index  # it took this step too


def check_spec(model: LoadedModel, name: str, item: BatchItem, spec: LaneSpec) -> None:
    """The user's errors an item can carry, raised before any work (as Engine's key checks)."""
    if spec.pipeline not in ("txt2img", "depth"):
        raise InvalidRequest(f"Unknown pipeline {spec.pipeline!r}: use txt2img or depth.")
    if spec.steps < 1:
        raise InvalidRequest(f"Steps ({spec.steps}) must be at least 1.")
    if spec.pipeline == "depth" and model.controlnet is None:
        raise InvalidRequest(f"Model {name!r} has no depth ControlNet configured.")
    if spec.pipeline == "depth" and item.control_image is None:
        raise InvalidRequest("A depth image is required for /depth.")


def encode_item(
    model: LoadedModel, item: BatchItem, spec: LaneSpec, cfg: bool, width: int, height: int
) -> Conditioning:
    """The item's conditioning row (shared by its images), as Engine encodes a batch."""
    if model.family == "sdxl":
        cond = encode_sdxl(model, [item], cfg, height, width)
    else:
        cond = encode_sd(model, [item], cfg)
    if spec.pipeline == "depth":
        cond.control_image = prepare_control(model, [item], height, width)
    if model.unet.config.time_cond_proj_dim is not None:  # LCM: the guidance as an embedding
        w = torch.tensor([spec.guidance - 1])
        cond.timestep_cond = guidance_embedding(w, model.unet.config.time_cond_proj_dim).to(
            device=model.device, dtype=cond.prompt_embeds.dtype
        )
    return cond


def new_lane(
    model: LoadedModel,
    item: BatchItem,
    spec: LaneSpec,
    index: int,
    user: str,
    cond: Conditioning,
    cfg: bool,
    template: Any,
    shape: tuple[int, ...],
) -> Lane:
    """Lane ``index`` of ``item``: seed + index, a private copy of the scheduler ``template``.

    Adapted from StableDiffusionPipeline.prepare_latents and prepare_extra_step_kwargs; the
    latents are drawn on the CPU generator exactly as Engine draws them.
    """
    generator = torch.Generator("cpu").manual_seed(item.seed + index)
    scheduler = private_scheduler(template)
    noise = randn_tensor(
        shape, generator=generator, device=model.device, dtype=cond.prompt_embeds.dtype
    )
    params = set(inspect.signature(scheduler.step).parameters)
    step_kwargs: dict[str, Any] = {"eta": 0.0} if "eta" in params else {}
    if "generator" in params:
        step_kwargs["generator"] = generator
    cads = None
    if spec.diversify:
        cads = torch.Generator("cpu").manual_seed((item.seed + index) ^ _CADS_SEED)
    return Lane(
        item=item,
        spec=spec,
        index=index,
        user=user,
        cond=cond,
        cfg=cfg,
        scheduler=scheduler,
        step_kwargs=step_kwargs,
        latents=noise * scheduler.init_noise_sigma,
        cads_generator=cads,
    )


def private_scheduler(template: Any) -> Any:
    """A lane's own scheduler: multistep solvers keep past predictions and a step counter."""
    return copy.deepcopy(template)


@dataclass
class Rows:
    """The inputs of one UNet (and ControlNet) call over a set of lanes."""

    sample: torch.Tensor
    timesteps: torch.Tensor  # one per row
    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None
    timestep_cond: torch.Tensor | None
    control_rows: torch.Tensor | None  # rows that belong to depth lanes
    control: torch.Tensor | None  # their control images, in control_rows order
    control_scale: torch.Tensor | None  # their ControlNet scales (each item's --strength)
    positive: list[int]  # row of each lane's conditional prediction
    negative: list[int | None]  # row of each lane's unconditional prediction


def assemble(lanes: list[Lane], num_train_timesteps: int) -> Rows:
    """Lay the rows of ``lanes`` out for one call: [uncond of CFG lanes..., cond of all...]."""
    negative_parts: list[tuple[Lane, dict[str, Any]]] = []
    positive_parts: list[tuple[Lane, dict[str, Any]]] = []
    for lane in lanes:
        t = lane.timestep
        cond = lane.cond
        if lane.spec.diversify and lane.cads_generator is not None:
            # CADS per lane: each lane's noise level is its own timestep's (conditioning.py).
            cond = annealed(cond, float(t) / num_train_timesteps, [lane.cads_generator])
        embeds, added, control = cond.model_inputs(lane.cfg)
        sample = lane.scheduler.scale_model_input(lane.latents, t)
        half = 1 if lane.cfg else 0

        def part(
            row: int,
            embeds=embeds,
            added=added,
            control=control,
            sample=sample,
            t=t,
            cond=cond,
            lane=lane,
        ) -> dict[str, Any]:
            return {
                "sample": sample,
                "t": t,
                "embeds": embeds[row : row + 1],
                "added": {k: v[row : row + 1] for k, v in added.items()} if added else None,
                "control": control[row : row + 1] if control is not None else None,
                "tcond": cond.timestep_cond,
                "scale": lane.item.control_scale,
            }

        if lane.cfg:
            negative_parts.append((lane, part(0)))
        positive_parts.append((lane, part(half)))
    parts = [p for _, p in negative_parts] + [p for _, p in positive_parts]
    row_of_negative = {id(lane): r for r, (lane, _) in enumerate(negative_parts)}
    offset = len(negative_parts)
    control_rows = [r for r, p in enumerate(parts) if p["control"] is not None]
    added = None
    if parts[0]["added"] is not None:
        added = {k: torch.cat([p["added"][k] for p in parts]) for k in parts[0]["added"]}
    tconds = [p["tcond"] for p in parts]
    device = lanes[0].latents.device
    return Rows(
        sample=torch.cat([p["sample"] for p in parts]),
        # Every row's own timestep; float32 holds the schedulers' int and float steps exactly.
        timesteps=torch.stack([p["t"].to(torch.float32).reshape(()) for p in parts]).to(device),
        embeds=torch.cat([p["embeds"] for p in parts]),
        added=added,
        timestep_cond=torch.cat(tconds) if tconds[0] is not None else None,
        control_rows=torch.tensor(control_rows, device=device) if control_rows else None,
        control=torch.cat([parts[r]["control"] for r in control_rows]) if control_rows else None,
        control_scale=torch.tensor([float(parts[r]["scale"]) for r in control_rows], device=device)
        if control_rows
        else None,
        positive=[offset + r for r in range(len(positive_parts))],
        negative=[row_of_negative.get(id(lane)) for lane, _ in positive_parts],
    )
