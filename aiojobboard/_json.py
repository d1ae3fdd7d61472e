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
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "check_json", "deeper_than", "dumps", "unencodable"]

#: How deep values may nest. JSON readers give up somewhere past a thousand
#: levels (Python's own among them, at a depth that depends on its stack), so
#: a fixed limit well below that keeps every adapter answering the same.
MAX_DEPTH = 100


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


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether dicts and lists nest in *value* more than *limit* levels deep."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True

            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)

    return False


def unencodable(fields: Mapping[str, Any]) -> str:
    """Say which part of *fields*, already checked as JSON, cannot be encoded.

    A string or key holding a lone surrogate, which UTF-8 cannot encode, or an
    int too long for Python to write.
    """
    stack: list[tuple[Any, str]] = [(child, key) for key, child in fields.items()]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            bad = _surrogate(item)
            if bad is not None:
                return (
                    f"{path} holds the lone surrogate {bad!r}, which UTF-8 "
                    "cannot encode"
                )
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                str(item)
            except ValueError:
                limit = sys.get_int_max_str_digits()
                return f"{path} is an int of more than {limit} digits"
        elif isinstance(item, dict):
            for key, child in item.items():
                bad = _surrogate(key)
                if bad is not None:
                    return (
                        f"{path} has key {key!r}, holding the lone surrogate "
                        f"{bad!r}, which UTF-8 cannot encode"
                    )

                stack.append((child, f"{path}[{key!r}]"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))

    return "it cannot be written as JSON"


def _surrogate(text: str) -> str | None:
    if text.isascii():
        return None

    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return text[exc.start]

    return None
