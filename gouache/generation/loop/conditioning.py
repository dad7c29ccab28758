"""What a lane is conditioned on, whatever the family: named row tensors, CADS, guidance.

A family's ``encode`` returns a ``Conditioning`` for one item: its text-derived tensors
(``positive``, and ``negative`` for classifier-free guidance), the tensors both rows share
(SDXL's size ids, an LCM guidance embedding) and an optional control image. The loop only lays
these out as rows (``rows``) and, for ``--diversify``, anneals the positive ones (CADS); the
family says what each name means to its denoiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

__all__ = ["CADS_TAU1", "CADS_TAU2", "Conditioning", "annealed", "guidance_scale", "lerp"]


@dataclass
class Conditioning:
    """One item's denoiser inputs by name, one row each (``negative``: the CFG row)."""

    positive: dict[str, torch.Tensor]
    negative: dict[str, torch.Tensor] | None = None
    shared: dict[str, torch.Tensor] = field(default_factory=dict)  # the same on both rows
    control: torch.Tensor | None = None  # a ControlNet image (both rows)

    def to(self, device: torch.device) -> Conditioning:
        """A copy with every tensor on ``device`` (``Tensor.to`` copies only what is elsewhere)."""

        def moved(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device) for k, v in named.items()}

        negative = moved(self.negative) if self.negative is not None else None
        control = self.control.to(device) if self.control is not None else None
        return replace(self, positive=moved(self.positive), negative=negative,
                       shared=moved(self.shared), control=control)  # fmt: skip

    def rows(self, cfg: bool) -> list[dict[str, torch.Tensor]]:
        """The inputs of each row: [unconditional, conditional] with CFG, else [conditional].

        Without a negative (a family whose empty negative is the prompt itself) the
        unconditional row repeats the positive, as diffusers' pipelines do.
        """
        positive = {**self.positive, **self.shared}
        if not cfg:
            return [positive]
        negative = {**(self.negative or self.positive), **self.shared}
        return [negative, positive]


def lerp(a: Conditioning, b: Conditioning, w: float) -> Conditioning:
    """``(1 - w) a + w b`` for every text-derived tensor (an interpolation's frame)."""

    def mix(x: dict[str, torch.Tensor] | None, y: dict[str, torch.Tensor] | None):
        if x is None or y is None:
            return None
        return {k: (1 - w) * x[k] + w * y[k] for k in x}

    return replace(a, positive=mix(a.positive, b.positive), negative=mix(a.negative, b.negative))


CADS_TAU1 = 0.7  # clean condition from here down to t = 0
CADS_TAU2 = 1.0  # pure noise only at t = 1


def annealed(
    cond: Conditioning,
    noise_level: float,
    generators: Sequence[torch.Generator],
    *,
    tau1: float = CADS_TAU1,
    tau2: float = CADS_TAU2,
    scale: float = 0.25,
    psi: float = 1.0,
) -> Conditioning:
    """Condition-annealed sampling (CADS, Sadat et al., ICLR 2024) for one denoising step.

    ``noise_level`` runs from 1 (pure noise) to 0. Early on the prompt embedding is mostly
    replaced by Gaussian noise, so samples spread out; by ``tau1`` the clean condition is back,
    so they still land on the prompt: gamma = 1 for t <= tau1, (tau2 - t) / (tau2 - tau1)
    between, 0 for t >= tau2; y' = sqrt(gamma) y + scale sqrt(1 - gamma) n, rescaled to y's
    per-sample mean and std and mixed with psi. Built from the clean ``cond`` at every step (a
    callback that noised the previous step's output would compound the noise), with one
    generator per row so a seed reproduces its image. Only the positive tensors are noised, in
    the order the family named them.

    The schedule keeps the final steps clean: every step with ``t <= tau1`` (here 0.7, the last
    70% of a DDIM run) sees the clean condition, and the ramp reaches pure noise only at
    ``t = 1``. The paper's defaults (0.6, 0.9) fully replace the prompt for the first steps and
    hand back a clean condition only once two thirds of the noise variance is gone on a cosine
    schedule; on the demo model that left visible pixel noise (Laplacian energy +18% over the
    baseline on the same seeds; with these defaults about +2%,
    ``tests/unit/generation/test_cads.py::test_cads_leaves_the_final_images_clean``).
    """
    gamma = min(1.0, max(0.0, (tau2 - noise_level) / (tau2 - tau1)))
    if gamma >= 1.0:
        return cond

    def noised(y: torch.Tensor) -> torch.Tensor:
        noise = torch.cat(
            [torch.randn(y.shape[1:], generator=g).unsqueeze(0) for g in generators]
        ).to(device=y.device, dtype=y.dtype)
        mixed = gamma**0.5 * y + scale * (1 - gamma) ** 0.5 * noise
        dims = tuple(range(1, y.ndim))
        mean, std = y.mean(dims, keepdim=True), y.std(dims, keepdim=True)
        spread = mixed.std(dims, keepdim=True).clamp_min(1e-6)
        rescaled = (mixed - mixed.mean(dims, keepdim=True)) / spread * std + mean
        return psi * rescaled + (1 - psi) * mixed

    # Only embeddings are noised (not a row's integer caption length, say).
    positive = {k: noised(v) if v.is_floating_point() else v for k, v in cond.positive.items()}
    return replace(cond, positive=positive)


def guidance_scale(
    guidance: float, interval: tuple[float, float] | None, noise_level: float
) -> float:
    """A lane's CFG scale at ``noise_level`` (1 = noise, 0 = clean): its ``guidance``, or 1
    (the conditional prediction alone) outside its ``guidance_interval`` (limited-interval
    guidance, Kynkäänniemi et al. 2024)."""
    if interval is None or interval[0] < noise_level <= interval[1]:
        return guidance
    return 1.0
