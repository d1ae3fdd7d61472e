"""The Worker, on every adapter under test."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import pytest

import aiojobboard as ajb

from .conftest import LEASE, Kit, OpenBoard


async def run_until_empty(board: ajb.JobBoard, worker: ajb.Worker) -> None:
    """Run *worker* until every job now on *board* is consumed or trashed."""
    jobs = [job async for job in board.iterjobs()]
    task = asyncio.create_task(worker.run())
    done = await asyncio.gather(*(job.wait(timeout=20) for job in jobs))
    await worker.stop()
    await task
    assert all(done)


async def test_drains_with_many_consumers(board: ajb.JobBoard) -> None:
    await board.post_many([{"name": f"j{i}"} for i in range(300)])
    running = 0
    most = 0
    seen: list[str] = []

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        seen.append(job.uuid)
        running -= 1

    worker = ajb.Worker(board, handle, name="w", concurrency=16)
    await run_until_empty(board, worker)
    assert len(seen) == len(set(seen)) == 300
    assert worker.consumed == 300
    assert 1 < most <= 16


async def test_a_failing_handler_abandons_for_retry(board: ajb.JobBoard) -> None:
    job = await board.post("flaky")
    attempts: list[int] = []

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        attempts.append(claim.attempt)
        if claim.attempt < 3:
            raise RuntimeError("not yet")

    worker = ajb.Worker(board, handle, name="w", max_attempts=5)
    await run_until_empty(board, worker)
    assert attempts == [1, 2, 3]
    assert (worker.consumed, worker.failed, worker.trashed) == (1, 2, 0)
    assert await job.get_state() is ajb.JobState.COMPLETE


async def test_max_attempts_trashes_a_poison_job(
    board: ajb.JobBoard, caplog: pytest.LogCaptureFixture
) -> None:
    poison = await board.post("poison")
    await board.post("fine")
    runs: Counter[str] = Counter()

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        runs[job.name] += 1
        if job.name == "poison":
            raise ValueError("bad input")

    worker = ajb.Worker(board, handle, name="w", max_attempts=3)
    with caplog.at_level(logging.WARNING, logger="aiojobboard.worker"):
        await run_until_empty(board, worker)
    assert runs == {"poison": 3, "fine": 1}
    assert (worker.consumed, worker.failed, worker.trashed) == (1, 3, 1)
    assert await poison.get_state() is ajb.JobState.COMPLETE
    assert any(
        "trashed" in r.getMessage() and "poison" in r.getMessage()
        for r in caplog.records
    )


async def test_a_handler_can_trash_its_job_at_once(board: ajb.JobBoard) -> None:
    hopeless = await board.post("hopeless")
    runs = 0

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        nonlocal runs
        runs += 1
        raise ajb.TrashJob("its input can never be read")

    worker = ajb.Worker(board, handle, name="w", max_attempts=5)
    await run_until_empty(board, worker)
    assert runs == 1
    assert (worker.consumed, worker.failed, worker.trashed) == (0, 1, 1)
    assert await hopeless.get_state() is ajb.JobState.COMPLETE


async def test_a_job_claimed_too_often_is_trashed_unrun(board: ajb.JobBoard) -> None:
    job = await board.post("crashes-its-workers")
    for _ in range(2):
        await (await board.claim(job, "dead")).abandon()
    runs = 0

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        nonlocal runs
        runs += 1

    worker = ajb.Worker(board, handle, name="w", max_attempts=2)
    await run_until_empty(board, worker)
    assert runs == 0
    assert worker.trashed == 1


async def test_stop_drains_in_flight_work(board: ajb.JobBoard) -> None:
    await board.post_many([{"name": f"j{i}"} for i in range(4)])
    started = asyncio.Event()
    finished: list[str] = []

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(job.name)

    worker = ajb.Worker(board, handle, name="w", concurrency=2, grace=10)
    task = asyncio.create_task(worker.run())
    await started.wait()
    await worker.stop()
    assert task.done()
    assert len(finished) == 2
    assert worker.busy == 0
    assert await board.job_count() == 2
    assert "stopped" in repr(worker)


async def test_stop_cancels_after_the_grace_period(
    board: ajb.JobBoard, caplog: pytest.LogCaptureFixture
) -> None:
    job = await board.post("slow")
    started = asyncio.Event()

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = ajb.Worker(board, handle, name="w", grace=0.2)
    task = asyncio.create_task(worker.run())
    await started.wait()
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="aiojobboard.worker"):
        await worker.stop()
    assert time.monotonic() - began < 5
    await task
    assert await job.get_state() is ajb.JobState.UNCLAIMED
    assert any("grace" in r.getMessage() for r in caplog.records)


async def test_a_lost_claim_is_counted_and_logged(
    board: ajb.JobBoard, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    await board.post("stalls")
    done = False

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        nonlocal done
        if claim.attempt == 1:
            await kit.lapse(board)
            await asyncio.sleep(5)
        done = True

    worker = ajb.Worker(board, handle, name="w", lease=LEASE)
    with caplog.at_level(logging.WARNING):
        await run_until_empty(board, worker)
    assert worker.lost == 1
    assert done
    assert worker.consumed == 1
    assert any("lost" in r.getMessage() for r in caplog.records)


async def test_idle_worker_wakes_for_new_jobs(open_board: OpenBoard) -> None:
    board, producer = await open_board(), await open_board()
    handled = asyncio.Event()

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        handled.set()

    worker = ajb.Worker(board, handle, name="w", concurrency=4)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    await producer.post("late")
    await asyncio.wait_for(handled.wait(), 5)
    await worker.stop()
    await task


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, ValueError),
        ({"name": "w", "concurrency": 0}, ValueError),
        ({"name": "w", "concurrency": 1.5}, TypeError),
        ({"name": "w", "max_attempts": 0}, ValueError),
        ({"name": "w", "grace": -1.0}, ValueError),
    ],
)
async def test_bad_worker_options(
    board: ajb.JobBoard, kwargs: dict[str, object], error: type[Exception]
) -> None:
    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        pass

    with pytest.raises(error):
        ajb.Worker(board, handle, **kwargs)  # type: ignore[arg-type]


async def test_run_twice_is_refused(board: ajb.JobBoard) -> None:
    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        pass

    worker = ajb.Worker(board, handle, name="w")
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    with pytest.raises(RuntimeError, match="already running"):
        await worker.run()
    await worker.stop()
    await task
