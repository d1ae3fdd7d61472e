"""A producer posts jobs while a Worker of many consumers drains them.

    python examples/demo.py [--jobs 10000] [--consumers 64] [--url memory://demo]

Some handlers fail on purpose, so that retries and a poison job show in the
closing summary: a failed job is abandoned and claimed again, and a job that
fails on its last allowed attempt is trashed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections import Counter

import aiojobboard as ajb

BAR_WIDTH = 40


class Progress:
    """A one-line progress bar on a terminal, a line per tenth elsewhere."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._last_tenth = -1

    def show(self, done: int) -> None:
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        if self._tty:
            filled = BAR_WIDTH * done // self.total
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            sys.stderr.write(f"\r[{bar}] {done:>6}/{self.total} {rate:>8,.0f} jobs/s")
            sys.stderr.flush()
        elif (tenth := 10 * done // self.total) > self._last_tenth:
            self._last_tenth = tenth
            print(f"{done:>6}/{self.total} done, {rate:,.0f} jobs/s", file=sys.stderr)

    def close(self) -> None:
        if self._tty:
            sys.stderr.write("\n")


async def main(url: str, jobs: int, consumers: int, failure_rate: float) -> int:
    attempts: Counter[int] = Counter()
    rng = random.Random(7)

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        attempts[claim.attempt] += 1
        await asyncio.sleep(0)  # a real handler awaits its I/O here
        if job.details.get("poison") or rng.random() < failure_rate:
            raise RuntimeError(f"job {job.details['n']} failed")

    async with ajb.connect(url) as board:
        worker = ajb.Worker(
            board, handle, name="demo", concurrency=consumers, max_attempts=3
        )
        progress = Progress(jobs)
        started = time.perf_counter()
        running = asyncio.create_task(worker.run())
        for first in range(0, jobs, 500):
            batch = range(first, min(first + 500, jobs))
            await board.post_many(
                [
                    {"name": "demo", "details": {"n": n, "poison": n == 42}}
                    for n in batch
                ]
            )
        posted = time.perf_counter()
        while (finished := worker.consumed + worker.trashed) < jobs:
            progress.show(finished)
            await asyncio.sleep(0.05)
        progress.show(finished)
        progress.close()
        elapsed = time.perf_counter() - started
        await worker.stop()
        await running
        left = await board.job_count()

    print(
        f"\n{jobs:,} jobs posted in {posted - started:.2f} s and drained by "
        f"{consumers} consumers in {elapsed:.2f} s: {jobs / elapsed:,.0f} jobs/s"
    )
    print(
        f"  consumed {worker.consumed:,}, trashed {worker.trashed} (the poison job), "
        f"handler failures {worker.failed}, claims lost {worker.lost}"
    )
    runs = ", ".join(f"attempt {n}: {count:,}" for n, count in sorted(attempts.items()))
    print(f"  handler runs by attempt: {runs}")
    print(f"  jobs left on the board: {left}")
    return 0 if left == 0 and worker.consumed + worker.trashed == jobs else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="memory://demo", help="board URL")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--consumers", type=int, default=64)
    parser.add_argument(
        "--failure-rate", type=float, default=0.01, help="share of runs that fail"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    # Failures are expected here; show only what would need an operator.
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(main(args.url, args.jobs, args.consumers, args.failure_rate)))
