"""Running the dashboard under uvicorn, stopped cleanly by SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Generator, Iterable

import uvicorn

from ..board import JobBoard
from ..book.base import BookStore
from .app import Streams, build_app

__all__ = ["run_server"]

#: Seconds that requests still running get to finish once a stop is asked for.
GRACE = 5


class _Server(uvicorn.Server):
    """uvicorn's server, with signals that stop it and end the event streams.

    uvicorn waits for open responses before it stops, and an event stream
    never ends by itself; its own signal handling also raises the signal
    again once stopped, which would turn a clean Ctrl-C into an interruption.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        streams: Streams,
        on_started: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self.streams = streams
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for number in signals:
            loop.add_signal_handler(number, self.stop, number)
        try:
            yield
        finally:
            for number in signals:
                loop.remove_signal_handler(number)

    def stop(self, number: int = signal.SIGTERM) -> None:
        """Stop serving: end the event streams, then let uvicorn shut down."""
        if self.should_exit and number == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C stops waiting for requests
        self.should_exit = True
        self.streams.close()


def listen(host: str, port: int) -> socket.socket:
    """Return a socket bound to *host* and *port*; ``OSError`` if it cannot be."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def address_of(sock: socket.socket) -> str:
    """The http:// address a browser reaches *sock* at."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


async def run_server(
    board: JobBoard,
    *,
    books: BookStore | None,
    host: str,
    port: int,
    hosts: Iterable[str],
    on_ready: Callable[[str], None] | None,
) -> None:
    app = build_app(board, books=books, allowed_hosts=hosts)
    streams: Streams = app.state.streams
    sock = listen(host, port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACE,
    )

    def started() -> None:
        if on_ready is not None:
            on_ready(address_of(sock))

    server = _Server(config, streams, started)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    finally:
        # Cancelled from outside: stop as a signal would, and wait for it.
        server.stop()
        with contextlib.suppress(Exception):
            await serving
        sock.close()
