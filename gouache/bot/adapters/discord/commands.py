"""The slash commands: typed options that guide (min/max from the configured limits,
autocomplete from the configured models and the sampler table), translated to ``Handlers`` calls.
Autocomplete offers only what the chosen model takes (``bot/listings.py``): its family's
samplers, and for /depth the models with a depth ControlNet; ``/help`` and ``/loras`` are the
listings of ``request.LISTINGS``.

``/imagine`` (an optional ``image`` to remix, at ``strength``), ``/depth`` (a depth map or
photo, ``strength`` its scale), ``/upscale`` and ``/edit`` (an image required: the options
follow ``request.KINDS``' "takes an image"), ``/diversity`` and ``/interpolate`` become
``Request``s through ``bot.commands``; ``/queue`` and ``/cancel`` read the user's own queue; the
``/gouache`` group holds the admin commands, whose permission the bot checks itself
(``default_permissions`` is only a hint server admins can change).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import discord
from discord import app_commands

from gouache.bot.captions import ASPECT_RATIOS
from gouache.bot.commands import SEED_MAX
from gouache.bot.listings import samplers_for, takes
from gouache.bot.loras import lora_names, style_names
from gouache.config import Settings
from gouache.request import KINDS, LISTINGS, STRENGTH_RANGE, UPSCALE_MAX_SCALE, Kind, Listing

__all__ = ["Handlers", "build_commands", "matching", "lora_completions", "sampler_completions",
           "MAX_CHOICES"]

MAX_CHOICES = 25  # Discord's cap on choices and autocomplete results
_MAX_STRING = 6000  # the longest max_length Discord accepts on a string option
Choices = list[app_commands.Choice[str]]


class Handlers(Protocol):
    """What the commands call (the ``DiscordAdapter``)."""

    async def run_command(
        self, interaction: discord.Interaction, kind: Kind, options: dict[str, Any]
    ) -> None: ...

    async def show_queue(self, interaction: discord.Interaction) -> None: ...

    async def show_listing(
        self, interaction: discord.Interaction, listing: Listing, model: str | None
    ) -> None: ...

    async def cancel_job(self, interaction: discord.Interaction, job: str | None) -> None: ...

    async def pending_choices(self, interaction: discord.Interaction, current: str) -> Choices: ...

    async def admin(
        self, interaction: discord.Interaction, action: str, target: discord.abc.User | None = None
    ) -> None: ...


def matching(names: Iterable[tuple[str, str]], current: str) -> Choices:
    """(label, value) pairs matching what the user typed: prefix matches first, at most 25."""
    typed = current.casefold().strip()
    found = [(label, value) for label, value in names
             if typed in label.casefold() or typed in value.casefold()]  # fmt: skip
    found.sort(key=lambda p: (not p[1].casefold().startswith(typed), p[1].casefold()))
    return [app_commands.Choice(name=label[:100], value=value[:100])
            for label, value in found[:MAX_CHOICES]]  # fmt: skip


def build_commands(settings: Settings, handlers: Handlers) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:  # noqa: E501
    models = [(f"{name} — {spec.label}" if spec.label else name, name)
              for name, spec in settings.models.items()]  # fmt: skip

    async def model_choices(interaction: discord.Interaction, current: str) -> Choices:
        command = getattr(interaction.command, "name", "")
        kind = Kind(command) if command in {kind.value for kind in KINDS} else None
        return matching([(label, name) for label, name in models
                         if kind is None or takes(settings, name, kind)], current)  # fmt: skip

    async def sampler_choices(interaction: discord.Interaction, current: str) -> Choices:
        return sampler_completions(settings, _chosen_model(settings, interaction), current)

    async def lora_choices(interaction: discord.Interaction, current: str) -> Choices:
        return lora_completions(settings, _chosen_model(settings, interaction), current)

    async def style_choices(interaction: discord.Interaction, current: str) -> Choices:
        return matching([(name, name) for name in style_names(settings)], current)

    generation = _generation_commands(handlers)
    for command in generation:
        names = {parameter.name for parameter in command.parameters}
        if "model" in names:
            command.autocomplete("model")(model_choices)
        if "sampler" in names:
            command.autocomplete("sampler")(sampler_choices)
        if "lora" in names:
            command.autocomplete("lora")(lora_choices)
            command.autocomplete("style")(style_choices)
        _guide(command, settings)
    listings = [_listing_command(handlers, listing) for listing in LISTINGS]
    for command in listings:
        command.autocomplete("model")(model_choices)
    return [*generation, *_queue_commands(handlers), *listings, _admin_group(handlers)]


def _chosen_model(settings: Settings, interaction: discord.Interaction) -> str:
    """The model the user has picked so far in this command (the default when none)."""
    return str(getattr(interaction.namespace, "model", None) or settings.default_model)


def sampler_completions(settings: Settings, model: str, current: str) -> Choices:
    """The samplers ``model`` takes (all of them for a name that is not a model yet), its
    default labelled so."""
    spec = settings.models.get(model)
    default = spec.default_sampler if spec is not None else ""
    return matching([(f"{name} (default)" if name == default else name, name)
                     for name in samplers_for(settings, model)], current)  # fmt: skip


def lora_completions(settings: Settings, model: str, current: str) -> Choices:
    """Completions for the last name in ``lora`` ("a:0.7 b" -> "a:0.7 b..."): the names
    usable with ``model``, filtered by what is typed (every name reachable, 25 at a time)."""
    done, _, last = current.rpartition(" ")
    prefix = f"{done} " if done else ""
    names = [(f"{prefix}{name}", f"{prefix}{name}") for name in lora_names(settings, model)]
    return matching(names, current) if last else matching(names, "")


def _listing_command(h: Handlers, listing: Listing) -> app_commands.Command[Any, Any, Any]:
    summary = LISTINGS[listing].summary

    @app_commands.command(name=listing.value, description=(summary[:1].upper() + summary[1:])[:100])
    @app_commands.describe(model="For this model (type to search); the default when left out")
    async def show(interaction: discord.Interaction, model: str | None = None) -> None:
        await h.show_listing(interaction, listing, model)

    return show


def _guide(command: app_commands.Command[Any, Any, Any], settings: Settings) -> None:
    """min/max on every numeric option, from the limits ``build_request`` enforces."""
    limits = settings.limits
    spec = KINDS[Kind(command.name)]
    high = max(limits.max_images, limits.diversity_count) if spec.scored else limits.max_images
    ranges: dict[str, tuple[float, float]] = {
        "seed": (0, SEED_MAX), "steps": (1, limits.max_steps),
        "guidance": (0, limits.max_guidance), "count": (spec.min_images, high),
        "width": (limits.min_side, limits.max_side), "height": (limits.min_side, limits.max_side),
        "strength": (0.0, 1.0) if spec.image != "none" else STRENGTH_RANGE,
        "scale": (1.0, UPSCALE_MAX_SCALE), "prompt": (1, min(limits.max_prompt_chars, _MAX_STRING)),
        "negative": (1, min(limits.max_prompt_chars, _MAX_STRING)),
    }  # fmt: skip
    # discord.py builds options from the signature; the limits are known only at start-up, so
    # they are set on its parameter objects (``Command.parameters`` returns read-only copies).
    params = command._params  # noqa: SLF001
    for name, (low, top) in ranges.items():
        if name in params:
            params[name].min_value, params[name].max_value = low, top


_RATIOS = [app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS]
_DESCRIBE: dict[str, Any] = dict(
    prompt="What to draw", negative="What to avoid", seed="Same seed, same image",
    steps="Denoising steps", guidance="Guidance: CFG scale, or distilled guidance on Flux dev (/help says which)",
    aspect_ratio="Shape of the image", width="Width in pixels (multiples of 8)",
    height="Height in pixels (multiples of 8)", sampler="Sampler (type to search)",
    count="How many images", model="Model (type to search)", gif="Also a denoising GIF",
    lora="LoRAs as NAME or NAME:SCALE, several with spaces (type to search)",
    style="A named style (type to search)", no_trigger="Leave out the LoRAs' trigger words",
)  # fmt: skip


def _only(described: dict[str, Any], *leave_out: str) -> dict[str, Any]:
    return {k: v for k, v in described.items() if k not in leave_out}


_REDRAW = "How much of the image to redraw (0 to 1)"


def _generation_commands(h: Handlers) -> list[app_commands.Command[Any, Any, Any]]:
    @app_commands.command(name="imagine", description="Generate images from a prompt (or remix an image)")
    @app_commands.describe(image="An image to remix (optional)", strength=_REDRAW + ", with an image",
                           **_DESCRIBE)  # fmt: skip
    @app_commands.choices(aspect_ratio=_RATIOS)
    async def imagine(
        interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None,
        strength: float | None = None, negative: str | None = None,
        seed: int | None = None, steps: int | None = None, guidance: float | None = None,
        aspect_ratio: str | None = None, width: int | None = None, height: int | None = None,
        sampler: str | None = None, count: int | None = None, model: str | None = None,
        gif: bool | None = None, lora: str | None = None, style: str | None = None,
        no_trigger: bool | None = None,
    ) -> None:  # fmt: skip
        await h.run_command(interaction, Kind.IMAGINE, dict(
            prompt=prompt, image=image, strength=strength, negative=negative, seed=seed,
            steps=steps, guidance=guidance, aspect_ratio=aspect_ratio, width=width,
            height=height, sampler=sampler, count=count, model=model, gif=gif, lora=lora,
            style=style, no_trigger=no_trigger,
        ))  # fmt: skip

    @app_commands.command(name="upscale", description="Enlarge an image and redraw its detail")
    @app_commands.describe(image="The image to enlarge", scale="How much larger (default 2)",
                           strength=_REDRAW + " (default 0.35)",
                           prompt="What it shows (our own images remember theirs)",
                           **_only(_DESCRIBE, "prompt", "aspect_ratio", "width", "height", "count",
                                   "gif"))  # fmt: skip
    async def upscale(
        interaction: discord.Interaction, image: discord.Attachment, scale: float | None = None,
        strength: float | None = None, prompt: str | None = None, negative: str | None = None,
        seed: int | None = None, steps: int | None = None, guidance: float | None = None,
        sampler: str | None = None, model: str | None = None, lora: str | None = None,
        style: str | None = None, no_trigger: bool | None = None,
    ) -> None:  # fmt: skip
        await h.run_command(interaction, Kind.UPSCALE, dict(
            prompt=prompt or "", image=image, scale=scale, strength=strength, negative=negative,
            seed=seed, steps=steps, guidance=guidance, sampler=sampler, model=model, lora=lora,
            style=style, no_trigger=no_trigger,
        ))  # fmt: skip

    @app_commands.command(name="edit", description="Change an image by instruction (needs an editing model)")
    @app_commands.describe(image="The image to change", prompt="What to change",
                           seed=_DESCRIBE["seed"], model=_DESCRIBE["model"])  # fmt: skip
    async def edit(
        interaction: discord.Interaction, image: discord.Attachment, prompt: str,
        seed: int | None = None, model: str | None = None,
    ) -> None:  # fmt: skip
        await h.run_command(interaction, Kind.EDIT, dict(prompt=prompt, image=image, seed=seed,
                                                         model=model))  # fmt: skip

    @app_commands.command(name="depth", description="Generate following a depth map or photo")
    @app_commands.describe(image="A depth map (.png/.npy) or a photo",
                           strength="How strongly the depth steers (0 to 2)", **_DESCRIBE)  # fmt: skip
    @app_commands.choices(aspect_ratio=_RATIOS)
    async def depth(
        interaction: discord.Interaction, prompt: str, image: discord.Attachment,
        strength: float | None = None, negative: str | None = None, seed: int | None = None,
        steps: int | None = None, guidance: float | None = None,
        aspect_ratio: str | None = None, width: int | None = None, height: int | None = None,
        sampler: str | None = None, count: int | None = None, model: str | None = None,
        gif: bool | None = None, lora: str | None = None, style: str | None = None,
        no_trigger: bool | None = None,
    ) -> None:  # fmt: skip
        await h.run_command(interaction, Kind.DEPTH, dict(
            prompt=prompt, image=image, strength=strength, negative=negative, seed=seed,
            steps=steps, guidance=guidance, aspect_ratio=aspect_ratio, width=width,
            height=height, sampler=sampler, count=count, model=model, gif=gif, lora=lora,
            style=style, no_trigger=no_trigger,
        ))  # fmt: skip

    @app_commands.command(name="diversity", description="A deliberately varied batch")
    @app_commands.describe(diversify="Push the images further apart (CADS)",
                           **_only(_DESCRIBE, "aspect_ratio", "width", "height", "gif"))  # fmt: skip
    async def diversity(
        interaction: discord.Interaction, prompt: str, count: int | None = None,
        diversify: bool | None = None, negative: str | None = None, seed: int | None = None,
        steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
        model: str | None = None, lora: str | None = None, style: str | None = None,
        no_trigger: bool | None = None,
    ) -> None:  # fmt: skip
        await h.run_command(interaction, Kind.DIVERSITY, dict(
            prompt=prompt, count=count, diversify=diversify, negative=negative, seed=seed,
            steps=steps, guidance=guidance, sampler=sampler, model=model, lora=lora,
            style=style, no_trigger=no_trigger,
        ))  # fmt: skip

    @app_commands.command(name="interpolate", description="Walk from one prompt (and seed) to another")
    @app_commands.describe(prompt="The first prompt", to="The second prompt", seed="The first seed",
                           seed_b="The second seed", frames="Frames (2-32)")  # fmt: skip
    async def interpolate(
        interaction: discord.Interaction, prompt: str, to: str, seed: int | None = None,
        seed_b: int | None = None, frames: int | None = None,
    ) -> None:  # fmt: skip
        await h.run_command(interaction, Kind.INTERPOLATE,
                            dict(prompt=f"{prompt} | {to}", seed=seed, seed_b=seed_b, frames=frames))  # fmt: skip

    return [imagine, depth, upscale, edit, diversity, interpolate]


def _queue_commands(h: Handlers) -> Sequence[app_commands.Command[Any, Any, Any]]:
    @app_commands.command(name="queue", description="Your queued and running requests")
    async def queue(interaction: discord.Interaction) -> None:
        await h.show_queue(interaction)

    @app_commands.command(name="cancel", description="Cancel your newest request, or one you pick")
    @app_commands.describe(job="Which request (type to search); your newest when left out")
    async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
        await h.cancel_job(interaction, job)

    @cancel.autocomplete("job")
    async def pending(interaction: discord.Interaction, current: str) -> Choices:
        return await h.pending_choices(interaction, current)

    return [queue, cancel]


def _admin_group(h: Handlers) -> app_commands.Group:
    group = app_commands.Group(
        name="gouache", description="gouache admin commands",
        default_permissions=discord.Permissions(manage_guild=True), guild_only=True,
    )  # fmt: skip

    @group.command(name="pause", description="Accept no new requests (running work finishes)")
    async def pause(interaction: discord.Interaction) -> None:
        await h.admin(interaction, "pause")

    @group.command(name="resume", description="Accept new requests again")
    async def resume(interaction: discord.Interaction) -> None:
        await h.admin(interaction, "resume")

    @group.command(name="reset-limits", description="Give a user their full rate limit back")
    @app_commands.describe(user="Whose limit to reset")
    async def reset_limits(interaction: discord.Interaction, user: discord.User) -> None:
        await h.admin(interaction, "reset-limits", user)

    @group.command(name="usage", description="Jobs and image-steps per user and server, last day")
    async def usage(interaction: discord.Interaction) -> None:
        await h.admin(interaction, "usage")

    return group
