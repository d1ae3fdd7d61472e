"""A live web dashboard for a job board: ``aiojobboard BOARD_URL serve``.

:func:`create_app` gives an ASGI application (Starlette) that shows the jobs
on a board, who holds them, the board's events as they happen, and each job's
logbook; it can cancel jobs. It runs alone, or mounted inside another
Starlette or FastAPI application. It has no authentication of its own: keep
it on localhost, or behind a proxy that authenticates.

Starlette and uvicorn are imported only when the dashboard is asked for; they
come with ``pip install 'aiojobboard[web]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..board import JobBoard
    from ..book.base import BookStore

__all__ = ["create_app", "serve"]


def _missing(exc: ImportError) -> ImportError:
    package = (exc.name or "").partition(".")[0] or "starlette and uvicorn"
    return ImportError(
        f"the aiojobboard dashboard needs {package}, which is not installed: "
        "pip install 'aiojobboard[web]'",
        name=exc.name,
    )


#: The host names a dashboard answers to unless told others.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def create_app(
    board: JobBoard,
    *,
    books: BookStore | None = None,
    allowed_hosts: Iterable[str] = LOCAL_HOSTS,
) -> Starlette:
    """Return the dashboard for *board* as an ASGI application.

    *books* is the store that jobs' logbooks are read from; by default the
    board's own (``connect(url, books=...)``), if it has one. The board and
    the store stay the caller's to close. Every link and request of the page
    is relative, so the application may be mounted under any path:
    ``app.mount("/board", create_app(board))``.

    A request whose Host header names a host outside *allowed_hosts* is
    refused with 400, so that another site cannot reach a dashboard on this
    machine by pointing its own name at it. Name the hosts it is served
    under, or ``["*"]`` when the enclosing application checks hosts itself.
    """
    try:
        from .app import build_app
    except ImportError as exc:
        raise _missing(exc) from exc
    return build_app(board, books=books, allowed_hosts=allowed_hosts)


async def serve(
    board: JobBoard,
    *,
    books: BookStore | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    allowed_hosts: Iterable[str] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard for *board* with uvicorn until SIGINT or SIGTERM.

    *on_ready* is called with the dashboard's address once it listens (port 0
    picks a free port). Open event streams are ended when a signal arrives,
    so that the server stops at once. Raises ``OSError`` if the address
    cannot be listened on. The dashboard answers to this machine's loopback
    names, to *host* unless it is a wildcard address, and to
    *allowed_hosts* (see :func:`create_app`).
    """
    try:
        from .server import run_server
    except ImportError as exc:
        raise _missing(exc) from exc
    hosts = [*LOCAL_HOSTS, *allowed_hosts]
    if host not in ("", "0.0.0.0", "::"):
        hosts.append(host)
    await run_server(
        board, books=books, host=host, port=port, hosts=hosts, on_ready=on_ready
    )
