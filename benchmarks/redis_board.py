"""Redis board throughput: aiojobboard against TaskFlow's Redis job board.

Runs both on the same Redis server, back to back, and prints a table:

- drain: N posted jobs, claimed and consumed by C consumers in one process,
  the best of a few runs on each side (TaskFlow's 1-consumer drain, its best,
  too), since the machine's other work makes single runs noisy;
- post: N jobs posted one at a time by C concurrent posters, and in batches;
- board size: the claim+consume rate with a small and a large board.

By default it starts a private redis-server on a free port, with its data in
a temporary directory, so the shared server is never filled or flushed.
TaskFlow runs in a virtual environment of its own (``.venv-taskflow``, made
by ``benchmarks/taskflow_setup.sh``), never as a dependency of the project.

    .venv/bin/python benchmarks/redis_board.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import rates

import aiojobboard as ajb

ROOT = Path(__file__).resolve().parent.parent
TASKFLOW_PYTHON = ROOT / ".venv-taskflow" / "bin" / "python"
SETTLE = 1.0
ROUNDS = 7
TASKFLOW_SCRIPT = Path(__file__).resolve().parent / "redis_taskflow.py"


@contextlib.contextmanager
def private_redis() -> Iterator[int]:
    """Run a throwaway redis-server; yield its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="ajb-bench-redis-")
    process = subprocess.Popen(
        [
            *("redis-server", "--bind", "127.0.0.1", "--port", str(port)),
            *("--dir", directory, "--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def fresh_url(base: str) -> str:
    return f"{base}?namespace=bench-{uuid.uuid4().hex[:8]}"


async def fill(board: ajb.JobBoard, count: int, batch: int = 5000) -> None:
    await rates.fill(board, count, batch)


async def consume(board: ajb.JobBoard, consumers: int, limit: int) -> float:
    """Claim and consume *limit* jobs with *consumers* tasks; return jobs/s."""
    left = limit

    async def consumer(who: str) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            claim = await board.claim_next(who)
            if claim is None:
                return
            await claim.consume()

    started = time.perf_counter()
    await asyncio.gather(*(consumer(f"c{i}") for i in range(consumers)))
    return limit / (time.perf_counter() - started)


async def drain(base: str, jobs: int, consumers: int) -> float:
    async with ajb.connect(fresh_url(base)) as board:
        await fill(board, jobs)
        rate = await consume(board, consumers, jobs)
        assert await board.job_count() == 0
        return rate


async def post_single(base: str, jobs: int, posters: int) -> float:
    async with ajb.connect(fresh_url(base)) as board:
        return await rates.post_concurrently(board, jobs, posters)


async def post_batch(base: str, jobs: int, batch: int) -> float:
    async with ajb.connect(fresh_url(base)) as board:
        return await rates.post_in_batches(board, jobs, batch)


async def board_sizes(
    base: str, sizes: list[int], consumers: int, work: int
) -> dict[int, float]:
    """The median claim+consume rate of a few rounds on boards of each size.

    Each round takes *work* jobs off a board and puts as many back, outside
    the timed part, so that the board keeps its size. Rounds alternate between
    the boards, so that the machine's other work weighs on each alike.
    """
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    async with contextlib.AsyncExitStack() as stack:
        boards = {}
        for size in sizes:
            boards[size] = await stack.enter_async_context(ajb.connect(fresh_url(base)))
            await fill(boards[size], size)
        for _ in range(ROUNDS):
            for size, board in boards.items():
                # Let the connections read the POSTED notices of the fills
                # first: that is the cost of posting, not of claiming.
                await asyncio.sleep(SETTLE)
                rates[size].append(await consume(board, consumers, work))
                await fill(board, work)
    return {size: statistics.median(found) for size, found in rates.items()}


def run_taskflow(
    host: str, port: int, jobs: int, consumers: list[int]
) -> dict[str, float]:
    subprocess.run(
        ["bash", str(Path(__file__).parent / "taskflow_setup.sh")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    out = subprocess.run(
        [str(TASKFLOW_PYTHON), str(TASKFLOW_SCRIPT), host, str(port), str(jobs)]
        + [str(c) for c in consumers],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rates: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return rates


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", help="a Redis URL; default: a private server")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--consumers", default="1,4,16,64")
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--work", type=int, default=900)
    parser.add_argument("--no-taskflow", action="store_true")
    parser.add_argument(
        "--parts", default="drain,post,size", help="which measurements to run"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each drain; the best counts"
    )
    args = parser.parse_args()
    consumers = [int(c) for c in args.consumers.split(",")]
    with contextlib.ExitStack() as stack:
        base = args.url or f"redis://127.0.0.1:{stack.enter_context(private_redis())}/0"
        await report(base, args, consumers)


async def report(base: str, args: argparse.Namespace, consumers: list[int]) -> None:
    parts = set(args.parts.split(","))
    print(f"redis {base}, {args.jobs} jobs")
    if "drain" in parts:
        await report_drain(base, args, consumers)
    if "post" in parts:
        for posters in (1, 64):
            rate = await post_single(base, args.jobs, posters)
            print(
                f"aiojobboard post, {posters:>2} posters{'':11} {rate:>10,.0f} jobs/s"
            )
        rate = await post_batch(base, args.jobs, 1000)
        print(f"aiojobboard post_many, batches of 1000{'':2} {rate:>10,.0f} jobs/s")
    if "size" in parts:
        sizes = [int(size) for size in args.sizes.split(",")]
        for count in (1, 64):
            found = await board_sizes(base, sizes, count, args.work)
            for size, rate in found.items():
                print(
                    f"aiojobboard claim+consume, {size:>6} on board, "
                    f"{count:>2} consumers {rate:>10,.0f} jobs/s"
                )


async def report_drain(
    base: str, args: argparse.Namespace, consumers: list[int]
) -> None:
    if not args.no_taskflow:
        host_port = base.split("://")[1].split("/")[0]
        host, _, port = host_port.rpartition(":")
        counts = [1] * args.repeat + [count for count in consumers if count != 1]
        rates = run_taskflow(host, int(port), args.jobs, counts)
        for key, rate in rates.items():
            print(f"taskflow    {key:<28} {rate:>10,.0f} jobs/s")
    for count in consumers:
        runs = [await drain(base, args.jobs, count) for _ in range(args.repeat)]
        print(
            f"aiojobboard drain, {count:>2} consumers{'':9} {max(runs):>10,.0f} "
            f"jobs/s (median {statistics.median(runs):,.0f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
