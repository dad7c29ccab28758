"""Trains the built-in demo models from a seed: ``make demo-models``.

    python -m tools.demo.train --out gouache/models/demo --seed 0 [--resume]
        [--phase all|unet|controlnet|clip|judge] [--minutes N]

Phases, in order: the text encoder and UNet jointly (epsilon prediction on a cosine schedule,
10% empty captions for classifier-free guidance, EMA, min-SNR weighting); the depth ControlNet
on the frozen EMA UNet; the tiny CLIPModel, contrastively; the judge (an attribute classifier
on rendered scenes, for benchmarks/demo_quality.py). Each phase stops at its step count
(reproducible from ``--seed``) or when ``--minutes`` runs out, checkpoints to ``--workdir``
every few minutes, resumes from there with ``--resume`` and exports the EMA weights to
``--out`` regularly. Not part of CI: hours on a CPU, minutes on a GPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .components import build_scheduler, build_text_encoder, build_tokenizer, build_unet
from .export import export_pipeline, record
from .objective import diffusion_loss, encode
from .training import (
    Clock,
    Ema,
    log,
    make_batch,
    resume,
    steps,
    stop_requested,
)

__all__ = ["main", "train_unet", "learning_rate"]


def learning_rate(args: argparse.Namespace, step: int) -> float:
    """Warm-up, constant, then linear decay to a tenth from ``--lr-decay-from`` to the end."""
    start = args.unet_steps if args.lr_decay_from is None else args.lr_decay_from
    decay = 1.0 - 0.9 * max(0, step - start) / max(args.unet_steps - start, 1)
    return args.lr * min(1.0, (step + 1) / 200) * decay


def train_unet(args: argparse.Namespace) -> None:
    tokenizer = build_tokenizer()
    models = torch.nn.ModuleDict({
        "text": build_text_encoder(len(tokenizer), seed=args.seed),
        "unet": build_unet(seed=args.seed),
    })
    opt = torch.optim.AdamW(models.parameters(), lr=args.lr, weight_decay=0.01)
    ema = Ema(models, decay=0.999)
    ckpt_path = args.workdir / "unet.pt"
    parts = {"models": models, "opt": opt, "ema": ema}
    start = resume(ckpt_path, "unet", parts) if args.resume else 0
    noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
    clock, last_loss, t0, done = Clock(args.minutes), 0.0, time.monotonic(), start

    def checkpoint(step: int) -> None:
        checkpoint(ckpt_path, parts, step)

    def export(step: int) -> None:
        export_pipeline(args.out, tokenizer, ema.module["text"], ema.module["unet"])
        record(args.out, "unet", {"seed": args.seed, "steps": step, "batch": args.batch,
                                  "images": step * args.batch, "lr": args.lr,
                                  "unet_steps": args.unet_steps,
                                  "lr_decay_from": args.lr_decay_from})
        log(f"exported pipeline at step {step}")

    models.train()
    for step in steps(start, args.unet_steps, clock):
        for group in opt.param_groups:
            group["lr"] = learning_rate(args, step)
        batch = make_batch(args.seed, step, args.batch, empty_fraction=0.1)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        hidden = encode(tokenizer, models["text"], batch.captions)
        loss = diffusion_loss(noise_scheduler,
                              lambda x, t, h=hidden: models["unet"](x, t, h).sample, batch.images, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models.parameters(), 1.0)
        opt.step()
        ema.update(models)
        done = step + 1
        last_loss = 0.98 * last_loss + 0.02 * loss.item() if step > start else loss.item()
        if step % 100 == 0:
            rate = (step + 1 - start) * args.batch / (time.monotonic() - t0)
            log(f"unet step {step} loss {last_loss:.4f} ({rate:.1f} images/s)")
        if clock.every("checkpoint", args.checkpoint_minutes * 60):
            checkpoint(done)
        if clock.every("export", args.export_minutes * 60):
            export(done)
    checkpoint(done)
    export(done)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("gouache/models/demo"))
    p.add_argument("--workdir", type=Path, default=Path("data/demo-train"),
                   help="checkpoints (optimizer state included) for --resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--phase", choices=["all", "unet", "controlnet", "clip", "judge"], default="all")
    p.add_argument("--minutes", type=float, default=None, help="time cap for each phase")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--unet-steps", type=int, default=10_500)
    p.add_argument("--lr-decay-from", type=int, default=4_000)
    p.add_argument("--controlnet-steps", type=int, default=8_000)
    p.add_argument("--clip-steps", type=int, default=3_125)
    p.add_argument("--follow-unet", action="store_true",
                   help="controlnet phase: reload the UNet export as a concurrent UNet run updates it")
    p.add_argument("--judge-steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--export-minutes", type=float, default=10.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.phase in ("all", "unet"):
        train_unet(args)
    if args.phase in ("all", "controlnet") and not stop_requested():
        from .controlnet_training import train_controlnet

        train_controlnet(args)
    if args.phase in ("all", "clip") and not stop_requested():
        from .clip_training import train_clip

        train_clip(args)
    if args.phase in ("all", "judge") and not stop_requested():
        from .judge import rendered_accuracy, save_judge, train_judge

        judge = train_judge(steps=args.judge_steps, seed=args.seed + 123)
        save_judge(judge, args.out / "judge")
        accuracy = rendered_accuracy(judge)
        record(args.out, "judge", {"seed": args.seed + 123, "steps": args.judge_steps,
                                   "rendered_heldout_accuracy": accuracy})
        log(f"judge accuracy on rendered held-out scenes: {accuracy}")


if __name__ == "__main__":
    main()
