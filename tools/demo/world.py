"""The procedural world the demo models are trained and judged on.

Small scenes of one to three shapes in named colours, sizes, draw styles and positions on a
styled background. ``render`` returns the image, its exact depth map and a caption, so the
text-to-image model, the depth ControlNet, the CLIP model and the judge all learn from one
source of truth. Everything is a pure function of a seed. Some (colour, shape) pairs never
appear in training scenes (``HELDOUT_PAIRS``) so evaluation measures composition, not recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZES",
    "BACKGROUNDS",
    "DRAW_STYLES",
    "POSITIONS",
    "RELATIONS",
    "HELDOUT_PAIRS",
    "Shape",
    "Scene",
    "Rendered",
    "sample_scene",
    "heldout_scenes",
    "caption",
    "render",
    "depth_to_image",
    "vocabulary",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 35),
    "green": (40, 170, 60),
    "blue": (35, 75, 225),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "diamond")
SIZES: dict[str, float] = {"small": 0.15, "large": 0.27}  # radius as a fraction of the side
BACKGROUNDS = ("plain", "gradient", "striped", "dotted", "noisy")
DRAW_STYLES = ("flat", "outlined", "shaded")
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
}
_POSITION_WORDS = {
    "center": "in the center",
    "left": "at the left",
    "right": "at the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
RELATIONS = ("left of", "right of", "above", "below")
# Each colour loses one shape in training; every colour and shape still appears elsewhere.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "ring"),
        ("yellow", "diamond"),
        ("green", "circle"),
        ("blue", "square"),
        ("purple", "triangle"),
        ("white", "ring"),
        ("black", "star"),
    }
)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    """One shape; ``x``/``y`` are its centre as fractions of the image side."""

    kind: str
    colour: str
    size: str
    style: str
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    """A full scene; ``layout`` is a position (one shape), a relation (two) or ``row`` (three)."""

    shapes: tuple[Shape, ...]
    background: str
    bg_colour: str
    layout: str
    seed: int


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 in [0, 1], 1 = nearest (MiDaS convention)
    mask: np.ndarray  # (H, W) int8: -1 background, else index of the visible shape
    caption: str


def _phrase(shape: Shape) -> str:
    style = "" if shape.style == "flat" else f"{shape.style} "
    return f"a {shape.size} {style}{shape.colour} {shape.kind}"


def caption(scene: Scene) -> str:
    """The one canonical caption of a scene."""
    phrases = [_phrase(s) for s in scene.shapes]
    if len(phrases) == 1:
        body = f"{phrases[0]} {_POSITION_WORDS[scene.layout]}"
    elif len(phrases) == 2:
        body = f"{phrases[0]} {scene.layout} {phrases[1]}"
    else:
        body = f"{phrases[0]} , {phrases[1]} and {phrases[2]} in a row"
    return f"{body} on a {scene.background} {scene.bg_colour} background"


def vocabulary() -> list[str]:
    """Every word a caption can contain, for a one-token-per-word tokenizer."""
    words = {"a", "on", "background", "in", "the", "at", "of", "and", "row", ","}
    words |= set(COLOURS) | set(SHAPES) | set(SIZES) | set(BACKGROUNDS) | set(DRAW_STYLES)
    words |= {w for r in RELATIONS for w in r.split()} | set(POSITIONS)
    return sorted(words)


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _sample_shape(rng: np.random.Generator, bg_colour: str, split: str) -> tuple[str, str]:
    while True:
        colour = _pick(rng, [c for c in COLOURS if c != bg_colour])
        kind = _pick(rng, SHAPES)
        held = (colour, kind) in HELDOUT_PAIRS
        if split == "any" or held == (split == "heldout"):
            return colour, kind


def _centres(layout: str, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    if n == 1:
        x, y = POSITIONS[layout]
        centres = [(x, y)]
    elif n == 2:
        a, b = {"left of": ((0.28, 0.5), (0.72, 0.5)), "right of": ((0.72, 0.5), (0.28, 0.5)),
                "above": ((0.5, 0.28), (0.5, 0.72)), "below": ((0.5, 0.72), (0.5, 0.28))}[layout]
        centres = [a, b]
    else:
        centres = [(0.2, 0.5), (0.5, 0.5), (0.8, 0.5)]
    return [(x + rng.uniform(-0.04, 0.04), y + rng.uniform(-0.04, 0.04)) for x, y in centres]


def sample_scene(seed: int, split: str = "train", n_shapes: int | None = None) -> Scene:
    """A random scene. ``split``: ``train`` avoids HELDOUT_PAIRS, ``heldout`` uses only them
    (one shape), ``any`` ignores the split."""
    rng = np.random.default_rng(seed)
    if n_shapes is None:
        n_shapes = 1 if split == "heldout" else int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    bg_colour = _pick(rng, tuple(COLOURS))
    background = _pick(rng, BACKGROUNDS)
    layout = {1: lambda: _pick(rng, tuple(POSITIONS)), 2: lambda: _pick(rng, RELATIONS),
              3: lambda: "row"}[n_shapes]()
    shapes = []
    for i, (x, y) in enumerate(_centres(layout, n_shapes, rng)):
        colour, kind = _sample_shape(rng, bg_colour, split if i == 0 or split != "heldout" else "train")
        shapes.append(Shape(kind, colour, _pick(rng, tuple(SIZES)), _pick(rng, DRAW_STYLES), x, y))
    return Scene(tuple(shapes), background, bg_colour, layout, seed)


def heldout_scenes(count_per_pair: int = 5, seed: int = 10_000) -> list[Scene]:
    """Deterministic single-shape evaluation scenes, cycling background styles per pair."""
    scenes = []
    for p, (colour, kind) in enumerate(sorted(HELDOUT_PAIRS)):
        for k in range(count_per_pair):
            rng = np.random.default_rng(seed + 100 * p + k)
            bg_colour = _pick(rng, [c for c in COLOURS if c != colour])
            layout = _pick(rng, tuple(POSITIONS))
            (x, y), = _centres(layout, 1, rng)
            shape = Shape(kind, colour, _pick(rng, tuple(SIZES)), _pick(rng, DRAW_STYLES), x, y)
            bg = BACKGROUNDS[(k + p) % len(BACKGROUNDS)]
            scenes.append(Scene((shape,), bg, bg_colour, layout, seed + 100 * p + k))
    return scenes


def _secondary(rgb: tuple[int, int, int]) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float32)
    luminance = float(c @ np.array([0.299, 0.587, 0.114])) / 255.0
    return c * 0.6 if luminance > 0.55 else c + (255.0 - c) * 0.4


def _background(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    c = np.asarray(COLOURS[scene.bg_colour], dtype=np.float32)
    c2 = _secondary(COLOURS[scene.bg_colour])
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    angle = float(rng.choice([0.0, 0.5, 0.25, 0.75])) * math.pi
    along = xx * math.cos(angle) + yy * math.sin(angle)
    if scene.background == "plain":
        t = np.zeros_like(xx)
    elif scene.background == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif scene.background == "striped":
        period = 1.0 / rng.integers(4, 7)
        t = ((along / period) % 1.0 < 0.5).astype(np.float32)
    elif scene.background == "dotted":
        n = int(rng.integers(4, 7))
        fx, fy = (xx * n) % 1.0 - 0.5, (yy * n) % 1.0 - 0.5
        t = (fx**2 + fy**2 < 0.07).astype(np.float32)
    else:  # noisy
        t = rng.uniform(0.0, 1.0, size=xx.shape).astype(np.float32) ** 1.5
    return c[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]


def _outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "diamond":
        h = r * 1.1
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if kind == "triangle":
        h = r * 1.15
        return [(cx + h * math.cos(a), cy + 0.15 * r + h * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    points = []  # star
    for i in range(10):
        a = -math.pi / 2 + i * math.pi / 5
        h = r * 1.15 if i % 2 == 0 else r * 0.5
        points.append((cx + h * math.cos(a), cy + h * math.sin(a)))
    return points


def _shape_masks(shape: Shape, size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased (fill, outline band) coverage in [0, 1], drawn supersampled."""
    big = size * _SUPERSAMPLE
    r = SIZES[shape.size] * scale * big
    cx, cy = shape.x * big, shape.y * big
    band = max(int(r * 0.22), _SUPERSAMPLE)
    fill, edge = Image.new("L", (big, big)), Image.new("L", (big, big))
    df, de = ImageDraw.Draw(fill), ImageDraw.Draw(edge)
    if shape.kind in ("circle", "ring"):
        df.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        de.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=band)
        if shape.kind == "ring":
            q = r * 0.55
            df.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
            de.ellipse([cx - q - band, cy - q - band, cx + q + band, cy + q + band], outline=255, width=band)
            de.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    else:
        points = _outline(shape.kind, cx, cy, r)
        df.polygon(points, fill=255)
        de.polygon(points, outline=255, width=band)
    small = (size, size)
    return (np.asarray(fill.resize(small, Image.BOX), dtype=np.float32) / 255.0,
            np.asarray(edge.resize(small, Image.BOX), dtype=np.float32) / 255.0)


def _shape_colour(shape: Shape, size: int, scale: float) -> np.ndarray:
    c = np.asarray(COLOURS[shape.colour], dtype=np.float32)
    if shape.style != "shaded":
        return np.broadcast_to(c, (size, size, 3))
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    r = SIZES[shape.size] * scale
    t = np.clip(((xx - shape.x) + (yy - shape.y)) / (2.0 * r), -1.0, 1.0)  # -1 top-left
    light = (1.0 - 0.35 * t)[..., None]
    lit = np.where(light > 1.0, c + (255.0 - c) * (light - 1.0), c * light)
    return lit + (18.0 * (1.0 - light)) * (c < 40)  # black still shows its shading


def render(scene: Scene, size: int = 32) -> Rendered:
    """Draw ``scene`` at ``size`` x ``size``: image, exact depth map, visibility mask, caption."""
    rng = np.random.default_rng([scene.seed, size])
    image = _background(scene, size, rng)
    yy = (np.mgrid[0:size, 0:size][0].astype(np.float32) + 0.5) / size
    depth = 0.05 + 0.2 * yy  # a ground plane: lower rows are nearer
    mask = np.full((size, size), -1, dtype=np.int8)
    scale = {1: 1.0, 2: 0.85, 3: 0.6}[len(scene.shapes)]
    for i, shape in enumerate(scene.shapes):
        fill, edge = _shape_masks(shape, size, scale)
        colour = _shape_colour(shape, size, scale)
        if shape.style == "outlined":
            ink = np.array((235, 235, 235) if shape.colour == "black" else (15, 15, 15), np.float32)
            edge = np.minimum(edge, fill)
            colour = colour * (1 - edge[..., None]) + ink * edge[..., None]
        image = image * (1 - fill[..., None]) + colour * fill[..., None]
        inside = fill >= 0.5
        depth = np.where(inside, 0.6 + 0.15 * i, depth)  # later shapes are nearer
        mask[inside] = i
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Rendered(image, depth.astype(np.float32), mask, caption(scene))


def depth_to_image(depth: np.ndarray) -> Image.Image:
    """A depth map as the 3-channel control image depth ControlNets take (white = near)."""
    gray = np.clip(np.rint(depth * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
