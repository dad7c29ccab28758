"""Typed configuration, read once at the edge and passed down.

Sources, strongest first: keyword arguments (tests, CLI flags), ``GOUACHE_*`` environment
variables (nested with ``__``, e.g. ``GOUACHE_LIMITS__MAX_STEPS``), secrets from
``GOUACHE_*_FILE`` paths (``GOUACHE_DISCORD__TOKEN_FILE=/run/secrets/discord``), then an optional
TOML file (``GOUACHE_CONFIG`` or ``--config``), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gouache.model_families import facts_for

__all__ = [
    "Settings",
    "ModelSpec",
    "Limits",
    "Batching",
    "Admission",
    "WorkerSettings",
    "DiscordSettings",
    "SlackSettings",
    "WebSettings",
    "Moderation",
    "GifSettings",
    "LoraSpec",
    "StyleSpec",
    "BUILTIN_TINY",
    "BUILTIN_DEMO",
]

ENV_PREFIX = "GOUACHE_"
BUILTIN_TINY = "builtin:tiny"
BUILTIN_DEMO = "builtin:demo"


class ModelSpec(BaseModel):
    """One named model: a diffusers pipeline plus the optional helpers that go with it."""

    path: str = Field(
        description=(
            "diffusers pipeline directory, hub id, builtin:tiny, or one .safetensors/.ckpt "
            "checkpoint file (SD 1.x, SD 2.x, SDXL; docs/deploy.md)"
        )
    )
    config: str | None = Field(
        None,
        description=(
            "for a single-file path: a diffusers-layout folder (or cached hub id) with the "
            "pipeline's configs and tokenizers; default: the shipped configs of the file's "
            "architecture (tokenizer vocabularies must still come from such a folder)"
        ),
    )
    variant: str | None = Field(
        None,
        description=(
            "weights variant tried first for folders and hub ids (fp16 reads "
            "*.fp16.safetensors), full-precision files as the fallback; unset: full precision, "
            "then fp16 when a folder has only those"
        ),
    )
    family: Literal["auto", "sd", "sdxl", "flux", "flux2-klein", "sd3", "z-image"] = Field(
        "auto",
        description=(
            "pipeline family; auto reads it from the folder's model_index.json. Unset "
            "default_steps/default_guidance/default_sampler take the family's (flux: 28 steps, "
            "distilled guidance 3.5, schnell 4 steps; flux2-klein: 4 steps, no guidance, base: 50 "
            "steps, CFG 4.0; sd3: 28 steps, CFG 4.5; z-image: Turbo's 8 steps, CFG off; flow-euler)"
        ),
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description=(
            "weights dtype; auto: on CUDA bfloat16 for the transformer families (flux, "
            "flux2-klein, sd3, z-image) and float16 for the UNets (sd, sdxl), float32 on the CPU"
        ),
    )
    text_encoder_device: Literal["same", "cpu"] = Field(
        "same",
        description=(
            "where the text encoders live and run: same (the worker's device) or cpu, leaving "
            "the card to the denoiser (a T5-XXL or Qwen3 encoder takes 8-16 GB); each prompt "
            "is encoded on the CPU once, at admission, and its embeddings move to the card"
        ),
    )
    transformer: str | None = Field(
        None,
        description=(
            "for a transformer family (flux, flux2-klein, sd3, z-image): one file holding the "
            "transformer's weights, loaded in place of the folder's transformer/ (whose config "
            "it takes): a .gguf file is quantized weights (Q8_0, Q4_K...; needs the gguf extra: "
            "pip install 'gouache[gguf]'), computed in the model's dtype; a .safetensors file "
            "loads as it is. The rest of the model comes from path"
        ),
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) to load")
    label: str = Field("", description="a short description shown in the start-up log")
    default_steps: int = Field(30, ge=1, description="denoising steps when --steps is not given")
    default_guidance: float = Field(7.0, ge=0, description="guidance scale when --cfg is not given")
    default_width: int = Field(
        512, ge=8, description="width in pixels; --ar keeps width x height pixels"
    )
    default_height: int = Field(512, ge=8, description="height in pixels")
    default_sampler: str = Field("euler-a", description="sampler when --sampler is not given")
    depth_controlnet: str | None = Field(None, description="ControlNetModel directory or hub id")
    depth_estimator: str | None = Field(
        None,
        description=(
            "depth estimator for /depth photos (generation/estimators.py): midas:PATH, "
            "zoe:PATH, leres:PATH (controlnet-aux annotators; a folder or a hub id such as "
            "lllyasviel/Annotators), transformers:PATH or a bare transformers model id "
            "(Depth Anything V2, DPT), or builtin:demo / builtin:tiny"
        ),
    )
    clip_model: str | None = Field(None, description="CLIPModel for diversity and CLIP score")
    image_encoder: str | None = Field(
        None, description="CLIP or DINOv2 folder for content diversity (default: clip_model)"
    )
    style_encoder: str | None = Field(
        None, description="CLIP or DINOv2 folder whose Gram features measure style diversity"
    )
    preview_decoder: str | None = Field(None, description="AutoencoderTiny for cheap GIF frames")

    @model_validator(mode="after")
    def _family_defaults(self) -> ModelSpec:
        """Steps, guidance and sampler not set here are the family's (Flux schnell: 4 steps)."""
        facts = facts_for(self.path, self.family)
        if facts is None or facts.sampler_kind == "eps":  # the UNets keep the global defaults
            return self
        for field, value in (("default_steps", facts.steps), ("default_guidance", facts.cfg),
                             ("default_sampler", facts.sampler)):  # fmt: skip
            if field not in self.model_fields_set:
                object.__setattr__(self, field, value)
        return self


class Limits(BaseModel):
    """What one request may ask for."""

    max_steps: int = Field(60, ge=1, description="most denoising steps a request may ask for")
    max_pixels: int = Field(
        1024 * 1024, ge=64 * 64, description="most pixels per image (width x height)"
    )
    max_side: int = Field(2048, ge=64, description="longest side of an image in pixels")
    min_side: int = Field(32, ge=8, description="shortest side of an image in pixels")
    max_images: int = Field(4, ge=1, description="most images per request (--n)")
    max_prompt_chars: int = Field(
        1500, ge=1, description="longest prompt or negative prompt in characters"
    )
    max_guidance: float = Field(30.0, gt=0, description="highest guidance scale (--cfg)")
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="largest /depth upload in bytes"
    )
    max_upload_pixels: int = Field(
        4096 * 4096,
        ge=64 * 64,
        description="most pixels an upload may decode to (checked before decoding)",
    )
    diversity_count: int = Field(
        4, ge=2, description="images of a /diversity set when --n is not given"
    )
    max_loras: int = Field(3, ge=0, description="most LoRAs one request may stack (--lora)")
    max_lora_scale: float = Field(
        2.0, gt=0, description="largest --lora NAME:SCALE in absolute value (scales may be negative)"
    )


class Batching(BaseModel):
    """How the worker groups compatible jobs into shared UNet calls.

    ``step`` (the default): a running batch of one model and latent size that jobs join and
    leave between steps, whatever their steps, sampler or guidance, up to ``max_rows`` UNet rows
    (a CFG image takes two). ``request``: a batch of jobs with equal settings runs to its end
    (what request-level batchers do; kept for comparison).
    """

    mode: Literal["step", "request"] = Field(
        "step",
        description="step: jobs join and leave a running batch between steps; "
        "request: jobs with equal settings run together to the end",
    )
    max_rows: int = Field(16, ge=1, description="UNet rows per step in step mode")
    decode_chunk: int = Field(2, ge=1, description="images per VAE call decoding finished lanes")
    max_batch_images: int = Field(8, ge=1, description="images per batch in request mode")
    batch_window_ms: int = Field(
        200,
        ge=0,
        description="how long a free worker waits for more compatible jobs before starting",
    )


DEFAULT_COMPILE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


class Speed(BaseModel):
    """Speed options for the denoiser (gouache/generation/loop/speed.py); ``auto`` is what
    ``benchmarks/speed.py`` measured to pay (docs/benchmarks.md, the speed table)."""

    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="channels_last memory format for the UNet (auto: on)"
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile the UNet of UNet models, each bucket at worker warm-up "
        "(up to a minute each); auto: off",
    )
    compile_buckets: list[int] = Field(
        default_factory=lambda: list(DEFAULT_COMPILE_BUCKETS),
        description="row counts compiled for; a batch is padded to the next one",
    )
    batched_steps: Literal["auto", "on", "off"] = Field(
        "auto", description="one scheduler.step for lanes at the same step of the same sampler"
    )


class Admission(BaseModel):
    """Per-user fairness and who may use the bot at all."""

    rate_per_minute: float = Field(
        6.0, gt=0, description="requests per user per minute (token bucket refill)"
    )
    burst: int = Field(
        5, ge=1, description="requests a user may send at once before the rate applies"
    )
    max_pending_per_user: int = Field(8, ge=1, description="queued + running jobs per user")
    max_pending_per_guild: int = Field(
        64, ge=1, description="queued + running jobs per Discord guild or Slack workspace"
    )
    max_queue: int = Field(
        500, ge=1, description="queued jobs in all; past it requests are refused"
    )
    queue_shares: dict[str, float] = Field(
        default_factory=lambda: {"web": 0.5},
        description="largest share of max_queue one platform's queued jobs may take (0..1), "
        "so a busy web page cannot lock Discord and Slack out; platforms not named: all of it",
    )
    allowed_guilds: list[str] = Field(
        default_factory=list, description="Discord guild ids; empty: every guild"
    )
    allowed_workspaces: list[str] = Field(
        default_factory=list, description="Slack team ids; empty: every workspace"
    )
    allowed_channels: list[str] = Field(
        default_factory=list, description="channel ids; empty: every channel"
    )
    admin_users: list[str] = Field(
        default_factory=list, description="user ids with no rate limits who may use admin commands"
    )
    admin_roles: list[str] = Field(
        default_factory=list, description="Discord role ids whose members may use admin commands"
    )

    @field_validator("queue_shares")
    @classmethod
    def _shares_are_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name, share in value.items() if not 0 < share <= 1]
        if bad:
            raise ValueError(f"admission.queue_shares must be in (0, 1]: {', '.join(bad)}")
        return value

    def queue_cap(self, platform: str) -> int:
        """Queued jobs ``platform`` may hold: its share of ``max_queue`` (at least one)."""
        return max(1, int(self.max_queue * self.queue_shares.get(platform, 1.0)))


class WorkerSettings(BaseModel):
    """Leases, retries and the device the worker runs on."""

    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    helper_models: Literal["half", "full", "cpu"] = Field(
        "half",
        description="where the helper models run (the /diversity CLIP and image encoders, the "
        "safety classifier, the depth estimators): half = on the worker's device in float16 on a "
        "GPU (half the memory), float32 on a CPU (half precision is slow there); full = float32 "
        "on the worker's device; cpu = on the CPU in float32, leaving the GPU's memory to the "
        "image models (slower helpers)",
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="a claimed job returns to the queue when its worker stops renewing it "
        "for this long",
    )
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="how often a worker renews leases and heartbeats"
    )
    poll_seconds: float = Field(1.0, gt=0, description="how often an idle worker looks for work")
    max_attempts: int = Field(
        3, ge=1, description="a job that kills its worker this often is marked dead"
    )
    spawn: bool = Field(True, description="`gouache run` starts a worker child (off: scale-out)")
    progress_interval_seconds: float = Field(
        1.0, ge=0, description="least time between progress writes of one job"
    )
    engine: str = Field(
        "gouache.generation.loop.engine:Engine",
        description="import path of the engine class, called with the model registry",
    )
    on_demand: bool = Field(
        False,
        description="workers are started by the queue (Kubernetes with KEDA scaling to zero): "
        "with none running, a reply says one is being started instead of that none runs",
    )
    drain_seconds: float = Field(
        20.0, ge=0,
        description="on SIGTERM: seconds to finish running lanes before handing the rest back "
        "to the queue (keep it under the pod's terminationGracePeriodSeconds)",
    )
    models: list[str] = Field(
        default_factory=list,
        description="claim only jobs for these models (one worker Deployment per model group); "
        "empty: every model",
    )
    model_memory_gb: float = Field(
        0.0, ge=0,
        description="GPU memory the loaded models' weights may take together; when another "
        "model must load, the least recently used leave the card first (0: 85% of the card; "
        "no limit on a CPU)",
    )
    evicted_models: Literal["cpu", "drop"] = Field(
        "cpu",
        description="where a model goes when it leaves the card: cpu (kept in RAM, back in "
        "seconds) or drop (read from disk again when next asked for)",
    )
    model_switch_seconds: float = Field(
        30.0, ge=0,
        description="with a model on the card, its jobs go first while the fairest job for "
        "another model has waited less than this (0: strict fair order, switching at will)",
    )


class GifSettings(BaseModel):
    """Denoising GIFs."""

    max_bytes: int = Field(
        8 * 1024 * 1024, ge=16 * 1024, description="a larger GIF drops frames to fit"
    )
    every: int = Field(1, ge=1, description="keep the latents of every k-th step")
    frame_ms: int = Field(120, ge=20, description="time each frame is shown")
    hold_ms: int = Field(
        1500, ge=0, description="time the final image is held before the loop restarts"
    )


class DiscordSettings(BaseModel):
    token: SecretStr | None = Field(
        None, description="bot token (Developer Portal > Bot); enables Discord"
    )
    application_id: str | None = Field(
        None, description="application id (learned at login when absent)"
    )
    guild_ids: list[str] = Field(default_factory=list, description="sync commands to these only")
    api_base: str | None = Field(None, description="override for tests (a local fake)")


class SlackSettings(BaseModel):
    """Socket Mode when ``app_token`` is set (no public URL needed), else signed HTTP."""

    bot_token: SecretStr | None = Field(None, description="xoxb-...: OAuth & Permissions")
    signing_secret: SecretStr | None = Field(
        None, description="HTTP mode: Basic Information > Signing Secret"
    )
    app_token: SecretStr | None = Field(
        None, description="xapp-... app-level token with connections:write: Socket Mode"
    )
    api_base: str | None = Field(None, description="override for tests (a local fake)")
    updates_per_minute: int = Field(
        50, ge=1, description="chat.update budget per workspace, shared by all progress messages"
    )
    progress_seconds: float = Field(
        3.0, ge=0, description="least time between edits of one message"
    )

    @field_validator("app_token")
    @classmethod
    def _app_level(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("slack.app_token must be an app-level token (xapp-...)")
        return value

    @property
    def mode(self) -> Literal["socket", "http"] | None:
        """Which way Slack reaches us, or None when Slack is not configured."""
        if self.bot_token is None:
            return None
        if self.app_token is not None:
            return "socket"
        return "http" if self.signing_secret is not None else None


class WebSettings(BaseModel):
    """The playground and JSON API: who gets in, and how much one client may hold open."""

    token: SecretStr | None = Field(None, description="required when not bound to loopback")
    public_url: str | None = Field(
        None, description="address chat users can reach (https://bot.example.com): links to "
        "files a platform refused to take; its host is served besides loopback names, and its "
        "origin is accepted for writes"
    )
    users: dict[str, SecretStr] = Field(
        default_factory=dict, description="name = token: named people, each with their own "
        "limits (outside the shared anonymous web group); each token also opens the API"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses of reverse proxies whose X-Forwarded-For "
        "names the real client (empty: the socket's peer is the client)"
    )
    new_users_per_hour: float = Field(
        6.0, gt=0, description="fresh browser identities one client address may be issued per "
        "hour; past it the address's own identity is used"
    )
    new_users_burst: int = Field(3, ge=1, description="identities an address may get at once")
    group_rate_per_minute: float = Field(
        30.0, gt=0, description="jobs per minute all anonymous web users together may start"
    )
    group_burst: int = Field(20, ge=1, description="burst of the anonymous web group's bucket")
    link_ttl_days: float = Field(
        7.0, gt=0, description="how long a signed file link (web.public_url/files/...) opens"
    )
    max_command_bytes: int = Field(
        4096, ge=256, description="longest command line accepted, checked before parsing"
    )
    max_json_bytes: int = Field(16384, ge=1024, description="largest JSON request body")
    max_streams_per_user: int = Field(8, ge=1, description="open event streams per web user")
    max_streams: int = Field(256, ge=1, description="open event streams in total")
    read_timeout_seconds: float = Field(
        30.0, gt=0, description="time a client has to send a request's headers, or its body"
    )
    failed_token_attempts_per_minute: float = Field(
        10.0, gt=0, description="wrong tokens one client address may try per minute"
    )

    @property
    def https(self) -> bool:
        """Cookies get ``Secure`` and the ``__Host-`` prefix when the public address is https."""
        return (self.public_url or "").lower().startswith("https://")


class Moderation(BaseModel):
    """Prompts refused at admission; generated images screened by an optional classifier."""

    blocked_words: list[str] = Field(
        default_factory=list,
        description="prompts containing these words are refused (whole words, any case)",
    )
    blocked_patterns: list[str] = Field(
        default_factory=list,
        description="regular expressions (any case); a matching prompt is refused",
    )
    classifier: str | None = Field(
        None, description="transformers image-classification model (directory or hub id)"
    )
    classifier_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="summed probability of flagged_labels at which an image is flagged",
    )
    flagged_labels: list[str] = Field(
        default_factory=lambda: ["nsfw", "unsafe", "porn", "hentai", "sexy", "explicit"],
        description="classifier labels whose summed probability flags an image",
    )
    flagged_action: Literal["withhold", "spoiler"] = Field(
        "withhold",
        description="withhold flagged images, or send them as spoilers (blurred on the web)",
    )


class LoraSpec(BaseModel):
    """One named LoRA file (diffusers/PEFT or kohya format, as diffusers reads them)."""

    path: Path = Field(description="the .safetensors file")
    family: Literal["auto", "sd", "sdxl"] = Field(
        "auto", description="model family it was trained for; auto reads it from the file"
    )
    model: str | None = Field(None, description="the one model it applies to (default: any of its family)")
    trigger: list[str] = Field(
        default_factory=list, description="words added to the prompt unless --no-trigger"
    )
    default_scale: float = Field(1.0, description="strength when --lora NAME has no :SCALE")
    description: str = Field("", description="a short line shown by /loras")


class StyleSpec(BaseModel):
    """A named prompt template (--style NAME): a hidden wrapper around the user's prompt."""

    prompt: str = Field(
        "{prompt}", description='the template; "{prompt}" is replaced by what the user typed'
    )
    negative: str = Field("", description="negative prompt added to the user's --no")
    loras: list[str] = Field(
        default_factory=list, description='LoRAs it applies, as "NAME" or "NAME:SCALE"'
    )
    steps: int | None = Field(None, ge=1, description="denoising steps when --steps is not given")
    cfg: float | None = Field(None, ge=0, description="guidance scale when --cfg is not given")
    description: str = Field("", description="a short line shown by /loras")


class _FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``GOUACHE_<NAME>_FILE`` paths as the value of ``GOUACHE_<NAME>``."""

    def get_field_value(
        self, field: Any, field_name: str
    ) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, path in os.environ.items():
            if (
                not (key.startswith(ENV_PREFIX) and key.endswith("_FILE"))
                or key == "GOUACHE_CONFIG_FILE"
            ):
                continue
            name = key[len(ENV_PREFIX) : -len("_FILE")].lower()
            if os.environ.get(ENV_PREFIX + name.upper()):
                continue  # an explicit value wins over its file
            value = Path(path).read_text(encoding="utf-8").strip()
            if not value:
                continue  # an empty secret file (a compose secret left blank) means unset
            node = found
            *parents, leaf = name.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return found


class Settings(BaseSettings):
    """Everything gouache reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        toml_file=None,
    )

    data_dir: Path = Field(Path("data"), description="SQLite database, models cache, outputs")
    database_url: str | None = Field(None, description="sqlite:///path or postgresql://...")
    host: str = Field(
        "127.0.0.1",
        description="listen address of the web server; off loopback web.token is required",
    )
    port: int = Field(8080, ge=0, le=65535, description="listen port of the web server")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_json: bool = Field(False, description="one JSON object per log line")
    default_model: str = Field(BUILTIN_DEMO, description="the model used when --model is not given")
    models: dict[str, ModelSpec] = Field(
        default_factory=dict,
        description="named models; builtin:demo and builtin:tiny are always there",
    )
    offline: bool = Field(True, description="load models with local_files_only")
    loras: dict[str, LoraSpec] = Field(
        default_factory=dict, description="named LoRAs (--lora NAME); see also loras_dir"
    )
    loras_dir: Path | None = Field(
        None, description="a folder of .safetensors LoRAs scanned at start (name: the file stem)"
    )
    lora_memory_mb: int = Field(
        1024, ge=1, description="LoRA weights a worker keeps loaded per model (least recently used dropped)"
    )
    styles: dict[str, StyleSpec] = Field(
        default_factory=dict, description="named prompt templates (--style NAME)"
    )
    limits: Limits = Field(default_factory=Limits, description="what one request may ask for")
    batching: Batching = Field(default_factory=Batching, description="how jobs share UNet calls")
    speed: Speed = Field(default_factory=Speed, description="UNet speed options")
    admission: Admission = Field(
        default_factory=Admission, description="per-user fairness and access"
    )
    worker: WorkerSettings = Field(
        default_factory=WorkerSettings, description="leases, retries, device"
    )
    gif: GifSettings = Field(default_factory=GifSettings, description="denoising GIFs")
    discord: DiscordSettings = Field(default_factory=DiscordSettings, description="the Discord bot")
    slack: SlackSettings = Field(default_factory=SlackSettings, description="the Slack app")
    web: WebSettings = Field(default_factory=WebSettings, description="the web playground and API")
    moderation: Moderation = Field(
        default_factory=Moderation, description="prompt and image moderation"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _FileSecretsSource(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build settings from every source; ``config_file`` defaults to ``$GOUACHE_CONFIG``."""
        config_file = config_file or os.environ.get("GOUACHE_CONFIG")
        if not config_file:
            return cls(**overrides)
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")

        class _FromFile(cls):  # type: ignore[valid-type,misc]
            model_config = SettingsConfigDict(toml_file=path)

        return _FromFile(**overrides)

    @field_validator("models", mode="before")
    @classmethod
    def _plain_paths(cls, value: Any) -> Any:
        # Allow `models = { mine = "/models/sd15" }` as shorthand for {path = ...}.
        if isinstance(value, dict):
            return {k: ({"path": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _builtin_models(self) -> Settings:
        # The built-in models are always available under their own names.
        self.models.setdefault(BUILTIN_TINY, builtin_tiny_spec())
        self.models.setdefault(BUILTIN_DEMO, builtin_demo_spec())
        if self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not one of the configured models: "
                + ", ".join(sorted(self.models))
            )
        return self

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redaction filter."""
        found = [self.discord.token, self.slack.bot_token, self.slack.signing_secret,
                 self.slack.app_token, self.web.token, *self.web.users.values()]  # fmt: skip
        values = [s.get_secret_value() for s in found if s is not None]
        if (
            self.database_url
            and "@" in self.database_url
            and ":" in self.database_url.split("@")[0]
        ):
            values.append(self.database_url.split("@")[0].rsplit(":", 1)[1])
        return values

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'gouache.db').as_posix()}"

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"} or self.host.startswith("127.")


def builtin_tiny_spec() -> ModelSpec:
    """Random-weight SD-shaped model built in code: exercises every path, draws noise."""
    return ModelSpec(
        path=BUILTIN_TINY,
        family="sd",
        label="random weights: draws noise only",
        default_steps=10,
        default_guidance=5.0,
        default_width=64,
        default_height=64,
        default_sampler="ddim",
        depth_controlnet=BUILTIN_TINY,
        depth_estimator=BUILTIN_TINY,
        clip_model=BUILTIN_TINY,
    )


def builtin_demo_spec() -> ModelSpec:
    """The shipped demo model trained on gouache's procedural world (see docs)."""
    return ModelSpec(
        path=BUILTIN_DEMO,
        family="sd",
        label="shapes and colours, trained offline on a procedural world",
        default_steps=20,
        default_guidance=2.0,  # held-out accuracy peaks at 2 (benchmarks/results/demo_quality.json)
        default_width=32,
        default_height=32,
        default_sampler="ddim",
        depth_controlnet=BUILTIN_DEMO,
        depth_estimator=BUILTIN_DEMO,
        clip_model=BUILTIN_DEMO,
    )
