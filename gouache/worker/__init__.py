"""The GPU side of the queue: claim jobs, run the engine, store artifacts.

``loop`` (claim -> generate -> store), ``jobs`` (Request <-> engine items and artifacts),
``loading`` (model registry and engine, shared with `gouache generate`), ``process`` (the
`gouache worker` entry point) and ``supervisor`` (the all-in-one service's worker child).
Nothing here imports a chat SDK or the bot package.
"""
