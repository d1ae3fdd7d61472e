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

from collections.abc import Callable
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


def create_app(board: JobBoard, *, books: BookStore | None = None) -> Starlette:
    """Return the dashboard for *board* as an ASGI application.

    *books* is the store that jobs' logbooks are read from; by default the
    board's own (``connect(url, books=...)``), if it has one. The board and
    the store stay the caller's to close. Every link and request of the page
    is relative, so the application may be mounted under any path:
    ``app.mount("/board", create_app(board))``.
    """
    try:
        from .app import build_app
    except ImportError as exc:
        raise _missing(exc) from exc
    return build_app(board, books=books)


async def serve(
    board: JobBoard,
    *,
    books: BookStore | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard for *board* with uvicorn until SIGINT or SIGTERM.

    *on_ready* is called with the dashboard's address once it listens (port 0
    picks a free port). Open event streams are ended when a signal arrives,
    so that the server stops at once. Raises ``OSError`` if the address
    cannot be listened on.
    """
    try:
        from .server import run_server
    except ImportError as exc:
        raise _missing(exc) from exc
    await run_server(board, books=books, host=host, port=port, on_ready=on_ready)
