"""The Redis adapter: ``redis://``, ``rediss://``, ``redis+sentinel://`` and
``redis+cluster://`` boards.

Each state change is one Lua script (see ``_redis_scripts``) that checks the
owner and the fencing token on the server, so clients never race between a
read and a write. Jobs are kept in sorted sets scored by priority then
sequence, so claiming, renewing and consuming cost the same on a board of a
hundred jobs as on one of a hundred thousand. Leases are deadlines judged by
the server's clock.

Events travel over one pub/sub channel per board. Pub/sub loses messages
across a reconnect, so each connection also sweeps due leases and wakes its
waiters on a timer: a lost message can delay a wake-up, never lose a job.

Calls that run together are sent together: concurrent posts, ``claim_next``
calls, finishing calls and checks for unclaimed jobs on one connection are
gathered into one script call each, which keeps many consumers in one process
from queueing behind each other's round trips.

The client retries a call whose connection failed. A script that ran but whose
reply was lost must not change the board twice, so every changing script
carries a request id and answers a repeated id with its first answer.

With the ``replicas`` option each changing script is followed, in the same
round trip, by a ``WAIT`` for that many replicas; a post or claim they did not
confirm in time fails (a claim is given back first), a finish is logged.

On a Redis Cluster every key of a board shares one hash tag, so the whole
board lives in one slot: each script runs on the master that owns it, routed
by its first key, and the same scripts serve a single server and a cluster.
Boards of different namespaces spread over the masters.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

from .._connect import mask_url, positive_float, positive_int, read_options
from ..board import DEFAULT_LEASE, MAX_JOB_SIZE, JobBoard
from ..claims import Claim, Finish, Grant
from ..errors import ConnectionLost, JobBoardError, NotFound, NotOwner, UnclaimableJob
from ..events import EventKind, JobEvent
from ..jobs import Job, JobState, JobStatus, Posting
from ..presence import WorkerInfo
from . import _redis_scripts as scripts

if TYPE_CHECKING:
    from ..book.base import BookStore

__all__ = ["RedisBoard"]

logger = logging.getLogger("aiojobboard.boards.redis")

#: How many jobs ``iterjobs`` reads per round trip.
PAGE_SIZE = 500
#: The most calls of one kind gathered into one script call.
MAX_BATCH = 256
#: The most missed posts delivered after a reconnect, per priority.
CATCH_UP_LIMIT = 10_000
#: How often at most a connection sweeps due leases, in seconds.
SWEEP_EVERY = 1.0
#: Seconds a presence record outlives its connection's last refresh.
PRESENCE_TTL = 10.0
#: The least time between two refreshes of presence that changed, in seconds.
PRESENCE_EVERY = 1.0
_PRIORITY_SPAN = 2**50
#: How many garbage keys a connection remembers having warned of.
_WARNED_KEPT = 10_000

_T = TypeVar("_T")
_R = TypeVar("_R")


def _namespace(name: str, raw: str) -> str:
    if not raw or any(char in raw for char in "{}\r\n"):
        raise ValueError(
            f"option {name!r} must be a non-empty name without braces, not {raw!r}"
        )
    return raw


def _interval(name: str, raw: str) -> float:
    # Below the clock's resolution redis-py checks health in the middle of its
    # own handshake, and reads the answers out of order.
    value = positive_float(name, raw)
    if value < 0.001:
        raise ValueError(f"option {name!r} must be at least 0.001 s, not {raw!r}")
    return value


def _count(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise ValueError(f"option {name!r} must be a whole number >= 0, not {raw!r}")
    return int(raw)


def _text(name: str, raw: str) -> str:
    if not raw:
        raise ValueError(f"option {name!r} must not be empty")
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in {"true", "false", "1", "0", "yes", "no"}:
        raise ValueError(f"option {name!r} must be true or false, not {raw!r}")
    return value in {"true", "1", "yes"}


def _cert_reqs(name: str, raw: str) -> str:
    if raw not in {"none", "optional", "required"}:
        raise ValueError(
            f"option {name!r} must be none, optional or required, not {raw!r}"
        )
    return raw


_OPTIONS: dict[str, Callable[[str, str], Any]] = {
    "namespace": _namespace,
    "lease": positive_float,
    "max_job_size": positive_int,
    "max_connections": positive_int,
    "pool_timeout": positive_float,
    "socket_timeout": positive_float,
    "connect_timeout": positive_float,
    "health_check_interval": _interval,
    "retries": _count,
    "reconcile": positive_float,
    "replicas": _count,
    "replica_timeout": positive_float,
}
_TLS_OPTIONS: dict[str, Callable[[str, str], Any]] = {
    "ssl_ca_certs": _text,
    "ssl_certfile": _text,
    "ssl_keyfile": _text,
    "ssl_cert_reqs": _cert_reqs,
    "ssl_check_hostname": _flag,
}


@dataclass(frozen=True, slots=True)
class _Settings:
    """Everything a board's URL says, checked."""

    scheme: str
    hosts: list[tuple[str, int]]
    db: int
    service: str | None
    username: str | None
    password: str | None = field(repr=False)
    namespace: str = "default"
    lease: float = DEFAULT_LEASE
    max_job_size: int = MAX_JOB_SIZE
    max_connections: int = 64
    pool_timeout: float = 10.0
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    health_check_interval: float = 10.0
    retries: int = 3
    reconcile: float = 5.0
    replicas: int = 0
    replica_timeout: float = 1.0
    tls: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas and self.replica_timeout >= self.socket_timeout:
            raise ValueError(
                f"option 'replica_timeout' must be below 'socket_timeout' "
                f"({self.socket_timeout:g}), not {self.replica_timeout:g}: the "
                f"wait for replicas happens within the reply"
            )

    @classmethod
    def parse(cls, url: str) -> _Settings:
        scheme = url.partition("://")[0].lower()
        allowed = dict(_OPTIONS)
        if scheme == "rediss":
            allowed |= _TLS_OPTIONS
        try:
            options = read_options(url, allowed)
        except ValueError as exc:
            if scheme != "rediss" and any(name in str(exc) for name in _TLS_OPTIONS):
                if scheme == "redis+cluster":
                    raise ValueError(f"{exc}; redis+cluster:// has no TLS") from None
                raise ValueError(f"{exc}; TLS options need a rediss:// URL") from None
            raise
        tls = {name: options.pop(name) for name in _TLS_OPTIONS if name in options}
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        path = [piece for piece in parts.path.split("/") if piece]
        service = None
        if scheme == "redis+sentinel":
            if not path:
                raise ValueError(
                    f"a redis+sentinel:// URL names the service after the hosts, "
                    f"as in redis+sentinel://host:26379/mymaster: {mask_url(url)!r}"
                )
            service = path.pop(0)
        elif scheme == "redis+cluster":
            if path:
                raise ValueError(
                    f"a redis+cluster:// URL has no path, as a cluster has only "
                    f"database 0, not {'/'.join(path)!r}, in {mask_url(url)!r}"
                )
            if "replicas" in options:
                raise ValueError(
                    "option 'replicas' is not available on redis+cluster://: "
                    "the cluster client cannot send WAIT on a script's connection"
                )
        if options.get("max_connections", 2) < 2:
            raise ValueError(
                "option 'max_connections' must be at least 2: the event channel "
                "holds one"
            )
        return cls(
            scheme=scheme,
            hosts=_hosts(netloc, 26379 if service else 6379, url),
            db=_db(path, url),
            service=service,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            **options,
        )

    def connection_kwargs(self) -> dict[str, Any]:
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), self.retries)
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "health_check_interval": self.health_check_interval,
            "retry": retry,
            "decode_responses": True,
            "max_connections": self.max_connections,
            "timeout": self.pool_timeout,
        }
        if self.scheme == "rediss":
            kwargs["connection_class"] = aioredis.SSLConnection
            kwargs.update(self.tls)
        elif self.scheme == "redis+cluster":
            del kwargs["db"], kwargs["timeout"]
        return kwargs


def _hosts(netloc: str, default_port: int, url: str) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.split(","):
        host, sep, port = item.rpartition(":") if "]" not in item[-1:] else ("", "", "")
        if not sep:
            host, port = item, str(default_port)
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port in {mask_url(url)!r}")
        hosts.append((host, int(port)))
    return hosts


def _db(path: list[str], url: str) -> int:
    if not path:
        return 0
    if len(path) > 1 or not path[0].isdigit():
        raise ValueError(
            f"the path of a Redis URL is a database number, not "
            f"{'/'.join(path)!r}, in {mask_url(url)!r}"
        )
    return int(path[0])


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection instead of failing."""


class _Gatherer(Generic[_T, _R]):
    """Send calls that arrive while one is in flight together, as one call.

    *send* takes up to :data:`MAX_BATCH` items and answers one result per
    item. One send runs at a time; calls that arrive meanwhile wait for the
    next, which carries them all.
    """

    def __init__(self, send: Callable[[list[_T]], Awaitable[list[_R]]]) -> None:
        self._send = send
        self._waiting: list[tuple[_T, asyncio.Future[_R]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, item: _T) -> _R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[_R] = loop.create_future()
        self._waiting.append((item, answer))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        # A caller cancelled here cancels only its own answer; the send goes on
        # for the others, and skips answers that are already done.
        return await answer

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._send_one(batch)
        finally:
            self._sender = None

    async def _send_one(self, batch: list[tuple[_T, asyncio.Future[_R]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as exc:
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except BaseException:
            for _, answer in batch:
                answer.cancel()
            raise
        for (_, answer), result in zip(batch, results, strict=True):
            if not answer.done():
                answer.set_result(result)


@dataclass(frozen=True, slots=True)
class _NextRequest:
    owner: str
    lease_ms: int


@dataclass(frozen=True, slots=True)
class _FinishRequest:
    uuid: str
    owner: str
    token: int | None
    how: Finish


_KINDS = {kind.value: kind for kind in EventKind}


class RedisBoard(JobBoard):
    """A connection to a board kept in Redis.

    URL: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]?namespace=NAME`` with
    options ``lease``, ``max_job_size``, ``max_connections``, ``pool_timeout``,
    ``socket_timeout``, ``connect_timeout``, ``health_check_interval``,
    ``retries``, ``reconcile`` (seconds between full re-checks of waiters),
    ``replicas`` (how many replicas must confirm each change, 0 by default)
    and ``replica_timeout`` (how long to wait for them, in seconds);
    ``rediss://`` adds TLS with ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_cert_reqs`` and ``ssl_check_hostname``;
    ``redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`` finds the
    master through Sentinel; ``redis+cluster://HOST:PORT[,HOST:PORT...]``
    finds a Redis Cluster's masters from any of the nodes named, and takes
    the options of ``redis://`` but ``replicas``.
    """

    def __init__(
        self,
        url: str,
        settings: _Settings,
        clients: list[aioredis.Redis | RedisCluster],
        *,
        books: BookStore | None = None,
    ) -> None:
        super().__init__(
            url,
            lease=settings.lease,
            max_job_size=settings.max_job_size,
            books=books,
        )
        self._settings = settings
        self._client = client = clients[0]
        self._sentinels = clients[1:]
        #: Room for commands on a cluster client, whose pools fail when full
        #: instead of waiting; the event channel holds one connection.
        self._room = (
            asyncio.Semaphore(settings.max_connections - 1)
            if isinstance(client, RedisCluster)
            else None
        )
        self._prefix = f"ajb:{{{settings.namespace}}}:"
        self._keys = [self._prefix + "all"]
        self._channel = self._prefix + "events"
        self._requests = (f"{secrets.token_hex(6)}.{n}" for n in itertools.count())
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in scripts.__all__
        }
        # On a cluster this stays plain PUBLISH/SUBSCRIBE rather than sharded
        # pub/sub: Redis 7 carries a plain message to every node, so the
        # scripts and the listener stay the same for every scheme, and the
        # cluster client subscribes on the node of the channel's slot. Sharded
        # pub/sub would save the cluster that broadcast but needs other
        # commands in the scripts and another way of reading in the client.
        self._pubsub = client.pubsub()
        self._tasks: list[asyncio.Task[None]] = []
        #: The highest sequence this connection has heard of.
        self._last_seq = 0
        #: The name of the life of the board's data this connection knows.
        self._epoch = ""
        #: The keys already warned of as holding no job.
        self._warned: set[str] = set()
        #: Posts the last catch-up delivered, in case a message tells again.
        self._caught_up: set[str] = set()
        self._next = _Gatherer[_NextRequest, tuple[Job, Grant] | None](
            self._claim_batch
        )
        self._finishes = _Gatherer[_FinishRequest, str](self._finish_batch)
        self._posts = _Gatherer[Posting, Job](self._post_many)
        self._probes = _Gatherer[None, bool](self._probe)
        #: This connection's name among the presence records.
        self._presence_id = secrets.token_hex(8)
        self._presence_ttl = PRESENCE_TTL
        self._announced: set[str] = set()
        self._announced_at = -math.inf
        self._announced_version = -1

    # -- opening and closing --------------------------------------------------

    @classmethod
    async def from_url(cls, url: str, *, books: BookStore | None = None) -> Self:
        settings = _Settings.parse(url)
        board = cls(url, settings, _clients(settings), books=books)
        try:
            await board._open()
        except BaseException:
            await board._close()
            raise
        return board

    async def _open(self) -> None:
        with self._translated():
            for script in self._scripts.values():
                await self._client.script_load(script.script)
            await self._pubsub.subscribe(self._channel)
            while True:
                message = await self._pubsub.get_message(timeout=self._timeout)
                if message is None:
                    raise rexc.TimeoutError(f"no answer to SUBSCRIBE {self._channel}")
                if message["type"] == "subscribe":
                    break
            found = await self._run_json("CATCH_UP", 2**53, 0, "", _fresh_name())
            self._epoch, self._last_seq = found[0], int(found[1])
        name = self._url
        self._tasks = [
            asyncio.create_task(self._listen(), name=f"aiojobboard events {name}"),
            asyncio.create_task(self._reconcile(), name=f"aiojobboard sweep {name}"),
        ]
        logger.debug("connected to %s as %s", self._url, self._prefix)

    async def _close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            # The client may turn a cancellation into a timeout of its own,
            # which the task's loop then survives: cancel until it ends.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
        if self._announced:
            # Withdrawn at once; if this fails, the records' deadline does it.
            with suppress(JobBoardError, TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await self._run("PRESENCE", 0, 0, *self._announced)
            self._announced = set()
        with suppress(rexc.RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        for client in [self._client, *self._sentinels]:
            with suppress(rexc.RedisError, rexc.RedisClusterException, OSError):
                if isinstance(client, RedisCluster):
                    await client.aclose()
                else:
                    await client.aclose(close_connection_pool=True)

    @property
    def _timeout(self) -> float:
        return self._settings.socket_timeout

    # -- the edge: one mapping of Redis errors --------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (
            rexc.AuthenticationError,
            rexc.AuthenticationWrongNumberOfArgsError,
        ) as exc:
            # Not a server that is away: trying again would not help.
            who = self._settings.username or "default"
            raise JobBoardError(
                f"Redis for {self._url!r} refused the credentials of user "
                f"{who!r}: {exc}"
            ) from exc
        except rexc.NoPermissionError as exc:
            who = self._settings.username or "default"
            raise JobBoardError(
                f"Redis for {self._url!r} does not let user {who!r} use the "
                f"board's keys and channel {self._prefix}*: {exc}"
            ) from exc
        except (
            rexc.ConnectionError,
            rexc.TimeoutError,
            rexc.BusyLoadingError,
            # The cluster client raises this when no node it knows answers, or
            # when no master serves the board's slot.
            rexc.RedisClusterException,
        ) as exc:
            raise ConnectionLost(
                f"Redis for {self._url!r} could not be reached: {exc}"
            ) from exc
        except rexc.RedisError as exc:
            raise JobBoardError(f"Redis for {self._url!r} failed: {exc}") from exc

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Wait for a free connection, as the pool of a single server does."""
        if self._room is None:
            yield
            return
        try:
            async with asyncio.timeout(self._settings.pool_timeout):
                await self._room.acquire()
        except TimeoutError:
            raise rexc.ConnectionError(
                f"no connection became free within {self._settings.pool_timeout}s"
            ) from None
        try:
            yield
        finally:
            self._room.release()

    async def _run(self, name: str, *args: Any) -> Any:
        with self._translated():
            async with self._turn():
                return await self._scripts[name](
                    keys=self._keys, args=[self._prefix, *args]
                )

    async def _run_json(self, name: str, *args: Any) -> list[Any]:
        return _listed(await self._run(name, *args))

    async def _change(self, name: str, *args: Any) -> tuple[list[Any], bool]:
        """Run a script that changes the board; say whether replicas confirmed it.

        Without the ``replicas`` option nothing is waited for. With it, the
        script and a ``WAIT`` travel in one round trip on one connection, so
        that the count ``WAIT`` answers is of replicas holding this change.
        """
        wanted = self._settings.replicas
        if not wanted:
            return await self._run_json(name, *args), True
        client = self._client
        assert not isinstance(client, RedisCluster)
        script = self._scripts[name]
        wait_ms = _ms(self._settings.replica_timeout)
        with self._translated():
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(script.sha, 1, *self._keys, self._prefix, *args)
                    pipe.execute_command("WAIT", wanted, wait_ms)
                    answer, confirmed = await pipe.execute(raise_on_error=False)
                # A server that never saw the script (a promoted replica) runs
                # nothing and says so; load it and send the call again.
                if not isinstance(answer, rexc.NoScriptError):
                    break
                await client.script_load(script.script)
            for reply in (answer, confirmed):
                if isinstance(reply, Exception):
                    raise reply
        return _listed(answer), confirmed >= wanted

    def _unconfirmed(self, what: str, then: str) -> ConnectionLost:
        return ConnectionLost(
            f"{what} reached the primary of {self._url!r}, but fewer than "
            f"{self._settings.replicas} replicas confirmed the change within "
            f"{self._settings.replica_timeout:g} s; {then}"
        )

    async def _give_back(self, held: list[tuple[str, str, int]]) -> None:
        """Abandon claims that replicas did not confirm, without waiting for them."""
        args: list[object] = [next(self._requests), len(held)]
        for uuid, owner, token in held:
            args += [uuid, owner, token, Finish.ABANDON.name]
        try:
            await self._run_json("FINISH", *args)
        except JobBoardError as exc:
            logger.debug("could not give back %d claims: %s", len(held), exc)

    # -- posting and reading --------------------------------------------------

    async def _post(self, posting: Posting) -> Job:
        return await self._posts.call(posting)

    async def _post_many(self, postings: Sequence[Posting]) -> list[Job]:
        # Single posts arrive here gathered too: one script call each way.
        args: list[object] = [next(self._requests), len(postings)]
        for posting in postings:
            base = (2 - int(posting.priority)) * _PRIORITY_SPAN
            args += [posting.uuid, base, posting.encoded]
        sequences, confirmed = await self._change("POST", *args)
        if not confirmed:
            raise self._unconfirmed(
                f"posting {len(postings)} job(s)",
                "a failover may lose them, and posting again may post them twice",
            )
        return [
            posting.to_job(self, int(sequence))
            for posting, sequence in zip(postings, sequences, strict=True)
        ]

    async def _get_job(self, uuid: str) -> Job | None:
        try:
            with self._translated():
                async with self._turn():
                    found: list[Any] = await self._client.hmget(
                        f"{self._prefix}job:{uuid}", ["p", "s"]
                    )
        except JobBoardError as exc:
            if not isinstance(exc.__cause__, rexc.ResponseError):
                raise
            self._garbage(uuid, exc)
            return None
        posting, sequence = found
        if posting is None:
            return None
        return self._decode(uuid, posting, sequence)

    async def _iter_jobs(self, only_unclaimed: bool) -> AsyncIterator[Job]:
        index = "ready" if only_unclaimed else "all"
        after = "-inf"
        while True:
            page = await self._run_json("PAGE", index, after, PAGE_SIZE)
            for i in range(0, len(page), 4):
                uuid, after, posting, sequence = page[i : i + 4]
                job = self._decode(uuid, posting, sequence)
                if job is not None:
                    yield job
            if len(page) < PAGE_SIZE * 4:
                return

    def _decode(self, uuid: str, posting: str, sequence: str) -> Job | None:
        try:
            decoded = Posting.decode(posting)
            if decoded.uuid != uuid:
                # Another job's posting copied here: that job once is enough.
                raise ValueError(f"it holds the posting of job {decoded.uuid}")
            return decoded.to_job(self, int(sequence))
        except (TypeError, ValueError) as exc:
            self._garbage(uuid, exc)
            return None

    def _garbage(self, uuid: str, exc: Exception) -> None:
        # Once per key and connection: each listing would repeat it.
        warned = uuid in self._warned
        if not warned and len(self._warned) < _WARNED_KEPT:
            self._warned.add(uuid)
        logger.log(
            logging.DEBUG if warned else logging.WARNING,
            "skipping job %s on %s: what is stored there is not a job (%s)",
            uuid,
            self._url,
            exc,
        )

    async def _get_status(self, uuid: str) -> tuple[JobState, str | None]:
        answer = await self._run("STATUS", uuid)
        if not answer:
            return JobState.COMPLETE, None
        if not answer[0]:
            return JobState.UNCLAIMED, None
        return JobState.CLAIMED, answer[0]

    async def _get_job_status(self, uuid: str) -> JobStatus | None:
        answer = await self._run("STATUS", uuid)
        if not answer:
            return None
        owner, attempt, token = answer
        if not owner:
            return JobStatus(JobState.UNCLAIMED, None, int(attempt), None)
        return JobStatus(JobState.CLAIMED, owner, int(attempt), int(token))

    async def _cancel(self, uuid: str, reason: str) -> None:
        answer, confirmed = await self._change(
            "CANCEL", next(self._requests), uuid, reason
        )
        if answer == ["gone"]:
            raise NotFound(f"job {uuid} is no longer on the board")
        if not confirmed:
            # As with a finish: the primary trashed it; cancelling again
            # would only find it gone.
            logger.warning(
                "the cancel of job %s on %s reached the primary, but fewer than "
                "%d replicas confirmed it within %g s: a failover may bring the "
                "job back",
                uuid,
                self._url,
                self._settings.replicas,
                self._settings.replica_timeout,
            )

    # -- presence -------------------------------------------------------------

    async def _get_workers(self) -> list[WorkerInfo]:
        found = []
        for text in await self._run_json("WORKERS"):
            info = WorkerInfo.decode(text)
            if info is None:
                logger.warning("ignoring a bad presence record on %s", self._url)
            else:
                found.append(info)
        return found

    async def _announce(self) -> None:
        """Refresh this connection's presence records when they are due.

        A change is written at most once a second; unchanged records are
        written again every third of their lifetime, so that they outlive the
        connection by no more than that lifetime. A connection that announces
        nothing writes nothing.
        """
        age = time.monotonic() - self._announced_at
        changed = self._presence_version != self._announced_version
        due = bool(self._announced) and age >= self._presence_ttl / 3
        if not (due or (changed and age >= PRESENCE_EVERY)):
            return
        version, records = self._presence_version, self._presence()
        kept = {f"{self._presence_id}/{info.name}": info.encode() for info in records}
        gone = self._announced - kept.keys()
        if kept or gone:
            args: list[object] = [_ms(self._presence_ttl), len(kept)]
            for name, record in kept.items():
                args += [name, record]
            # Should the call be cut short, close() withdraws these too.
            self._announced |= kept.keys()
            await self._run("PRESENCE", *args, *gone)
        self._announced = set(kept)
        self._announced_version = version
        self._announced_at = time.monotonic()

    async def _job_count(self) -> int:
        with self._translated():
            async with self._turn():
                count: int = await self._client.zcard(self._keys[0])
        return count

    async def _has_unclaimed(self) -> bool:
        # Every idle consumer asks at once when a job is posted: one asks Redis.
        return await self._probes.call(None)

    async def _probe(self, askers: list[None]) -> list[bool]:
        return [bool(await self._run("HAS_UNCLAIMED"))] * len(askers)

    # -- claiming -------------------------------------------------------------

    async def _claim(self, uuid: str, owner: str, lease: float) -> Grant:
        answer, confirmed = await self._change(
            "CLAIM", next(self._requests), uuid, owner, _ms(lease)
        )
        if answer[0] == "gone":
            raise NotFound(f"job {uuid} is no longer on the board")
        if answer[0] == "held":
            raise UnclaimableJob(
                f"job {uuid} is already claimed by {answer[1]!r}", owner=answer[1]
            )
        grant = Grant(int(answer[1]), int(answer[2]))
        if not confirmed:
            await self._give_back([(uuid, owner, grant.token)])
            raise self._unconfirmed(f"the claim of job {uuid}", "it was given back")
        return grant

    async def _claim_next(self, owner: str, lease: float) -> tuple[Job, Grant] | None:
        return await self._next.call(_NextRequest(owner, _ms(lease)))

    async def _claim_batch(
        self, requests: list[_NextRequest]
    ) -> list[tuple[Job, Grant] | None]:
        results: list[tuple[Job, Grant] | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        while pending:
            args: list[object] = [next(self._requests), len(pending)]
            for position in pending:
                args += [requests[position].owner, requests[position].lease_ms]
            answer, confirmed = await self._change("CLAIM_NEXT", *args)
            # The script grants the requests in order, as long as jobs last.
            granted = len(answer) // 5
            if granted and not confirmed:
                count = await self._give_back_batch(requests, results, pending, answer)
                raise self._unconfirmed(f"{count} claim(s)", "they were given back")
            again = []
            for j, position in enumerate(pending[:granted]):
                uuid, token, attempt, sequence, posting = answer[5 * j : 5 * j + 5]
                job = self._decode(uuid, posting, sequence)
                if job is None:
                    # The script's cheap check let it through; set it aside
                    # and claim another for the same request.
                    await self._run("QUARANTINE", uuid, token)
                    again.append(position)
                else:
                    results[position] = (job, Grant(int(token), int(attempt)))
            if not again:
                break
            pending = again + pending[granted:]
        return results

    async def _give_back_batch(
        self,
        requests: list[_NextRequest],
        results: list[tuple[Job, Grant] | None],
        pending: list[int],
        answer: list[Any],
    ) -> int:
        """Give back every claim of a batch, once replicas did not confirm one."""
        held = [
            (answer[5 * j], requests[position].owner, int(answer[5 * j + 1]))
            for j, position in enumerate(pending[: len(answer) // 5])
        ]
        for position, found in enumerate(results):
            if found is not None:
                held.append((found[0].uuid, requests[position].owner, found[1].token))
        await self._give_back(held)
        return len(held)

    async def _renew(self, claims: Sequence[Claim]) -> list[bool]:
        args: list[object] = [len(claims)]
        for claim in claims:
            args += [claim.job.uuid, claim.owner, claim.token, _ms(claim.lease)]
        answer, confirmed = await self._change("RENEW", *args)
        if not confirmed and any(answer):
            # The holders keep the deadlines replicas know of, and retry soon.
            raise self._unconfirmed(f"renewing {len(claims)} lease(s)", "retrying")
        return [bool(renewed) for renewed in answer]

    async def _finish(
        self, uuid: str, owner: str, token: int | None, how: Finish
    ) -> None:
        answer = await self._finishes.call(_FinishRequest(uuid, owner, token, how))
        if answer == "ok":
            return
        if answer == "gone":
            raise NotFound(f"job {uuid} is no longer on the board")
        if answer == "free":
            raise NotOwner(f"job {uuid} is not claimed")
        what, _, value = answer.partition(":")
        if what == "owner":
            raise NotOwner(f"job {uuid} is claimed by {value!r}, not {owner!r}")
        raise NotOwner(f"job {uuid} is now held under token {value}, not {token}")

    async def _finish_batch(self, requests: list[_FinishRequest]) -> list[str]:
        args: list[object] = [next(self._requests), len(requests)]
        for request in requests:
            token = "" if request.token is None else request.token
            args += [request.uuid, request.owner, token, request.how.name]
        answers, confirmed = await self._change("FINISH", *args)
        if not confirmed and "ok" in answers:
            # The work is done and the primary has it: failing the caller would
            # only make it finish again. Only an operator can act on this.
            logger.warning(
                "%d consumes, abandons or trashes on %s reached the primary, but "
                "fewer than %d replicas confirmed them within %g s: a failover "
                "may bring their jobs back",
                answers.count("ok"),
                self._url,
                self._settings.replicas,
                self._settings.replica_timeout,
            )
        return answers

    # -- events and the reconcile timer ---------------------------------------

    async def _listen(self) -> None:
        """Hand each message of the board's channel to this connection's waiters.

        The client subscribes again by itself after a reconnect; the
        confirmation it then receives means messages may have been missed, so
        every waiter is woken to look again.
        """
        failing = behind = False
        while not self._closed:
            try:
                if behind:
                    await self._catch_up()
                    behind = False
                message = await self._pubsub.get_message(timeout=1.0)
            except (rexc.RedisError, OSError, JobBoardError) as exc:
                if not failing:
                    logger.warning(
                        "lost the event channel of %s, reconnecting: %s", self._url, exc
                    )
                failing = True
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            if message["type"] == "subscribe":
                if failing:
                    logger.warning("reconnected the event channel of %s", self._url)
                failing = False
                behind = True
            elif message["type"] == "message":
                self._on_message(message["data"])

    async def _catch_up(self) -> None:
        """After a reconnect, deliver what the lost messages would have said.

        Waiters are woken to look again. Jobs posted meanwhile are delivered
        as POSTED, from the board itself, so that ``iterjobs(follow=True)``
        does not miss them; a job that was abandoned or expired meanwhile is
        seen by the next snapshot or claim, not by a running follower.
        """
        self._resync()
        found = await self._run_json(
            "CATCH_UP", self._last_seq, CATCH_UP_LIMIT, self._epoch, _fresh_name()
        )
        self._epoch, self._last_seq = found[0], int(found[1])
        jobs = []
        for i in range(2, len(found), 3):
            job = self._decode(found[i], found[i + 2], found[i + 1])
            if job is not None:
                jobs.append(job)
        jobs.sort(key=lambda job: (-job.priority, job.sequence))
        # Messages after the reconnect may tell of some of these again.
        self._caught_up = {job.uuid for job in jobs}
        for job in jobs:
            self._deliver(JobEvent(EventKind.POSTED, job.uuid, job=job))
        logger.debug("caught up on %d posts on %s", len(jobs), self._url)

    def _on_message(self, data: str) -> None:
        try:
            records = json.loads(data)
        except ValueError as exc:
            logger.warning("ignoring a bad event on %s: %r (%s)", self._url, data, exc)
            return
        for record in records:
            event = self._event_of(record)
            if event is not None:
                self._deliver(event)

    def _event_of(self, record: list[Any]) -> JobEvent | None:
        try:
            name, uuid, number, rest, *more = record
            kind = _KINDS[name]
            if kind is EventKind.CLAIMED and not self._subscriptions:
                # Only iterators read CLAIMED; no waiter is woken by it.
                return None
            if kind is not EventKind.POSTED:
                # A cancel's TRASHED event adds its reason; '' is no owner.
                reason = str(more[0]) if more else None
                if not rest:
                    return JobEvent(kind, uuid, reason=reason)
                return JobEvent(
                    kind, uuid, owner=rest, token=int(number), reason=reason
                )
            sequence = int(number)
            if self._caught_up and uuid in self._caught_up:
                self._caught_up.discard(uuid)
                return None
            self._last_seq = max(self._last_seq, sequence)
            # Only an iterator needs the job itself; waiters need the notice.
            if not self._subscriptions:
                return JobEvent(kind, uuid)
            job = Posting.decode(rest).to_job(self, sequence)
            return JobEvent(kind, uuid, job=job)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning(
                "ignoring a bad event on %s: %r (%s)", self._url, record, exc
            )
            return None

    async def _reconcile(self) -> None:
        """Sweep due leases often enough to announce expiries on time.

        Every ``reconcile`` seconds, also wake every waiter to look again, in
        case a message was lost.
        """
        resynced = time.monotonic()
        while not self._closed:
            try:
                wait_ms = await self._sweep()
                await self._announce()
            except JobBoardError as exc:
                logger.debug("could not sweep leases on %s: %s", self._url, exc)
                wait_ms = -1
            delay = SWEEP_EVERY if wait_ms < 0 else min(SWEEP_EVERY, wait_ms / 1000)
            if time.monotonic() - resynced >= self._settings.reconcile:
                resynced = time.monotonic()
                self._resync()
            await asyncio.sleep(min(delay + 0.005, self._settings.reconcile))

    async def _sweep(self) -> int:
        """Expire due leases; lose held claims whose jobs were cancelled.

        The check of held claims catches a cancel whose event this connection
        missed, within a sweep. Answers ms to the next lease deadline, or -1.
        """
        held = list(self._held.values())
        answer = await self._run_json("SWEEP", 100, *(c.job.uuid for c in held))
        for claim, reason in zip(held, answer[1:], strict=True):
            if reason:
                self._lose_to_cancel(claim, str(reason))
        return int(answer[0])


def _listed(answer: str) -> list[Any]:
    found = json.loads(answer)
    # Lua's JSON encoder cannot tell an empty list from an empty object.
    return found if isinstance(found, list) else []


def _fresh_name() -> str:
    return secrets.token_hex(8)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _clients(settings: _Settings) -> list[aioredis.Redis | RedisCluster]:
    """The client for the board's server or cluster, then any Sentinel clients."""
    kwargs = settings.connection_kwargs()
    if settings.scheme == "redis+cluster":
        nodes = [ClusterNode(host, port) for host, port in settings.hosts]
        return [RedisCluster(startup_nodes=nodes, **kwargs)]
    if settings.service is None:
        host, port = settings.hosts[0]
        pool = BlockingConnectionPool(host=host, port=port, **kwargs)
        return [aioredis.Redis.from_pool(pool)]
    sentinel_kwargs = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        settings.hosts, sentinel_kwargs=sentinel_kwargs
    )
    client: aioredis.Redis = sentinel.master_for(
        settings.service, connection_pool_class=_BlockingSentinelPool, **kwargs
    )
    return [client, *sentinel.sentinels]
