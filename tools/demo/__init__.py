"""The built-in demo model family: a procedural world and the tiny models trained on it.

``world`` renders scenes, depth maps and captions; ``components`` builds the standard
diffusers/transformers classes; ``train`` reproduces ``gouache/models/demo`` from a seed;
``judge`` and ``metrics`` score what the models draw (benchmarks/demo_quality.py).
Nothing here is imported by ``import gouache``: torch stays out until a model is used.
"""
