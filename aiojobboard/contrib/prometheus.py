"""Prometheus metrics for boards and Workers: ``aiojobboard[prometheus]``.

::

    metrics = PrometheusMetrics()          # registers in prometheus_client's REGISTRY
    aiojobboard.instrument(metrics)
    depth = asyncio.create_task(metrics.sample_depth(board, interval=15))

Every metric is labelled by board (:func:`aiojobboard.board_label`: its
namespace, path or memory name, or what *label* returns), never by job. The
names and what they count are in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable, Sequence

from .._observe import Instrument, board_label
from ..board import JobBoard
from ..claims import ClaimState
from ..errors import BoardClosed, JobBoardError
from ..jobs import Job
from ..worker import Worker

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "aiojobboard.contrib.prometheus needs prometheus-client, which is not "
        "installed: pip install 'aiojobboard[prometheus]'",
        name=exc.name,
    ) from exc

__all__ = ["CLAIM_LATENCY_BUCKETS", "PrometheusMetrics"]

logger = logging.getLogger("aiojobboard.contrib.prometheus")

#: Seconds: a claim on memory takes microseconds, on a server a round trip.
CLAIM_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    math.inf,
)


class PrometheusMetrics(Instrument):
    """Counters, a claim latency histogram and gauges, in *registry*.

    Register it with :func:`aiojobboard.instrument`. The board depth gauge is
    set by :meth:`sample_depth`, which a task must run: a gauge cannot await
    the board. *prefix* starts every metric name.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        prefix: str = "aiojobboard",
        label: Callable[[JobBoard], str] = board_label,
        buckets: Sequence[float] = CLAIM_LATENCY_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self._label = label
        self._labels: weakref.WeakKeyDictionary[JobBoard, str] = (
            weakref.WeakKeyDictionary()
        )

        def counter(name: str, text: str) -> Counter:
            return Counter(f"{prefix}_{name}", text, ["board"], registry=registry)

        self.posted = counter("jobs_posted", "Jobs posted.")
        self.claimed = counter("jobs_claimed", "Claims granted.")
        self.consumed = counter("jobs_consumed", "Jobs consumed by their holder.")
        self.abandoned = counter("jobs_abandoned", "Jobs given back to the board.")
        self.trashed = counter("jobs_trashed", "Jobs trashed by their holder.")
        self.lost = counter("claims_lost", "Claims lost before they were finished.")
        self.renewals = counter("lease_renewals", "Leases renewed.")
        self.claim_latency = Histogram(
            f"{prefix}_claim_latency_seconds",
            "Seconds from asking for a claim to holding it.",
            ["board"],
            registry=registry,
            buckets=buckets,
        )
        self.depth = Gauge(
            f"{prefix}_board_jobs",
            "Jobs on the board, claimed or not, when last sampled.",
            ["board"],
            registry=registry,
        )
        self.busy = Gauge(
            f"{prefix}_worker_busy",
            "Jobs a Worker is running now.",
            ["board", "worker"],
            registry=registry,
        )
        self._finished = {
            ClaimState.CONSUMED: self.consumed,
            ClaimState.ABANDONED: self.abandoned,
            ClaimState.TRASHED: self.trashed,
        }

    def label_of(self, board: JobBoard) -> str:
        """The board label of *board*'s metrics."""
        label = self._labels.get(board)
        if label is None:
            label = self._labels[board] = self._label(board)
        return label

    def on_posted(self, board: JobBoard, count: int) -> None:
        self.posted.labels(self.label_of(board)).inc(count)

    def on_claimed(
        self, board: JobBoard, job: Job, owner: str, latency_s: float
    ) -> None:
        label = self.label_of(board)
        self.claimed.labels(label).inc()
        self.claim_latency.labels(label).observe(latency_s)

    def on_finished(
        self, board: JobBoard, job: Job, owner: str, state: ClaimState
    ) -> None:
        counter = self._finished.get(state)
        if counter is not None:
            counter.labels(self.label_of(board)).inc()

    def on_lost(self, board: JobBoard, job: Job, owner: str, reason: str) -> None:
        self.lost.labels(self.label_of(board)).inc()

    def on_renewed(self, board: JobBoard, count: int) -> None:
        if count:
            self.renewals.labels(self.label_of(board)).inc(count)

    def on_busy(self, worker: Worker, busy: int) -> None:
        self.busy.labels(self.label_of(worker.board), worker.name).set(busy)

    async def sample_depth(self, board: JobBoard, *, interval: float = 15.0) -> None:
        """Set the depth gauge from ``board.job_count()`` every *interval* seconds.

        Runs until cancelled or until the board is closed; a failed count is
        logged at DEBUG and tried again at the next interval.
        """
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be seconds above 0, not {interval}")
        gauge = self.depth.labels(self.label_of(board))
        while not board.closed:
            try:
                gauge.set(await board.job_count())
            except BoardClosed:
                return
            except JobBoardError as exc:
                logger.debug("could not count the jobs on %s: %s", board.url, exc)
            await asyncio.sleep(interval)
