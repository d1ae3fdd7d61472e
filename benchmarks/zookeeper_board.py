"""ZooKeeper board throughput: aiojobboard against TaskFlow's ZooKeeper job board.

Runs both on the same ZooKeeper server, back to back, in one run, and prints a
table:

- post: N jobs posted one at a time by P concurrent posters (threads for
  TaskFlow, tasks for aiojobboard), and with ``post_many``;
- drain: N posted jobs claimed and consumed by C consumers in one process.

The server is the one the tests use (``scripts/services/zookeeper`` starts it
on 127.0.0.1:2181 if none runs). Each run works under fresh paths, and
removes its jobs as it drains them. TaskFlow and kazoo run in a virtual
environment of their own (``.venv-taskflow``, made by
``benchmarks/taskflow_setup.sh``), never as dependencies of the project.

    .venv/bin/python benchmarks/zookeeper_board.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import rates

import aiojobboard as ajb

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
TASKFLOW_PYTHON = ROOT / ".venv-taskflow" / "bin" / "python"


def fresh_url(hosts: str) -> str:
    return f"zookeeper://{hosts}/aiojobboard-bench-{uuid.uuid4().hex[:8]}"


async def post_single(hosts: str, jobs: int, posters: int) -> float:
    async with ajb.connect(fresh_url(hosts)) as board:
        rate = await rates.post_concurrently(board, jobs, posters)
        await drain_board(board, 64)
        return rate


async def post_batches(hosts: str, jobs: int, batch: int) -> float:
    async with ajb.connect(fresh_url(hosts)) as board:
        rate = await rates.post_in_batches(board, jobs, batch)
        await drain_board(board, 64)
        return rate


async def fill(board: ajb.JobBoard, jobs: int, batch: int = 500) -> None:
    await rates.fill(board, jobs, batch)


async def drain_board(board: ajb.JobBoard, consumers: int) -> int:
    """Claim and consume every job on *board*; return how many."""
    taken = 0

    async def consumer(who: str) -> None:
        nonlocal taken
        while (claim := await board.claim_next(who)) is not None:
            await claim.consume()
            taken += 1

    await asyncio.gather(*(consumer(f"c{i}") for i in range(consumers)))
    return taken


async def drain(hosts: str, jobs: int, consumers: int) -> float:
    url = fresh_url(hosts)
    # The consumers' board is open while the jobs are posted, as a running
    # worker's is, and has read them once listed; TaskFlow's board, which
    # posts its jobs itself, knows them too when its drain starts.
    async with ajb.connect(url) as board:
        async with ajb.connect(url) as poster:
            await fill(poster, jobs)
        listed = [job async for job in board.iterjobs()]
        if len(listed) != jobs:
            raise SystemExit(f"listed {len(listed)} of {jobs} jobs")
        started = time.perf_counter()
        taken = await drain_board(board, consumers)
        rate = taken / (time.perf_counter() - started)
        if taken != jobs or await board.job_count() != 0:
            raise SystemExit(f"drained {taken} of {jobs} jobs")
        return rate


def run_taskflow(
    hosts: str, jobs: int, consumers: int, posters: int
) -> dict[str, float]:
    subprocess.run(
        ["bash", str(HERE / "taskflow_setup.sh")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    command = [str(TASKFLOW_PYTHON), str(HERE / "zookeeper_taskflow.py"), hosts]
    out = subprocess.run(
        [*command, str(jobs), str(consumers), str(posters)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rates: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return rates


def line(who: str, what: str, rate: float) -> None:
    print(f"{who:<12} {what:<30} {rate:>10,.0f} jobs/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--hosts", default="127.0.0.1:2181")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--taskflow-threads", default="1,8")
    parser.add_argument("--consumers", default="1,16,64")
    parser.add_argument("--posters", default="1,64")
    parser.add_argument("--no-taskflow", action="store_true")
    args = parser.parse_args()
    print(f"zookeeper {args.hosts}, {args.jobs} jobs")
    if not args.no_taskflow:
        for threads in (int(t) for t in args.taskflow_threads.split(",")):
            rates = run_taskflow(args.hosts, args.jobs, threads, threads)
            for what, rate in rates.items():
                line("taskflow", what, rate)
    for posters in (int(p) for p in args.posters.split(",")):
        line(
            "aiojobboard",
            f"post, {posters} posters",
            await post_single(args.hosts, args.jobs, posters),
        )
    line(
        "aiojobboard",
        "post_many, batches of 100",
        await post_batches(args.hosts, args.jobs, 100),
    )
    for consumers in (int(c) for c in args.consumers.split(",")):
        line(
            "aiojobboard",
            f"drain, {consumers} consumers",
            await drain(args.hosts, args.jobs, consumers),
        )


if __name__ == "__main__":
    asyncio.run(main())
