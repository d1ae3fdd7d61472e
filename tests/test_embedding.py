"""The FastAPI and aiohttp examples, served on real ports and driven over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web

import aiojobboard as ajb

from .conftest import REDIS_URL

#: A served app: its base URL, and the app's state (to look at its Worker).
Served = tuple[str, Any]
Serve = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(Path(__file__).parent.parent / "examples")


@asynccontextmanager
async def serve_fastapi(url: str, **options: Any) -> AsyncIterator[Served]:
    import fastapi_app

    app = fastapi_app.create_app(url, **options)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", ws="none", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", app.state.resizer
    finally:
        server.should_exit = True
        await serving


@asynccontextmanager
async def serve_aiohttp(url: str, **options: Any) -> AsyncIterator[Served]:
    import aiohttp_app

    app = aiohttp_app.create_app(url, **options)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", app[aiohttp_app.RESIZER]
    finally:
        await runner.cleanup()


@pytest.fixture(params=["fastapi", "aiohttp"])
def serve(request: pytest.FixtureRequest) -> Serve:
    return serve_fastapi if request.param == "fastapi" else serve_aiohttp


def memory_url() -> str:
    return f"memory://embed-{uuid.uuid4().hex[:12]}"


async def wait_for_state(
    client: httpx.AsyncClient, job: str, state: str, timeout: float = 10
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get(f"/jobs/{job}")
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            if answer["state"] == state:
                return answer
            await asyncio.sleep(0.02)


def hold_jobs(resizer: Any) -> asyncio.Event:
    """Keep each job the app's Worker claims from running until the event is set."""
    release = asyncio.Event()
    resize = resizer.worker.handler

    async def held(job: ajb.Job, claim: ajb.Claim) -> None:
        await release.wait()
        await resize(job, claim)

    resizer.worker.handler = held
    return release


async def post(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job: str = response.json()["uuid"]
    return job


@pytest.mark.parametrize("board", ["memory", "redis"])
async def test_posted_jobs_are_consumed_by_the_embedded_worker(
    serve: Serve, board: str
) -> None:
    url = memory_url()
    if board == "redis":
        url = f"{REDIS_URL}?namespace=embed-{uuid.uuid4().hex[:12]}"
    async with (
        serve(url) as (base, resizer),
        httpx.AsyncClient(base_url=base) as client,
    ):
        jobs = [
            await post(
                client,
                image=f"cat{n}.png",
                width=32,
                height=16 + n,
                priority=["VERY_HIGH", "HIGH", "NORMAL", "LOW", "VERY_LOW"][n],
            )
            for n in range(5)
        ]
        for n, job in enumerate(jobs):
            answer = await wait_for_state(client, job, "COMPLETE")
            assert answer["name"] == "resize"
            assert answer["owner"] is None
            assert answer["attempt"] == 1
            assert answer["result"]["thumbnail"] == f"cat{n}.png@32x{16 + n}"
            assert answer["result"]["by"] == resizer.worker.name
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["jobs"] == 0
        assert health.json()["worker"]["consumed"] == 5


async def test_a_running_job_shows_its_owner(serve: Serve) -> None:
    async with (
        serve(memory_url()) as (base, resizer),
        httpx.AsyncClient(base_url=base) as client,
    ):
        release = hold_jobs(resizer)
        job = await post(client, image="a.png", width=1, height=1)
        answer = await wait_for_state(client, job, "CLAIMED")
        assert answer["owner"] == resizer.worker.name
        assert answer["result"] is None
        release.set()
        await wait_for_state(client, job, "COMPLETE")


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"width": 3, "height": 3}, "image"),
        ({"image": "a.png", "width": 0, "height": 3}, "width"),
        ({"image": "a.png", "width": 3, "height": "tall"}, "height"),
        ({"image": "a.png", "width": 3, "height": 3, "work_seconds": -1}, "work"),
        ({"image": "a.png", "width": 3, "height": 3, "priority": "ASAP"}, "priority"),
        ([1, 2], "object"),
    ],
)
async def test_bad_input_is_refused_with_a_message(
    serve: Serve, body: Any, complaint: str
) -> None:
    url = memory_url()
    async with (
        serve(url) as (base, resizer),
        httpx.AsyncClient(base_url=base) as client,
    ):
        response = await client.post("/jobs", json=body)
        assert response.status_code in (400, 422), response.text
        assert complaint in response.text.lower()
        assert await resizer.board.job_count() == 0


async def test_a_posting_over_the_size_limit_is_a_400(serve: Serve) -> None:
    async with (
        serve(memory_url()) as (base, resizer),
        httpx.AsyncClient(base_url=base) as client,
    ):
        resizer.board.max_job_size = 200
        response = await client.post(
            "/jobs", json={"image": "x" * 500, "width": 1, "height": 1}
        )
        assert response.status_code == 400, response.text
        assert "limit" in response.json()["detail"]


async def test_unknown_and_malformed_job_ids(serve: Serve) -> None:
    async with (
        serve(memory_url()) as (base, _),
        httpx.AsyncClient(base_url=base) as client,
    ):
        missing = await client.get(f"/jobs/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert "no job" in missing.json()["detail"]
        malformed = await client.get("/jobs/not-a-uuid")
        assert malformed.status_code in (400, 422)


async def test_shutdown_drains_a_running_job(serve: Serve) -> None:
    url = memory_url()
    async with ajb.connect(url) as board:
        async with (
            serve(url) as (base, resizer),
            httpx.AsyncClient(base_url=base) as client,
        ):
            release = hold_jobs(resizer)
            job = await post(client, image="big.png", width=9, height=9, work_seconds=1)
            await wait_for_state(client, job, "CLAIMED")
            release.set()
        # The server is down: its Worker finished the job before the board closed.
        assert resizer.worker.consumed == 1
        assert resizer.results[job]["thumbnail"] == "big.png@9x9"
        assert await board.job_count() == 0


async def test_a_job_outlasting_the_grace_goes_back_to_the_board(serve: Serve) -> None:
    url = memory_url()
    async with ajb.connect(url) as board:
        async with (
            serve(url, grace=0.2) as (base, resizer),
            httpx.AsyncClient(base_url=base) as client,
        ):
            job = await post(
                client, image="huge.png", width=9, height=9, work_seconds=5
            )
            await wait_for_state(client, job, "CLAIMED")
        assert resizer.worker.consumed == 0
        assert job not in resizer.results
        [left] = [found async for found in board.iterjobs(only_unclaimed=True)]
        assert left.uuid == job
