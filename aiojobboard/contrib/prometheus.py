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
        # Each board's labelled children, found once: labels() takes a lock.
        self._bound: weakref.WeakKeyDictionary[JobBoard, _Bound] = (
            weakref.WeakKeyDictionary()
        )
        self._busy: weakref.WeakKeyDictionary[Worker, Gauge] = (
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
        self.expired = counter(
            "claims_expired",
            "Claims lost for want of their lease (counted as lost too).",
        )
        self.cancelled = counter("jobs_cancelled", "Jobs cancelled by an operator.")
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

    def label_of(self, board: JobBoard) -> str:
        """The board label of *board*'s metrics."""
        return self._of(board).label

    def _of(self, board: JobBoard) -> _Bound:
        bound = self._bound.get(board)
        if bound is None:
            bound = self._bound[board] = _Bound(self, self._label(board))
        return bound

    def on_posted(self, board: JobBoard, count: int) -> None:
        self._of(board).posted.inc(count)

    def on_claimed(
        self, board: JobBoard, job: Job, owner: str, latency_s: float
    ) -> None:
        bound = self._of(board)
        bound.claimed.inc()
        bound.claim_latency.observe(latency_s)

    def on_finished(
        self, board: JobBoard, job: Job, owner: str, state: ClaimState
    ) -> None:
        counter = self._of(board).finished.get(state)
        if counter is not None:
            counter.inc()

    def on_lost(self, board: JobBoard, job: Job, owner: str, reason: str) -> None:
        self._of(board).lost.inc()

    def on_expired(self, board: JobBoard, job: Job, owner: str) -> None:
        self._of(board).expired.inc()

    def on_cancelled(self, board: JobBoard, job: Job, reason: str) -> None:
        self._of(board).cancelled.inc()

    def on_renewed(self, board: JobBoard, count: int) -> None:
        if count:
            self._of(board).renewals.inc(count)

    def on_busy(self, worker: Worker, busy: int) -> None:
        gauge = self._busy.get(worker)
        if gauge is None:
            label = self.label_of(worker.board)
            gauge = self._busy[worker] = self.busy.labels(label, worker.name)
        gauge.set(busy)

    async def sample_depth(self, board: JobBoard, *, interval: float = 15.0) -> None:
        """Set the depth gauge from ``board.job_count()`` every *interval* seconds.

        Runs until cancelled or until the board is closed; a failed count is
        logged at DEBUG and tried again at the next interval.
        """
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be seconds above 0, not {interval}")
        gauge = self._of(board).depth
        while not board.closed:
            try:
                gauge.set(await board.job_count())
            except BoardClosed:
                return
            except JobBoardError as exc:
                logger.debug("could not count the jobs on %s: %s", board.url, exc)
            await asyncio.sleep(interval)


class _Bound:
    """The metrics of one board, their labels bound."""

    __slots__ = (
        "cancelled",
        "claim_latency",
        "claimed",
        "depth",
        "expired",
        "finished",
        "label",
        "lost",
        "posted",
        "renewals",
    )

    def __init__(self, metrics: PrometheusMetrics, label: str) -> None:
        self.label = label
        self.posted = metrics.posted.labels(label)
        self.claimed = metrics.claimed.labels(label)
        self.lost = metrics.lost.labels(label)
        self.expired = metrics.expired.labels(label)
        self.cancelled = metrics.cancelled.labels(label)
        self.renewals = metrics.renewals.labels(label)
        self.claim_latency = metrics.claim_latency.labels(label)
        self.depth = metrics.depth.labels(label)
        self.finished = {
            ClaimState.CONSUMED: metrics.consumed.labels(label),
            ClaimState.ABANDONED: metrics.abandoned.labels(label),
            ClaimState.TRASHED: metrics.trashed.labels(label),
        }
