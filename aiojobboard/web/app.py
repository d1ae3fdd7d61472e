"""The dashboard's ASGI application: a JSON API over one board, and its page.

Every answer is JSON, errors included (``{"error": "..."}``): a board's own
message where it has one, which never holds a password, and never a
traceback. The event stream is Server-Sent Events; each stream ends when its
client goes, when the board is closed, or when :meth:`Streams.close` is
called, as ``serve()`` does on SIGINT so that the server stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from datetime import UTC, datetime
from importlib import resources
from typing import Any, cast

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._records import book_record, job_record, worker_record
from .._records import event_record as _event_record
from ..board import MAX_REASON, JobBoard
from ..book.base import BookStore
from ..errors import BoardClosed, ConnectionLost, JobBoardError, NotFound
from ..events import EventKind, JobEvent
from ..jobs import Job, JobState, JobStatus
from . import LOCAL_HOSTS

__all__ = ["EventStream", "Streams", "build_app", "event_record"]

logger = logging.getLogger("aiojobboard.web")

#: How many jobs /api/jobs lists when the request names no limit.
DEFAULT_LIMIT = 500
#: The most jobs /api/jobs lists at once.
MAX_LIMIT = 5000
#: The largest cancel request body accepted, in bytes.
MAX_BODY = 4096
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE = 15.0
#: How many job statuses are asked of the board at once.
STATUS_BATCH = 64

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

# The page needs nothing from elsewhere: no CDN, no inline script or style.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class Refused(Exception):
    """The request is refused before the board is asked; the message says why."""

    status = 400


class UnsupportedMediaType(Refused):
    status = 415


class Forbidden(Refused):
    status = 403


Endpoint = Callable[[Request], Awaitable[Response]]


def build_app(
    board: JobBoard,
    *,
    books: BookStore | None = None,
    allowed_hosts: Iterable[str] = LOCAL_HOSTS,
) -> Starlette:
    """Build the dashboard application; see :func:`aiojobboard.web.create_app`."""
    if not isinstance(board, JobBoard):
        raise TypeError(f"expected a JobBoard, not {type(board).__name__}")
    hosts = _host_names(allowed_hosts)
    api = _Api(board, books if books is not None else board.books)

    routes = [
        Route("/", _static("index.html"), methods=["GET", "HEAD"]),
        Route("/app.js", _static("app.js"), methods=["GET", "HEAD"]),
        Route("/app.css", _static("app.css"), methods=["GET", "HEAD"]),
        Route("/api/board", _answer(api.board_info), methods=["GET"]),
        Route("/api/jobs", _answer(api.list_jobs), methods=["GET"]),
        Route("/api/jobs/{uuid}", _answer(api.job_detail), methods=["GET"]),
        Route("/api/jobs/{uuid}/cancel", _answer(api.cancel), methods=["POST"]),
        Route("/api/workers", _answer(api.list_workers), methods=["GET"]),
        Route("/api/events", api.events, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        middleware=[] if hosts is None else [Middleware(_HostCheck, hosts=hosts)],
        lifespan=api.lifespan,
    )
    app.state.streams = api.streams
    return app


def _host_names(allowed: Iterable[str]) -> frozenset[str] | None:
    """The allowed host names, lowercased and without brackets; ``None``
    if ``"*"`` allows any."""
    if isinstance(allowed, str):
        raise TypeError("allowed_hosts must be a list of host names, not a str")
    names = set()
    for name in allowed:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"not a host name: {name!r}")
        if name == "*":
            return None
        names.add(name.strip().strip("[]").lower())
    return frozenset(names)


class _HostCheck:
    """Refuse requests whose Host header names a host not allowed.

    A page on another site can point its own name at 127.0.0.1 (DNS
    rebinding) and then read and act on a dashboard there as same-origin;
    its requests still carry that name in Host, which this refuses.
    """

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _host_of(Headers(scope=scope).get("host", ""))
            if host not in self.hosts:
                logger.warning(
                    "refused a request for host %r, which the dashboard does "
                    "not answer to (allowed: %s)",
                    host,
                    ", ".join(sorted(self.hosts)),
                )
                response = _error_response(
                    400,
                    f"this dashboard does not answer to host {host!r}; "
                    "allow it with allowed_hosts (aiojobboard serve "
                    "--allowed-host NAME)",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_of(header: str) -> str:
    """The host name of a Host header, without port or brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if ":" in header else header


class Streams:
    """The open event streams of one application, to end them together."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    def close(self) -> None:
        """End every open event stream, and refuse new ones."""
        self.stopping.set()


class _Api:
    def __init__(self, board: JobBoard, books: BookStore | None) -> None:
        self.board = board
        self.books = books
        self.streams = Streams()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.streams.close()

    async def board_info(self, request: Request) -> Any:
        return {
            "url": self.board.url,
            "jobs": await self.board.job_count(),
            "books": self.books is not None,
            "limit": DEFAULT_LIMIT,
        }

    async def list_jobs(self, request: Request) -> Any:
        query = request.query_params
        state = _state_filter(query.get("state", ""))
        name = query.get("name", "").strip().casefold()
        owner = query.get("owner", "").strip().casefold()
        limit = _limit(query.get("limit"))

        now = datetime.now(UTC)
        found: list[dict[str, Any]] = []
        batch: list[Job] = []

        async def flush() -> None:
            statuses = await asyncio.gather(
                *(_status_or_none(self.board, job) for job in batch)
            )
            for job, status in zip(batch, statuses, strict=True):
                if status is None:
                    continue
                if state is not None and status.state is not state:
                    continue
                if owner and owner not in (status.owner or "").casefold():
                    continue
                if len(found) < limit:
                    found.append(job_record(job, status, now))
            batch.clear()

        if state is JobState.CLAIMED or owner:
            # Held jobs are found through who holds them, so that a board of
            # many unclaimed jobs is not walked to find a few claimed ones.
            held = [
                job
                for job in await self._held_jobs(owner)
                if name in job.name.casefold()
            ]
            for start in range(0, len(held), STATUS_BATCH):
                batch.extend(held[start : start + STATUS_BATCH])
                await flush()
            return found

        only_unclaimed = state is JobState.UNCLAIMED
        async for job in self.board.iterjobs(only_unclaimed=only_unclaimed):
            if name and name not in job.name.casefold():
                continue
            batch.append(job)
            if len(batch) >= STATUS_BATCH:
                await flush()
                if len(found) >= limit:
                    break
        if batch and len(found) < limit:
            await flush()
        return found

    async def _held_jobs(self, owner: str) -> list[Job]:
        """The jobs that live consumers say they hold, in board order."""
        uuids = {
            uuid
            for worker in await self.board.workers()
            if owner in worker.name.casefold()
            for uuid in worker.holding
        }
        jobs = await asyncio.gather(*(_job_or_none(self.board, u) for u in uuids))
        return sorted(
            (job for job in jobs if job is not None),
            key=lambda job: (-int(job.priority), job.sequence),
        )

    async def job_detail(self, request: Request) -> Any:
        job = await self.board.get_job(_uuid(request))
        status = await self.board.status(job)
        record = job_record(job, status, datetime.now(UTC))
        record["details"] = dict(job.details)
        record["book"] = None
        record["book_error"] = None
        if job.book_uuid is not None:
            if self.books is None:
                record["book_error"] = (
                    "this dashboard has no book store to read the logbook from "
                    "(aiojobboard serve --books URL)"
                )
            else:
                try:
                    book = await self.books.get_logbook(job.book_uuid)
                except NotFound as exc:
                    record["book_error"] = str(exc)
                else:
                    record["book"] = book_record(book)
        return record

    async def cancel(self, request: Request) -> Any:
        _check_same_origin(request)
        media_type = request.headers.get("content-type", "").partition(";")[0]
        if media_type.strip().lower() != "application/json":
            raise UnsupportedMediaType(
                "a cancel request must have Content-Type: application/json"
            )
        reason = _reason(await _read_json(request))
        uuid = _uuid(request)
        job = await self.board.get_job(uuid)
        await self.board.cancel(job, reason=reason)
        logger.info("cancelled job %s from the dashboard: %r", uuid, reason)
        return {"uuid": uuid, "cancelled": True, "reason": reason}

    async def list_workers(self, request: Request) -> Any:
        return [worker_record(worker) for worker in await self.board.workers()]

    async def events(self, request: Request) -> Response:
        return EventStream(self.board, self.streams)


class EventStream(Response):
    """A Server-Sent Events response carrying a board's events.

    It opens with a ``ready`` event once the board subscription is in place,
    so that a client that loads the job list then misses nothing; then one
    ``message`` per board event, and a comment line when idle, which also
    finds out a client that left without a word.
    """

    media_type = "text/event-stream"

    def __init__(self, board: JobBoard, streams: Streams) -> None:
        super().__init__(headers={**API_HEADERS, "X-Accel-Buffering": "no"})
        # A stream has no length: its body goes on until it ends.
        self.raw_headers = [
            (key, value) for key, value in self.raw_headers if key != b"content-length"
        ]
        self.board = board
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.streams.stopping.is_set() or self.board.closed:
            await _error_response(503, "the dashboard is shutting down")(
                scope, receive, send
            )
            return
        # events() is an async generator; its first step subscribes.
        self._events = cast(AsyncGenerator[JobEvent, None], self.board.events())
        self._next: asyncio.Future[Any] = asyncio.ensure_future(anext(self._events))
        await asyncio.sleep(0)
        gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(receive))
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.streams.stopping.wait())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": self.raw_headers,
                }
            )
            await _send_text(send, "retry: 2000\n\nevent: ready\ndata: {}\n\n")
            if await self._pump(gone, stop, send):
                await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went while we wrote
        finally:
            pending = (self._next, gone, stop)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._events.aclose()

    async def _pump(
        self, gone: asyncio.Future[Any], stop: asyncio.Future[Any], send: Send
    ) -> bool:
        """Send events until the end; return whether the client is still there."""
        while True:
            done, _ = await asyncio.wait(
                {self._next, gone, stop},
                timeout=KEEPALIVE,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if gone in done:
                return False
            if stop in done:
                return True
            if self._next not in done:
                await _send_text(send, ": keep-alive\n\n")
                continue
            try:
                event = self._next.result()
            except StopAsyncIteration:
                return True  # the board was closed
            except JobBoardError as exc:
                logger.warning("event stream ended: %s", exc)
                return True
            data = json.dumps(event_record(event), default=_json_default)
            await _send_text(send, f"data: {data}\n\n")
            self._next = asyncio.ensure_future(anext(self._events))


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_text(send: Send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


# -- asking the board ---------------------------------------------------------


async def _job_or_none(board: JobBoard, uuid: str) -> Job | None:
    try:
        return await board.get_job(uuid)
    except NotFound:
        return None  # finished since its holder announced it


async def _status_or_none(board: JobBoard, job: Job) -> JobStatus | None:
    try:
        return await board.status(job)
    except NotFound:
        return None  # finished while the listing ran


# -- reading requests ---------------------------------------------------------


def _state_filter(text: str) -> JobState | None:
    if not text.strip():
        return None
    try:
        state = JobState[text.strip().upper()]
    except KeyError:
        state = JobState.COMPLETE
    if state is JobState.COMPLETE:
        raise Refused(f"state must be UNCLAIMED or CLAIMED, not {text!r}")
    return state


def _limit(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise Refused(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _uuid(request: Request) -> str:
    uuid = cast(str, request.path_params["uuid"])
    if not uuid.strip() or len(uuid) > 200:
        raise Refused("not a job uuid")
    return uuid


def _check_same_origin(request: Request) -> None:
    # Browsers say where a request comes from; a page on another site may
    # not act on the board through a user's browser.
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site requests may not change the board")


async def _read_json(request: Request) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(f"the request body is over {MAX_BODY} bytes")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(f"the request body is not JSON: {exc}") from None


def _reason(body: Any) -> str:
    if not isinstance(body, dict):
        raise Refused(f"the request body must be a JSON object, not {body!r:.40}")
    unknown = sorted(set(body) - {"reason"})
    if unknown:
        raise Refused(f"unknown field {unknown[0]!r}; a cancel takes 'reason'")
    reason = body.get("reason", "cancelled")
    if not isinstance(reason, str):
        raise Refused(f"reason must be a string, not {type(reason).__name__}")
    reason = reason.strip()
    if not reason:
        raise Refused("reason must not be empty")
    if len(reason) > MAX_REASON:
        raise Refused(f"reason must be at most {MAX_REASON} characters")
    return reason


# -- answering ----------------------------------------------------------------


def _static(name: str) -> Endpoint:
    content = resources.files(__package__).joinpath("static", name).read_bytes()
    media_type = STATIC[name]

    async def endpoint(request: Request) -> Response:
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    return endpoint


def _answer(handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """Wrap *handler*: its result becomes JSON, its errors JSON messages."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except Refused as exc:
            return _error_response(exc.status, str(exc))
        except NotFound as exc:
            return _error_response(404, str(exc))
        except (BoardClosed, ConnectionLost) as exc:
            return _error_response(503, str(exc))
        except (JobBoardError, ValueError) as exc:
            return _error_response(
                409 if isinstance(exc, JobBoardError) else 400, str(exc)
            )
        except Exception:
            logger.exception("dashboard request %s failed", request.url.path)
            return _error_response(500, "internal error; the server's log says more")
        return _json_response(result)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(exc.status_code, exc.detail, exc.headers)


def _error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return _json_response({"error": message}, status, headers)


def _json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps(data, default=_json_default, ensure_ascii=False)
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={**API_HEADERS, **(headers or {})},
    )


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, frozenset | set | tuple):
        return list(value)
    return str(value)


# -- records ------------------------------------------------------------------


def event_record(event: JobEvent) -> dict[str, Any]:
    """What the event stream says of *event*."""
    record = _event_record(event)
    job = event.job
    if job is not None and event.kind is EventKind.POSTED:
        unclaimed = JobStatus(JobState.UNCLAIMED, None, 0, None)
        record["job"] = job_record(job, unclaimed, datetime.now(UTC))
    return record
