"""What one engine call works on: a batch key shared by every item, and the items themselves.

Items that share a ``BatchKey`` can run in one denoising loop; prompts, negative prompts, seeds,
image counts and control images differ per item. When the device runs out of memory the engine
splits the items in halves (``split_in_halves``) until single items remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from gouache.errors import UserError
from gouache.request import ShapeKey, image_seed

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "BatchKey",
    "BatchItem",
    "ItemResult",
    "LaneSpec",
    "Pipeline",
    "Region",
    "ShapeKey",
    "split_in_halves",
]

Pipeline = Literal["txt2img", "depth"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class BatchKey:
    """Everything that must be equal for items to share one denoising loop."""

    model: str
    pipeline: Pipeline
    width: int
    height: int
    steps: int
    sampler: str
    guidance: float
    diversify: bool = False
    denoise: float = 1.0  # image-to-image: the share of the schedule run (LaneSpec.denoise)

    @property
    def shape(self) -> ShapeKey:
        """What a step-level running batch still needs to share: model and latent size."""
        return ShapeKey(self.model, self.width, self.height)

    @property
    def spec(self) -> LaneSpec:
        """The per-lane settings a step-level running batch takes per item."""
        return LaneSpec(self.steps, self.sampler, self.guidance, self.pipeline, self.diversify,
                        self.denoise)  # fmt: skip


@dataclass(frozen=True)
class LaneSpec:
    """How one item is sampled in a running batch: these differ freely between lanes.

    ``denoise`` (0 < s <= 1) applies to items with an ``init_image`` only: how much of the
    schedule an image-to-image lane runs, diffusers' img2img ``strength`` (a lane of ``steps``
    starts at index ``steps - int(steps * s)``). It is not called strength because /depth's
    ``--strength`` is the ControlNet scale (``BatchItem.control_scale``).
    """

    steps: int
    sampler: str
    guidance: float
    pipeline: Pipeline = "txt2img"
    diversify: bool = False
    denoise: float = 1.0


@dataclass(frozen=True)
class Region:
    """Where an item's images lie on a canvas it shares with other items: a tile of a tiled
    upscale. The running batch keeps the lanes of one canvas in step and, after every step,
    their overlapping latents in agreement (``regions.py``, MultiDiffusion).

    ``box`` is (left, top, right, bottom) in pixels of the canvas, ``size`` its width and height;
    the box's width and height are the batch's, its corners on the latent grid.
    """

    canvas: str
    box: tuple[int, int, int, int]
    size: tuple[int, int]


@dataclass(frozen=True)
class BatchItem:
    """One job's share of a batch: image ``i`` of the item uses ``seed + i``.

    ``control_image`` is required for the "depth" pipeline. ``init_image`` makes the item's
    lanes image-to-image: they start from it, noised to the start timestep ``LaneSpec.denoise``
    gives (resized to the batch's size as diffusers' ``VaeImageProcessor.preprocess`` does). ``frames_every=k`` keeps a decoded
    frame every ``k`` steps (0: no frames); the last frame is the final image.

    ``guidance_interval=(lo, hi)`` limits classifier-free guidance to the steps whose noise
    level ``t / num_train_timesteps`` (1 = pure noise, 0 = clean) lies in ``(lo, hi]``; outside
    it the item's rows use the conditional prediction alone (guidance scale 1). ``None`` guides
    every step. Limited-interval guidance (Kynkäänniemi et al. 2024): no guidance in the
    high-noise steps raises diversity (``/diversity --enlarge interval``). It is
    applied per lane by the one loop (``Lane.guidance``, ``conditioning.guidance_scale``).
    """

    item_id: str
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    count: int = 1
    control_image: Image | None = field(default=None, compare=False)
    frames_every: int = 0
    guidance_interval: tuple[float, float] | None = None
    control_scale: float = 1.0  # ControlNet conditioning scale for this item's rows (--strength)
    init_image: Image | None = field(default=None, compare=False)
    # (LoRA name, scale) pairs applied to this item's rows only (generation/loras/bank.py)
    loras: tuple[tuple[str, float], ...] = ()
    region: Region | None = None  # a tile of a canvas shared with other items

    def image_seed(self, index: int) -> int:
        return image_seed(self.seed, index)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be at least 1, not {self.count}")
        if self.frames_every < 0:
            raise ValueError(f"frames_every must be 0 or more, not {self.frames_every}")
        if self.guidance_interval is not None:
            lo, hi = self.guidance_interval
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"guidance_interval must satisfy 0 <= lo < hi <= 1, not {self.guidance_interval}")


@dataclass
class ItemResult:
    """The outcome for one item: images (and frames per image), a user error, or cancelled."""

    item_id: str
    images: list[Image] = field(default_factory=list)
    frames: list[list[Image]] = field(default_factory=list)
    error: UserError | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled


def split_in_halves(items: Sequence[_T]) -> tuple[list[_T], list[_T]]:
    """Split a batch that did not fit into two halves (the first gets the extra item)."""
    if len(items) < 2:
        raise ValueError("a batch of fewer than two items cannot be split")
    middle = (len(items) + 1) // 2
    return list(items[:middle]), list(items[middle:])
