"""Garbage planted where a board or a book store keeps its data.

Whatever is written there behind the library's back is skipped with a WARNING
naming it, or refused with an error naming it; the good jobs and books around
it are neither lost nor held up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import aiojobboard as ajb
from aiojobboard.boards import _aiozk as zk
from aiojobboard.book import AtomDetail, BookStore, FlowDetail, LogBook

from .conftest import KITS, REDIS_URL, ZOOKEEPER_URL
from .redis_helpers import ensure_shared_redis
from .test_book_postgres import POSTGRES_URL, isolated_store, needs_postgres
from .zookeeper_helpers import answers_ruok


async def drain(board: ajb.JobBoard, names: list[str]) -> None:
    """The board still works: claim and consume exactly the good jobs."""
    done = []
    while (claim := await board.claim_next("worker")) is not None:
        done.append(claim.job.name)
        await claim.consume()
    assert sorted(done) == sorted(names)
    later = await board.post("later")
    async with board.claim(later, "worker"):
        pass


# -- Redis --------------------------------------------------------------------
@pytest.fixture
async def redis_board() -> AsyncIterator[tuple[ajb.JobBoard, aioredis.Redis, str]]:
    ensure_shared_redis()
    namespace = f"garbage-{uuid.uuid4().hex[:8]}"
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    async with ajb.connect(KITS["redis"].url(namespace)) as board:
        yield board, raw, f"ajb:{{{namespace}}}:"
    keys = [key async for key in raw.scan_iter(f"ajb:{{{namespace}}}:*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


async def test_redis_hash_fields_of_the_wrong_kind(
    redis_board: tuple[ajb.JobBoard, aioredis.Redis, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    board, raw, prefix = redis_board
    good = [await board.post(f"good-{i}", {"i": i}) for i in range(3)]
    posting = str(await raw.hget(f"{prefix}job:{good[0].uuid}", "p"))
    planted: dict[str, dict[Any, Any]] = {
        "bad-sequence": {"p": posting.replace(good[0].uuid, "bad-sequence"), "s": "x"},
        "no-sequence": {"p": posting.replace(good[0].uuid, "no-sequence")},
        "no-posting": {"s": 7, "a": "many"},
        "details-text": {
            "p": json.dumps({**json.loads(posting), "details": "{not json"}),
            "s": 8,
        },
        "a-list": {"p": "[1, 2]", "s": 9},
        # Another job's posting under a key of its own: not that job twice.
        "copy": {"p": posting, "s": 10},
    }
    for i, (name, fields) in enumerate(planted.items()):
        await raw.hset(f"{prefix}job:{name}", mapping=fields)
        await raw.zadd(f"{prefix}all", {name: i})
        await raw.zadd(f"{prefix}ready", {name: i})
    await raw.rpush(f"{prefix}job:a-redis-list", "x")
    await raw.zadd(f"{prefix}all", {"a-redis-list": 0})
    await raw.zadd(f"{prefix}ready", {"a-redis-list": 0})
    with caplog.at_level(logging.WARNING, "aiojobboard.boards.redis"):
        listed = [job.uuid async for job in board.iterjobs()]
        assert listed == [job.uuid for job in good]
        assert [job.uuid async for job in board.iterjobs(only_unclaimed=True)] == listed
        await drain(board, [job.name for job in good])
    for name in [*planted, "a-redis-list"]:
        assert f"skipping job {name} on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "aiojobboard.boards.redis"):
        assert [job.name async for job in board.iterjobs()] == []
    assert not caplog.records, "warned twice of the same key"
    assert await board.job_count() == len(planted) + 1


# -- ZooKeeper ----------------------------------------------------------------
async def delete_tree(raw: zk.Client, path: str) -> None:
    for child in await raw.children(path):
        await delete_tree(raw, f"{path}/{child}")
    await raw.multi([zk.Op.delete(path, -1)])


@pytest.fixture
async def zk_board() -> AsyncIterator[tuple[ajb.JobBoard, zk.Client, str]]:
    assert answers_ruok(int(ZOOKEEPER_URL.rpartition(":")[2]))
    path = f"/garbage-{uuid.uuid4().hex[:8]}"
    raw = zk.Client(
        ZOOKEEPER_URL.partition("://")[2],
        session_timeout=5,
        call_timeout=5,
        credentials=None,
        on_event=lambda event: None,
        on_state=lambda state: None,
    )
    await raw.start()
    try:
        async with ajb.connect(f"{ZOOKEEPER_URL}{path}") as board:
            yield board, raw, path
    finally:
        try:
            with contextlib.suppress(zk.NoNode):
                await delete_tree(raw, path)
        finally:
            await raw.close()


async def test_zookeeper_nodes_that_are_not_jobs(
    zk_board: tuple[ajb.JobBoard, zk.Client, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    board, raw, path = zk_board
    good = [await board.post(f"good-{i}", {"i": i}) for i in range(3)]
    names = await raw.children(f"{path}/jobs")
    first = next(name for name in names if good[0].uuid in name)
    posting, _ = await raw.get(f"{path}/jobs/{first}")
    acl = [zk.OPEN_ACL]
    planted = {
        f"{path}/jobs/2-not-json-0000009990": b"{oops",
        f"{path}/jobs/2-a-list-0000009991": b"[1, 2]",
        f"{path}/jobs/2-copy-0000009992": posting,
        f"{path}/jobs/2-binary-0000009993": b"\xff\xfe",
        f"{path}/jobs/not-a-job": b"{}",
        f"{path}/something-else": b"x",
        f"{path}/claims/2-no-such-job-0000009994": b'{"owner": "ghost"}',
    }
    for node, data in planted.items():
        await raw.create(node, data, acl)
    # A claim node that holds no claim, on a good job.
    second = next(name for name in names if good[1].uuid in name)
    await raw.create(f"{path}/claims/{second}", b"garbage", acl)
    async with ajb.connect(f"{ZOOKEEPER_URL}{path}") as other:
        with caplog.at_level(logging.WARNING, "aiojobboard.boards.zookeeper"):
            listed = [job.uuid async for job in other.iterjobs()]
            assert listed == [job.uuid for job in good]
            with pytest.raises(ajb.UnclaimableJob, match=second):
                await other.claim(good[1], "worker")
            await drain(other, [good[0].name, good[2].name])
        for node in ["2-not-json", "2-a-list", "2-copy", "2-binary", "not-a-job"]:
            assert node in caplog.text
        assert second in caplog.text
        # Outside jobs/, what names no job on the board is never read.
        for node in ["something-else", "2-no-such-job"]:
            assert node not in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, "aiojobboard.boards.zookeeper"):
            assert [job.name async for job in other.iterjobs()] == [good[1].name]
        assert not caplog.records, "warned twice of the same node"
    # The planted claim goes, by hand: the job it kept is claimable again.
    await raw.multi([zk.Op.delete(f"{path}/claims/{second}", -1)])
    async with board.claim(good[1], "worker"):
        pass


# -- PostgreSQL ---------------------------------------------------------------
@pytest.fixture
async def store() -> AsyncIterator[BookStore]:
    async for opened in isolated_store(POSTGRES_URL):
        yield opened


def a_book(name: str) -> LogBook:
    book = LogBook(name, meta={"k": 1})
    flow = FlowDetail("flow")
    flow.add(AtomDetail("atom", failure={"why": "x"}))
    book.add(flow)
    return book


@needs_postgres
@pytest.mark.parametrize(
    ("table", "column", "value", "field"),
    [
        ("ajb_logbooks", "meta", '"a string"', "meta"),
        ("ajb_logbooks", "meta", "[1, 2]", "meta"),
        ("ajb_logbooks", "name", None, "name"),
        ("ajb_flowdetails", "meta", "null", "meta"),
        ("ajb_atomdetails", "meta", "3", "meta"),
        ("ajb_atomdetails", "failure", '"boom"', "failure"),
    ],
)
async def test_postgres_rows_that_are_not_books(
    store: BookStore,
    table: str,
    column: str,
    value: str | None,
    field: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = await store.save_logbook(a_book("good"))
    bad = await store.save_logbook(a_book("bad"))
    flow = next(iter(bad))
    uuids = {
        "ajb_logbooks": bad.uuid,
        "ajb_flowdetails": flow.uuid,
        "ajb_atomdetails": next(iter(flow)).uuid,
    }
    schema = store.schema  # type: ignore[attr-defined]
    async with store._pool.acquire() as conn:  # type: ignore[attr-defined]
        if value is None:
            sql = f"UPDATE \"{schema}\".{table} SET {column} = '' WHERE uuid = $1"
            await conn.execute(sql, uuids[table])
        else:
            sql = f'UPDATE "{schema}".{table} SET {column} = $2::jsonb WHERE uuid = $1'
            await conn.execute(sql, uuids[table], value)
    with pytest.raises(ajb.JobBoardError) as caught:
        await store.get_logbook(bad.uuid)
    assert bad.uuid in str(caught.value)
    assert field in str(caught.value)
    if table != "ajb_logbooks":
        assert uuids[table] in str(caught.value)
        with pytest.raises(ajb.JobBoardError, match=uuids[table]):
            await store.get_flows_for_book(bad.uuid)
    if table == "ajb_atomdetails":
        with pytest.raises(ajb.JobBoardError, match=f"flow '{flow.uuid}'"):
            await store.get_atoms_for_flow(flow.uuid)
    assert await store.get_logbook(good.uuid) == good
    with caplog.at_level(logging.WARNING, "aiojobboard.book.postgres"):
        assert [book.uuid async for book in store.get_logbooks()] == [good.uuid]
    assert bad.uuid in caplog.text
    # Saving the book again mends it; the good one never changed.
    mended = await store.save_logbook(bad)
    assert await store.get_logbook(bad.uuid) == mended
    assert await store.get_logbook(good.uuid) == good
