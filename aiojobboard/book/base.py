"""The contract of a book store, and the bookkeeping every store shares.

The public methods of :class:`BookStore` check their arguments, refuse to run
once the store is closed, copy what they are given and log each write. An
adapter only moves data, through the ``_``-prefixed hooks. A hook receives
objects that are already checked and copied, so it may keep them, and returns
objects the caller may keep, so it never returns the adapter's own.

The hooks are coarse on purpose: one hook per public call lets a database
adapter save a whole logbook in one transaction and read one back in a fixed
number of queries.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import Self

from ..errors import BoardClosed, NotFound
from .models import (
    AtomDetail,
    FlowDetail,
    LogBook,
    check_atom,
    checked_copy_book,
    checked_copy_flow,
    copy_atom,
    utc_now,
)

__all__ = ["BookStore"]

logger = logging.getLogger("aiojobboard.book")


class BookStore(abc.ABC):
    """Where logbooks are kept; open one with ``aiojobboard.book.connect(url)``.

    Every write is checked in full before anything is stored: a refused save
    leaves the store as it was. What a method returns is a fresh object that
    the caller may change freely.
    """

    def __init__(self) -> None:
        self._closed = False

    @classmethod
    @abc.abstractmethod
    async def from_url(cls, url: str) -> Self:
        """Open a store of this kind as *url* describes it."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this connection."""
        return self._closed

    async def save_logbook(self, book: LogBook) -> LogBook:
        """Insert *book*, or merge it into the stored one; return what is stored.

        The given name and meta replace the stored ones; its flows and atoms
        are inserted or merged the same way, and stored ones it lacks are kept.
        """
        self._check_open()
        given = checked_copy_book(book)
        given.updated_at = utc_now()
        saved = await self._save_book(given)
        logger.debug("saved logbook %s with %d flows", saved.uuid, len(saved))
        return saved

    async def get_logbook(self, uuid: str) -> LogBook:
        """Return the stored logbook *uuid* with all its flows and atoms."""
        self._check_open()
        _check_uuid(uuid)
        book = await self._load_book(uuid)
        if book is None:
            raise NotFound(f"no logbook with uuid {uuid!r}")

        return book

    def get_logbooks(self) -> AsyncIterator[LogBook]:
        """Iterate over every stored logbook, in no promised order."""
        self._check_open()
        return self._books_while_open()

    async def _books_while_open(self) -> AsyncIterator[LogBook]:
        async for book in self._iter_books():
            # A connection closed mid-loop must stop answering, as every
            # other method does.
            self._check_open()
            yield book

    async def destroy_logbook(self, uuid: str) -> None:
        """Delete the logbook *uuid* with all its flows and atoms."""
        self._check_open()
        _check_uuid(uuid)
        if not await self._destroy_book(uuid):
            raise NotFound(f"no logbook with uuid {uuid!r}")

        logger.debug("destroyed logbook %s", uuid)

    async def update_flow_details(self, flow: FlowDetail) -> FlowDetail:
        """Merge *flow* and its atoms into the stored flow; return what is stored."""
        self._check_open()
        updated = await self._update_flow(checked_copy_flow(flow), utc_now())
        if updated is None:
            raise NotFound(f"no flow with uuid {flow.uuid!r} in any logbook")

        logger.debug("updated flow %s with %d atoms", updated.uuid, len(updated))
        return updated

    async def update_atom_details(self, atom: AtomDetail) -> AtomDetail:
        """Replace the stored atom's fields with *atom*'s; return what is stored."""
        self._check_open()
        check_atom(atom)
        updated = await self._update_atom(copy_atom(atom), utc_now())
        if updated is None:
            raise NotFound(f"no atom with uuid {atom.uuid!r} in any flow")

        logger.debug("updated atom %s to state %s", updated.uuid, updated.state)
        return updated

    async def get_flows_for_book(self, uuid: str) -> list[FlowDetail]:
        """Return the flows of logbook *uuid*, with their atoms, in order."""
        self._check_open()
        _check_uuid(uuid)
        flows = await self._flows_for_book(uuid)
        if flows is None:
            raise NotFound(f"no logbook with uuid {uuid!r}")

        return flows

    async def get_atoms_for_flow(self, uuid: str) -> list[AtomDetail]:
        """Return the atoms of flow *uuid*, in order."""
        self._check_open()
        _check_uuid(uuid)
        atoms = await self._atoms_for_flow(uuid)
        if atoms is None:
            raise NotFound(f"no flow with uuid {uuid!r} in any logbook")

        return atoms

    async def clear_all(self) -> None:
        """Delete every logbook, flow and atom in the store."""
        self._check_open()
        await self._clear()
        logger.debug("cleared %r", self)

    async def upgrade(self) -> None:
        """Bring the store's schema up to date; safe to call on every start."""
        self._check_open()
        await self._upgrade()
        logger.debug("upgraded %r", self)

    async def close(self) -> None:
        """Release this connection; later calls raise ``BoardClosed``."""
        if self._closed:
            return

        self._closed = True
        await self._close()
        logger.debug("closed %r", self)

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise BoardClosed(f"{self!r} is closed")

    @abc.abstractmethod
    async def _save_book(self, book: LogBook) -> LogBook:
        """Store *book* as ``merge_book`` describes, atomically; return the result.

        Refuse with ``ValueError``, before writing anything, a flow that
        belongs to another logbook or an atom that belongs to another flow.
        """

    @abc.abstractmethod
    async def _load_book(self, uuid: str) -> LogBook | None:
        """Return logbook *uuid* with its flows and atoms, or ``None``."""

    @abc.abstractmethod
    def _iter_books(self) -> AsyncIterator[LogBook]:
        """Yield every stored logbook with its flows and atoms."""

    @abc.abstractmethod
    async def _destroy_book(self, uuid: str) -> bool:
        """Delete logbook *uuid* and its children; return whether it existed."""

    @abc.abstractmethod
    async def _update_flow(self, flow: FlowDetail, now: datetime) -> FlowDetail | None:
        """Merge *flow* as ``merge_flow`` does, set its logbook's ``updated_at``.

        Return the stored flow, or ``None`` when no logbook holds it. Refuse
        with ``ValueError``, before writing, an atom of another flow.
        """

    @abc.abstractmethod
    async def _update_atom(self, atom: AtomDetail, now: datetime) -> AtomDetail | None:
        """Replace the stored atom, set its logbook's ``updated_at``.

        Return the stored atom, or ``None`` when no flow holds it.
        """

    @abc.abstractmethod
    async def _flows_for_book(self, uuid: str) -> list[FlowDetail] | None:
        """Return the flows of logbook *uuid*, or ``None`` when it is missing."""

    @abc.abstractmethod
    async def _atoms_for_flow(self, uuid: str) -> list[AtomDetail] | None:
        """Return the atoms of flow *uuid*, or ``None`` when it is missing."""

    @abc.abstractmethod
    async def _clear(self) -> None:
        """Delete everything in the store."""

    @abc.abstractmethod
    async def _upgrade(self) -> None:
        """Apply the schema migrations not applied yet."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release this connection's resources, not the store's data."""


def _check_uuid(uuid: object) -> None:
    if not isinstance(uuid, str):
        raise TypeError(f"a uuid must be a str, not {type(uuid).__name__}")
