"""Every string a user reads, as small functions.

One place to reword, translate or test them. Values typed by users are shortened before they
are echoed, so a hostile 4,000-character option cannot flood a channel. Platform escaping
(Discord mentions, Slack ``& < >``) stays the adapters' job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "reply_takes_no_image",
    "npy_is_not_an_image",
    "shorten",
    "duration",
    "number",
    "queued",
    "generator_not_running",
    "no_worker_yet",
    "worker_scaling_up",
    "worker_starting",
    "no_worker_since_start",
    "no_heartbeat_for",
    "worker_restarts",
    "started",
    "rate_limited",
    "queue_full",
    "user_queue_full",
    "guild_queue_full",
    "not_allowed",
    "failed",
    "dead",
    "cancelled",
    "internal_error",
    "prompt_empty",
    "prompt_too_long",
    "demo_not_installed",
    "prompt_too_many_chars",
    "control_character",
    "unknown_model",
    "unknown_sampler",
    "unknown_option",
    "unknown_command",
    "no_file_here",
    "guidance_rounded",
    "missing_value",
    "duplicate_option",
    "conflicting_options",
    "only_with",
    "bad_value",
    "out_of_range",
    "aspect_ratio_out_of_range",
    "size_too_large",
    "snapped",
    "aspect_ratio_result",
    "queue_paused",
    "paused",
    "resumed",
    "already_paused",
    "not_paused",
    "admin_only",
    "limits_reset",
    "usage_report",
    "your_queue",
    "nothing_queued",
    "nothing_to_cancel",
    "error_in_dm",
    "reencoded_to_fit",
    "too_large_links",
    "too_large_here",
    "unknown_family",
    "unknown_pipeline_class",
    "no_depth_controlnet",
    "depth_image_required",
    "unknown_pipeline",
    "steps_too_few",
    "size_not_multiple_of_8",
    "out_of_memory_alone",
    "human_size",
    "file_too_large",
    "image_file_empty",
    "image_too_many_pixels",
    "not_an_image",
    "image_damaged",
    "image_truncated",
    "image_no_pixels",
    "image_pixels_over",
    "upload_empty",
    "upload_is_other",
    "upload_unknown_kind",
    "upload_animated",
    "upload_exif_too_large",
    "upload_cmyk",
    "upload_palette",
    "upload_one_bit",
    "png_mode_unsupported",
    "image_mode_unsupported",
    "png_truncated",
    "png_chunk_past_end",
    "png_no_header",
    "png_16bit_colour",
    "png_trailing_data",
    "webp_truncated",
    "webp_trailing_data",
    "npy_not_numbers",
    "npy_dtype",
    "npy_bad_shape",
    "npy_not_2d",
    "npy_empty",
    "depth_map_too_large",
    "npy_size_mismatch",
    "npy_header_damaged",
    "npy_version",
    "input_mode_invalid",
    "npy_is_not_photo",
    "depth_no_finite",
    "depth_flat",
    "depth_nonfinite_taken_far",
    "depth_flipped",
    "photo_without_estimator",
    "depth_estimate_flat",
    "depth_estimated_with",
    "photo_not_depth_map",
    "demo_estimator_not_installed",
    "estimator_cannot_load",
]


def shorten(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for echoing user input."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def duration(seconds: float) -> str:
    """A human duration: ``45 s``, ``3 min``, ``1 h 5 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = math.ceil(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def number(value: float) -> str:
    """A number as users type it: ``7`` rather than ``7.0``, never an exponent for normal sizes."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# Queue and lifecycle -------------------------------------------------------------------------


def queued(
    position: int, eta_seconds: float | None = None, *, generator_running: bool = True,
    generator_starting: bool = False,
) -> str:
    """Acknowledgement after admission; ``position`` 1 means next in line. With no worker
    running there is no honest ETA: the reply says the request waits for one instead."""
    place = "next in line" if position <= 1 else f"#{position} in line"
    if generator_starting:
        return f"Queued: {place}. {worker_starting()}"
    if not generator_running:
        return f"Queued: {place}. {generator_not_running()}"
    eta = f", ready in about {duration(eta_seconds)}" if eta_seconds is not None else ""
    return f"Queued: {place}{eta}."


def generator_not_running() -> str:
    return ("The image generator isn't running right now, so nothing is being drawn; "
            "your request waits in the queue until it is back.")  # fmt: skip


def worker_starting() -> str:
    return "The image generator is starting (loading its models); the first images take a little longer."


def worker_scaling_up() -> str:
    return ("No image generator is running right now; one is being started for your request "
            "(it loads its models first, so this one takes a minute or two longer).")  # fmt: skip


def no_worker_yet() -> str:
    return "No worker has started yet."


def no_worker_since_start(age: float) -> str:
    return (f"No worker has started since the service did (the last heartbeat, "
            f"{duration(age)} ago, came from before the restart).")  # fmt: skip


def no_heartbeat_for(age: float) -> str:
    return f"No worker heartbeat for {duration(age)}."


def worker_restarts(count: int) -> str:
    times = "once" if count == 1 else f"{count} times"
    return (f"The worker process has exited {times} since start-up; the service log says why "
            "(a model that cannot load, for example).")  # fmt: skip


def started() -> str:
    return "Generating…"


def rate_limited(retry_after: float, per_minute: float, burst: int) -> str:
    return (
        f"You're sending requests faster than allowed. Try again in {duration(retry_after)} "
        f"(the limit is {number(per_minute)} per minute, bursts of {burst})."
    )


def queue_full(max_queue: int) -> str:
    return (
        "The queue is full right now. Please try again in a few minutes "
        f"(it holds at most {max_queue} requests)."
    )


def guild_queue_full(limit: int) -> str:
    return (
        f"This server already has {limit} requests waiting or running (its limit). "
        "Try again when some have finished."
    )


def web_group_full(limit: int) -> str:
    return (
        f"The web playground's guests already have {limit} requests waiting or running (their "
        "shared limit). Try again when some have finished."
    )


def web_group_busy(retry_after: float) -> str:
    return (
        "The web playground's guests are sending requests faster than allowed together. "
        f"Try again in {duration(retry_after)}."
    )


_PLATFORM_NAMES = {"web": "the web playground", "discord": "Discord", "slack": "Slack"}


def platform_queue_full(platform: str, limit: int) -> str:
    return (
        f"Requests from {_PLATFORM_NAMES.get(platform, platform)} already fill their share of the queue ({limit} waiting). "
        "Please try again in a few minutes."
    )


def user_queue_full(pending: int, limit: int) -> str:
    return (
        f"You already have {pending} requests waiting (the limit is {limit}). "
        "Wait for one to finish, or cancel one."
    )


def not_allowed(where: str = "here") -> str:
    return f"gouache isn't enabled {where}."


def failed(reason: str) -> str:
    return f"Generation failed: {shorten(reason, 200)}"


def dead(attempts: int, reference: str) -> str:
    return (
        f"Generation failed after {attempts} attempts and was given up "
        f"(ref {reference[:8]}). Please try again later."
    )


def not_your_job() -> str:
    return "You can only cancel your own jobs."


def already_finished() -> str:
    return "That job has already finished."


def cancelled() -> str:
    return "Cancelled."


def internal_error(reference: str) -> str:
    """The apology for a bug: a short job reference so an admin can find the log line."""
    return f"Sorry, something went wrong on our side (ref {reference[:8]}). It has been logged."


# Queue views and admin commands ---------------------------------------------------------------


def queue_paused() -> str:
    return ("gouache is paused by an admin: new requests aren't accepted right now. "
            "Requests already running will finish.")  # fmt: skip


def paused() -> str:
    return "Paused: new requests are refused until someone runs resume; running work finishes."


def resumed() -> str:
    return "Resumed: new requests are accepted again."


def already_paused() -> str:
    return "gouache is already paused."


def not_paused() -> str:
    return "gouache isn't paused."


def admin_only() -> str:
    return "Only gouache admins can do that (configured admin users or roles)."


def limits_reset(user: str, removed: bool) -> str:
    return f"Rate limit reset for {user}." if removed else f"{user} had no rate limit to reset."


def usage_report(hours: int, rows: Iterable[tuple[str, int, int]]) -> str:
    """``rows``: (who, jobs, image-steps), already sorted and named."""
    lines = [f"- {who}: {jobs} job(s), {steps} image-steps" for who, jobs, steps in rows]
    if not lines:
        return f"No jobs in the last {hours} h."
    return f"Usage over the last {hours} h:\n" + "\n".join(lines)


def your_queue(entries: Iterable[tuple[int, str, float | None]]) -> str:
    """``entries``: (position, prompt, eta seconds); position 0 means running."""
    lines = []
    for position, prompt, eta in entries:
        place = "running" if position < 1 else f"#{position} in line"
        when = f", about {duration(eta)}" if eta is not None else ""
        lines.append(f"- {place}{when}: “{prompt}”")
    return "Your requests:\n" + "\n".join(lines)


def nothing_queued() -> str:
    return "You have nothing queued or running."


def nothing_to_cancel() -> str:
    return "You have nothing queued or running to cancel."


def error_in_dm(message: str) -> str:
    return f"About your gouache request: {message}"


def reencoded_to_fit() -> str:
    return "Files were re-encoded to fit the upload limit."


def too_large_links(links: Iterable[str]) -> str:
    return "Too large to upload here:\n" + "\n".join(links)


def too_large_here(count: int) -> str:
    return f"{count} file(s) were too large to upload here."


# Command validation --------------------------------------------------------------------------


def prompt_empty() -> str:
    return "Please describe the image: the prompt is empty."


def prompt_too_long(cut: str, max_tokens: int, *, field: str = "prompt") -> str:
    """The text encoder would silently drop ``cut`` (the end of the user's own text, so it
    reads in any script): show what would be lost and the model's real limit."""
    return (
        f"The {field} is longer than this model reads ({max_tokens} tokens); "
        f"this part would be ignored: “{shorten(cut, 60)}”. Please shorten it."
    )


def demo_not_installed(folder: object) -> str:
    return (
        f"builtin:demo is not installed: {folder} is missing. "
        "Install a gouache build that ships the demo weights, or pick another model."
    )


def prompt_too_many_chars(length: int, limit: int, *, field: str = "prompt") -> str:
    return f"The {field} must be at most {limit} characters (got {length})."


def control_character(field: str, char: str) -> str:
    return f"The {field} contains a control character (U+{ord(char):04X}); please remove it."


def unknown_model(name: str, known: Iterable[str]) -> str:
    return f"Unknown model “{shorten(name)}”. Available models: {', '.join(sorted(known))}."


def unknown_sampler(name: str, known: Iterable[str]) -> str:
    return f"Unknown sampler “{shorten(name)}”. Choose one of: {', '.join(known)}."


def sampler_not_for_family(name: str, model: str, family: str, kind: str, usable: Iterable[str]) -> str:
    how = "a flow-matching model" if kind == "flow" else "a noise-prediction diffusion model"
    return (
        f"Sampler “{shorten(name)}” does not apply to {shorten(model)}: it is a {family} model, "
        f"{how}, which needs a sampler of its kind. Choose one of: {', '.join(usable)}."
    )


def guidance_meaning(model: str, kind: str, guidance: float, negative: bool) -> str:
    ignored = " --no is not used: the model runs no negative-prompt pass." if negative else ""
    if kind == "distilled":
        return (f"--cfg {number(guidance)} is {shorten(model)}'s distilled guidance (an input of "
                f"the model, not classifier-free guidance).{ignored}")
    return f"{shorten(model)} takes no guidance: --cfg has no effect.{ignored}"


def unknown_option(flag: str, known: Iterable[str]) -> str:
    return f"Unknown option {shorten(flag, 24)}. Options are: {', '.join(known)}."


def unknown_command(word: str, commands: Iterable[str]) -> str:
    return (f"Unknown command {shorten(word, 24)}. Commands are: {', '.join(commands)} "
            "(a prompt with no command is an /imagine).")  # fmt: skip


def no_file_here(command: str, takes_files: Iterable[str]) -> str:
    return f"/{command} takes no file: remove it, or use {' or '.join(takes_files)}."


def guidance_rounded(got: float, used: float, decimals: int) -> str:
    return f"Guidance {got!r} was rounded to {used:g} ({decimals} decimal places)."


def missing_value(flag: str, form: str) -> str:
    return f"{flag} needs a value, like {flag} {form}."


def duplicate_option(flag: str) -> str:
    return f"{flag} is given more than once; give it once."


def conflicting_options(first: str, second: str) -> str:
    return f"Use either {first} or {second}, not both."


def only_with(flag: str, command: str) -> str:
    return f"{flag} only works with {command}."


def bad_value(name: str, form: str, got: str) -> str:
    """A value of the wrong shape, e.g. ``--ar must look like 16:9 (got 'wide')``."""
    return f"{name} must be {form} (got “{shorten(got, 24)}”)."


def out_of_range(name: str, low: float, high: float, got: float) -> str:
    """E.g. ``steps must be between 1 and 60 (got 500)``."""
    shown = shorten(number(got), 24)
    return f"{name} must be between {number(low)} and {number(high)} (got {shown})."


def aspect_ratio_out_of_range(ratio: str, widest: int) -> str:
    return (
        f"Aspect ratio must be between 1:{widest} and {widest}:1 for this size limit "
        f"(got {shorten(ratio, 24)})."
    )


def size_too_large(width: int, height: int, max_pixels: int, example: str) -> str:
    return (
        f"Size {width}x{height} is too large: at most {max_pixels:,} pixels "
        f"(for example {example})."
    )


def snapped(width: int, height: int, new_width: int, new_height: int) -> str:
    return f"size {width}x{height} snapped to {new_width}x{new_height} (multiples of 8)"


def aspect_ratio_result(ratio: str, width: int, height: int) -> str:
    return f"aspect ratio {ratio} rounded to {width}x{height} (multiples of 8)"


def size_from_upload(width: int, height: int, upload_width: int, upload_height: int) -> str:
    return (
        f"The output is {width}x{height}, following the shape of the upload "
        f"({upload_width}x{upload_height}); add --ar or --size to choose another."
    )


def depth_map_used(reason: str) -> str:
    return f"The upload was used as a depth map ({reason}); add --input photo if it is a photo."


def photo_used(reason: str) -> str:
    return f"The upload was taken as a photo ({reason}); add --input depth if it is a depth map."


def depth_padded(width: int, height: int, out_width: int, out_height: int) -> str:
    return (
        f"The depth map ({width}x{height}) has another shape than the output "
        f"({out_width}x{out_height}): it was scaled to fit and its edges extended, not stretched."
    )


# Sweeps (`--sweep NAME=v1,v2`) -----------------------------------------------------------------


def sweep_form() -> str:
    return "NAME=v1,v2,... like cfg=3,7,12 (NAME: cfg, steps, sampler, seed, ar, size, strength, prompt)"


def sweep_refused(reason: str) -> str:
    return f"This sweep cannot run: {reason}."


def interpolate_form() -> str:
    return "/interpolate <prompt A> | <prompt B> [--seed A,B] [--frames 16]"


# Generation: what the worker says when a model or a request cannot run --------------------------


def unknown_family(name: str, known: Iterable[str]) -> str:
    return f"Unknown model family {shorten(name)!r}. Choose one of: {', '.join(known)}."


def unknown_pipeline_class(model: str, pipeline: str, known: Iterable[str]) -> str:
    shown = repr(shorten(pipeline)) if pipeline else "no pipeline class"
    return (
        f"Model {shorten(model)!r} is a {shown} folder, which gouache cannot run. It reads: "
        f"{', '.join(known)}; set `family = ...` in its [models] entry if the folder is one of those."
    )


def single_file_unknown_architecture(model: str, kind: str) -> str:
    return (
        f"Model {shorten(model)!r} is a single-file checkpoint of a kind gouache ships no configs "
        f"for ({shorten(kind)}). Set `config = \"FOLDER\"` in its [models] entry to a folder with "
        "the base model's diffusers configs and tokenizers (docs/deploy.md)."
    )


def single_file_needs_tokenizer(model: str, folder: str) -> str:
    return (
        f"Model {shorten(model)!r} is a single-file checkpoint whose tokenizer files are missing "
        f"({shorten(folder, 120)} has no vocab.json). Set `config = \"FOLDER\"` in its [models] "
        "entry to a folder with the base model's small files (docs/deploy.md)."
    )


def single_file_not_supported(model: str, family: str) -> str:
    return (
        f"Model {shorten(model)!r} is a single file, but the {family} family is read only from "
        "a diffusers folder or hub id."
    )


def transformer_file_not_for_family(model: str, family: str) -> str:
    return (
        f"Model {shorten(model)!r} sets `transformer = ...`, but the {family} family has a UNet, "
        "not a transformer: only flux, flux2-klein, sd3 and z-image models take a transformer file."
    )


def gguf_not_installed(model: str) -> str:
    return (
        f"Model {shorten(model)!r} has a .gguf transformer, but the gguf package is not "
        "installed: pip install 'gouache[gguf]'."
    )


def model_load_failed(model: str, cause: str, detail: str) -> str:
    return f"Model {shorten(model)!r} could not be loaded ({cause}): {shorten(detail, 300)}"


def compile_unavailable(missing: str) -> str:
    return (
        f'speed.compile = "on" cannot work on this machine: {missing}. Install a C compiler '
        '(gcc; the slim container image has none, docs/deploy.md) or set speed.compile = '
        '"auto" or "off".'
    )


def compile_failed_at_warm_up(model: str, rows: int, cause: str) -> str:
    return (
        f'speed.compile = "on" failed compiling model {shorten(model)!r} at warm-up '
        f"({rows} rows): {shorten(cause, 300)}. Fix the compiler (docs/deploy.md, speed options) "
        'or set speed.compile = "auto" or "off".'
    )


def out_of_memory_in(what: str) -> str:
    return f"The GPU ran out of memory in {what} for this request. Try again in a moment."


def out_of_memory_admit(images: int) -> str:
    return (
        f"The GPU ran out of memory encoding this prompt for {images} image(s) even on its own. "
        "Try again in a moment or with fewer images."
    )


def no_depth_controlnet(model: str) -> str:
    return f"Model {shorten(model)!r} has no depth ControlNet configured."


def depth_image_required() -> str:
    return "A depth image is required for /depth."


def unknown_pipeline(pipeline: str) -> str:
    return f"Unknown pipeline {shorten(pipeline)!r}: use txt2img or depth."


def steps_too_few(steps: int) -> str:
    return f"Steps ({steps}) must be at least 1."


def size_not_multiple_of_8(width: int, height: int) -> str:
    return f"Size {width}x{height} must be multiples of 8."


def lora_unknown(name: str, nearest: Iterable[str]) -> str:
    near = list(nearest)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    return f"Unknown LoRA {shorten(name)!r}.{hint} `/loras` lists the ones available."


def lora_wrong_family(name: str, family: str, model: str, model_family: str) -> str:
    return (f"LoRA {name!r} was made for {family.upper()} models; {model!r} is "
            f"{model_family.upper()}. Pick a LoRA listed by `/loras` for this model.")


def lora_other_model(name: str, wanted: str, model: str) -> str:
    return f"LoRA {name!r} is for the model {wanted!r}, not {model!r}: add --model {wanted}."


def lora_broken(name: str, reason: str) -> str:
    return f"LoRA {name!r} cannot be used: its file is unreadable ({reason}). Tell the bot's admin."


def lora_unusable(name: str, model: str, reason: str) -> str:
    return f"LoRA {name!r} could not be applied to {model!r}: {reason}"


def lora_scale_range(name: str, scale: float, limit: float) -> str:
    return f"The scale of LoRA {name!r} must be between -{number(limit)} and {number(limit)}, not {number(scale)}."


def too_many_loras(given: int, limit: int) -> str:
    if limit == 0:
        return "LoRAs are turned off here (limits.max_loras = 0)."
    return f"At most {limit} LoRAs per request (got {given})."


def lora_twice(name: str) -> str:
    return f"LoRA {name!r} is given twice: give it once, with the scale you want (--lora {name}:0.8)."


def unknown_style(name: str, known: Iterable[str]) -> str:
    names = sorted(known)
    listed = f" Styles: {', '.join(names)}." if names else " No styles are configured."
    return f"Unknown style {shorten(name)!r}.{listed}"


def no_loras_listed(model: str) -> str:
    return f"No LoRAs or styles are configured for {model!r}."


def loras_listing(model: str, loras: Iterable[str], styles: Iterable[str]) -> str:
    lines = [f"**LoRAs for {model}** (`--lora NAME:SCALE`)", *loras]
    styles = list(styles)
    if styles:
        lines += ["**Styles** (`--style NAME`)", *styles]
    return "\n".join(lines)


# What --cfg is called for each guidance kind (``model_families.GuidanceKind``): the caption
# and the PNG parameters say which (A1111's "CFG scale" for real CFG).
_GUIDANCE_LABELS = {"cfg": "CFG scale", "distilled": "Distilled guidance", "none": "Guidance"}


def guidance_label(kind: str) -> str:
    """The PNG ``parameters`` field for the request's guidance ("CFG scale", ...)."""
    return _GUIDANCE_LABELS.get(kind, _GUIDANCE_LABELS["cfg"])


def guidance_parameter(kind: str, guidance: float) -> str:
    """``CFG scale: 7``, ``Distilled guidance: 3.5`` or ``Guidance: none`` (PNG parameters)."""
    return f"{guidance_label(kind)}: none" if kind == "none" else f"{guidance_label(kind)}: {guidance:g}"


def guidance_caption(kind: str, guidance: float) -> str:
    """The caption's part: ``CFG scale 7``, ``distilled guidance 3.5`` or ``no guidance``."""
    if kind == "none":
        return "no guidance"
    label = guidance_label(kind)
    return f"{label if kind == 'cfg' else label.lower()} {number(guidance)}"


def listing_takes_a_model(command: str) -> str:
    return f"{command} takes a model name at most, like {command} --model NAME."


def model_help(
    *, model: str, label: str, family: str | None, commands: Iterable[tuple[str, str]],
    steps: int, max_steps: int, guidance: str, cfg: float, max_cfg: float,
    samplers: Iterable[str], sampler: str, negative: bool, depth: bool, size: str,
    max_images: int, loras: Iterable[str], styles: Iterable[str], models: Iterable[str],
) -> str:  # fmt: skip
    """The /help answer for one model: the commands and flags it takes, and nothing else."""
    about = f" ({family})" if family else ""
    lines = [f"**gouache with {model}**{about}" + (f": {label}" if label else ""), "**Commands**"]
    lines += [f"`{name}`: {summary}" for name, summary in commands]
    lines += ["**Options**", f"`--steps {steps}`: denoising steps (default {steps}, at most {max_steps})"]
    if guidance == "cfg":
        lines.append(f"`--cfg {number(cfg)}`: CFG scale, how closely to follow the prompt "
                     f"(default {number(cfg)}, 0 to {number(max_cfg)})")
    elif guidance == "distilled":
        lines.append(f"`--cfg {number(cfg)}`: distilled guidance, an input of the model rather than "
                     f"classifier-free guidance (default {number(cfg)}, 0 to {number(max_cfg)})")
    else:
        lines.append(f"{model} takes no guidance: no `--cfg`.")
    lines.append(f"`--sampler {sampler}`: one of {', '.join(samplers)} (default {sampler})")
    if negative:
        lines.append("`--no blurry, text`: what to avoid (negative prompt)")
    lines += [f"`--ar 16:9`, `--size {size}`: the image's shape (default {size})",
              f"`--seed 7`, `--n 2` (at most {max_images}), `--gif`, `--sweep cfg=3,7`, `--process`"]
    if depth:
        lines.append("`--strength 0.8`, `--input photo`: /depth, how strongly the depth map steers and "
                     "whether the file is a map or a photo")
    loras, styles = list(loras), list(styles)
    if loras:
        lines.append(f"`--lora NAME:0.8`, `--no-trigger`: LoRAs ({', '.join(loras[:8])}"
                     + (", ..." if len(loras) > 8 else "") + "; /loras lists them)")
    if styles:
        lines.append(f"`--style NAME`: {', '.join(styles[:8])}" + (", ..." if len(styles) > 8 else ""))
    others = [name for name in models if name != model]
    if others:
        lines.append(f"`--model NAME`: another model ({', '.join(others[:8])}"
                     + (", ..." if len(others) > 8 else "") + "); /help --model NAME for its options")
    return "\n".join(lines)


def out_of_memory_alone(images: int, width: int, height: int, steps: int) -> str:
    return (
        f"The GPU ran out of memory for this request ({images} image(s) at {width}x{height}, "
        f"{steps} steps) even on its own. Try fewer images or a smaller size."
    )


# The web API, uploads, buttons and the command line ------------------------------------------

BODY_NOT_JSON = "The request body is not valid JSON."
JSON_NEEDS_COMMAND = 'Send {"command": "/imagine ..."}.'
UNSUPPORTED_BODY = "Send JSON, or multipart/form-data with a command and a file."
NESTED_MULTIPART = "Nested multipart bodies are not supported."
FORM_NEEDS_COMMAND = "The form needs a command field."
NO_SUCH_JOB = "No such job."
NO_SUCH_IMAGE = "No such image: give its index in the job, from 0."
NO_SUCH_ARTIFACT = "No such artifact."
BAD_FILE_LINK = "No such file (the link is incomplete, altered or expired)."
UNKNOWN_BUTTON = "That button is not one of mine."
UNREADABLE_UPLOAD = "Upload a PNG, JPEG or WEBP image, or a .npy depth map."
DEPTH_AND_FILE = "Give --depth FILE or --file FILE, not both."
FILE_NEEDS_DEPTH = "--file only works with /depth: start the prompt with /depth, or use --depth FILE."


def unknown_action(actions: Iterable[str]) -> str:
    return f"Unknown action: use {', '.join(actions)}."


def job_not_found(job_id: str) -> str:
    return f"No job with id {shorten(job_id, 64)}."


def upload_too_large(size: int, limit: int) -> str:
    return f"The file is {size:,} bytes; the limit is {limit:,}."


def upload_needed(command: str) -> str:
    return f"/{command} needs a depth map (PNG or .npy) or a photo attached."


def invalid_option_value(value: str) -> str:
    """A chat platform could not convert an option (Discord's transformers); escaped by the
    adapter after shortening."""
    return f"Option value “{value}” is invalid."
# --- the web edge ---------------------------------------------------------------------------
def web_wrong_host() -> str:
    return (
        "This server answers only to its own names (localhost, 127.0.0.1, [::1] or "
        "web.public_url's host). Set web.token to serve other names."
    )


def web_cross_origin() -> str:
    return "Cross-origin requests are refused."


def web_restarting() -> str:
    return "gouache is restarting; try again in a minute."


def web_token_required() -> str:
    return "A token is required: send Authorization: Bearer <token> or open /?token=<token>."


def web_token_throttled() -> str:
    return "Too many wrong tokens from this address. Wait a minute before trying again."


def web_too_many_streams() -> str:
    return "Too many live views are open; close some tabs (the page keeps polling meanwhile)."


def web_idempotency_key(limit: int) -> str:
    return f"Idempotency-Key must be 1 to {limit} printable ASCII characters."


def web_idempotency_mismatch() -> str:
    return (
        "This Idempotency-Key was already used for a different request; use a new key for a "
        "new request."
    )


def web_not_yours() -> str:
    return "Only the person who made this job can use its buttons."


def web_command_too_long(limit: int) -> str:
    return f"The command is too long (at most {limit} bytes)."


def web_body_too_large(limit: int) -> str:
    return f"The request body is too large (at most {limit} bytes here)."


def web_body_malformed(what: str) -> str:
    return f"The request body is not valid {what}."


def web_body_timeout() -> str:
    return "The request body took too long to arrive."


def web_form_fields() -> str:
    return "The form takes one command field and at most one file field."


# Uploads and generation inputs -----------------------------------------------------------------
# What the hostile-upload readers (generation/inputs/), the depth estimators and the worker's
# request translation say. Admission in the bot runs the same readers, so these are what a user
# sees when an attachment is refused.


def human_size(count: int) -> str:
    """``512 KB`` / ``10.0 MB`` for messages."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KB"
    return f"{count / (1024 * 1024):.1f} MB"


def file_too_large(size: int, limit: int) -> str:
    return f"The file is {human_size(size)}; the limit is {human_size(limit)}."


def image_file_empty(formats: str) -> str:
    return f"The file is empty; please upload a {formats} image."


def image_too_many_pixels(max_pixels: int) -> str:
    return f"The image has too many pixels (limit {max_pixels:,})."


def not_an_image(formats: str) -> str:
    return f"That file is not a {formats} image."


def image_damaged(formats: str) -> str:
    return f"That {formats} image is damaged and cannot be read."


def image_truncated(fmt: str) -> str:
    return f"That {fmt} image is truncated or damaged and cannot be read."


def image_no_pixels() -> str:
    return "The image has no pixels."


def image_pixels_over(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width}x{height} = {width * height:,} pixels; "
        f"the limit is {max_pixels:,} pixels."
    )


def upload_empty() -> str:
    return "The file is empty: attach a depth map (PNG or .npy) or a photo."


def upload_is_other(what: str) -> str:
    """``what`` names what the bytes look like: ``a GIF``, ``a PDF document``, ..."""
    return f"That file is {what}: /depth takes a PNG, JPEG or WEBP image, or a .npy depth map."


def upload_unknown_kind() -> str:
    return "That file is not a PNG, JPEG or WEBP image or a .npy depth map."


def upload_animated(fmt: str, frames: int) -> str:
    return f"That {fmt} is animated ({frames} frames): attach a still image."


def upload_exif_too_large(fmt: str, size: int, limit: int) -> str:
    return (
        f"That {fmt}'s EXIF metadata is {human_size(size)} (more than "
        f"{human_size(limit)}): re-save the image without it."
    )


def upload_cmyk() -> str:
    return "That JPEG is in CMYK (print) colours: re-save it as an RGB JPEG or PNG."


def upload_palette() -> str:
    return "That PNG uses a colour palette: re-save it as greyscale (depth maps) or RGB (photos)."


def upload_one_bit() -> str:
    return "That PNG is black and white only (1 bit): a depth map needs grey levels."


def png_mode_unsupported(mode: str) -> str:
    return f"PNGs in {mode} mode are not supported: use 8/16-bit grey or 8-bit RGB."


def image_mode_unsupported(fmt: str, mode: str) -> str:
    return f"{fmt} images in {mode} mode are not supported: re-save it as RGB."


def png_truncated() -> str:
    return "That PNG is truncated (it ends before its last chunk)."


def png_chunk_past_end() -> str:
    return "That PNG is truncated or damaged (a chunk runs past the file's end)."


def png_no_header() -> str:
    return "That PNG is damaged: it does not start with an image header."


def png_16bit_colour() -> str:
    return "That PNG has 16-bit colour: save depth maps as 16-bit grey, photos as 8-bit RGB."


def png_trailing_data(count: int) -> str:
    return (
        f"That PNG has {count:,} bytes after its end (a file hidden inside an image?): "
        "re-save it as a plain PNG."
    )


def webp_truncated() -> str:
    return "That WEBP is truncated (shorter than its header says)."


def webp_trailing_data(count: int) -> str:
    return f"That WEBP has {count:,} bytes after its end: re-save it as a plain WEBP."


def npy_not_numbers() -> str:
    return "The .npy file must hold plain numbers, not objects or records."


def npy_dtype(name: str) -> str:
    return f"The .npy file holds {name} values; use integers or float16/32/64."


def npy_bad_shape(shape: object) -> str:
    return f"The .npy header's shape {shorten(str(shape), 60)} is not a list of sizes."


def npy_not_2d(shape: tuple[int, ...]) -> str:
    dims = len(shape)
    return (
        f"The .npy depth map must be 2-D (height x width) but has {dims} "
        f"dimension{'s' if dims != 1 else ''}: shape {shorten(str(shape), 60)}."
    )


def npy_empty(shape: tuple[int, ...]) -> str:
    return f"The .npy depth map is empty: shape {shape}."


def depth_map_too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The depth map is {width}x{height} = {width * height:,} values; "
        f"the limit is {max_pixels:,}."
    )


def npy_size_mismatch(expected: int, held: int) -> str:
    return (
        f"The .npy file is truncated or padded: its header promises {expected:,} bytes "
        f"of data but it holds {held:,}."
    )


def npy_header_damaged() -> str:
    return "The .npy file's header is damaged."


def npy_version(major: int, minor: int) -> str:
    return f"Unsupported .npy format version {major}.{minor}."


def input_mode_invalid(mode: str) -> str:
    return f"--input takes depth or photo, not {shorten(mode, 24)!r}."


def npy_is_not_photo() -> str:
    return "That file is a .npy array, which is a depth map, not a photo."


def depth_no_finite() -> str:
    return "The depth map holds no finite numbers (all NaN or infinite)."


def depth_flat(value: float) -> str:
    return f"The depth map is one flat value ({value:g}) everywhere: there is no shape to follow."


def depth_nonfinite_taken_far(count: int) -> str:
    return f"{count:,} depth values were NaN or infinite; they were taken as far."


def depth_flipped() -> str:
    return (
        "The depth map looked inverted (far bright, near dark); it was flipped to the "
        "ControlNet convention, near = bright. Use a map with near bright to avoid this."
    )


def photo_without_estimator() -> str:
    return (
        "That looks like a photo, and this model has no depth estimator: attach a depth "
        "map (near = bright), or choose a model with one."
    )


def depth_estimate_flat() -> str:
    return (
        "The depth estimator found no depth in that photo (a flat result): try another "
        "photo or attach a depth map."
    )


def depth_estimated_with(estimator: str) -> str:
    return f"The photo's depth was estimated with {estimator}."


def photo_not_depth_map(name: str, reason: str) -> str:
    """``name`` is the upload's file name as shown (``uploads._shown``: no folders, 40 chars)."""
    return f"“{name}” looks like a photo, not a depth map ({reason})."


def demo_estimator_not_installed(folder: object) -> str:
    return f"builtin:demo's depth estimator is not installed ({folder} is missing)."


def estimator_cannot_load(model: str, estimator: str) -> str:
    return (
        f"The depth estimator of {model} ({estimator}) cannot be loaded; "
        "attach a depth map instead, or ask an admin to fix the model."
    )
# -- starting from an image: remix, upscale, vary, edit ----------------------------------------

IMAGE_STRENGTH_RANGE_TEXT = "0 to 1"


def image_strength_out_of_range(value: float) -> str:
    return (
        f"--strength {value:g} is outside {IMAGE_STRENGTH_RANGE_TEXT}: with an image it says how "
        "much of the image is redrawn (0.3 keeps it close, 0.9 nearly starts over)."
    )


def image_strength_too_low(value: float, steps: int) -> str:
    return (
        f"--strength {value:g} with {steps} steps runs no step at all (strength x steps must be at "
        f"least 1): raise --strength to at least {1 / steps:.2f} or add steps."
    )


def upscale_scale_out_of_range(value: float, limit: float) -> str:
    return f"--scale {value:g} is outside what /upscale does: more than 1, at most {limit:g} (2 if left out)."


def upscale_too_large(width: int, height: int, max_side: int, max_pixels: int) -> str:
    return (
        f"The upscaled image would be {width}x{height}, past this server's limit "
        f"({max_side} pixels a side, {max_pixels:,} pixels in all): use a smaller --scale."
    )


def no_edit_model() -> str:
    return (
        "/edit needs an image-editing model (such as Flux Kontext or Qwen-Image-Edit) and this "
        "server has none configured. To change an image with a prompt, use /imagine with the image "
        "attached (remix) and --strength."
    )


def image_needed(command: str) -> str:
    return f"/{command} needs an image attached (PNG, JPEG or WebP)."


def strength_needs_image() -> str:
    return (
        "--strength on /imagine says how much of an attached image is redrawn: attach an image "
        "to remix, or leave --strength out."
    )


def remix_used(width: int, height: int, strength: float) -> str:
    return f"Remixing the image at strength {strength:g} (0 keeps it, 1 redraws it all), output {width}x{height}."


def upscaled_from(up_w: int, up_h: int, width: int, height: int, strength: float, tiles: int = 0) -> str:
    how = f" in {tiles} overlapping tiles" if tiles > 1 else ""
    return f"Upscaled {up_w}x{up_h} to {width}x{height}, detail redrawn at strength {strength:g}{how}."


def reply_takes_no_image(command: str, takes_images: Iterable[str]) -> str:
    return (f"/{command} does not start from an image, so a reply cannot remix one with it: "
            f"reply with a prompt (a remix) or with {' or '.join(takes_images)}.")


def image_gone() -> str:
    return "That image is no longer stored (results expire): attach it to /upscale or /imagine instead."


def npy_is_not_an_image() -> str:
    return "That file is a .npy array (a depth map, for /depth): attach a PNG, JPEG or WEBP image."
