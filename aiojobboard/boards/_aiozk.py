"""A thin layer over aiozk 0.32 that works around its sharp edges.

The ZooKeeper adapter talks to aiozk only through :class:`Client`. Each
workaround below was seen on aiozk 0.32.0 and is covered by a test in
``tests/test_zookeeper.py``:

- A failed multi transaction comes back as a falsy result instead of an
  error. :meth:`Client.multi` reads the per-operation answers and raises
  :class:`MultiFailed` naming the operation that failed and why.
- ``start()`` with no reachable server, and any call on a closed client, wait
  forever. Every call here runs under a deadline and raises
  :class:`~aiojobboard.errors.ConnectionLost` when it passes.
- ``close()`` while the server is unreachable stops half-way, leaving its
  heartbeat and connection behind. :meth:`Client.close` is shielded, bounded,
  and finishes the teardown itself.
- A watch callback still registered at close keeps the event loop from
  shutting down. No aiozk watch callbacks are used: node events reach the
  caller through one persistent recursive watch (ZooKeeper 3.6 and newer),
  which aiozk cannot register, and the callback table is cleared at close.
- aiozk notices a dropped TCP connection only when a heartbeat times out, and
  calls in flight then fail with its own ``TimeoutError``, reads included.
  Those errors become ``ConnectionLost``, and reads are tried again on the
  next connection within their deadline; :attr:`Client.last_contact` tells the
  adapter when the server last answered, so that it can fail safe on its own
  clock, and :meth:`Client.suspect` drops a silent connection at once. When
  the server hangs up (as it does on expiring a session), aiozk's reader stops
  without a word; the client reconnects at once instead of a heartbeat later.
- aiozk runs every read of every message under ``asyncio.wait_for``, a task
  per read, which costs a busy board most of its time; its connection is
  replaced by one that reads plainly.
- aiozk retries a request after a connection error, so a write that the
  server already applied could be applied twice (a job posted twice). Requests
  are sent once; the caller decides what an unanswered write means.
- ``ZKClient.send`` caches the stat of every path it touches, forever, and its
  watch dispatcher adds an empty entry for every path it is told about. Both
  are bypassed: requests go to the session directly.
- aiozk forgets authentication on reconnect. :class:`Client` sends the digest
  credentials again on every new connection, before any queued request, and
  never lets aiozk's request log show the password.
- aiozk logs every refused request (an ACL's ``NoAuth``, say) at ERROR with
  its traceback, then raises it; the adapter raises it translated, so those
  records are turned down to DEBUG, where they do not reach a command line's
  stderr.
- Its Lock keeps saying "held" after its session expired, its Lease(limit=1)
  admitted 10 clients of 10, and a cancelled ``Lock.acquire`` leaves its node
  behind; none of its recipes is used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiozk
import anyio
from aiozk import exc, protocol
from aiozk.connection import Connection
from aiozk.protocol.primitives import Int, UString
from aiozk.protocol.request import Request
from aiozk.protocol.response import Response
from aiozk.retry import RetryPolicy
from aiozk.states import States

from ..errors import ConnectionLost, JobBoardError

__all__ = [
    "ACL",
    "OPEN_ACL",
    "BadVersion",
    "Client",
    "Credentials",
    "MultiFailed",
    "NoAuth",
    "NoNode",
    "NodeEvent",
    "NodeExists",
    "NotEmpty",
    "Op",
    "digest_acl",
]

logger = logging.getLogger("aiojobboard.boards.zookeeper")

ACL = protocol.acl.ACL
#: Every right to anyone: the ACL of boards without credentials.
OPEN_ACL = protocol.UNRESTRICTED_ACCESS
NoNode = exc.NoNode
NodeExists = exc.NodeExists
BadVersion = exc.BadVersion
NotEmpty = exc.NotEmpty
NoAuth = exc.NoAuth

#: What ZooKeeper reports about a node under the persistent watch.
CREATED = protocol.WatchEvent.CREATED
DELETED = protocol.WatchEvent.DELETED
DATA_CHANGED = protocol.WatchEvent.DATA_CHANGED

_CONNECTION_ERRORS = (
    exc.ConnectError,
    exc.TimeoutError,
    exc.SessionLost,
    exc.SessionExpired,
    exc.ConnectionLoss,
    exc.FailedRetry,
    exc.UnfinishedRead,
    exc.OperationTimeout,
    ConnectionError,
    OSError,
)


#: The node errors that the adapter handles itself.
_EXPECTED = (exc.NoNode, exc.NodeExists, exc.BadVersion, exc.NotEmpty)


class _Demoted(logging.Filter):
    """Turn aiozk's ERROR for a request it then raises into a DEBUG record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Send exception: %s":
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("aiozk.session").addFilter(_Demoted())


class _AddWatchRequest(Request):  # type: ignore[misc]
    """ZooKeeper 3.6's addWatch, which aiozk does not know."""

    opcode = 106
    parts = (("path", UString), ("mode", Int))


class _AddWatchResponse(Response):  # type: ignore[misc]
    opcode = 106
    parts = ()


_PERSISTENT_RECURSIVE = 1
#: Requests that are safe to send again after a lost connection.
_READS = (
    protocol.GetDataRequest,
    protocol.ExistsRequest,
    protocol.GetChildren2Request,
    _AddWatchRequest,
)


class _Connection(Connection):  # type: ignore[misc]
    """aiozk's connection, reading each part of a message in one await.

    aiozk wraps every read of every message in ``asyncio.wait_for``, a task
    per read: three per message, the main cost of a busy board. A connection
    that stops halfway through a message is the watchdog's to notice.
    """

    async def _read(self, size: int = -1) -> bytes:
        try:
            data: bytes = await self.reader.readexactly(size)
        except asyncio.IncompleteReadError as error:
            raise exc.UnfinishedRead from error
        return data


class _AuthRequest(protocol.AuthRequest):  # type: ignore[misc]
    """aiozk's digest authentication, shown without its password.

    aiozk logs every request it sends, at DEBUG, as its fields.
    """

    def __str__(self) -> str:
        return f"AuthRequest(scheme={self.scheme}, auth=***)"


class _SendOnce(RetryPolicy):  # type: ignore[misc]
    """Refuse the second try of a request: a lost write must not be repeated."""

    def __init__(self) -> None:
        super().__init__(try_limit=None, sleep_func=lambda _: None)
        self._tried: set[int] = set()

    async def enforce(self, request: Any = None) -> None:
        key = id(request)
        if key in self._tried:
            self._tried.discard(key)
            raise exc.FailedRetry
        self._tried.add(key)

    def clear(self, request: Any) -> None:
        self._tried.discard(id(request))


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """A change to a node below the watched path."""

    kind: int
    path: str


class MultiFailed(Exception):
    """Raised when a multi transaction was refused; nothing of it was applied.

    ``index`` is the operation that failed, ``error`` ZooKeeper's reason for it
    (``NoNode``, ``NodeExists``, ``BadVersion``, ``NoAuth``...).
    """

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"operation #{index} failed: {type(error).__name__}")
        self.index = index
        self.error = error


class Op:
    """Builders of the operations of a multi transaction."""

    @staticmethod
    def create(
        path: str,
        data: bytes,
        acl: Sequence[Any],
        *,
        ephemeral: bool = False,
        sequential: bool = False,
    ) -> Any:
        request = protocol.CreateRequest(path=path, data=data, acl=list(acl))
        request.set_flags(ephemeral=ephemeral, sequential=sequential)
        return request

    @staticmethod
    def set_data(path: str, data: bytes, version: int) -> Any:
        return protocol.SetDataRequest(path=path, data=data, version=version)

    @staticmethod
    def delete(path: str, version: int) -> Any:
        return protocol.DeleteRequest(path=path, version=version)

    @staticmethod
    def check(path: str, version: int) -> Any:
        return protocol.CheckVersionRequest(path=path, version=version)


class Credentials(NamedTuple):
    """A digest identity, shown without its password."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password='***')"


def digest_acl(user: str, password: str, *, world_read: bool) -> list[Any]:
    """Return the ACL that gives *user* every right, and others reading if asked."""
    digest = hashlib.sha1(f"{user}:{password}".encode()).digest()
    identity = f"{user}:{base64.b64encode(digest).decode()}"
    acl = [
        ACL.make(
            "digest",
            identity,
            read=True,
            write=True,
            create=True,
            delete=True,
            admin=True,
        )
    ]
    if world_read:
        acl.append(protocol.WORLD_READABLE)
    return acl


class Client:
    """One ZooKeeper session, with deadlines on every call.

    *on_event* receives each change under the watched path, in the server's
    order, from the connection's reader; *on_state* receives ``"connected"``,
    ``"suspended"`` and ``"lost"`` (the session expired) as aiozk changes
    state. Both are called synchronously and must not block.
    """

    def __init__(
        self,
        hosts: str,
        *,
        session_timeout: float,
        call_timeout: float,
        credentials: tuple[str, str] | None,
        on_event: Callable[[NodeEvent], None],
        on_state: Callable[[str], None],
    ) -> None:
        self._zk = aiozk.ZKClient(
            hosts, session_timeout=session_timeout, retry_policy=_SendOnce()
        )
        self.call_timeout = call_timeout
        self._credentials = credentials
        self._on_event = on_event
        self._on_state = on_state
        self._closed = False
        #: When the request that last got an answer was sent (monotonic).
        self.last_contact = 0.0
        session = self._zk.session
        self._dispatch_state = session.event_dispatch
        # The connection captures the session's dispatcher when it is made, so
        # replacing it here, before start(), routes every event through us.
        session.event_dispatch = self._dispatch
        self._transition = session.state.transition_to
        session.state.transition_to = self._transition_to
        session.make_connection = self._make_connection

    # -- the session -----------------------------------------------------------

    @property
    def session_id(self) -> int | None:
        session_id: int | None = self._zk.session.session_id
        return session_id

    @property
    def session_timeout(self) -> float:
        """The session timeout that the server granted, in seconds."""
        return float(self._zk.session.timeout)

    @property
    def connected(self) -> bool:
        return bool(self._zk.session.state == States.CONNECTED)

    async def start(self) -> None:
        """Open the session; ConnectionLost if no server answers in time."""
        sent_at = time.monotonic()
        try:
            async with asyncio.timeout(self.call_timeout):
                await self._zk.session.start()
        except TimeoutError as error:
            await self.close()
            raise ConnectionLost(
                f"no ZooKeeper server answered within {self.call_timeout:g} s"
            ) from error
        except BaseException:
            await self.close()
            raise
        self.last_contact = sent_at

    async def wait_connected(self) -> None:
        """Wait until the session is usable; ConnectionLost after the deadline."""
        if self.connected:
            return
        try:
            async with asyncio.timeout(self.call_timeout):
                await self._zk.session.state.wait_for(States.CONNECTED)
        except TimeoutError as error:
            raise ConnectionLost(
                f"ZooKeeper did not come back within {self.call_timeout:g} s"
            ) from error

    async def close(self) -> None:
        """End the session, however the server fares, within a bounded time."""
        if self._closed:
            return
        self._closed = True
        session = self._zk.session
        # A callback left in this table keeps asyncio.run() from finishing.
        session.watch_callbacks.clear()
        with anyio.CancelScope(shield=True):
            try:
                async with asyncio.timeout(min(self.call_timeout, 5.0)):
                    await session.close()
            except (TimeoutError, *_CONNECTION_ERRORS, exc.ZKError) as error:
                logger.debug("closing the ZooKeeper session uncleanly: %r", error)
            finally:
                await self._finish_teardown()

    async def _finish_teardown(self) -> None:
        """Stop what aiozk's own close() leaves running when it gives up."""
        session = self._zk.session
        tasks = [session.repair_loop_task, session.heartbeat_task]
        if session.heartbeat_handle is not None:
            session.heartbeat_handle.cancel()
            session.heartbeat_handle = None
        conn = session.conn
        if conn is not None:
            conn.closing = True
            tasks.append(conn.read_loop_task)
            if conn.pending_count():
                conn.abort(exc.ConnectError)
            if conn.writer is not None:
                conn.writer.close()
        live = [task for task in tasks if task is not None and not task.done()]
        for task in live:
            task.cancel()
        if live:
            await asyncio.wait(live, timeout=1.0)
        session.closing = False
        session.started = False

    # -- calls ---------------------------------------------------------------

    async def send(self, request: Any) -> Any:
        """Send one request under the deadline; map connection trouble.

        A read is tried again on a new connection until the deadline; a write
        is sent once, since its answer, not the write, may be what was lost.
        """
        async with self._errors(request):
            while True:
                sent_at = time.monotonic()
                try:
                    response = await self._zk.session.send(request)
                except _CONNECTION_ERRORS:
                    if not isinstance(request, _READS) or self._closed:
                        raise
                    await asyncio.sleep(0.05)
                    await self._zk.session.state.wait_for(States.CONNECTED)
                    continue
                self.last_contact = max(self.last_contact, sent_at)
                return response

    def suspect(self) -> None:
        """Drop a connection that stopped answering, and reconnect now.

        aiozk waits two thirds of a session for a heartbeat before it gives up
        on a silent connection; the adapter's watchdog calls this sooner.
        """
        conn = self._zk.session.conn
        if conn is not None:
            self._reader_ended(conn)

    async def get(self, path: str) -> tuple[bytes, Any]:
        response = await self.send(protocol.GetDataRequest(path=path, watch=False))
        return bytes(response.data or b""), response.stat

    async def exists(self, path: str) -> Any | None:
        """Return the node's stat, or None if it does not exist."""
        try:
            response = await self.send(protocol.ExistsRequest(path=path, watch=False))
        except NoNode:
            return None
        return response.stat

    async def children(self, path: str) -> list[str]:
        request = protocol.GetChildren2Request(path=path, watch=False)
        response = await self.send(request)
        return list(response.children)

    async def create(self, path: str, data: bytes, acl: Sequence[Any]) -> None:
        """Create a persistent node; NodeExists if it is there already."""
        await self.send(Op.create(path, data, acl))

    async def multi(self, ops: Sequence[Any]) -> list[Any]:
        """Apply *ops* all together or not at all; MultiFailed says why not."""
        request = protocol.TransactionRequest()
        for op in ops:
            request.add(op)
        response = await self.send(request)
        answers: list[Any] = list(response.responses)
        for index, answer in enumerate(answers):
            # Operations before the failing one answer "rolled back" (code 0),
            # those after it "runtime inconsistency"; the real reason is the
            # one error that is neither.
            if isinstance(answer, Exception) and not isinstance(
                answer, exc.RolledBack | exc.RuntimeInconsistency
            ):
                raise MultiFailed(index, answer)
        return answers

    async def watch(self, path: str) -> None:
        """Watch every change below *path* until the connection ends."""
        request = _AddWatchRequest(path=path, mode=_PERSISTENT_RECURSIVE)
        await self.send(request)

    @contextlib.asynccontextmanager
    async def _errors(self, request: Any) -> AsyncIterator[None]:
        if self._closed:
            raise ConnectionLost("the ZooKeeper client is closed")
        name = type(request).__name__
        try:
            async with asyncio.timeout(self.call_timeout):
                yield
        except TimeoutError as error:
            raise ConnectionLost(
                f"ZooKeeper did not answer {name} within {self.call_timeout:g} s"
            ) from error
        except _CONNECTION_ERRORS as error:
            raise ConnectionLost(
                f"lost the connection to ZooKeeper during {name}: {error!r}"
            ) from error
        except exc.NoAuth as error:
            path = getattr(request, "path", "?")
            raise JobBoardError(
                f"ZooKeeper refused {name} on {path!r}: this connection's identity "
                "lacks the right"
            ) from error
        except _EXPECTED:
            raise
        except exc.ZKError as error:
            raise JobBoardError(f"ZooKeeper refused {name}: {error!r}") from error

    # -- what aiozk calls ----------------------------------------------------
    async def _make_connection(self, host: str, port: int) -> _Connection | None:
        session = self._zk.session
        conn = _Connection(
            host,
            port,
            watch_handler=session.event_dispatch,
            read_timeout=session.read_timeout,
        )
        try:
            await conn.connect()
        except (OSError, exc.ZKError, TimeoutError) as error:
            logger.debug(
                "could not connect to ZooKeeper at %s:%s: %r", host, port, error
            )
            return None
        return conn

    def _dispatch(self, event: Any) -> None:
        if event.type:
            self._on_event(NodeEvent(event.type, event.path))
        else:
            self._dispatch_state(event)

    def _transition_to(self, state: str) -> None:
        if state == States.CONNECTED:
            if self._credentials is not None:
                self._authenticate()
            # aiozk starts the connection's reader right after this returns.
            asyncio.get_running_loop().call_soon(self._mind_reader)
        self._transition(state)
        if not self._closed:
            self._on_state(str(state))

    def _mind_reader(self) -> None:
        conn = self._zk.session.conn
        reader = None if conn is None else conn.read_loop_task
        if reader is not None:
            reader.add_done_callback(lambda _: self._reader_ended(conn))

    def _reader_ended(self, conn: Any) -> None:
        """Act on a connection that the server closed, now rather than later.

        aiozk's reader stops quietly when the server hangs up (as it does when
        it expires the session), and only a heartbeat timing out, a third of
        the session later, would tell. Suspending now makes aiozk reconnect,
        and so learn at once whether the session survived.
        """
        session = self._zk.session
        if self._closed or session.closing or session.conn is not conn:
            return
        conn.abort(exc.ConnectError)
        if session.state == States.CONNECTED:
            logger.debug("ZooKeeper closed the connection; reconnecting")
            session.state.transition_to(States.SUSPENDED)

    def _authenticate(self) -> None:
        """Send the credentials ahead of every request queued on a new connection.

        ZooKeeper keeps authentication per connection; this runs before aiozk
        wakes the requests that waited for the connection, so they follow it.
        """
        assert self._credentials is not None
        user, password = self._credentials
        request = _AuthRequest(
            type=0, scheme="digest", auth=f"{user}:{password}".encode()
        )
        conn = self._zk.session.conn
        if conn is not None:
            future = conn.send(request)
            future.add_done_callback(_ignore_result)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
