"""What the UNet families (SD 1.x/2.x and SDXL) share: the UNet + ControlNet call, the VAE.

Adapted from diffusers 0.42.1 ``StableDiffusionPipeline.__call__``,
``StableDiffusionXLPipeline.__call__`` and ``StableDiffusionControlNetPipeline.__call__``
(steps 5, 7, 8.3-8.4 and the decode), with a timestep per row and ControlNet on its rows only.
``tests/unit/generation/test_parity.py`` holds the result to those pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.families.base import Family, Rows
from gouache.generation.loras.apply import row_loras

if TYPE_CHECKING:
    from PIL.Image import Image

    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import LaneSpec

__all__ = ["UNetFamily", "guidance_embedding", "prepare_control"]


class UNetFamily(Family):
    """A latent-diffusion UNet family with an ``AutoencoderKL`` and optional depth ControlNet."""

    upcast_vae: bool = False  # keep the VAE in fp32 (at load) when its config says force_upcast
    compilable = True

    def uses_cfg(self, model: LoadedModel, spec: LaneSpec) -> bool:
        # As diffusers: CFG off for guidance <= 1 and for guidance-distilled (LCM) UNets.
        return spec.guidance > 1 and model.denoiser.config.time_cond_proj_dim is None

    def latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        factor = model.vae_scale_factor
        return (1, model.denoiser.config.in_channels, height // factor, width // factor)

    def guidance_inputs(self, model: LoadedModel, spec: LaneSpec) -> dict[str, torch.Tensor]:
        """LCM-distilled UNets take the guidance scale as an embedding (step 7)."""
        dim = model.denoiser.config.time_cond_proj_dim
        if dim is None:
            return {}
        w = torch.tensor([spec.guidance - 1])
        return {"timestep_cond": guidance_embedding(w, dim).to(model.text_device, model.dtype)}

    def unet_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The UNet's keyword arguments from the rows' named inputs (SDXL adds its own)."""
        return {"encoder_hidden_states": inputs["encoder_hidden_states"],
                "timestep_cond": inputs.get("timestep_cond"), "added_cond_kwargs": None}  # fmt: skip

    def predict(self, model: LoadedModel, rows: Rows) -> torch.Tensor:
        kwargs = self.unet_kwargs(rows.inputs)
        residuals: dict[str, Any] = {}
        if rows.control_rows is not None:
            residuals = self._control_residuals(model, rows, kwargs)
        with row_loras(model, rows):  # each row's own LoRAs at its own scales
            return model.denoiser_call(
                rows.sample, rows.timesteps, **kwargs, return_dict=False, **residuals
            )[0]

    def _control_residuals(
        self, model: LoadedModel, rows: Rows, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """ControlNet on the rows that have a control image; zeros for the others."""
        picked = rows.control_rows
        assert picked is not None and rows.control is not None
        added = kwargs["added_cond_kwargs"]
        down, mid = model.controlnet(
            rows.sample[picked],
            rows.timesteps[picked],
            encoder_hidden_states=kwargs["encoder_hidden_states"][picked],
            controlnet_cond=rows.control,
            conditioning_scale=1.0,
            guess_mode=False,
            added_cond_kwargs={k: v[picked] for k, v in added.items()} if added else None,
            return_dict=False,
        )
        if rows.control_scale is not None:  # per-row conditioning scale (--strength)
            scale = rows.control_scale.to(mid.dtype).view(-1, 1, 1, 1)
            down, mid = [d * scale for d in down], mid * scale
        total = len(rows.sample)
        if len(picked) < total:
            down = [_scatter(d, picked, total) for d in down]
            mid = _scatter(mid, picked, total)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    # -- pixels ------------------------------------------------------------------------------

    def unscale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        """Latents as the VAE reads them (SD: divided by the scaling factor)."""
        return latents / model.vae.config.scaling_factor

    def scale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of ``unscale``: VAE latents as the denoiser sees them."""
        return latents * model.vae.config.scaling_factor

    def decode(self, model: LoadedModel, latents: torch.Tensor, tiled: bool = False) -> torch.Tensor:
        # A force_upcast VAE was put in fp32 once at load (models.py): the latents follow it,
        # the shared VAE is never cast here.
        from gouache.generation.loop.decoding import tiled_vae

        vae = model.vae
        latents = self.unscale(model, latents.to(vae.dtype))
        with tiled_vae(vae, latents, tiled):
            return vae.decode(latents, return_dict=False)[0]

    def encode_posterior(
        self, model: LoadedModel, pixels: torch.Tensor, tiled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[-1, 1] images to the VAE posterior's (mean, std), unscaled: an image-to-image
        lane samples it with its own generator (``lanes.start_from_image``). The fp32 upcast
        follows ``StableDiffusionXLImg2ImgPipeline.prepare_latents``."""
        vae = model.vae
        upcast = self.upcast_vae and vae.dtype == torch.float16 and vae.config.force_upcast
        pixels = pixels.to(model.device, model.dtype)
        if upcast:
            vae.to(dtype=torch.float32)
            pixels = pixels.float()
        if tiled:
            vae.enable_tiling()
        try:
            posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
            return posterior.mean, posterior.std
        finally:
            if tiled:
                vae.disable_tiling()
            if upcast:
                vae.to(dtype=torch.float16)

    def encode_image(self, model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
        vae = model.vae
        mean = vae.encode(pixels.to(model.device, vae.dtype)).latent_dist.mean
        return self.scale(model, mean)


def prepare_control(model: LoadedModel, images: Sequence[Image], height: int, width: int) -> torch.Tensor:
    """Adapted from ``StableDiffusionControlNetPipeline.prepare_image``: resized, in [0, 1]."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(
        vae_scale_factor=model.vae_scale_factor, do_convert_rgb=True, do_normalize=False
    )
    image = torch.cat([processor.preprocess(i, height=height, width=width) for i in images])
    # preprocess hands back channels-last strides (a PIL image is HWC); the pipeline's
    # repeat_interleave makes them contiguous, and in half precision a channels-last input
    # takes another conv kernel that rounds differently (bfloat16 on CPU: 2 ULP apart).
    image = image.contiguous()
    return image.to(dtype=torch.float32).to(device=model.device, dtype=model.controlnet.dtype)


def guidance_embedding(w: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """Adapted from diffusers ``StableDiffusionPipeline.get_guidance_scale_embedding``."""
    w = w * 1000.0
    half_dim = embedding_dim // 2
    emb = torch.log(torch.tensor(10000.0)) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -emb)
    emb = w.to(torch.float32)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def _scatter(values: torch.Tensor, rows: torch.Tensor, total: int) -> torch.Tensor:
    full = values.new_zeros((total, *values.shape[1:]))
    return full.index_copy(0, rows, values)
