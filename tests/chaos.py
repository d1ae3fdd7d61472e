"""A chaos run: jobs posted and consumed while everything around them fails.

One producer process posts jobs at a steady rate and several consumer
processes claim and consume them, all through TCP proxies in front of a
private Redis server or ZooKeeper ensemble. Meanwhile, at intervals drawn
from a seeded generator, consumers are killed with SIGKILL (and started
again), the producer too, the server (or one ensemble member, the leader at
least once) is killed and started again, and the proxies cut every client
connection for a moment. Consumers also stall their event loop now and then,
past their lease, so that a stale holder wakes up and tries to finish a job
that someone else holds by then.

Every process writes what it does to one ledger file, one line per step,
each line written by a single ``write`` to a file opened for appending, so
lines never mix and a line is on disk once the call that it records
returned, whatever kills the process next. At the end the run stops posting,
lets the consumers drain the board, stops them, waits out the lease of any
claim a dead consumer left, reads the board through a fresh connection and
judges the ledger against it (:func:`judge`):

- *duplicate*: a job consumed successfully twice (two tokens, or one token
  twice), or claimed again after a successful consume;
- *lost*: a job posted that was neither consumed nor is on the board;
- *stuck*: a job still on the board, claimed by an owner that is dead, after
  the lease window;
- work done twice because a claim was lost mid-work (a *re-run*) is allowed,
  and counted.

The command line is ``benchmarks/chaos.py``; the test suite runs short forms
in ``tests/test_chaos.py``. The producer and consumers are this module run as
``python -m tests.chaos producer|consumer ...`` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiojobboard as ajb

from .redis_helpers import DroppingProxy, RedisServer
from .zookeeper_helpers import Proxy, Server, ensemble, mode_of

__all__ = ["BoardView", "Config", "Report", "Verdict", "judge", "run"]

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("aiojobboard.chaos")


# -- the ledger ------------------------------------------------------------------
class Ledger:
    """Appends one line per step to a file that many processes share.

    Each line is one ``write`` on a descriptor opened with ``O_APPEND``: the
    kernel appends it whole, and it stays written if the process is killed
    right after.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.pid = os.getpid()

    def write(
        self,
        kind: str,
        name: str = "-",
        job_uuid: str = "-",
        token: int | str = "-",
        extra: str = "-",
    ) -> None:
        line = (
            f"{time.time():.3f} {kind} {name} {job_uuid} {token} {self.pid} {extra}\n"
        )
        os.write(self.fd, line.encode())

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Entry:
    """One ledger line."""

    at: float
    kind: str
    name: str
    uuid: str
    token: str
    pid: int
    extra: str


def read_ledger(path: Path) -> list[Entry]:
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split(" ", 6)
        if len(parts) != 7:
            continue  # cannot happen with whole-line writes; never trusted
        at, kind, name, job_uuid, token, pid, extra = parts
        entries.append(Entry(float(at), kind, name, job_uuid, token, int(pid), extra))
    return entries


# -- the verdict -------------------------------------------------------------------
@dataclass(frozen=True)
class BoardView:
    """A job still on the board at the end: its name and its owner, if claimed."""

    name: str
    owner: str | None


@dataclass
class Verdict:
    """What the ledger and the board say, together."""

    #: Jobs known to be on the board at some point: posts that returned, and
    #: posts whose answer never came but whose job was seen.
    posted: int = 0
    #: Posts that raised and whose job was never seen: not posted.
    post_failed: int = 0
    #: Posts cut short by the producer's death whose job was never seen.
    post_unsure: int = 0
    #: Jobs with exactly one successful consume recorded.
    consumed: int = 0
    #: Jobs gone from the board whose only consume was by a holder that died
    #: or lost its connection during the call: that consume landed.
    consumed_unconfirmed: int = 0
    #: Claims beyond the first of a job: work begun again after a claim was
    #: lost (a stall, a kill, a cut connection).
    reruns: int = 0
    #: Consumes that the board refused because the claim was stale.
    refused: int = 0
    stalls: int = 0
    #: Exceptions that no consumer expected, by type (none are expected).
    errors: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)
    #: Unclaimed jobs still on the board: the drain ran out of time.
    left: list[str] = field(default_factory=list)
    #: Producer names that more than one job carries: a post applied twice.
    double_posts: dict[str, str] = field(default_factory=dict)
    #: Jobs that no producer line explains.
    strangers: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return (
            len(self.duplicates)
            + len(self.lost)
            + len(self.stuck)
            + len(self.double_posts)
            + len(self.strangers)
        )

    @property
    def ok(self) -> bool:
        return self.failures == 0


@dataclass
class _Job:
    name: str = "-"
    claimed: set[int] = field(default_factory=set)
    consuming: set[int] = field(default_factory=set)
    consumed: list[int] = field(default_factory=list)
    refused: set[int] = field(default_factory=set)


def judge(
    entries: Iterable[Entry],
    board: dict[str, BoardView],
    alive: Callable[[int], bool],
) -> Verdict:
    """Judge a run from its ledger and the jobs left on its *board*.

    *alive* tells whether a consumer process is still running, by pid.
    """
    verdict = Verdict()
    producer_names: set[str] = set()
    failed_names: set[str] = set()
    jobs: dict[str, _Job] = defaultdict(_Job)
    errors: dict[str, int] = defaultdict(int)
    for entry in entries:
        kind = entry.kind
        if kind == "posting":
            producer_names.add(entry.name)
        elif kind == "postfail":
            failed_names.add(entry.name)
        elif kind == "stall":
            verdict.stalls += 1
        elif kind == "error":
            errors[entry.extra] += 1
        if entry.uuid == "-":
            continue
        job = jobs[entry.uuid]
        job.name = entry.name
        token = int(entry.token) if entry.token != "-" else None
        if token is None:
            continue
        if kind == "claimed":
            job.claimed.add(token)
        elif kind == "consuming":
            job.consuming.add(token)
        elif kind == "consumed":
            job.consumed.append(token)
        elif kind == "refused":
            job.refused.add(token)
            verdict.refused += 1
    verdict.errors = dict(errors)
    for job_uuid, seen in board.items():
        jobs[job_uuid].name = seen.name

    uuids_of: dict[str, list[str]] = defaultdict(list)
    for job_uuid, job in jobs.items():
        uuids_of[job.name].append(job_uuid)
    for name, uuids in uuids_of.items():
        if name not in producer_names:
            verdict.strangers.extend(uuids)
        elif len(uuids) > 1:
            verdict.double_posts[name] = f"posted as {', '.join(sorted(uuids))}"
    for name in producer_names - uuids_of.keys():
        if name in failed_names:
            verdict.post_failed += 1
        else:
            verdict.post_unsure += 1

    for job_uuid, job in jobs.items():
        if job.name not in producer_names:
            continue
        verdict.posted += 1
        verdict.reruns += max(0, len(job.claimed) - 1)
        view = board.get(job_uuid)
        if job.consumed:
            first = min(job.consumed)
            later = sorted(token for token in job.claimed if token > first)
            if len(job.consumed) > 1:
                tokens = " and ".join(str(token) for token in sorted(job.consumed))
                verdict.duplicates[job_uuid] = f"consumed by tokens {tokens}"
            elif later:
                verdict.duplicates[job_uuid] = (
                    f"claimed again (token {later[0]}) after its consume by "
                    f"token {first}"
                )
            elif view is not None:
                verdict.duplicates[job_uuid] = (
                    f"still on the board after its consume by token {first}"
                )
            else:
                verdict.consumed += 1
            continue
        if view is not None:
            if view.owner is None:
                verdict.left.append(job_uuid)
            elif not alive(_pid_of(view.owner)):
                verdict.stuck[job_uuid] = f"claimed by {view.owner}, which is dead"
            else:
                verdict.left.append(job_uuid)
            continue
        if job.consuming - job.refused:
            verdict.consumed_unconfirmed += 1
        else:
            why = "never claimed" if not job.claimed else "no consume landed"
            verdict.lost[job_uuid] = f"gone from the board, {why}"
    return verdict


def owner_name(slot: int, pid: int) -> str:
    return f"c{slot}-{pid}"


def _pid_of(owner: str) -> int:
    try:
        return int(owner.rpartition("-")[2])
    except ValueError:
        return -1


# -- the producer and the consumers (child processes) ------------------------------
async def connect_patiently(url: str, seconds: float = 60.0) -> ajb.JobBoard:
    """Connect, trying again while the server is down or cut off."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await ajb.connect(url)
        except ajb.ConnectionLost:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def produce(url: str, ledger: Ledger, rate: float, incarnation: int) -> None:
    """Post jobs at *rate* per second until cancelled.

    Each post gets a name of its own, "p<incarnation>-<n>", written to the
    ledger before the post ("posting") and after it returned ("posted", with
    the uuid) or raised ("postfail"). A post is never tried again: a failed
    one may have landed, and then its job is known by its name.
    """
    board = await connect_patiently(url)
    in_flight: set[asyncio.Task[None]] = set()
    limit = asyncio.Semaphore(64)

    async def post(name: str, n: int) -> None:
        try:
            ledger.write("posting", name)
            try:
                job = await board.post(name, details={"n": n})
            except ajb.JobBoardError as exc:
                ledger.write("postfail", name, extra=_word(exc))
            except Exception as exc:
                logger.exception("producer: unexpected error")
                ledger.write("postfail", name, extra=_word(exc))
                ledger.write("error", extra=_word(exc))
            else:
                ledger.write("posted", name, job.uuid)
        finally:
            limit.release()

    try:
        start = time.monotonic()
        for n in range(1 << 62):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                start -= delay  # after an outage: go on at the rate, no burst
            await limit.acquire()
            task = asyncio.create_task(post(f"p{incarnation}-{n}", n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await board.close()


@dataclass(frozen=True)
class ConsumerSettings:
    lease: float
    tasks: int
    work: float
    stall: float


async def consume(
    url: str, ledger: Ledger, slot: int, settings: ConsumerSettings, seed: str
) -> None:
    """Claim, work on and consume jobs with *tasks* loops, until cancelled."""
    rng = random.Random(seed)
    owner = owner_name(slot, os.getpid())
    board = await connect_patiently(url)

    async def run_one(claim: ajb.Claim) -> None:
        job = claim.job
        ledger.write("claimed", job.name, job.uuid, claim.token, str(claim.attempt))
        await asyncio.sleep(settings.work * rng.uniform(0.5, 1.5))
        if rng.random() < settings.stall:
            # A blocked event loop: every claim of this process lapses, and
            # this one wakes up to finish a job that another may hold now.
            ledger.write("stall", job.name, job.uuid, claim.token)
            block(settings.lease * 1.5)
        ledger.write("consuming", job.name, job.uuid, claim.token)
        tried = False
        for _ in range(50):
            try:
                await claim.consume()
            except ajb.NotOwner as exc:
                # After a call whose answer was lost, the job may be gone by
                # that very call: unsure. Otherwise the board said no.
                kind = "unsure" if tried else "refused"
                ledger.write(kind, job.name, job.uuid, claim.token, _word(exc))
                return
            except ajb.JobBoardError as exc:
                tried = True
                ledger.write("retry", job.name, job.uuid, claim.token, _word(exc))
                if not claim.held:
                    break
                await asyncio.sleep(0.2)
                continue
            ledger.write("consumed", job.name, job.uuid, claim.token)
            return
        ledger.write("unsure", job.name, job.uuid, claim.token, "gave up")

    async def loop() -> None:
        while True:
            try:
                claim = await board.claim_next(owner, settings.lease)
                if claim is None:
                    with contextlib.suppress(TimeoutError):
                        await board.wait(timeout=1.0)
                    continue
                await run_one(claim)
            except ajb.JobBoardError:
                await asyncio.sleep(0.2)
            except Exception as exc:
                logger.exception("consumer %s: unexpected error", owner)
                ledger.write("error", extra=type(exc).__name__)
                await asyncio.sleep(0.2)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(settings.tasks):
                group.create_task(loop())
    finally:
        with contextlib.suppress(Exception):
            await board.close()


def block(seconds: float) -> None:
    """Block the event loop, as CPU-bound work or a paused process would."""
    time.sleep(seconds)


def _word(exc: BaseException) -> str:
    return type(exc).__name__


def child_main(argv: list[str] | None = None) -> None:
    """``python -m tests.chaos producer|consumer``: one process of a run."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("role", choices=["producer", "consumer"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--incarnation", type=int, default=0)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--work", type=float, default=0.02)
    parser.add_argument("--stall", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    ledger = Ledger(args.ledger)
    if args.role == "producer":
        main = produce(args.url, ledger, args.rate, args.incarnation)
    else:
        settings = ConsumerSettings(args.lease, args.tasks, args.work, args.stall)
        main = consume(args.url, ledger, args.slot, settings, args.seed)

    async def until_terminated() -> None:
        task = asyncio.create_task(main)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(until_terminated())


# -- the servers and their proxies ---------------------------------------------------
class Rig:
    """Private servers behind proxies, and the faults that can hit them."""

    #: How long a dead owner's claim may stay on the board.
    lease_window: float
    #: The URL the producer and consumers use: through the proxies.
    client_url: str
    #: A URL straight to the server(s), for the final look at the board.
    direct_url: str

    async def restart(self, rng: random.Random) -> str:
        raise NotImplementedError

    async def cut(self, rng: random.Random) -> str:
        raise NotImplementedError


class RedisRig(Rig):
    """A redis-server that syncs its append-only file on every write.

    Without persistence a restarted Redis is empty, and the board with it:
    every job on it is lost by design, so the run would judge the server, not
    the library.
    """

    def __init__(self, folder: Path, lease: float, namespace: str) -> None:
        self.server = RedisServer(
            folder / "redis", "--appendonly", "yes", "--appendfsync", "always"
        )
        self.proxy = DroppingProxy(0)
        self.lease = lease
        self.namespace = namespace
        self.lease_window = lease + 2.0  # the lease, and a sweep once a second

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RedisRig]:
        await asyncio.to_thread(self.server.start)
        try:
            self.proxy.target_port = self.server.port
            await self.proxy.start()
            query = (
                f"namespace={self.namespace}&lease={self.lease:g}"
                "&socket_timeout=3&connect_timeout=1"
            )
            self.client_url = f"redis://127.0.0.1:{self.proxy.port}/0?{query}"
            self.direct_url = f"{self.server.url}?{query}"
            try:
                yield self
            finally:
                await self.proxy.close()
        finally:
            await asyncio.to_thread(self.server.stop)

    async def restart(self, rng: random.Random) -> str:
        how = rng.choice([signal.SIGKILL, signal.SIGTERM])
        downtime = rng.uniform(0.2, 2.0)
        process, self.server.process = self.server.process, None
        assert process is not None
        process.send_signal(how)
        await asyncio.to_thread(process.wait, 30)
        await asyncio.sleep(downtime)
        await asyncio.to_thread(self.server.start)
        return f"redis-server {how.name}, down {downtime:.1f} s"

    async def cut(self, rng: random.Random) -> str:
        seconds = rng.uniform(0.1, 1.5 * self.lease)
        await self.proxy.cut()
        await asyncio.sleep(seconds)
        self.proxy.mend()
        return f"every connection cut, refused for {seconds:.1f} s"


class SilencingProxy(Proxy):
    """A ZooKeeper proxy whose cut ends by closing the connections it silenced.

    Bytes dropped in a silent cut cannot be delivered later, as TCP would
    after a partition heals; carrying on would hand both ends a garbled
    stream. So a cut is silence for a while, then a hang-up.
    """

    async def silence(self, seconds: float) -> None:
        self.cut()
        await asyncio.sleep(seconds)
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
        self.restore()


class ZooKeeperRig(Rig):
    """A three-server ensemble, a proxy in front of each member."""

    def __init__(self, folder: Path, session: float, path: str) -> None:
        self.folder = folder
        self.session = session
        self.path = path
        self.servers: list[Server] = []
        self.proxies: list[SilencingProxy] = []
        self.lease_window = session + 3.0
        self.leader_restarted = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ZooKeeperRig]:
        async with ensemble(self.folder / "zookeeper") as servers:
            self.servers = servers
            self.proxies = [SilencingProxy(server.port) for server in servers]
            try:
                for proxy in self.proxies:
                    await proxy.start()
                query = f"session_timeout={self.session:g}"
                hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in self.proxies)
                direct = ",".join(server.address for server in servers)
                self.client_url = f"zookeeper://{hosts}{self.path}?{query}"
                self.direct_url = f"zookeeper://{direct}{self.path}?{query}"
                yield self
            finally:
                for proxy in self.proxies:
                    await proxy.close()

    async def restart(self, rng: random.Random) -> str:
        modes = await asyncio.gather(
            *(asyncio.to_thread(mode_of, server.port) for server in self.servers)
        )
        leader = next(
            (
                server
                for server, mode in zip(self.servers, modes, strict=True)
                if mode == "leader"
            ),
            None,
        )
        if leader is not None and (not self.leader_restarted or rng.random() < 0.4):
            victim, role = leader, "leader"
            self.leader_restarted = True
        else:
            victim = rng.choice(self.servers)
            role = "leader" if victim is leader else "member"
        how = rng.choice([signal.SIGKILL, signal.SIGTERM])
        downtime = rng.uniform(0.2, 2.0)
        await victim.stop(how)
        await asyncio.sleep(downtime)
        victim.start()
        await victim.wait_ready()
        return f"zookeeper {role} {victim.myid} {how.name}, down {downtime:.1f} s"

    async def cut(self, rng: random.Random) -> str:
        seconds = rng.uniform(0.1, 1.5 * self.session)
        if rng.random() < 0.5:
            proxies, what = self.proxies, "every member"
        else:
            index = rng.randrange(len(self.proxies))
            proxies, what = [self.proxies[index]], f"member {index + 1}"
        await asyncio.gather(*(proxy.silence(seconds) for proxy in proxies))
        return f"{what} silenced for {seconds:.1f} s, then hung up"


# -- the run ---------------------------------------------------------------------
@dataclass
class Config:
    """A chaos run's settings; the intervals are means of exponential gaps."""

    board: str = "redis"
    seconds: float = 60.0
    consumers: int = 4
    seed: int = 1
    rate: float = 100.0
    #: The lease of a claim on Redis; the session timeout on ZooKeeper.
    lease: float = 2.0
    tasks: int = 4
    work: float = 0.02
    #: The chance that a job's work blocks its consumer's loop past the lease.
    stall: float = 0.002
    kill_every: float = 2.5
    producer_kill_every: float = 12.0
    restart_every: float = 10.0
    cut_every: float = 6.0
    #: The longest wait for the consumers to empty the board at the end.
    drain: float = 60.0
    #: Where the ledger, server data and process logs go; a fresh temporary
    #: folder when None.
    folder: Path | None = None


@dataclass
class Report:
    config: Config
    verdict: Verdict
    kills: int = 0
    producer_kills: int = 0
    restarts: int = 0
    cuts: int = 0
    #: Child processes that ended without being killed or told to stop.
    crashes: int = 0
    elapsed: float = 0.0
    drained_in: float | None = None
    folder: Path | None = None
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No duplicate, loss or stuck job, and nothing that leaves it unsure:
        a crash, an error no consumer expected, or a drain that ran out of time.
        """
        verdict = self.verdict
        return (
            verdict.ok and self.crashes == 0 and not verdict.errors and not verdict.left
        )


class _Child:
    def __init__(self, process: asyncio.subprocess.Process, slot: int) -> None:
        self.process = process
        self.slot = slot
        self.killed = False
        self.stopping = False


class Fleet:
    """The producer and the consumers, started again when they die."""

    def __init__(self, config: Config, url: str, ledger: Path, folder: Path) -> None:
        self.config = config
        self.url = url
        self.ledger = ledger
        self.folder = folder
        self.producer: _Child | None = None
        self.consumers: dict[int, _Child] = {}
        self.producing = True
        self.running = True
        self.crashes = 0
        self.started = 0
        self.incarnation = 0
        self._alive: set[int] = set()
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None

    def alive(self, pid: int) -> bool:
        return pid in self._alive

    async def _spawn(self, role: str, slot: int, *args: str) -> _Child:
        self.started += 1
        log = open(self.folder / f"{role}-{slot}-{self.started}.log", "wb")  # noqa: ASYNC230, SIM115
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.chaos",
                role,
                "--url",
                self.url,
                "--ledger",
                str(self.ledger),
                *args,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()
        self._alive.add(process.pid)
        return _Child(process, slot)

    async def start_producer(self) -> None:
        self.incarnation += 1
        self.producer = await self._spawn(
            "producer",
            0,
            *("--rate", str(self.config.rate)),
            *("--incarnation", str(self.incarnation)),
        )

    async def start_consumer(self, slot: int) -> None:
        config = self.config
        self.consumers[slot] = await self._spawn(
            "consumer",
            slot,
            *("--slot", str(slot), "--lease", str(config.lease)),
            *("--tasks", str(config.tasks), "--work", str(config.work)),
            *("--stall", str(config.stall)),
            *("--seed", f"{config.seed}:{slot}:{self.started}"),
        )

    async def start(self) -> None:
        await self.start_producer()
        for slot in range(self.config.consumers):
            await self.start_consumer(slot)
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        """Start again every process that ended, while the run goes on."""
        while True:
            async with self._lock:
                children = list(self.consumers.values())
                if self.producer is not None:
                    children.append(self.producer)
                for child in children:
                    if child.process.returncode is not None:
                        await self._ended(child)
            await asyncio.sleep(0.05)

    async def _ended(self, child: _Child) -> None:
        self._alive.discard(child.process.pid)
        if not (child.killed or child.stopping):
            self.crashes += 1
            logger.warning(
                "%s (pid %d) ended by itself with %s",
                "producer" if child is self.producer else "consumer",
                child.process.pid,
                child.process.returncode,
            )
        if child is self.producer:
            self.producer = None
            if self.producing:
                await self.start_producer()
        else:
            del self.consumers[child.slot]
            if self.running:
                await self.start_consumer(child.slot)

    def kill(self, child: _Child) -> None:
        if child.process.returncode is None and not child.killed:
            child.killed = True
            child.process.send_signal(signal.SIGKILL)

    async def stop_producer(self) -> None:
        async with self._lock:
            self.producing = False
            children = [] if self.producer is None else [self.producer]
        await self._stop(children)

    async def stop_consumers(self) -> None:
        async with self._lock:
            self.running = False
            children = list(self.consumers.values())
        await self._stop(children)

    async def close(self) -> None:
        """Stop supervising and kill whatever still runs."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        children = list(self.consumers.values())
        if self.producer is not None:
            children.append(self.producer)
        for child in children:
            child.stopping = True
            if child.process.returncode is None:
                child.process.kill()
            await child.process.wait()
            self._alive.discard(child.process.pid)

    async def _stop(self, children: list[_Child]) -> None:
        for child in children:
            child.stopping = True
            if child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), 15)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
            self._alive.discard(child.process.pid)


async def run(config: Config, say: Callable[[str], None] = lambda line: None) -> Report:
    """Run chaos as *config* says and judge it; *say* hears each fault."""
    started = time.monotonic()
    if config.folder is None:
        folder = Path(tempfile.mkdtemp(prefix=f"ajb-chaos-{config.board}-"))
    else:
        folder = config.folder
        folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "ledger"
    ledger.touch()
    name = f"chaos-{config.seed}-{uuid.uuid4().hex[:8]}"
    rig: RedisRig | ZooKeeperRig
    if config.board == "redis":
        rig = RedisRig(folder, config.lease, name)
    elif config.board == "zookeeper":
        rig = ZooKeeperRig(folder, config.lease, f"/{name}")
    else:
        raise ValueError(f"board must be redis or zookeeper, not {config.board!r}")
    report = Report(config, Verdict(), folder=folder)

    def note(what: str) -> None:
        line = f"{time.monotonic() - started:6.1f} s  {what}"
        report.faults.append(line)
        say(line)

    async with rig.running():
        note(f"{config.board} up; clients through {rig.client_url}")
        fleet = Fleet(config, rig.client_url, ledger, folder)
        try:
            await fleet.start()
            await _make_chaos(config, rig, fleet, report, note)
            await fleet.stop_producer()
            note("stopped posting; draining")
            report.drained_in = await _drain(rig, config.drain)
            note(
                f"not drained after {config.drain:g} s"
                if report.drained_in is None
                else f"board empty after {report.drained_in:.1f} s"
            )
            await fleet.stop_consumers()
        finally:
            await fleet.close()
        report.crashes = fleet.crashes
        board = await final_look(rig)
        note(f"{len(board)} jobs left on the board")
        report.verdict = judge(read_ledger(ledger), board, fleet.alive)
    report.elapsed = time.monotonic() - started
    return report


async def _make_chaos(
    config: Config, rig: Rig, fleet: Fleet, report: Report, note: Callable[[str], None]
) -> None:
    """Cause faults at random for the run's duration, each kind on its own."""
    calm = asyncio.Event()

    async def every(
        kind: str,
        mean: float,
        first: float,
        act: Callable[[random.Random], Awaitable[None]],
    ) -> None:
        # The first of each kind comes early, so that a short run has them all.
        rng = random.Random(f"{config.seed}:{kind}")
        gap = rng.uniform(first / 2, first)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(calm.wait(), gap)
            if calm.is_set():
                return
            await act(rng)
            gap = rng.expovariate(1 / mean)

    async def kill_consumer(rng: random.Random) -> None:
        children = [c for c in fleet.consumers.values() if not c.killed]
        if children:
            victim = rng.choice(children)
            fleet.kill(victim)
            report.kills += 1
            note(f"SIGKILL consumer {victim.slot} (pid {victim.process.pid})")

    async def kill_producer(rng: random.Random) -> None:
        victim = fleet.producer
        if victim is not None and not victim.killed:
            fleet.kill(victim)
            report.producer_kills += 1
            note(f"SIGKILL producer (pid {victim.process.pid})")

    async def restart(rng: random.Random) -> None:
        note("restarting the server")
        note(await rig.restart(rng))
        report.restarts += 1

    async def cut(rng: random.Random) -> None:
        note(await rig.cut(rng))
        report.cuts += 1

    first = min(config.seconds / 3, 5.0)
    faults = [
        every("kill", config.kill_every, first / 2, kill_consumer),
        every("producer", config.producer_kill_every, first * 2, kill_producer),
        every("restart", config.restart_every, first, restart),
        every("cut", config.cut_every, first * 0.8, cut),
    ]
    running = asyncio.gather(*faults)
    try:
        await asyncio.wait_for(asyncio.shield(running), config.seconds)
    except TimeoutError:
        pass
    finally:
        # A fault in progress ends (its server back, its proxies passing)
        # before the run goes on.
        calm.set()
        await running
        note("faults over")


async def _drain(rig: Rig, seconds: float) -> float | None:
    """Wait for the consumers to empty the board; how long it took, or None."""
    started = time.monotonic()
    async with ajb.connect(rig.direct_url) as checker:
        while time.monotonic() - started < seconds:
            with contextlib.suppress(ajb.JobBoardError):
                if await checker.job_count() == 0:
                    return time.monotonic() - started
            await asyncio.sleep(0.25)
    return None


async def final_look(rig: Rig) -> dict[str, BoardView]:
    """Read the board through a fresh connection, once dead owners' claims lapsed."""
    deadline = time.monotonic() + rig.lease_window
    async with ajb.connect(rig.direct_url) as board:
        while True:
            jobs = [job async for job in board.iterjobs()]
            owners = await asyncio.gather(*(job.get_owner() for job in jobs))
            view = {
                job.uuid: BoardView(job.name, owner)
                for job, owner in zip(jobs, owners, strict=True)
            }
            if all(v.owner is None for v in view.values()) or (
                time.monotonic() > deadline
            ):
                return view
            await asyncio.sleep(0.25)


# -- the report ------------------------------------------------------------------
def table(report: Report) -> str:
    """The summary of a run, as printed by benchmarks/chaos.py."""
    config, verdict = report.config, report.verdict
    consumed = verdict.consumed + verdict.consumed_unconfirmed
    rows = [
        ("posted", f"{verdict.posted:,}"),
        ("  post failed", f"{verdict.post_failed:,}"),
        ("  post unsure (producer killed)", f"{verdict.post_unsure:,}"),
        ("consumed", f"{consumed:,}"),
        ("  of which unconfirmed", f"{verdict.consumed_unconfirmed:,}"),
        ("re-runs", f"{verdict.reruns:,}"),
        ("stale consumes refused", f"{verdict.refused:,}"),
        ("consumer kills", f"{report.kills:,}"),
        ("producer kills", f"{report.producer_kills:,}"),
        ("server restarts", f"{report.restarts:,}"),
        ("connection cuts", f"{report.cuts:,}"),
        ("loop stalls past the lease", f"{verdict.stalls:,}"),
        ("crashes", f"{report.crashes:,}"),
        ("unexpected errors", f"{sum(verdict.errors.values()):,}"),
        ("duplicates", f"{len(verdict.duplicates):,}"),
        ("lost", f"{len(verdict.lost):,}"),
        ("stuck", f"{len(verdict.stuck):,}"),
        ("double posts", f"{len(verdict.double_posts):,}"),
        ("strangers", f"{len(verdict.strangers):,}"),
        ("left on the board (not drained)", f"{len(verdict.left):,}"),
        (
            "drained in",
            "-" if report.drained_in is None else f"{report.drained_in:.1f} s",
        ),
        ("elapsed", f"{report.elapsed:.1f} s"),
    ]
    title = (
        f"chaos on {config.board}: {config.seconds:g} s, {config.consumers} "
        f"consumers x {config.tasks} tasks, {config.rate:g} posts/s, "
        f"lease {config.lease:g} s, seed {config.seed}"
    )
    lines = [title, *(f"{label:<34}{value:>10}" for label, value in rows)]
    problems = {
        "duplicate": verdict.duplicates,
        "lost": verdict.lost,
        "stuck": verdict.stuck,
        "double post": verdict.double_posts,
        "stranger": dict.fromkeys(verdict.strangers, ""),
        "error": {k: f"{v} times" for k, v in verdict.errors.items()},
    }
    for what, found in problems.items():
        for key, why in list(found.items())[:10]:
            lines.append(f"{what}: {key} {why}")
    lines.append("PASS" if report.ok else f"FAIL: ledger and server in {report.folder}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``benchmarks/chaos.py``: run chaos on one adapter, print the table."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/chaos.py",
        description="Post and consume jobs while processes, servers and "
        "connections fail; check that no job is lost or consumed twice.",
    )
    parser.add_argument("--board", choices=["redis", "zookeeper"], required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=100.0, help="posts per second")
    parser.add_argument(
        "--lease",
        type=float,
        default=2.0,
        help="claim lease on Redis, session timeout on ZooKeeper (seconds)",
    )
    parser.add_argument("--tasks", type=int, default=4, help="loops per consumer")
    parser.add_argument(
        "--stall", type=float, default=0.002, help="chance per job of a stall"
    )
    for fault, mean in [("kill", 2.5), ("producer-kill", 12.0), ("restart", 10.0)]:
        parser.add_argument(
            f"--{fault}-every", type=float, default=mean, help="mean seconds apart"
        )
    parser.add_argument(
        "--cut-every", type=float, default=6.0, help="mean seconds apart"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's folder")
    parser.add_argument("--quiet", action="store_true", help="do not list faults")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 16)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    config = Config(
        board=args.board,
        seconds=args.seconds,
        consumers=args.consumers,
        seed=seed,
        rate=args.rate,
        lease=args.lease,
        tasks=args.tasks,
        stall=args.stall,
        kill_every=args.kill_every,
        producer_kill_every=args.producer_kill_every,
        restart_every=args.restart_every,
        cut_every=args.cut_every,
    )
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    report = asyncio.run(run(config, say))
    print(table(report), flush=True)
    if report.ok and not args.keep and report.folder is not None:
        shutil.rmtree(report.folder, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    child_main()
