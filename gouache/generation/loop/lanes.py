"""One image being denoised in a running batch: a lane, and how lanes become one denoiser call.

A lane owns everything that makes its image equal to the image generated alone: its own
scheduler (built from the model's scheduler config and the sampler table, stepped by index), its
own ``torch.Generator`` seeded ``image_seed(seed, i)``, its own timestep index and its own
conditioning rows. ``assemble`` lays the rows of any set of lanes side by side (unconditional
rows of the CFG lanes first, then every lane's conditional row, as diffusers'
``torch.cat([x] * 2)`` does) with one timestep per row, so lanes at different steps, with
different samplers and guidance, share one denoiser call. Nothing here knows a model family:
what the rows mean is the family's (``families/``).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from gouache.generation.families import Rows
from gouache.generation.loop.batch import BatchItem, LaneSpec
from gouache.generation.loop.conditioning import Conditioning, annealed, guidance_scale
from gouache.generation.models import LoadedModel

__all__ = ["STATELESS_SCHEDULERS", "Lane", "advance_lanes", "assemble", "begin_index", "new_lane",
           "row_positions", "start_from_image"]

_CADS_SEED = 0x5EED_CAD5  # CADS noise must not reuse the latents' random stream


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
    cfg_scale: float | None = None  # the family's CFG scale for spec.guidance (None: as given)
    i: int = 0  # the next entry of scheduler.timesteps (UNet calls made)
    steps_done: int = 0  # sampler steps, ticked as diffusers' progress bar ticks
    frames: list[Any] = field(default_factory=list)
    begin: int | None = None  # image-to-image: the first entry of timesteps (None: from noise)
    generator: torch.Generator | None = None  # image-to-image: draws the lane's first latents

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

    def guidance(self, num_train_timesteps: int) -> float:
        """This step's CFG scale: the lane's guidance, or 1 outside its guidance interval."""
        level = float(self.timestep) / num_train_timesteps
        scale = self.spec.guidance if self.cfg_scale is None else self.cfg_scale
        return guidance_scale(scale, self.item.guidance_interval, level)

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
        "FlowMatchEulerDiscreteScheduler",
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
    start: torch.Tensor | None = None,
    begin: int | None = None,
) -> Lane:
    """Lane ``index`` of ``item``: its seed's generator, a private copy of the scheduler.

    Adapted from StableDiffusionPipeline.prepare_latents and prepare_extra_step_kwargs. The
    seed's noise is always drawn, so the generator is where the pipeline's would be; ``start``
    (an interpolation's mixed noise) replaces it as the initial noise, as ``latents=`` does.
    With ``begin`` (image-to-image) the lane starts at that timestep index and draws nothing
    yet: its latents come from ``start_from_image`` once its image is encoded.
    """
    generator = torch.Generator("cpu").manual_seed(item.image_seed(index))
    scheduler = private_scheduler(template)
    if begin is not None:
        if hasattr(scheduler, "set_begin_index"):  # as StableDiffusionImg2ImgPipeline.get_timesteps
            scheduler.set_begin_index(begin)
        noise = torch.empty(0, device=model.device, dtype=model.dtype)
    else:
        noise = randn_tensor(shape, generator=generator, device=model.device, dtype=model.dtype)
    if start is not None:
        noise = start.to(device=model.device, dtype=model.dtype)
    params = set(inspect.signature(scheduler.step).parameters)
    step_kwargs: dict[str, Any] = {"eta": 0.0} if "eta" in params else {}
    if "generator" in params:
        step_kwargs["generator"] = generator
    cads = None
    if spec.diversify:
        cads = torch.Generator("cpu").manual_seed(item.image_seed(index) ^ _CADS_SEED)
    if begin is not None:
        return Lane(item=item, spec=spec, index=index, user=user, cond=cond, cfg=cfg,
                    scheduler=scheduler, step_kwargs=step_kwargs, latents=noise,
                    cads_generator=cads, i=begin, begin=begin, generator=generator)  # fmt: skip
    return Lane(item=item, spec=spec, index=index, user=user, cond=cond, cfg=cfg,
                scheduler=scheduler, step_kwargs=step_kwargs,
                latents=model.family.initial_latents(model, noise, scheduler),
                cads_generator=cads, cfg_scale=model.family.cfg_scale(model, spec))  # fmt: skip


def begin_index(steps: int, denoise: float, order: int) -> int:
    """Where an image-to-image lane of ``steps`` starts in its scheduler's timesteps.

    As diffusers' ``StableDiffusionImg2ImgPipeline.get_timesteps``: ``int(steps * denoise)``
    steps are run (at least one: the caller refuses fewer), the first ``steps - that`` skipped.
    """
    init_timestep = min(int(steps * denoise), steps)
    return max(steps - init_timestep, 0) * order


def start_from_image(lane: Lane, model: LoadedModel, mean: torch.Tensor, std: torch.Tensor) -> None:
    """An image-to-image lane's first latents: its image's posterior sampled and noised.

    Adapted from ``StableDiffusionImg2ImgPipeline.prepare_latents`` (and SDXL's): the VAE
    posterior sample draws from the lane's generator first, then the noise, and the lane's own
    scheduler noises the sample to its first timestep (``add_noise``). ``mean``/``std`` are the
    posterior of the item's image, encoded once for all its lanes (``encode_posterior``).
    """
    generator, begin = lane.generator, lane.begin
    assert generator is not None and begin is not None, "an image-to-image lane"
    eps = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    sample = model.family.scale(model, (mean + std * eps).to(model.dtype))
    noise = randn_tensor(sample.shape, generator=generator, device=model.device, dtype=model.dtype)
    first = lane.scheduler.timesteps[begin : begin + 1]
    lane.latents = lane.scheduler.add_noise(sample.to(model.device), noise, first)


def private_scheduler(template: Any) -> Any:
    """A lane's own scheduler: multistep solvers keep past predictions and a step counter."""
    return copy.deepcopy(template)


def assemble(lanes: list[Lane], num_train_timesteps: int) -> Rows:
    """Lay the rows of ``lanes`` out for one call: [uncond of CFG lanes..., cond of all...]."""
    negative: list[tuple[Lane, dict[str, torch.Tensor]]] = []
    positive: list[tuple[Lane, dict[str, torch.Tensor]]] = []
    for lane in lanes:
        cond = lane.cond
        if lane.cads_generator is not None:
            # CADS per lane: each lane's noise level is its own timestep's (conditioning.py).
            level = float(lane.timestep) / num_train_timesteps
            cond = annealed(cond, level, [lane.cads_generator])
        rows = cond.rows(lane.cfg)
        if lane.cfg:
            negative.append((lane, rows[0]))
        positive.append((lane, rows[-1]))
    parts = negative + positive
    device = lanes[0].latents.device
    control_rows = [r for r, (lane, _) in enumerate(parts) if lane.cond.control is not None]
    controlled = [parts[r][0] for r in control_rows]
    return Rows(
        sample=torch.cat([_model_input(lane) for lane, _ in parts]),
        # Every row's own timestep; float32 holds the schedulers' int and float steps exactly.
        timesteps=torch.stack([lane.timestep.to(torch.float32).reshape(()) for lane, _ in parts]).to(device),
        inputs={name: torch.cat([inputs[name] for _, inputs in parts]) for name in parts[0][1]},
        control_rows=torch.tensor(control_rows, device=device) if control_rows else None,
        control=torch.cat([lane.cond.control for lane in controlled]) if controlled else None,
        control_scale=torch.tensor([float(lane.item.control_scale) for lane in controlled],
                                   device=device) if controlled else None,  # fmt: skip
        **lora_rows([lane.item.loras for lane, _ in parts], device),
    )


def lora_rows(per_row: list[tuple[tuple[str, float], ...]], device: torch.device) -> dict[str, Any]:
    """``Rows.loras`` (every LoRA any row uses) and ``Rows.lora_scales`` (rows x LoRAs)."""
    names = list(dict.fromkeys(name for loras in per_row for name, _ in loras))
    if not names:
        return {}
    scales = torch.zeros(len(per_row), len(names))
    for r, loras in enumerate(per_row):
        for name, scale in loras:
            scales[r, names.index(name)] += scale
    return {"loras": tuple(names), "lora_scales": scales.to(device)}
def _model_input(lane: Lane) -> torch.Tensor:
    """The lane's latents as its scheduler scales them for the denoiser (flow-matching
    schedulers have no ``scale_model_input``: the latents go in as they are)."""
    scale = getattr(lane.scheduler, "scale_model_input", None)
    return lane.latents if scale is None else scale(lane.latents, lane.timestep)


def row_positions(lanes: list[Lane]) -> tuple[list[int], list[int | None]]:
    """Where ``assemble`` put each lane's conditional and unconditional rows."""
    offset = sum(1 for lane in lanes if lane.cfg)
    negatives: list[int | None] = []
    seen = 0
    for lane in lanes:
        negatives.append(seen if lane.cfg else None)
        seen += lane.cfg
    return [offset + r for r in range(len(lanes))], negatives
