"""A drain of many jobs by one Worker, shared by the command line and examples.

Some handler runs fail on purpose, and one job fails every time, so that a run
shows retries and a poison job being trashed, not only the happy path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from .board import JobBoard
from .claims import Claim
from .jobs import Job
from .worker import Worker

__all__ = ["DrainReport", "drain"]

#: Jobs posted per post_many call: large enough to be quick on a server.
BATCH = 500
#: The job number that always fails, so the Worker must trash it.
POISON = 42


@dataclass
class DrainReport:
    """What a drain did, for a summary."""

    jobs: int
    consumers: int
    post_seconds: float = 0.0
    drain_seconds: float = 0.0
    consumed: int = 0
    trashed: int = 0
    failed: int = 0
    lost: int = 0
    left: int = 0
    attempts: Counter[int] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.consumed + self.trashed >= self.jobs


async def drain(
    board: JobBoard,
    *,
    jobs: int,
    consumers: int,
    failure_rate: float = 0.01,
    seed: int = 7,
) -> DrainReport:
    """Post *jobs* jobs to *board* and drain them with *consumers* consumers."""
    report = DrainReport(jobs=jobs, consumers=consumers)
    rng = random.Random(seed)

    async def handle(job: Job, claim: Claim) -> None:
        report.attempts[claim.attempt] += 1
        await asyncio.sleep(0)
        if job.details.get("n") == POISON or rng.random() < failure_rate:
            raise RuntimeError(f"demo job {job.details.get('n')} failed")

    worker = Worker(
        board, handle, name="aiojobboard-demo", concurrency=consumers, max_attempts=3
    )
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    try:
        for first in range(0, jobs, BATCH):
            numbers = range(first, min(first + BATCH, jobs))
            await board.post_many(
                [{"name": "demo", "details": {"n": n}} for n in numbers]
            )

        report.post_seconds = time.perf_counter() - started
        # Polled: the Worker keeps counts, not a signal; a Worker that died
        # ends the wait at once.
        while worker.consumed + worker.trashed < jobs:
            done, _ = await asyncio.wait({running}, timeout=0.02)
            if done:
                break

        report.drain_seconds = time.perf_counter() - started
    finally:
        await worker.stop()
        await running

    report.consumed, report.trashed = worker.consumed, worker.trashed
    report.failed, report.lost = worker.failed, worker.lost
    report.left = await board.job_count()
    return report
