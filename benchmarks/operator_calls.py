"""What the operator calls cost, on a small board and on a large one.

    python benchmarks/operator_calls.py [--url redis://127.0.0.1:6379/0]
        [--sizes 300,20000] [--calls 200]

For each board size, posts that many jobs under a fresh namespace (or path),
runs a Worker of 64 consumers that holds 64 of them, and prints the median
time of ``get_job``, ``status``, ``workers`` and ``cancel`` (of an unclaimed
job), each called *calls* times one after the other. The figures should not
grow with the board's size: each call reads or changes one job, or the
presence records, never the whole board. The board is drained at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import rates

import aiojobboard as ajb

HELD = 64


def fresh_url(base: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    if base.startswith("memory://"):
        return f"memory://{name}"
    if base.startswith("zookeeper://"):
        return f"{base.rstrip('/')}/{name}"
    return f"{base}{'&' if '?' in base else '?'}namespace={name}"


async def median_ms(calls: int, call: Callable[[int], Awaitable[object]]) -> float:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def measure(base: str, size: int, calls: int) -> dict[str, float]:
    async with ajb.connect(fresh_url(base)) as board:
        await rates.fill(board, size, 500)
        jobs = [job async for job in board.iterjobs()]
        release, all_held = asyncio.Event(), asyncio.Event()
        held = 0

        async def hold(job: ajb.Job, claim: ajb.Claim) -> None:
            nonlocal held
            held += 1
            if held == HELD:
                all_held.set()
            await release.wait()

        worker = ajb.Worker(board, hold, name="bench", concurrency=HELD)
        running = asyncio.create_task(worker.run())
        await all_held.wait()
        # The unclaimed ones, latest first; the held ones are the first 64.
        spare = jobs[HELD:][::-1]
        figures = {
            "get_job": await median_ms(calls, lambda i: board.get_job(spare[i].uuid)),
            "status": await median_ms(calls, lambda i: board.status(spare[i])),
            "workers": await median_ms(calls, lambda i: board.workers()),
            "cancel": await median_ms(calls, lambda i: board.cancel(spare[i])),
        }
        release.set()
        await worker.stop()
        await running
        await drain(board)
        return figures


async def drain(board: ajb.JobBoard) -> None:
    """Consume what is left, so that a server's board is left empty."""
    left = await board.job_count()
    drained = asyncio.Event()
    done = 0

    async def count(job: ajb.Job, claim: ajb.Claim) -> None:
        nonlocal done
        done += 1
        if done == left:
            drained.set()

    worker = ajb.Worker(board, count, name="drain", concurrency=64)
    running = asyncio.create_task(worker.run())
    if left:
        await drained.wait()
    await worker.stop()
    await running


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sizes", default="300,20000")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if min(sizes) < HELD + args.calls:
        parser.error(f"each size must be at least {HELD + args.calls} jobs")
    print(f"{args.url}: median ms per call, {HELD} jobs held by one Worker")
    print(
        f"{'jobs':>8}"
        + "".join(f"{name:>10}" for name in ("get_job", "status", "workers", "cancel"))
    )
    for size in sizes:
        figures = await measure(args.url, size, args.calls)
        print(f"{size:>8,}" + "".join(f"{value:>10.3f}" for value in figures.values()))


if __name__ == "__main__":
    asyncio.run(main())
