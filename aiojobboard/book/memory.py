"""Book stores that live in this process: ``memory://NAME``.

Every connection that names the same store shares its logbooks for as long as
the process runs; ``memory://`` alone names the default store. Nothing is
written anywhere, which makes this the store for tests and demos. It keeps the
whole contract, copies included, so that what works here works on a database.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Self
from urllib.parse import urlsplit

from .._connect import mask_url, read_options, scheme_of
from .base import BookStore
from .models import (
    AtomDetail,
    FlowDetail,
    LogBook,
    copy_atom,
    copy_book,
    copy_flow,
    describe,
    merge_atom,
    merge_book,
    merge_flow,
)

__all__ = ["MemoryBookStore"]


class _Shelf:
    """The logbooks of one named store, with indexes to reach any flow or atom."""

    __slots__ = ("atom_flow", "atoms", "books", "flow_book", "flows", "lock")

    def __init__(self) -> None:
        self.books: dict[str, LogBook] = {}
        self.flows: dict[str, FlowDetail] = {}
        self.flow_book: dict[str, LogBook] = {}
        self.atoms: dict[str, AtomDetail] = {}
        self.atom_flow: dict[str, FlowDetail] = {}
        # Event loops in other threads may open the same name. No hook awaits
        # while it holds this, so it never blocks an event loop for long.
        self.lock = threading.Lock()

    def check_free(self, flow: FlowDetail, book: LogBook) -> None:
        """Refuse *flow* if another logbook holds it, or another flow its atoms."""
        owner = self.flow_book.get(flow.uuid)
        if owner is not None and owner.uuid != book.uuid:
            raise ValueError(
                f"{describe(flow)} already belongs to {describe(owner)}; "
                f"it cannot also be saved in {describe(book)}"
            )

        for atom in flow:
            parent = self.atom_flow.get(atom.uuid)
            if parent is not None and parent.uuid != flow.uuid:
                raise ValueError(
                    f"{describe(atom)} already belongs to {describe(parent)}; "
                    f"it cannot also be saved in {describe(flow)}"
                )

    def index(self, book: LogBook, flow: FlowDetail) -> None:
        self.flows[flow.uuid] = flow
        self.flow_book[flow.uuid] = book
        for atom in flow:
            self.atoms[atom.uuid] = atom
            self.atom_flow[atom.uuid] = flow

    def unindex(self, book: LogBook) -> None:
        for flow in book:
            del self.flows[flow.uuid], self.flow_book[flow.uuid]
            for atom in flow:
                del self.atoms[atom.uuid], self.atom_flow[atom.uuid]

    def clear(self) -> None:
        self.books.clear()
        self.flows.clear()
        self.flow_book.clear()
        self.atoms.clear()
        self.atom_flow.clear()


_shelves: dict[str, _Shelf] = {}
_shelves_lock = threading.Lock()


def _open_shelf(name: str) -> _Shelf:
    with _shelves_lock:
        return _shelves.setdefault(name, _Shelf())


class MemoryBookStore(BookStore):
    """A connection to the in-process book store called *name*.

    Connections with the same name share one store; each has its own
    ``closed`` flag. The empty name is the default store.
    """

    def __init__(self, name: str = "") -> None:
        if not isinstance(name, str):
            raise TypeError(f"a store name must be a str, not {type(name).__name__}")

        super().__init__()
        self._name = name
        self._shelf = _open_shelf(name)

    @classmethod
    async def from_url(cls, url: str) -> Self:
        if scheme_of(url) != "memory":
            raise ValueError(f"not a memory:// URL: {mask_url(url)!r}")

        read_options(url, {})
        parts = urlsplit(url)
        return cls((parts.netloc + parts.path).strip("/"))

    @property
    def name(self) -> str:
        """The name of the shared store, ``""`` for the default one."""
        return self._name

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<MemoryBookStore {self._name!r} {state}>"

    async def _save_book(self, book: LogBook) -> LogBook:
        shelf = self._shelf
        with shelf.lock:
            for flow in book:
                shelf.check_free(flow, book)

            stored = shelf.books.setdefault(book.uuid, book)
            if stored is not book:
                merge_book(stored, book)

            for flow in stored:
                shelf.index(stored, flow)

            return copy_book(stored)

    async def _load_book(self, uuid: str) -> LogBook | None:
        with self._shelf.lock:
            book = self._shelf.books.get(uuid)
            return None if book is None else copy_book(book)

    async def _iter_books(self) -> AsyncIterator[LogBook]:
        with self._shelf.lock:
            uuids = list(self._shelf.books)

        for uuid in uuids:
            book = await self._load_book(uuid)
            # Destroyed since the loop began.
            if book is not None:
                yield book

    async def _destroy_book(self, uuid: str) -> bool:
        with self._shelf.lock:
            book = self._shelf.books.pop(uuid, None)
            if book is None:
                return False

            self._shelf.unindex(book)
            return True

    async def _update_flow(self, flow: FlowDetail, now: datetime) -> FlowDetail | None:
        shelf = self._shelf
        with shelf.lock:
            stored = shelf.flows.get(flow.uuid)
            if stored is None:
                return None

            book = shelf.flow_book[flow.uuid]
            shelf.check_free(flow, book)
            merge_flow(stored, flow)
            shelf.index(book, stored)
            book.updated_at = now
            return copy_flow(stored)

    async def _update_atom(self, atom: AtomDetail, now: datetime) -> AtomDetail | None:
        shelf = self._shelf
        with shelf.lock:
            stored = shelf.atoms.get(atom.uuid)
            if stored is None:
                return None

            merge_atom(stored, atom)
            shelf.flow_book[shelf.atom_flow[atom.uuid].uuid].updated_at = now
            return copy_atom(stored)

    async def _flows_for_book(self, uuid: str) -> list[FlowDetail] | None:
        with self._shelf.lock:
            book = self._shelf.books.get(uuid)
            return None if book is None else [copy_flow(flow) for flow in book]

    async def _atoms_for_flow(self, uuid: str) -> list[AtomDetail] | None:
        with self._shelf.lock:
            flow = self._shelf.flows.get(uuid)
            return None if flow is None else [copy_atom(atom) for atom in flow]

    async def _clear(self) -> None:
        with self._shelf.lock:
            self._shelf.clear()

    async def _upgrade(self) -> None:
        pass  # nothing is stored outside Python objects, so there is no schema

    async def _close(self) -> None:
        pass  # the shelf outlives its connections, as other ones may share it
