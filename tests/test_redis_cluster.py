"""The Redis adapter on a real Redis Cluster of three masters.

One cluster, of servers of this module's own on free loopback ports, serves
every test here. The whole board contract runs on it unchanged, with each
test's board placed on the next master in turn, so that every master serves
some; the tests after it show what only a cluster can.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

import aiojobboard as ajb
from aiojobboard._connect import load_adapter
from aiojobboard.boards import _redis_scripts as scripts
from aiojobboard.boards.redis import RedisBoard

from . import test_contract
from .conftest import Kit, stall
from .redis_helpers import RedisCluster, free_port

LEASE = 0.5

# The contract's tests, collected again here with the fixtures below.
globals().update(
    {
        name: test
        for name, test in vars(test_contract).items()
        if name.startswith("test_")
    }
)


class Placer:
    """Names for boards whose hash tags land on the master asked for."""

    def __init__(self, cluster: RedisCluster) -> None:
        #: The port of the master of each slot, as the cluster itself says.
        self._owners = [0] * 16384
        for line in cluster.cli(cluster.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2].split(","):
                continue
            port = int(fields[1].partition("@")[0].rpartition(":")[2])
            for span in fields[8:]:
                first, _, last = span.partition("-")
                for slot in range(int(first), int(last or first) + 1):
                    self._owners[slot] = port
        self.masters = sorted(set(self._owners))
        self._turn = itertools.cycle(self.masters)

    def master_of(self, namespace: str) -> int:
        return self._owners[key_slot(f"ajb:{{{namespace}}}:all".encode())]

    def name_on(self, port: int) -> str:
        while True:
            name = f"test-{uuid.uuid4().hex[:12]}"
            if self.master_of(name) == port:
                return name

    def next_name(self) -> str:
        return self.name_on(next(self._turn))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    for port in cluster.ports:
        # ACL users are each node's own, so each learns the password.
        cluster.cli(port, "ACL", "SETUSER", "tester", "on", ">s3cret-pw", "~*")
        cluster.cli(port, "ACL", "SETUSER", "tester", "&*", "+@all")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def placer(cluster: RedisCluster) -> Placer:
    return Placer(cluster)


@pytest.fixture
def kit(cluster: RedisCluster) -> Kit:
    return Kit(cluster.url)


@pytest.fixture
def board_url(cluster: RedisCluster, placer: Placer) -> str:
    return cluster.url(placer.next_name())


def test_the_cluster_has_three_masters(cluster: RedisCluster, placer: Placer) -> None:
    assert placer.masters == sorted(cluster.ports)
    # The slot table read above agrees with the one the servers hash by.
    name = placer.name_on(placer.masters[0])
    slot = cluster.cli(cluster.ports[0], "CLUSTER", "KEYSLOT", f"ajb:{{{name}}}:all")
    assert int(slot) == key_slot(f"ajb:{{{name}}}:all".encode())


# -- boards on different masters -----------------------------------------------


async def exercise(url: str) -> None:
    """Post, claim in board order, consume, and lose a lease by stalling."""
    async with ajb.connect(url) as board, ajb.connect(url) as other:
        low = await board.post("low", priority="LOW")
        high = await board.post("high", priority="HIGH")
        first = await other.claim_next("w")
        assert first is not None
        assert first.job.uuid == high.uuid
        await first.consume()
        with pytest.raises(ajb.ClaimLost):
            async with board.claim(low, "slow", lease=LEASE):
                stall(LEASE * 1.5)
                await asyncio.sleep(5)
        again = await other.claim_next("w")
        assert again is not None
        assert again.attempt == 2
        await again.consume()
        assert await low.wait(timeout=2)
        assert await board.job_count() == 0


async def drain(url: str, count: int) -> list[str]:
    async with ajb.connect(url) as board:
        await board.post_many([{"name": f"j{i}"} for i in range(count)])
        taken = []
        while (claim := await board.claim_next("w")) is not None:
            taken.append(claim.job.name)
            await claim.consume()
        return taken


async def test_boards_on_different_masters(
    cluster: RedisCluster, placer: Placer
) -> None:
    names = [placer.name_on(port) for port in placer.masters]
    assert len({placer.master_of(name) for name in names}) == len(names) >= 2
    for name in names:
        await exercise(cluster.url(name))
    # A stalled loop would lapse the other boards' claims too: only the
    # draining runs at once.
    taken = await asyncio.gather(*(drain(cluster.url(name), 50) for name in names))
    assert taken == [[f"j{i}" for i in range(50)]] * len(names)


async def test_scripts_keep_undeclared_keys_on_the_boards_master(
    cluster: RedisCluster, placer: Placer
) -> None:
    # The scripts declare only the index of all jobs and no flags; every other
    # key they touch is found by name, which a cluster allows within the slot.
    assert not any(
        getattr(scripts, name).lstrip().startswith("#!") for name in scripts.__all__
    )
    name = placer.name_on(placer.masters[1])
    async with ajb.connect(cluster.url(name)) as board:
        job = await board.post("x")
        claim = await board.claim(job, "w")
        for port in placer.masters:
            async with aioredis.Redis(port=port, decode_responses=True) as node:
                keys = await node.keys(f"ajb:{{{name}}}:*")
                if port != placer.master_of(name):
                    assert keys == []
                    continue
                owner = await node.hget(f"ajb:{{{name}}}:job:{job.uuid}", "o")
            assert f"ajb:{{{name}}}:seq" in keys
            assert f"ajb:{{{name}}}:leases" in keys
            assert owner == "w"
        await claim.consume()


async def test_events_and_follow_reach_connections_on_every_node(
    cluster: RedisCluster, placer: Placer
) -> None:
    name = placer.name_on(placer.masters[2])
    # Each connection starts from a different node it was told of.
    urls = [
        f"redis+cluster://127.0.0.1:{port}?namespace={name}" for port in placer.masters
    ]
    boards = [await ajb.connect(url) for url in urls]
    try:
        seen: list[str] = []

        async def follow(board: ajb.JobBoard) -> None:
            async for found in board.iterjobs(follow=True):
                seen.append(found.uuid)
                return

        followers = [asyncio.create_task(follow(board)) for board in boards]
        await asyncio.sleep(0.1)
        job = await boards[0].post("x")
        await asyncio.wait_for(asyncio.gather(*followers), 2)
        assert seen == [job.uuid] * len(boards)
        waiter = asyncio.create_task(job.wait(timeout=5))
        claim = await boards[2].claim_next("w")
        assert claim is not None
        await claim.consume()
        assert await asyncio.wait_for(waiter, 2)
    finally:
        for board in boards:
            await board.close()


async def test_a_worker_drains_500_jobs(cluster: RedisCluster, placer: Placer) -> None:
    url = cluster.url(placer.next_name())
    async with ajb.connect(url) as board, ajb.connect(url) as poster:
        await poster.post_many([{"name": f"j{i}"} for i in range(500)])
        seen: list[str] = []

        async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
            seen.append(job.uuid)

        worker = ajb.Worker(board, handle, name="w", concurrency=32)
        task = asyncio.create_task(worker.run())
        jobs = [job async for job in poster.iterjobs()]
        done = await asyncio.gather(*(job.wait(timeout=20) for job in jobs))
        await worker.stop()
        await task
    assert all(done)
    assert len(seen) == len(set(seen)) == 500
    assert worker.consumed == 500


# -- URLs ------------------------------------------------------------------------


async def test_a_small_pool_waits_instead_of_failing(
    cluster: RedisCluster, placer: Placer
) -> None:
    url = cluster.url(placer.next_name())
    async with ajb.connect(f"{url}&max_connections=2") as board:
        jobs = await board.post_many([{"name": f"j{i}"} for i in range(100)])
        states = await asyncio.gather(*(job.get_state() for job in jobs))
        assert states == [ajb.JobState.UNCLAIMED] * 100
        counts = await asyncio.gather(*(board.job_count() for _ in range(20)))
        assert counts == [100] * 20


async def test_passwords_pass_and_stay_masked(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    hosts = ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    base = f"redis+cluster://tester:s3cret-pw@{hosts}"
    with caplog.at_level(logging.DEBUG):
        async with ajb.connect(f"{base}?namespace=acl") as board:
            claim = await board.claim(await board.post("x"), "w")
            assert "s3cret-pw" not in repr(board)
            assert "s3cret-pw" not in board.url
            await claim.consume()
        wrong = base.replace("s3cret-pw", "wrong-pw")
        with pytest.raises(ajb.ConnectionLost) as caught:
            await ajb.connect(f"{wrong}?namespace=acl&retries=0")
        assert "wrong-pw" not in str(caught.value)
    assert "s3cret-pw" not in caplog.text
    assert "wrong-pw" not in caplog.text


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("max_connections=1", "max_connections"),
        ("ssl_ca_certs=x", "ssl_ca_certs.*no TLS"),
        ("lease=0", "lease"),
        ("colour=red", "colour"),
    ],
)
async def test_bad_cluster_options_are_named(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        await ajb.connect(f"redis+cluster://127.0.0.1:7000?{query}")


async def test_a_database_number_is_refused() -> None:
    with pytest.raises(ValueError, match="database 0"):
        await ajb.connect("redis+cluster://127.0.0.1:7000/1")


async def test_an_unreachable_cluster_is_connection_lost() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}?retries=0&connect_timeout=0.5"
    with pytest.raises(ajb.ConnectionLost):
        await ajb.connect(url)


def test_the_scheme_is_registered() -> None:
    found = load_adapter("aiojobboard.boards", "redis+cluster://h:1", "board")
    assert found is RedisBoard
