"""Pieces every demo training phase shares: batches from the world, EMA, resumable checkpoints.

Batches are a pure function of (seed, step), so a resumed run sees the data an uninterrupted one
would have seen.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .components import RESOLUTION
from .world import render, sample_scene

__all__ = ["Batch", "make_batch", "Ema", "save_checkpoint", "load_checkpoint", "checkpoint", "resume", "Clock", "log", "stop_requested",
           "steps"]


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    depth: torch.Tensor  # (B, 3, H, W) in [0, 1], the control image
    captions: list[str]


def make_batch(seed: int, step: int, size: int, empty_fraction: float = 0.0,
               split: str = "train", resolution: int = RESOLUTION) -> Batch:
    """Render ``size`` scenes for ``step``; ``empty_fraction`` of captions become '' (for CFG)."""
    rng = np.random.default_rng([seed, step, 7])
    scene_seeds = rng.integers(0, 2**62, size=size)
    rendered = [render(sample_scene(int(s), split), resolution) for s in scene_seeds]
    images = np.stack([r.image for r in rendered]).astype(np.float32) / 127.5 - 1.0
    depth = np.stack([r.depth for r in rendered]).astype(np.float32)
    drop = rng.random(size) < empty_fraction
    captions = ["" if d else r.caption for r, d in zip(rendered, drop, strict=True)]
    return Batch(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(depth)[:, None].expand(-1, 3, -1, -1).contiguous(),
        captions,
    )


class Ema:
    """Exponential moving average of a module's parameters, with the usual warm-up."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), module.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically, so a run killed mid-save leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def checkpoint(path: Path, parts: dict[str, Any], step: int) -> None:
    """Save every part's ``state_dict`` (model, optimizer, EMA) under its key, with the step."""
    save_checkpoint(path, {**{key: part.state_dict() for key, part in parts.items()}, "step": step})


def resume(path: Path, phase: str, parts: dict[str, Any]) -> int:
    """Load the parts saved by ``checkpoint``; the step to continue from (0 without one)."""
    state = load_checkpoint(path)
    if state is None:
        return 0
    for key, part in parts.items():
        part.load_state_dict(state[key])
    log(f"resumed {phase} at step {state['step']}")
    return int(state["step"])


_STOP = threading.Event()  # set by SIGTERM: finish the current step, save, export, exit


def stop_requested() -> bool:
    return _STOP.is_set()


class Clock:
    """Fires every ``seconds``; tells whether the time budget is spent or SIGTERM arrived,
    so ``kill PID`` ends a phase with a final checkpoint and export instead of losing work."""

    def __init__(self, budget_minutes: float | None) -> None:
        self.start = time.monotonic()
        self.budget = None if budget_minutes is None else budget_minutes * 60.0
        self.marks: dict[str, float] = {}
        signal.signal(signal.SIGTERM, lambda signum, frame: _STOP.set())

    def every(self, name: str, seconds: float) -> bool:
        now = time.monotonic()
        if now - self.marks.setdefault(name, now) >= seconds:
            self.marks[name] = now
            return True
        return False

    @property
    def spent(self) -> bool:
        over = self.budget is not None and time.monotonic() - self.start >= self.budget
        return over or _STOP.is_set()


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def steps(start: int, total: int, clock: Clock) -> Iterator[int]:
    step = start
    while step < total and not clock.spent:
        yield step
        step += 1
