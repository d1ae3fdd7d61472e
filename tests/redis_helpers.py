"""Private Redis servers, Sentinel groups and a reply-dropping proxy for the tests.

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
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DroppingProxy",
    "RedisCluster",
    "RedisServer",
    "SentinelGroup",
    "cli",
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


def cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting: {what}")
        time.sleep(0.05)


class SentinelGroup:
    """A primary, one replica and three Sentinels watching them, all a test's own.

    The replica follows the primary through *link_port* when given (a proxy
    that can hold the replication stream back), else directly. The Sentinels
    take the primary for down after one second without an answer, and need two
    of three to agree.
    """

    service = "board"

    def __init__(self, directory: Path) -> None:
        # A replica's first sync would wait five seconds for others to join.
        self.primary = RedisServer(
            directory / "primary", "--repl-diskless-sync-delay", "0"
        )
        self.replica = RedisServer(directory / "replica")
        self.sentinels = [
            RedisServer(directory / f"sentinel-{i}", "--sentinel") for i in range(3)
        ]

    def url(self, namespace: str, options: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return (
            f"redis+sentinel://{hosts}/{self.service}/0?namespace={namespace}{options}"
        )

    def start(self, link_port: int | None = None, sentinels: bool = True) -> None:
        try:
            self.primary.start()
            link = str(link_port or self.primary.port)
            self.replica.args = ("--replicaof", "127.0.0.1", link)
            self.replica.start()
            wait_until("the replica's first sync", self.replica_in_step)
            if sentinels:
                self._start_sentinels()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()

    def kill_primary(self) -> None:
        """SIGKILL the primary, as a crash of its machine would."""
        self.primary.stop()

    def replica_in_step(self) -> bool:
        """Whether the replica is linked and holds all the primary wrote."""
        info = _info(cli(self.replica.port, "INFO", "replication"))
        if info.get("master_link_status") != "up":
            return False
        primary = _info(cli(self.primary.port, "INFO", "replication"))
        return info.get("slave_repl_offset") == primary.get("master_repl_offset")

    def master_port(self, sentinel: RedisServer) -> int:
        found = cli(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(found.split()[1])

    def wait_for_failover(self, timeout: float = 20) -> None:
        """Return once every Sentinel names the replica as the new primary."""

        def promoted() -> bool:
            ports = {self.master_port(sentinel) for sentinel in self.sentinels}
            role = cli(self.replica.port, "ROLE").split()[0]
            return ports == {self.replica.port} and role == "master"

        wait_until("the failover", promoted, timeout)

    def _start_sentinels(self) -> None:
        for sentinel in self.sentinels:
            config = sentinel.directory / "sentinel.conf"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 4000\n"
            )
            sentinel.config = config
            sentinel.start()
        wait_until("the Sentinels to agree", self._agreed)

    def _agreed(self) -> bool:
        for sentinel in self.sentinels:
            found = cli(sentinel.port, "SENTINEL", "MASTER", self.service).split()
            state = dict(zip(found[::2], found[1::2], strict=True))
            if state["num-slaves"] != "1" or state["num-other-sentinels"] != "2":
                return False
        return True


def _info(text: str) -> dict[str, str]:
    pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
    return {name: value.strip() for name, _, value in pairs}


class DroppingProxy:
    """A TCP proxy in front of Redis that can lose one reply, or hold them back.

    Once armed with a marker, the first request that contains it is passed on
    to Redis, which runs it, but its reply is swallowed and the client's
    connection closed, as when a network fails after the server did its work.
    While held, what Redis sends is kept back until released or cut.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.marker: bytes | None = None
        self.dropped = 0
        #: While false, connections are refused, as by a network partition.
        self.passing = True
        self._flowing = asyncio.Event()
        self._flowing.set()
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

    def hold(self) -> None:
        """Keep back what Redis sends, as a stalled link would."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

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
        if not self.passing:
            # Cut while this connection was still opening.
            for w in (writer, up_writer):
                w.close()
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
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()
