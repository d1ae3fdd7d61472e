"""Strict JSON checks shared by jobs and logbooks.

``json.dumps`` quietly turns integer keys into strings and tuples into lists,
and writes ``NaN``, which no other JSON reader accepts. Values stored by
aiojobboard must read back the same on every adapter, so anything that would
not survive a round trip unchanged is refused up front, with the path to the
offending value in the message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["check_json", "dumps"]


def check_json(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming the first part of *value* that is not JSON."""
    # Most values are plain JSON: a walk that builds no paths clears them at
    # a fraction of the cost; anything it is unsure of gets the full look.
    if not _plainly_json(value):
        _explain(value, where)


def _plainly_json(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue

        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict:
            if not all(type(key) is str for key in item):
                return False

            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        else:
            return False

    return True


def _explain(value: Any, where: str) -> None:
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{path} is {item!r}, which JSON cannot hold")
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValueError(
                        f"{path} has key {key!r} of type {type(key).__name__}; "
                        "JSON object keys must be str"
                    )
                stack.append((child, f"{path}[{key!r}]"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
        else:
            raise ValueError(
                f"{path} is of type {type(item).__name__}, which is not JSON "
                "(use dict, list, str, int, float, bool or None)"
            )


def dumps(value: Any) -> str:
    """Serialize *value*, already checked, compactly."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
