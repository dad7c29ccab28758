"""One table from gouache's sampler names to diffusers schedulers.

The names are what users type (``--sampler dpmpp-2m-karras``); the overrides follow the usual
mapping from A1111/k-diffusion names to diffusers configs. Every scheduler starts from the
model's own ``scheduler_config.json`` so betas and timestep spacing stay the model's.
Classes are named, not imported: the bot validates sampler names without loading diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gouache import messages
from gouache.errors import InvalidRequest

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

__all__ = ["SAMPLERS", "SamplerEntry", "make_scheduler", "sampler_entry", "samplers_of_kind",
           "timed_scheduler"]


@dataclass(frozen=True)
class SamplerEntry:
    """A diffusers scheduler class plus the config keys that make it this sampler."""

    scheduler: str  # a class name in ``diffusers``
    overrides: Mapping[str, Any] = field(default_factory=dict)
    # What the sampler integrates: "eps" (the UNet families' noise/v schedules) or "flow"
    # (rectified-flow transformers); a family takes only samplers of its own kind.
    kind: str = "eps"


_TABLE: dict[str, SamplerEntry] = {
    "ddpm": SamplerEntry("DDPMScheduler"),
    "ddim": SamplerEntry("DDIMScheduler"),
    "pndm": SamplerEntry("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": SamplerEntry("LMSDiscreteScheduler"),
    "heun": SamplerEntry("HeunDiscreteScheduler"),
    "euler": SamplerEntry("EulerDiscreteScheduler"),
    "euler-a": SamplerEntry("EulerAncestralDiscreteScheduler"),
    "dpmpp-2m": SamplerEntry(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}
    ),
    "dpmpp-2m-karras": SamplerEntry(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": SamplerEntry("UniPCMultistepScheduler"),
    "lcm": SamplerEntry("LCMScheduler"),
    # Flow matching (Flux, SD3, Z-Image, Flux.2): the model's own FlowMatchEulerDiscreteScheduler
    # config (its shift, or the resolution-dependent ``mu`` the family computes), as the
    # pipelines run it; ``-karras`` respaces the same sigmas as Karras et al., ``-exponential``
    # evenly in log sigma, ``-beta`` as a Beta(0.6, 0.6) quantile (Lee et al. 2024, "Beta
    # Sampling is All You Need"; ComfyUI's "beta" scheduler, a common choice for Flux).
    "flow-euler": SamplerEntry("FlowMatchEulerDiscreteScheduler", kind="flow"),
    "flow-euler-karras": SamplerEntry(
        "FlowMatchEulerDiscreteScheduler", {"use_karras_sigmas": True}, kind="flow"
    ),
    "flow-euler-exponential": SamplerEntry(
        "FlowMatchEulerDiscreteScheduler", {"use_exponential_sigmas": True}, kind="flow"
    ),
    "flow-euler-beta": SamplerEntry(
        "FlowMatchEulerDiscreteScheduler", {"use_beta_sigmas": True}, kind="flow"
    ),
}

SAMPLERS: tuple[str, ...] = tuple(_TABLE)


def samplers_of_kind(kind: str) -> tuple[str, ...]:
    """The samplers a family of sampler kind ``kind`` takes ("eps" or "flow")."""
    return tuple(name for name, entry in _TABLE.items() if entry.kind == kind)


def sampler_entry(name: str) -> SamplerEntry:
    """The table row for ``name``; an unknown name is the user's error and lists the choices."""
    try:
        return _TABLE[name]
    except KeyError:
        raise InvalidRequest(messages.unknown_sampler(name, SAMPLERS)) from None


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for ``name`` built on the model's scheduler config."""
    import diffusers

    entry = sampler_entry(name)
    scheduler_class = getattr(diffusers, entry.scheduler)
    return scheduler_class.from_config(dict(base_config), **entry.overrides)


def timed_scheduler(
    name: str, base_config: Mapping[str, Any], steps: int, device: Any = None, **schedule: Any
) -> SchedulerMixin:
    """A fresh scheduler for ``name`` with its timesteps set, stepped by index from 0.

    diffusers' k-diffusion-style schedulers find their step index by looking the first
    timestep up in their own schedule, and take the *second* match when it repeats. Karras
    sigmas on a squaredcos schedule (the demo model) repeat the first timestep, so the lookup
    starts one step late and runs off the end (IndexError). Pinning the begin index to 0 is what
    diffusers' SDXL and img2img pipelines do; on schedules without repeats it is the same index.
    ``schedule`` is what the family adds to ``set_timesteps`` (a flow model's ``sigmas`` and
    resolution-dependent ``mu``).
    """
    scheduler = make_scheduler(name, base_config)
    scheduler.set_timesteps(steps, device=device, **schedule)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    return scheduler
