"""OpenTelemetry spans for claims and Worker runs: ``aiojobboard[otel]``.

::

    aiojobboard.instrument(OpenTelemetryTracing())   # the global tracer provider

Uses only the OpenTelemetry API: spans go wherever the application's SDK
sends them, and nowhere when it has none. Span names and attributes are in
docs/observability.md.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from .. import __version__
from .._observe import Instrument, JobRun, board_label
from ..board import JobBoard
from ..jobs import Job

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "aiojobboard.contrib.otel needs opentelemetry-api, which is not "
        "installed: pip install 'aiojobboard[otel]'",
        name=exc.name,
    ) from exc

__all__ = ["CLAIM_SPAN", "JOB_SPAN", "OpenTelemetryTracing"]

#: The span around a Worker's run of one job; the handler's spans are its children.
JOB_SPAN = "aiojobboard.job"
#: The span of one granted claim, from the request to the grant.
CLAIM_SPAN = "aiojobboard.claim"


class OpenTelemetryTracing(Instrument):
    """A span per job a Worker runs and per claim granted.

    *tracer_provider* defaults to the global one. *label* names the board in
    the ``aiojobboard.board`` attribute.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        label: Callable[[JobBoard], str] = board_label,
    ) -> None:
        self._tracer = trace.get_tracer(
            "aiojobboard", __version__, tracer_provider=tracer_provider
        )
        self._label = label
        self._labels: weakref.WeakKeyDictionary[JobBoard, str] = (
            weakref.WeakKeyDictionary()
        )

    def _label_of(self, board: JobBoard) -> str:
        label = self._labels.get(board)
        if label is None:
            label = self._labels[board] = self._label(board)
        return label

    def on_claimed(
        self, board: JobBoard, job: Job, owner: str, latency_s: float
    ) -> None:
        # Told once the claim is granted: the span is drawn after the fact.
        end = time.time_ns()
        span = self._tracer.start_span(
            CLAIM_SPAN,
            kind=trace.SpanKind.CLIENT,
            start_time=end - int(latency_s * 1e9),
            attributes={
                "aiojobboard.board": self._label_of(board),
                "aiojobboard.job.uuid": job.uuid,
                "aiojobboard.job.name": job.name,
                "aiojobboard.job.owner": owner,
            },
        )
        span.end(end_time=end)

    def job_run(self, run: JobRun) -> AbstractContextManager[object]:
        return self._job_span(run)

    @contextmanager
    def _job_span(self, run: JobRun) -> Iterator[trace.Span]:
        claim = run.claim
        with self._tracer.start_as_current_span(
            JOB_SPAN,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "aiojobboard.board": self._label_of(run.worker.board),
                "aiojobboard.job.uuid": claim.job.uuid,
                "aiojobboard.job.name": claim.job.name,
                "aiojobboard.job.attempt": claim.attempt,
                "aiojobboard.job.owner": claim.owner,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            finally:
                _close(span, run)


def _close(span: trace.Span, run: JobRun) -> None:
    outcome = run.outcome or "unfinished"
    span.set_attribute("aiojobboard.job.outcome", outcome)
    if run.error is not None:
        span.record_exception(run.error)
        described = f"{type(run.error).__name__}: {run.error}"
        span.set_status(trace.Status(trace.StatusCode.ERROR, described))
    elif outcome == "consumed":
        span.set_status(trace.Status(trace.StatusCode.OK))
    else:
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"job {outcome}"))
