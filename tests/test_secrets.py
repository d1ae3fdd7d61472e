"""No password in any log record, repr, URL, error message or CLI output.

Each backend runs with its secret in the URL against a server that checks it:
a Redis of the test's own with ACL users, the shared ZooKeeper with digest
identities, and a PostgreSQL of the test's own that asks for a SCRAM password.
Every record of every logger (aiojobboard's and the client libraries') is
captured at DEBUG, and every text a caller could see is searched for the
secrets: reprs, URLs, and each exception with its causes and contexts.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import aiojobboard as ajb
from aiojobboard import book
from aiojobboard.book import LogBook

from .conftest import ZOOKEEPER_URL
from .redis_helpers import RedisServer, ensure_shared_redis, free_port
from .test_book_postgres import PrivateServer, ensure_postgres
from .zookeeper_helpers import expire_session

ROOT = Path(__file__).resolve().parent.parent
#: The right passwords, and wrong ones that must not show either.
SECRET = "Kq7vR2-right-pw"
WRONG = "Xw9mT4-wrong-pw"
OTHER = "Jp3sL8-other-pw"
SECRETS = (SECRET, WRONG, OTHER)
#: The loggers of the libraries beneath aiojobboard, listened to at DEBUG
#: (aiozk gives the log of its payloads a level of its own).
LOGGERS = (
    "",
    "aiojobboard",
    "redis",
    "aiozk",
    "aiozk.connection.payload",
    "asyncpg",
    "asyncio",
)


class Collector(logging.Handler):
    """Keep every record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts += [self.format(record), repr(record.args), str(record.msg)]


@pytest.fixture
def logs() -> Iterator[Collector]:
    collector = Collector()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(collector)
    yield collector
    logging.getLogger().removeHandler(collector)
    for each, level in zip(loggers, levels, strict=True):
        each.setLevel(level)


class Seen:
    """Everything a caller could read, to be searched for secrets."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.errors = 0

    def add(self, *objects: object) -> None:
        self.texts += [repr(each) for each in objects]
        self.texts += [str(each) for each in objects]

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.texts += traceback.format_exception(exc)
        seen: set[int] = set()
        stack: list[BaseException | None] = [exc]
        while stack:
            each = stack.pop()
            if each is None or id(each) in seen:
                continue
            seen.add(id(each))
            self.texts += [str(each), repr(each), repr(each.args)]
            stack += [each.__cause__, each.__context__]

    async def expect(self, kind: type[BaseException], call: Any) -> BaseException:
        """Await *call*, which must raise *kind*; keep what it said."""
        with pytest.raises(kind) as caught:
            await call
        self.error(caught.value)
        return caught.value

    def assert_clean(self, logs: Collector) -> None:
        everything = "\n".join(self.texts + logs.texts)
        for secret in SECRETS:
            for form in {secret, quote(secret, safe="")}:
                assert form not in everything, f"{form!r} leaked"


@pytest.fixture
def seen() -> Seen:
    return Seen()


# -- Redis --------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    ensure_shared_redis()
    server = RedisServer(
        tmp_path / "redis",
        *("--user", "default", "off"),
        *("--user", "alice", "on", f">{SECRET}", "~*", "&*", "+@all"),
        *("--user", "bob", "on", f">{OTHER}", "~other:*", "&other:*", "+@all"),
    )
    server.start()
    yield server
    server.stop()


async def test_redis(
    redis_server: RedisServer, logs: Collector, seen: Seen, tmp_path: Path
) -> None:
    where = f"127.0.0.1:{redis_server.port}/0?namespace=s&retries=0"
    url = f"redis://alice:{SECRET}@{where}"
    async with ajb.connect(url) as board:
        job = await board.post("x", {"n": 1})
        claim = await board.claim(job, "w", lease=5)
        seen.add(board, board.url, claim, job, [j async for j in board.iterjobs()])
        # What a traceback showing locals would print.
        seen.add(board._settings, board._client)  # type: ignore[attr-defined]
        await seen.expect(ajb.UnclaimableJob, board.claim(job, "v"))
        await claim.consume()
        # The server goes away under an open board, and comes back.
        redis_server.stop()
        await seen.expect(ajb.ConnectionLost, board.post("y"))
        await asyncio.sleep(1.2)
        redis_server.start()
    for bad in [
        f"redis://alice:{WRONG}@{where}",
        f"redis://bob:{OTHER}@{where}",
        f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0?retries=0",
    ]:
        await seen.expect(ajb.JobBoardError, ajb.connect(bad))
    for bad in [
        f"{url}&colour=blue",
        f"{url}&password={OTHER}",
        f"redis://alice:{SECRET}@127.0.0.1:http/0",
        f"redis://alice:{SECRET[:4]}/{SECRET[4:]}@{where}",
        f"rediss://alice:{SECRET}@{where}&ssl_cert_reqs=maybe",
    ]:
        await seen.expect(ValueError, ajb.connect(bad))
    assert seen.errors == 10
    seen.assert_clean(logs)


def run_cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aiojobboard.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert done.stderr.startswith("aiojobboard: error: ")
    return done.stdout + done.stderr


def test_cli_redis(redis_server: RedisServer, seen: Seen) -> None:
    where = f"127.0.0.1:{redis_server.port}/0?namespace=s&retries=0"
    for url in [
        f"redis://alice:{WRONG}@{where}",
        f"redis://bob:{OTHER}@{where}",
        f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0?retries=0",
        f"redis://alice:{SECRET}@{where}&colour=blue",
    ]:
        seen.texts.append(run_cli(url, "jobs"))
    seen.assert_clean(Collector())


# -- ZooKeeper ----------------------------------------------------------------
async def test_zookeeper(logs: Collector, seen: Seen) -> None:
    base = ZOOKEEPER_URL.partition("://")[2]
    path = f"test-{uuid.uuid4().hex[:12]}"
    url = f"zookeeper://alice:{SECRET}@{base}/{path}"
    async with ajb.connect(f"{url}?acl=private") as alice:
        job = await alice.post("x", {"n": 1})
        claim = await alice.claim(job, "alice")
        seen.add(alice, alice.url, claim, job, [j async for j in alice.iterjobs()])
        seen.add(vars(alice._client))  # type: ignore[attr-defined]
        # A new session sends the credentials again.
        await expire_session(alice)
        again = await alice.claim(job, "alice")
        # Another identity may not even read the private board.
        mallory_url = f"zookeeper://mallory:{OTHER}@{base}/{path}"
        await seen.expect(ajb.JobBoardError, ajb.connect(mallory_url))
        await seen.expect(
            ajb.JobBoardError,
            ajb.connect(f"zookeeper://alice:{WRONG}@{base}/{path}?acl=private"),
        )
        await again.consume()
    # A board that others may read, but not change.
    async with (
        ajb.connect(f"{url}-shared") as alice,
        ajb.connect(f"zookeeper://mallory:{OTHER}@{base}/{path}-shared") as mallory,
    ):
        claim = await alice.claim(await alice.post("x"), "alice")
        seen.add(mallory, mallory.url, [j async for j in mallory.iterjobs()])
        await seen.expect(ajb.JobBoardError, mallory.post("planted"))
        await seen.expect(ajb.NotOwner, mallory.trash(claim.job, "alice"))
        await claim.consume()
    unreachable = f"zookeeper://alice:{SECRET}@127.0.0.1:{free_port()}/x?timeout=1"
    await seen.expect(ajb.ConnectionLost, ajb.connect(unreachable))
    for bad in [
        f"{url}?colour=blue",
        f"{url}?token={OTHER}",
        f"zookeeper://alice:{SECRET}@127.0.0.1:http/x",
        f"zookeeper://alice:{SECRET[:4]}#{SECRET[4:]}@{base}/x",
    ]:
        await seen.expect(ValueError, ajb.connect(bad))
    assert seen.errors == 9
    seen.assert_clean(logs)


def test_cli_zookeeper(seen: Seen) -> None:
    base = ZOOKEEPER_URL.partition("://")[2]
    path = f"test-{uuid.uuid4().hex[:12]}"

    async def make_private_board() -> None:
        url = f"zookeeper://alice:{SECRET}@{base}/{path}?acl=private"
        async with ajb.connect(url) as board:
            await board.post("x")

    asyncio.run(make_private_board())
    for url in [
        f"zookeeper://mallory:{OTHER}@{base}/{path}",
        f"zookeeper://alice:{WRONG}@{base}/{path}",
    ]:
        seen.texts.append(run_cli(url, "jobs"))
    seen.assert_clean(Collector())


# -- PostgreSQL ---------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PrivateServer]:
    ensure_postgres()
    server = PrivateServer(password=SECRET)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def store_url(postgres_server: PrivateServer) -> str:
    return f"postgresql://postgres:{SECRET}@127.0.0.1:{postgres_server.port}/postgres"


@pytest.mark.timeout(120)
async def test_postgres(
    postgres_server: PrivateServer, store_url: str, logs: Collector, seen: Seen
) -> None:
    url = f"{store_url}?connect_timeout=1&schema=s_{uuid.uuid4().hex[:8]}"
    async with book.connect(url) as store:
        await store.upgrade()
        saved = await store.save_logbook(LogBook("b", meta={"k": 1}))
        seen.add(store, store.url, await store.get_logbook(saved.uuid))  # type: ignore[attr-defined]
        async with ajb.connect(f"memory://{uuid.uuid4().hex}", books=store) as board:
            job = await board.post("x", book=saved)
            seen.add(job, await job.load_book())
        await seen.expect(ajb.NotFound, store.get_logbook("missing"))
        # The server goes away under an open store, and comes back.
        await asyncio.to_thread(postgres_server.stop)
        await seen.expect(ajb.ConnectionLost, store.get_logbook(saved.uuid))
        await asyncio.to_thread(postgres_server.start)
        assert await store.get_logbook(saved.uuid) == saved
    port = postgres_server.port
    for bad in [
        url.replace(SECRET, WRONG),
        f"postgresql://nobody:{OTHER}@127.0.0.1:{port}/postgres",
        f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/x?connect_timeout=1",
    ]:
        await seen.expect(ajb.JobBoardError, book.connect(bad))
    for bad in [
        f"{url}&colour=blue",
        f"{url}&password={OTHER}",
        f"{url}&sslrootcert=/nonexistent",
        f"postgresql://postgres:{SECRET[:4]}/{SECRET[4:]}@127.0.0.1:{port}/x",
    ]:
        await seen.expect(ValueError, book.connect(bad))
    assert seen.errors == 9
    seen.assert_clean(logs)


def test_cli_postgres(postgres_server: PrivateServer, seen: Seen) -> None:
    port = postgres_server.port
    for books in [
        f"postgresql://postgres:{WRONG}@127.0.0.1:{port}/postgres",
        f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/x?connect_timeout=1",
    ]:
        board = f"memory://{uuid.uuid4().hex}"
        seen.texts.append(run_cli(board, "show", str(uuid.uuid4()), "--books", books))
    seen.assert_clean(Collector())
