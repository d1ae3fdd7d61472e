"""The ZooKeeper adapter: ``zookeeper://host1:2181,host2:2181/path`` boards.

A board is a folder of nodes under its path:

``jobs/R-UUID-SEQUENCE``
    One persistent sequential node per job, holding the posting's JSON. The
    name alone gives the job's priority rank (0 is VERY_HIGH), uuid and
    sequence, so a board knows its order without reading any data. The
    node's data version counts the claims on the job: it is the attempt
    number, and a claim's identity when it is finished.
``claims/R-UUID-SEQUENCE``
    The job's current claim: an ephemeral node of the claimer's session,
    holding the owner's name and the attempt. It lives apart from the jobs,
    so claiming wakes no watch on the job list. Its creation zxid is the
    claim's fencing token: zxids only grow.
``trash/R-UUID-SEQUENCE``
    A trashed job's posting, kept for inspection.
``entities/OWNER``
    An ephemeral node per owner name that claimed through a live session.
``cancelled/R-UUID-SEQUENCE``
    A cancelled job's reason, created with its trash node in one transaction;
    watchers read it to put the reason on the TRASHED event.
``workers/CONNECTION-OWNER``
    Presence: an ephemeral node per connection and owner name that holds
    claims or runs a Worker, holding its record; it goes with the session.

Every change is one multi transaction: a claim creates its claim node (which
fails if the job is claimed) and rewrites the job under a version check; a
finish deletes or releases under the job's version, which names the claim.

Each connection keeps a view of the board from one persistent recursive watch
on the board's path, so listing the board costs one round trip, not one per
job, and events come from the watch, in the server's order. Abandoning marks
the claim node before deleting it, so that a watcher tells an abandon from a
session that ended (EXPIRED).

Claims end with their session. ``lease=`` is accepted and has no effect: a
claim's local deadline is the session timeout. The board fails safe: while
the connection is suspended it starts no claims, and when the server has not
answered for most of a session timeout, or the session expired, every claim
held through that session is lost. A new session brings the board back with
a view rebuilt from the server.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, unquote, urlsplit

import aiozk

from .._connect import mask_url, positive_float, positive_int, read_options
from ..board import MAX_JOB_SIZE, JobBoard
from ..claims import Claim, Finish, Grant, check_holder
from ..errors import (
    BoardClosed,
    ConnectionLost,
    InvalidJob,
    JobBoardError,
    NotFound,
    NotOwner,
    UnclaimableJob,
)
from ..events import EventKind, JobEvent
from ..jobs import Job, JobPriority, JobState, JobStatus, Posting
from ..presence import WorkerInfo
from . import _aiozk as zk

if TYPE_CHECKING:
    from ..book.base import BookStore

__all__ = ["DEFAULT_PATH", "DEFAULT_SESSION_TIMEOUT", "ZooKeeperBoard"]

logger = logging.getLogger("aiojobboard.boards.zookeeper")

#: Seconds a session outlives its last word to the server, unless the URL says.
DEFAULT_SESSION_TIMEOUT = 10.0
#: The longest session timeout a URL may ask for, in seconds (a day).
MAX_SESSION_TIMEOUT = 86_400.0
#: The board's path when the URL gives none.
DEFAULT_PATH = "/aiojobboard"
#: ZooKeeper's largest request (its ``jute.maxbuffer``), in bytes.
REQUEST_LIMIT = 0xFFFFF
#: Room kept in a request for its header, node path and ACL.
_REQUEST_OVERHEAD = 512
#: How much of the session timeout may pass without an answer before claims
#: are given up: the server cannot have expired the session any sooner.
_FAIL_SAFE = 0.8
#: How long a claim granted here may go unheld before it is released.
_ORPHAN_AGE = 1.0
#: How many jobs a new view reads at once.
_PRELOAD_BATCH = 256
#: The most single posts that go to the server in one transaction.
_POST_BATCH = 500
#: How many consumed or trashed jobs a connection remembers as gone.
_GONE_KEPT = 10_000
#: The least time between two writes of presence records, in seconds.
_PRESENCE_EVERY = 1.0

_RANK_OF = {priority: 2 - int(priority) for priority in JobPriority}
_FINISHED_KIND = {
    Finish.CONSUME: EventKind.CONSUMED,
    Finish.ABANDON: EventKind.ABANDONED,
    Finish.TRASH: EventKind.TRASHED,
}
_RELEASED = b'{"released": true}'


@dataclass(slots=True)
class _Held:
    """A claim granted through this connection's session."""

    owner: str
    token: int
    attempt: int
    granted_at: float


@dataclass(slots=True)
class _Holder:
    """A claim as read from its node."""

    owner: str
    token: int
    attempt: int


class _Entry:
    """One job in a connection's view of its board."""

    __slots__ = (
        "claim_info",
        "claimed",
        "data",
        "job",
        "loading",
        "name",
        "queued",
        "rank",
        "releasing",
        "sequence",
        "uuid",
        "version",
    )

    def __init__(self, name: str, rank: int, uuid: str, sequence: int) -> None:
        self.name = name
        self.rank = rank
        self.uuid = uuid
        self.sequence = sequence
        self.job: Job | None = None
        self.data: bytes | None = None
        #: The job node's data version as last known, which is the attempt.
        self.version: int | None = None
        self.claimed = False
        #: The claim node was marked: its deletion is an abandon, not expiry.
        self.releasing = False
        self.claim_info: asyncio.Future[tuple[str | None, int | None]] | None = None
        self.loading: asyncio.Task[Job | None] | None = None
        self.queued = False

    @classmethod
    def parse(cls, name: str) -> _Entry | None:
        """Read a job node's name; ``None`` for a node that is not a job."""
        rank, _, rest = name.partition("-")
        uuid, _, sequence = rest.rpartition("-")
        if len(rank) != 1 or not rank.isdigit() or not uuid or not sequence.isdigit():
            return None
        return cls(name, int(rank), uuid, int(sequence))

    @property
    def order(self) -> tuple[int, int]:
        return self.rank, self.sequence


class ZooKeeperBoard(JobBoard):
    """A connection to a board kept in ZooKeeper.

    URL: ``zookeeper://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/PATH`` with
    options ``session_timeout`` (seconds, default 10), ``timeout`` (seconds a
    call may take, default the session timeout), ``max_job_size`` (bytes),
    ``acl`` (``private`` to keep other identities from even reading) and
    ``lease`` (accepted, no effect: claims end with the session). With a user
    and password, the connection authenticates by digest and the nodes it
    creates may be changed by that identity only.
    """

    def __init__(
        self,
        url: str,
        *,
        hosts: str,
        path: str,
        credentials: tuple[str, str] | None,
        private: bool,
        session_timeout: float,
        call_timeout: float,
        max_job_size: int,
        books: BookStore | None = None,
    ) -> None:
        super().__init__(
            url, lease=session_timeout, max_job_size=max_job_size, books=books
        )
        self._root = path
        self._jobs = f"{path}/jobs"
        self._claims = f"{path}/claims"
        self._trash = f"{path}/trash"
        self._entities = f"{path}/entities"
        self._cancelled = f"{path}/cancelled"
        self._workers_path = f"{path}/workers"
        if credentials is None:
            self._acl: list[Any] = [zk.OPEN_ACL]
        else:
            self._acl = zk.digest_acl(*credentials, world_read=not private)
        self._client = zk.Client(
            hosts,
            session_timeout=session_timeout,
            call_timeout=call_timeout,
            credentials=credentials,
            on_event=self._on_event,
            on_state=self._on_state,
        )
        self._entries: dict[str, _Entry] = {}
        #: Nodes under jobs/ that are not jobs, already warned of.
        self._warned: set[str] = set()
        self._names: dict[str, str] = {}
        self._ready_heap: list[tuple[int, int, str]] = []
        self._trashed: set[str] = set()
        #: The uuids of jobs lately seen leaving the board, oldest first.
        self._gone: dict[str, None] = {}
        self._own_postings: dict[str, Posting] = {}
        self._post_queue: deque[tuple[Posting, asyncio.Future[Job]]] = deque()
        self._poster: asyncio.Task[None] | None = None
        self._claiming: dict[str, asyncio.Future[_Held | None]] = {}
        self._granted: dict[str, _Held] = {}
        #: Claims sent but not answered: the attempt each would have made.
        self._unsure: dict[str, tuple[int, float]] = {}
        self._entity_owners: set[str] = set()
        #: Reasons of cancels seen on the watch, read for the TRASHED event.
        self._cancel_reasons: dict[str, asyncio.Task[str | None]] = {}
        self._presence_id = secrets.token_hex(8)
        #: This connection's presence nodes, with the part of each record
        #: last written that counts as a change.
        self._announced: dict[str, tuple[str, ...]] = {}
        self._announced_at = -float("inf")
        self._announcer: asyncio.Task[None] | None = None
        #: The rebuild of the view after the latest reconnect.
        self._recovery: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._buffer: list[zk.NodeEvent] | None = None
        self._rebuilt = asyncio.Event()
        self._rebuilt.set()
        self._opened = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deliverer: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # -- opening and closing --------------------------------------------------
    @classmethod
    async def from_url(cls, url: str, *, books: BookStore | None = None) -> Self:
        """Connect to the board that *url* names, creating its folders if needed."""
        settings = _parse_url(url)
        board = cls(url, books=books, **settings)
        await board._open()
        return board

    async def _open(self) -> None:
        await self._client.start()
        try:
            for path in _prefixes(self._root):
                await self._ensure(path)
            for path in (self._jobs, self._claims, self._trash, self._entities):
                await self._ensure(path)
            for path in (self._cancelled, self._workers_path):
                # Newer than the others: an identity that may only read a
                # board made before them still opens it, without cancels
                # or presence.
                try:
                    await self._ensure(path)
                except JobBoardError as error:
                    logger.warning("%s; cancel and presence will fail", error)
            await self._rebuild(announce=False)
        except BaseException:
            for task in self._tasks:
                task.cancel()
            await self._client.close()
            raise
        self._opened = True
        self._deliverer = asyncio.create_task(
            self._deliver_events(), name=f"aiojobboard events {self.url}"
        )
        self._watchdog = asyncio.create_task(
            self._watch_session(), name=f"aiojobboard session {self.url}"
        )
        logger.debug(
            "connected to %s, session 0x%x, timeout %g s, aiozk %s",
            self.url,
            self._client.session_id or 0,
            self._client.session_timeout,
            aiozk.__version__,
        )

    async def _ensure(self, path: str) -> None:
        if await self._client.exists(path) is not None:
            return
        try:
            await self._client.create(path, b"", self._acl)
        except zk.NodeExists:
            pass
        except zk.NoAuth as error:
            raise JobBoardError(
                f"this connection's identity may not create {path!r} on {self.url}"
            ) from error

    async def _close(self) -> None:
        for task in (self._deliverer, self._watchdog, *self._tasks):
            if task is not None:
                task.cancel()
        pending = [t for t in (self._deliverer, self._watchdog) if t is not None]
        await asyncio.gather(*pending, *self._tasks, return_exceptions=True)
        for future in self._claiming.values():
            if not future.done():
                future.cancel()
        await self._client.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the hooks: posting and reading ---------------------------------------
    async def _post(self, posting: Posting) -> Job:
        # Posts made while another is on its way go together in the next
        # transaction: one round trip and one disk write for many posters.
        waiter: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._post_queue.append((posting, waiter))
        if self._poster is None or self._poster.done():
            self._poster = self._spawn(self._send_posts())
        return await waiter

    async def _send_posts(self) -> None:
        batch: list[tuple[Posting, asyncio.Future[Job]]] = []
        try:
            while self._post_queue:
                batch = self._next_posts()
                try:
                    jobs = await self._post_many([posting for posting, _ in batch])
                except Exception as error:  # each poster gets it, as its own
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(error)
                    continue
                for (_, waiter), job in zip(batch, jobs, strict=True):
                    if not waiter.done():
                        waiter.set_result(job)
        finally:
            # Closed meanwhile: a post in flight may or may not have happened.
            for _, waiter in [*batch, *self._post_queue]:
                if not waiter.done():
                    waiter.set_exception(
                        BoardClosed(f"board {self.url} was closed during a post")
                    )
            self._post_queue.clear()

    def _next_posts(self) -> list[tuple[Posting, asyncio.Future[Job]]]:
        batch: list[tuple[Posting, asyncio.Future[Job]]] = []
        size = 0
        while self._post_queue and len(batch) < _POST_BATCH:
            posting = self._post_queue[0][0]
            size += len(posting.encoded.encode()) + _REQUEST_OVERHEAD
            if batch and size > REQUEST_LIMIT - _REQUEST_OVERHEAD:
                break
            batch.append(self._post_queue.popleft())
        return batch

    async def _post_many(self, postings: Sequence[Posting]) -> list[Job]:
        ops = []
        size = 0
        for posting in postings:
            prefix = f"{self._jobs}/{_RANK_OF[posting.priority]}-{posting.uuid}-"
            data = posting.encoded.encode()
            size += len(data) + len(prefix) + _REQUEST_OVERHEAD // 4
            ops.append(zk.Op.create(prefix, data, self._acl, sequential=True))
        if size > REQUEST_LIMIT - _REQUEST_OVERHEAD:
            raise InvalidJob(
                f"{len(postings)} jobs of {size} bytes in all do not fit in one "
                f"ZooKeeper request of {REQUEST_LIMIT} bytes; post fewer at once"
            )
        for posting in postings:
            self._own_postings[posting.uuid] = posting
        try:
            await self._client.wait_connected()
            answers = await self._client.multi(ops)
        except zk.MultiFailed as failed:
            raise self._refused("post", failed) from failed.error
        finally:
            for posting in postings:
                self._own_postings.pop(posting.uuid, None)
        return [
            posting.to_job(self, int(answer.path[-10:]))
            for posting, answer in zip(postings, answers, strict=True)
        ]

    async def _get_job(self, uuid: str) -> Job | None:
        # The view may not have heard yet of a change another connection
        # made: one round trip brings it up to the server.
        await self._sync()
        # Read from the view just synced: _entry_of would sync again for a
        # job that is not there.
        name = self._names.get(uuid)
        entry = None if name is None else self._entries.get(name)
        if entry is None:
            return None
        return await self._loaded(entry)

    async def _iter_jobs(self, only_unclaimed: bool) -> AsyncIterator[Job]:
        await self._sync()
        entries = sorted(
            (e for e in self._entries.values() if not (only_unclaimed and e.claimed)),
            key=lambda entry: entry.order,
        )
        missing = [entry for entry in entries if entry.job is None]
        if missing:
            await asyncio.gather(*(self._loaded(entry) for entry in missing))
        for entry in entries:
            if entry.job is not None:
                yield entry.job

    async def _get_status(self, uuid: str) -> tuple[JobState, str | None]:
        if uuid in self._gone:
            # Final for good: answered without a round trip, so that a wait
            # with no time left still sees it.
            return JobState.COMPLETE, None
        name = await self._name_of(uuid)
        if name is None:
            return JobState.COMPLETE, None
        # Both asked at once: one round trip, and no trust in the view.
        holder, stat = await asyncio.gather(
            self._read_claim(name), self._client.exists(f"{self._jobs}/{name}")
        )
        if stat is None:
            return JobState.COMPLETE, None
        if holder is not None:
            return JobState.CLAIMED, holder.owner
        return JobState.UNCLAIMED, None

    async def _job_count(self) -> int:
        stat = await self._client.exists(self._jobs)
        if stat is None:
            raise NotFound(f"board {self.url} has no jobs folder")
        return int(stat.num_children)

    async def _has_unclaimed(self) -> bool:
        return self._peek_ready() is not None

    async def _get_job_status(self, uuid: str) -> JobStatus | None:
        if uuid in self._gone:
            return None
        name = await self._name_of(uuid)
        if name is None:
            return None
        holder, stat = await asyncio.gather(
            self._read_claim(name), self._client.exists(f"{self._jobs}/{name}")
        )
        if stat is None:
            return None
        if holder is not None:
            return JobStatus(
                JobState.CLAIMED, holder.owner, holder.attempt, holder.token
            )
        # The job's data version counts its claims.
        return JobStatus(JobState.UNCLAIMED, None, int(stat.version), None)

    async def _cancel(self, uuid: str, reason: str) -> None:
        name = await self._name_of(uuid)
        if name is None:
            raise NotFound(f"job {uuid} is no longer on the board")
        job_path, claim_path = f"{self._jobs}/{name}", f"{self._claims}/{name}"
        for _ in range(5):
            job, claim = await asyncio.gather(
                self._client.exists(job_path), self._client.exists(claim_path)
            )
            if job is None:
                raise NotFound(f"job {uuid} is no longer on the board")
            data = await self._posting_data(name)
            # The job's version changes with each claim, and an abandon
            # deletes the claim node: either makes this transaction fail, so
            # that it removes exactly the state it read.
            ops = [
                zk.Op.create(
                    f"{self._cancelled}/{name}", _dumps({"reason": reason}), self._acl
                ),
                zk.Op.create(f"{self._trash}/{name}", data, self._acl),
                zk.Op.delete(job_path, int(job.version)),
            ]
            if claim is not None:
                ops.append(zk.Op.delete(claim_path, -1))
            try:
                await self._client.multi(ops)
            except zk.MultiFailed as failed:
                if isinstance(failed.error, zk.NoAuth):
                    raise self._refused("cancel", failed) from failed.error
                continue
            return
        raise JobBoardError(f"job {uuid} kept changing while it was cancelled")

    async def _read_reason(self, name: str) -> str | None:
        try:
            data, _ = await self._client.get(f"{self._cancelled}/{name}")
        except (zk.NoNode, JobBoardError):
            return None
        try:
            reason = json.loads(data)["reason"]
        except (ValueError, KeyError, TypeError):
            return None
        return reason if isinstance(reason, str) and reason else None

    # -- the hooks: presence ----------------------------------------------------
    async def _get_workers(self) -> list[WorkerInfo]:
        names = await self._client.children(self._workers_path)
        found = await asyncio.gather(*(self._read_worker(name) for name in names))
        # A node lives as long as its session, which the server keeps only
        # while it hears from it: its record is alive now.
        now = datetime.now(UTC)
        return [replace(info, seen=now) for info in found if info is not None]

    async def _read_worker(self, name: str) -> WorkerInfo | None:
        try:
            data, _ = await self._client.get(f"{self._workers_path}/{name}")
        except zk.NoNode:
            return None
        info = WorkerInfo.decode(data)
        if info is None:
            logger.warning("ignoring a bad presence record %s on %s", name, self.url)
        return info

    def _on_presence_changed(self) -> None:
        if self._opened and (self._announcer is None or self._announcer.done()):
            self._announcer = self._spawn(self._announce())

    async def _announce(self) -> None:
        """Write this connection's presence nodes, at most once a second.

        A write that fails is tried again a few times; after that, the next
        change or reconnect tries again.
        """
        failures = 0
        while failures < 5:
            delay = self._announced_at + _PRESENCE_EVERY - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            version = self._presence_version
            try:
                await self._client.wait_connected()
                await self._write_presence()
            except JobBoardError as error:
                logger.debug("could not write presence on %s: %s", self.url, error)
                failures += 1
                continue
            if version == self._presence_version:
                return

    async def _write_presence(self) -> None:
        self._announced_at = time.monotonic()
        kept = {
            f"{self._presence_id}-{quote(info.name, safe='')}": info
            for info in self._presence()
        }
        writes = [
            self._put_worker(name, info)
            for name, info in kept.items()
            if self._announced.get(name) != info.holding
        ]
        writes += [self._drop_worker(name) for name in self._announced.keys() - kept]
        await asyncio.gather(*writes)

    async def _put_worker(self, name: str, info: WorkerInfo) -> None:
        path, data = f"{self._workers_path}/{name}", info.encode().encode()
        try:
            await self._client.send(zk.Op.set_data(path, data, -1))
        except zk.NoNode:
            try:
                await self._client.send(
                    zk.Op.create(path, data, self._acl, ephemeral=True)
                )
            except zk.NodeExists:
                await self._client.send(zk.Op.set_data(path, data, -1))
        self._announced[name] = info.holding

    async def _drop_worker(self, name: str) -> None:
        with suppress(zk.NoNode):
            await self._client.send(zk.Op.delete(f"{self._workers_path}/{name}", -1))
        self._announced.pop(name, None)

    # -- the hooks: claiming --------------------------------------------------
    def _lease_of(self, lease: float | None) -> float:
        # Checked like on every board, then ignored: a claim lasts as long as
        # its session, and its local deadline is the session's timeout.
        super()._lease_of(lease)
        return self._client.session_timeout

    async def _claim(self, uuid: str, owner: str, lease: float) -> Grant:
        await self._client.wait_connected()
        entry = await self._entry_of(uuid)
        if entry is None:
            raise NotFound(f"job {uuid} is no longer on the board")
        return await self._claim_entry(entry, owner)

    async def _claim_next(self, owner: str, lease: float) -> tuple[Job, Grant] | None:
        await self._client.wait_connected()
        while (entry := self._pop_ready()) is not None:
            try:
                grant = await self._claim_entry(entry, owner, quiet=True)
            except (UnclaimableJob, NotFound):
                continue
            except BaseException:
                self._enqueue(entry)
                raise
            assert entry.job is not None
            return entry.job, grant
        return None

    async def _claim_entry(
        self, entry: _Entry, owner: str, *, quiet: bool = False
    ) -> Grant:
        """Claim one job; *quiet* spares the read that names a current holder."""
        for _ in range(5):
            job = await self._loaded(entry)
            if job is None or entry.data is None or entry.version is None:
                raise NotFound(f"job {entry.uuid} is no longer on the board")
            try:
                return await self._try_claim(
                    entry, owner, entry.data, entry.version, quiet
                )
            except _StaleVersion:
                stat = await self._client.exists(f"{self._jobs}/{entry.name}")
                if stat is None:
                    raise NotFound(
                        f"job {entry.uuid} is no longer on the board"
                    ) from None
                entry.version = int(stat.version)
        raise UnclaimableJob(f"job {entry.uuid} changed too often to be claimed")

    async def _try_claim(
        self, entry: _Entry, owner: str, data: bytes, version: int, quiet: bool
    ) -> Grant:
        name = entry.name
        attempt = version + 1
        ops = [
            zk.Op.create(
                f"{self._claims}/{name}",
                _dumps({"owner": owner, "attempt": attempt}),
                self._acl,
                ephemeral=True,
            ),
            zk.Op.set_data(f"{self._jobs}/{name}", data, version),
        ]
        claiming = asyncio.get_running_loop().create_future()
        self._claiming[name] = claiming
        held: _Held | None = None
        try:
            answers = await self._send_claim(ops, name, attempt)
            token = int(answers[1].stat.last_modified_zxid)
            held = _Held(owner, token, attempt, time.monotonic())
        except zk.MultiFailed as failed:
            if quiet and isinstance(failed.error, zk.NodeExists):
                raise UnclaimableJob(f"job {entry.uuid} is already claimed") from None
            await self._claim_refused(entry, failed)
        finally:
            if self._claiming.get(name) is claiming:
                del self._claiming[name]
            if not claiming.done():
                claiming.set_result(held)
        assert held is not None  # a refused claim raised above
        self._granted[name] = held
        if owner not in self._entity_owners:
            self._spawn(self._register_entity(owner))
        return Grant(held.token, held.attempt)

    async def _send_claim(self, ops: list[Any], name: str, attempt: int) -> list[Any]:
        """Send a claim; if the caller is cancelled meanwhile, give it back.

        The server may grant a claim whose answer nobody waits for any more;
        left alone, its node would keep the job until the session ends.
        """
        sending = asyncio.ensure_future(self._client.multi(ops))
        try:
            return await asyncio.shield(sending)
        except ConnectionLost:
            # It may have been granted, to this session, with nobody to hold
            # it: the watchdog looks once the connection is back.
            self._unsure[name] = (attempt, time.monotonic())
            raise
        except asyncio.CancelledError:
            # Wait for the answer, and give back what it granted, before the
            # cancellation goes on; a second cancellation leaves it to a task.
            try:
                await asyncio.wait([sending])
            finally:
                if not sending.done():
                    sending.add_done_callback(
                        lambda done: self._spawn(self._release(done, name, attempt))
                    )
                else:
                    await self._release(sending, name, attempt)
            raise

    async def _release(
        self, sending: asyncio.Future[list[Any]], name: str, attempt: int
    ) -> None:
        if sending.cancelled() or sending.exception() is not None or self.closed:
            return
        logger.debug("giving back claim %s, granted after its caller left", name)
        try:
            await self._try_finish(name, Finish.ABANDON, attempt)
        except JobBoardError as error:
            logger.debug("could not give back claim %s: %s", name, error)

    async def _claim_refused(self, entry: _Entry, failed: zk.MultiFailed) -> None:
        error = failed.error
        if isinstance(error, zk.NodeExists):
            holder = await self._read_claim(entry.name, strict=True)
            if holder is None:
                raise _StaleVersion from error
            raise UnclaimableJob(
                f"job {entry.uuid} is already claimed by {holder.owner!r}",
                owner=holder.owner,
            ) from error
        if isinstance(error, zk.BadVersion):
            raise _StaleVersion from error
        if isinstance(error, zk.NoNode):
            raise NotFound(f"job {entry.uuid} is no longer on the board") from error
        raise self._refused("claim", failed) from error

    async def _register_entity(self, owner: str) -> None:
        self._entity_owners.add(owner)
        path = f"{self._entities}/{quote(owner, safe='')}"
        try:
            await self._client.multi(
                [zk.Op.create(path, b"", self._acl, ephemeral=True)]
            )
        except (zk.MultiFailed, JobBoardError) as error:
            logger.debug("could not register %r as a live worker: %s", owner, error)

    async def _renew(self, claims: Sequence[Claim]) -> list[bool]:
        # Nothing to extend on the server: a claim lasts as long as its session,
        # which the watchdog keeps an eye on.
        answers = []
        for claim in claims:
            held = self._granted.get(self._names.get(claim.job.uuid, ""))
            answers.append(held is not None and held.token == claim.token)
        return answers

    async def _finish(
        self, uuid: str, owner: str, token: int | None, how: Finish
    ) -> None:
        name = await self._name_of(uuid)
        if name is None:
            raise NotFound(f"job {uuid} is no longer on the board")
        held = self._granted.get(name)
        if (
            held is not None
            and held.owner == owner
            and token in (None, held.token)
            and await self._try_finish(name, how, held.attempt)
        ):
            self._forget(name, held.token)
            return
        for _ in range(3):
            holder = await self._holder_or_raise(uuid, name, owner, token)
            if await self._try_finish(name, how, holder.attempt):
                self._forget(name, holder.token)
                return
        raise NotOwner(f"job {uuid} kept changing while {owner!r} finished it")

    async def _holder_or_raise(
        self, uuid: str, name: str, owner: str, token: int | None
    ) -> _Holder:
        holder = await self._read_claim(name)
        if holder is None:
            if await self._client.exists(f"{self._jobs}/{name}") is None:
                raise NotFound(f"job {uuid} is no longer on the board")
            raise NotOwner(f"job {uuid} is not claimed")
        check_holder(uuid, holder.owner, holder.token, owner, token)
        return holder

    async def _try_finish(self, name: str, how: Finish, attempt: int) -> bool:
        """Finish the claim of *attempt* on a job; False if it is not current."""
        job_path, claim_path = f"{self._jobs}/{name}", f"{self._claims}/{name}"
        if how is Finish.ABANDON:
            # The mark tells watchers that this deletion is an abandon.
            ops = [
                zk.Op.set_data(claim_path, _RELEASED, 0),
                zk.Op.delete(claim_path, 1),
                zk.Op.check(job_path, attempt),
            ]
        else:
            # The job goes first, so that watchers never see it unclaimed.
            ops = [zk.Op.delete(job_path, attempt), zk.Op.delete(claim_path, 0)]
            if how is Finish.TRASH:
                data = await self._posting_data(name)
                ops.insert(0, zk.Op.create(f"{self._trash}/{name}", data, self._acl))
        try:
            await self._client.multi(ops)
        except zk.MultiFailed as failed:
            if isinstance(failed.error, zk.NoAuth):
                raise NotOwner(
                    f"this connection's identity may not {how.name.lower()} job "
                    f"{name} on {self.url}"
                ) from failed.error
            return False
        return True

    async def _posting_data(self, name: str) -> bytes:
        entry = self._entries.get(name)
        if entry is not None and entry.data is not None:
            return entry.data
        try:
            data, _ = await self._client.get(f"{self._jobs}/{name}")
        except zk.NoNode:
            return b""
        return data

    def _forget(self, name: str, token: int) -> None:
        held = self._granted.get(name)
        if held is not None and held.token == token:
            del self._granted[name]

    # -- reading the server ---------------------------------------------------
    async def _read_claim(self, name: str, *, strict: bool = False) -> _Holder | None:
        """Read a job's claim; ``None`` if there is none, or (unless *strict*)
        if its node holds garbage, which *strict* refuses the claim over."""
        path = f"{self._claims}/{name}"
        try:
            data, stat = await self._client.get(path)
        except zk.NoNode:
            return None
        try:
            fields = json.loads(data)
            return _Holder(
                str(fields["owner"]), int(stat.created_zxid), int(fields["attempt"])
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("claim node %s holds no claim: %r", path, data[:100])
            if strict:
                raise UnclaimableJob(
                    f"job {name} is kept by claim node {path}, which holds no "
                    "claim; deleting that node frees the job"
                ) from None
            return None

    async def _load(self, entry: _Entry) -> Job | None:
        try:
            data, stat = await self._client.get(f"{self._jobs}/{entry.name}")
        except zk.NoNode:
            return None
        except JobBoardError as error:
            logger.debug("could not read job %s: %s", entry.name, error)
            return None
        try:
            posting = Posting.decode(data.decode())
            if posting.uuid != entry.uuid:
                # Another job's posting copied here: that job once is enough.
                raise ValueError(f"it holds the posting of job {posting.uuid}")
        except ValueError as error:  # UnicodeDecodeError is one too
            self._not_a_job(entry.name, f"it holds no job ({error})")
            return None
        entry.job = posting.to_job(self, entry.sequence)
        entry.data = data
        entry.version = int(stat.version)
        return entry.job

    async def _loaded(self, entry: _Entry) -> Job | None:
        """Return the entry's job, reading it once if it is not known yet."""
        if entry.job is not None:
            return entry.job
        if entry.loading is None or entry.loading.done():
            entry.loading = self._spawn(self._load(entry))
        return await asyncio.shield(entry.loading)

    async def _name_of(self, uuid: str) -> str | None:
        name = self._names.get(uuid)
        if name is None:
            await self._sync()
            name = self._names.get(uuid)
        return name

    async def _entry_of(self, uuid: str) -> _Entry | None:
        name = await self._name_of(uuid)
        return None if name is None else self._entries.get(name)

    async def _sync(self) -> None:
        """Make the view as fresh as the server, by one round trip."""
        try:
            async with asyncio.timeout(self._client.call_timeout):
                await self._rebuilt.wait()
        except TimeoutError:
            raise ConnectionLost(
                f"ZooKeeper for {self.url} was reached again, but this "
                f"connection's view of the board was not rebuilt within "
                f"{self._client.call_timeout:g} s"
            ) from None
        await self._client.exists(self._root)

    # -- the view: applying the watch's events --------------------------------
    def _on_event(self, event: zk.NodeEvent) -> None:
        if self._buffer is not None:
            self._buffer.append(event)
        else:
            self._apply(event)

    def _apply(self, event: zk.NodeEvent) -> None:
        parent, _, name = event.path.rpartition("/")
        if parent == self._jobs:
            self._apply_job(event.kind, name)
        elif parent == self._claims:
            self._apply_claim(event.kind, name)
        elif parent == self._trash and event.kind == zk.CREATED:
            self._trashed.add(name)
        elif parent == self._cancelled and event.kind == zk.CREATED:
            self._cancel_reasons[name] = self._spawn(self._read_reason(name))

    def _apply_job(self, kind: int, name: str) -> None:
        if kind == zk.CREATED and name not in self._entries:
            entry = _Entry.parse(name)
            if entry is None:
                self._foreign_node(name)
                return
            self._add(entry)
            self._emit(EventKind.POSTED, entry, job=True)
        elif kind == zk.DELETED:
            entry = self._entries.pop(name, None)
            if entry is None:
                return
            self._names.pop(entry.uuid, None)
            self._gone[entry.uuid] = None
            if len(self._gone) > _GONE_KEPT:
                del self._gone[next(iter(self._gone))]
            trashed = name in self._trashed
            self._trashed.discard(name)
            final = EventKind.TRASHED if trashed else EventKind.CONSUMED
            reason = self._cancel_reasons.pop(name, None) if trashed else None
            self._emit(final, entry, info=entry.claim_info, reason=reason)
        elif kind == zk.DATA_CHANGED:
            entry = self._entries.get(name)
            if entry is not None and entry.version is not None:
                entry.version += 1

    def _foreign_node(self, name: str) -> None:
        self._not_a_job(name, "its name is not that of a job")

    def _not_a_job(self, name: str, why: object) -> None:
        """Warn of a node under jobs/ that is not a job, once per connection."""
        if name in self._warned:
            logger.debug("skipping node %s/%s: %s", self._jobs, name, why)
            return
        self._warned.add(name)
        logger.warning("skipping node %s/%s: %s", self._jobs, name, why)

    def _apply_claim(self, kind: int, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        if kind == zk.CREATED:
            entry.claimed, entry.releasing = True, False
            entry.claim_info = self._spawn(self._claim_info(name))
            self._emit(EventKind.CLAIMED, entry, info=entry.claim_info)
        elif kind == zk.DATA_CHANGED:
            entry.releasing = True
        elif kind == zk.DELETED and entry.claimed:
            entry.claimed = False
            released = EventKind.ABANDONED if entry.releasing else EventKind.EXPIRED
            info, entry.claim_info = entry.claim_info, None
            self._enqueue(entry)
            self._emit(released, entry, info=info)

    def _add(self, entry: _Entry) -> None:
        posting = self._own_postings.get(entry.uuid)
        if posting is not None:
            entry.job = posting.to_job(self, entry.sequence)
            entry.data = posting.encoded.encode()
            entry.version = 0
        self._entries[entry.name] = entry
        self._names[entry.uuid] = entry.name
        self._enqueue(entry)

    async def _claim_info(self, name: str) -> tuple[str | None, int | None]:
        claiming = self._claiming.get(name)
        if claiming is not None:
            held = await asyncio.shield(claiming)
            if held is not None:
                return held.owner, held.token
        try:
            holder = await self._read_claim(name)
        except JobBoardError:
            holder = None
        if holder is None:
            return None, None
        return holder.owner, holder.token

    def _emit(
        self,
        kind: EventKind,
        entry: _Entry,
        *,
        job: bool = False,
        info: asyncio.Future[tuple[str | None, int | None]] | None = None,
        reason: asyncio.Future[str | None] | None = None,
    ) -> None:
        loading = None
        if job and entry.job is None:
            loading = asyncio.ensure_future(self._loaded(entry))
        self._outbox.put_nowait(_Outgoing(kind, entry, loading, info, reason))

    async def _deliver_events(self) -> None:
        """Hand events to waiters in the watch's order, once their data is read."""
        while True:
            item = await self._outbox.get()
            owner = token = reason = None
            kind = item.kind
            job = item.entry.job
            try:
                if item.info is not None:
                    owner, token = await asyncio.shield(item.info)
                if item.loading is not None:
                    job = await asyncio.shield(item.loading)
                if item.reason is not None:
                    reason = await asyncio.shield(item.reason)
                    if reason is not None:
                        kind = EventKind.TRASHED
            except Exception as error:  # a notice lost, not the board
                logger.debug("dropped a %s event: %r", item.kind.name, error)
                continue
            if item.loading is not None and job is None:
                continue
            self._deliver(
                JobEvent(
                    kind,
                    item.entry.uuid,
                    owner=owner,
                    token=token,
                    job=job,
                    reason=reason,
                )
            )

    # -- the ready heap -------------------------------------------------------
    def _enqueue(self, entry: _Entry) -> None:
        if not entry.queued and not entry.claimed:
            heapq.heappush(self._ready_heap, (entry.rank, entry.sequence, entry.name))
            entry.queued = True

    def _peek_ready(self) -> _Entry | None:
        while self._ready_heap:
            entry = self._entries.get(self._ready_heap[0][2])
            if entry is not None and not entry.claimed:
                return entry
            heapq.heappop(self._ready_heap)
            if entry is not None:
                entry.queued = False
        return None

    def _pop_ready(self) -> _Entry | None:
        """Take the first unclaimed job, so that this connection's other
        claimers try the next one instead of the same."""
        entry = self._peek_ready()
        if entry is not None:
            heapq.heappop(self._ready_heap)
            entry.queued = False
        return entry

    # -- sessions -------------------------------------------------------------
    def _on_state(self, state: str) -> None:
        if state == "suspended":
            logger.warning(
                "lost the connection to ZooKeeper for %s; claiming is paused",
                self.url,
            )
        elif state == "lost":
            self._lose_all("its ZooKeeper session expired")
            # Whatever the lost session held went with it.
            self._granted.clear()
            self._unsure.clear()
            self._entity_owners.clear()
            self._announced.clear()
        elif state == "connected" and self._opened and not self.closed:
            logger.warning(
                "reconnected to ZooKeeper for %s, session 0x%x",
                self.url,
                self._client.session_id or 0,
            )
            self._rebuilt.clear()
            self._recovery = self._spawn(self._recover(self._recovery))
            # A new session has none of the old one's presence nodes.
            self._on_presence_changed()

    def _lose_all(self, reason: str) -> None:
        """Lose every claim held through this connection, and say so."""
        for claim in list(self._held.values()):
            self._lose(claim, reason, expired=True)
            self._deliver(
                JobEvent(
                    EventKind.EXPIRED,
                    claim.job.uuid,
                    owner=claim.owner,
                    token=claim.token,
                )
            )

    async def _recover(self, previous: asyncio.Task[None] | None) -> None:
        """Rebuild the view after a reconnect, again until it works.

        A view left stale would hide the jobs posted meanwhile from this
        connection's claimers until the next reconnect.
        """
        if previous is not None:
            # One rebuild at a time: each replaces the view and its buffer.
            previous.cancel()
            await asyncio.wait([previous])
        delay = 0.1
        while True:
            try:
                await self._rebuild(announce=True)
                break
            except JobBoardError as error:
                logger.warning(
                    "could not rebuild the view of %s, trying again in %g s: %s",
                    self.url,
                    delay,
                    error,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self._resync()
        await self._release_orphans()

    async def _rebuild(self, announce: bool) -> None:
        """Watch the board and read it afresh; replay what changed meanwhile."""
        self._rebuilt.clear()
        self._buffer = []
        try:
            await self._client.watch(self._root)
            names = await self._client.children(self._jobs)
            claimed = set(await self._client.children(self._claims))
            self._replace_view(names, claimed, announce)
        except zk.NoNode as error:
            raise JobBoardError(f"the folders of board {self.url} are gone") from error
        finally:
            buffered, self._buffer = self._buffer, None
            for event in buffered:
                self._apply(event)
            self._rebuilt.set()

    def _replace_view(
        self, names: list[str], claimed: set[str], announce: bool
    ) -> None:
        old = self._entries
        self._entries, self._names, self._ready_heap = {}, {}, []
        for name in names:
            entry = old.pop(name, None) or _Entry.parse(name)
            if entry is None:
                self._foreign_node(name)
                continue
            was_claimed = entry.claimed
            entry.claimed, entry.queued = name in claimed, False
            self._add(entry)
            if entry.claimed and (entry.claim_info is None or not was_claimed):
                entry.claim_info = self._spawn(self._claim_info(name))
            if not announce:
                continue
            if entry.job is None and entry.loading is None:
                self._emit(EventKind.POSTED, entry, job=True)
            elif was_claimed and not entry.claimed:
                self._emit(EventKind.EXPIRED, entry, info=entry.claim_info)
        if announce:
            for entry in old.values():
                self._gone[entry.uuid] = None
                # A job held here that left meanwhile may have been cancelled:
                # its reason, if any, makes the event TRASHED and loses the claim.
                reason = None
                if entry.uuid in self._held:
                    reason = self._spawn(self._read_reason(entry.name))
                self._emit(
                    EventKind.CONSUMED, entry, info=entry.claim_info, reason=reason
                )
        self._spawn(self._preload())

    async def _preload(self) -> None:
        """Read the jobs of the view ahead of need, a batch at a time."""
        waiting = sorted(
            (entry for entry in self._entries.values() if entry.job is None),
            key=lambda entry: entry.order,
        )
        for start in range(0, len(waiting), _PRELOAD_BATCH):
            batch = waiting[start : start + _PRELOAD_BATCH]
            await asyncio.gather(*(self._loaded(entry) for entry in batch))

    async def _watch_session(self) -> None:
        """Ping the server, give claims up when it stays silent, free orphans.

        aiozk notices a dead connection late; this keeps its own clock, so
        that no claim outlives the time in which the server could still think
        the session alive.
        """
        while True:
            timeout = self._client.session_timeout
            interval = max(0.05, timeout / 5)
            await asyncio.sleep(interval)
            silent = time.monotonic() - self._client.last_contact
            if self._held and silent > timeout * _FAIL_SAFE:
                self._lose_all(
                    f"ZooKeeper has not answered for {silent:.1f} s, and its session "
                    f"of {timeout:g} s may have ended"
                )
            if self._client.connected:
                try:
                    async with asyncio.timeout(timeout / 3):
                        await self._client.exists(self._root)
                except TimeoutError:
                    self._client.suspect()
                    continue
                except JobBoardError:
                    continue
                await self._release_orphans()

    async def _release_orphans(self) -> None:
        """Give back claims granted here that nobody holds any more.

        A claim lost by its holder while its session lived on (the server fell
        silent for a while, or the event loop stalled) still has its node;
        releasing it returns the job at once instead of when the session ends.
        """
        now = time.monotonic()
        for name, held in list(self._granted.items()):
            claim = (
                self._held.get(self._entries[name].uuid)
                if name in self._entries
                else None
            )
            if claim is not None and claim.token == held.token and claim.held:
                continue
            if now - held.granted_at < _ORPHAN_AGE:
                continue
            try:
                released = await self._try_finish(name, Finish.ABANDON, held.attempt)
            except JobBoardError as error:
                logger.debug("could not release orphaned claim %s: %s", name, error)
                continue
            self._forget(name, held.token)
            if released:
                logger.debug("released orphaned claim %s, token %d", name, held.token)
        for name, (attempt, _) in list(self._unsure.items()):
            await self._release_unsure(name, attempt)

    async def _release_unsure(self, name: str, attempt: int) -> None:
        """Give back a claim whose grant was never heard of, if it was granted."""
        try:
            data, stat = await self._client.get(f"{self._claims}/{name}")
        except zk.NoNode:
            self._unsure.pop(name, None)
            return
        except JobBoardError:
            return
        ours = stat.ephemeral_owner == self._client.session_id
        if ours and _attempt_of(data) == attempt:
            try:
                await self._try_finish(name, Finish.ABANDON, attempt)
            except JobBoardError:
                return
            logger.debug("released claim %s, granted while its answer was lost", name)
        self._unsure.pop(name, None)

    def _refused(self, what: str, failed: zk.MultiFailed) -> JobBoardError:
        if isinstance(failed.error, zk.NoAuth):
            return JobBoardError(
                f"this connection's identity may not {what} on {self.url}"
            )
        return JobBoardError(f"ZooKeeper refused to {what} on {self.url}: {failed}")


@dataclass(slots=True)
class _Outgoing:
    """An event waiting for the data it carries to be read."""

    kind: EventKind
    entry: _Entry
    loading: asyncio.Future[Job | None] | None
    info: asyncio.Future[tuple[str | None, int | None]] | None
    #: For a trash: the cancel's reason, once read; the event is TRASHED if
    #: there is one.
    reason: asyncio.Future[str | None] | None = None


class _StaleVersion(Exception):
    """The view's version of a job was behind the server's; read it and retry."""


def _attempt_of(data: bytes) -> int | None:
    try:
        attempt = json.loads(data).get("attempt")
    except (ValueError, AttributeError):
        return None
    return attempt if isinstance(attempt, int) else None


def _dumps(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def _prefixes(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _parse_url(url: str) -> dict[str, Any]:
    options = read_options(
        url,
        {
            "session_timeout": _session_timeout,
            "timeout": positive_float,
            "max_job_size": positive_int,
            "lease": positive_float,
            "acl": _acl_option,
        },
    )
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ValueError(f"no ZooKeeper host in {mask_url(url)!r}")
    for host in hosts.split(","):
        port = host.rpartition(":")[2] if ":" in host.rpartition("]")[2] else "2181"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad host or port {host!r} in {mask_url(url)!r}")
    credentials = None
    if userinfo:
        user, sep, password = userinfo.partition(":")
        if not user or not sep:
            raise ValueError(f"credentials must be USER:PASSWORD in {mask_url(url)!r}")
        credentials = zk.Credentials(unquote(user), unquote(password))
    path = "/" + parts.path.strip("/") if parts.path.strip("/") else DEFAULT_PATH
    if any(not part or part in {".", ".."} for part in path[1:].split("/")):
        raise ValueError(f"bad board path {path!r} in {mask_url(url)!r}")
    limit = REQUEST_LIMIT - _REQUEST_OVERHEAD - 2 * len(path.encode())
    max_job_size = options.get("max_job_size", min(MAX_JOB_SIZE, limit))
    if max_job_size > limit:
        raise ValueError(
            f"option 'max_job_size' must be at most {limit} bytes on this "
            f"ZooKeeper board, not {max_job_size}"
        )
    session_timeout = options.get("session_timeout", DEFAULT_SESSION_TIMEOUT)
    return {
        "hosts": hosts,
        "path": path,
        "credentials": credentials,
        "private": options.get("acl") == "private",
        "session_timeout": session_timeout,
        "call_timeout": options.get("timeout", session_timeout),
        "max_job_size": max_job_size,
    }


def _session_timeout(name: str, raw: str) -> float:
    # Sent in milliseconds in a 32-bit field; servers grant far less anyway.
    value = positive_float(name, raw)
    if value > MAX_SESSION_TIMEOUT:
        raise ValueError(
            f"option {name!r} must be at most {MAX_SESSION_TIMEOUT:g} seconds, "
            f"not {raw!r}"
        )
    return value


def _acl_option(name: str, raw: str) -> str:
    if raw not in {"private", "read"}:
        raise ValueError(f"option {name!r} must be 'private' or 'read', not {raw!r}")
    return raw
