"""Private Redis servers and a reply-dropping proxy for the Redis tests.

Fault tests kill and restart servers, so each runs its own redis-server on a
free loopback port with its data in a temporary directory, never the shared
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "DroppingProxy",
    "RedisCluster",
    "RedisServer",
    "ensure_shared_redis",
    "free_port",
]

ROOT = Path(__file__).resolve().parent.parent


def ensure_shared_redis() -> None:
    """Start the machine's Redis through the project's service script if needed."""
    subprocess.run([str(ROOT / "scripts" / "services" / "redis")], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of a test's own, on a free port, data under *directory*."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        #: A configuration file to start with (Sentinel needs one it can write).
        self.config: Path | None = None
        #: Serve TLS only, on ``port``.
        self.tls = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = ["--port", "0", "--tls-port"] if self.tls else ["--port"]
        config = [] if self.config is None else [str(self.config)]
        self.process = subprocess.Popen(
            [
                "redis-server",
                *config,
                "--bind",
                "127.0.0.1",
                *ports,
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--logfile",
                "redis.log",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
        )
        self._wait_until_it_answers()

    def stop(self) -> None:
        """Stop the server abruptly, as a crash would."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                if self.tls:
                    return
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")


class RedisCluster:
    """A Redis Cluster of three masters and no replicas, each a test's own server."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node-{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                # The bus would default to the port plus 10000, past 65535
                # for many of the free ports the system hands out.
                "--cluster-port",
                str(free_port()),
                "--appendonly",
                "no",
            )
            for i in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def url(self, namespace: str) -> str:
        # Naming two nodes, not all, shows the client finds the rest itself.
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])
        return f"redis+cluster://{hosts}?namespace={namespace}"

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def _wait_until_ok(self) -> None:
        # Each node says ok only once it has heard that every slot is served.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [self.cli(port, "CLUSTER", "INFO") for port in self.ports]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster on ports {self.ports} did not come up")


class DroppingProxy:
    """A TCP proxy in front of Redis that can lose one reply.

    Once armed with a marker, the first request that contains it is passed on
    to Redis, which runs it, but its reply is swallowed and the client's
    connection closed, as when a network fails after the server did its work.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.marker: bytes | None = None
        self.dropped = 0
        #: While false, connections are refused, as by a network partition.
        self.passing = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def arm(self, marker: bytes) -> None:
        self.marker = marker

    async def cut(self) -> None:
        """Break every connection and refuse new ones until :meth:`mend`."""
        self.passing = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def mend(self) -> None:
        self.passing = True

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self.passing:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            # The server is down: hang up at once, as the server itself would
            # have refused the connection.
            writer.close()
            return
        self._tasks.add(task)
        doomed = asyncio.Event()
        try:
            await asyncio.gather(
                self._forward(reader, up_writer, doomed),
                self._backward(up_reader, writer, doomed),
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._tasks.discard(task)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        doomed: asyncio.Event,
    ) -> None:
        while data := await reader.read(65536):
            if self.marker is not None and self.marker in data:
                self.marker = None
                doomed.set()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _backward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        doomed: asyncio.Event,
    ) -> None:
        while data := await reader.read(65536):
            if doomed.is_set():
                self.dropped += 1
                raise ConnectionResetError("reply dropped on purpose")
            writer.write(data)
            await writer.drain()
        writer.close()
