"""The board base class: the public contract, over an adapter's I/O hooks.

The public methods check their input, keep the claims this connection holds,
log, and hand events to waiters. An adapter subclasses :class:`JobBoard` and
implements the ``_``-prefixed hooks, which only talk to its server; each hook
that changes state must do so atomically on the server.

Events come from the adapter alone (``_deliver``), for changes made through
any connection, this one included: the board never emits an event on its own,
so a change is announced once whoever made it.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.lowlevel

from . import _observe
from ._connect import mask_url
from .claims import Claim, ClaimContext, Finish, Grant
from .errors import BoardClosed, InvalidJob, JobBoardError, NotFound, NotOwner
from .events import (
    CLAIMABLE_KINDS,
    FINAL_KINDS,
    EventKind,
    JobEvent,
    Signal,
    SignalMap,
    Subscription,
)
from .jobs import Job, JobPriority, JobState, JobStatus, Posting
from .presence import WorkerInfo, this_process

if TYPE_CHECKING:
    from .book.base import BookStore
    from .book.models import LogBook

__all__ = ["DEFAULT_LEASE", "MAX_JOB_SIZE", "MAX_REASON", "JobBoard"]

logger = logging.getLogger("aiojobboard.board")

#: Seconds a claim lasts without renewal, unless the URL or the claim says else.
DEFAULT_LEASE = 30.0
#: The largest encoded posting, in bytes: ZooKeeper's node limit, kept everywhere.
MAX_JOB_SIZE = 1024 * 1024
#: How many events an ``events()`` reader may fall behind before losing some.
EVENTS_BACKLOG = 10_000
#: The longest reason a cancel may give, in characters.
MAX_REASON = 1000


class JobBoard(abc.ABC):
    """A board of jobs that producers post and consumers claim.

    Open one with :func:`aiojobboard.connect`. One connection serves any
    number of tasks in its process.
    """

    def __init__(
        self,
        url: str,
        *,
        lease: float = DEFAULT_LEASE,
        max_job_size: int = MAX_JOB_SIZE,
        books: BookStore | None = None,
    ) -> None:
        self._url = mask_url(url)
        #: The lease a claim gets when it names none, in seconds.
        self.lease = lease
        #: The largest posting this board accepts, in bytes of JSON.
        self.max_job_size = max_job_size
        #: The store that jobs' logbooks are loaded from, if any.
        self.books = books
        self._closed = False
        self._held: dict[str, Claim] = {}
        self._subscriptions: set[Subscription] = set()
        self._ready = Signal()
        self._finished = SignalMap()
        self._keeper: asyncio.Task[None] | None = None
        self._keeper_wake = asyncio.Event()
        self._keeper_wake_at = 0.0
        #: Names that running Workers registered, with how many registered each.
        self._workers: dict[str, int] = {}
        #: When each name this connection announces first appeared.
        self._present_since: dict[str, datetime] = {}
        #: Counts changes to what this connection announces.
        self._presence_version = 0

    # -- opening and closing --------------------------------------------------

    @classmethod
    @abc.abstractmethod
    async def from_url(cls, url: str, *, books: BookStore | None = None) -> Self:
        """Open a connection to the board that *url* names."""

    @property
    def url(self) -> str:
        """The board's URL, with any password masked."""
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} {self._url!r} {state}, "
            f"{len(self._held)} claims held>"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Abandon the claims still held, end open iterators, and disconnect.

        Later calls raise :class:`BoardClosed`. Closing twice does nothing.
        """
        if self._closed:
            return
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._ready.fire()
        self._finished.fire_all()
        claims = list(self._held.values())
        self._held.clear()
        with anyio.CancelScope(shield=True):
            await self._stop_keeper()
            for claim in claims:
                claim.set_lost("its board was closed")
            for claim in claims:
                await self._abandon_quietly(claim)
            await self._close()
        logger.debug("closed %s", self._url)

    # -- posting and reading --------------------------------------------------

    async def post(
        self,
        name: str,
        details: Any = None,
        priority: JobPriority | str = JobPriority.NORMAL,
        book: LogBook | None = None,
    ) -> Job:
        """Post a job and return it.

        *details* must be JSON: a mapping of str keys to dicts, lists, str,
        int, finite float, bool or None. *book* is a LogBook whose name and
        uuid the job records; saving the book is the caller's. Raises
        :class:`InvalidJob`, with nothing written, for a bad posting.
        """
        self._check_open()
        posting = Posting.create(name, details, priority, book, self.max_job_size)
        job = await self._post(posting)
        logger.debug("posted job %s (%r) as #%d", job.uuid, job.name, job.sequence)
        if _observe.INSTRUMENTS:
            _observe.posted(self, 1)
        return job

    async def post_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Post several jobs at once, all or none, and return them in order.

        Each item holds the arguments of :meth:`post` by name: ``name``, and
        optionally ``details``, ``priority`` and ``book``. Every posting is
        checked before any is written.
        """
        self._check_open()
        postings = [self._posting_of(index, item) for index, item in enumerate(jobs)]
        if not postings:
            return []
        posted = await self._post_many(postings)
        logger.debug("posted %d jobs", len(posted))
        if _observe.INSTRUMENTS:
            _observe.posted(self, len(posted))
        return posted

    async def iterjobs(
        self, only_unclaimed: bool = False, follow: bool = False
    ) -> AsyncIterator[Job]:
        """Iterate the jobs on the board, highest priority then oldest first.

        With *follow*, go on after that snapshot with every job that is posted
        or becomes unclaimed later, until the loop is left, cancelled, or the
        board is closed.
        """
        self._check_open()
        if not follow:
            async for job in self._iter_jobs(only_unclaimed):
                yield job
            return
        subscription = self._subscribe(maxlen=None, kinds=CLAIMABLE_KINDS)
        try:
            seen: set[str] = set()
            async for job in self._iter_jobs(only_unclaimed):
                seen.add(job.uuid)
                yield job
            while (event := await subscription.get()) is not None:
                if event.kind is EventKind.POSTED and event.job_uuid in seen:
                    continue
                followed = await self._followed_job(event, only_unclaimed)
                if followed is not None:
                    yield followed
        finally:
            self._subscriptions.discard(subscription)

    async def find_owner(self, job: Job) -> str | None:
        """Return who holds *job*, or ``None``; :class:`NotFound` once it is gone."""
        state, owner = await self._status(job)
        if state is JobState.COMPLETE:
            raise NotFound(f"job {job.uuid} is no longer on the board")
        return owner

    async def job_count(self) -> int:
        """Return how many jobs are on the board, claimed or not."""
        self._check_open()
        return await self._job_count()

    async def wait(self, timeout: float | None = None) -> None:
        """Return once an unclaimed job exists; ``TimeoutError`` after *timeout*."""
        self._check_open()
        async with asyncio.timeout(timeout):
            while True:
                version = self._ready.version
                if await self._has_unclaimed():
                    return
                await self._ready.wait(version)
                self._check_open()

    async def events(self) -> AsyncIterator[JobEvent]:
        """Iterate what happens on the board from now on, until it is closed.

        Events of one job arrive in order. They are notices: a reader that falls
        far behind, or a reconnect, may miss some; the board's state is the
        truth.
        """
        self._check_open()
        subscription = self._subscribe(maxlen=EVENTS_BACKLOG, kinds=None)
        try:
            while (event := await subscription.get()) is not None:
                yield event
        finally:
            self._subscriptions.discard(subscription)

    # -- operating ------------------------------------------------------------

    async def get_job(self, uuid: str) -> Job:
        """Return the job with *uuid*; :class:`NotFound` if it is not on the board."""
        uuid = _canonical_uuid(uuid)
        self._check_open()
        job = await self._get_job(uuid)
        if job is None:
            raise NotFound(f"job {uuid} is not on the board")
        return job

    async def status(self, job: Job) -> JobStatus:
        """Return the job's state, owner, attempt count and token, read at once.

        Raises :class:`NotFound` once the job is gone.
        """
        _check_job(job)
        self._check_open()
        status = await self._get_job_status(job.uuid)
        if status is None:
            raise NotFound(f"job {job.uuid} is no longer on the board")
        return status

    async def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Trash *job* at once, whoever holds it: an operator's act.

        The TRASHED event carries *reason*; the holder, if any, loses its claim
        on hearing it, which cancels its ``async with`` block with
        :class:`ClaimLost`. Raises :class:`NotFound` if the job is gone.
        """
        _check_job(job)
        _check_reason(reason)
        self._check_open()
        await self._cancel(job.uuid, reason)
        logger.debug("cancelled job %s (%r): %r", job.uuid, job.name, reason)
        if _observe.INSTRUMENTS:
            _observe.cancelled(self, job, reason)
        claim = self._held.get(job.uuid)
        if claim is not None:
            self._lose_to_cancel(claim, reason)

    async def workers(self) -> list[WorkerInfo]:
        """Return the consumers alive on the board, by name, host and pid.

        A record is announced for each owner name that holds a claim through a
        live connection, or that a running Worker registered.
        """
        self._check_open()
        found = await self._get_workers()
        return sorted(found, key=lambda info: (info.name, info.host, info.pid))

    # -- claiming -------------------------------------------------------------

    def claim(self, job: Job, who: str, lease: float | None = None) -> ClaimContext:
        """Claim *job* for *who*: await the result, or use it with ``async with``.

        Raises :class:`UnclaimableJob` if anyone holds it, :class:`NotFound` if
        it is gone. *lease* defaults to the board's.
        """
        _check_job(job)
        _check_owner(who)
        seconds = self._lease_of(lease)
        return ClaimContext(lambda: self._acquire(job, who, seconds))

    async def claim_next(self, who: str, lease: float | None = None) -> Claim | None:
        """Claim the first unclaimed job in board order, or return ``None``.

        One step on the server, however many jobs the board holds; the Worker
        claims with it.
        """
        _check_owner(who)
        seconds = self._lease_of(lease)
        self._check_open()
        sent_at = time.monotonic()
        with anyio.CancelScope(shield=True):
            found = await self._claim_next(who, seconds)
        if found is None:
            return None
        job, grant = found
        return await self._hold(job, who, grant, seconds, sent_at)

    async def consume(self, job: Job, who: str) -> None:
        """Remove *job*, held by *who*, from the board: its work is done."""
        await self._finish_by_name(job, who, Finish.CONSUME)

    async def abandon(self, job: Job, who: str) -> None:
        """Give *job*, held by *who*, back to the board for another consumer."""
        await self._finish_by_name(job, who, Finish.ABANDON)

    async def trash(self, job: Job, who: str) -> None:
        """Remove *job*, held by *who*, from the board without doing it."""
        await self._finish_by_name(job, who, Finish.TRASH)

    # -- what Job and Claim call ----------------------------------------------

    async def _status(self, job: Job) -> tuple[JobState, str | None]:
        _check_job(job)
        self._check_open()
        return await self._get_status(job.uuid)

    async def _wait_for_job(self, job: Job, timeout: float | None) -> bool:
        self._check_open()
        signal = self._finished.acquire(job.uuid)
        try:
            # The first look is outside the timeout, so that timeout=0 asks the
            # board once instead of giving up before its answer comes.
            version = signal.version
            if (await self._get_status(job.uuid))[0] is JobState.COMPLETE:
                return True
            with anyio.move_on_after(timeout):
                while True:
                    await signal.wait(version)
                    self._check_open()
                    version = signal.version
                    if (await self._get_status(job.uuid))[0] is JobState.COMPLETE:
                        return True
            return False
        finally:
            self._finished.release(job.uuid)

    async def _load_book(self, job: Job) -> LogBook:
        if job.book_uuid is None:
            raise NotFound(f"job {job.uuid} ({job.name!r}) carries no logbook")
        if self.books is None:
            raise RuntimeError(
                f"job {job.uuid} carries a logbook, but its board has no book "
                "store: pass books= to aiojobboard.connect()"
            )
        return await self.books.get_logbook(job.book_uuid)

    async def _finish_claim(self, claim: Claim, how: Finish) -> None:
        self._check_open()
        if not claim.held:
            raise NotOwner(
                f"{claim!r} is {claim.state.name.lower()}; it can no longer "
                f"{how.name.lower()} its job"
            )
        claim.finishing = True
        try:
            await self._finish(claim.job.uuid, claim.owner, claim.token, how)
        except asyncio.CancelledError:
            # Whether the change landed is unknown: stop renewing, so that at
            # worst the job returns to the board when its lease runs out.
            self._lose(claim, f"cancelled while it tried to {how.name.lower()} its job")
            raise
        except (NotOwner, NotFound) as exc:
            self._lose(claim, f"the board no longer gives it the job ({exc})")
            raise NotOwner(f"{claim!r} is stale: {exc}") from exc
        except JobBoardError as exc:
            # As above: renewing it on would keep its job off the board for good.
            self._lose(claim, f"could not {how.name.lower()} its job ({exc})")
            raise
        finally:
            claim.finishing = False
        self._let_go(claim, how)

    # -- what adapters call ---------------------------------------------------

    def _deliver(self, event: JobEvent) -> None:
        """Hand an event that the adapter observed to this connection's waiters."""
        for subscription in self._subscriptions:
            subscription.put(event)
        if event.kind in CLAIMABLE_KINDS:
            self._ready.fire()
        elif event.kind in FINAL_KINDS:
            self._finished.fire(event.job_uuid)
        if event.kind is EventKind.EXPIRED:
            claim = self._held.get(event.job_uuid)
            if claim is not None and claim.token == event.token:
                self._lose(
                    claim, f"its lease of {claim.lease:g} s ran out", expired=True
                )
        elif event.kind is EventKind.TRASHED and event.reason is not None:
            # A cancel: the job is gone, so the claim is over whatever its token.
            claim = self._held.get(event.job_uuid)
            if claim is not None:
                self._lose_to_cancel(claim, event.reason)

    def _resync(self) -> None:
        """Wake every waiter to look again, after events may have been missed."""
        self._ready.fire()
        self._finished.fire_all()

    def _lose_to_cancel(self, claim: Claim, reason: str) -> None:
        """Lose a claim whose job an operator cancelled."""
        if claim.held:
            claim.cancel_reason = reason
            self._lose(claim, f"its job was cancelled: {reason}")

    def _presence(self) -> list[WorkerInfo]:
        """The records this connection announces now, one per owner name."""
        holding: dict[str, list[str]] = {name: [] for name in self._workers}
        for uuid, claim in self._held.items():
            holding.setdefault(claim.owner, []).append(uuid)
        for name in [name for name in self._present_since if name not in holding]:
            del self._present_since[name]
        now = datetime.now(UTC)
        host, pid = this_process()
        return [
            WorkerInfo(
                name=name,
                host=host,
                pid=pid,
                since=self._present_since.setdefault(name, now),
                seen=now,
                holding=tuple(uuids),
            )
            for name, uuids in sorted(holding.items())
        ]

    def _register_worker(self, name: str) -> None:
        """Announce *name* while a Worker runs under it, holding or not."""
        self._workers[name] = self._workers.get(name, 0) + 1
        self._present_since.setdefault(name, datetime.now(UTC))
        self._presence_changed()

    def _withdraw_worker(self, name: str) -> None:
        """Undo one :meth:`_register_worker`."""
        count = self._workers.pop(name, 0)
        if count > 1:
            self._workers[name] = count - 1
        self._presence_changed()

    def _presence_changed(self) -> None:
        self._presence_version += 1
        if not self._closed:
            self._on_presence_changed()

    # -- the hooks an adapter implements --------------------------------------

    @abc.abstractmethod
    async def _post(self, posting: Posting) -> Job:
        """Store *posting* under the board's next sequence number; emit POSTED."""

    async def _post_many(self, postings: Sequence[Posting]) -> list[Job]:
        """Store several postings in order; adapters override this to batch."""
        return [await self._post(posting) for posting in postings]

    @abc.abstractmethod
    async def _get_job(self, uuid: str) -> Job | None:
        """Return the job, or ``None`` if it is not on the board."""

    @abc.abstractmethod
    def _iter_jobs(self, only_unclaimed: bool) -> AsyncIterator[Job]:
        """Iterate the board in order: priority, then sequence."""

    @abc.abstractmethod
    async def _get_status(self, uuid: str) -> tuple[JobState, str | None]:
        """Return the job's state and owner; COMPLETE and None if it is gone."""

    @abc.abstractmethod
    async def _claim(self, uuid: str, owner: str, lease: float) -> Grant:
        """Claim one job; raise NotFound or UnclaimableJob; emit CLAIMED."""

    @abc.abstractmethod
    async def _claim_next(self, owner: str, lease: float) -> tuple[Job, Grant] | None:
        """Claim the first unclaimed job in board order, if there is one."""

    @abc.abstractmethod
    async def _renew(self, claims: Sequence[Claim]) -> list[bool]:
        """Extend each claim's lease by its own length, if it is still current.

        A claim whose lease already ran out is never revived: its answer is
        False. The answers are in the order of *claims*.
        """

    @abc.abstractmethod
    async def _finish(
        self, uuid: str, owner: str, token: int | None, how: Finish
    ) -> None:
        """Consume, abandon or trash a job held by *owner* (and *token*, if given).

        Raise NotFound if the job is gone, NotOwner if it is not so held; emit
        CONSUMED, ABANDONED or TRASHED.
        """

    @abc.abstractmethod
    async def _cancel(self, uuid: str, reason: str) -> None:
        """Remove a job at once, claimed or not, in one step on the server.

        Raise NotFound if the job is gone; emit TRASHED carrying *reason*, so
        that the holder's connection hears of it.
        """

    @abc.abstractmethod
    async def _get_job_status(self, uuid: str) -> JobStatus | None:
        """Return the job's status in one round trip, or ``None`` if it is gone."""

    @abc.abstractmethod
    async def _get_workers(self) -> list[WorkerInfo]:
        """Return the live presence records of every connection to the board."""

    def _on_presence_changed(self) -> None:
        """Note that :meth:`_presence` changed; adapters that push records hook in."""
        return

    @abc.abstractmethod
    async def _job_count(self) -> int:
        """Return how many jobs are on the board."""

    @abc.abstractmethod
    async def _has_unclaimed(self) -> bool:
        """Return whether some job on the board is unclaimed."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release the adapter's connections."""

    # -- internals ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BoardClosed(f"board {self._url!r} is closed")

    def _posting_of(self, index: int, item: Mapping[str, Any]) -> Posting:
        if not isinstance(item, Mapping):
            raise InvalidJob(
                f"job #{index} must be a mapping, not {type(item).__name__}"
            )
        unknown = set(item) - {"name", "details", "priority", "book"}
        if unknown:
            names = ", ".join(sorted(map(repr, unknown)))
            raise InvalidJob(f"job #{index} has unknown fields: {names}")
        try:
            return Posting.create(
                item.get("name"),
                item.get("details"),
                item.get("priority", JobPriority.NORMAL),
                item.get("book"),
                self.max_job_size,
            )
        except InvalidJob as exc:
            raise InvalidJob(f"job #{index}: {exc}") from None

    def _lease_of(self, lease: float | None) -> float:
        if lease is None:
            return self.lease
        if isinstance(lease, bool) or not isinstance(lease, int | float):
            raise TypeError(f"lease must be a number, not {type(lease).__name__}")
        if not math.isfinite(lease) or lease <= 0:
            raise ValueError(f"lease must be a number of seconds above 0, not {lease}")
        return float(lease)

    def _subscribe(
        self, maxlen: int | None, kinds: frozenset[EventKind] | None
    ) -> Subscription:
        subscription = Subscription(maxlen, kinds)
        self._subscriptions.add(subscription)
        return subscription

    async def _followed_job(self, event: JobEvent, only_unclaimed: bool) -> Job | None:
        job = event.job or await self._get_job(event.job_uuid)
        if job is None or not only_unclaimed:
            return job
        state, _ = await self._get_status(job.uuid)
        return job if state is JobState.UNCLAIMED else None

    async def _acquire(self, job: Job, who: str, lease: float) -> Claim:
        self._check_open()
        sent_at = time.monotonic()
        with anyio.CancelScope(shield=True):
            grant = await self._claim(job.uuid, who, lease)
        return await self._hold(job, who, grant, lease, sent_at)

    async def _hold(
        self, job: Job, who: str, grant: Grant, lease: float, sent_at: float
    ) -> Claim:
        """Keep a granted claim; give it back at once if the caller was cancelled.

        The server call that granted it was shielded, so a cancellation that
        came meanwhile surfaces here, where the claim can still be released
        instead of lingering until its lease runs out.
        """
        claim = Claim(self, job, who, grant, lease, sent_at)
        self._held[job.uuid] = claim
        self._present_since.setdefault(who, datetime.now(UTC))
        self._presence_changed()
        self._start_keeper(claim)
        logger.debug(
            "%r claimed job %s, token %d, attempt %d",
            who,
            job.uuid,
            grant.token,
            grant.attempt,
        )
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._abandon_quietly(claim)
            raise
        if _observe.INSTRUMENTS:
            _observe.claimed(self, job, who, time.monotonic() - sent_at)
        return claim

    async def _finish_by_name(self, job: Job, who: str, how: Finish) -> None:
        _check_job(job)
        _check_owner(who)
        self._check_open()
        await self._finish(job.uuid, who, None, how)
        claim = self._held.get(job.uuid)
        if claim is not None and claim.owner == who:
            self._let_go(claim, how)
        else:
            logger.debug("%r finished job %s: %s", who, job.uuid, how.name)
            if _observe.INSTRUMENTS:
                _observe.finished(self, job, who, how.value)

    def _let_go(self, claim: Claim, how: Finish) -> None:
        if self._held.get(claim.job.uuid) is claim:
            del self._held[claim.job.uuid]
            self._presence_changed()
        claim.set_finished(how)
        logger.debug(
            "%r finished job %s, token %d: %s",
            claim.owner,
            claim.job.uuid,
            claim.token,
            how.name,
        )
        if _observe.INSTRUMENTS:
            _observe.finished(self, claim.job, claim.owner, how.value)

    def _lose(self, claim: Claim, reason: str, *, expired: bool = False) -> None:
        """Lose *claim*; *expired* if for want of its lease."""
        if self._held.get(claim.job.uuid) is claim:
            del self._held[claim.job.uuid]
            self._presence_changed()
        held = claim.held
        claim.set_lost(reason)
        if held and _observe.INSTRUMENTS:
            _observe.lost(self, claim.job, claim.owner, reason)
            if expired:
                _observe.expired(self, claim.job, claim.owner)

    async def _abandon_quietly(self, claim: Claim) -> None:
        try:
            await self._finish(claim.job.uuid, claim.owner, claim.token, Finish.ABANDON)
        except JobBoardError as exc:
            logger.debug("could not abandon job %s: %s", claim.job.uuid, exc)
        else:
            claim.set_finished(Finish.ABANDON)
            if _observe.INSTRUMENTS:
                _observe.finished(self, claim.job, claim.owner, Finish.ABANDON.value)
        if self._held.get(claim.job.uuid) is claim:
            del self._held[claim.job.uuid]
            self._presence_changed()

    # -- the lease keeper -----------------------------------------------------

    def _start_keeper(self, claim: Claim) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(
                self._keep_leases(), name=f"aiojobboard lease keeper {self._url}"
            )
        elif claim.renew_at < self._keeper_wake_at:
            self._keeper_wake.set()

    async def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None and not keeper.done():
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep_leases(self) -> None:
        """Renew held claims shortly before they need it, in batches.

        A claim whose local deadline passed before it was renewed, for instance
        because the event loop was blocked, is lost without asking the server:
        the server may already have given its job to someone else.
        """
        while self._held:
            self._keeper_wake.clear()
            now = time.monotonic()
            due: list[Claim] = []
            wake_at = math.inf
            for claim in list(self._held.values()):
                if claim.expires_at <= now:
                    self._lose(
                        claim, f"its lease of {claim.lease:g} s ran out", expired=True
                    )
                elif claim.renew_at <= now + claim.lease / 12:
                    due.append(claim)
                else:
                    wake_at = min(wake_at, claim.renew_at)
            if due:
                await self._renew_due(due)
                continue
            self._keeper_wake_at = wake_at
            with anyio.move_on_after(wake_at - now):
                await self._keeper_wake.wait()
            self._keeper_wake_at = 0.0

    async def _renew_due(self, due: list[Claim]) -> None:
        sent_at = time.monotonic()
        try:
            answers = await self._renew(due)
        except Exception as exc:
            # Not lost yet: retry soon, until the local deadline says otherwise.
            unexpected = not isinstance(exc, JobBoardError)
            logger.warning(
                "could not renew %d leases, retrying: %s",
                len(due),
                exc,
                exc_info=unexpected,
            )
            for claim in due:
                claim.renew_at = time.monotonic() + min(1.0, claim.lease / 10)
            return
        for claim, renewed in zip(due, answers, strict=True):
            if not claim.held:
                continue
            if renewed:
                claim.renewed(sent_at)
            elif claim.finishing:
                # A consume that landed first makes the board refuse the
                # renewal: the finish's own answer decides what happened.
                claim.renew_at = time.monotonic() + min(1.0, claim.lease / 10)
            else:
                self._lose(claim, "the board refused to renew it", expired=True)
        if _observe.INSTRUMENTS:
            _observe.renewed(self, sum(answers))


def _check_owner(who: object) -> None:
    if not isinstance(who, str):
        raise TypeError(f"an owner name must be a str, not {type(who).__name__}")
    if not who.strip():
        raise ValueError("an owner name must not be empty")
    if not who.isascii():
        try:
            who.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"an owner name must be text that UTF-8 can encode, not {who!r}"
            ) from None


def _check_job(job: object) -> None:
    if not isinstance(job, Job):
        raise TypeError(f"expected a Job, not {type(job).__name__}")


def _check_reason(reason: object) -> None:
    if not isinstance(reason, str):
        raise TypeError(f"a cancel reason must be a str, not {type(reason).__name__}")
    if not reason.strip():
        raise ValueError("a cancel reason must not be empty")
    if len(reason) > MAX_REASON:
        raise ValueError(
            f"a cancel reason must be at most {MAX_REASON} characters, "
            f"not {len(reason)}"
        )


def _canonical_uuid(uuid: object) -> str:
    if not isinstance(uuid, str):
        raise TypeError(f"a job uuid must be a str, not {type(uuid).__name__}")
    try:
        return str(uuidlib.UUID(uuid))
    except ValueError:
        raise ValueError(f"not a job uuid: {uuid!r}") from None
