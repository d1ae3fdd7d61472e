"""The embedded adapter: ``memory://NAME`` boards that live in the process.

Every connection that names the same board shares its data, so tasks of one
process hand work to each other exactly as they would through a server, and
tests and demos need none. Leases run out on time: a timer on the event loop
expires the earliest one.

Each operation is a few dictionary and heap steps and never awaits in the
middle, which makes it atomic under asyncio. Claiming the next job pops a heap
ordered by priority then sequence, so its cost grows with the logarithm of the
board's size, not with the size.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

from .._connect import positive_float, positive_int, read_options
from ..board import DEFAULT_LEASE, MAX_JOB_SIZE, JobBoard
from ..claims import Claim, Finish, Grant, check_holder
from ..errors import NotFound, UnclaimableJob
from ..events import EventKind, JobEvent
from ..jobs import Job, JobPriority, JobState, JobStatus, Posting
from ..presence import WorkerInfo

if TYPE_CHECKING:
    from ..book.base import BookStore

__all__ = ["MemoryBoard"]

_FINISHED_KIND = {
    Finish.CONSUME: EventKind.CONSUMED,
    Finish.ABANDON: EventKind.ABANDONED,
    Finish.TRASH: EventKind.TRASHED,
}


class _Record:
    """One job on a board, with its claim, if any."""

    __slots__ = ("attempt", "deadline", "job", "owner", "queued", "token")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.owner: str | None = None
        self.token = 0
        self.attempt = 0
        self.deadline = 0.0
        #: Whether the job has an entry in the ready heap.
        self.queued = False

    def job_for(self, board: MemoryBoard) -> Job:
        """The job as read through *board*, so that its methods ask that board."""
        job = self.job
        return job if job.board is board else replace(job, board=board)


class _Board:
    """The data of one named board, shared by all its connections."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: dict[str, _Record] = {}
        # Insertion order is sequence order, so each dict is already sorted.
        self.by_priority: dict[JobPriority, dict[str, _Record]] = {
            priority: {} for priority in sorted(JobPriority, reverse=True)
        }
        self.ready: list[tuple[int, int, str]] = []
        self.leases: list[tuple[float, int, str]] = []
        self.sequence = 0
        self.token = 0
        self.connections: set[MemoryBoard] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_at = 0.0

    def emit(
        self,
        kind: EventKind,
        record: _Record,
        owner: str | None,
        reason: str | None = None,
    ) -> None:
        at = datetime.now(UTC)
        for connection in list(self.connections):
            job = record.job_for(connection)
            connection._deliver(
                JobEvent(
                    kind,
                    job.uuid,
                    owner=owner,
                    token=None if owner is None else record.token,
                    at=at,
                    job=job,
                    reason=reason,
                )
            )

    # -- the ready heap and the lease timer -----------------------------------

    def enqueue(self, record: _Record) -> None:
        if not record.queued:
            job = record.job
            heapq.heappush(self.ready, (-job.priority, job.sequence, job.uuid))
            record.queued = True

    def first_ready(self) -> _Record | None:
        """Return the first unclaimed job, dropping stale heap entries on the way."""
        while self.ready:
            record = self.jobs.get(self.ready[0][2])
            if record is not None and record.owner is None:
                return record
            heapq.heappop(self.ready)
            if record is not None:
                record.queued = False
        return None

    def expire_due(self) -> None:
        """Give back every job whose lease has run out, then re-arm the timer."""
        now = time.monotonic()
        while self.leases and self.leases[0][0] <= now:
            _, token, uuid = heapq.heappop(self.leases)
            record = self.jobs.get(uuid)
            # A renewed lease left its old entry behind; only the latest counts.
            if (
                record is not None
                and record.token == token
                and record.owner is not None
                and record.deadline <= now
            ):
                owner, record.owner = record.owner, None
                self.enqueue(record)
                self.emit(EventKind.EXPIRED, record, owner)
        self._arm_timer()

    def _arm_timer(self) -> None:
        if not self.leases:
            return
        loop = asyncio.get_running_loop()
        at = self.leases[0][0]
        if self._timer is not None and self._timer_loop is loop:
            if self._timer_at <= at and not self._timer.cancelled():
                return
            self._timer.cancel()
        self._timer_loop, self._timer_at = loop, at
        self._timer = loop.call_later(max(0.0, at - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.expire_due()

    # -- operations -----------------------------------------------------------

    def post(self, posting: Posting, board: MemoryBoard) -> Job:
        self.sequence += 1
        record = _Record(posting.to_job(board, self.sequence))
        self.jobs[posting.uuid] = record
        self.by_priority[posting.priority][posting.uuid] = record
        self.enqueue(record)
        self.emit(EventKind.POSTED, record, None)
        return record.job

    def grant(self, record: _Record, owner: str, lease: float) -> Grant:
        self.token += 1
        record.owner, record.token = owner, self.token
        record.attempt += 1
        record.deadline = time.monotonic() + lease
        heapq.heappush(self.leases, (record.deadline, record.token, record.job.uuid))
        self._arm_timer()
        self.emit(EventKind.CLAIMED, record, owner)
        return Grant(record.token, record.attempt)

    def renew(self, claim: Claim) -> bool:
        record = self.jobs.get(claim.job.uuid)
        now = time.monotonic()
        if (
            record is None
            or record.owner != claim.owner
            or record.token != claim.token
            or record.deadline <= now
        ):
            return False
        record.deadline = now + claim.lease
        heapq.heappush(self.leases, (record.deadline, record.token, record.job.uuid))
        return True

    def finish(self, uuid: str, owner: str, token: int | None, how: Finish) -> None:
        record = self.held_by(uuid, owner, token)
        if how is Finish.ABANDON:
            record.owner = None
            self.enqueue(record)
        else:
            del self.jobs[uuid]
            del self.by_priority[record.job.priority][uuid]
        self.emit(_FINISHED_KIND[how], record, owner)

    def cancel(self, uuid: str, reason: str) -> None:
        record = self.jobs.pop(uuid, None)
        if record is None:
            raise NotFound(f"job {uuid} is no longer on the board")
        del self.by_priority[record.job.priority][uuid]
        owner, record.owner = record.owner, None
        self.emit(EventKind.TRASHED, record, owner, reason)

    def held_by(self, uuid: str, owner: str, token: int | None) -> _Record:
        record = self.jobs.get(uuid)
        if record is None:
            raise NotFound(f"job {uuid} is no longer on the board")
        check_holder(uuid, record.owner, record.token, owner, token)
        return record


_boards: dict[str, _Board] = {}


class MemoryBoard(JobBoard):
    """A connection to a board kept in this process's memory.

    URL: ``memory://NAME?lease=SECONDS&max_job_size=BYTES``; ``memory://``
    alone is the default board.
    """

    def __init__(
        self,
        url: str,
        data: _Board,
        *,
        lease: float = DEFAULT_LEASE,
        max_job_size: int = MAX_JOB_SIZE,
        books: BookStore | None = None,
    ) -> None:
        super().__init__(url, lease=lease, max_job_size=max_job_size, books=books)
        self._data = data
        data.connections.add(self)

    @classmethod
    async def from_url(cls, url: str, *, books: BookStore | None = None) -> Self:
        options = read_options(
            url, {"lease": positive_float, "max_job_size": positive_int}
        )
        name = url.partition("://")[2].partition("?")[0]
        data = _boards.get(name)
        if data is None:
            data = _boards[name] = _Board(name)
        return cls(url, data, books=books, **options)

    async def _post(self, posting: Posting) -> Job:
        return self._data.post(posting, self)

    async def _get_job(self, uuid: str) -> Job | None:
        record = self._data.jobs.get(uuid)
        return None if record is None else record.job_for(self)

    async def _iter_jobs(self, only_unclaimed: bool) -> AsyncIterator[Job]:
        data = self._data
        data.expire_due()
        snapshot = [
            record.job_for(self)
            for jobs in data.by_priority.values()
            for record in jobs.values()
            if not (only_unclaimed and record.owner is not None)
        ]
        for job in snapshot:
            yield job

    async def _get_status(self, uuid: str) -> tuple[JobState, str | None]:
        self._data.expire_due()
        record = self._data.jobs.get(uuid)
        if record is None:
            return JobState.COMPLETE, None
        if record.owner is None:
            return JobState.UNCLAIMED, None
        return JobState.CLAIMED, record.owner

    async def _claim(self, uuid: str, owner: str, lease: float) -> Grant:
        data = self._data
        data.expire_due()
        record = data.jobs.get(uuid)
        if record is None:
            raise NotFound(f"job {uuid} is no longer on the board")
        if record.owner is not None:
            raise UnclaimableJob(
                f"job {uuid} is already claimed by {record.owner!r}",
                owner=record.owner,
            )
        return data.grant(record, owner, lease)

    async def _claim_next(self, owner: str, lease: float) -> tuple[Job, Grant] | None:
        data = self._data
        data.expire_due()
        record = data.first_ready()
        if record is None:
            return None
        return record.job_for(self), data.grant(record, owner, lease)

    async def _renew(self, claims: Sequence[Claim]) -> list[bool]:
        self._data.expire_due()
        return [self._data.renew(claim) for claim in claims]

    async def _finish(
        self, uuid: str, owner: str, token: int | None, how: Finish
    ) -> None:
        self._data.expire_due()
        self._data.finish(uuid, owner, token, how)

    async def _cancel(self, uuid: str, reason: str) -> None:
        self._data.expire_due()
        self._data.cancel(uuid, reason)

    async def _get_job_status(self, uuid: str) -> JobStatus | None:
        self._data.expire_due()
        record = self._data.jobs.get(uuid)
        if record is None:
            return None
        if record.owner is None:
            return JobStatus(JobState.UNCLAIMED, None, record.attempt, None)
        return JobStatus(JobState.CLAIMED, record.owner, record.attempt, record.token)

    async def _get_workers(self) -> list[WorkerInfo]:
        # Every connection lives in this process: its records are read live.
        return [
            info
            for connection in list(self._data.connections)
            if not connection.closed
            for info in connection._presence()
        ]

    async def _job_count(self) -> int:
        return len(self._data.jobs)

    async def _has_unclaimed(self) -> bool:
        self._data.expire_due()
        return self._data.first_ready() is not None

    async def _close(self) -> None:
        self._data.connections.discard(self)
