"""Flows: ordered steps that a conductor runs from a job's logbook.

A flow is an ordered list of named async steps. Each step takes named inputs
from a store (a dict of JSON values), and its result provides named outputs
into it for the steps after it. A step may have a revert, run in reverse order
when a later step fails.

A flow is never stored: its *factory* is. The producer records, in a flow
detail's meta, the import path of a function that builds the flow and the
arguments to call it with; any process can then import the factory and build
the same flow again.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._json import check_json
from .book.models import FlowDetail

__all__ = [
    "FactoryError",
    "Flow",
    "Step",
    "factory_path",
    "load_flow",
    "save_factory_details",
]

#: The key of a flow detail's meta under which the factory is recorded.
FACTORY_KEY = "factory"

#: The key of a flow detail's meta holding the flow's inputs.
STORE_KEY = "store"


class FactoryError(Exception):
    """Raised when a flow cannot be rebuilt from its flow detail's meta.

    The factory is missing from the meta, its path does not import, or it does
    not build a :class:`Flow`.
    """


@dataclass(frozen=True, slots=True)
class Step:
    """One named step of a flow.

    *run* is called with the store values named in *requires*, as keyword
    arguments. Its result must be JSON: it is saved in the step's atom detail.
    With one name in *provides*, the result is stored under it; with several,
    the result must be a sequence of as many values. *revert*, when given, is
    called with the same inputs and ``result=`` the step's result, to undo the
    step when a later one fails.
    """

    name: str
    run: Callable[..., Awaitable[Any]]
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    revert: Callable[..., Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a step name must be a non-empty str, not {self.name!r}")
        if not callable(self.run):
            raise TypeError(f"step {self.name!r}: run must be callable")
        if self.revert is not None and not callable(self.revert):
            raise TypeError(f"step {self.name!r}: revert must be callable or None")
        # A lone str would be taken letter by letter.
        for what in ("requires", "provides"):
            keys = getattr(self, what)
            if isinstance(keys, str):
                raise TypeError(
                    f"step {self.name!r}: {what} must be a tuple of names, "
                    f"not the str {keys!r}"
                )
            object.__setattr__(self, what, tuple(keys))

    def inputs(self, store: Mapping[str, Any]) -> dict[str, Any]:
        """Pick this step's inputs from *store*; ``KeyError`` names a missing one."""
        missing = [key for key in self.requires if key not in store]
        if missing:
            raise KeyError(
                f"step {self.name!r} requires {', '.join(map(repr, missing))}, "
                "which no input or earlier step provides"
            )
        return {key: store[key] for key in self.requires}

    def outputs(self, result: Any) -> dict[str, Any]:
        """Name the values that *result* provides to the store."""
        if not self.provides:
            return {}
        if len(self.provides) == 1:
            return {self.provides[0]: result}
        if not isinstance(result, Sequence) or isinstance(result, str):
            raise TypeError(
                f"step {self.name!r} provides {len(self.provides)} values, so it "
                f"must return a sequence of them, not {type(result).__name__}"
            )
        if len(result) != len(self.provides):
            raise ValueError(
                f"step {self.name!r} provides {len(self.provides)} values but "
                f"returned {len(result)}"
            )
        return dict(zip(self.provides, result, strict=True))


class Flow:
    """A named, ordered list of steps with distinct names."""

    __slots__ = ("name", "steps")

    def __init__(self, name: str, steps: Iterable[Step]) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a flow name must be a non-empty str, not {name!r}")
        self.name = name
        self.steps: tuple[Step, ...] = tuple(steps)
        seen: set[str] = set()
        for step in self.steps:
            if not isinstance(step, Step):
                raise TypeError(
                    f"flow {name!r} holds a {type(step).__name__}, not a Step"
                )
            if step.name in seen:
                raise ValueError(f"flow {name!r} has two steps named {step.name!r}")
            seen.add(step.name)

    def __repr__(self) -> str:
        names = ", ".join(step.name for step in self.steps)
        return f"<Flow {self.name!r}: {names}>"


def save_factory_details(
    flow_detail: FlowDetail,
    factory: Callable[..., Flow],
    factory_args: Sequence[Any] = (),
    factory_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Record in *flow_detail*'s meta how to build its flow again.

    *factory* must be importable by path from another process: a module-level
    function, not a lambda, a nested function or one defined in ``__main__``.
    Its arguments must be JSON. Saving the flow detail is the caller's.
    """
    path = factory_path(factory)
    args = list(factory_args)
    kwargs = dict(factory_kwargs or {})
    check_json(args, f"the arguments of factory {path}")
    check_json(kwargs, f"the keyword arguments of factory {path}")
    flow_detail.meta[FACTORY_KEY] = {"path": path, "args": args, "kwargs": kwargs}


def factory_path(factory: Callable[..., Any]) -> str:
    """Return ``package.module:function`` for *factory*, if it imports back."""
    if not callable(factory):
        raise TypeError(f"a flow factory must be callable, not {factory!r}")
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(f"{factory!r} has no module and name to import it by")
    if qualname == "<lambda>" or "<locals>" in qualname:
        raise ValueError(
            f"flow factory {module}:{qualname} cannot be imported by another "
            "process; define it at the top level of a module"
        )
    if module == "__main__":
        raise ValueError(
            f"flow factory {qualname} is defined in __main__, which other "
            "processes import differently; move it into a module"
        )
    path = f"{module}:{qualname}"
    try:
        found = _resolve(path)
    except FactoryError as exc:
        raise ValueError(str(exc)) from exc
    if found is not factory:
        raise ValueError(f"{path} does not import back to {factory!r}")
    return path


def load_flow(flow_detail: FlowDetail) -> Flow:
    """Build the flow that *flow_detail*'s meta records a factory for."""
    recorded = flow_detail.meta.get(FACTORY_KEY)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("path"), str):
        raise FactoryError(
            f"flow {flow_detail.name!r} (uuid {flow_detail.uuid}) records no "
            "factory; save one with save_factory_details()"
        )
    path: str = recorded["path"]
    factory = _resolve(path)
    try:
        flow = factory(*recorded.get("args", []), **recorded.get("kwargs", {}))
    except Exception as exc:
        raise FactoryError(f"flow factory {path} raised {exc!r}") from exc
    if not isinstance(flow, Flow):
        raise FactoryError(
            f"flow factory {path} returned a {type(flow).__name__}, not a Flow"
        )
    return flow


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise FactoryError(
            f"flow factory {path}: module {module_name!r} does not import: {exc!r}"
        ) from exc
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise FactoryError(
                f"flow factory {path}: {module_name} has no {qualname!r}"
            ) from exc
    if not callable(found):
        raise FactoryError(f"flow factory {path} is not callable")
    return found  # type: ignore[no-any-return]
