"""Phase 2: the depth ControlNet, trained on the world's exact depth maps.

Initialised from the exported UNet (``ControlNetModel.from_unet``) and trained against it
frozen, as in Zhang et al. (2023). With ``--follow-unet`` it runs beside the UNet phase and
reloads the UNet's latest export every ``--export-minutes``, tracking it as it improves. The demo model works in pixel space (f1), so the
conditioning embedding must not downsample: one block of 16 channels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import ControlNetModel, DDPMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file

from .export import export_controlnet, record
from .objective import diffusion_loss, encode
from .training import Clock, Ema, checkpoint, log, make_batch, resume, steps

__all__ = ["train_controlnet"]


def _reload(folder: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
    """Pick up the UNet phase's latest export, when both phases run side by side."""
    try:
        unet.load_state_dict(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"))
        text_encoder.load_state_dict(load_file(folder / "text_encoder" / "model.safetensors"),
                                     strict=False)
        log("controlnet: reloaded the latest exported UNet")
    except (OSError, RuntimeError) as exc:  # mid-swap: try again at the next reload
        log(f"controlnet: reload skipped ({exc})")


def train_controlnet(args: argparse.Namespace) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(args.out / "pipeline", safety_checker=None)
    unet, text_encoder, tokenizer = pipe.unet.eval(), pipe.text_encoder.eval(), pipe.tokenizer
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    torch.manual_seed(args.seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,))
    controlnet.train()
    opt = torch.optim.AdamW(controlnet.parameters(), lr=args.lr / 2, weight_decay=0.01)
    ema = Ema(controlnet, decay=0.998)
    ckpt_path = args.workdir / "controlnet.pt"
    parts = {"model": controlnet, "opt": opt, "ema": ema}
    start = resume(ckpt_path, "controlnet", parts) if args.resume else 0
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    clock, t0, done = Clock(args.minutes), time.monotonic(), start

    def predict(hidden: torch.Tensor, depth: torch.Tensor):  # noqa: ANN202
        def run(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            down, mid = controlnet(x, t, hidden, controlnet_cond=depth, return_dict=False)
            return unet(x, t, hidden, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
        return run

    def save(step: int, final: bool = False) -> None:
        checkpoint(ckpt_path, parts, step)
        if final or clock.every("export", args.export_minutes * 60):
            export_controlnet(args.out, ema.module)
            record(args.out, "controlnet", {"seed": args.seed, "steps": step, "batch": args.batch})
            log(f"exported controlnet at step {step}")

    for step in steps(start, args.controlnet_steps, clock):
        if args.follow_unet and clock.every("reload", args.export_minutes * 60):
            _reload(args.out / "pipeline", unet, text_encoder)
        batch = make_batch(args.seed + 1, step, args.batch, empty_fraction=0.1)
        gen = torch.Generator().manual_seed(args.seed * 1_000_033 + step)
        with torch.no_grad():
            hidden = encode(tokenizer, text_encoder, batch.captions)
        loss = diffusion_loss(noise_scheduler, predict(hidden, batch.depth), batch.images, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        opt.step()
        ema.update(controlnet)
        done = step + 1
        if step % 100 == 0:
            rate = (done - start) * args.batch / (time.monotonic() - t0)
            log(f"controlnet step {step} loss {loss.item():.4f} ({rate:.1f} images/s)")
        if clock.every("checkpoint", args.checkpoint_minutes * 60):
            save(done)
    save(done, final=True)
