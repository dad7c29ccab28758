"""Building the generation side from settings: the one model registry, the engine, the
/diversity scorer and the optional safety classifier. `gouache worker` and `gouache generate`
both load through here, so a model that works in one works in the other. The helper models
(the scorer's encoders, the safety classifier, the depth estimators) are placed here by
``worker.helper_models`` (``pretrained.helper_placement``).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from gouache.config import Settings
from gouache.errors import UserError

if TYPE_CHECKING:
    import torch

    from gouache.generation.diversity.scorer import DiversityScorer
    from gouache.generation.estimators import EstimatorRegistry
    from gouache.generation.models import ModelRegistry
    from gouache.generation.safety import SafetyClassifier
    from gouache.worker.engine_like import EngineLike

__all__ = ["build_registry", "build_estimators", "build_safety", "build_scorer", "load_generation", "max_rows"]

log = logging.getLogger(__name__)


def build_registry(settings: Settings, *, device: str | None = None) -> ModelRegistry:
    """The model registry every generating process uses (``device`` overrides the worker's)."""
    from gouache.generation.loop.speed import resolve_speed
    from gouache.generation.loras.catalog import LoraCatalog
    from gouache.generation.models import ModelRegistry

    return ModelRegistry(
        settings.models,
        cache_dir=settings.data_dir / "models",
        device=device or settings.worker.device,
        offline=settings.offline,
        speed=resolve_speed(settings.speed),
        loras=LoraCatalog.from_settings(settings).path_for,
        lora_budget_bytes=settings.lora_memory_mb << 20,
        memory_budget_bytes=int(settings.worker.model_memory_gb * 1e9) or None,
        evict=settings.worker.evicted_models,
    )


def build_estimators(settings: Settings, *, device: str | None = None) -> EstimatorRegistry:
    """The models' depth estimators (for /depth photos); each loads on first use."""
    from gouache.generation.estimators import EstimatorRegistry

    return EstimatorRegistry(
        settings.models,
        cache_dir=settings.data_dir / "models",
        device=device or settings.worker.device,
        offline=settings.offline,
        helpers=settings.worker.helper_models,
    )


def build_scorer(settings: Settings, registry: ModelRegistry) -> DiversityScorer:
    """The /diversity scorer, its encoders placed by ``worker.helper_models``."""
    from gouache.generation.diversity.scorer import DiversityScorer
    from gouache.generation.pretrained import helper_placement

    device, dtype = helper_placement(settings.worker.helper_models, registry.device)
    return DiversityScorer(registry, device=str(device), dtype=dtype)


def build_safety(settings: Settings, device: str | torch.device) -> SafetyClassifier | None:
    """The configured safety classifier (not loaded yet), placed by ``worker.helper_models`` on a
    worker whose device is ``device``; None when ``moderation.classifier`` is unset."""
    from gouache.generation.pretrained import helper_placement
    from gouache.generation.safety import SafetyClassifier

    mod = settings.moderation
    if not mod.classifier:
        return None
    where, dtype = helper_placement(settings.worker.helper_models, device)
    return SafetyClassifier(
        mod.classifier,
        threshold=mod.classifier_threshold,
        flagged_labels=mod.flagged_labels,
        device=str(where),
        dtype=dtype,
        offline=settings.offline,
    )


def max_rows(settings: Settings) -> int:
    """The most UNet rows one denoiser call of this worker takes: the step-mode budget (grids
    and GIF sweeps use it in both modes), or a request-mode batch of images with
    classifier-free guidance (two rows each)."""
    batching = settings.batching
    if batching.mode == "step":
        return batching.max_rows
    return max(batching.max_rows, 2 * batching.max_batch_images)


def load_generation(
    settings: Settings,
) -> tuple[EngineLike, DiversityScorer, SafetyClassifier | None]:
    """The engine named by ``settings.worker.engine`` (tests point it at fakes), the scorer for
    /diversity reports (sharing one model registry) and the optional safety classifier.

    The default model is loaded, and with ``speed.compile`` its buckets compiled, before this
    returns: the worker claims nothing until then. ``errors.CompileError`` when compiling cannot
    work here or fails (the worker refuses to start)."""
    from gouache.observability import quiet_model_libraries

    quiet_model_libraries()
    module_name, _, attr = settings.worker.engine.partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attr)
    registry = build_registry(settings)
    engine: EngineLike = factory(registry)
    try:  # load the default model now, so "ready" means ready and the first job is not slow
        engine.warm_up(settings.default_model, max_rows=max_rows(settings))
    except UserError as exc:
        log.error("default model %s is not usable: %s", settings.default_model, exc.message)
    scorer = build_scorer(settings, registry)
    safety = build_safety(settings, registry.device)
    if safety is not None:
        safety.warm_up()  # a broken classifier should stop the worker now, not per job
    return engine, scorer, safety


