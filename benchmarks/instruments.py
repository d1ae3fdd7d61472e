"""What instruments cost, in microseconds per job on the memory board.

    python benchmarks/instruments.py [--jobs 5000] [--repeat 15]

Times the same work, a post, claim_next and consume one after another, then a
drain by 64 consumers of one Worker with a handler that only yields, with no
instrument registered, with a do-nothing ``Instrument``
(the cost of the hooks themselves), with ``PrometheusMetrics``, and with
``OpenTelemetryTracing`` on the API's no-op tracer and on an SDK tracer
provider that records spans and exports them nowhere. The runs take turns, so
that they share the machine's noise; each figure is the best of *repeat*, and
the one in brackets its difference from no instrument.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from collections.abc import Callable

import rates
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import aiojobboard as ajb
from aiojobboard.contrib.otel import OpenTelemetryTracing
from aiojobboard.contrib.prometheus import PrometheusMetrics

SETUPS: dict[str, Callable[[], ajb.Instrument | None]] = {
    "no instrument": lambda: None,
    "do-nothing Instrument": ajb.Instrument,
    "PrometheusMetrics": lambda: PrometheusMetrics(CollectorRegistry()),
    "OpenTelemetry, API only": OpenTelemetryTracing,
    "OpenTelemetry, SDK": lambda: OpenTelemetryTracing(TracerProvider()),
}


async def cycle(board: ajb.JobBoard, jobs: int) -> float:
    """Post, claim and consume *jobs* jobs one after another; microseconds each."""
    started = time.perf_counter()
    for _ in range(jobs):
        await board.post("job")
        claim = await board.claim_next("bench")
        assert claim is not None
        await claim.consume()
    return (time.perf_counter() - started) / jobs * 1e6


async def drain(board: ajb.JobBoard, jobs: int) -> float:
    """Drain *jobs* jobs with a Worker of 64 consumers; microseconds each."""
    await rates.fill(board, jobs, 500)
    handled = 0
    all_handled = asyncio.Event()

    async def count(job: ajb.Job, claim: ajb.Claim) -> None:
        nonlocal handled
        await asyncio.sleep(0)
        handled += 1
        if handled == jobs:
            all_handled.set()

    worker = ajb.Worker(board, count, name="bench", concurrency=64)
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    await all_handled.wait()
    await worker.stop()
    elapsed = time.perf_counter() - started
    await running
    if worker.consumed != jobs:
        raise RuntimeError(f"consumed {worker.consumed} of {jobs}")
    return elapsed / jobs * 1e6


async def measure(jobs: int) -> tuple[float, float]:
    async with ajb.connect(f"memory://bench-{uuid.uuid4().hex}") as board:
        return await cycle(board, jobs), await drain(board, jobs)


async def main(jobs: int, repeat: int) -> None:
    best: dict[str, tuple[float, float]] = dict.fromkeys(SETUPS, (math.inf,) * 2)
    for _ in range(repeat):
        for name, setup in SETUPS.items():
            instrument = setup()
            if instrument is not None:
                ajb.instrument(instrument)
            try:
                cycled, drained = await measure(jobs)
            finally:
                if instrument is not None:
                    ajb.uninstrument(instrument)
            best[name] = (min(best[name][0], cycled), min(best[name][1], drained))
    print(f"memory:// board, {jobs:,} jobs per run, best of {repeat} runs")
    print(f"{'microseconds per job':<26}{'post+claim+consume':>20}{'Worker drain':>14}")
    base_cycle, base_drain = best["no instrument"]
    for name, (cycled, drained) in best.items():
        print(
            f"{name:<26}{cycled:>11.1f} ({cycled - base_cycle:+5.1f})"
            f"{drained:>7.1f} ({drained - base_drain:+5.1f})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.repeat))
