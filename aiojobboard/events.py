"""Board events, and the in-process plumbing that hands them to waiters."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .jobs import Job

__all__ = ["EventKind", "JobEvent"]

logger = logging.getLogger("aiojobboard.board")


class EventKind(enum.Enum):
    """What happened to a job."""

    POSTED = "POSTED"
    CLAIMED = "CLAIMED"
    ABANDONED = "ABANDONED"
    CONSUMED = "CONSUMED"
    TRASHED = "TRASHED"
    #: A lease ran out, or the session that held a claim ended.
    EXPIRED = "EXPIRED"

    def __repr__(self) -> str:
        return f"EventKind.{self.name}"


#: The kinds after which a job may be claimed.
CLAIMABLE_KINDS = frozenset({EventKind.POSTED, EventKind.ABANDONED, EventKind.EXPIRED})
#: The kinds after which a job is no longer on the board.
FINAL_KINDS = frozenset({EventKind.CONSUMED, EventKind.TRASHED})


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A notice that something happened to a job.

    ``owner`` and ``token`` name the claim concerned, where there is one.
    ``job`` is the posting itself when the adapter had it at hand (always for
    POSTED on the built-in adapters). ``reason`` is the operator's reason on
    the TRASHED event of a cancel, and ``None`` otherwise.
    """

    kind: EventKind
    job_uuid: str
    owner: str | None = None
    token: int | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    job: Job | None = field(default=None, repr=False, compare=False)
    reason: str | None = None


class Subscription:
    """A queue of events for one iterator, ended by ``close()``.

    A bounded subscription drops its oldest events when its reader falls
    behind, and says so once in the log: events are notices, not a ledger.
    """

    __slots__ = ("_closed", "_dropped", "_items", "_kinds", "_maxlen", "_waiter")

    def __init__(
        self,
        maxlen: int | None = None,
        kinds: frozenset[EventKind] | None = None,
    ) -> None:
        self._items: deque[JobEvent] = deque()
        self._maxlen = maxlen
        self._kinds = kinds
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._dropped = 0

    def put(self, event: JobEvent) -> None:
        if self._closed or (self._kinds is not None and event.kind not in self._kinds):
            return
        if self._maxlen is not None and len(self._items) >= self._maxlen:
            self._items.popleft()
            self._dropped += 1
            if self._dropped == 1:
                logger.warning(
                    "an events() reader fell %d events behind; dropping the oldest",
                    self._maxlen,
                )
        self._items.append(event)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    async def get(self) -> JobEvent | None:
        """Return the next event, or ``None`` once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Signal:
    """A counter of changes that tasks can wait on without polling.

    A waiter reads ``version``, checks the condition it cares about, then waits
    for the version to move on; a change in between is never missed.
    """

    __slots__ = ("_waiters", "version")

    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def fire(self) -> None:
        self.version += 1
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, since: int) -> None:
        """Return once ``version`` differs from *since*."""
        if self.version != since:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)


class SignalMap:
    """One :class:`Signal` per key, kept only while some task waits on it."""

    __slots__ = ("_signals",)

    def __init__(self) -> None:
        self._signals: dict[str, tuple[Signal, int]] = {}

    def acquire(self, key: str) -> Signal:
        signal, users = self._signals.get(key, (None, 0))
        if signal is None:
            signal = Signal()
        self._signals[key] = (signal, users + 1)
        return signal

    def release(self, key: str) -> None:
        signal, users = self._signals[key]
        if users == 1:
            del self._signals[key]
        else:
            self._signals[key] = (signal, users - 1)

    def fire(self, key: str) -> None:
        entry = self._signals.get(key)
        if entry is not None:
            entry[0].fire()

    def fire_all(self) -> None:
        for signal, _ in list(self._signals.values()):
            signal.fire()
