"""The denoising loop: lanes join and leave a running batch at step boundaries.

This is gouache's only denoising loop. A ``RunningBatch`` keeps a set of lanes (one per image)
that share only a ``ShapeKey`` (model and latent size); every ``step()`` makes ONE denoiser call
over the rows of every running lane, whatever step, sampler, guidance (and guidance interval),
CFG or ControlNet each has, asking the model's family (``families/``) for everything
family-specific, then
decodes the lanes that finished in it (in VAE calls of ``decode_chunk`` lanes) and hands back
every item whose images are all done. New items are ``admit``-ted at any time and start at the
next step; who gets rows when the row budget is full is decided every step by deficit round
robin per user charged in image-steps (``fairness.FairShare``): a lane left out of a step is
paused, its state kept, and resumes.

Items that are tiles of one canvas (``BatchItem.region``: a tiled upscale) step together and,
after every step, have their overlapping latents merged on the canvas and written back
(``regions.py``, MultiDiffusion), so the tiles agree where they overlap as they denoise.

Results equal each item generated alone (tests/unit/generation/test_running.py: max abs
difference <= 1e-4 on [0, 1] images) and diffusers' own pipelines (test_parity.py).
``Engine.generate`` is this loop with every item admitted at once and run to the end.

Out of memory in a step, the step is retried in halves of its lanes down to single lanes, and
``row_budget`` shrinks to what fitted; lanes that fitted before go on, a lone lane that still
does not fit fails its item alone with ``ResourceExhausted``. Sticky CUDA errors raise
``FatalDeviceError``: the process must restart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gouache import messages
from gouache.errors import InvalidRequest, ResourceExhausted
from gouache.generation.loop.batch import BatchItem, ItemResult, LaneSpec, ShapeKey, split_in_halves
from gouache.generation.loop.conditioning import Conditioning
from gouache.generation.loop.decoding import decode_each
from gouache.generation.loop.device import (
    Fault,
    ShouldStop,
    free_device_memory,
    is_out_of_memory,
    sticky_device_errors,
)
from gouache.generation.loop.fairness import FairShare
from gouache.generation.loop.lanes import (
    Lane,
    advance_lanes,
    assemble,
    begin_index,
    new_lane,
    row_positions,
    start_from_image,
)
from gouache.generation.loop.regions import agree, canvas, check_region, finished_canvases, in_step
from gouache.generation.loop.samplers import timed_scheduler
from gouache.generation.loras.apply import item_loras
from gouache.generation.models import LoadedModel, ModelRegistry

__all__ = ["RunningBatch", "StepStats", "to_pil"]


@dataclass
class StepStats:
    """What the last ``step()`` did (for progress, metrics and the throughput benchmark)."""

    rows: int = 0  # denoiser rows in the step (CFG lanes count twice)
    lanes: int = 0
    denoiser_calls: int = 0  # more than one only after an OOM split
    started: list[str] = field(default_factory=list)  # items whose first lane started
    decoded: int = 0  # lanes decoded after the UNet call
    frame_seconds: float = 0.0
    image_steps: dict[str, int] = field(default_factory=dict)  # per user: lanes stepped


@dataclass
class _Item:
    item: BatchItem
    spec: LaneSpec
    user: str
    images: list[Any]
    frames: list[list[Any]]
    left: int  # lanes not yet decoded
    started: bool = False


class RunningBatch:
    """A running batch of lanes for one ``ShapeKey``: ``admit`` -> ``step`` ... -> results."""

    def __init__(
        self,
        registry: ModelRegistry,
        shape: ShapeKey,
        *,
        row_budget: int = 32,
        decode_chunk: int = 2,
        fault: Fault | None = None,
        postprocess: Any = None,
        learned: dict[ShapeKey, int] | None = None,
    ) -> None:
        if shape.width % 8 or shape.height % 8:
            raise InvalidRequest(messages.size_not_multiple_of_8(shape.width, shape.height))
        self.shape = shape
        self.model = registry.get(shape.model)
        self.row_budget = max(1, row_budget)
        self.decode_chunk = max(1, decode_chunk)
        self.stats = StepStats()
        self._fault = fault
        self._learned = learned  # the engine's memory of budgets per shape, updated on a shrink
        self._to_pictures = postprocess  # None: PIL images (parity tests keep floats)
        self._items: dict[str, _Item] = {}
        self._share = FairShare()
        self._lanes: list[Lane] = []  # admitted and still denoising (running or paused)
        self._finished: list[Lane] = []  # denoised, waiting for their decode chunk
        self._cancelled: set[str] = set()
        self._templates: dict[tuple[str, int], Any] = {}
        self._to_start: list[str] = []  # image-to-image items whose image awaits its encode

    # -- feeding ---------------------------------------------------------------------------

    def rows_for(self, item: BatchItem, spec: LaneSpec) -> int:
        """Denoiser rows ``item`` takes per step once all its lanes run."""
        return item.count * (2 if self.cfg(spec) else 1)

    @property
    def rows(self) -> int:
        """Denoiser rows every admitted lane still denoising would take (running or paused)."""
        return sum(lane.rows for lane in self._lanes)

    @property
    def free_rows(self) -> int:
        """Rows a newcomer could take at the next step (what the worker claims up to)."""
        return max(0, self.row_budget - self.rows)

    @property
    def item_ids(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        """Items admitted and not yet handed back."""
        return len(self._items)

    def admit(
        self,
        item: BatchItem,
        spec: LaneSpec,
        user: str | None = None,
        *,
        cond: Conditioning | None = None,
        starts: list[torch.Tensor] | None = None,
    ) -> None:
        """Add ``item``: its lanes start at the next ``step()`` that has rows for them.

        A bad request (unknown sampler or pipeline, /depth without a map or ControlNet) raises
        the user's error here, before any work, and leaves the batch as it was. ``cond`` (the
        item's conditioning, ``encode`` otherwise) and ``starts`` (each image's initial noise,
        its seed's otherwise) let an interpolation carry mixed embeddings and noise.
        """
        if item.item_id in self._items:
            raise ValueError(f"item {item.item_id!r} is already in the running batch")
        model, family = self.model, self.model.family
        self.check(spec)
        if spec.pipeline == "depth" and item.control_image is None:
            raise InvalidRequest(messages.depth_image_required())
        template = self._template(spec)
        cfg = self.cfg(spec)
        loras = item_loras(model, item.loras)  # loads them; a bad file fails this item here
        if cond is None:
            with loras:  # _encode_prompt runs in inference mode
                cond = self._encode_prompt(item, spec, cfg)
        user = user if user is not None else item.item_id
        shape = family.latent_shape(model, self.shape.width, self.shape.height)
        if item.region is not None:
            check_region(item.region, self.shape.width, self.shape.height, shape)
        self._items[item.item_id] = _Item(
            item, spec, user, [None] * item.count, [[] for _ in range(item.count)], item.count
        )
        begin = None
        if item.init_image is not None:  # image-to-image: starts later, from its encoded image
            begin = begin_index(spec.steps, spec.denoise, template.order)
            self._to_start.append(item.item_id)
        for index in range(item.count):
            start = starts[index] if starts is not None else None
            self._lanes.append(
                new_lane(model, item, spec, index, user, cond, cfg, template, shape, start, begin)
            )

    @torch.inference_mode()
    def _encode_prompt(self, item: BatchItem, spec: LaneSpec, cfg: bool) -> Conditioning:
        """The text encoders for one item; out of memory, retried once after freeing the
        cache, then ``ResourceExhausted`` for this item alone (the batch goes on)."""
        model = self.model
        for _attempt in (1, 2):
            try:
                with sticky_device_errors():
                    self._check_fault("prompt", [item.item_id])
                    return model.family.prompt(model, [item], spec, cfg, self.shape.width,
                                               self.shape.height)  # fmt: skip
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                free_device_memory()
        raise ResourceExhausted(messages.out_of_memory_admit(item.count))

    def check(self, spec: LaneSpec) -> None:
        """The user's errors every item of ``spec`` would meet (sampler, pipeline, steps)."""
        if spec.pipeline not in ("txt2img", "depth"):
            raise InvalidRequest(messages.unknown_pipeline(spec.pipeline))
        if spec.steps < 1:
            raise InvalidRequest(messages.steps_too_few(spec.steps))
        if not 0.0 < spec.denoise <= 1.0:
            raise InvalidRequest(messages.image_strength_out_of_range(spec.denoise))
        if int(spec.steps * spec.denoise) < 1:
            raise InvalidRequest(messages.image_strength_too_low(spec.denoise, spec.steps))
        self.model.family.check(self.model, spec)  # an unknown or foreign sampler raises here
        self._template(spec)

    def cancel(self, item_id: str) -> None:
        """Drop ``item_id`` at the next step; it comes back from ``step()`` as cancelled."""
        if item_id in self._items:
            self._cancelled.add(item_id)

    # -- running ---------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, should_stop: ShouldStop | None = None) -> list[ItemResult]:
        """One denoiser call over every running lane, then a decode chunk; returns retired items.

        Retired: items whose every image is decoded (``ok``), cancelled ones, and ones that
        failed alone (out of memory even by themselves). Raises ``FatalDeviceError`` on a sticky
        device error: the process must restart.
        """
        with sticky_device_errors():
            return self._step(should_stop)

    def run(self, should_stop: ShouldStop | None = None) -> list[ItemResult]:
        """Step until every admitted item is back (tests, benchmarks, request-style use)."""
        out: list[ItemResult] = []
        while self._items:
            out += self.step(should_stop)
        return out

    def progress(self) -> dict[str, tuple[int, int]]:
        """Per item: (sampler steps done by its slowest image, steps)."""
        done: dict[str, int] = {}
        for lane in [*self._lanes, *self._finished]:
            item_id = lane.item.item_id
            steps = lane.steps_done + (lane.begin or 0) // lane.scheduler.order  # skipped ones
            done[item_id] = min(done.get(item_id, steps), steps)
        return {
            item_id: (done.get(item_id, 0) if entry.started else 0, entry.spec.steps)
            for item_id, entry in self._items.items()
        }

    def _step(self, should_stop: ShouldStop | None) -> list[ItemResult]:
        self.stats = StepStats()
        retired = self._drop_cancelled(should_stop)
        retired += self._start_images()
        chosen = self._choose()
        waiting_decode = len(self._finished)
        if chosen:
            failed = self._denoise(chosen)
            retired += [self._fail(item_id) for item_id in failed]
        # Keep up with the lanes that finished in this step (a wave of lanes that started
        # together finishes together): decodes never pile up behind the denoising, which would
        # hold back those users' results and their next requests. Once nothing denoises, all.
        finished_now = len(self._finished) - waiting_decode
        due = finished_now if self._lanes else len(self._finished)
        retired += self._decode_canvases()
        for _ in range(max(1, -(-due // self.decode_chunk))):
            retired += self._decode_chunk()
        return retired

    def _choose(self) -> list[Lane]:
        """This step's lanes: the fair share of the row budget (never none while lanes wait).

        Within a user, lanes that have started come first (in admission order), so a user's
        requests finish in order and few lanes sit paused half-done.
        """
        ordered = in_step(sorted(self._lanes, key=lambda lane: lane.steps_done == 0))  # stable
        chosen = self._share.select(
            ordered, self.row_budget, user=lambda lane: lane.user, rows=lambda lane: lane.rows
        )
        for lane in chosen:
            entry = self._items[lane.item.item_id]
            if not entry.started:
                entry.started = True
                self.stats.started.append(lane.item.item_id)
        return chosen

    def _denoise(self, lanes: list[Lane]) -> list[str]:
        """Noise predictions for ``lanes`` in chunks of at most ``row_budget`` rows, then one
        scheduler step per lane; returns the items that do not fit even alone."""
        predictions: dict[int, torch.Tensor] = {}
        failed: list[str] = []
        for chunk in _chunks(lanes, self.row_budget):
            self._predict_splitting(chunk, predictions, failed)
        self.stats.lanes = len(lanes)
        stepped = [lane for lane in lanes if lane.item.item_id not in failed]
        for lane in stepped:
            self.stats.image_steps[lane.user] = self.stats.image_steps.get(lane.user, 0) + 1
        self._share.charge([lane.user for lane in stepped])
        frames = advance_lanes(stepped, predictions, batched=self.model.batched_steps)
        agree([*self._lanes, *self._finished], stepped)  # tiles of one canvas (regions.py)
        for lane in stepped:
            if lane.finished:
                self._lanes.remove(lane)
                self._finished.append(lane)
        if frames:
            self._keep_frames(frames)
        return list(dict.fromkeys(failed))

    def _predict_splitting(
        self, lanes: list[Lane], out: dict[int, torch.Tensor], failed: list[str]
    ) -> None:
        try:
            self._check_fault("denoiser", lanes)
            out.update(self._predict(lanes))
            return
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_device_memory()
        rows = sum(lane.rows for lane in lanes)
        if len(lanes) == 1:
            failed.append(lanes[0].item.item_id)
            return
        self.row_budget = max(1, min(self.row_budget, rows // 2))
        if self._learned is not None:
            self._learned[self.shape] = self.row_budget
        for half in split_in_halves(lanes):
            self._predict_splitting(half, out, failed)

    def _predict(self, lanes: list[Lane]) -> dict[int, torch.Tensor]:
        """The one denoiser call (the family's) and the guided prediction per lane.

        Adapted from steps 8.2-8.5 of diffusers' StableDiffusionPipeline.__call__, with a
        timestep per row and the guidance scale (and its interval) per lane.
        """
        model = self.model
        num_train_timesteps = model.scheduler_config["num_train_timesteps"]
        rows = assemble(lanes, num_train_timesteps)
        noise_pred = model.family.predict(model, rows)
        self.stats.rows += len(rows.sample)
        self.stats.denoiser_calls += 1
        out = {}
        for lane, pos, neg in zip(lanes, *row_positions(lanes), strict=True):
            text = noise_pred[pos : pos + 1]
            if neg is not None:
                uncond = noise_pred[neg : neg + 1]
                text = uncond + lane.guidance(num_train_timesteps) * (text - uncond)
            out[id(lane)] = text
        return out

    def _start_images(self) -> list[ItemResult]:
        """Encode the images of newly admitted image-to-image items (``decode_chunk`` per VAE
        call) and start their lanes; out of memory, a tiled VAE, then those items fail alone."""
        waiting = [item_id for item_id in self._to_start if item_id in self._items]
        self._to_start = []
        retired: list[ItemResult] = []
        started: list[Lane] = []
        model = self.model
        for at in range(0, len(waiting), self.decode_chunk):
            chunk = waiting[at : at + self.decode_chunk]
            pixels = torch.cat([self._pixels(self._items[i].item) for i in chunk])
            try:
                mean, std = self._encode(chunk, pixels, tiled=False)
            except torch.OutOfMemoryError:
                free_device_memory()
                try:
                    mean, std = self._encode(chunk, pixels, tiled=True)
                except torch.OutOfMemoryError:
                    free_device_memory()
                    retired += [self._fail(i) for i in chunk]
                    continue
            rows = {item_id: r for r, item_id in enumerate(chunk)}
            for lane in self._lanes:
                r = rows.get(lane.item.item_id)
                if r is not None:
                    start_from_image(lane, model, mean[r : r + 1], std[r : r + 1])
                    started.append(lane)
        agree(self._lanes, started, start=True)  # tiles of one canvas start from one canvas
        return retired

    def _encode(
        self, item_ids: list[str], pixels: torch.Tensor, *, tiled: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._fault is not None:
            self._fault("encode", item_ids)
        return self.model.family.encode_posterior(self.model, pixels, tiled=tiled)

    def _pixels(self, item: BatchItem) -> torch.Tensor:
        """The item's image at the batch's size in [-1, 1], as ``VaeImageProcessor.preprocess``."""
        from diffusers.image_processor import VaeImageProcessor

        assert item.init_image is not None
        processor = VaeImageProcessor(vae_scale_factor=self.model.vae_scale_factor)
        return processor.preprocess(item.init_image.convert("RGB"), height=self.shape.height,
                                    width=self.shape.width)  # fmt: skip

    def _decode_chunk(self) -> list[ItemResult]:
        """Decode up to ``decode_chunk`` finished lanes; hand back items now complete.

        Lanes whose item has the fewest images left go first, so a one-image job is handed back
        the step its lane finishes instead of queueing behind a four-image job's decodes.
        """
        self._finished.sort(key=lambda lane: self._items[lane.item.item_id].left)  # stable
        chunk = [lane for lane in self._finished if lane.item.region is None][: self.decode_chunk]
        self._finished = [lane for lane in self._finished if lane not in chunk]  # tiles: below
        if not chunk:
            return []
        decoded = decode_each(self.model, [lane.latents for lane in chunk], len(chunk),
                              check=self._fault_check("decode", chunk))  # fmt: skip
        retired = [self._fail(i) for i in dict.fromkeys(
            lane.item.item_id for lane, image in zip(chunk, decoded, strict=True) if image is None
        ) if i in self._items]  # fmt: skip
        kept = [(lane, image) for lane, image in zip(chunk, decoded, strict=True)
                if image is not None and lane.item.item_id in self._items]  # fmt: skip
        if not kept:
            return retired
        chunk = [lane for lane, _ in kept]
        return retired + self._place(chunk, self._postprocess(torch.cat([image for _, image in kept])))

    def _decode_canvases(self) -> list[ItemResult]:
        """Canvases whose tiles have all finished: one decode of the whole picture (its
        latents merged, ``regions.canvas``), each tile's image its crop of it; a canvas that
        does not fit even with a tiled VAE fails its items."""
        retired: list[ItemResult] = []
        for group in finished_canvases(self._finished, self._lanes):
            self._finished = [lane for lane in self._finished if lane not in group]
            latents, boxes = canvas(group)
            [image] = decode_each(self.model, [latents], 1, check=self._fault_check("decode", group[:1]))
            if image is None:
                items = dict.fromkeys(lane.item.item_id for lane in group)
                retired += [self._fail(item_id) for item_id in items if item_id in self._items]
                continue
            crops = torch.cat([image[..., top:bottom, left:right] for left, top, right, bottom in boxes])
            retired += self._place(group, self._postprocess(crops))
        return retired

    def _place(self, lanes: list[Lane], images: list[Any]) -> list[ItemResult]:
        """Decoded ``images`` into their lanes' items; the items now complete, handed back."""
        retired: list[ItemResult] = []
        self.stats.decoded += len(lanes)
        for lane, image in zip(lanes, images, strict=True):
            entry = self._items.get(lane.item.item_id)
            if entry is None:
                continue
            entry.images[lane.index] = image
            if lane.item.frames_every:
                entry.frames[lane.index] = [*lane.frames, image]
            entry.left -= 1
            if entry.left == 0:
                del self._items[lane.item.item_id]
                frames = entry.frames if lane.item.frames_every else []
                retired.append(ItemResult(lane.item.item_id, images=entry.images, frames=frames))
        return retired

    def _keep_frames(self, lanes: list[Lane]) -> None:
        """Decode a denoising frame for lanes that want one at this step, ``decode_chunk`` at
        a time; a frame that does not fit even alone is dropped (the job goes on)."""
        start = time.perf_counter()
        decoded = decode_each(self.model, [lane.latents for lane in lanes], self.decode_chunk,
                              frames=True, check=self._fault_check("frames", lanes))  # fmt: skip
        kept = [(lane, frame) for lane, frame in zip(lanes, decoded, strict=True) if frame is not None]
        if kept:
            pictures = self._postprocess(torch.cat([frame for _, frame in kept]))
            for (lane, _), picture in zip(kept, pictures, strict=True):
                lane.frames.append(picture)
        self.stats.frame_seconds += time.perf_counter() - start

    def _postprocess(self, image: torch.Tensor) -> list[Any]:
        """Decoded [-1, 1] tensors to PIL images, as diffusers' VaeImageProcessor does (or
        what the ``postprocess`` given at construction makes of them)."""
        return list((self._to_pictures or to_pil)(image, self.model))

    # -- bookkeeping -----------------------------------------------------------------------

    def _drop_cancelled(self, should_stop: ShouldStop | None) -> list[ItemResult]:
        if should_stop is not None:
            self._cancelled |= {item_id for item_id in self._items if should_stop(item_id)}
        if not self._cancelled:
            return []
        gone, self._cancelled = self._cancelled, set()
        self._drop(gone)
        return [ItemResult(item_id, cancelled=True) for item_id in gone]

    def _fail(self, item_id: str) -> ItemResult:
        entry = self._items[item_id]
        self._drop({item_id})
        shape = self.shape
        message = messages.out_of_memory_alone(entry.item.count, shape.width, shape.height,
                                               entry.spec.steps)  # fmt: skip
        return ItemResult(item_id, error=ResourceExhausted(message))

    def _drop(self, item_ids: set[str]) -> None:
        self._lanes = [lane for lane in self._lanes if lane.item.item_id not in item_ids]
        self._finished = [lane for lane in self._finished if lane.item.item_id not in item_ids]
        for item_id in item_ids:
            self._items.pop(item_id, None)

    def cfg(self, spec: LaneSpec) -> bool:
        """Whether lanes of ``spec`` take an unconditional row (the family's rule)."""
        return self.model.family.uses_cfg(self.model, spec)

    def _template(self, spec: LaneSpec) -> Any:
        key = (spec.sampler, spec.steps)
        if key not in self._templates:
            model, shape = self.model, self.shape
            schedule = model.family.schedule(model, spec.steps, shape.width, shape.height)
            self._templates[key] = timed_scheduler(
                spec.sampler, model.scheduler_config, spec.steps, model.device, **schedule
            )
        return self._templates[key]

    def _check_fault(self, stage: str, lanes: Sequence[Lane] | Sequence[str]) -> None:
        if self._fault is not None:
            self._fault(stage, [x if isinstance(x, str) else x.item.item_id for x in lanes])

    def _fault_check(self, stage: str, lanes: Sequence[Lane]) -> Any:
        """The fault seam for a decode: called with the indices of the lanes about to decode."""
        if self._fault is None:
            return None
        return lambda indices: self._check_fault(stage, [lanes[i] for i in indices])


def _chunks(lanes: list[Lane], budget: int) -> list[list[Lane]]:
    """Consecutive groups of lanes with at most ``budget`` rows each (one lane at least)."""
    out: list[list[Lane]] = [[]]
    rows = 0
    for lane in lanes:
        if out[-1] and rows + lane.rows > budget:
            out.append([])
            rows = 0
        out[-1].append(lane)
        rows += lane.rows
    return out


def to_pil(image: torch.Tensor, model: LoadedModel) -> list[Any]:
    """Decoded [-1, 1] tensors to PIL images, as diffusers' VaeImageProcessor does."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=model.vae_scale_factor)
    return list(processor.postprocess(image, output_type="pil"))
