"""Phase 3: a tiny ``CLIPModel`` trained contrastively on the world's images and captions.

It gives the demo model what a real deployment's CLIP gives it: CLIP score, semantic Vendi
and FID/KID features, on images a generic CLIP would never have seen.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from .components import MAX_TOKENS, RESOLUTION, build_tokenizer
from .export import export_clip, record
from .training import Clock, checkpoint, log, make_batch, resume, steps

__all__ = ["build_clip", "train_clip", "clip_pixels"]


def build_clip(vocab_size: int, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    text = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    vision = CLIPVisionConfig(
        hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
        image_size=RESOLUTION, patch_size=4,
    )
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                projection_dim=64))


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images are already what the exported processor (mean = std = 0.5) produces."""
    return images


def train_clip(args: argparse.Namespace) -> None:
    tokenizer = build_tokenizer()
    model = build_clip(len(tokenizer), seed=args.seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    ckpt_path = args.workdir / "clip.pt"
    parts = {"model": model, "opt": opt}
    start = resume(ckpt_path, "clip", parts) if args.resume else 0
    clock, t0, done = Clock(args.minutes), time.monotonic(), start
    batch_size = max(args.batch * 2, 64)

    def save(step: int, final: bool = False) -> None:
        checkpoint(ckpt_path, parts, step)
        if final or clock.every("export", args.export_minutes * 60):
            export_clip(args.out, model, tokenizer)
            record(args.out, "clip", {"seed": args.seed, "steps": step, "batch": batch_size})
            log(f"exported clip at step {step}")

    for step in steps(start, args.clip_steps, clock):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 200)
        batch = make_batch(args.seed + 2, step, batch_size, split="any")
        ids = tokenizer(batch.captions, padding="max_length", max_length=MAX_TOKENS,
                        truncation=True, return_tensors="pt").input_ids
        out = model(input_ids=ids, pixel_values=clip_pixels(batch.images), return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if step % 100 == 0:
            rate = (done - start) * batch_size / (time.monotonic() - t0)
            log(f"clip step {step} loss {out.loss.item():.4f} ({rate:.1f} images/s)")
        if clock.every("checkpoint", args.checkpoint_minutes * 60):
            save(done)
    save(done, final=True)
