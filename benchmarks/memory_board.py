"""Post and drain rates on the embedded memory board, and the cost of idle consumers.

    python benchmarks/memory_board.py [--jobs 20000] [--repeat 3]

Prints, for 1, 64 and 1,000 concurrent consumers of one Worker, the best of
*repeat* runs: jobs posted per second (one post() each, and post_many() in
batches of 500) and jobs drained per second (claimed, handled by a handler
that only yields, and consumed). Then the memory that each idle consumer holds
while it waits for work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
import uuid

import rates

import aiojobboard as ajb

CONSUMERS = (1, 64, 1000)


async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
    await asyncio.sleep(0)


def fresh_url() -> str:
    return f"memory://bench-{uuid.uuid4().hex}"


async def post_rate(jobs: int, batch: int) -> float:
    async with ajb.connect(fresh_url()) as board:
        if batch == 1:
            return await rates.post_concurrently(board, jobs, 1)
        return await rates.post_in_batches(board, jobs, batch)


async def drain_rate(jobs: int, consumers: int) -> float:
    async with ajb.connect(fresh_url()) as board:
        await rates.fill(board, jobs, jobs)
        handled = 0
        all_handled = asyncio.Event()

        async def count(job: ajb.Job, claim: ajb.Claim) -> None:
            nonlocal handled
            await asyncio.sleep(0)
            handled += 1
            if handled == jobs:
                all_handled.set()

        worker = ajb.Worker(board, count, name="bench", concurrency=consumers)
        started = time.perf_counter()
        running = asyncio.create_task(worker.run())
        await all_handled.wait()
        await worker.stop()  # returns once the last jobs are consumed
        elapsed = time.perf_counter() - started
        await running
        left = await board.job_count()
        if worker.consumed != jobs or left:
            raise RuntimeError(f"consumed {worker.consumed} of {jobs}; {left} left")
        return jobs / elapsed


async def idle_bytes(consumers: int) -> float:
    async with ajb.connect(fresh_url()) as board:
        worker = ajb.Worker(board, handle, name="idle", concurrency=consumers)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        await worker.stop()
        await running
        return (after - before) / consumers


async def main(jobs: int, repeat: int) -> None:
    print(f"memory:// board, {jobs:,} jobs, best of {repeat}")
    single = max([await post_rate(jobs, 1) for _ in range(repeat)])
    batched = max([await post_rate(jobs, 500) for _ in range(repeat)])
    print(f"{'post, one at a time':<28}{single:>12,.0f} jobs/s")
    print(f"{'post_many, batches of 500':<28}{batched:>12,.0f} jobs/s")
    for consumers in CONSUMERS:
        rate = max([await drain_rate(jobs, consumers) for _ in range(repeat)])
        label = f"drain, {consumers:,} consumers"
        print(f"{label:<28}{rate:>12,.0f} jobs/s")
    per_consumer = await idle_bytes(1000)
    print(f"{'memory per idle consumer':<28}{per_consumer:>12,.0f} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.repeat))
