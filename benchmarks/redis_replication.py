"""What waiting for a replica costs: Redis board rates with and without ``replicas=1``.

Starts a private primary and one replica on free ports, with their data in
temporary directories, and prints side by side, for plain asynchronous
replication and for ``?replicas=1`` (each change followed by ``WAIT 1``):

- post: N jobs posted one at a time by C concurrent posters, and in batches;
- drain: N posted jobs claimed and consumed by C consumers in one process.

Each figure is the best of a few runs, alternating the two settings, since the
machine's other work makes single runs noisy.

    .venv/bin/python benchmarks/redis_replication.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import rates
from redis_board import consume

import aiojobboard as ajb

SETTINGS = {"async": "", "replicas=1": "&replicas=1&replica_timeout=1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@contextlib.contextmanager
def primary_and_replica() -> Iterator[int]:
    """Run a throwaway primary with one replica; yield the primary's port."""
    ports = [free_port(), free_port()]
    directory = tempfile.mkdtemp(prefix="ajb-bench-replication-")
    processes = []
    try:
        for i, port in enumerate(ports):
            follow = ["--replicaof", "127.0.0.1", str(ports[0])] if i else []
            processes.append(
                subprocess.Popen(
                    [
                        *("redis-server", "--bind", "127.0.0.1", "--port", str(port)),
                        *("--dir", directory, "--dbfilename", f"{port}.rdb"),
                        *("--save", "", "--appendonly", "no"),
                        *("--repl-diskless-sync-delay", "0", *follow),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 20
        while "master_link_status:up" not in _replication(ports[1]):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not come up")
            time.sleep(0.05)
        yield ports[0]
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _replication(port: int) -> str:
    with contextlib.suppress(subprocess.CalledProcessError):
        return cli(port, "INFO", "replication")
    return ""


async def post_single(url: str, jobs: int, posters: int) -> float:
    async with ajb.connect(url) as board:
        return await rates.post_concurrently(board, jobs, posters)


async def post_batch(url: str, jobs: int, batch: int) -> float:
    async with ajb.connect(url) as board:
        return await rates.post_in_batches(board, jobs, batch)


async def drain(url: str, jobs: int, consumers: int) -> float:
    async with ajb.connect(url) as board:
        await rates.fill(board, jobs, 1000)
        # Let the connection read the POSTED notices of the fill first.
        await asyncio.sleep(0.5)
        rate = await consume(board, consumers, jobs)
        assert await board.job_count() == 0
        return rate


async def best(
    base: str, measure: Callable[[str], Awaitable[float]], repeat: int
) -> dict[str, float]:
    found: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(repeat):
        for name, options in SETTINGS.items():
            url = f"{base}?namespace=bench-{uuid.uuid4().hex[:8]}{options}"
            found[name].append(await measure(url))
    return {name: max(runs) for name, runs in found.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, c = args.jobs, args.concurrency
    measures: dict[str, Callable[[str], Awaitable[float]]] = {
        "post, 1 poster": lambda url: post_single(url, n, 1),
        f"post, {c} posters": lambda url: post_single(url, n, c),
        "post_many, batches of 100": lambda url: post_batch(url, n, 100),
        "drain, 1 consumer": lambda url: drain(url, n, 1),
        f"drain, {c} consumers": lambda url: drain(url, n, c),
    }
    with primary_and_replica() as port:
        base = f"redis://127.0.0.1:{port}/0"
        print(
            f"primary + 1 replica on 127.0.0.1, {n} jobs, jobs/s, best of {args.repeat}"
        )
        print(f"{'':30} {'async':>10} {'replicas=1':>11} {'ratio':>6}")
        for label, measure in measures.items():
            found = await best(base, measure, args.repeat)
            plain, waited = found["async"], found["replicas=1"]
            print(
                f"{label:<30} {plain:>10,.0f} {waited:>11,.0f} {waited / plain:>6.2f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
