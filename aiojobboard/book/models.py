"""Logbooks, their flow details and atom details, as plain dataclasses.

A logbook is the record of one piece of work that may outlive the process
doing it: each flow detail stands for a flow that ran, each atom detail for a
task in that flow and what its last run left behind. The objects here are what
callers build and read; a store copies them on the way in and on the way out,
so an object a caller holds is never the one a store keeps.

The functions below the classes are shared by every store: ``check_*`` refuse
what no store can keep, ``copy_*`` give an object that shares nothing,
``checked_copy_*`` do both in one pass, and ``merge_*`` fold a saved object
into the stored one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar
from uuid import uuid4

from .._json import check_json, dumps

__all__ = [
    "AtomDetail",
    "FlowDetail",
    "LogBook",
    "check_atom",
    "check_book",
    "check_flow",
    "checked_copy_book",
    "checked_copy_flow",
    "copy_atom",
    "copy_book",
    "copy_flow",
    "describe",
    "merge_atom",
    "merge_book",
    "merge_flow",
    "utc_now",
]


def _new_uuid() -> str:
    return str(uuid4())


def utc_now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


@dataclass
class AtomDetail:
    """One atom (a task or a retry) of a flow, and what its last run left."""

    _kind: ClassVar[str] = "atom"

    name: str
    uuid: str = field(default_factory=_new_uuid)
    state: str | None = None
    intention: str = "EXECUTE"
    results: Any = None
    failure: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    def __post_init__(self) -> None:
        self._check_types()

    def _check_types(self) -> None:
        label = describe(self)
        _check_identity(label, self.name, self.uuid)
        _check_text(label, "state", self.state, optional=True)
        _check_text(label, "intention", self.intention)
        _check_text(label, "version", self.version, optional=True)
        _check_dict(label, "failure", self.failure, optional=True)
        _check_dict(label, "meta", self.meta)


_C = TypeVar("_C", "FlowDetail", AtomDetail)


class _Holder(Generic[_C]):
    """What a logbook and a flow share: children kept in the order added."""

    _kind: ClassVar[str]
    _child_type: ClassVar[type[Any]]
    name: str
    uuid: str

    def _children(self) -> list[_C]:
        raise NotImplementedError

    def add(self, child: _C) -> None:
        """Attach *child* after the children already held."""
        wanted = self._child_type.__name__
        if not isinstance(child, self._child_type):
            raise TypeError(
                f"expected {_article(wanted)} {wanted}, not {type(child).__name__}"
            )

        if self.find(child.uuid) is not None:
            label = f"{self._kind} {self.name!r} (uuid {self.uuid})"
            raise ValueError(
                f"{label} already holds {_article(child._kind)} {child._kind} "
                f"{child.uuid}"
            )

        self._children().append(child)

    def find(self, uuid: str) -> _C | None:
        """Return the held child with this *uuid*, or ``None``."""
        return next((child for child in self._children() if child.uuid == uuid), None)

    def __iter__(self) -> Iterator[_C]:
        return iter(self._children())

    def __len__(self) -> int:
        return len(self._children())


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


@dataclass
class FlowDetail(_Holder[AtomDetail]):
    """One flow of a logbook, holding its atom details in the order added."""

    _kind: ClassVar[str] = "flow"
    _child_type: ClassVar[type[Any]] = AtomDetail

    name: str
    uuid: str = field(default_factory=_new_uuid)
    state: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _atoms: list[AtomDetail] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_types()

    def _check_types(self) -> None:
        label = describe(self)
        _check_identity(label, self.name, self.uuid)
        _check_text(label, "state", self.state, optional=True)
        _check_dict(label, "meta", self.meta)

    def _children(self) -> list[AtomDetail]:
        return self._atoms


@dataclass
class LogBook(_Holder[FlowDetail]):
    """A named record of work, holding its flow details in the order added.

    ``updated_at`` belongs to the store: it is set on every save or update,
    and whatever a caller puts there is ignored.
    """

    _kind: ClassVar[str] = "logbook"
    _child_type: ClassVar[type[Any]] = FlowDetail

    name: str
    uuid: str = field(default_factory=_new_uuid)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime | None = None
    _flows: list[FlowDetail] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_types()
        # Held in UTC so that books read back from any store compare equal.
        self.created_at = self.created_at.astimezone(UTC)
        if self.updated_at is not None:
            self.updated_at = self.updated_at.astimezone(UTC)

    def _check_types(self) -> None:
        label = describe(self)
        _check_identity(label, self.name, self.uuid)
        _check_dict(label, "meta", self.meta)
        _check_time(label, "created_at", self.created_at)
        if self.updated_at is not None:
            _check_time(label, "updated_at", self.updated_at)

    def _children(self) -> list[FlowDetail]:
        return self._flows


def describe(obj: LogBook | FlowDetail | AtomDetail) -> str:
    """Name *obj* the way error messages do: ``atom 'fetch' (uuid ...)``."""
    return f"{obj._kind} {obj.name!r} (uuid {obj.uuid})"


def _check_identity(label: str, name: object, uuid: object) -> None:
    _check_text(label, "name", name, required=True)
    _check_text(label, "uuid", uuid, required=True)


def _check_text(
    label: str,
    what: str,
    value: object,
    *,
    optional: bool = False,
    required: bool = False,
) -> None:
    if value is None and optional:
        return

    if not isinstance(value, str):
        expected = "a str or None" if optional else "a str"
        raise TypeError(
            f"{label} {what} must be {expected}, not {type(value).__name__}"
        )

    if required and not value:
        raise ValueError(f"{label} {what} must not be empty")


def _check_dict(
    label: str, what: str, value: object, *, optional: bool = False
) -> None:
    if value is None and optional:
        return

    if not isinstance(value, dict):
        expected = "a dict or None" if optional else "a dict"
        raise TypeError(
            f"{label} {what} must be {expected}, not {type(value).__name__}"
        )


def _check_time(label: str, what: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise TypeError(
            f"{label} {what} must be a datetime, not {type(value).__name__}"
        )

    if value.utcoffset() is None:
        raise ValueError(f"{label} {what} must be timezone-aware, not {value!r}")


def check_atom(atom: AtomDetail) -> None:
    """Raise ``TypeError`` or ``ValueError`` naming what in *atom* cannot be kept."""
    if not isinstance(atom, AtomDetail):
        raise TypeError(f"expected an AtomDetail, not {type(atom).__name__}")

    atom._check_types()
    label = describe(atom)
    check_json(atom.meta, f"{label} meta")
    check_json(atom.results, f"{label} results")
    check_json(atom.failure, f"{label} failure")


def check_flow(flow: FlowDetail) -> None:
    """Raise ``TypeError`` or ``ValueError`` naming what in *flow* cannot be kept."""
    if not isinstance(flow, FlowDetail):
        raise TypeError(f"expected a FlowDetail, not {type(flow).__name__}")

    flow._check_types()
    check_json(flow.meta, f"{describe(flow)} meta")
    for atom in flow._atoms:
        check_atom(atom)

    _check_unique(flow, "atom", flow._atoms)


def check_book(book: LogBook) -> None:
    """Raise ``TypeError`` or ``ValueError`` naming what in *book* cannot be kept."""
    if not isinstance(book, LogBook):
        raise TypeError(f"expected a LogBook, not {type(book).__name__}")

    book._check_types()
    check_json(book.meta, f"{describe(book)} meta")
    for flow in book._flows:
        check_flow(flow)

    _check_unique(book, "flow", book._flows)
    # An atom belongs to one flow, so two flows of a book may not share one.
    _check_unique(book, "atom", [atom for flow in book._flows for atom in flow])


def _check_unique(
    owner: LogBook | FlowDetail,
    kind: str,
    children: list[FlowDetail] | list[AtomDetail],
) -> None:
    seen: set[str] = set()
    for child in children:
        if child.uuid in seen:
            raise ValueError(
                f"{describe(owner)} holds two {kind}s with uuid {child.uuid}"
            )

        seen.add(child.uuid)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _copy_json(value: Any) -> Any:
    # Plain dicts and lists are rebuilt and plain scalars kept; anything else
    # (a subclass of a JSON type, say) takes a trip through JSON text. Either
    # way the copy is what a database-backed store would read back: plain
    # dicts and lists, sharing nothing with the original. Rebuilding is several
    # times cheaper than the text trip, and a save copies every value.
    kind = type(value)
    if kind in _PLAIN:
        return value

    if kind is list:
        return [_copy_json(item) for item in value]

    if kind is dict and all(type(key) is str for key in value):
        return {key: _copy_json(item) for key, item in value.items()}

    return json.loads(dumps(value))


_Model = TypeVar("_Model", LogBook, FlowDetail, AtomDetail)


def _shallow(obj: _Model) -> _Model:
    # Unlike dataclasses.replace, this skips __init__: what is copied was
    # checked already, and checking it again would double the cost of a copy.
    copied: _Model = object.__new__(type(obj))
    copied.__dict__.update(obj.__dict__)
    return copied


def copy_atom(atom: AtomDetail) -> AtomDetail:
    """Return a copy of *atom* that shares no mutable value with it."""
    copied = _shallow(atom)
    copied.results = _copy_json(atom.results)
    copied.failure = _copy_json(atom.failure)
    copied.meta = _copy_json(atom.meta)
    return copied


def copy_flow(flow: FlowDetail) -> FlowDetail:
    """Return a copy of *flow* and its atoms that shares no mutable value."""
    copied = _shallow(flow)
    copied.meta = _copy_json(flow.meta)
    copied._atoms = [copy_atom(atom) for atom in flow._atoms]
    return copied


def copy_book(book: LogBook) -> LogBook:
    """Return a copy of *book*, its flows and atoms that shares no mutable value."""
    copied = _shallow(book)
    copied.meta = _copy_json(book.meta)
    copied._flows = [copy_flow(flow) for flow in book._flows]
    return copied


# -- checking and copying at once ----------------------------------------------
# A save checks and copies every value of a book: done value by value in
# Python, that costs more than storing the book. One trip of all the book's
# JSON values through the C encoder and decoder does both at once, the copies
# compared with the originals in C as well: a key that is not a str, a tuple or
# anything else JSON would not give back unchanged makes them differ, and a
# float that JSON cannot hold stops the encoder. Anything unsure goes back to
# check_book and copy_book, which explain it exactly as before.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def _json_copies(values: list[Any]) -> list[Any] | None:
    """Return copies of *values* through JSON, or ``None`` when unsure of them."""
    try:
        copies: list[Any] = json.loads(_ENCODER.encode(values))
        same = copies == values
    except (TypeError, ValueError, RecursionError):
        return None

    return copies if same else None


def _typed_atom(atom: object) -> bool:
    """Whether *atom* passes check_atom's type checks, told without a message."""
    return (
        isinstance(atom, AtomDetail)
        and isinstance(atom.name, str)
        and atom.name != ""
        and isinstance(atom.uuid, str)
        and atom.uuid != ""
        and (atom.state is None or isinstance(atom.state, str))
        and isinstance(atom.intention, str)
        and (atom.version is None or isinstance(atom.version, str))
        and (atom.failure is None or isinstance(atom.failure, dict))
        and isinstance(atom.meta, dict)
    )


def _typed_flow(flow: object) -> bool:
    """Whether *flow* passes check_flow's type checks, atoms aside."""
    return (
        isinstance(flow, FlowDetail)
        and isinstance(flow.name, str)
        and flow.name != ""
        and isinstance(flow.uuid, str)
        and flow.uuid != ""
        and (flow.state is None or isinstance(flow.state, str))
        and isinstance(flow.meta, dict)
    )


def _typed_book(book: LogBook) -> bool:
    """Whether *book* passes check_book's type checks, flows aside."""
    return (
        isinstance(book.name, str)
        and book.name != ""
        and isinstance(book.uuid, str)
        and book.uuid != ""
        and isinstance(book.meta, dict)
        and isinstance(book.created_at, datetime)
        and book.created_at.utcoffset() is not None
        and (
            book.updated_at is None
            or (
                isinstance(book.updated_at, datetime)
                and book.updated_at.utcoffset() is not None
            )
        )
    )


def _quick_flows(flows: list[FlowDetail], values: list[Any]) -> bool:
    """Whether *flows* pass every check but JSON's; gather their JSON *values*."""
    atoms = 0
    uuids: set[str] = set()
    add = values.append
    for flow in flows:
        if not _typed_flow(flow):
            return False

        add(flow.meta)
        for atom in flow._atoms:
            if not _typed_atom(atom):
                return False

            add(atom.results)
            add(atom.failure)
            add(atom.meta)
            uuids.add(atom.uuid)

        atoms += len(flow._atoms)

    # Atoms unique across the flows are unique within each of them too.
    return len(uuids) == atoms


# Set one by one, an atom's fields stay inside the instance: copying its
# __dict__ would give each copy a dict of its own, one more object for the
# garbage collector to walk while the save is on its way.
_ATOM_KEPT = tuple(
    each.name
    for each in fields(AtomDetail)
    if each.name not in ("results", "failure", "meta")
)


def _copy_flows(flows: list[FlowDetail], copies: Iterator[Any]) -> list[FlowDetail]:
    """Copy *flows* and their atoms, taking their JSON values from *copies*."""
    copied = []
    for flow in flows:
        new_flow = _shallow(flow)
        new_flow.meta = next(copies)
        atoms = []
        for atom in flow._atoms:
            new_atom = object.__new__(type(atom))
            for name in _ATOM_KEPT:
                setattr(new_atom, name, getattr(atom, name))

            new_atom.results = next(copies)
            new_atom.failure = next(copies)
            new_atom.meta = next(copies)
            atoms.append(new_atom)

        new_flow._atoms = atoms
        copied.append(new_flow)

    return copied


def checked_copy_book(book: LogBook) -> LogBook:
    """Check *book* as ``check_book`` does, then return ``copy_book(book)``."""
    values: list[Any] = []
    if isinstance(book, LogBook) and _typed_book(book):
        values.append(book.meta)
        flows = book._flows
        if _quick_flows(flows, values) and len({f.uuid for f in flows}) == len(flows):
            copies = _json_copies(values)
            if copies is not None:
                copied = _shallow(book)
                each = iter(copies)
                copied.meta = next(each)
                copied._flows = _copy_flows(flows, each)
                return copied

    check_book(book)
    return copy_book(book)


def checked_copy_flow(flow: FlowDetail) -> FlowDetail:
    """Check *flow* as ``check_flow`` does, then return ``copy_flow(flow)``."""
    values: list[Any] = []
    if _quick_flows([flow], values):
        copies = _json_copies(values)
        if copies is not None:
            return _copy_flows([flow], iter(copies))[0]

    check_flow(flow)
    return copy_flow(flow)


def merge_atom(stored: AtomDetail, given: AtomDetail) -> None:
    """Replace every field of *stored* with that of *given*."""
    for each in fields(AtomDetail):
        setattr(stored, each.name, getattr(given, each.name))


def merge_flow(stored: FlowDetail, given: FlowDetail) -> None:
    """Fold *given* into *stored*, taking over *given*'s atoms.

    Fields and meta are replaced; each atom is merged into the stored atom of
    the same uuid, or appended; stored atoms that *given* lacks are kept.
    """
    for each in fields(FlowDetail):
        if each.init:
            setattr(stored, each.name, getattr(given, each.name))

    _fold(stored._atoms, given._atoms, merge_atom)


def merge_book(stored: LogBook, given: LogBook) -> None:
    """Fold *given* into *stored*, taking over *given*'s flows and atoms.

    Name, meta and ``updated_at`` are replaced; ``created_at`` stays that of
    the first save. Flows are merged as ``merge_flow`` merges atoms.
    """
    stored.name = given.name
    stored.meta = given.meta
    stored.updated_at = given.updated_at
    _fold(stored._flows, given._flows, merge_flow)


def _fold(
    stored: list[_C],
    given: list[_C],
    merge: Callable[[_C, _C], None],
) -> None:
    known = {child.uuid: child for child in stored}
    for child in given:
        match = known.get(child.uuid)
        if match is None:
            stored.append(child)
        else:
            merge(match, child)
