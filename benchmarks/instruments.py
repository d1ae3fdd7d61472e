"""What instruments cost: post and drain rates on the memory board with each one.

    python benchmarks/instruments.py [--jobs 20000] [--repeat 5]

Runs the same post and drain (64 consumers of one Worker, a handler that only
yields) with no instrument registered, with a do-nothing ``Instrument``
(the cost of the hooks themselves), with ``PrometheusMetrics``, and with
``OpenTelemetryTracing`` on the API's no-op tracer and on an SDK tracer
provider that records spans and exports them nowhere. The runs take turns, so
that they share the machine's noise; each figure is the best of *repeat*.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def post_and_drain(jobs: int) -> tuple[float, float]:
    async with ajb.connect(f"memory://bench-{uuid.uuid4().hex}") as board:
        posted = await rates.post_concurrently(board, jobs, 1)
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
        drained = jobs / (time.perf_counter() - started)
        await running
        if worker.consumed != jobs:
            raise RuntimeError(f"consumed {worker.consumed} of {jobs}")
        return posted, drained


async def main(jobs: int, repeat: int) -> None:
    best: dict[str, tuple[float, float]] = dict.fromkeys(SETUPS, (0.0, 0.0))
    for _ in range(repeat):
        for name, setup in SETUPS.items():
            instrument = setup()
            if instrument is not None:
                ajb.instrument(instrument)
            try:
                posted, drained = await post_and_drain(jobs)
            finally:
                if instrument is not None:
                    ajb.uninstrument(instrument)
            best[name] = (max(best[name][0], posted), max(best[name][1], drained))
    print(f"memory:// board, {jobs:,} jobs, 64 consumers, best of {repeat}")
    print(f"{'':<26}{'post jobs/s':>12}{'drain jobs/s':>14}")
    for name, (posted, drained) in best.items():
        print(f"{name:<26}{posted:>12,.0f}{drained:>14,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.repeat))
