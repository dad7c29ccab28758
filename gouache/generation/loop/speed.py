"""Speed options for the denoiser, each measured by ``benchmarks/speed.py``.

``SpeedOptions`` is what a ``ModelRegistry`` applies to every model it loads:

- ``channels_last``: the UNet and ControlNet weights in NHWC memory format (convolutions are
  most of the UNet's time; oneDNN on CPU and cuDNN on CUDA both prefer NHWC).
- ``compile``: ``torch.compile`` of the UNet, called through ``BucketedUNet``, which pads the
  batch to the next bucket (1, 2, 4, ...) so a running batch whose row count changes every step
  compiles once per bucket instead of once per row count. The worker compiles the default
  model's buckets at warm-up, before it claims work (``loop/warmup.py``); a compile that fails
  later, inside a request, falls back to the eager UNet instead of failing the batch.
- ``batched_steps``: lanes that share a stateless scheduler class, its configuration and their
  position in the same schedule are stepped by one ``scheduler.step`` over their stacked rows
  instead of one call per lane (``lanes.advance_lanes``).

SDPA is not an option: ``ensure_sdpa`` puts PyTorch's ``scaled_dot_product_attention``
processor on every diffusers attention layer that uses the classic one, and
``attention_report`` says what each part runs, for the worker's start-up log.
``resolve_speed`` turns the configured ``auto`` values into the measured defaults
(``resolve_speed(Speed())``: what gouache ships).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from gouache import messages
from gouache.config import DEFAULT_COMPILE_BUCKETS, Speed
from gouache.errors import CompileError
from gouache.generation.families.base import LoadedModel

__all__ = [
    "EAGER",
    "BucketedUNet",
    "SpeedOptions",
    "apply_speed_options",
    "attention_report",
    "ensure_sdpa",
    "resolve_speed",
]

log = logging.getLogger(__name__)

Switch = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class SpeedOptions:
    """Resolved switches (no ``auto`` left); ``EAGER`` is plain PyTorch as loaded."""

    channels_last: bool = False
    compile: bool = False
    compile_buckets: tuple[int, ...] = DEFAULT_COMPILE_BUCKETS
    batched_steps: bool = False


EAGER = SpeedOptions()


def resolve_speed(speed: Speed) -> SpeedOptions:
    """``auto`` -> what ``benchmarks/results/speed.json`` showed to pay.

    Measured on the 2-core CPU (the table in the README): channels_last pays; torch.compile
    costs about a minute per bucket at start-up for a small steady-state gain, so ``auto`` leaves
    it off everywhere (a long-running CUDA worker may turn it on); batched scheduler steps are
    exact and never slower. On CUDA, channels_last follows diffusers' guidance for SD UNets
    (``benchmarks/throughput.py --gpu`` measures it when a GPU is lent).
    """

    def pick(value: Switch, auto: bool) -> bool:
        return auto if value == "auto" else value == "on"

    if speed.compile == "on" and (missing := compile_missing()) is not None:
        raise CompileError(messages.compile_unavailable(missing))

    return SpeedOptions(
        channels_last=pick(speed.channels_last, True),
        compile=pick(speed.compile, False),
        compile_buckets=tuple(sorted(set(speed.compile_buckets))),
        batched_steps=pick(speed.batched_steps, True),
    )


def compile_missing() -> str | None:
    """Why ``torch.compile`` cannot work here (None when it can): Inductor builds its kernels
    with a compiler, Triton's launchers with a C compiler on CUDA (``CC``, ``cc``, ``gcc`` or
    ``clang``, as Triton looks), the C++ kernels with a C++ one on the CPU (``CXX`` or ``g++``,
    as Inductor looks). The container image carries ``gcc`` and ``g++`` (Dockerfile)."""
    import os
    import shutil

    if torch.cuda.is_available():
        compilers = [os.environ.get("CC", ""), "cc", "gcc", "clang"]
        if not any(c and shutil.which(c) for c in compilers):
            return "no C compiler (cc, gcc or clang) on PATH for Triton"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "the triton package is not installed"
    elif not shutil.which(os.environ.get("CXX") or "g++"):
        return f"no C++ compiler ({os.environ.get('CXX') or 'g++'}) on PATH for Inductor's CPU kernels"
    return None


def apply_speed_options(model: LoadedModel, options: SpeedOptions) -> None:
    """Put ``options`` on a freshly loaded model (in place) and log what its parts run."""
    ensure_sdpa(model)
    if options.channels_last:
        for module in (model.denoiser, model.controlnet):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if options.compile and model.family.compilable:
        model.denoiser_call = BucketedUNet(model.denoiser, options.compile_buckets, name=model.name)
    elif options.compile:  # its call passes the rows by keyword or as a list: not padded here
        log.warning("model %s: speed.compile applies to UNet models only; the %s denoiser "
                    "runs eager", model.name, model.family.name)  # fmt: skip
    model.batched_steps = options.batched_steps
    log.info("model %s: %s, %s", model.name, options, attention_report(model))


def ensure_sdpa(model: LoadedModel) -> None:
    """Every diffusers attention layer on PyTorch's fused SDPA kernel, where it has the classic
    processor (diffusers picks SDPA by default; a model saved or patched otherwise may not)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    for module in _attention_modules(model):
        processors = module.attn_processors
        if any(type(p) is AttnProcessor for p in processors.values()):
            module.set_attn_processor(
                {
                    name: AttnProcessor2_0() if type(p) is AttnProcessor else p
                    for name, p in processors.items()
                }
            )


def attention_report(model: LoadedModel) -> dict[str, str]:
    """Which attention implementation each part of ``model`` runs (class names, or the
    transformers ``attn_implementation`` of the text encoders)."""
    report = {}
    for part, module in _parts(model):
        if hasattr(module, "attn_processors"):
            kinds = sorted({type(p).__name__ for p in module.attn_processors.values()})
            report[part] = ",".join(kinds) or "none"
        elif hasattr(module, "config"):
            report[part] = str(getattr(module.config, "_attn_implementation", "unknown"))
    return report


def _parts(model: LoadedModel) -> list[tuple[str, Any]]:
    parts = [("denoiser", model.denoiser), ("vae", model.vae), ("controlnet", model.controlnet)]
    parts += [(f"text_encoder_{i}", m) for i, m in enumerate(model.text_encoders)]
    return [(name, module) for name, module in parts if module is not None]


def _attention_modules(model: LoadedModel) -> list[Any]:
    return [m for _, m in _parts(model) if hasattr(m, "attn_processors")]


class BucketedUNet(torch.nn.Module):
    """``torch.compile(unet)`` called with the batch padded to the next bucket.

    Rows are independent in a UNet (GroupNorm, attention and convolutions all work per sample),
    so padding with copies of the last row and slicing the output changes nothing for the real
    rows. Row counts above the largest bucket run the eager UNet. Padding wastes at most half a
    bucket of rows; recompiling per row count would cost a compile per distinct count.

    A compile that fails (no working compiler, an Inductor error) sets ``failure`` and every call
    from then on runs the eager UNet: the batch that met it goes on, and the warm-up
    (``loop/warmup.py``) reads ``failure`` to refuse the worker's start.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        buckets: Sequence[int],
        compiler: Callable[..., Any] = torch.compile,
        *,
        name: str = "",
    ) -> None:
        super().__init__()
        if not buckets or min(buckets) < 1:
            raise ValueError(f"compile buckets must be positive row counts, not {buckets!r}")
        self.unet = unet
        self.buckets = tuple(sorted(set(buckets)))
        import torch._dynamo

        # One graph per bucket and call form (dynamic=False): plain rows, rows with depth
        # ControlNet residuals, SDXL's added conditions. Dynamo's limit (8 by default) is per
        # code object, so every loaded model of the UNet class shares it, and past it dynamo
        # runs eager with only a warning: leave room for a few models.
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, 8 * len(self.buckets))
        self.compiled = compiler(unet, dynamic=False)
        self.name = name  # the model's, for the log
        self.failure: str | None = None  # why compiling failed; the eager UNet runs from then on

    @property
    def config(self) -> Any:
        return self.unet.config

    def bucket(self, rows: int) -> int | None:
        """The smallest bucket that holds ``rows``, or None above the largest."""
        return next((b for b in self.buckets if b >= rows), None)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, **kwargs: Any) -> tuple:
        rows = sample.shape[0]
        size = self.bucket(rows)
        if size is None or self.failure is not None:
            return self.unet(sample, timestep, **kwargs)
        if timestep.dim() == 0:
            timestep = timestep.expand(rows)
        # One call form for the engine and the running batch, so they share graphs: float
        # timesteps with plain strides (the UNet's time embedding turns them to float anyway; a
        # guard checks strides, and an expanded one-row tensor keeps stride 0 through
        # .contiguous()), and no keyword at None or empty (a guard counts the keywords).
        timestep = timestep.to(torch.float32).clone(memory_format=torch.contiguous_format)
        kwargs = {k: v for k, v in kwargs.items() if v is not None and not _empty(v)}
        padded_sample, padded_timestep, padded_kwargs = _pad_rows((sample, timestep, kwargs), rows, size)
        try:
            out = self.compiled(padded_sample, padded_timestep, **padded_kwargs)
        except Exception as exc:
            if not compile_failed(exc):
                raise
            self.failure = _cause(exc)
            log.error("model %s: torch.compile failed at %d rows, the UNet runs eager from now "
                      "on: %s", self.name, size, self.failure)  # fmt: skip
            return self.unet(sample, timestep, **kwargs)
        return (out[0][:rows],)


def compile_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.compile failing (dynamo or Inductor, a missing compiler
    included), not the compiled UNet running out of memory or losing the device."""
    from torch._dynamo.exc import TorchDynamoException

    from gouache.generation.loop.device import is_out_of_memory, is_sticky

    return isinstance(exc, TorchDynamoException) and not is_out_of_memory(exc) and not is_sticky(exc)


def _cause(exc: BaseException) -> str:
    """What went wrong, in a line: the backend's own error (dynamo wraps it in a page of advice)."""
    inner = getattr(exc, "inner_exception", None) or exc
    lines = str(inner).strip().splitlines()
    text = lines[0] if lines else ""
    name = type(inner).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _empty(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple)) and not value


def _pad_rows(value: Any, rows: int, size: int) -> Any:
    """Every tensor in ``value`` (nested tuples, lists, dicts) whose first dimension is ``rows``,
    padded to ``size`` rows with copies of its last row, in the default (NCHW) memory format: a
    guard checks strides, and ControlNet residuals come channels_last or not depending on
    whether every row had one."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != rows:
            return value
        if size > rows:
            value = torch.cat([value, value[-1:].expand(size - rows, *value.shape[1:])])
        return value.contiguous()
    if isinstance(value, dict):
        return {k: _pad_rows(v, rows, size) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_pad_rows(v, rows, size) for v in value)
    return value
