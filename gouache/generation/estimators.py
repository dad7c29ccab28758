"""Depth estimators for /depth photos: one small interface, three backends.

``DepthEstimator.estimate(photo) -> HxW float32 in [0, 1], near = bright``, the size of the
photo. Which one a model uses is ``ModelSpec.depth_estimator``, written ``BACKEND:WHERE``:

- ``midas:FOLDER_OR_HUB_ID`` (also ``zoe:``, ``leres:``): a controlnet-aux annotator, the
  family the SD depth ControlNets were trained with; ``FOLDER_OR_HUB_ID`` is a folder holding
  the checkpoint (``dpt_hybrid-midas-501f0c75.pt``, ``ZoeD_M12_N.pt``, ``res101.pth`` +
  ``latest_net_G.pth``) or a hub id such as ``lllyasviel/Annotators``, loaded through the
  annotator's own ``from_pretrained`` (``local_files_only`` when offline). MiDaS (DPT-hybrid)
  is the default annotator: a bare ``midas`` / ``annotators:`` name means it.
- ``transformers:PATH_OR_ID``, or a bare path or hub id: a transformers depth-estimation
  model (Depth Anything V2, DPT, ...) through ``pipeline("depth-estimation")``.
- ``builtin:demo``: the tiny estimator trained on the demo world (``demo_depth_net.py``);
  ``builtin:tiny``: a tiny random-weight DPT built in code and loaded like any transformers
  model (noise, but the real path).

Estimators are loaded by ``EstimatorRegistry`` in the worker, beside the GPU, on first use,
once per spec; the bot process never loads one. Each runs where ``worker.helper_models`` puts
it (``pretrained.helper_placement``): its weights on that device in that dtype, its inputs cast
to it, its depth map float32.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image

from gouache import messages
from gouache.config import BUILTIN_DEMO, BUILTIN_TINY, ModelSpec
from gouache.errors import NotFound
from gouache.generation.pretrained import helper_placement

if TYPE_CHECKING:
    import torch

__all__ = [
    "DepthEstimator",
    "EstimatorSpec",
    "parse_estimator",
    "AnnotatorEstimator",
    "TransformersEstimator",
    "DemoEstimator",
    "EstimatorRegistry",
    "load_estimator",
]

log = logging.getLogger(__name__)
Backend = Literal["annotator", "transformers", "demo"]
_ANNOTATORS = ("midas", "zoe", "leres")
_METRIC_MODEL_TYPES = frozenset({"zoedepth"})  # transformers models whose output is far = large


class DepthEstimator(Protocol):
    name: str

    def estimate(self, image: Image.Image) -> np.ndarray: ...


@dataclass(frozen=True)
class EstimatorSpec:
    backend: Backend
    location: str
    annotator: str = "midas"  # for the annotator backend

    @property
    def label(self) -> str:
        if self.backend == "annotator":
            return f"{self.annotator}:{self.location}"
        return f"{self.backend}:{self.location}"


def parse_estimator(value: str) -> EstimatorSpec:
    """``midas:X`` | ``zoe:X`` | ``leres:X`` | ``transformers:X`` | ``builtin:demo`` |
    ``builtin:tiny`` | a bare path or hub id (transformers)."""
    value = value.strip()
    if value in (BUILTIN_DEMO, BUILTIN_TINY):
        return EstimatorSpec("demo" if value == BUILTIN_DEMO else "transformers", value)
    prefix, sep, rest = value.partition(":")
    if sep and prefix.lower() in _ANNOTATORS:
        return EstimatorSpec("annotator", rest or "lllyasviel/Annotators", prefix.lower())
    if sep and prefix.lower() == "annotators":
        return EstimatorSpec("annotator", rest or "lllyasviel/Annotators", "midas")
    if value.lower() in _ANNOTATORS:
        return EstimatorSpec("annotator", "lllyasviel/Annotators", value.lower())
    if sep and prefix.lower() == "transformers":
        return EstimatorSpec("transformers", rest)
    if sep and prefix.lower() == "demo":
        return EstimatorSpec("demo", rest)
    if not value:
        raise ValueError("empty depth estimator name")
    return EstimatorSpec("transformers", value)


def _to_unit(depth: np.ndarray, *, invert: bool = False) -> np.ndarray:
    values = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low, high = float(values[finite].min()), float(values[finite].max())
    out = np.where(finite, (values - low) / max(high - low, 1e-12), 0.0)
    if invert:
        out = np.where(finite, 1.0 - out, 0.0)
    return out.astype(np.float32)


def _resize_to(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if depth.shape[::-1] == size:
        return depth.astype(np.float32)
    image = Image.fromarray(depth.astype(np.float32), mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def _float_tensors(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating tensors (in tuples, lists and dicts too) cast to ``dtype``;
    a dict (a transformers ``ModelOutput``) is updated in place, keeping its type."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_float_tensors(v, dtype) for v in value)
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _float_tensors(value[key], dtype)
    return value


def _in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast ``module`` to ``dtype`` for code written for float32 (controlnet-aux feeds it
    float32; the depth pipeline's post-processing reads its output with numpy, which has no
    bfloat16): its float inputs are cast to ``dtype`` on the way in, its outputs to float32 on
    the way out."""
    import torch

    module.to(dtype=dtype)
    if dtype == torch.float32:
        return
    module.register_forward_pre_hook(lambda _m, args, kwargs: (_float_tensors(args, dtype),
                                                               _float_tensors(kwargs, dtype)),
                                     with_kwargs=True)  # fmt: skip
    module.register_forward_hook(lambda _m, _args, out: _float_tensors(out, torch.float32))


# The network each detector calls (a path of attributes from the detector).
_ANNOTATOR_NETS = {"midas": "model", "zoe": "model", "leres": "model.depth_model"}


class AnnotatorEstimator:
    """controlnet-aux's MiDaS (DPT-hybrid), Zoe or LeReS; outputs are near = bright."""

    def __init__(self, kind: str, location: str, *, device: torch.device, offline: bool,
                 detect_resolution: int = 384, dtype: torch.dtype | None = None) -> None:  # fmt: skip
        import operator

        import controlnet_aux

        classes = {"midas": "MidasDetector", "zoe": "ZoeDetector", "leres": "LeresDetector"}
        if kind not in classes:
            raise ValueError(f"unknown annotator {kind!r}: choose midas, zoe or leres")
        detector_cls: Any = getattr(controlnet_aux, classes[kind])
        self.detector = detector_cls.from_pretrained(location, local_files_only=offline)
        if hasattr(self.detector, "to"):
            self.detector = self.detector.to(str(device))
        self.net: torch.nn.Module = operator.attrgetter(_ANNOTATOR_NETS[kind])(self.detector)
        if dtype is not None:
            _in_dtype(self.net, dtype)
        self.kind = kind
        self.name = f"{kind} ({location})"
        self.detect_resolution = detect_resolution

    def estimate(self, image: Image.Image) -> np.ndarray:
        import torch

        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        resolution = min(self.detect_resolution, max(64, max(image.size)))
        with torch.inference_mode():
            out = self.detector(rgb, detect_resolution=resolution, image_resolution=resolution,
                                output_type="np")  # fmt: skip
        depth = np.asarray(out, dtype=np.float32)
        if depth.ndim == 3:
            depth = depth[..., 0]
        return _resize_to(_to_unit(depth), image.size)


class TransformersEstimator:
    """Any transformers depth-estimation model through ``pipeline("depth-estimation")``.

    DPT and Depth Anything predict relative inverse depth (near = large): kept. ZoeDepth
    predicts metric depth (far = large): inverted.
    """

    def __init__(self, location: str, *, device: torch.device, offline: bool,
                 dtype: torch.dtype | None = None) -> None:  # fmt: skip
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation, pipeline

        model = AutoModelForDepthEstimation.from_pretrained(location, local_files_only=offline)
        _in_dtype(model, dtype or torch.float32)
        processor = AutoImageProcessor.from_pretrained(location, local_files_only=offline)
        self.pipe = pipeline(
            "depth-estimation", model=model.eval(), image_processor=processor, device=device
        )
        self.invert = getattr(self.pipe.model.config, "model_type", "") in _METRIC_MODEL_TYPES
        self.name = f"{type(self.pipe.model).__name__} ({Path(location).name or location})"

    def estimate(self, image: Image.Image) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.pipe(image.convert("RGB"))
        predicted = out["predicted_depth"]
        depth = predicted.float().cpu().numpy() if hasattr(predicted, "numpy") else np.asarray(predicted)
        depth = np.squeeze(depth)
        return _resize_to(_to_unit(depth, invert=self.invert), image.size)


class DemoEstimator:
    """The demo world's tiny estimator: resizes to its resolution and back."""

    def __init__(self, location: str, *, device: torch.device, dtype: torch.dtype | None = None) -> None:
        import torch

        from gouache.generation.demo_depth_net import DemoDepthNet

        self.dtype = dtype or torch.float32
        self.net = DemoDepthNet.from_pretrained(location).to(device=device, dtype=self.dtype)
        self.device = device
        self.name = "the demo depth estimator"

    def estimate(self, image: Image.Image) -> np.ndarray:
        import torch

        side = self.net.resolution
        small = image.convert("RGB").resize((side, side), Image.Resampling.BOX)
        x = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            depth = self.net(x.to(self.device, self.dtype))[0].float().cpu().numpy()
        return _resize_to(np.clip(depth, 0.0, 1.0), image.size)


class GuardedEstimator:
    """An estimator behind the device handling every GPU call shares (``device.guarded``):
    out of memory fails that job alone, a sticky device error restarts the worker."""

    def __init__(self, inner: DepthEstimator) -> None:
        self.inner = inner
        self.name = inner.name

    def estimate(self, image: Image.Image) -> np.ndarray:
        from gouache.generation.loop.device import guarded

        return guarded(lambda: self.inner.estimate(image), what="the depth estimate")


def load_estimator(
    spec: EstimatorSpec, *, device: torch.device, offline: bool, cache_dir: Path,
    dtype: torch.dtype | None = None,
) -> DepthEstimator:
    """Build the backend a spec names, resolving ``builtin:*`` to their folders."""
    location = spec.location
    if location == BUILTIN_DEMO:
        from gouache.generation.models import demo_root

        folder = demo_root() / "depth-estimator"
        if not folder.is_dir():
            raise NotFound(messages.demo_estimator_not_installed(folder))
        return DemoEstimator(str(folder), device=device, dtype=dtype)
    if location == BUILTIN_TINY:
        from gouache.generation.tiny import ensure_tiny_depth_estimator

        location = str(ensure_tiny_depth_estimator(cache_dir / "builtin-tiny-depth"))
    if spec.backend == "annotator":
        return AnnotatorEstimator(spec.annotator, location, device=device, offline=offline, dtype=dtype)
    if spec.backend == "demo":
        return DemoEstimator(location, device=device, dtype=dtype)
    return TransformersEstimator(location, device=device, offline=offline, dtype=dtype)


class EstimatorRegistry:
    """Per model name, its depth estimator (or None), loaded once on first use, placed by
    ``helpers`` (``worker.helper_models``) on a worker whose device is ``device``."""

    def __init__(self, specs: Mapping[str, ModelSpec], *, cache_dir: Path, device: str = "auto",
                 offline: bool = True, helpers: str = "full") -> None:  # fmt: skip
        helper_placement(helpers, "cpu")  # an unknown mode fails here, not at the first photo
        self._specs = dict(specs)
        self._cache_dir = Path(cache_dir)
        self._device_name = device
        self._helpers = helpers
        self._offline = offline
        self._loaded: dict[EstimatorSpec, DepthEstimator] = {}
        self._lock = threading.Lock()

    @property
    def placement(self) -> tuple[torch.device, torch.dtype]:
        """(device, dtype) every estimator loads with."""
        return helper_placement(self._helpers, self._device_name)

    def spec_for(self, model: str) -> EstimatorSpec | None:
        spec = self._specs.get(model)
        if spec is None or not spec.depth_estimator:
            return None
        return parse_estimator(spec.depth_estimator)

    def get(self, model: str) -> DepthEstimator | None:
        wanted = self.spec_for(model)
        if wanted is None:
            return None
        with self._lock:
            if wanted not in self._loaded:
                device, dtype = self.placement
                try:
                    self._loaded[wanted] = GuardedEstimator(load_estimator(
                        wanted, device=device, offline=self._offline, cache_dir=self._cache_dir,
                        dtype=dtype,
                    ))  # fmt: skip
                except NotFound:
                    raise
                except Exception as exc:  # missing or broken weights: say which, not a trace
                    log.exception("cannot load depth estimator %s", wanted.label)
                    raise NotFound(messages.estimator_cannot_load(model, wanted.label)) from exc
            return self._loaded[wanted]
