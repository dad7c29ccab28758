"""Every string a user reads, as small functions.

One place to reword, translate or test them. Values typed by users are shortened before they
are echoed, so a hostile 4,000-character option cannot flood a channel. Platform escaping
(Discord mentions, Slack ``& < >``) stays the adapters' job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "shorten",
    "duration",
    "number",
    "queued",
    "generator_not_running",
    "no_worker_yet",
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


def model_load_failed(model: str, cause: str, detail: str) -> str:
    return f"Model {shorten(model)!r} could not be loaded ({cause}): {shorten(detail, 300)}"


def compile_unavailable(missing: str) -> str:
    return (
        f'speed.compile = "on" cannot work on this machine: {missing}. Install a C compiler '
        '(gcc; the slim container image has none, docs/deploy.md) or set speed.compile = '
        '"auto" or "off".'
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
