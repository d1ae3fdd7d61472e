"""Redis with a replica: failovers through Sentinel, lost writes, and ``replicas=``.

Each test runs its own primary, replica and, where it needs them, three
Sentinels (see ``redis_helpers.SentinelGroup``). A write is lost for real by
holding back the replication stream in a proxy between primary and replica,
then killing the primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

import aiojobboard as ajb

from .redis_helpers import DroppingProxy, SentinelGroup, cli, ensure_shared_redis

_T = TypeVar("_T")

#: Quick to notice a dead primary, so that a failover's calls fail fast.
FAST = "&socket_timeout=1&connect_timeout=0.5"


@pytest.fixture(scope="module", autouse=True)
def _redis_installed() -> None:
    ensure_shared_redis()


@pytest.fixture
def namespace() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def linked(tmp_path: Path) -> AsyncIterator[tuple[SentinelGroup, DroppingProxy]]:
    """A Sentinel group whose replica follows its primary through a proxy."""
    group = SentinelGroup(tmp_path)
    proxy = DroppingProxy(group.primary.port)
    await proxy.start()
    try:
        await asyncio.to_thread(group.start, proxy.port)
        yield group, proxy
    finally:
        await proxy.close()
        group.stop()


async def until_served(call: Callable[[], Awaitable[_T]], timeout: float = 15) -> _T:
    """Call again while the board cannot reach a primary."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except ajb.ConnectionLost:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def lose_the_primary(group: SentinelGroup, proxy: DroppingProxy) -> None:
    """Kill the primary with what the proxy held back, and wait for the failover."""
    group.kill_primary()
    await proxy.cut()
    await asyncio.to_thread(group.wait_for_failover)


# -- following a failover -----------------------------------------------------


async def test_boards_follow_a_failover(tmp_path: Path, namespace: str) -> None:
    group = SentinelGroup(tmp_path)
    await asyncio.to_thread(group.start)
    url = group.url(namespace, "&lease=3" + FAST)
    posted: set[str] = set()
    finished: dict[int, str] = {}
    killed_at = 0.0
    consumed_before_kill = 0
    consumed_after_kill = 0
    producing = True
    busy = asyncio.Event()
    handled: set[str] = set()

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        await asyncio.sleep(0.01)
        handled.add(job.uuid)

    async def produce(board: ajb.JobBoard) -> None:
        nonlocal producing
        for batch in range(40):
            items = [
                {"name": "job", "details": {"n": batch * 10 + i}} for i in range(10)
            ]
            jobs = await until_served(partial(board.post_many, items))
            posted.update(job.uuid for job in jobs)
            await asyncio.sleep(0.05)
        producing = False

    async def consume(board: ajb.JobBoard, who: str) -> None:
        nonlocal consumed_after_kill
        while producing or await until_served(board.job_count) > 0:
            try:
                claim = await board.claim_next(who)
                if claim is None:
                    await asyncio.sleep(0.05)
                    continue
                await asyncio.sleep(0.01)
                await claim.consume()
            except (ajb.NotOwner, ajb.ClaimLost):
                # A claim the new primary does not know of: never a success.
                continue
            except ajb.ConnectionLost:
                # No primary yet, or a finish whose fate is unknown: the claim
                # is given up and its job returns with its lease.
                await asyncio.sleep(0.1)
                continue
            # Tokens are unique on the board: no two finishes may share one.
            assert claim.token not in finished, (claim, finished[claim.token])
            finished[claim.token] = claim.job.uuid
            if len(finished) == 100:
                busy.set()
            if killed_at:
                consumed_after_kill += 1

    async def kill_when_busy() -> None:
        nonlocal killed_at, consumed_before_kill
        await busy.wait()
        killed_at = time.monotonic()
        consumed_before_kill = worker.consumed
        group.kill_primary()

    try:
        boards = [await ajb.connect(url) for _ in range(4)]
        consumers = [
            consume(board, f"b{b}-c{c}")
            for b, board in enumerate(boards[:3])
            for c in range(4)
        ]
        # A Worker beside them, which must outlive the failover too.
        worker = ajb.Worker(boards[3], handle, name="worker", concurrency=4)
        working = asyncio.create_task(worker.run())
        async with asyncio.timeout(30):
            await asyncio.gather(produce(boards[0]), kill_when_busy(), *consumers)
        assert not working.done()
        await worker.stop()
        await working
        left = {job.uuid async for job in boards[1].iterjobs()}
        assert posted <= set(finished.values()) | handled | left
        assert consumed_after_kill > 0
        assert worker.consumed > consumed_before_kill
        assert len(posted) == 400
        for board in boards:
            await board.close()
    finally:
        group.stop()


async def test_a_lossy_failover_fences_a_stale_holder(
    linked: tuple[SentinelGroup, DroppingProxy], namespace: str
) -> None:
    group, proxy = linked
    url = group.url(namespace, "&lease=30" + FAST)
    async with ajb.connect(url) as board, ajb.connect(url) as other:
        job = await board.post("kept")
        await asyncio.to_thread(_wait_for_replica, group)
        # What follows reaches the primary only: the failover loses it.
        proxy.hold()
        vanished = await board.post("vanished")
        stale = await board.claim(job, "worker")
        await lose_the_primary(group, proxy)

        fresh = await until_served(lambda: other.claim(job, "worker"))
        assert fresh.token > stale.token
        later = await until_served(lambda: other.post("later"))
        assert later.sequence > vanished.sequence
        assert [j.name async for j in other.iterjobs()] == ["kept", "later"]
        # Same job, same owner name: only the token tells them apart.
        with pytest.raises(ajb.NotOwner):
            await stale.consume()
        assert stale.lost
        await fresh.consume()
        assert [j.name async for j in other.iterjobs()] == ["later"]


async def test_a_claim_the_new_primary_never_saw_is_lost(
    linked: tuple[SentinelGroup, DroppingProxy], namespace: str
) -> None:
    group, proxy = linked
    url = group.url(namespace, "&lease=4" + FAST)
    async with ajb.connect(url) as board:
        job = await board.post("job")
        await asyncio.to_thread(_wait_for_replica, group)
        proxy.hold()
        with pytest.raises(ajb.ClaimLost):
            async with board.claim(job, "worker") as claim:
                await lose_the_primary(group, proxy)
                # The renewal a third into the lease finds the job unclaimed.
                await asyncio.sleep(4)
        assert claim.lost
        assert await until_served(board.job_count) == 1
        again = await board.claim_next("worker")
        assert again is not None
        assert again.attempt == 1
        await again.consume()


def _wait_for_replica(group: SentinelGroup) -> None:
    deadline = time.monotonic() + 10
    while not group.replica_in_step():
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.02)


# -- waiting for replicas -----------------------------------------------------


@pytest.fixture
async def waiting(
    tmp_path: Path, namespace: str
) -> AsyncIterator[tuple[ajb.JobBoard, DroppingProxy]]:
    """A board that waits for one replica, which follows through a proxy."""
    group = SentinelGroup(tmp_path)
    proxy = DroppingProxy(group.primary.port)
    await proxy.start()
    try:
        await asyncio.to_thread(group.start, proxy.port, False)
        url = f"{group.primary.url}?namespace={namespace}&replicas=1&replica_timeout=1"
        async with ajb.connect(url) as board:
            yield board, proxy
    finally:
        await proxy.close()
        group.stop()


async def test_confirmed_changes_succeed(
    waiting: tuple[ajb.JobBoard, DroppingProxy],
) -> None:
    board, _ = waiting
    await board.post_many([{"name": str(i)} for i in range(3)])
    await board.post("one more")
    claims = await asyncio.gather(*(board.claim_next(f"w{i}") for i in range(3)))
    for claim in claims:
        assert claim is not None
        await claim.consume()
    claim = await board.claim(await _first(board), "w")
    await claim.abandon()
    await board.cancel(await board.post("cancelled"), "not wanted")
    assert await board.job_count() == 1


async def _first(board: ajb.JobBoard) -> ajb.Job:
    async for job in board.iterjobs():
        return job
    raise AssertionError("the board is empty")


async def test_scripts_a_server_forgot_are_loaded_again(
    waiting: tuple[ajb.JobBoard, DroppingProxy],
) -> None:
    board, _ = waiting
    port = urlsplit(board.url).port
    assert port is not None
    # As on a replica just promoted, which never loaded the board's scripts.
    await asyncio.to_thread(cli, port, "SCRIPT", "FLUSH")
    job = await board.post("x")
    assert await board.find_owner(job) is None


async def test_an_unconfirmed_post_fails_but_stays_on_the_primary(
    waiting: tuple[ajb.JobBoard, DroppingProxy],
) -> None:
    board, proxy = waiting
    proxy.hold()
    with pytest.raises(ajb.ConnectionLost, match="fewer than 1 replicas confirmed"):
        await board.post("unconfirmed")
    assert [job.name async for job in board.iterjobs()] == ["unconfirmed"]
    proxy.release()
    await board.post("confirmed")
    assert await board.job_count() == 2


async def test_an_unconfirmed_claim_is_given_back(
    waiting: tuple[ajb.JobBoard, DroppingProxy],
) -> None:
    board, proxy = waiting
    job = await board.post("x")
    proxy.hold()
    with pytest.raises(ajb.ConnectionLost, match="given back"):
        await board.claim_next("w")
    assert await board.find_owner(job) is None
    with pytest.raises(ajb.ConnectionLost, match="given back"):
        await board.claim(job, "w")
    assert await board.find_owner(job) is None
    proxy.release()
    claim = await board.claim_next("w")
    assert claim is not None
    assert claim.job.uuid == job.uuid
    await claim.consume()


async def test_an_unconfirmed_consume_is_logged(
    waiting: tuple[ajb.JobBoard, DroppingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    board, proxy = waiting
    await board.post("x")
    claim = await board.claim_next("w")
    assert claim is not None
    proxy.hold()
    with caplog.at_level(logging.WARNING, "aiojobboard.boards.redis"):
        await claim.consume()
    assert claim.state is ajb.ClaimState.CONSUMED
    assert "may bring their jobs back" in caplog.text
    assert await board.job_count() == 0


async def test_an_unconfirmed_cancel_is_logged(
    waiting: tuple[ajb.JobBoard, DroppingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    board, proxy = waiting
    job = await board.post("x")
    proxy.hold()
    with caplog.at_level(logging.WARNING, "aiojobboard.boards.redis"):
        await board.cancel(job, "not wanted")
    assert f"the cancel of job {job.uuid}" in caplog.text
    assert "may bring the job back" in caplog.text
    assert await board.job_count() == 0
    proxy.release()
    with pytest.raises(ajb.NotFound):
        await board.cancel(job)


async def test_an_unconfirmed_renewal_keeps_the_earlier_deadline(
    waiting: tuple[ajb.JobBoard, DroppingProxy],
) -> None:
    board, proxy = waiting
    job = await board.post("x")
    # Renewals reach the primary but no replica: the holder gives up when the
    # deadline the replica knows of passes, as if the renewals had failed.
    with pytest.raises(ajb.ClaimLost):
        async with board.claim(job, "w", lease=0.9) as claim:
            proxy.hold()
            await asyncio.sleep(2)
    assert claim.lost


# -- options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("replicas=-1", "'replicas' must be a whole number"),
        ("replicas=one", "'replicas' must be a whole number"),
        ("replica_timeout=0", "'replica_timeout'"),
        ("replicas=1&replica_timeout=10", "must be below 'socket_timeout'"),
    ],
)
async def test_bad_replica_options(options: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await ajb.connect(f"redis://127.0.0.1:1/0?{options}")


async def test_no_replica_waits_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="not available on redis\\+cluster"):
        await ajb.connect("redis+cluster://127.0.0.1:1?replicas=1")
