"""The only place a chat SDK is imported: one folder (or module) per platform.

Each translates platform events into ``Request``s and ``Result``s back into messages, and
exposes ``async open_adapter(deps: AdapterDeps, stack) -> Adapter`` for ``service.py``.
"""
