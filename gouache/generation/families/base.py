"""What the one denoising loop asks of a model family, and the parts every family shares.

diffusers writes one pipeline class per family; gouache batches lanes of many requests in one
loop (``loop/running.py``), so a family is instead one small object the loop asks for what
differs: how prompts become denoiser inputs (and what an empty negative prompt means), the
latent shape and initial latents, the denoiser call over a set of rows with a timestep per row,
which samplers apply, and how latents become pixels (scaling, shift, the fp32 upcast rule).
LCM-style guidance embeddings, ControlNet and CADS are options a family's inputs carry, never
branches of the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from gouache import messages
from gouache.errors import InvalidRequest

if TYPE_CHECKING:
    from gouache.config import ModelSpec
    from gouache.generation.loop.batch import BatchItem, LaneSpec
    from gouache.generation.loop.conditioning import Conditioning

__all__ = ["Family", "LoadedModel", "Rows"]


@dataclass
class LoadedModel:
    """One model's components on its device; shared by every batch that names it."""

    name: str
    spec: ModelSpec
    family: Family
    device: torch.device  # the denoiser's, the VAE's
    dtype: torch.dtype
    tokenizers: tuple[Any, ...]
    text_encoders: tuple[torch.nn.Module, ...]
    denoiser: torch.nn.Module  # the UNet or transformer
    vae: torch.nn.Module
    scheduler_config: dict[str, Any]
    force_zeros_for_empty_prompt: bool = False
    # model_index.json's own settings, not its parts (Flux2KleinPipeline's ``is_distilled``)
    pipeline_config: dict[str, Any] = field(default_factory=dict)
    controlnet: torch.nn.Module | None = None
    preview_decoder: torch.nn.Module | None = None
    clip_path: str | None = None
    image_encoder_path: str | None = None  # semantic embeddings for /diversity
    style_encoder_path: str | None = None  # Gram style features for /diversity
    label: str = field(default="")
    # How the denoiser is called (the module itself, or speed.BucketedUNet when compiled) and
    # whether lanes of one scheduler class are stepped together: set by speed.apply_speed_options.
    denoiser_call: Any = field(init=False)
    batched_steps: bool = False
    loras: Any = None  # the LoraBank (generation/loras/bank.py) when the worker has LoRAs
    # Where the text encoders run (``text_encoder_device``): ``device``, or the CPU to leave
    # the card to the denoiser. None: ``device``.
    text_device: torch.device = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.denoiser_call = self.denoiser
        if self.text_device is None:
            self.text_device = self.device

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass
class Rows:
    """The inputs of one denoiser call over a set of lanes, laid out row by row.

    ``inputs`` holds every named conditioning tensor the family's ``encode`` made, concatenated
    over the rows (the family knows what each name means to its denoiser).
    """

    sample: torch.Tensor
    timesteps: torch.Tensor  # one per row
    inputs: dict[str, torch.Tensor]
    control_rows: torch.Tensor | None  # rows that belong to lanes with a control image
    control: torch.Tensor | None  # their control images, in control_rows order
    control_scale: torch.Tensor | None  # their conditioning scales (each item's --strength)
    loras: tuple[str, ...] = ()  # the LoRAs any row uses, the columns of lora_scales
    lora_scales: torch.Tensor | None = None  # (rows, len(loras)): each row's scale, 0 unused


class Family:
    """One model family. Subclasses fill in the abstract parts; instances hold no state."""

    name: ClassVar[str]
    pipeline_classes: ClassVar[tuple[str, ...]]  # model_index.json ``_class_name`` values
    text_parts: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder")
    denoiser_part: ClassVar[str] = "unet"
    single_file: ClassVar[bool] = False  # whether diffusers' from_single_file reads it
    sampler_kind: ClassVar[str] = "eps"  # which samplers of loop/samplers.py apply ("eps", "flow")
    # Whether speed.compile applies: loop/speed.BucketedUNet pads a UNet-style call (the rows
    # positional, every row-leading tensor a tensor); a transformer called otherwise runs eager.
    compilable: ClassVar[bool] = False
    # ``dtype = "auto"`` on CUDA (float32 elsewhere): the UNets' fp16; the transformers' bf16,
    # the precision they were trained and released in (fp16 overflows in their activations).
    cuda_dtype: ClassVar[torch.dtype] = torch.float16

    # -- what a request may ask --------------------------------------------------------------

    def check(self, model: LoadedModel, spec: LaneSpec) -> None:
        """The user's errors specific to this family, raised before any work."""
        from gouache.generation.loop.samplers import sampler_entry, samplers_of_kind

        if sampler_entry(spec.sampler).kind != self.sampler_kind:
            raise InvalidRequest(messages.sampler_not_for_family(
                spec.sampler, model.name, self.name, self.sampler_kind, samplers_of_kind(self.sampler_kind)))  # fmt: skip
        if spec.pipeline == "depth" and model.controlnet is None:
            raise InvalidRequest(messages.no_depth_controlnet(model.name))

    def uses_cfg(self, model: LoadedModel, spec: LaneSpec) -> bool:
        """Whether a lane takes an unconditional row (classifier-free guidance)."""
        return spec.guidance > 1

    def cfg_scale(self, model: LoadedModel, spec: LaneSpec) -> float:
        """The scale ``uncond + scale * (cond - uncond)`` takes for a CFG lane (Z-Image's
        ``cond + g * (cond - uncond)`` is scale ``g + 1``)."""
        return spec.guidance

    def schedule(self, model: LoadedModel, steps: int, width: int, height: int) -> dict[str, Any]:
        """What ``scheduler.set_timesteps`` takes beyond the step count (a flow model's sigmas
        and resolution-dependent shift ``mu``, as its pipeline computes them)."""
        return {}

    # -- inputs ------------------------------------------------------------------------------

    def prompt(
        self, model: LoadedModel, items: Sequence[BatchItem], spec: LaneSpec, cfg: bool,
        width: int, height: int,
    ) -> Conditioning:  # fmt: skip
        """``encode`` on the text encoders' device, its tensors then on the denoiser's (they
        differ with ``text_encoder_device = "cpu"``): what the loop calls."""
        return self.encode(model, items, spec, cfg, width, height).to(model.device)

    def encode(
        self, model: LoadedModel, items: Sequence[BatchItem], spec: LaneSpec, cfg: bool,
        width: int, height: int,
    ) -> Conditioning:  # fmt: skip
        """The item's conditioning, computed on ``model.text_device`` (where the text encoders
        are); ``prompt`` moves it to the denoiser."""
        raise NotImplementedError

    def latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        """One image's latent shape, batch dimension first."""
        raise NotImplementedError

    def initial_latents(self, model: LoadedModel, noise: torch.Tensor, scheduler: Any) -> torch.Tensor:
        """A lane's starting latents from its seed's noise (diffusers' ``prepare_latents``)."""
        return noise * scheduler.init_noise_sigma

    # -- the denoiser ------------------------------------------------------------------------

    def predict(self, model: LoadedModel, rows: Rows) -> torch.Tensor:
        """The denoiser's prediction for every row (one call, a timestep per row)."""
        raise NotImplementedError

    # -- pixels ------------------------------------------------------------------------------

    def decode(self, model: LoadedModel, latents: torch.Tensor, tiled: bool = False) -> torch.Tensor:
        """Latents to [-1, 1] images."""
        raise NotImplementedError

    def encode_image(self, model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images to latents (the mean of the VAE's posterior), for forward noising."""
        raise NotImplementedError

    def encode_posterior(
        self, model: LoadedModel, pixels: torch.Tensor, tiled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[-1, 1] images to the VAE posterior's (mean, std), for image-to-image lanes."""
        raise NotImplementedError

    def decode_frames(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        """Denoising frames: the cheap preview decoder when configured, else ``decode``."""
        decoder = model.preview_decoder
        if decoder is not None:
            return decoder.decode(latents / decoder.config.scaling_factor, return_dict=False)[0]
        return self.decode(model, latents)
