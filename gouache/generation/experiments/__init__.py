"""Experiments in the chat: sweep grids, the forward (noising) process, interpolation.

Pure compute like the rest of ``generation/``: these build on the engine (``Engine.generate``)
and, for what the engine's loop does not do (forward noising, interpolated noise and text
embeddings), on a loaded model's own components and scheduler.
"""
