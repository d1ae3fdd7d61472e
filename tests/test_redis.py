"""What only the Redis adapter can show: dead processes, restarts, lost replies.

Each test runs its own redis-server on a free port (see ``redis_helpers``);
the machine's shared server is only started, if it is not running, and never
touched otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import aiojobboard as ajb

from .redis_helpers import DroppingProxy, RedisServer, ensure_shared_redis
from .tls_helpers import make_certificates

LEASE = 0.5


@pytest.fixture(scope="module", autouse=True)
def _redis_installed() -> None:
    ensure_shared_redis()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    return f"{server.url}?namespace=t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=server.port, decode_responses=True)
    yield client
    await client.aclose()


def namespace_of(url: str) -> str:
    return url.rpartition("namespace=")[2].partition("&")[0]


# -- processes that die ------------------------------------------------------
CLAIMER = """
import asyncio, sys
import aiojobboard as ajb

async def main():
    board = await ajb.connect(sys.argv[1])
    claim = await board.claim_next("doomed", lease=float(sys.argv[2]))
    print(claim.job.uuid, claim.token, claim.attempt, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_claimers_job_goes_to_another_process(url: str) -> None:
    async with ajb.connect(url) as board:
        job = await board.post("work")
        claimer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLAIMER, url, "1.0", stdout=subprocess.PIPE
        )
        try:
            assert claimer.stdout is not None
            line = await asyncio.wait_for(claimer.stdout.readline(), 30)
            claimed_uuid, token, attempt = line.decode().split()
            assert (claimed_uuid, attempt) == (job.uuid, "1")
            assert await board.find_owner(job) == "doomed"
        finally:
            claimer.send_signal(signal.SIGKILL)
            await claimer.wait()
        assert await board.find_owner(job) == "doomed"
        await board.wait(timeout=10)
        claim = await board.claim_next("survivor")
        assert claim is not None
        assert claim.job == job
        assert claim.attempt == 2
        assert claim.token > int(token)
        await claim.consume()
        assert await board.job_count() == 0


PRESENT = """
import asyncio, sys
import aiojobboard as ajb

async def main():
    board = await ajb.connect(sys.argv[1])
    board._presence_ttl = float(sys.argv[2])
    claim = await board.claim_next("doomed")
    print(claim.job.uuid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_processs_presence_runs_out(url: str) -> None:
    async with ajb.connect(url) as board:
        job = await board.post("work")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PRESENT, url, "2.0", stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line.decode().split() == [job.uuid]
            for _ in range(100):
                found = await board.workers()
                if found:
                    break
                await asyncio.sleep(0.05)
            assert [(w.name, w.pid, w.holding) for w in found] == [
                ("doomed", process.pid, (job.uuid,))
            ]
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        killed = time.monotonic()
        while await board.workers():
            assert time.monotonic() - killed < 5, "the record outlived its deadline"
            await asyncio.sleep(0.1)
        # Refreshed at least every third of its lifetime, it outlived its
        # process by at least the rest.
        assert time.monotonic() - killed > 0.5


async def test_presence_is_withdrawn_on_close(url: str, raw: aioredis.Redis) -> None:
    board = await ajb.connect(url)
    try:
        await board.claim(await board.post("x"), "w")
        prefix = f"ajb:{{{namespace_of(url)}}}:"
        await wait_for_async(lambda: raw.hlen(prefix + "workers"), 1)
    finally:
        await board.close()
    assert await raw.hlen(prefix + "workers") == 0
    assert await raw.zcard(prefix + "workers:due") == 0


async def wait_for_async(read: object, value: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while await read() != value:  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def stall(seconds: float) -> None:
    """Block the event loop, as a CPU-bound handler would."""
    time.sleep(seconds)


async def test_a_stalled_loop_gets_claim_lost(url: str) -> None:
    async with ajb.connect(url) as board, ajb.connect(url) as other:
        job = await board.post("slow")
        with pytest.raises(ajb.ClaimLost, match="lease"):
            async with board.claim(job, "staller", lease=LEASE):
                stall(LEASE * 2)
                await asyncio.sleep(5)
        taken = await other.claim(job, "next")
        assert taken.attempt == 2
        await taken.consume()


async def test_expiry_is_announced_without_any_claim_call(url: str) -> None:
    async with ajb.connect(url) as dead, ajb.connect(url) as watcher:
        job = await dead.post("x")
        claim = await dead.claim(job, "dead", lease=LEASE)
        dead._start_keeper = lambda claim: None  # type: ignore[method-assign]
        await dead._stop_keeper()

        async def first_expiry() -> ajb.JobEvent:
            async for event in watcher.events():
                if event.kind is ajb.EventKind.EXPIRED:
                    return event
            raise AssertionError("events() ended")

        event = await asyncio.wait_for(first_expiry(), 10)
        assert (event.job_uuid, event.owner, event.token) == (
            job.uuid,
            "dead",
            claim.token,
        )


# -- the server restarts ------------------------------------------------------
async def test_claims_lost_in_a_restart_are_reported(
    server: RedisServer, url: str
) -> None:
    async with ajb.connect(url) as board:
        job = await board.post("x")
        started = asyncio.Event()

        async def hold() -> None:
            async with board.claim(job, "w", lease=1.0):
                started.set()
                await asyncio.sleep(30)

        holder = asyncio.create_task(hold())
        await started.wait()
        server.restart()  # without persistence: the board is empty again
        with pytest.raises(ajb.ClaimLost):
            await asyncio.wait_for(holder, 10)
        assert await board.job_count() == 0
        again = await board.post("after")
        claim = await board.claim_next("w")
        assert claim is not None
        assert claim.job == again
        await claim.consume()


async def test_boards_carry_on_after_a_restart(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always"
    )
    server.start()
    url = f"{server.url}?namespace=restart&lease=1"
    try:
        async with ajb.connect(url) as producer, ajb.connect(url) as consumer:
            done: list[str] = []

            async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
                await asyncio.sleep(0.01)
                done.append(job.name)

            worker = ajb.Worker(consumer, handle, name="w", concurrency=4)
            running = asyncio.create_task(worker.run())
            await producer.post_many([{"name": f"a{i}"} for i in range(20)])
            await wait_for(lambda: len(done) >= 5)
            server.restart()
            await post_despite_restart(producer, [f"b{i}" for i in range(20)])
            await wait_for(lambda: {f"b{i}" for i in range(20)} <= set(done))
            await wait_for(lambda: {f"a{i}" for i in range(20)} <= set(done))
            await worker.stop()
            await running
            assert await producer.job_count() == 0
    finally:
        server.stop()


async def post_despite_restart(board: ajb.JobBoard, names: list[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            await board.post_many([{"name": name} for name in names])
            return
        except ajb.ConnectionLost:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_events_resume_after_a_restart(server: RedisServer, url: str) -> None:
    async with ajb.connect(url) as board, ajb.connect(url) as poster:
        await board.post("before")
        seen: list[str] = []

        async def follow() -> None:
            async for job in board.iterjobs(only_unclaimed=True, follow=True):
                seen.append(job.name)
                if job.name == "after":
                    return

        follower = asyncio.create_task(follow())
        await wait_for(lambda: seen == ["before"])
        server.restart()
        await post_despite_restart(poster, ["after"])
        await asyncio.wait_for(follower, 15)
        assert seen == ["before", "after"]


async def test_operations_during_an_outage_raise_connection_lost(
    server: RedisServer, url: str
) -> None:
    async with ajb.connect(f"{url}&retries=1&connect_timeout=0.5") as board:
        await board.post("x")
        server.stop()
        with pytest.raises(ajb.ConnectionLost) as caught:
            await board.post("y")
        assert isinstance(caught.value.__cause__, Exception)
        assert "redis" in type(caught.value.__cause__).__module__
        server.start()
        await post_despite_restart(board, ["z"])


# -- lost replies --------------------------------------------------------------
@pytest.fixture
async def proxy(server: RedisServer) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(server.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def proxied(proxy: DroppingProxy, url: str) -> AsyncIterator[ajb.JobBoard]:
    query = url.partition("?")[2]
    async with ajb.connect(f"redis://127.0.0.1:{proxy.port}/0?{query}") as board:
        yield board


async def test_a_cancel_lost_with_the_connection_still_ends_the_claim(
    proxied: ajb.JobBoard, proxy: DroppingProxy, url: str
) -> None:
    holder = proxied
    async with ajb.connect(url) as operator:
        job = await holder.post("x")
        claim = await holder.claim(job, "w")
        # The TRASHED message is kept back, then lost with the connection.
        proxy.hold()
        await operator.cancel(job, "stop it")
        await proxy.cut()
        proxy.release()
        proxy.mend()
        await wait_for(lambda: claim.lost, timeout=10)
        assert claim.cancel_reason == "stop it"
        assert claim.lost_reason is not None
        assert "stop it" in claim.lost_reason


async def test_a_worker_outlives_a_cut_connection(
    proxied: ajb.JobBoard,
    proxy: DroppingProxy,
    url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []
    ran = asyncio.Event()

    async def handler(job: ajb.Job, claim: ajb.Claim) -> None:
        done.append(job.name)
        ran.set()

    def told(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    worker = ajb.Worker(proxied, handler, name="w", concurrency=2)
    running: asyncio.Task[None] | None = None
    try:
        with caplog.at_level(logging.WARNING, logger="aiojobboard.worker"):
            await proxy.cut()
            running = asyncio.create_task(worker.run())
            async with asyncio.timeout(30):
                while not told("cannot reach its board"):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            async with ajb.connect(url) as direct:
                await direct.post("after the outage")
            assert not running.done()
            assert done == []
            proxy.mend()
            async with asyncio.timeout(30):
                await ran.wait()
        assert done == ["after the outage"]
        assert told("cannot reach its board") == 1
        assert told("reaches its board again") == 1
    finally:
        await worker.stop()
        if running is not None:
            await running


async def test_a_lost_claim_reply_does_not_claim_twice(
    proxied: ajb.JobBoard, proxy: DroppingProxy, url: str
) -> None:
    job = await proxied.post("x")
    proxy.arm(b"claimer-one")
    claim = await proxied.claim(job, "claimer-one")
    assert proxy.dropped == 1
    assert claim.attempt == 1
    async with ajb.connect(url) as direct:
        assert await direct.find_owner(job) == "claimer-one"
    await claim.abandon()
    again = await proxied.claim(job, "claimer-two")
    assert again.attempt == 2


async def test_a_lost_claim_next_reply_claims_one_job(
    proxied: ajb.JobBoard, proxy: DroppingProxy
) -> None:
    first, second = await proxied.post("first"), await proxied.post("second")
    proxy.arm(b"next-claimer")
    claim = await proxied.claim_next("next-claimer")
    assert proxy.dropped == 1
    assert claim is not None
    assert claim.job == first
    assert claim.attempt == 1
    assert await second.get_state() is ajb.JobState.UNCLAIMED


async def test_a_lost_consume_reply_is_not_an_error(
    proxied: ajb.JobBoard, proxy: DroppingProxy
) -> None:
    job = await proxied.post("x")
    claim = await proxied.claim(job, "consumer-one")
    proxy.arm(b"consumer-one")
    await claim.consume()
    assert proxy.dropped == 1
    assert claim.state is ajb.ClaimState.CONSUMED
    assert await proxied.job_count() == 0


async def test_a_lost_post_reply_posts_once(
    proxied: ajb.JobBoard, proxy: DroppingProxy
) -> None:
    proxy.arm(b"posted-once")
    job = await proxied.post("posted-once")
    assert proxy.dropped == 1
    assert [j.uuid async for j in proxied.iterjobs()] == [job.uuid]
    assert job.sequence == 1


async def test_a_post_retried_after_its_job_was_consumed_posts_nothing(
    url: str,
) -> None:
    # The client sends a script call again, the same, when its reply was lost;
    # here the job is consumed before that second send arrives.
    async with ajb.connect(url) as board:
        sent: list[tuple[object, ...]] = []
        run = board._run  # type: ignore[attr-defined]

        async def recording(name: str, *args: object) -> object:
            if name == "POST":
                sent.append(args)
            return await run(name, *args)

        board._run = recording  # type: ignore[attr-defined]
        job = await board.post("once")
        claim = await board.claim_next("w")
        assert claim is not None
        assert claim.job == job
        await claim.consume()
        # Sequences travel as strings: Lua's encoder keeps 14 digits only.
        assert await run("POST", *sent[0]) == json.dumps([str(job.sequence)])
        assert await board.job_count() == 0
        assert await job.get_state() is ajb.JobState.COMPLETE


async def test_a_follower_catches_up_on_posts_it_missed(
    proxied: ajb.JobBoard, proxy: DroppingProxy, url: str
) -> None:
    seen: list[str] = []

    async def follow() -> None:
        async for job in proxied.iterjobs(only_unclaimed=True, follow=True):
            seen.append(job.name)
            if job.name == "missed":
                return

    follower = asyncio.create_task(follow())
    async with ajb.connect(url) as poster:
        await poster.post("heard")
        await wait_for(lambda: seen == ["heard"])
        await proxy.cut()
        await poster.post("missed")
        await asyncio.sleep(0.5)
        proxy.mend()
        await asyncio.wait_for(follower, 15)
    assert seen == ["heard", "missed"]


# -- garbage -------------------------------------------------------------------
async def test_garbage_is_skipped_with_a_warning(
    url: str, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"ajb:{{{namespace_of(url)}}}:"
    async with ajb.connect(url) as board:
        good = await board.post("good")
        await raw.hset(f"{prefix}job:not-json", mapping={"p": "{oops", "s": 1})
        await raw.set(f"{prefix}job:a-string", "hello")
        await raw.hset(f"{prefix}job:not-a-job", mapping={"p": '{"a": 1}', "s": 2})
        for i, name in enumerate(["not-json", "a-string", "not-a-job", "missing"]):
            await raw.zadd(f"{prefix}all", {name: i})
            await raw.zadd(f"{prefix}ready", {name: i})
        with caplog.at_level(logging.WARNING, "aiojobboard.boards.redis"):
            assert [job.name async for job in board.iterjobs()] == ["good"]
            unclaimed = [job.name async for job in board.iterjobs(only_unclaimed=True)]
            assert unclaimed == ["good"]
            claim = await board.claim_next("w")
        assert claim is not None
        assert claim.job == good
        assert "not-json" in caplog.text
        assert "a-string" in caplog.text
        await claim.consume()
        assert await board.claim_next("w") is None
        later = await board.post("later")
        seen = []
        async for job in board.iterjobs(only_unclaimed=True, follow=True):
            seen.append(job)
            break
        assert seen == [later]


async def test_garbage_in_a_gathered_claim_keeps_owners_apart(
    url: str, raw: aioredis.Redis
) -> None:
    prefix = f"ajb:{{{namespace_of(url)}}}:"
    async with ajb.connect(url) as board:
        for i in range(2):
            await board.post(f"good-{i}")
        # Passes the server's quick look, fails the client's full one.
        await raw.hset(f"{prefix}job:bad", mapping={"p": '{"a": 1}', "s": 0})
        await raw.zadd(f"{prefix}all", {"bad": 0})
        await raw.zadd(f"{prefix}ready", {"bad": 0})
        claims = await asyncio.gather(
            board.claim_next("alice"), board.claim_next("bob")
        )
        assert {claim.owner for claim in claims if claim} == {"alice", "bob"}
        for claim in claims:
            assert claim is not None
            assert await board.find_owner(claim.job) == claim.owner
            await claim.consume()
        assert await board.job_count() == 1


# -- connecting ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("namespace=a{b}", "namespace"),
        ("max_connections=0", "max_connections"),
        ("max_connections=1", "max_connections"),
        ("pool_timeout=x", "pool_timeout"),
        ("socket_timeout=-1", "socket_timeout"),
        ("retries=-1", "retries"),
        ("ssl_ca_certs=/x", "ssl_ca_certs"),
        ("reconcile=0", "reconcile"),
        ("health_check_interval=1e-9", "health_check_interval"),
    ],
)
async def test_bad_options_are_named(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        await ajb.connect(f"redis://127.0.0.1:1/0?{query}")


async def test_bad_urls_are_named() -> None:
    with pytest.raises(ValueError, match="database"):
        await ajb.connect("redis://127.0.0.1:6379/zero")
    with pytest.raises(ValueError, match="port"):
        await ajb.connect("redis://127.0.0.1:http/0")
    with pytest.raises(ValueError, match="service"):
        await ajb.connect("redis+sentinel://127.0.0.1:26379")


async def test_unreachable_server_is_connection_lost() -> None:
    from .redis_helpers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0?retries=0&connect_timeout=0.5"
    with pytest.raises(ajb.ConnectionLost):
        await ajb.connect(url)


async def test_passwords_stay_out_of_reprs_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "acl", "--requirepass", "s3cret-pw")
    server.start()
    try:
        base = f"redis://default:s3cret-pw@127.0.0.1:{server.port}/0"
        with caplog.at_level(logging.DEBUG):
            async with ajb.connect(f"{base}?namespace=acl") as board:
                job = await board.post("x")
                claim = await board.claim(job, "w")
                assert "s3cret-pw" not in repr(board)
                assert "s3cret-pw" not in board.url
                await claim.consume()
            wrong = base.replace("s3cret-pw", "wrong-pw")
            with pytest.raises(ajb.JobBoardError, match="credentials") as caught:
                await ajb.connect(f"{wrong}?retries=0")
            assert "wrong-pw" not in str(caught.value)
        assert "s3cret-pw" not in caplog.text
        assert "wrong-pw" not in caplog.text
    finally:
        server.stop()


async def test_a_small_pool_waits_instead_of_failing(url: str) -> None:
    async with ajb.connect(f"{url}&max_connections=2") as board:
        await asyncio.gather(*(board.post(f"j{i}") for i in range(100)))
        assert await board.job_count() == 100


async def test_every_key_shares_one_hash_tag(url: str, raw: aioredis.Redis) -> None:
    namespace = namespace_of(url)
    async with ajb.connect(url) as board:
        claim = await board.claim(await board.post("x"), "w")
        await board.post("y")
        keys = [key async for key in raw.scan_iter(match="*")]
        await claim.abandon()
    assert keys
    for key in keys:
        assert key.startswith(f"ajb:{{{namespace}}}:"), key


async def test_many_boards_drain_one_namespace(url: str) -> None:
    boards = [await ajb.connect(url) for _ in range(3)]
    try:
        await boards[0].post_many([{"name": f"j{i}"} for i in range(300)])
        taken: list[str] = []

        async def drain(board: ajb.JobBoard, who: str) -> None:
            while (claim := await board.claim_next(who)) is not None:
                taken.append(claim.job.uuid)
                await claim.consume()

        await asyncio.gather(
            *(drain(b, f"w{i}-{j}") for i, b in enumerate(boards) for j in range(8))
        )
        assert len(taken) == 300
        assert len(set(taken)) == 300
    finally:
        for board in boards:
            await board.close()


async def test_sentinel_finds_the_master(tmp_path: Path) -> None:
    master = RedisServer(tmp_path / "master")
    master.start()
    config = tmp_path / "sentinel" / "sentinel.conf"
    config.parent.mkdir()
    config.write_text(
        f"sentinel monitor board 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds board 5000\n"
    )
    sentinel = RedisServer(tmp_path / "sentinel", "--sentinel")
    sentinel.config = config
    try:
        sentinel.start()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/board/0?namespace=s"
        async with ajb.connect(url) as board:
            job = await board.post("x")
            async with board.claim(job, "w") as claim:
                assert claim.attempt == 1
            assert await board.job_count() == 0
    finally:
        sentinel.stop()
        master.stop()


async def test_tls(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs)
    server = RedisServer(
        tmp_path / "tls",
        *("--tls-cert-file", str(certs / "server.pem")),
        *("--tls-key-file", str(certs / "server.key")),
        *("--tls-ca-cert-file", str(certs / "ca.pem")),
        *("--tls-auth-clients", "no"),
    )
    server.tls = True
    server.start()
    try:
        base = f"rediss://127.0.0.1:{server.port}/0?namespace=tls"
        async with ajb.connect(f"{base}&ssl_ca_certs={certs / 'ca.pem'}") as board:
            job = await board.post("x")
            assert await board.find_owner(job) is None
        with pytest.raises(ajb.ConnectionLost):
            await ajb.connect(f"{base}&retries=0")
    finally:
        server.stop()


async def test_tls_with_an_acl_user_whose_password_is_in_the_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs)
    server = RedisServer(
        tmp_path / "tls-acl",
        *("--tls-cert-file", str(certs / "server.pem")),
        *("--tls-key-file", str(certs / "server.key")),
        *("--tls-ca-cert-file", str(certs / "ca.pem")),
        *("--tls-auth-clients", "no"),
        # Only alice may touch the board's keys and channel; nobody logs in
        # without a password; bob may log in but has no right to the board.
        *("--user", "default", "off"),
        *("--user", "alice", "on", ">p@ss/word", "~ajb:{acl}:*", "&ajb:{acl}:*"),
        *("+@all",),
        *("--user", "bob", "on", ">bob-pw", "~other:*", "&other:*", "+@all"),
    )
    server.tls = True
    server.start()
    ca = f"ssl_ca_certs={certs / 'ca.pem'}"
    where = f"127.0.0.1:{server.port}/0?namespace=acl&{ca}&retries=0"
    try:
        with caplog.at_level(logging.DEBUG):
            async with ajb.connect(f"rediss://alice:p%40ss%2Fword@{where}") as board:
                claim = await board.claim(await board.post("x"), "w")
                await claim.consume()
                assert await board.job_count() == 0
                assert "p@ss" not in repr(board)
                assert "p%40ss" not in board.url
            with pytest.raises(ajb.JobBoardError, match="credentials") as wrong:
                await ajb.connect(f"rediss://alice:wrong-pw@{where}")
            with pytest.raises(
                ajb.JobBoardError, match="'bob' use the board's keys"
            ) as denied:
                await ajb.connect(f"rediss://bob:bob-pw@{where}")
            with pytest.raises(ajb.ConnectionLost):
                await ajb.connect(f"redis://alice:p%40ss%2Fword@{where.split('?')[0]}")
        assert "wrong-pw" not in str(wrong.value)
        assert "bob-pw" not in str(denied.value)
        assert "acl" in str(denied.value)
        for secret in ("p@ss", "p%40ss", "wrong-pw", "bob-pw"):
            assert secret not in caplog.text
    finally:
        server.stop()


def test_the_service_script_is_quick_when_redis_runs() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts/services/redis"
    assert os.access(script, os.X_OK)
    subprocess.run([str(script)], check=True, timeout=10)
