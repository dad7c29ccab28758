"""Named SQL queries, loaded from ``sql/<dialect>.sql`` (the procrastinate layout).

Each query starts with a ``-- name: <name>`` line; the lines up to the next header are its text.
Keeping SQL in files beside the code lets both dialects be read side by side.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Literal

__all__ = ["Dialect", "load_queries", "read_sql"]

Dialect = Literal["sqlite", "postgres"]
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def read_sql(relative: str) -> str:
    return resources.files("gouache.storage").joinpath("sql", relative).read_text("utf-8")


@cache
def load_queries(dialect: Dialect) -> MappingProxyType[str, str]:
    """Query name -> SQL text; raises on a duplicate name so a typo cannot shadow a query."""
    text = read_sql(f"{dialect}.sql")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query {name!r} in {dialect}.sql")
        queries[name] = body.strip()
    return MappingProxyType(queries)
