"""Measurements that the board benchmarks share, on any board URL."""

from __future__ import annotations

import asyncio
import time

import aiojobboard as ajb


async def fill(board: ajb.JobBoard, jobs: int, batch: int) -> None:
    """Post *jobs* jobs with ``post_many``, *batch* at a time."""
    for start in range(0, jobs, batch):
        size = min(batch, jobs - start)
        await board.post_many(
            [{"name": "job", "details": {"n": start + i}} for i in range(size)]
        )


async def post_concurrently(board: ajb.JobBoard, jobs: int, posters: int) -> float:
    """Post *jobs* jobs one ``post`` at a time from *posters* tasks; jobs/s."""
    per = jobs // posters

    async def poster() -> None:
        for i in range(per):
            await board.post("job", {"n": i})

    started = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(posters)))
    return per * posters / (time.perf_counter() - started)


async def post_in_batches(board: ajb.JobBoard, jobs: int, batch: int) -> float:
    """Post *jobs* jobs with ``post_many``, *batch* at a time; jobs/s."""
    started = time.perf_counter()
    await fill(board, jobs, batch)
    return jobs / (time.perf_counter() - started)
