"""Ways to enlarge the diversity of a /diversity set, each run beside a baseline on the same seeds.

- ``cads``: condition-annealed sampling (CADS, Sadat et al. 2024): the prompt embedding is
  noised early in sampling and clean for the final steps (``conditioning.annealed``).
- ``interval``: limited-interval guidance (Kynkäänniemi et al. 2024): no classifier-free
  guidance in the high-noise early steps, where it collapses samples onto one mode; guidance
  as asked for the rest (``BatchItem.guidance_interval``).
- ``variants``: prompt variants: keep the subject, vary attribute, composition and style words;
  over-generate ``OVERSAMPLE`` x N candidates, drop those that fail a fidelity gate (CLIP score
  against the *original* prompt at least the baseline's lowest minus ``GATE_MARGIN``), keep the N with the
  highest joint (content x colour) Vendi score, chosen greedily.

``generate_enlarged`` takes any ``generate(key, items)`` function (the engine's), so the worker,
the CLI and the benchmark share it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from gouache.generation.diversity.metrics import cosine_kernel, histogram_roots, vendi
from gouache.generation.diversity.scorer import ClipEmbedder, known_by
from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult
from gouache.request import ENLARGE_METHODS

__all__ = [
    "METHODS",
    "INTERVAL",
    "OVERSAMPLE",
    "GATE_MARGIN",
    "Enlarged",
    "prompt_variants",
    "select_diverse",
    "generate_enlarged",
    "known_by",
]

METHODS = ENLARGE_METHODS
INTERVAL = (0.0, 0.7)  # guidance only where the noise level (1 = noise, 0 = clean) is in (lo, hi]
OVERSAMPLE = 2
GATE_MARGIN = 5.0  # a candidate may score this many CLIP points under the baseline's lowest

Generate = Callable[[BatchKey, Sequence[BatchItem]], list[ItemResult]]

# Interchangeable words and phrases, one group per axis. A group that occurs in the prompt is
# varied in place; the ``append`` groups are added when absent. The subject (the words in no
# group) is kept. Phrases the model's tokenizer does not know are dropped (``known``).
_REPLACE: tuple[tuple[str, ...], ...] = (
    ("small", "large", "tiny", "huge"),  # size
    ("in the center", "at the left", "at the right", "at the top", "at the bottom"),  # place
    ("plain", "gradient", "striped", "dotted", "noisy"),  # background texture
    ("flat", "outlined", "shaded"),  # drawing style
    ("a photo of", "a watercolour painting of", "an oil painting of", "a pencil sketch of"),
)
_APPEND: tuple[tuple[str, ...], ...] = (
    ("close-up", "wide shot", "seen from above", "seen from a low angle"),  # composition
    ("at dawn", "at night", "in fog", "in golden hour light"),  # lighting
    ("watercolour", "oil painting", "pencil sketch", "flat vector art"),  # style
)


def _find(prompt: str, phrase: str) -> re.Match[str] | None:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", prompt)


def prompt_variants(
    prompt: str, count: int, seed: int, known: Callable[[str], bool] | None = None
) -> list[str]:
    """``count`` prompts that keep ``prompt``'s subject and vary its other words; the first is
    ``prompt`` itself. Deterministic in ``seed``."""
    ok = known or (lambda phrase: True)
    present, absent = [], []
    for group in _REPLACE:
        hit = next((p for p in group if _find(prompt, p)), None)
        if hit is not None:
            present.append((hit, [p for p in group if p != hit and ok(p)]))
    for group in _APPEND:
        if not any(_find(prompt, p) for p in group):
            absent.append([p for p in group if ok(p)])
    out = [prompt]
    rng = random.Random(seed)
    for _ in range(count * 4):
        if len(out) >= count:
            break
        text = prompt
        for hit, options in present:
            if options and rng.random() < 0.7:
                match = _find(text, hit)
                if match is not None:
                    text = text[: match.start()] + rng.choice(options) + text[match.end() :]
        for options in absent:
            if options and rng.random() < 0.5:
                text = f"{text}, {rng.choice(options)}"
        if text not in out:
            out.append(text)
    while len(out) < count:  # nothing left to vary: repeat (the seeds still differ)
        out.append(out[len(out) % max(1, len(out))])
    return out


def _joint_kernel(images: Sequence[Image.Image], embeds: np.ndarray | None) -> np.ndarray:
    """Content x colour similarity: the elementwise product of two PSD kernels is PSD."""
    kernel = cosine_kernel(histogram_roots(images))
    if embeds is not None:
        kernel = kernel * np.clip(cosine_kernel(embeds), 0.0, None)
    return kernel


def select_diverse(kernel: np.ndarray, count: int, allowed: Sequence[int], first: int) -> list[int]:
    """Greedy subset of ``count`` indices among ``allowed`` (starting at ``first``) maximising
    the Vendi score of ``kernel`` restricted to the subset."""
    chosen = [first]
    pool = [i for i in allowed if i != first]
    while len(chosen) < count and pool:
        best = max(pool, key=lambda i: (vendi(kernel[np.ix_([*chosen, i], [*chosen, i])]), -i))
        chosen.append(best)
        pool.remove(best)
    return chosen


@dataclass
class Enlarged:
    """One item's baseline and enlarged sets (same seeds), and how each enlarged image was made."""

    baseline: ItemResult
    enlarged: ItemResult
    method: str
    prompts: tuple[str, ...]  # per enlarged image
    seeds: tuple[int, ...]  # per enlarged image


def _lowest_score(clip: ClipEmbedder | None, prompt: str, result: ItemResult) -> float:
    if clip is None or not result.ok or not result.images:
        return float("-inf")
    return float(clip.scores(prompt, result.images).min())


def _variants(
    generate: Generate,
    key: BatchKey,
    items: Sequence[BatchItem],
    baselines: dict[str, ItemResult],
    clip: ClipEmbedder | None,
    known: Callable[[str], bool] | None,
) -> dict[str, Enlarged]:
    baseline_scores = {
        item.item_id: _lowest_score(clip, item.prompt, baselines[item.item_id]) for item in items
    }
    plans: dict[str, tuple[list[str], list[int]]] = {}
    candidates: list[BatchItem] = []
    for item in items:
        total = item.count * OVERSAMPLE
        prompts = prompt_variants(item.prompt, total, item.seed, known)
        seeds = [item.image_seed(k) for k in range(total)]  # the first N are the baseline's
        plans[item.item_id] = (prompts, seeds)
        candidates += [replace(item, item_id=f"{item.item_id}#{k}", prompt=p, seed=s, count=1,
                               frames_every=0)
                       for k, (p, s) in enumerate(zip(prompts, seeds, strict=True))]  # fmt: skip
    made = {r.item_id: r for r in generate(key, candidates)}
    out: dict[str, Enlarged] = {}
    for item in items:
        prompts, seeds = plans[item.item_id]
        parts = [made[f"{item.item_id}#{k}"] for k in range(len(prompts))]
        failed = next((p for p in parts if not p.ok), None)
        if failed is not None:
            result = ItemResult(item.item_id, error=failed.error, cancelled=failed.cancelled)
            out[item.item_id] = Enlarged(baselines[item.item_id], result, "variants", (), ())
            continue
        images = [p.images[0] for p in parts]
        embeds, allowed, first = None, list(range(len(images))), 0
        if clip is not None:
            text, embeds = clip.embed(item.prompt, images)
            scores = cosine_kernel(np.vstack([text[None], embeds]))[0, 1:]
            scores = scores * 100
            floor = baseline_scores[item.item_id] - GATE_MARGIN
            allowed = [k for k in range(len(images)) if scores[k] >= floor]
            first = int(np.argmax(scores))
        chosen = select_diverse(_joint_kernel(images, embeds), item.count, allowed, first)
        if len(chosen) < item.count:  # too few passed the gate: fill with the best of the rest
            rest = [k for k in np.argsort(-scores) if k not in chosen] if clip is not None else []
            chosen += [int(k) for k in rest[: item.count - len(chosen)]]
        result = ItemResult(item.item_id, images=[images[k] for k in chosen])
        out[item.item_id] = Enlarged(baselines[item.item_id], result, "variants",
                                     tuple(prompts[k] for k in chosen), tuple(seeds[k] for k in chosen))  # fmt: skip
    return out


def generate_enlarged(
    generate: Generate,
    key: BatchKey,
    items: Sequence[BatchItem],
    method: str,
    *,
    clip: ClipEmbedder | None = None,
    known: Callable[[str], bool] | None = None,
) -> dict[str, Enlarged]:
    """Baseline (``key`` without CADS, items as asked) and the set enlarged by ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown enlargement method {method!r}: use one of {', '.join(METHODS)}")
    base_key = replace(key, diversify=False)
    baselines = {r.item_id: r for r in generate(base_key, items)}
    if method == "variants":
        return _variants(generate, base_key, items, baselines, clip, known)
    if method == "cads":
        results = generate(replace(key, diversify=True), items)
    else:
        results = generate(base_key, [replace(item, guidance_interval=INTERVAL) for item in items])
    out = {}
    for item, result in zip(items, results, strict=True):
        seeds = tuple(item.image_seed(k) for k in range(item.count))
        out[item.item_id] = Enlarged(baselines[item.item_id], result, method,
                                     (item.prompt,) * item.count, seeds)  # fmt: skip
    return out
