"""Loggers, the instrumentation seam, the Prometheus and OpenTelemetry instruments."""

from __future__ import annotations

import ast
import asyncio
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from prometheus_client import CollectorRegistry

import aiojobboard as ajb
from aiojobboard.contrib.otel import CLAIM_SPAN, JOB_SPAN, OpenTelemetryTracing
from aiojobboard.contrib.prometheus import PrometheusMetrics

from .conftest import LEASE, Kit

ROOT = Path(__file__).parent.parent


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Iterator[PrometheusMetrics]:
    metrics = PrometheusMetrics(registry)
    ajb.instrument(metrics)
    yield metrics
    ajb.uninstrument(metrics)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def tracing(provider: TracerProvider) -> Iterator[OpenTelemetryTracing]:
    tracing = OpenTelemetryTracing(provider)
    ajb.instrument(tracing)
    yield tracing
    ajb.uninstrument(tracing)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"aiojobboard_{name}", labels)


async def wait_for(condition: object, timeout: float = 5) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - metrics and counters have no event
            await asyncio.sleep(0.01)


# -- the seam ---------------------------------------------------------------


def test_the_board_label_names_the_board_never_its_host(
    board: ajb.JobBoard, board_url: str
) -> None:
    name = re.search(r"test-[0-9a-f]{12}", board_url)
    assert name is not None
    assert ajb.board_label(board) == name.group()


def test_only_instruments_can_be_registered() -> None:
    with pytest.raises(TypeError, match=r"aiojobboard\.Instrument"):
        ajb.instrument(object())  # type: ignore[arg-type]


async def test_a_failing_instrument_never_reaches_the_caller(
    board: ajb.JobBoard, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(ajb.Instrument):
        def on_posted(self, board: ajb.JobBoard, count: int) -> None:
            raise RuntimeError("instrument bug")

        def job_run(self, run: ajb.JobRun) -> AbstractContextManager[object]:
            raise RuntimeError("instrument bug")

    broken = Broken()
    ajb.instrument(broken)
    ajb.instrument(broken)  # twice is once
    try:
        assert ajb._observe.INSTRUMENTS.count(broken) == 1
        with caplog.at_level(logging.WARNING, "aiojobboard.observe"):
            job = await board.post("x")
            worker = ajb.Worker(board, _nothing, name="w")
            running = asyncio.create_task(worker.run())
            assert await job.wait(timeout=5)
            await worker.stop()
            await running
        assert worker.consumed == 1
        failed = [r.getMessage() for r in caplog.records if "failed in" in r.message]
        assert any("on_posted" in message for message in failed)
        assert any("job_run" in message for message in failed)
    finally:
        ajb.uninstrument(broken)
    assert broken not in ajb._observe.INSTRUMENTS


async def _nothing(job: ajb.Job, claim: ajb.Claim) -> None:
    pass


# -- Prometheus -------------------------------------------------------------


async def test_metrics_after_a_scripted_run(
    board: ajb.JobBoard,
    kit: Kit,
    metrics: PrometheusMetrics,
    registry: CollectorRegistry,
) -> None:
    label = ajb.board_label(board)
    jobs = [await board.post(f"job-{n}") for n in range(3)]
    jobs += await board.post_many([{"name": "job-3"}, {"name": "job-4"}])

    held = await board.claim(jobs[0], "w", lease=LEASE)
    # Consumed once its first renewal is counted.
    await wait_for(lambda: sample(registry, "lease_renewals_total", board=label))
    await held.consume()
    await (await board.claim(jobs[1], "w")).consume()
    async with board.claim(jobs[2], "w"):
        pass
    await (await board.claim(jobs[3], "w")).abandon()
    await board.claim(jobs[3], "w")
    await board.trash(jobs[3], "w")
    doomed = await board.claim(jobs[4], "w", lease=LEASE)
    await kit.lapse(board)
    await wait_for(lambda: doomed.lost, timeout=kit.patience)

    expected = {
        "jobs_posted_total": 5,
        "jobs_claimed_total": 6,
        "jobs_consumed_total": 3,
        "jobs_abandoned_total": 1,
        "jobs_trashed_total": 1,
        "claims_lost_total": 1,
        "claims_expired_total": 1,
        "claim_latency_seconds_count": 6,
    }
    found = {name: sample(registry, name, board=label) for name in expected}
    assert found == expected
    # A cancel counts once, and the claim it ends counts as lost, not expired.
    cancelled = await board.claim(await board.post("job-5"), "w")
    await board.cancel(cancelled.job, "not wanted")
    assert cancelled.lost
    assert sample(registry, "jobs_cancelled_total", board=label) == 1
    assert sample(registry, "claims_lost_total", board=label) == 2
    assert sample(registry, "claims_expired_total", board=label) == 1
    latency = sample(registry, "claim_latency_seconds_sum", board=label)
    assert latency is not None
    assert 0 < latency < 6 * 5
    renewals = sample(registry, "lease_renewals_total", board=label)
    assert renewals is not None
    assert renewals >= 1

    depth = asyncio.create_task(metrics.sample_depth(board, interval=0.02))
    try:
        await wait_for(lambda: sample(registry, "board_jobs", board=label) == 1)
    finally:
        depth.cancel()


async def test_the_depth_sampler_ends_with_its_board(
    open_board: object, metrics: PrometheusMetrics, registry: CollectorRegistry
) -> None:
    assert callable(open_board)
    board: ajb.JobBoard = await open_board()
    await board.post("x")
    sampler = asyncio.create_task(metrics.sample_depth(board, interval=0.02))
    label = ajb.board_label(board)
    await wait_for(lambda: sample(registry, "board_jobs", board=label) == 1)
    await board.close()
    await asyncio.wait_for(sampler, timeout=2)
    with pytest.raises(ValueError, match="interval"):
        await metrics.sample_depth(board, interval=0)


async def test_worker_busy_gauge(
    board: ajb.JobBoard, metrics: PrometheusMetrics, registry: CollectorRegistry
) -> None:
    release = asyncio.Event()

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        await release.wait()

    label = ajb.board_label(board)
    await board.post_many([{"name": "slow"}] * 3)
    worker = ajb.Worker(board, handle, name="busy-1", concurrency=4)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for(
            lambda: sample(registry, "worker_busy", board=label, worker="busy-1") == 3
        )
        release.set()
        await wait_for(
            lambda: sample(registry, "worker_busy", board=label, worker="busy-1") == 0
        )
        assert sample(registry, "jobs_consumed_total", board=label) == 3
    finally:
        await worker.stop()
        await running


# -- OpenTelemetry ----------------------------------------------------------


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_spans_of_a_worker_run(
    board: ajb.JobBoard,
    tracing: OpenTelemetryTracing,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    inner = provider.get_tracer("the handler")

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        with inner.start_as_current_span("handler work"):
            if job.name == "fails":
                raise ValueError("boom")
            if job.name == "refused":
                raise ajb.TrashJob("cannot be done")

    jobs = await board.post_many([{"name": "works"}, {"name": "fails"}])
    refused = await board.post("refused")
    worker = ajb.Worker(board, handle, name="tracer-1", concurrency=2, max_attempts=2)
    running = asyncio.create_task(worker.run())
    try:
        for job in [*jobs, refused]:
            assert await job.wait(timeout=10)
    finally:
        await worker.stop()
        await running

    runs = spans_named(exporter, JOB_SPAN)
    seen = sorted(
        (
            span.attributes["aiojobboard.job.name"],
            span.attributes["aiojobboard.job.attempt"],
            span.attributes["aiojobboard.job.outcome"],
            span.status.status_code.name,
        )
        for span in runs
        if span.attributes is not None
    )
    assert seen == [
        ("fails", 1, "abandoned", "ERROR"),
        ("fails", 2, "trashed", "ERROR"),
        ("refused", 1, "trashed", "ERROR"),
        ("works", 1, "consumed", "OK"),
    ]
    for span in runs:
        assert span.attributes is not None
        assert span.attributes["aiojobboard.job.owner"] == "tracer-1"
        assert span.attributes["aiojobboard.board"] == ajb.board_label(board)
        assert span.kind is trace.SpanKind.CONSUMER
    failed = [
        span
        for span in runs
        if span.attributes is not None
        and span.attributes["aiojobboard.job.name"] == "fails"
    ]
    for span in failed:
        assert span.status.description == "ValueError: boom"
        assert [event.name for event in span.events] == ["exception"]

    # The handler's own spans are children of the run's span.
    works = next(
        span
        for span in runs
        if span.attributes is not None
        and span.attributes["aiojobboard.job.name"] == "works"
    )
    [child] = [
        span
        for span in spans_named(exporter, "handler work")
        if span.parent is not None and span.parent.span_id == works.context.span_id
    ]
    assert child.context.trace_id == works.context.trace_id

    claims = spans_named(exporter, CLAIM_SPAN)
    assert len(claims) == 4
    for span in claims:
        assert span.attributes is not None
        assert span.attributes["aiojobboard.job.owner"] == "tracer-1"
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.end_time >= span.start_time
    assert {
        span.attributes["aiojobboard.job.uuid"] for span in claims if span.attributes
    } == {job.uuid for job in [*jobs, refused]}


async def test_a_lost_claim_is_an_error_span(
    board: ajb.JobBoard,
    kit: Kit,
    tracing: OpenTelemetryTracing,
    exporter: InMemorySpanExporter,
) -> None:
    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        await kit.lapse(board)
        await asyncio.sleep(kit.patience)  # cancelled when the claim is lost

    job = await board.post("doomed")
    worker = ajb.Worker(board, handle, name="w", lease=LEASE)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: worker.lost == 1, timeout=kit.patience)
    finally:
        await worker.stop()
        await running
    [span, *_] = spans_named(exporter, JOB_SPAN)
    assert span.attributes is not None
    assert span.attributes["aiojobboard.job.uuid"] == job.uuid
    assert span.attributes["aiojobboard.job.outcome"] == "lost"
    assert span.status.status_code is trace.StatusCode.ERROR


async def test_nothing_is_recorded_after_uninstrument(
    board: ajb.JobBoard,
    registry: CollectorRegistry,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    metrics = PrometheusMetrics(registry)
    tracing = OpenTelemetryTracing(provider)
    for each in (metrics, tracing):
        ajb.instrument(each)
        ajb.uninstrument(each)
    ajb.uninstrument(tracing)  # not registered: ignored
    label = ajb.board_label(board)
    await board.post("x")
    worker = ajb.Worker(board, _nothing, name="w")
    running = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: worker.consumed == 1)
    finally:
        await worker.stop()
        await running
    assert sample(registry, "jobs_posted_total", board=label) is None
    assert sample(registry, "jobs_consumed_total", board=label) is None
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [
        ("aiojobboard.contrib.prometheus", "prometheus_client", "prometheus"),
        ("aiojobboard.contrib.otel", "opentelemetry", "otel"),
    ],
)
def test_a_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, package: str, extra: str
) -> None:
    monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=re.escape(f"aiojobboard[{extra}]")):
        __import__(module)


# -- logging ----------------------------------------------------------------


def documented_loggers() -> set[str]:
    page = (ROOT / "docs" / "observability.md").read_text()
    section = page.split("## Loggers", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(aiojobboard[\w.]*)` \|", section, re.MULTILINE))


def loggers_in_source() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "aiojobboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
            ):
                [argument] = node.args
                # Only the package's own loggers, named by a literal; a name
                # computed at run time (a filter looking up a record's
                # logger, say) is not one of them.
                name = argument.value if isinstance(argument, ast.Constant) else None
                if isinstance(name, str) and name.startswith("aiojobboard"):
                    names.add(name)
    return names


def test_the_documented_loggers_are_the_ones_in_use() -> None:
    names = loggers_in_source()
    assert all(name.startswith("aiojobboard.") for name in names), names
    assert names == documented_loggers()


async def test_records_come_from_documented_loggers(
    board: ajb.JobBoard, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, "aiojobboard"):
        job = await board.post("x")
        await (await board.claim(job, "w")).abandon()
        doomed = await board.claim(job, "w", lease=LEASE)
        await kit.lapse(board)
        await wait_for(lambda: doomed.lost, timeout=kit.patience)
        worker = ajb.Worker(board, _nothing, name="w")
        running = asyncio.create_task(worker.run())
        assert await job.wait(timeout=kit.patience)
        await worker.stop()
        await running
    used = {
        record.name
        for record in caplog.records
        if record.name.startswith("aiojobboard")
    }
    assert {"aiojobboard.board", "aiojobboard.claim", "aiojobboard.worker"} <= used
    assert used <= documented_loggers()
