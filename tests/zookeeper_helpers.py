"""Private ZooKeeper servers, ensembles and a TCP proxy for fault tests.

Each server runs from Debian's zookeeper package on free loopback ports, with
its data in a temporary folder, so that tests can stop, kill and restart it
without disturbing the shared server on 2181.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiojobboard as ajb

JAR = "/usr/share/java/zookeeper.jar"
LOGGING_JAR = "/usr/share/java/slf4j-simple.jar"
#: The session timeout of the suite's ZooKeeper boards: the server's minimum
#: is two ticks of the test servers' configuration, 1 s; this leaves room for
#: a loaded machine.
SUITE_SESSION = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_ruok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"ruok")
            return sock.recv(16) == b"imok"
    except OSError:
        return False


def mode_of(port: int) -> str | None:
    """Return "leader", "follower" or "standalone" for the server on *port*."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"srvr")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("Mode:"):
            return line.partition(":")[2].strip()
    return None


@dataclass
class Server:
    """One ZooKeeper server process, standalone or an ensemble member."""

    folder: Path
    port: int
    peers: str = ""
    myid: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def config(self) -> str:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            "tickTime=500",
            "minSessionTimeout=1000",
            "initLimit=20",
            "syncLimit=10",
            f"dataDir={data}",
            f"clientPort={self.port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr",
        ]
        if self.peers:
            (data / "myid").write_text(f"{self.myid}\n")
            lines.append(self.peers)
        path = self.folder / "zoo.cfg"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def start(self) -> None:
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115
        command = [
            "java",
            "-Xmx256m",
            "-cp",
            f"{JAR}:{LOGGING_JAR}",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            self.config(),
        ]
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        # "ruok" is answered before the server serves; "srvr" tells its mode
        # only once it does.
        while await asyncio.to_thread(mode_of, self.port) is None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"ZooKeeper on {self.port} exited; see {self.folder}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"ZooKeeper on {self.port} did not start")
            await asyncio.sleep(0.2)

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        await asyncio.to_thread(process.wait, 30)

    @property
    def mode(self) -> str | None:
        return mode_of(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def private_server(folder: Path) -> AsyncIterator[Server]:
    """A standalone server of the test's own."""
    server = Server(folder, free_port())
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def ensemble(folder: Path, size: int = 3) -> AsyncIterator[list[Server]]:
    """An ensemble of *size* servers on this machine, all started and serving."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    peers = "\n".join(
        f"server.{i + 1}=127.0.0.1:{quorum}:{election}"
        for i, (quorum, election) in enumerate(ports)
    )
    servers = [
        Server(folder / f"zk{i + 1}", free_port(), peers=peers, myid=i + 1)
        for i in range(size)
    ]
    for server in servers:
        server.folder.mkdir(parents=True)
        server.start()
    try:
        for server in servers:
            await server.wait_ready()
        yield servers
    finally:
        for server in servers:
            await server.stop()


class Proxy:
    """A TCP proxy to a server, whose traffic a test can cut off silently.

    ``cut()`` stops carrying bytes either way and keeps the sockets open, as a
    dropped network does: neither end hears anything until its own timeout.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.flowing = True
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.flowing = False

    def restore(self) -> None:
        self.flowing = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self.flowing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer),
            self._pipe(up_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.flowing:
                    writer.write(chunk)
                    await writer.drain()
        finally:
            if self.flowing:
                writer.close()


# -- how the suite's claims lapse and owners die on ZooKeeper -----------------
def _session(board: ajb.JobBoard) -> Any:
    return board._client._zk.session  # type: ignore[attr-defined]


async def expire_session(board: ajb.JobBoard) -> None:
    """End *board*'s ZooKeeper session now, as the server does when it expires.

    A second client takes the session over by its id and password and closes
    it: the server deletes its ephemeral nodes and hangs up on the first.
    """
    import aiozk

    session = _session(board)
    host, port = session.conn.host, session.conn.port
    thief = aiozk.ZKClient(f"{host}:{port}", session_timeout=session.timeout)
    thief.session.session_id = session.session_id
    thief.session.password = session.password
    # Hold the board back from taking its session back before it is closed.
    gate = asyncio.Event()
    find_server = session.find_server

    async def find_server_later(allow_read_only: bool) -> None:
        await gate.wait()
        await find_server(allow_read_only)

    session.find_server = find_server_later
    try:
        async with asyncio.timeout(10):
            await thief.start()
            await thief.close()
    finally:
        gate.set()
        del session.find_server
    # Let the board notice the hang-up and learn that its session ended.
    async with asyncio.timeout(10):
        while any(claim.held for claim in board._held.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def play_dead(board: ajb.JobBoard) -> None:
    """Make *board* fall silent, as if its process died or stalled for good.

    It sends nothing more of its own accord and hears nothing, so its session
    ends on the server after the session timeout; a call made on it later
    still reaches the server, as a process waking from a stall would.
    """

    async def no_heartbeat() -> None:
        return None

    session = _session(board)
    session.heartbeat = no_heartbeat
    if session.heartbeat_handle is not None:
        session.heartbeat_handle.cancel()
    board._start_keeper = lambda claim: None  # type: ignore[method-assign]
    await board._stop_keeper()
    board._deliver = lambda event: None  # type: ignore[method-assign]
    board._client._on_state = lambda state: None  # type: ignore[attr-defined]
    watchdog = board._watchdog  # type: ignore[attr-defined]
    if watchdog is not None:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
