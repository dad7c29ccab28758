"""Throughput benchmark: sequential diffusers vs request-level vs step-level batching.

    .venv/bin/python benchmarks/throughput.py           # full CPU run (builtin:demo), < 10 min
    .venv/bin/python benchmarks/throughput.py --quick   # CI: < 60 s on 2 cores
    .venv/bin/python benchmarks/throughput.py --gpu     # prepared, CUDA only (see gpu_models)
    .venv/bin/python benchmarks/throughput.py --threads 2 --only closed --compile
        # gouache's engines with ``speed.compile = "on"`` (a long-running worker's setting),
        # every bucket compiled before the clock starts; diffusers stays eager
    .venv/bin/python benchmarks/throughput.py --family flux          # small Flux.1 dev, < 15 min
    .venv/bin/python benchmarks/throughput.py --family flux --quick --only burst,poisson80  # CI
    .venv/bin/python benchmarks/throughput.py --gpu --family flux    # prepared, CUDA only:
        # the Flux.1-dev transformer architecture (benchmarks/configs/), random bf16 weights,
        # at 512x512 and 1024x1024; ``--dry-run`` builds it at depth 1 on the CPU and stops

Contenders, run in one process on the same model, in rotating order per scenario:
(a) ``sequential``: plain diffusers ``StableDiffusionPipeline`` (ControlNet pipeline for depth;
    ``FluxPipeline`` for ``--family flux``, ``ZImagePipeline`` for ``z-image``) one request at a time, FIFO, what A1111/ComfyUI bots do; (b) ``request``: ``Engine.generate``
    on batches of one ``BatchKey`` (<= 32 images, fair order by user as the queue claims), a
    newcomer waits for the batch in flight (``batching.mode = "request"``); (c) ``step``:
    ``RunningBatch`` (row budget 64 = 32 CFG lanes; Flux: 32 rows = 32 lanes, its guidance is an
    embedding, not a row), newcomers join at the next step.

``--family flux`` runs the same scenarios on a small Flux.1 dev (``bench_flux_folder``: the parity
tests' tiny folder with 2 double + 4 single blocks at hidden 32 and an 8/16-channel VAE, so a
denoising frame's decode weighs against a transformer row about as on Flux.1-dev), at 32x32 (64
image tokens beside the 512 T5 tokens every prompt is padded to, as ``FluxPipeline`` does): a
32-row call costs ~12 ms a row on one core, so it measures compute, not only Python overhead.
Samplers are the flow-matching ones, there is no /depth.

Arrivals are simulated in-process on a clock that runs with the wall clock while work runs and
jumps over idle time to the next arrival, so every contender sees the same arrival times.
Wait = submission to the request's first UNet (transformer) call, also given in the contender's
own median call times (``wait_p95_steps``); slowdown = latency over the same request
generated alone by ``Engine.generate``; Jain's index is over users' image-steps received;
GIF tax = share of the run spent decoding denoising frames. No figure here is invented: the
JSON holds what this run measured, and the machine it ran on.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# benchmarks/queue.py shadows the stdlib ``queue`` (torch imports it): drop this folder from
# the import path, then add the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gouache.config import Speed, builtin_demo_spec  # noqa: E402
from gouache.generation.loop.batch import BatchItem, BatchKey, ShapeKey  # noqa: E402
from gouache.generation.loop.engine import Engine  # noqa: E402
from gouache.generation.loop.fairness import jain_index  # noqa: E402
from gouache.generation.loop.running import RunningBatch  # noqa: E402
from gouache.generation.loop.samplers import make_scheduler  # noqa: E402
from gouache.generation.loop.speed import SpeedOptions, resolve_speed  # noqa: E402
from gouache.generation.models import ModelRegistry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "builtin:demo"
SIZE = 32
CONTENDERS = ("sequential", "request", "step")
# dpmpp-2m-karras is left out of the mix: plain diffusers (contender a) crashes on it on this
# model's schedule (IndexError, see samplers.timed_scheduler); gouache's engines run it.
SAMPLERS = ("ddim", "euler-a", "dpmpp-2m", "unipc")
PROMPTS = ("a large red circle in the center on a plain blue background",
           "a small green star left of a large yellow square on a striped red background",
           "a small blue triangle in the top left on a plain white background")  # fmt: skip


@dataclass(frozen=True)
class Profile:
    users: int  # the burst's and the closed loop's users
    closed_seconds: float  # closed loop: every user resubmits at once, for this long
    poisson_requests: int
    heavy_seconds: float  # one heavy user (4 images) beside light ones, for this long
    uniform_steps: int
    mixed_steps: tuple[int, ...]
    light_users: int = 10
    light_outstanding: int = 4  # light users stay backlogged, so shares are contended
    row_budget: int = 64  # step-level rows (32 CFG lanes); request-level: half as many images
    uniform_guidance: float = 2.0  # the demo model's default (benchmarks/results/demo_quality)
    # > 0: the closed and heavy horizons are this many offline batch-32 times as measured here,
    # so those scenarios do the same work on a fast, slow or loaded machine.
    horizon_batches: float = 0.0


FULL = Profile(32, 6.0, 16, 6.0, 20, (4, 20, 30, 50), horizon_batches=2.0)
QUICK = Profile(6, 1.5, 5, 1.5, 4, (2, 4, 6, 8), light_users=3, row_budget=12, horizon_batches=3.0)
# Flux: one row per image (distilled guidance), so 32 rows are 32 lanes; 3.5 is FluxPipeline's
# default guidance. Three batch times for the closed and heavy horizons: at two, a load spike on
# a shared machine left the first 32-lane wave unfinished inside the horizon.
FLUX_FULL = replace(FULL, row_budget=32, uniform_guidance=3.5, horizon_batches=3.0)
FLUX_QUICK = replace(QUICK, row_budget=6, uniform_guidance=3.5)


@dataclass(frozen=True)
class Family:
    """What the workloads take on one model family."""

    name: str
    samplers: tuple[str, ...]  # the mixed workload's
    uniform_sampler: str
    depth: bool  # the mixed workload has /depth rows (the model has a depth ControlNet)
    cfg_above: float | None  # guidance above this adds an unconditional row; None: never
    no_cfg_guidance: float  # the mixed workload's "guidance off" value

    def rows(self, guidance: float) -> int:
        """Denoiser rows per image at ``guidance``."""
        return 2 if self.cfg_above is not None and guidance > self.cfg_above else 1

    @property
    def max_rows(self) -> int:
        return 1 if self.cfg_above is None else 2


SD = Family("sd", SAMPLERS, "ddim", depth=True, cfg_above=1.0, no_cfg_guidance=1.0)
FLOW_SAMPLERS = ("flow-euler", "flow-euler-karras")
FLUX = Family("flux", FLOW_SAMPLERS, "flow-euler", depth=False, cfg_above=None, no_cfg_guidance=1.0)
Z_IMAGE = Family("z-image", FLOW_SAMPLERS, "flow-euler", depth=False, cfg_above=0.0, no_cfg_guidance=0.0)
FAMILIES = {f.name: f for f in (SD, FLUX, Z_IMAGE)}
FAMILY = SD  # set by main


@dataclass
class Req:
    rid: str
    user: str
    steps: int
    sampler: str
    guidance: float
    depth: bool = False
    gif: bool = False
    count: int = 1
    seed: int = 0
    prompt: str = PROMPTS[0]
    arrival: float = 0.0
    first_step: float | None = None
    done: float | None = None

    @property
    def signature(self) -> tuple:
        return (self.steps, FAMILY.rows(self.guidance), self.depth, self.gif, self.count)


class Clock:
    """Wall time while work runs; ``skip_to`` jumps over idle time to the next arrival."""

    def __init__(self) -> None:
        self.offset = -time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() + self.offset

    def skip_to(self, t: float) -> None:
        self.offset += max(0.0, t - self.now())


@dataclass
class Meter:
    """UNet calls, rows and durations (forward hooks), image-steps per user, frame-decode time.

    The engines' hook goes on ``LoadedModel.denoiser_call`` (the UNet itself, or the
    ``BucketedUNet`` wrapper around the compiled one): a hook inside a compiled module is traced,
    and one that appends to a list changes a guard and recompiles on every call."""

    clock: Clock
    unet: list[tuple[float, int]] = field(default_factory=list)  # (time, rows) per call
    durations: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds) per call
    frame_seconds: float = 0.0
    image_steps: list[tuple[float, str, int]] = field(default_factory=list)

    def hook(self, module: torch.nn.Module) -> Any:
        def pre(_module: Any, args: tuple, kwargs: dict) -> None:
            # A UNet's ``sample``, Flux's ``hidden_states``, Z-Image's list ``x``.
            sample = args[0] if args else next(kwargs[k] for k in ("sample", "hidden_states", "x") if k in kwargs)
            rows = len(sample) if isinstance(sample, (list, tuple)) else int(sample.shape[0])
            self.unet.append((self.clock.now(), rows))

        def post(_module: Any, _args: tuple, _kwargs: dict, _out: Any) -> None:
            start = self.unet[-1][0]
            self.durations.append((start, self.clock.now() - start))

        handles = [module.register_forward_pre_hook(pre, with_kwargs=True),
                   module.register_forward_hook(post, with_kwargs=True)]  # fmt: skip
        return _Handles(handles)


class _Handles:
    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class Scenario:
    """Timed arrivals plus closed-loop users who resubmit when their request completes."""

    def __init__(self, name: str, first: list[Req], make_next: Callable[[Req], Req | None],
                 horizon: float | None = None) -> None:  # fmt: skip
        self.name, self.horizon = name, horizon
        self._heap = [(r.arrival, n, r) for n, r in enumerate(first)]
        heapq.heapify(self._heap)
        self._next, self._n = make_next, len(first)
        self.all: list[Req] = list(first)

    def due(self, now: float) -> list[Req]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def completed(self, req: Req, now: float) -> None:
        req.done = now
        follow = self._next(req)
        if follow is not None and (self.horizon is None or now < self.horizon):
            follow.arrival = now
            self._n += 1
            heapq.heappush(self._heap, (now, self._n, follow))
            self.all.append(follow)

    def over(self, now: float) -> bool:
        return self.horizon is not None and now >= self.horizon


# -- workloads and arrivals ------------------------------------------------------------------


def make_request(rng: random.Random, workload: str, profile: Profile, user: str, n: int,
                 heavy: bool = False) -> Req:  # fmt: skip
    rid = f"{user}-{n}"
    prompt = rng.choice(PROMPTS)
    if workload == "uniform":
        steps = profile.uniform_steps
        req = Req(rid, user, steps, FAMILY.uniform_sampler, profile.uniform_guidance,
                  seed=rng.randrange(1 << 30), prompt=prompt)  # fmt: skip
    else:
        # ``rng.random()`` is drawn for depth on every family, so the other draws stay the same.
        req = Req(rid, user, rng.choice(profile.mixed_steps), rng.choice(FAMILY.samplers),
                  rng.choice((2.0, 3.0, 5.0)), depth=rng.random() < 0.2 and FAMILY.depth,
                  gif=rng.random() < 0.25, seed=rng.randrange(1 << 30), prompt=prompt)  # fmt: skip
        if rng.random() < 0.2:
            req.guidance = FAMILY.no_cfg_guidance  # no CFG row (Flux: a low guidance embedding)
    if heavy:
        req.count = 4
        req.steps = max(profile.mixed_steps) if workload == "mixed" else profile.uniform_steps
    return req


def scenarios(workload: str, profile: Profile, capacity: float | None) -> list[Scenario]:
    """The arrival patterns; Poisson rates need the measured capacity (images/s)."""
    out = []

    def rng(name: str) -> random.Random:
        return random.Random(f"{workload}/{name}")

    r = rng("burst")
    out.append(Scenario("burst", [make_request(r, workload, profile, f"u{u}", 0)
                                  for u in range(profile.users)], lambda req: None))  # fmt: skip
    counts: dict[str, int] = defaultdict(int)

    def again(req: Req) -> Req:
        # Seeded by (user, n): every contender gets the same follow-ups, whatever the order.
        counts[req.user] += 1
        n = counts[req.user]
        return make_request(rng(f"closed/{req.user}/{n}"), workload, profile, req.user, n)

    r2 = rng("closed")
    first = [make_request(r2, workload, profile, f"u{u}", 0) for u in range(profile.users)]
    out.append(Scenario("closed", first, again, horizon=profile.closed_seconds))
    if capacity:
        for load in (0.5, 0.8, 0.95):
            r3, t, reqs = rng(f"poisson{load}"), 0.0, []
            for n in range(profile.poisson_requests):
                t += r3.expovariate(load * capacity)
                req = make_request(r3, workload, profile, f"u{r3.randrange(profile.users)}", n)
                req.arrival = t
                reqs.append(req)
            out.append(Scenario(f"poisson{int(load * 100)}", reqs, lambda req: None))
    r4, seq = rng("heavy"), defaultdict(int)  # type: ignore[var-annotated]

    def heavy_again(req: Req) -> Req:
        seq[req.user] += 1
        n = seq[req.user]
        r = rng(f"heavy/{req.user}/{n}")
        return make_request(r, workload, profile, req.user, n, req.user == "heavy")

    first = [make_request(r4, workload, profile, "heavy", 0, heavy=True),
             make_request(r4, workload, profile, "heavy", 100, heavy=True)]  # two outstanding
    first += [make_request(r4, workload, profile, f"light{u}", 100 * k)
              for u in range(profile.light_users) for k in range(profile.light_outstanding)]  # fmt: skip
    out.append(Scenario("heavy", first, heavy_again, horizon=profile.heavy_seconds))
    return out


# -- contenders ------------------------------------------------------------------------------


def item_for(req: Req) -> BatchItem:
    return BatchItem(req.rid, req.prompt, "", seed=req.seed, count=req.count,
                     control_image=DEPTH if req.depth else None, frames_every=1 if req.gif else 0)  # fmt: skip


def key_for(req: Req) -> BatchKey:
    return BatchKey(MODEL, "depth" if req.depth else "txt2img", SIZE, SIZE, req.steps,
                    req.sampler, req.guidance)  # fmt: skip


class TimedFramesEngine(Engine):
    """``Engine.generate`` runs a ``RunningBatch`` to the end: its per-step frame-decode time
    (``stats.frame_seconds``) goes to the meter after every step."""

    meter: Meter | None = None

    def running_batch(self, shape: ShapeKey, *, row_budget: int, decode_chunk: int) -> RunningBatch:
        batch = super().running_batch(shape, row_budget=row_budget, decode_chunk=decode_chunk)
        step, meter = batch.step, self.meter

        def timed(*args: Any, **kwargs: Any) -> Any:
            out = step(*args, **kwargs)
            if meter is not None:
                meter.frame_seconds += batch.stats.frame_seconds
            return out

        batch.step = timed  # type: ignore[method-assign]
        return batch


def run_sequential(sc: Scenario, clock: Clock, meter: Meter, ctx: dict[str, Any]) -> None:
    pipe = ctx["pipe"]
    depth_pipe = None
    if FAMILY.depth:
        from diffusers import StableDiffusionControlNetPipeline

        depth_pipe = StableDiffusionControlNetPipeline(**pipe.components, controlnet=ctx["model"].controlnet)
        depth_pipe.set_progress_bar_config(disable=True)
    queue: deque[Req] = deque()
    current: dict[str, Req] = {}
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    hooks = [meter.hook(denoiser), denoiser.register_forward_pre_hook(
        lambda *_: _first_and_steps(current["r"], clock, meter))]  # fmt: skip
    try:
        while True:
            queue.extend(sc.due(clock.now()))
            if sc.over(clock.now()):
                break
            if not queue:
                if sc.next_time() is None:
                    break
                clock.skip_to(sc.next_time())
                continue
            req = current["r"] = queue.popleft()
            target = depth_pipe if req.depth and depth_pipe is not None else pipe
            target.scheduler = make_scheduler(req.sampler, ctx["model"].scheduler_config)
            kwargs: dict[str, Any] = {"image": DEPTH} if req.depth else {}

            def frames(p: Any, i: int, t: Any, cb: dict, req: Req = req) -> dict:
                if sc.over(clock.now()):
                    p._interrupt = True
                if req.gif and i < req.steps - 1:  # a frame per step, as GifSettings.every=1
                    start = time.perf_counter()
                    p.image_processor.postprocess(p.vae.decode(_vae_input(p, cb["latents"]),
                                                               return_dict=False)[0])  # fmt: skip
                    meter.frame_seconds += time.perf_counter() - start
                return cb

            target(req.prompt, num_inference_steps=req.steps, guidance_scale=req.guidance,
                   num_images_per_prompt=req.count, height=SIZE, width=SIZE,
                   generator=torch.Generator().manual_seed(req.seed), callback_on_step_end=frames,
                   **kwargs)  # fmt: skip
            sc.completed(req, clock.now())
    finally:
        for h in hooks:
            h.remove()


def _vae_input(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """What the pipeline hands its VAE at the end, for a frame: Flux's latents are unpacked
    from 2x2 patches; flow models' VAEs have a shift."""
    if hasattr(pipe, "_unpack_latents"):
        latents = pipe._unpack_latents(latents, SIZE, SIZE, pipe.vae_scale_factor)
    config = pipe.vae.config
    latents = latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
    return latents.to(pipe.vae.dtype)


def _first_and_steps(req: Req, clock: Clock, meter: Meter) -> None:
    now = clock.now()
    if req.first_step is None:
        req.first_step = now
    meter.image_steps.append((now, req.user, req.count))


def run_request(sc: Scenario, clock: Clock, meter: Meter, ctx: dict[str, Any]) -> None:
    engine = TimedFramesEngine(ctx["registry"], fault=None)
    engine.meter = meter
    waiting: list[Req] = []
    rounds: dict[str, int] = defaultdict(int)  # fair_round: one past the user's latest job
    order: dict[str, tuple[int, float]] = {}
    by_id: dict[str, Req] = {}
    hook = meter.hook(ctx["model"].denoiser_call)  # outside a compiled graph

    def fault(stage: str, ids: Any) -> None:
        if stage != "denoiser":
            return
        now = clock.now()
        for rid in dict.fromkeys(ids):
            req = by_id[rid]
            if req.first_step is None:
                req.first_step = now
            meter.image_steps.append((now, req.user, req.count))

    engine._fault = fault
    try:
        while True:
            for req in sc.due(clock.now()):
                rounds[req.user] += 1
                order[req.rid] = (rounds[req.user], req.arrival)
                by_id[req.rid] = req
                waiting.append(req)
            if sc.over(clock.now()):
                break
            if not waiting:
                if sc.next_time() is None:
                    break
                clock.skip_to(sc.next_time())
                continue
            waiting.sort(key=lambda r: order[r.rid])
            key, batch, images = key_for(waiting[0]), [], 0
            for req in waiting:
                if key_for(req) == key and images + req.count <= ctx["profile"].row_budget // FAMILY.max_rows:
                    batch.append(req)
                    images += req.count
            waiting = [r for r in waiting if r not in batch]
            engine.generate(key, [item_for(r) for r in batch],
                            should_stop=lambda _id: sc.over(clock.now()))  # fmt: skip
            now = clock.now()
            for req in batch:
                if not sc.over(now):
                    sc.completed(req, now)
    finally:
        hook.remove()


def run_step(sc: Scenario, clock: Clock, meter: Meter, ctx: dict[str, Any]) -> None:
    budget = ctx["profile"].row_budget
    batch = RunningBatch(ctx["registry"], ShapeKey(MODEL, SIZE, SIZE), row_budget=budget)
    by_id: dict[str, Req] = {}
    hook = meter.hook(ctx["model"].denoiser_call)  # outside a compiled graph
    try:
        while True:
            for req in sc.due(clock.now()):
                by_id[req.rid] = req
                batch.admit(item_for(req), key_for(req).spec, user=req.user)
            if sc.over(clock.now()):
                break
            if not len(batch):
                if sc.next_time() is None:
                    break
                clock.skip_to(sc.next_time())
                continue
            start = clock.now()
            retired = batch.step()
            for rid in batch.stats.started:
                by_id[rid].first_step = start
            for user, n in batch.stats.image_steps.items():
                meter.image_steps.append((start, user, n))
            meter.frame_seconds += batch.stats.frame_seconds
            now = clock.now()
            for result in retired:
                sc.completed(by_id[result.item_id], now)
    finally:
        hook.remove()


RUNNERS = {"sequential": run_sequential, "request": run_request, "step": run_step}


# -- figures ---------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def figures(sc: Scenario, meter: Meter, alone: dict[tuple, float], makespan: float) -> dict:
    done = [r for r in sc.all if r.done is not None]
    started = [r for r in sc.all if r.first_step is not None]
    waits = [r.first_step - r.arrival for r in started]
    latencies = [r.done - r.arrival for r in done]
    slowdowns = [(r.done - r.arrival) / alone[r.signature] for r in done if r.signature in alone]
    horizon = sc.horizon if sc.horizon is not None else float("inf")
    calls = [rows for t, rows in meter.unet if t <= horizon]
    call_p50 = _pct([d for t, d in meter.durations if t <= horizon], 50)
    wait_p95 = _pct(waits, 95)
    per_user: dict[str, float] = defaultdict(float)
    for user in {r.user for r in sc.all}:
        per_user[user] = 0.0
    for t, user, n in meter.image_steps:
        if t <= horizon:
            per_user[user] += n
    images = sum(r.count for r in done)
    return {
        "requests": len(sc.all),
        "completed": len(done),
        "images": images,
        "seconds": round(makespan, 3),
        "images_per_s": round(images / makespan, 3) if makespan else None,
        "row_steps_per_s": round(sum(calls) / makespan, 2) if makespan else None,
        "unet_calls": len(calls),
        "mean_rows_per_call": round(sum(calls) / len(calls), 2) if calls else None,
        "wait_p50_s": _round(_pct(waits, 50)),
        "wait_p95_s": _round(wait_p95),
        # The median denoiser call here, and the p95 wait in those calls (a strict unit: at
        # low load a call is a row or two, cheaper than encoding one newcomer's prompt).
        "call_p50_s": _round(call_p50),
        "wait_p95_calls": round(wait_p95 / call_p50, 2) if wait_p95 is not None and call_p50 else None,
        "latency_p50_s": _round(_pct(latencies, 50)),
        "latency_p95_s": _round(_pct(latencies, 95)),
        "slowdown_p95": _round(_pct(slowdowns, 95)),
        "jain_image_steps": round(jain_index(list(per_user.values())), 4),
        "gif_tax": round(meter.frame_seconds / makespan, 4) if makespan else None,
        "latencies_s": [round(x, 3) for x in latencies],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def measure_alone(reqs: list[Req], ctx: dict[str, Any], alone: dict[tuple, float]) -> None:
    """Latency of each request signature generated alone by Engine.generate (best of one)."""
    engine = Engine(ctx["registry"])
    for req in reqs:
        if req.signature in alone:
            continue
        probe = Req("alone", "alone", req.steps, FAMILY.uniform_sampler, req.guidance, req.depth, req.gif,
                    req.count)  # fmt: skip
        start = time.perf_counter()
        engine.generate(key_for(probe), [item_for(probe)])
        alone[req.signature] = time.perf_counter() - start


def offline_batch(ctx: dict[str, Any], steps: int, n: int = 32) -> float:
    """Images/s of one Engine.generate call over ``n`` uniform items (the batch-32 ceiling)."""
    guidance = ctx["profile"].uniform_guidance
    reqs = [Req(f"o{i}", "o", steps, FAMILY.uniform_sampler, guidance, seed=i) for i in range(n)]
    start = time.perf_counter()
    Engine(ctx["registry"]).generate(key_for(reqs[0]), [item_for(r) for r in reqs])
    return n / (time.perf_counter() - start)


def run_scenario(build: Callable[[], Scenario], contender: str, ctx: dict[str, Any],
                 alone: dict[tuple, float]) -> dict:  # fmt: skip
    sc, clock = build(), Clock()
    meter = Meter(clock)
    RUNNERS[contender](sc, clock, meter, ctx)
    end = min(clock.now(), sc.horizon) if sc.horizon else clock.now()
    measure_alone(sc.all, ctx, alone)
    return figures(sc, meter, alone, end - min(r.arrival for r in sc.all))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI: a few users, few steps")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: 2 threads thrash on a loaded 2-core machine)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--gpu", action="store_true",
                        help="CUDA, SD1.5 (or --family flux: Flux.1-dev) architecture (prepared)")  # fmt: skip
    parser.add_argument("--family", choices=tuple(FAMILIES), default="sd",
                        help="sd: builtin:demo; flux / z-image: the tiny flux-dev / z-image folder")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="with --gpu --family flux: build the GPU model at depth 1 on the CPU, load it, stop")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16/bf16 peak")
    parser.add_argument("--only", default="", help="comma-separated scenarios (partial rerun)")
    parser.add_argument("--horizon-batches", type=float, default=None,
                        help="closed/heavy horizon in offline batch-32 times")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help='engines with speed.compile = "on", warmed up before timing')  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global FAMILY, MODEL
    FAMILY = FAMILIES[args.family]
    if args.gpu:
        if FAMILY is Z_IMAGE:
            print("--gpu has no z-image profile yet (sd and flux are prepared).", file=sys.stderr)
            return 2
        return gpu_main(args) if FAMILY is SD else gpu_flux_main(args)
    profile = QUICK if args.quick else FULL
    specs = None
    if FAMILY is FLUX:
        profile = FLUX_QUICK if args.quick else FLUX_FULL
    elif FAMILY is Z_IMAGE:  # Z-Image Turbo's default: CFG off, one row per image
        profile = replace(profile, uniform_guidance=0.0)
    if FAMILY is not SD:
        MODEL = "bench-flux" if FAMILY is FLUX else f"tiny-{FAMILY.name}"
        specs = tiny_specs(FAMILY)
    if args.horizon_batches is not None:
        profile = replace(profile, horizon_batches=args.horizon_batches)
    only = set(filter(None, args.only.split(",")))
    speed = Speed(compile="on") if args.compile else Speed()
    report = benchmark(profile, "quick" if args.quick else "full", args.threads, specs, only=only,
                       speed=speed)  # fmt: skip
    tags = ([] if FAMILY is SD else [FAMILY.name]) + sorted(only) + (["compiled"] if args.compile else [])
    write(report, args.out, "-".join(tags))
    if FAMILY is FLUX and not args.quick and not only and args.out == RESULTS:
        update_doc(report)
    print(f"wrote {args.out} in {report['seconds']}s", flush=True)
    return 0


def benchmark(profile: Profile, mode: str, threads: int, specs: dict | None = None,
              extra: dict | None = None, only: set[str] | None = None,
              speed: Speed | None = None) -> dict[str, Any]:  # fmt: skip
    """Every scenario of both workloads, contenders in rotating order; the report dict."""
    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    options = resolve_speed(speed or Speed())
    ctx = load_context(specs, options=options)
    ctx["profile"] = profile
    warm_up = warm_up_compiled(ctx, profile.row_budget) if options.compile else None
    lanes = profile.row_budget // FAMILY.max_rows  # a full batch: 32 images
    offline = offline_batch(ctx, profile.uniform_steps, lanes)
    # What a GIF lane weighs next to a transformer row, here and (counted) on Flux.1-dev.
    proportions = {"decode_frame_over_row_step": decode_share(ctx, lanes),
                   "flux1_dev_decode_flops_over_row_step": flux1_dev_decode_flops()} if FAMILY is FLUX else None  # fmt: skip
    if profile.horizon_batches > 0:
        horizon = round(profile.horizon_batches * lanes / offline, 2)
        profile = replace(profile, closed_seconds=horizon, heavy_seconds=horizon)
        ctx["profile"] = profile
    report: dict[str, Any] = {
        "mode": mode,
        "family": FAMILY.name,
        "machine": {**machine(threads), "load_average_at_start": load_at_start},
        "model": f"{MODEL} at {SIZE}x{SIZE}",
        "profile": profile.__dict__,
        "speed": {**options.__dict__, "compile_warm_up_s": warm_up},
        **(extra or {}),
        "offline_batch32_images_per_s": round(offline, 3),
        **({"proportions": proportions} if proportions else {}),
        # The same ceiling as UNet work: every uniform image is ``steps`` calls of its rows
        # (2 with CFG on SD, 1 on Flux).
        "offline_batch32_row_steps_per_s": round(
            offline * profile.uniform_steps * FAMILY.rows(profile.uniform_guidance), 2),
        "workloads": {},
    }
    alone: dict[tuple, float] = {}
    rotation = 0
    for workload in ("uniform", "mixed"):
        results: dict[str, dict[str, Any]] = {}
        capacity = None
        for index in range(6):
            built = scenarios(workload, profile, capacity)
            if index >= len(built):
                break
            name = built[index].name
            if only and name not in only:
                continue
            order = CONTENDERS[rotation % 3:] + CONTENDERS[: rotation % 3]
            rotation += 1
            results[name] = {}
            for contender in order:
                print(f"{workload}/{name}/{contender} at {time.perf_counter() - started:.0f}s",
                      flush=True)  # fmt: skip
                results[name][contender] = run_scenario(
                    lambda w=workload, i=index, c=capacity: scenarios(w, profile, c)[i],
                    contender, ctx, alone)  # fmt: skip
            results[name]["order"] = list(order)
            if name == "burst":  # capacity: step-level images/s with everyone waiting
                capacity = results[name]["step"]["images_per_s"]
        report["workloads"][workload] = {"capacity_images_per_s": capacity, "scenarios": results}
        print(f"{workload}: done at {time.perf_counter() - started:.0f}s", flush=True)
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


# -- context, targets, output ----------------------------------------------------------------

DEPTH = Image.new("RGB", (SIZE, SIZE))


def load_context(specs: dict[str, Any] | None = None, cache: Path | None = None,
                 options: SpeedOptions | None = None) -> dict[str, Any]:  # fmt: skip
    """The registry's model (engines) and a plain diffusers pipeline on the same weights.

    On CUDA a transformer pipeline shares the registry's transformer (a 12B model fits a card
    once, not twice); on the CPU it loads its own copy from the folder, as the SD one does."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    global DEPTH
    gradient = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))
    DEPTH = Image.fromarray(np.stack([gradient] * 3, axis=-1))
    cache = cache or Path(os.environ.get("GOUACHE_BENCH_CACHE", "/tmp/gouache-bench-cache"))
    # The engines run with the speed options gouache ships (``[speed]`` all ``auto``) unless
    # told otherwise; the diffusers pipeline is always plain eager PyTorch.
    options = options or resolve_speed(Speed())
    registry = ModelRegistry(specs or {MODEL: builtin_demo_spec()}, cache_dir=cache, speed=options)
    model = registry.get(MODEL)
    path = registry._pipeline_path(model.spec)
    if FAMILY is SD:
        pipe = StableDiffusionPipeline.from_pretrained(
            path, safety_checker=None, requires_safety_checker=False, local_files_only=True,
            dtype=model.dtype,
        ).to(model.device)  # fmt: skip
    else:
        shared = {"transformer": model.denoiser} if model.device.type == "cuda" else {}
        pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, dtype=model.dtype,
                                                 **shared).to(model.device)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return {"registry": registry, "model": model, "pipe": pipe}


def tiny_specs(family: Family) -> dict[str, Any]:
    """The benchmark's transformer folder, built once under the benchmark cache: for z-image the
    parity tests' tiny folder; for flux ``bench_flux_folder``."""
    from gouache.config import ModelSpec
    from gouache.generation.tiny_transformers import ensure_tiny_transformer

    cache = Path(os.environ.get("GOUACHE_BENCH_CACHE", "/tmp/gouache-bench-cache"))
    if family is FLUX:
        return {MODEL: ModelSpec(path=str(bench_flux_folder(cache)))}
    folder = ensure_tiny_transformer(cache / "tiny-z-image", "z-image") / "pipeline"
    return {MODEL: ModelSpec(path=str(folder))}


# The benchmark's Flux keeps Flux.1-dev's proportions where the workloads feel them: 2 double
# and 4 single blocks (Flux.1's 19:38 is 1:2) and a VAE of 8 and 16 channels, so decoding a
# denoising frame costs a fraction of a transformer row-step as it does on the real model
# (``flux1_dev_decode_flops``: 0.12 at 512x512, 0.14 at 1024x1024). The parity tests' tiny folder
# (one block of each, a 32/64-channel VAE) decodes a frame in 1.7 row-steps on a CPU core, so its
# GIF lanes would weigh ten times what they weigh on Flux.1-dev.
BENCH_FLUX_BLOCKS = {"num_layers": 2, "num_single_layers": 4}
BENCH_FLUX_VAE = {"block_out_channels": (8, 16), "norm_num_groups": 8}


def bench_flux_folder(cache: Path) -> Path:
    """The parity tests' tiny Flux.1 dev (tokenizers, CLIP, T5, scheduler) with the transformer
    and VAE resized per ``BENCH_FLUX_*``, random weights, saved once with ``save_pretrained``."""
    from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel

    from gouache.generation.tiny import build_once
    from gouache.generation.tiny_transformers import ensure_tiny_transformer

    tiny = ensure_tiny_transformer(cache / "tiny-flux-dev", "flux-dev") / "pipeline"

    def build(root: Path) -> None:
        pipe = FluxPipeline.from_pretrained(tiny, local_files_only=True)
        torch.manual_seed(0)
        pipe.transformer = FluxTransformer2DModel.from_config(pipe.transformer.config, **BENCH_FLUX_BLOCKS)
        pipe.vae = AutoencoderKL.from_config(pipe.vae.config, **BENCH_FLUX_VAE)
        pipe.save_pretrained(root / "pipeline", safe_serialization=True)

    return build_once(cache / "bench-flux-dev", build) / "pipeline"


def decode_share(ctx: dict[str, Any], rows: int, steps: int = 6) -> float:
    """Seconds to decode one denoising frame over seconds per transformer row-step, on the loaded
    model: ``rows`` GIF lanes stepped together (frames decoded in the loop's own chunks), the
    first step (admission, prompt encoding) left out. What a GIF lane adds to each step."""
    guidance = ctx["profile"].uniform_guidance
    reqs = [Req(f"share-{n}", "share", steps + 2, FAMILY.uniform_sampler, guidance, gif=True, seed=n)
            for n in range(rows)]  # fmt: skip
    batch = RunningBatch(ctx["registry"], ShapeKey(MODEL, SIZE, SIZE), row_budget=rows)
    for req in reqs:
        batch.admit(item_for(req), key_for(req).spec)
    batch.step()
    frame_seconds = row_steps = frames = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        batch.step()
        frame_seconds += batch.stats.frame_seconds
        row_steps += batch.stats.rows
        frames += batch.stats.lanes
    elapsed = time.perf_counter() - start
    return round((frame_seconds / frames) / ((elapsed - frame_seconds) / row_steps), 3)


def flux1_dev_decode_flops(sizes: tuple[int, ...] = (512, 1024)) -> dict[str, float]:
    """Flux.1-dev's VAE decode of one frame over one transformer row-step, in FLOPs counted by
    ``torch.utils.flop_counter`` on the meta device (the committed configs, no weights)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**flux1_dev_transformer_config())
        vae = AutoencoderKL(**FLUX1_VAE)
        out = {}
        for size in sizes:
            tokens, text = (size // 16) ** 2, 512
            with FlopCounterMode(display=False) as step:
                transformer(hidden_states=torch.zeros(1, tokens, 64), encoder_hidden_states=torch.zeros(1, text, 4096),
                            pooled_projections=torch.zeros(1, 768), timestep=torch.ones(1), guidance=torch.ones(1),
                            img_ids=torch.zeros(tokens, 3), txt_ids=torch.zeros(text, 3), return_dict=False)  # fmt: skip
            with FlopCounterMode(display=False) as decode:
                vae.decode(torch.zeros(1, 16, size // 8, size // 8), return_dict=False)
            out[str(size)] = round(decode.get_total_flops() / step.get_total_flops(), 3)
    return out


def warm_up_compiled(ctx: dict[str, Any], row_budget: int) -> float:
    """Compile every bucket a run can meet (plain and depth rows) before the clock starts, as a
    long-running worker has; returns the seconds it took (reported, not timed in the runs)."""
    start = time.perf_counter()
    batch = RunningBatch(ctx["registry"], ShapeKey(MODEL, SIZE, SIZE), row_budget=row_budget)
    buckets = [b for b in ctx["model"].denoiser_call.buckets if b <= row_budget]
    for depth in (False, True) if FAMILY.depth else (False,):
        for rows in buckets:
            for n in range(rows):  # no-CFG lanes: one row each, one step
                item = BatchItem(f"warm-{depth}-{rows}-{n}", PROMPTS[0], "", seed=n,
                                 control_image=DEPTH if depth else None)  # fmt: skip
                batch.admit(item, BatchKey(MODEL, "depth" if depth else "txt2img", SIZE, SIZE, 1,
                                           FAMILY.uniform_sampler, FAMILY.no_cfg_guidance).spec)  # fmt: skip
            batch.run()
            print(f"compiled {rows} rows{' (depth)' if depth else ''} at "
                  f"{time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip
    return round(time.perf_counter() - start, 1)


def machine(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpus": os.cpu_count(), "torch_threads": threads, "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's CPU targets, as measured (None where a figure is missing)."""
    uni = report["workloads"]["uniform"]["scenarios"]
    mixed = report["workloads"]["mixed"]["scenarios"]

    def get(d: dict, *path: str) -> Any:
        for p in path:
            d = d.get(p) if isinstance(d, dict) else None
        return d

    # Closed-loop throughput is compared as UNet work (row-steps/s): images completed inside a
    # horizon come in waves (32 lanes in lock-step finish together), so they undercount a
    # contender whose wave ends just after the horizon; the work done inside it does not.
    offline_rows = report.get("offline_batch32_row_steps_per_s")
    step_closed = get(uni, "closed", "step", "row_steps_per_s")
    seq_closed = get(uni, "closed", "sequential", "row_steps_per_s")
    rows_u, rows_m = get(uni, "closed", "step", "row_steps_per_s"), get(mixed, "closed", "step", "row_steps_per_s")
    req_u, req_m = get(uni, "closed", "request", "row_steps_per_s"), get(mixed, "closed", "request", "row_steps_per_s")
    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    out = {
        "closed_uniform_step_over_offline_batch32": ratio(step_closed, offline_rows),
        "closed_uniform_step_over_sequential": ratio(step_closed, seq_closed),
        "closed_mixed_over_uniform_row_steps_step": ratio(rows_m, rows_u),
        "closed_mixed_over_uniform_row_steps_request": ratio(req_m, req_u),
        "poisson80_wait_p95_s": {c: get(uni, "poisson80", c, "wait_p95_s") for c in CONTENDERS},
        "poisson80_wait_p95_calls": {c: get(uni, "poisson80", c, "wait_p95_calls") for c in CONTENDERS},
        "step_time_s_uniform_closed": ratio(get(uni, "closed", "step", "seconds"),
                                            get(uni, "closed", "step", "unet_calls")),
        "heavy_jain": {w: {c: get(report["workloads"][w]["scenarios"], "heavy", c, "jain_image_steps")
                           for c in CONTENDERS} for w in ("uniform", "mixed")},
    }  # fmt: skip
    # The p95 wait at 80% load in full steps: one step of the step-level batch at capacity
    # (uniform closed loop), the unit docs/benchmarks.md has used since the SD run.
    full_step = out["step_time_s_uniform_closed"]
    out["poisson80_wait_p95_full_steps"] = {
        c: ratio(w, full_step) for c, w in out["poisson80_wait_p95_s"].items()}  # fmt: skip
    if report.get("family", "sd") != "sd":
        # The CPU targets for a tiny transformer, step-level, met or not (None: missing).
        wait, mixed_ratio = out["poisson80_wait_p95_full_steps"]["step"], out["closed_mixed_over_uniform_row_steps_step"]
        jains = [j for j in (get(out, "heavy_jain", w, "step") for w in ("uniform", "mixed")) if j is not None]
        out["met"] = {
            "poisson80_step_wait_p95_at_most_2_steps": None if wait is None else wait <= 2,
            "mixed_at_least_0.9x_uniform_row_steps": None if mixed_ratio is None else mixed_ratio >= 0.9,
            "heavy_jain_at_least_0.95": min(jains) >= 0.95 if jains else None,
        }
    return out


COLUMNS = ("images_per_s", "row_steps_per_s", "mean_rows_per_call", "wait_p50_s", "wait_p95_s",
           "call_p50_s", "wait_p95_calls", "slowdown_p95", "jain_image_steps", "gif_tax")  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Throughput ({report['mode']}): {report['model']}", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} with {m['torch_threads']} "
             f"threads, GPU: {m['gpu'] or 'none'}. Offline Engine batch of 32: "
             f"{report['offline_batch32_images_per_s']} images/s. Run took {report['seconds']} s; "
             f"load average {m.get('load_average_at_start')} at the start, {m.get('load_average_at_end')} "
             "at the end.", ""]  # fmt: skip
    for workload, data in report["workloads"].items():
        lines += [f"## {workload} (capacity for Poisson: {data['capacity_images_per_s']} images/s)", "",
                  "| scenario | contender | " + " | ".join(COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]  # fmt: skip
        for name, per in data["scenarios"].items():
            for contender in CONTENDERS:
                row = per[contender]
                cells = ["" if row.get(c) is None else str(row[c]) for c in COLUMNS]
                lines.append(f"| {name} | {contender} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Targets (as measured)", "", "```json", json.dumps(report["targets"], indent=2), "```", ""]
    return "\n".join(lines)


def latency_png(report: dict[str, Any], path: Path) -> None:
    """Latency strips per contender for every scenario (Pillow: matplotlib is not installed)."""
    colours = {"sequential": (200, 80, 60), "request": (60, 110, 200), "step": (40, 160, 90)}
    panels = [(w, s) for w, d in report["workloads"].items() for s in d["scenarios"]]
    width, panel_h, left = 900, 90, 170
    image = Image.new("RGB", (width, 30 + panel_h * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), "latency (s) per request: dots; p50 | and p95 || per contender", fill="black")
    for n, (workload, name) in enumerate(panels):
        top = 30 + n * panel_h
        per = report["workloads"][workload]["scenarios"][name]
        top_value = max([max(per[c]["latencies_s"], default=0) for c in CONTENDERS] + [1e-6])
        scale = (width - left - 20) / top_value
        draw.text((10, top + 4), f"{workload}/{name}", fill="black")
        draw.text((width - 120, top + 4), f"max {top_value:.1f}s", fill="gray")
        for k, contender in enumerate(CONTENDERS):
            y = top + 22 + k * 20
            draw.text((10, y - 5), contender, fill=colours[contender])
            draw.line((left, y, width - 20, y), fill=(230, 230, 230))
            values = per[contender]["latencies_s"]
            for v in values:
                x = left + v * scale
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colours[contender])
            for q, h in ((50, 6), (95, 9)):
                if values:
                    x = left + float(np.percentile(values, q)) * scale
                    draw.line((x, y - h, x, y + h), fill="black", width=2)
    image.save(path)


def write(report: dict[str, Any], out: Path, tag: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if report["mode"] == "quick" else "") + (f"-{tag}" if tag else "")
    (out / f"throughput{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"throughput{suffix}.md").write_text(markdown(report))
    latency_png(report, out / f"throughput{suffix}.png")


# -- GPU: the real SD1.5 architecture, random weights (prepared; CUDA only) -----------------

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)  # fmt: skip
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                sample_size=512, scaling_factor=0.18215)  # fmt: skip
SD15_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                   num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                   hidden_act="quick_gelu", projection_dim=768)  # fmt: skip
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, clip_sample=False, set_alpha_to_one=False)  # fmt: skip
SD15_UNET_GFLOP = 803.0  # per forward row at 64x64 latents (the figure)
GPU = Profile(32, 20.0, 32, 20.0, 30, (4, 20, 30, 50), row_budget=64, uniform_guidance=7.5)


def build_sd15(root: Path) -> dict[str, Any]:
    """SD1.5-shaped pipeline + depth ControlNet with random weights, saved like a checkpoint."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,  # fmt: skip
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from gouache.config import ModelSpec
    from gouache.generation.tiny import make_tokenizer

    make_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_CLIP_L)),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"), unet=unet,
        scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(root / "pipeline", safe_serialization=True)
    ControlNetModel.from_unet(unet).save_pretrained(root / "controlnet", safe_serialization=True)
    return {"sd15-random": ModelSpec(path=str(root / "pipeline"),
                                     depth_controlnet=str(root / "controlnet"))}  # fmt: skip


def gpu_main(args: argparse.Namespace) -> int:
    """SD1.5 architecture, 512x512, 30 steps, CFG 7.5. Never run here: no numbers without CUDA."""
    global MODEL, SIZE
    if not torch.cuda.is_available():
        print("--gpu needs a CUDA device; nothing was measured.", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as raw:
        specs = build_sd15(Path(raw))
        MODEL, SIZE = "sd15-random", 512
        extra = {"flops": {"unet_gflop_per_row": SD15_UNET_GFLOP, "peak_tflops": args.peak_tflops}}
        report = benchmark(GPU, "gpu", args.threads, specs, extra)
    for data in report["workloads"].values():
        for per in data["scenarios"].values():
            for contender in CONTENDERS:
                rate = per[contender]["row_steps_per_s"] or 0.0
                per[contender]["mfu"] = round(rate * SD15_UNET_GFLOP / (args.peak_tflops * 1e3), 4)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput-gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "throughput-gpu.md").write_text(markdown(report))
    latency_png(report, out / "throughput-gpu.png")
    return 0


# -- GPU: the real Flux.1-dev architecture, random weights (prepared; CUDA only) ------------

FLUX1_DEV_TRANSFORMER = _HERE / "configs" / "flux1-dev-transformer.json"
FLUX1_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, latent_channels=16, sample_size=1024, scaling_factor=0.3611,
                 shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
FLUX1_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                       base_image_seq_len=256, max_image_seq_len=4096)  # fmt: skip
# T5-XXL's width (4096, as joint_attention_dim needs) at 2 of its 24 layers: a prompt is encoded
# once per request, by every contender alike; the full encoder would add 9.5 GB for nothing here.
FLUX1_T5 = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=2,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                relative_attention_max_distance=128, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0)  # fmt: skip
FLUX_GPU = Profile(32, 20.0, 32, 20.0, 28, (4, 20, 28, 50), row_budget=32, uniform_guidance=3.5,
                   horizon_batches=1.0)  # fmt: skip
FLUX_GPU_SIZES = (512, 1024)


def flux1_dev_transformer_config(depth: int | None = None) -> dict[str, Any]:
    """The committed Flux.1-dev transformer config; ``depth`` cuts both block stacks (dry run)."""
    config = {k: v for k, v in json.loads(FLUX1_DEV_TRANSFORMER.read_text()).items() if not k.startswith("_")}
    if depth is not None:
        config.update(num_layers=depth, num_single_layers=depth)
    return config


def build_flux1_dev(root: Path, device: str, depth: int | None = None) -> dict[str, Any]:
    """Flux.1-dev-shaped pipeline with random bf16 weights, saved like a checkpoint.

    The transformer and the VAE are Flux.1-dev's architecture; CLIP-L is full size, the T5
    encoder has T5-XXL's width at ``FLUX1_T5``'s depth; tokenizers are the generated ones of
    ``tiny_transformers``. ``depth`` (the dry run) cuts the transformer's stacks and the text
    encoders to that many layers. Built on ``device`` in bf16 (a 12B model in fp32 is 48 GB)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import (
        AutoTokenizer,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
    )

    from gouache.config import ModelSpec
    from gouache.generation.tiny import make_tokenizer
    from gouache.generation.tiny_transformers import make_t5_tokenizer

    make_tokenizer(root / "clip")
    make_t5_tokenizer(root / "t5")
    clip_tok, t5_tok = CLIPTokenizer.from_pretrained(root / "clip"), AutoTokenizer.from_pretrained(root / "t5")
    clip_config = {**SD15_CLIP_L, **({"num_hidden_layers": depth} if depth else {})}
    t5_config = {**FLUX1_T5, "vocab_size": len(t5_tok), **({"num_layers": depth} if depth else {})}
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            pipe = FluxPipeline(
                scheduler=FlowMatchEulerDiscreteScheduler(**FLUX1_SCHEDULER), vae=AutoencoderKL(**FLUX1_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**clip_config)), tokenizer=clip_tok,
                text_encoder_2=T5EncoderModel(T5Config(**t5_config)), tokenizer_2=t5_tok,
                transformer=FluxTransformer2DModel(**flux1_dev_transformer_config(depth)),
            )  # fmt: skip
    finally:
        torch.set_default_dtype(previous)
    pipe.save_pretrained(root / "pipeline", safe_serialization=True)
    del pipe
    return {"flux1-dev-random": ModelSpec(path=str(root / "pipeline"), dtype="bfloat16")}


def flux_dry_run(args: argparse.Namespace) -> int:
    """Build the GPU model at depth 1 on the CPU, load it as the benchmark does, and stop."""
    import tempfile

    global MODEL, SIZE
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as raw:
        specs = build_flux1_dev(Path(raw), "cpu", depth=1)
        MODEL, SIZE = "flux1-dev-random", 64
        ctx = load_context(specs, Path(raw) / "cache")
        model, pipe = ctx["model"], ctx["pipe"]
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        report = {"mode": "dry-run", "family": model.family.name, "dtype": str(model.dtype),
                  "pipeline": type(pipe).__name__, "transformer_config": dict(model.denoiser.config),
                  "parameters": {"transformer": count(model.denoiser), "vae": count(model.vae),
                                 "text_encoders": [count(e) for e in model.text_encoders]},
                  "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput-gpu-flux-dry-run.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report["parameters"]), flush=True)
    return 0


def gpu_flux_main(args: argparse.Namespace) -> int:
    """Flux.1-dev architecture, random bf16 weights, 28 steps, guidance 3.5, at 512x512 and
    1024x1024 (one report each). Never run here: no numbers without CUDA."""
    global MODEL, SIZE
    if args.dry_run:
        return flux_dry_run(args)
    if not torch.cuda.is_available():
        print("--gpu needs a CUDA device; nothing was measured.", file=sys.stderr)
        return 2
    import tempfile

    only = set(filter(None, args.only.split(",")))
    profile = FLUX_GPU if args.horizon_batches is None else replace(FLUX_GPU, horizon_batches=args.horizon_batches)
    with tempfile.TemporaryDirectory() as raw:
        specs = build_flux1_dev(Path(raw), "cuda")
        MODEL = "flux1-dev-random"
        for size in FLUX_GPU_SIZES:
            SIZE = size
            extra = {"weights": "random (Flux.1-dev architecture; T5 at 2 layers): speed only"}
            report = benchmark(profile, "gpu", args.threads, specs, extra, only=only)
            write(report, args.out, "-".join(["flux", str(size), *sorted(only)]))
    return 0


# -- docs: the Flux table in docs/benchmarks.md, from the JSON --------------------------------

DOC = _HERE.parent / "docs" / "benchmarks.md"
DOC_BEGIN, DOC_END = "<!-- throughput-flux:begin -->", "<!-- throughput-flux:end -->"


def flux_doc_table(report: dict[str, Any]) -> str:
    """The figures docs/benchmarks.md shows for a Flux run (every cell from ``report``)."""
    uni, mixed = (report["workloads"][w]["scenarios"] for w in ("uniform", "mixed"))
    t, m = report["targets"], report["machine"]

    def row(label: str, cell: Callable[[str], Any]) -> str:
        return f"| {label} | " + " | ".join(str(cell(c)) for c in CONTENDERS) + " |"

    lines = [
        f"{report['model']}, {m['torch_threads']} torch thread(s), {report['seconds']:.0f} s, load average "
        f"{m['load_average_at_start'][0]} at the start and {m['load_average_at_end'][0]} at the end "
        f"(`benchmarks/results/throughput-flux.{{json,md,png}}`):", "",
        "| figure | sequential diffusers (`FluxPipeline`) | request-level | step-level |",
        "| --- | --- | --- | --- |",
        row("uniform burst (32 users), images/s", lambda c: uni["burst"][c]["images_per_s"]),
        row("mixed burst, images/s", lambda c: mixed["burst"][c]["images_per_s"]),
        row("uniform closed loop, transformer row-steps/s", lambda c: uni["closed"][c]["row_steps_per_s"]),
        row("mixed closed loop, transformer row-steps/s", lambda c: mixed["closed"][c]["row_steps_per_s"]),
        row("uniform Poisson 80%, p95 wait to first step", lambda c: f"{uni['poisson80'][c]['wait_p95_s']} s"),
        row("uniform Poisson 80%, p95 wait in full steps", lambda c: t["poisson80_wait_p95_full_steps"][c]),
        row("uniform Poisson 80%, p95 wait in its own median calls", lambda c: t["poisson80_wait_p95_calls"][c]),
        row("uniform Poisson 80%, p95 slowdown", lambda c: uni["poisson80"][c]["slowdown_p95"]),
        row("mixed Poisson 80%, p95 slowdown", lambda c: mixed["poisson80"][c]["slowdown_p95"]),
        row("mixed closed loop, GIF tax (share of time decoding frames)", lambda c: mixed["closed"][c]["gif_tax"]),
        row("Jain's index, heavy user (uniform / mixed)",
            lambda c: f"{t['heavy_jain']['uniform'][c]} / {t['heavy_jain']['mixed'][c]}"),
        "",
        f"Targets (step-level): p95 wait at 80% load {t['poisson80_wait_p95_full_steps']['step']} full "
        f"steps of {t['step_time_s_uniform_closed']} s (<= 2: {t['met']['poisson80_step_wait_p95_at_most_2_steps']}); "
        f"mixed closed loop {t['closed_mixed_over_uniform_row_steps_step']}x the uniform row-steps/s "
        f"(>= 0.9: {t['met']['mixed_at_least_0.9x_uniform_row_steps']}); Jain's index with a heavy user "
        f"(>= 0.95: {t['met']['heavy_jain_at_least_0.95']}).", "",
    ]  # fmt: skip
    if "proportions" in report:
        share, counted = (report["proportions"][k] for k in ("decode_frame_over_row_step",
                                                              "flux1_dev_decode_flops_over_row_step"))  # fmt: skip
        lines += [f"A denoising frame's decode costs {share} transformer row-steps on this model (measured); "
                  f"on Flux.1-dev {' and '.join(f'{v} at {k}x{k}' for k, v in counted.items())} "
                  "(FLOPs counted on its configs).", ""]  # fmt: skip
    return "\n".join(lines)


def update_doc(report: dict[str, Any], doc: Path = DOC) -> None:
    """Rewrite the table between the markers in ``doc`` from ``report``."""
    text = doc.read_text()
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        doc.write_text(f"{head}{DOC_BEGIN}\n{flux_doc_table(report)}{DOC_END}{rest.split(DOC_END, 1)[1]}")


if __name__ == "__main__":
    raise SystemExit(main())
