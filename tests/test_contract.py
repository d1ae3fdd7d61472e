"""The board contract, run unchanged against every adapter under test."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

import pytest

import aiojobboard as ajb

from .conftest import LEASE, Kit, OpenBoard


async def names(board: ajb.JobBoard, **kwargs: Any) -> list[str]:
    return [job.name async for job in board.iterjobs(**kwargs)]


# -- posting -----------------------------------------------------------------


async def test_post_returns_the_job(board: ajb.JobBoard) -> None:
    job = await board.post("resize", {"image": "a.png", "sizes": [1, 2]})
    assert job.name == "resize"
    assert dict(job.details) == {"image": "a.png", "sizes": [1, 2]}
    assert job.priority is ajb.JobPriority.NORMAL
    assert job.created_on.tzinfo is not None
    assert job.created_on.utcoffset() == UTC.utcoffset(None)
    assert job.book_uuid is None
    assert job.book_name is None
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    assert await job.get_owner() is None
    assert await board.job_count() == 1


async def test_details_cannot_be_changed(board: ajb.JobBoard) -> None:
    details = {"a": 1}
    job = await board.post("x", details)
    details["a"] = 2
    assert job.details["a"] == 1
    with pytest.raises(TypeError):
        job.details["a"] = 3  # type: ignore[index]


async def test_sequence_and_uuid(board: ajb.JobBoard) -> None:
    jobs = [await board.post(f"j{i}") for i in range(5)]
    sequences = [job.sequence for job in jobs]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 5
    assert len({job.uuid for job in jobs}) == 5


@pytest.mark.parametrize(
    ("name", "details", "message"),
    [
        ("", None, "empty"),
        ("   ", None, "empty"),
        (42, None, "str"),
        ("x", ["not", "a", "mapping"], "mapping"),
        ("x", {"s": {1, 2}}, "set"),
        ("x", {"f": float("nan")}, "nan"),
        ("x", {"nested": {1: "int key"}}, "key"),
        ("x", {"o": object()}, "object"),
    ],
)
async def test_bad_postings_write_nothing(
    board: ajb.JobBoard, name: Any, details: Any, message: str
) -> None:
    await board.post("keep")
    with pytest.raises(ajb.InvalidJob, match=f"(?i){message}"):
        await board.post(name, details)
    assert await board.job_count() == 1
    assert await names(board) == ["keep"]


async def test_bad_priority(board: ajb.JobBoard) -> None:
    with pytest.raises(ajb.InvalidJob, match="priority"):
        await board.post("x", priority=7)  # type: ignore[arg-type]
    assert await board.job_count() == 0


async def test_priority_by_name(board: ajb.JobBoard) -> None:
    job = await board.post("x", priority="high")
    assert job.priority is ajb.JobPriority.HIGH


async def test_posting_over_the_size_limit(board: ajb.JobBoard) -> None:
    big = "x" * (ajb.MAX_JOB_SIZE + 1)
    with pytest.raises(ajb.InvalidJob, match="limit"):
        await board.post("big", {"blob": big})
    assert await board.job_count() == 0
    fits = "x" * (ajb.MAX_JOB_SIZE - 1000)
    await board.post("fits", {"blob": fits})
    assert await board.job_count() == 1


async def test_size_limit_from_url(open_board: OpenBoard) -> None:
    small = await open_board(max_job_size=200)
    with pytest.raises(ajb.InvalidJob, match="200 bytes"):
        await small.post("x", {"blob": "y" * 300})
    await small.post("x", {"blob": "y" * 10})


async def test_book_is_recorded(board: ajb.JobBoard) -> None:
    book = ajb.book.LogBook("orders")
    job = await board.post("x", book=book)
    assert (job.book_uuid, job.book_name) == (book.uuid, "orders")
    with pytest.raises(ajb.InvalidJob, match="book"):
        await board.post("y", book="not a book")  # type: ignore[arg-type]


async def test_post_many(board: ajb.JobBoard) -> None:
    jobs = await board.post_many(
        [
            {"name": "a", "details": {"n": 1}},
            {"name": "b", "priority": ajb.JobPriority.HIGH},
            {"name": "c"},
        ]
    )
    assert [job.name for job in jobs] == ["a", "b", "c"]
    assert jobs[0].sequence < jobs[1].sequence < jobs[2].sequence
    assert await names(board) == ["b", "a", "c"]
    assert await board.post_many([]) == []


async def test_post_many_is_all_or_nothing(board: ajb.JobBoard) -> None:
    with pytest.raises(ajb.InvalidJob, match="#1"):
        await board.post_many([{"name": "a"}, {"name": ""}])
    with pytest.raises(ajb.InvalidJob, match="unknown"):
        await board.post_many([{"name": "a", "colour": "red"}])
    with pytest.raises(ajb.InvalidJob, match="mapping"):
        await board.post_many(["a"])  # type: ignore[list-item]
    assert await board.job_count() == 0


# -- reading -----------------------------------------------------------------


async def test_order_is_priority_then_age(board: ajb.JobBoard) -> None:
    await board.post("low", priority=ajb.JobPriority.LOW)
    await board.post("normal-1")
    await board.post("very-high", priority=ajb.JobPriority.VERY_HIGH)
    await board.post("normal-2")
    await board.post("very-low", priority=ajb.JobPriority.VERY_LOW)
    await board.post("high", priority=ajb.JobPriority.HIGH)
    expected = ["very-high", "high", "normal-1", "normal-2", "low", "very-low"]
    assert await names(board) == expected


async def test_only_unclaimed(board: ajb.JobBoard) -> None:
    first = await board.post("first")
    await board.post("second")
    await board.claim(first, "w")
    assert await names(board) == ["first", "second"]
    assert await names(board, only_unclaimed=True) == ["second"]


async def test_abandoned_job_keeps_its_place(board: ajb.JobBoard) -> None:
    first = await board.post("first")
    await board.post("second")
    claim = await board.claim(first, "w")
    await board.post("third")
    await claim.abandon()
    assert await names(board, only_unclaimed=True) == ["first", "second", "third"]
    nxt = await board.claim_next("w")
    assert nxt is not None
    assert nxt.job.name == "first"


async def test_follow_yields_new_and_returned_jobs(board: ajb.JobBoard) -> None:
    first = await board.post("first")
    seen: list[str] = []

    async def follow() -> None:
        async for job in board.iterjobs(only_unclaimed=True, follow=True):
            seen.append(job.name)
            if len(seen) == 3:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    claim = await board.claim(first, "w")
    await board.post("second")
    await claim.abandon()
    await asyncio.wait_for(follower, 5)
    assert seen == ["first", "second", "first"]


async def test_follow_ends_when_the_board_closes(open_board: OpenBoard) -> None:
    board = await open_board()
    await board.post("only")
    seen: list[str] = []

    async def follow() -> None:
        async for job in board.iterjobs(follow=True):
            seen.append(job.name)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await board.close()
    await asyncio.wait_for(follower, 5)
    assert seen == ["only"]


async def test_a_job_asks_the_connection_it_was_read_through(
    open_board: OpenBoard,
) -> None:
    poster, reader = await open_board(), await open_board()
    posted = await poster.post("x")
    await poster.close()
    (job,) = [job async for job in reader.iterjobs()]
    assert job == posted
    assert job.board is reader
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    claim = await reader.claim_next("w")
    assert claim is not None
    assert claim.job.board is reader
    await claim.consume()
    assert await job.wait(timeout=5) is True


async def test_job_count(board: ajb.JobBoard) -> None:
    jobs = [await board.post(f"j{i}") for i in range(3)]
    await board.claim(jobs[0], "w")
    assert await board.job_count() == 3
    await board.consume(jobs[0], "w")
    assert await board.job_count() == 2


# -- claiming ----------------------------------------------------------------


async def test_claim_and_consume(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    claim = await board.claim(job, "worker-1")
    assert claim.owner == "worker-1"
    assert claim.attempt == 1
    assert claim.held
    assert not claim.lost
    assert await job.get_state() is ajb.JobState.CLAIMED
    assert await job.get_owner() == "worker-1"
    assert await board.find_owner(job) == "worker-1"
    await claim.consume()
    assert claim.state is ajb.ClaimState.CONSUMED
    assert await job.get_state() is ajb.JobState.COMPLETE
    assert await job.get_owner() is None
    assert await board.job_count() == 0
    with pytest.raises(ajb.NotFound):
        await board.find_owner(job)
    with pytest.raises(ajb.NotFound):
        await board.claim(job, "worker-2")


async def test_claimed_job_is_unclaimable(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    await board.claim(job, "worker-1")
    for who in ("worker-1", "worker-2"):
        with pytest.raises(ajb.UnclaimableJob, match="worker-1") as caught:
            await board.claim(job, who)
        assert caught.value.owner == "worker-1"


async def test_tokens_increase_and_attempts_count(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    tokens = []
    for attempt in (1, 2, 3):
        claim = await board.claim(job, f"w{attempt}")
        assert claim.attempt == attempt
        tokens.append(claim.token)
        await claim.abandon()
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


async def test_finish_by_name(board: ajb.JobBoard) -> None:
    kept, trashed = await board.post("kept"), await board.post("trashed")
    await board.claim(kept, "w")
    await board.claim(trashed, "w")
    await board.abandon(kept, "w")
    assert await kept.get_state() is ajb.JobState.UNCLAIMED
    await board.trash(trashed, "w")
    assert await trashed.get_state() is ajb.JobState.COMPLETE
    assert await names(board) == ["kept"]


async def test_only_the_owner_finishes(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    for finish in (board.consume, board.abandon, board.trash):
        with pytest.raises(ajb.NotOwner, match="not claimed"):
            await finish(job, "w1")
    await board.claim(job, "w1")
    for finish in (board.consume, board.abandon, board.trash):
        with pytest.raises(ajb.NotOwner, match="w1"):
            await finish(job, "w2")
    assert await board.find_owner(job) == "w1"
    await board.consume(job, "w1")
    with pytest.raises(ajb.NotFound):
        await board.consume(job, "w1")


async def test_a_stale_holder_cannot_finish(board: ajb.JobBoard, kit: Kit) -> None:
    job = await board.post("x")
    stale = await board.claim(job, "w", lease=LEASE)
    await kit.lapse(board)
    fresh = await board.claim(job, "w")
    assert fresh.token > stale.token
    assert fresh.attempt == 2
    for finish in (stale.consume, stale.abandon, stale.trash):
        with pytest.raises(ajb.NotOwner):
            await finish()
    assert stale.lost
    assert await board.find_owner(job) == "w"
    await fresh.consume()
    assert await job.get_state() is ajb.JobState.COMPLETE


async def test_the_board_checks_the_token(open_board: OpenBoard, kit: Kit) -> None:
    # A holder that has not noticed its lease ran out (its process stalled and
    # heard nothing) still thinks it holds the job; the board must refuse it.
    stale_board, fresh_board = await open_board(), await open_board()
    job = await stale_board.post("x")
    stale = await stale_board.claim(job, "w", lease=LEASE)
    await kit.kill(stale_board)
    await fresh_board.wait(timeout=kit.patience)
    fresh = await fresh_board.claim(job, "w")
    assert stale.held
    for finish in (stale.consume, stale.abandon, stale.trash):
        with pytest.raises(ajb.NotOwner):
            await finish()
    assert stale.lost
    assert await fresh_board.find_owner(job) == "w"
    assert fresh.held
    await fresh.consume()


async def test_a_finished_claim_cannot_finish_again(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    claim = await board.claim(job, "w")
    await claim.abandon()
    again = await board.claim(job, "w")
    with pytest.raises(ajb.NotOwner, match="abandoned"):
        await claim.consume()
    assert await board.find_owner(job) == "w"
    await again.consume()


async def test_claim_next_follows_board_order(board: ajb.JobBoard) -> None:
    assert await board.claim_next("w") is None
    await board.post("normal")
    await board.post("high", priority=ajb.JobPriority.HIGH)
    taken = []
    while (claim := await board.claim_next("w")) is not None:
        taken.append(claim.job.name)
    assert taken == ["high", "normal"]


async def test_bad_owner_and_lease(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    with pytest.raises(TypeError, match="owner"):
        board.claim(job, 7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="owner"):
        board.claim(job, "")
    with pytest.raises(ValueError, match="lease"):
        board.claim(job, "w", lease=0)
    with pytest.raises(TypeError, match="lease"):
        board.claim(job, "w", lease="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Job"):
        board.claim(job.uuid, "w")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="owner"):
        await board.consume(job, "")
    assert await job.get_state() is ajb.JobState.UNCLAIMED


async def test_many_consumers_claim_each_job_once(board: ajb.JobBoard) -> None:
    for i in range(200):
        await board.post(f"j{i}")
    consumed: list[str] = []

    async def consumer(who: str) -> None:
        while (claim := await board.claim_next(who)) is not None:
            await asyncio.sleep(0)
            consumed.append(claim.job.uuid)
            await claim.consume()

    await asyncio.gather(*(consumer(f"w{i}") for i in range(20)))
    assert len(consumed) == 200
    assert len(set(consumed)) == 200
    assert await board.job_count() == 0


# -- the claim as a context manager ------------------------------------------


async def test_clean_exit_consumes(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    async with board.claim(job, "w") as claim:
        assert await job.get_owner() == "w"
    assert claim.state is ajb.ClaimState.CONSUMED
    assert await job.get_state() is ajb.JobState.COMPLETE


async def test_exception_abandons(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    with pytest.raises(KeyError):
        async with board.claim(job, "w") as claim:
            raise KeyError("boom")
    assert claim.state is ajb.ClaimState.ABANDONED
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    async with board.claim(job, "w") as again:
        assert again.attempt == 2


async def test_cancelled_body_abandons(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    entered = asyncio.Event()

    async def hold() -> None:
        async with board.claim(job, "w"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await job.get_state() is ajb.JobState.UNCLAIMED


async def test_leases_are_renewed_while_held(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    async with board.claim(job, "w", lease=LEASE) as claim:
        await asyncio.sleep(LEASE * 3)
        assert claim.held
        assert await job.get_owner() == "w"
    assert await job.get_state() is ajb.JobState.COMPLETE


async def test_a_lapsed_claim_cancels_the_body(board: ajb.JobBoard, kit: Kit) -> None:
    job = await board.post("x")
    finished_sleeping = False
    with pytest.raises(ajb.ClaimLost, match="lost"):
        async with board.claim(job, "w", lease=LEASE) as claim:
            await kit.lapse(board)
            await asyncio.sleep(5)
            finished_sleeping = True
    assert not finished_sleeping
    assert claim.lost
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    nxt = await board.claim(job, "other")
    assert nxt.attempt == 2


async def test_claim_lost_wins_over_the_body_error(
    board: ajb.JobBoard, kit: Kit
) -> None:
    job = await board.post("x")
    with pytest.raises(ajb.ClaimLost) as caught:
        async with board.claim(job, "w", lease=LEASE):
            await kit.lapse(board)
            await asyncio.sleep(0.05)  # the lease keeper notices here
            raise ValueError("late")
    assert isinstance(caught.value.__context__, ValueError | asyncio.CancelledError)
    assert await job.get_state() is ajb.JobState.UNCLAIMED


async def test_claim_lost_at_the_final_consume(board: ajb.JobBoard, kit: Kit) -> None:
    job = await board.post("x")
    with pytest.raises(ajb.ClaimLost):
        async with board.claim(job, "w", lease=LEASE):
            await kit.lapse(board)
    assert await job.get_state() is ajb.JobState.UNCLAIMED


async def test_renewal_never_revives(board: ajb.JobBoard, kit: Kit) -> None:
    job = await board.post("x")
    claim = await board.claim(job, "w", lease=LEASE)
    await kit.lapse(board)
    await asyncio.sleep(LEASE)
    assert claim.lost
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    with pytest.raises(ajb.NotOwner):
        await claim.consume()


async def test_a_dead_owners_job_comes_back(open_board: OpenBoard, kit: Kit) -> None:
    dead, alive = await open_board(), await open_board()
    job = await dead.post("x")
    first = await dead.claim(job, "dead-worker", lease=LEASE)
    await kit.kill(dead)
    assert await alive.find_owner(job) == "dead-worker"
    await alive.wait(timeout=kit.patience)
    second = await alive.claim(job, "alive-worker")
    assert second.attempt == 2
    assert second.token > first.token
    await second.consume()
    assert await job.get_state() is ajb.JobState.COMPLETE


# -- waiting -----------------------------------------------------------------


async def test_wait_returns_at_once_with_a_job_unclaimed(board: ajb.JobBoard) -> None:
    await board.post("x")
    await asyncio.wait_for(board.wait(), 1)


async def test_wait_times_out(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    await board.claim(job, "w")
    with pytest.raises(TimeoutError):
        await board.wait(timeout=0.1)


async def test_wait_is_woken_by_a_post(open_board: OpenBoard) -> None:
    waiter, poster = await open_board(), await open_board()
    task = asyncio.create_task(waiter.wait(timeout=10))
    await asyncio.sleep(0.05)
    assert not task.done()
    started = time.monotonic()
    await poster.post("x")
    await task
    assert time.monotonic() - started < 2


async def test_wait_is_woken_by_an_abandon(board: ajb.JobBoard) -> None:
    claim = await board.claim(await board.post("x"), "w")
    task = asyncio.create_task(board.wait(timeout=10))
    await asyncio.sleep(0.05)
    assert not task.done()
    await claim.abandon()
    await asyncio.wait_for(task, 2)


async def test_job_wait(open_board: OpenBoard) -> None:
    board, other = await open_board(), await open_board()
    job = await board.post("x")
    assert await job.wait(timeout=0.05) is False
    task = asyncio.create_task(job.wait(timeout=10))
    await asyncio.sleep(0.05)
    assert not task.done()
    seen = await other.claim_next("w")
    assert seen is not None
    await asyncio.sleep(0.05)
    assert not task.done()
    await seen.consume()
    assert await asyncio.wait_for(task, 2) is True
    assert await job.wait(timeout=0) is True


# -- events ------------------------------------------------------------------


async def test_events_in_order(open_board: OpenBoard) -> None:
    board, other = await open_board(), await open_board()
    kinds: list[ajb.EventKind] = []

    async def listen() -> None:
        async for event in board.events():
            kinds.append(event.kind)
            if event.kind is ajb.EventKind.TRASHED:
                return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    job = await other.post("x")
    claim = await other.claim(job, "w")
    await claim.abandon()
    async with other.claim(job, "w"):
        pass
    trashed = await other.claim(await other.post("y"), "w")
    await trashed.trash()
    await asyncio.wait_for(listener, 5)
    assert kinds == [
        ajb.EventKind.POSTED,
        ajb.EventKind.CLAIMED,
        ajb.EventKind.ABANDONED,
        ajb.EventKind.CLAIMED,
        ajb.EventKind.CONSUMED,
        ajb.EventKind.POSTED,
        ajb.EventKind.CLAIMED,
        ajb.EventKind.TRASHED,
    ]


async def test_expiry_is_an_event(open_board: OpenBoard, kit: Kit) -> None:
    dead, watcher = await open_board(), await open_board()
    job = await dead.post("x")
    await dead.claim(job, "dead-worker", lease=LEASE)
    await kit.kill(dead)

    async def first_expiry() -> ajb.JobEvent:
        async for event in watcher.events():
            if event.kind is ajb.EventKind.EXPIRED:
                return event
        raise AssertionError("events() ended")

    event = await asyncio.wait_for(first_expiry(), kit.patience)
    assert event.job_uuid == job.uuid
    assert event.owner == "dead-worker"


# -- operating ---------------------------------------------------------------


async def first_event(
    board: ajb.JobBoard, kind: ajb.EventKind
) -> asyncio.Task[ajb.JobEvent]:
    """Start listening on *board* for the first event of *kind*."""

    async def listen() -> ajb.JobEvent:
        async for event in board.events():
            if event.kind is kind:
                return event
        raise AssertionError("events() ended")

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    return task


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Return once *check* answers true; fail after *timeout* seconds."""
    async with asyncio.timeout(timeout):
        # Presence is read, not announced: it is polled.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_cancel_an_unclaimed_job(open_board: OpenBoard) -> None:
    board, watcher = await open_board(), await open_board()
    job = await board.post("x")
    trashed = await first_event(watcher, ajb.EventKind.TRASHED)
    await board.cancel(job, "no longer wanted")
    assert await job.get_state() is ajb.JobState.COMPLETE
    assert await job.wait(timeout=0) is True
    assert await board.job_count() == 0
    event = await asyncio.wait_for(trashed, 5)
    assert (event.job_uuid, event.owner) == (job.uuid, None)
    assert event.reason == "no longer wanted"


async def test_cancel_a_claimed_job(open_board: OpenBoard, kit: Kit) -> None:
    holder, operator = await open_board(), await open_board()
    job = await holder.post("x")
    entered = asyncio.Event()
    finished_sleeping = False
    claims: list[ajb.Claim] = []

    async def hold() -> None:
        nonlocal finished_sleeping
        async with holder.claim(job, "w") as claim:
            claims.append(claim)
            entered.set()
            await asyncio.sleep(30)
            finished_sleeping = True

    task = asyncio.create_task(hold())
    await entered.wait()
    trashed = await first_event(operator, ajb.EventKind.TRASHED)
    started = time.monotonic()
    await operator.cancel(job, "the customer withdrew")
    with pytest.raises(ajb.ClaimLost, match="the customer withdrew"):
        await asyncio.wait_for(task, kit.patience)
    assert time.monotonic() - started < 1.0
    assert not finished_sleeping
    claim = claims[0]
    assert claim.lost
    assert claim.cancel_reason == "the customer withdrew"
    with pytest.raises(ajb.NotOwner):
        await claim.consume()
    assert await job.get_state() is ajb.JobState.COMPLETE
    assert await job.wait(timeout=1) is True
    event = await asyncio.wait_for(trashed, 5)
    assert (event.job_uuid, event.owner) == (job.uuid, "w")
    assert event.reason == "the customer withdrew"


async def test_cancel_through_the_holders_connection(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    claim = await board.claim(job, "w")
    await board.cancel(job)
    assert claim.lost
    assert claim.cancel_reason == "cancelled"
    with pytest.raises(ajb.NotOwner):
        await claim.consume()


async def test_cancel_a_gone_job(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    await (await board.claim(job, "w")).consume()
    with pytest.raises(ajb.NotFound):
        await board.cancel(job, "late")
    other = await board.post("y")
    await board.cancel(other)
    with pytest.raises(ajb.NotFound):
        await board.cancel(other)


@pytest.mark.parametrize(
    ("reason", "error", "message"),
    [
        (42, TypeError, "str"),
        (None, TypeError, "str"),
        ("", ValueError, "empty"),
        ("  ", ValueError, "empty"),
        ("x" * 1001, ValueError, "1000"),
    ],
)
async def test_cancel_checks_its_reason(
    board: ajb.JobBoard, reason: Any, error: type[Exception], message: str
) -> None:
    job = await board.post("x")
    with pytest.raises(error, match=message):
        await board.cancel(job, reason)
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    with pytest.raises(TypeError, match="Job"):
        await board.cancel(job.uuid)  # type: ignore[arg-type]
    await board.cancel(job, "x" * 1000)
    assert await job.get_state() is ajb.JobState.COMPLETE


async def test_a_worker_logs_a_cancelled_job_and_goes_on(
    board: ajb.JobBoard, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = await board.post("doomed", priority=ajb.JobPriority.HIGH)
    after = await board.post("after")
    started = asyncio.Event()
    done: list[str] = []

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        if job.name == "doomed":
            started.set()
            await asyncio.sleep(30)
        done.append(job.name)

    worker = ajb.Worker(board, handle, name="w1")
    with caplog.at_level(logging.WARNING, logger="aiojobboard.worker"):
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 5)
        await board.cancel(doomed, "bad input")
        assert await after.wait(timeout=5)
        await worker.stop()
        await task
    assert done == ["after"]
    assert (worker.cancelled, worker.consumed, worker.lost) == (1, 1, 0)
    assert worker.failed == 0
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("worker")]
    assert any(
        doomed.uuid in text and "'w1'" in text and text.endswith("ran it: bad input")
        for text in messages
    ), messages


async def test_get_job(open_board: OpenBoard) -> None:
    board, other = await open_board(), await open_board()
    job = await board.post("x", {"n": 1}, priority=ajb.JobPriority.HIGH)
    found = await other.get_job(job.uuid)
    assert found == job
    assert (found.name, dict(found.details), found.priority) == (
        "x",
        {"n": 1},
        ajb.JobPriority.HIGH,
    )
    assert found.sequence == job.sequence
    assert await found.get_state() is ajb.JobState.UNCLAIMED
    assert await board.get_job(job.uuid.upper()) == job
    await board.cancel(job)
    with pytest.raises(ajb.NotFound):
        await other.get_job(job.uuid)
    with pytest.raises(TypeError, match="str"):
        await board.get_job(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uuid"):
        await board.get_job("not-a-uuid")


async def test_status(open_board: OpenBoard) -> None:
    board, other = await open_board(), await open_board()
    job = await board.post("x")
    assert await other.status(job) == ajb.JobStatus(
        ajb.JobState.UNCLAIMED, None, 0, None
    )
    claim = await board.claim(job, "w")
    assert await other.status(job) == ajb.JobStatus(
        ajb.JobState.CLAIMED, "w", 1, claim.token
    )
    await claim.abandon()
    assert await other.status(job) == ajb.JobStatus(
        ajb.JobState.UNCLAIMED, None, 1, None
    )
    second = await other.claim(job, "v")
    status = await board.status(job)
    assert (status.owner, status.attempt, status.token) == ("v", 2, second.token)
    await second.consume()
    with pytest.raises(ajb.NotFound):
        await board.status(job)
    with pytest.raises(TypeError):
        await board.status(job.uuid)  # type: ignore[arg-type]


async def named(board: ajb.JobBoard, name: str) -> list[ajb.WorkerInfo]:
    return [info for info in await board.workers() if info.name == name]


async def test_a_worker_is_present_with_its_holdings(
    open_board: OpenBoard, kit: Kit
) -> None:
    board, watcher = await open_board(), await open_board()
    job = await board.post("x")
    release = asyncio.Event()

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        await release.wait()

    assert await named(watcher, "w1") == []
    worker = ajb.Worker(board, handle, name="w1")
    task = asyncio.create_task(worker.run())

    async def holding() -> bool:
        found = await named(watcher, "w1")
        return [info.holding for info in found] == [(job.uuid,)]

    await until(holding, kit.patience)
    (info,) = await named(watcher, "w1")
    assert (info.host, info.pid) == (socket.gethostname(), os.getpid())
    assert info.since.tzinfo is not None
    assert info.seen.tzinfo is not None
    assert info.since <= info.seen

    release.set()
    assert await job.wait(timeout=5)

    async def idle() -> bool:
        return [info.holding for info in await named(watcher, "w1")] == [()]

    await until(idle, kit.patience)
    await worker.stop()
    await task

    async def gone() -> bool:
        return await named(watcher, "w1") == []

    await until(gone, kit.patience)


async def test_a_holder_is_present_until_its_board_closes(
    open_board: OpenBoard, kit: Kit
) -> None:
    board, watcher = await open_board(), await open_board()
    jobs = [await board.post(f"j{i}") for i in range(2)]
    for job in jobs:
        await board.claim(job, "holder")

    async def both() -> bool:
        found = await named(watcher, "holder")
        return [sorted(info.holding) for info in found] == [
            sorted(job.uuid for job in jobs)
        ]

    await until(both, kit.patience)
    await board.close()
    assert await named(watcher, "holder") == []
    with pytest.raises(ajb.BoardClosed):
        await board.workers()


# -- closing and connecting --------------------------------------------------


async def test_close_abandons_and_refuses(open_board: OpenBoard) -> None:
    board, other = await open_board(), await open_board()
    job = await board.post("x")
    claim = await board.claim(job, "w")
    await board.close()
    await board.close()
    assert claim.lost
    assert await other.find_owner(job) is None
    calls = [
        board.post("y"),
        board.job_count(),
        board.wait(timeout=1),
        board.find_owner(job),
        board.claim_next("w"),
        board.consume(job, "w"),
        job.get_state(),
    ]
    for call in calls:
        with pytest.raises(ajb.BoardClosed):
            await call
    with pytest.raises(ajb.BoardClosed):
        await board.claim(job, "w")
    with pytest.raises(ajb.BoardClosed):
        [j async for j in board.iterjobs()]
    assert "closed" in repr(board)


async def test_close_ends_events_and_loses_held_claims(open_board: OpenBoard) -> None:
    board = await open_board()
    job = await board.post("x")
    entered = asyncio.Event()

    async def hold() -> None:
        async with board.claim(job, "w"):
            entered.set()
            await asyncio.sleep(60)

    async def listen() -> int:
        return len([event async for event in board.events()])

    holder = asyncio.create_task(hold())
    listener = asyncio.create_task(listen())
    await entered.wait()
    await board.close()
    with pytest.raises(ajb.ClaimLost, match="closed"):
        await asyncio.wait_for(holder, 5)
    assert await asyncio.wait_for(listener, 5) >= 0


async def test_connect_awaited_and_as_a_context_manager(board_url: str) -> None:
    board = await ajb.connect(board_url)
    try:
        await board.post("x")
    finally:
        await board.close()
    async with ajb.connect(board_url) as again:
        assert await again.job_count() == 1
    assert again.closed


async def test_bad_options_are_named(board_url: str) -> None:
    scheme = board_url.partition("://")[0]
    with pytest.raises(ValueError, match="bogus"):
        await ajb.connect(f"{board_url}{'&' if '?' in board_url else '?'}bogus=1")
    with pytest.raises(ValueError, match="lease"):
        await ajb.connect(f"{board_url}{'&' if '?' in board_url else '?'}lease=-1")
    with pytest.raises(ValueError, match=re.escape(f"{scheme}://")):
        ajb.connect("nosuch://host")


async def test_not_a_url() -> None:
    with pytest.raises(ValueError, match="scheme"):
        ajb.connect("just-a-name")
    with pytest.raises(TypeError):
        ajb.connect(42)  # type: ignore[arg-type]
