"""The web dashboard: its JSON API in process, its event stream over a real
uvicorn server, the ``serve`` command as a real process, and the page itself
in a real headless Chromium against a Redis board."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import aiojobboard as ajb
from aiojobboard.web import create_app, serve

from .conftest import REDIS_URL
from .redis_helpers import ensure_shared_redis, free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def memory_url(kind: str = "web") -> str:
    return f"memory://{kind}-{uuid.uuid4().hex}"


@pytest.fixture
async def board() -> AsyncIterator[ajb.JobBoard]:
    async with ajb.connect(memory_url()) as opened:
        yield opened


@pytest.fixture
async def other(board: ajb.JobBoard) -> AsyncIterator[ajb.JobBoard]:
    """A second connection to the same board, as another process would have."""
    async with ajb.connect(board.url) as opened:
        yield opened


def client_for(app: Any, host: str = "localhost:8080") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


@pytest.fixture
async def client(board: ajb.JobBoard) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(board)) as opened:
        yield opened


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert "Traceback" not in body["error"]
    message: str = body["error"]
    return message


# -- the job list ---------------------------------------------------------------


async def test_jobs_in_board_order_with_owner_and_attempt(
    board: ajb.JobBoard, other: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    low = await board.post("tidy", priority=ajb.LOW)
    first = await board.post("ship", {"order": 1})
    high = await board.post("page", priority=ajb.HIGH)
    second = await board.post("ship", {"order": 2})
    await other.claim(first, "worker-1")

    response = await client.get("/api/jobs")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    jobs = response.json()
    assert [job["uuid"] for job in jobs] == [
        high.uuid,
        first.uuid,
        second.uuid,
        low.uuid,
    ]
    held = jobs[1]
    assert (held["state"], held["owner"], held["attempt"]) == ("CLAIMED", "worker-1", 1)
    assert isinstance(held["token"], int)
    assert (jobs[2]["state"], jobs[2]["owner"], jobs[2]["attempt"]) == (
        "UNCLAIMED",
        None,
        0,
    )
    assert set(held) >= {
        "name", "priority", "created_on", "age", "sequence", "book_uuid"
    }  # fmt: skip
    assert held["priority"] == "NORMAL"
    assert held["sequence"] == first.sequence
    assert 0 <= held["age"] < 60


async def test_jobs_filters_and_limit(
    board: ajb.JobBoard, other: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    resize = await board.post("Resize-Image")
    email = await board.post("send-email")
    thumbs = await board.post("resize-thumbnail")
    await other.claim(email, "mailer-1")
    await other.claim(thumbs, "imager-2")

    async def uuids(**params: str) -> list[str]:
        response = await client.get("/api/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["uuid"] for job in response.json()]

    assert await uuids(state="unclaimed") == [resize.uuid]
    assert await uuids(state="CLAIMED") == [email.uuid, thumbs.uuid]
    assert await uuids(name="RESIZE") == [resize.uuid, thumbs.uuid]
    assert await uuids(owner="imager") == [thumbs.uuid]
    assert await uuids(name="resize", state="claimed") == [thumbs.uuid]
    assert await uuids(limit="2") == [resize.uuid, email.uuid]
    assert await uuids(state="", name="") == [resize.uuid, email.uuid, thumbs.uuid]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"state": "COMPLETE"}, "state must be UNCLAIMED or CLAIMED"),
        ({"state": "sideways"}, "state must be UNCLAIMED or CLAIMED"),
        ({"limit": "0"}, "limit must be a whole number"),
        ({"limit": "lots"}, "limit must be a whole number"),
        ({"limit": "100000"}, "limit must be a whole number"),
    ],
)
async def test_jobs_refuses_bad_filters(
    client: httpx.AsyncClient, params: dict[str, str], needle: str
) -> None:
    response = await client.get("/api/jobs", params=params)

    assert response.status_code == 400
    assert needle in error_of(response)


# -- one job ---------------------------------------------------------------------


async def test_job_detail_carries_its_logbook() -> None:
    async with (
        ajb.book.connect(memory_url("books")) as books,
        ajb.connect(memory_url()) as board,
    ):
        book = ajb.book.LogBook("order-7")
        flow = ajb.book.FlowDetail("ship-order", state="RUNNING")
        flow.add(ajb.book.AtomDetail("pack", state="SUCCESS", results={"boxes": 3}))
        flow.add(
            ajb.book.AtomDetail(
                "label", state="FAILURE", failure={"message": "printer jammed"}
            )
        )
        book.add(flow)
        await books.save_logbook(book)
        job = await board.post("ship", {"order": 7}, book=book)

        async with client_for(create_app(board, books=books)) as client:
            response = await client.get(f"/api/jobs/{job.uuid}")

    assert response.status_code == 200
    detail = response.json()
    assert detail["details"] == {"order": 7}
    assert (detail["book_uuid"], detail["book_name"]) == (book.uuid, "order-7")
    assert detail["book_error"] is None
    [shown] = detail["book"]["flows"]
    assert (shown["name"], shown["state"]) == ("ship-order", "RUNNING")
    pack, label = shown["atoms"]
    assert (pack["name"], pack["state"], pack["results"]) == (
        "pack",
        "SUCCESS",
        {"boxes": 3},
    )
    assert (label["state"], label["failure"]) == (
        "FAILURE",
        {"message": "printer jammed"},
    )


async def test_job_detail_says_why_a_logbook_is_missing(
    board: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    job = await board.post("ship", book=ajb.book.LogBook("unsaved"))

    detail = (await client.get(f"/api/jobs/{job.uuid}")).json()

    assert detail["book"] is None
    assert "no book store" in detail["book_error"]


async def test_job_detail_of_a_gone_or_bad_uuid(
    board: ajb.JobBoard, other: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    job = await board.post("done")
    claim = await other.claim(job, "w")
    await claim.consume()

    gone = await client.get(f"/api/jobs/{job.uuid}")
    bad = await client.get("/api/jobs/not-a-uuid")

    assert gone.status_code == 404
    assert job.uuid in error_of(gone)
    assert bad.status_code == 400
    assert "not a job uuid" in error_of(bad)


# -- cancelling ------------------------------------------------------------------


async def test_cancel_a_claimed_job_loses_the_holders_claim(
    board: ajb.JobBoard, other: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    job = await board.post("doomed")
    claim = await other.claim(job, "worker-1")
    events = board.events()
    trashed = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)

    response = await client.post(
        f"/api/jobs/{job.uuid}/cancel", json={"reason": "  wrong order  "}
    )

    assert response.status_code == 200
    assert response.json() == {
        "uuid": job.uuid,
        "cancelled": True,
        "reason": "wrong order",
    }
    event = await asyncio.wait_for(trashed, 5)
    assert (event.kind, event.job_uuid, event.reason) == (
        ajb.EventKind.TRASHED,
        job.uuid,
        "wrong order",
    )
    for _ in range(100):
        if claim.lost:
            break
        await asyncio.sleep(0.02)
    assert claim.lost
    assert await job.get_state() is ajb.JobState.COMPLETE

    again = await client.post(f"/api/jobs/{job.uuid}/cancel", json={"reason": "x"})
    assert again.status_code == 404


async def test_cancel_without_a_reason_uses_the_default(
    board: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    job = await board.post("doomed")

    response = await client.post(f"/api/jobs/{job.uuid}/cancel", json={})

    assert response.json()["reason"] == "cancelled"
    assert await board.job_count() == 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        ('{"reason": "x"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ("reason=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, ""),
        ("{bad", {}, 400, "not JSON"),
        ('["x"]', {}, 400, "must be a JSON object"),
        ('{"reason": 3}', {}, 400, "reason must be a string"),
        ('{"reason": "  "}', {}, 400, "must not be empty"),
        ('{"reason": "' + "x" * 1001 + '"}', {}, 400, "at most 1000"),
        ('{"reason": "x", "force": true}', {}, 400, "unknown field 'force'"),
        ('{"reason": "x"}', {"Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
    ],
)
async def test_cancel_refuses_bad_requests(
    board: ajb.JobBoard,
    client: httpx.AsyncClient,
    body: str,
    headers: dict[str, str],
    status: int,
    needle: str,
) -> None:
    job = await board.post("kept")

    response = await client.post(
        f"/api/jobs/{job.uuid}/cancel",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )

    assert response.status_code == status
    assert needle in error_of(response)
    assert await board.job_count() == 1


async def test_cancel_of_an_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/api/jobs/{uuid.uuid4()}/cancel", json={"reason": "x"}
    )

    assert response.status_code == 404
    assert "not on the board" in error_of(response)


async def test_cancel_takes_post_only(
    board: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    job = await board.post("kept")

    response = await client.get(f"/api/jobs/{job.uuid}/cancel")

    assert response.status_code == 405
    assert error_of(response)
    assert await board.job_count() == 1


# -- the rest of the API ---------------------------------------------------------


async def test_workers_lists_who_holds_what(
    board: ajb.JobBoard, other: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    job = await board.post("busy")
    await other.claim(job, "worker-9")

    workers = (await client.get("/api/workers")).json()

    [worker] = [w for w in workers if w["name"] == "worker-9"]
    assert worker["holding"] == [job.uuid]
    assert worker["pid"] == os.getpid()
    assert set(worker) == {"name", "host", "pid", "since", "seen", "holding"}


async def test_board_info_and_unknown_routes(
    board: ajb.JobBoard, client: httpx.AsyncClient
) -> None:
    await board.post("one")

    info = (await client.get("/api/board")).json()
    missing = await client.get("/api/nothing")

    assert info == {"url": board.url, "jobs": 1, "books": False, "limit": 500}
    assert missing.status_code == 404
    assert error_of(missing) == "Not Found"


async def test_an_unexpected_failure_is_a_json_500_without_details(
    board: ajb.JobBoard,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A fault no real board shows on demand: a bug below the dashboard.
    async def broken() -> int:
        raise RuntimeError("password=hunter2 leaked by a bug")

    monkeypatch.setattr(board, "job_count", broken)

    response = await client.get("/api/board")

    assert response.status_code == 500
    assert "hunter2" not in response.text
    assert "internal error" in error_of(response)
    assert "dashboard request /api/board failed" in caplog.text


async def test_the_page_and_its_files_are_served_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    script = await client.get("/app.js")
    style = await client.get("/app.css")

    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="app.js"' in page.text
    assert 'href="app.css"' in page.text
    # Relative URLs only, so the page works under a mount path; no CDN.
    assert 'src="/' not in page.text
    assert 'href="/' not in page.text
    assert "http" not in page.text.replace("http-equiv", "")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text
    assert 'EventSource("api/events")' in script.text
    assert style.headers["content-type"].startswith("text/css")


async def test_mounted_under_a_path(board: ajb.JobBoard) -> None:
    job = await board.post("mounted")
    outer = Starlette(routes=[Mount("/ops/board", app=create_app(board))])

    async with client_for(outer) as client:
        page = await client.get("/ops/board/")
        bare = await client.get("/ops/board", follow_redirects=False)
        jobs = await client.get("/ops/board/api/jobs")

    assert page.status_code == 200
    assert "<title>aiojobboard</title>" in page.text
    assert bare.status_code in (307, 308)
    assert bare.headers["location"].endswith("/ops/board/")
    assert [j["uuid"] for j in jobs.json()] == [job.uuid]


def test_create_app_wants_a_board() -> None:
    with pytest.raises(TypeError, match="expected a JobBoard"):
        create_app("memory://")  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "[::1]:8080", "LOCALHOST"])
async def test_loopback_names_are_answered(board: ajb.JobBoard, host: str) -> None:
    async with client_for(create_app(board), host) as client:
        assert (await client.get("/api/jobs")).status_code == 200


async def test_another_host_name_is_refused(
    board: ajb.JobBoard, caplog: pytest.LogCaptureFixture
) -> None:
    # A page whose name was pointed at 127.0.0.1 sends its own name as Host.
    job = await board.post("x")
    async with client_for(create_app(board), "evil.example:8080") as client:
        read = await client.get(f"/api/jobs/{job.uuid}")
        cancel = await client.post(
            f"/api/jobs/{job.uuid}/cancel",
            json={},
            headers={"Sec-Fetch-Site": "same-origin"},
        )
        page = await client.get("/")

    for response in (read, cancel, page):
        assert response.status_code == 400
        assert "does not answer to host 'evil.example'" in error_of(response)
    assert await board.job_count() == 1
    assert "refused a request for host 'evil.example'" in caplog.text


async def test_allowed_hosts_are_named_or_any(board: ajb.JobBoard) -> None:
    named = create_app(board, allowed_hosts=["Board.Example"])
    async with client_for(named, "board.example") as client:
        assert (await client.get("/api/jobs")).status_code == 200
    async with client_for(named, "localhost") as client:
        assert (await client.get("/api/jobs")).status_code == 400
    async with client_for(create_app(board, allowed_hosts=["*"]), "any") as client:
        assert (await client.get("/api/jobs")).status_code == 200
    with pytest.raises(TypeError, match="list of host names"):
        create_app(board, allowed_hosts="localhost")
    with pytest.raises(ValueError, match="not a host name"):
        create_app(board, allowed_hosts=[""])


# -- the event stream, over a real server -----------------------------------------


Messages = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]


def reader(lines: AsyncIterator[str]) -> Messages:
    """Read one Server-Sent Events message at a time: (event name, data)."""

    async def next_message() -> tuple[str, dict[str, Any]]:
        name, data = "message", ""
        while True:
            line = await asyncio.wait_for(anext(lines), 10)
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data += line.partition(":")[2].strip()
            elif line == "" and data:
                return name, json.loads(data)

    return next_message


@pytest.fixture
async def served(board: ajb.JobBoard) -> AsyncIterator[str]:
    """The dashboard of *board* on a real uvicorn server; yields its address."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(board, port=0, on_ready=ready.set_result))
    address = await asyncio.wait_for(ready, 10)
    yield address
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def wait_until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_event_stream_delivers_the_boards_events(
    board: ajb.JobBoard, other: ajb.JobBoard, served: str
) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", served + "api/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        next_message = reader(response.aiter_lines())
        assert await next_message() == ("ready", {})

        job = await other.post("streamed", {"n": 1}, priority=ajb.HIGH)
        claim = await other.claim(job, "worker-3")
        await board.cancel(job, reason="changed my mind")

        kind, posted = await next_message()
        assert (kind, posted["kind"], posted["job_uuid"]) == (
            "message",
            "POSTED",
            job.uuid,
        )
        assert posted["job"]["name"] == "streamed"
        assert posted["job"]["priority"] == "HIGH"
        assert posted["job"]["state"] == "UNCLAIMED"
        _, claimed = await next_message()
        assert (claimed["kind"], claimed["owner"], claimed["token"]) == (
            "CLAIMED",
            "worker-3",
            claim.token,
        )
        _, trashed = await next_message()
        assert (trashed["kind"], trashed["reason"]) == ("TRASHED", "changed my mind")
        assert set(trashed) == {"kind", "job_uuid", "owner", "token", "reason", "at"}


async def test_event_stream_ends_when_the_client_goes(
    board: ajb.JobBoard, served: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", served + "api/events") as response:
            lines = response.aiter_lines()
            assert await reader(lines)() == ("ready", {})
            assert len(board._subscriptions) == 1
        # The server hears the connection close and drops its subscription.
        await wait_until(lambda: not board._subscriptions)


async def test_event_stream_ends_when_the_server_stops(board: ajb.JobBoard) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(board, port=0, on_ready=ready.set_result))
    address = await asyncio.wait_for(ready, 10)
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", address + "api/events") as response,
    ):
        lines = response.aiter_lines()
        assert await reader(lines)() == ("ready", {})
        # Cancelling serve() stops the server as SIGINT does: streams end first.
        task.cancel()
        rest = [line async for line in lines]
    assert all(not line or line.startswith(":") for line in rest)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not board._subscriptions


async def test_a_stopped_app_refuses_new_streams(board: ajb.JobBoard) -> None:
    app = create_app(board)
    app.state.streams.close()

    async with client_for(app) as client:
        refused = await client.get("/api/events")

    assert refused.status_code == 503
    assert "shutting down" in error_of(refused)


async def test_event_stream_ends_when_the_board_closes() -> None:
    board = await ajb.connect(memory_url())
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(board, port=0, on_ready=ready.set_result))
    try:
        address = await asyncio.wait_for(ready, 10)
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream("GET", address + "api/events") as response,
        ):
            lines = response.aiter_lines()
            assert await reader(lines)() == ("ready", {})
            await board.close()
            rest = [line async for line in lines]
        assert all(not line or line.startswith(":") for line in rest)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await board.close()


# -- the serve command, as a real process ------------------------------------------


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "aiojobboard.cli", *argv]


def test_serve_stops_cleanly_on_sigint_with_a_stream_open() -> None:
    with subprocess.Popen(
        cli(memory_url(), "serve", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as server:
        try:
            assert server.stdout is not None
            ready, _, _ = select.select([server.stdout], [], [], 30)
            assert ready, "serve printed nothing in 30 s"
            line = server.stdout.readline()
            assert line.startswith("serving memory://"), line
            address = line.split()[-1]
            assert address.startswith("http://127.0.0.1:")

            with (
                httpx.Client(timeout=10) as http,
                http.stream("GET", address + "api/events") as response,
            ):
                lines = response.iter_lines()
                assert next(lines) == "retry: 2000"
                started = time.monotonic()
                server.send_signal(signal.SIGINT)
                rest = list(lines)  # ends when the server ends the stream
            _, err = server.communicate(timeout=20)
            stopped = time.monotonic() - started
        finally:
            server.kill()

    assert server.returncode == 0, err
    assert "Traceback" not in err
    assert "no authentication" in err
    assert "event: ready" in rest
    assert stopped < 10


def test_serve_on_a_busy_port_exits_2() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            cli(memory_url(), "serve", "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )

    assert done.returncode == 2
    assert done.stderr.startswith(
        f"aiojobboard: error: cannot listen on 127.0.0.1 port {port}"
    )


def test_serve_an_unreachable_board_exits_3_without_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0?connect_timeout=1&retries=0"
    done = subprocess.run(
        cli(url, "serve", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )

    assert done.returncode == 3
    assert done.stderr.startswith("aiojobboard: error: ")
    assert "s3cret" not in done.stderr + done.stdout
    assert "serving" not in done.stdout


def test_serve_help_warns_there_is_no_authentication(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aiojobboard import cli as cli_module

    code = cli_module.main([memory_url(), "serve", "--help"])

    assert code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no authentication" in out
    assert "--port" in out
    assert "default 127.0.0.1" in out


# -- the page, in a real browser, against Redis ------------------------------------


def chromium_or_skip() -> None:
    """Install Chromium through the project's script if missing, or skip."""
    if not CHROMIUM.exists():
        script = ROOT / "scripts" / "services" / "chromium"
        subprocess.run([str(script)], check=False, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing and scripts/services/chromium could not "
            "install Debian's chromium package"
        )


# Installing Chromium, when the service script could not before, takes longer
# than a test's usual minute.
@pytest.mark.timeout(900)
async def test_the_dashboard_in_a_browser(capsys: pytest.CaptureFixture[str]) -> None:
    chromium_or_skip()
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="playwright is in the dev extra"
    )
    ensure_shared_redis()
    url = f"{REDIS_URL}?namespace=web-{uuid.uuid4().hex}"

    async with (
        ajb.book.connect(memory_url("books")) as books,
        ajb.connect(url) as dashboard_board,
        ajb.connect(url) as producer,
        ajb.connect(url) as holder,
    ):
        book = ajb.book.LogBook("order-1042")
        flow = ajb.book.FlowDetail("resize-order", state="RUNNING")
        flow.add(ajb.book.AtomDetail("fetch", state="SUCCESS", results={"bytes": 5120}))
        flow.add(ajb.book.AtomDetail("resize", state="RUNNING"))
        book.add(flow)
        await books.save_logbook(book)
        resize = await producer.post("resize-image", {"order": 1042}, book=book)
        email = await producer.post(
            "send-email", {"to": "<b>ops</b>"}, priority=ajb.HIGH
        )
        tidy = await producer.post("tidy-cache", priority=ajb.LOW)

        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve(dashboard_board, books=books, port=0, on_ready=ready.set_result)
        )
        address = await asyncio.wait_for(ready, 10)
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page(
                        viewport={"width": 1400, "height": 900}
                    )
                    problems: list[str] = []
                    page.on("pageerror", lambda exc: problems.append(str(exc)))
                    page.on(
                        "console",
                        lambda msg: (
                            problems.append(msg.text) if msg.type == "error" else None
                        ),
                    )
                    await check_the_page(
                        page, address, producer, holder, resize, email, tidy
                    )
                    assert problems == []
                finally:
                    await browser.close()
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

    with capsys.disabled():
        print(f"\ndashboard screenshot: {ARTIFACTS / 'dashboard.png'}")


async def check_the_page(
    page: Any,
    address: str,
    producer: ajb.JobBoard,
    holder: ajb.JobBoard,
    resize: ajb.Job,
    email: ajb.Job,
    tidy: ajb.Job,
) -> None:
    def row(job: ajb.Job | str) -> str:
        uuid = job if isinstance(job, str) else job.uuid
        return f'tr.job[data-uuid="{uuid}"]'

    async def text(selector: str) -> str:
        found: str = await page.locator(selector).inner_text()
        return found

    async def rows() -> list[str]:
        found: list[str] = await page.locator("tr.job").evaluate_all(
            "rows => rows.map(r => r.dataset.uuid)"
        )
        return found

    async def wait_for(script: str, arg: Any = None) -> None:
        await page.wait_for_function(script, arg=arg, timeout=10_000)

    await page.goto(address)
    await page.wait_for_selector('#live[data-state="live"]', timeout=10_000)
    await wait_for("() => document.querySelectorAll('tr.job').length === 3")
    assert await rows() == [email.uuid, resize.uuid, tidy.uuid]
    # Board data is shown as text, never run as HTML.
    await page.locator(row(email)).click()
    await wait_for(
        "() => document.querySelector('#detail-body pre')?.textContent"
        ".includes('<b>ops</b>')"
    )
    assert await page.locator("#detail-body b").count() == 0
    await page.evaluate("window.notReloaded = true")

    # A job posted elsewhere appears without a reload.
    posted = await producer.post("live-posted", {"n": 1})
    await page.wait_for_selector(row(posted), timeout=10_000)
    # In board order: priority first, then oldest.
    assert await rows() == [email.uuid, resize.uuid, posted.uuid, tidy.uuid]

    # A claim elsewhere shows its owner and attempt live.
    claim = await holder.claim(resize, "worker-7")
    await wait_for(
        "sel => document.querySelector(sel)?.textContent === 'worker-7'",
        row(resize) + " td.owner",
    )
    assert await text(row(resize) + " td.state") == "CLAIMED"
    await wait_for(
        "sel => document.querySelector(sel)?.textContent === '1'",
        row(resize) + " td.attempt",
    )
    await wait_for(
        "() => [...document.querySelectorAll('#worker-rows tr')]"
        ".some(r => r.dataset.name === 'worker-7')"
    )

    # The owner filter asks the server and keeps following events.
    await page.fill("#filter-owner", "worker-7")
    await wait_for("() => document.querySelectorAll('tr.job').length === 1")
    assert await rows() == [resize.uuid]
    await page.fill("#filter-owner", "")
    await wait_for("() => document.querySelectorAll('tr.job').length === 4")

    # A job's logbook: its flow and atoms with their states and results.
    await page.locator(row(resize)).click()
    await page.wait_for_selector("#detail-body .book", timeout=10_000)
    book_text = await text("#detail-body .book")
    assert "resize-order" in book_text
    assert "fetch" in book_text
    assert "SUCCESS" in book_text
    assert '{"bytes":5120}' in book_text
    assert await text("#detail-title") == "resize-image"

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Cancel the claimed job with its button: it leaves, its holder loses it.
    await page.locator(row(resize) + " button.cancel").click()
    await page.wait_for_selector("#cancel-dialog[open]")
    await page.fill("#cancel-reason", "customer withdrew the order")
    await page.locator("#cancel-confirm").click()
    await page.wait_for_selector(row(resize), state="detached", timeout=10_000)
    deadline = time.monotonic() + 10
    while not claim.lost:
        assert time.monotonic() < deadline, "the holder kept its claim"
        await asyncio.sleep(0.05)
    assert claim.cancel_reason == "customer withdrew the order"
    await wait_for(
        "() => [...document.querySelectorAll('#events li')].some(li =>"
        " li.dataset.kind === 'TRASHED' &&"
        " li.textContent.includes('customer withdrew the order'))"
    )
    await page.wait_for_selector("#detail-body .gone", timeout=10_000)

    # An unclaimed job can be cancelled too.
    await page.locator(row(tidy) + " button.cancel").click()
    await page.locator("#cancel-confirm").click()
    await page.wait_for_selector(row(tidy), state="detached", timeout=10_000)

    # A job consumed elsewhere leaves without a reload.
    done = await holder.claim(email, "worker-8")
    await done.consume()
    await page.wait_for_selector(row(email), state="detached", timeout=10_000)
    assert await rows() == [posted.uuid]
    kinds = await page.locator("#events li").evaluate_all(
        "items => items.map(li => li.dataset.kind)"
    )
    assert {"POSTED", "CLAIMED", "TRASHED", "CONSUMED"} <= set(kinds)
    assert await page.evaluate("window.notReloaded") is True
    assert await producer.job_count() == 1


def test_serve_takes_the_url_after_the_command_too() -> None:
    from aiojobboard import cli as cli_module

    parsed = cli_module.build_parser().parse_args(
        cli_module._url_first(["serve", "memory://x", "--port", "0"])
    )

    assert (parsed.command, parsed.url, parsed.port) == ("serve", "memory://x", 0)
    assert cli_module._url_first(["--json", "jobs", "redis://h/0"]) == [
        "--json",
        "redis://h/0",
        "jobs",
    ]
    # A URL first stays as it is, and so does a post whose job is named "serve".
    assert cli_module._url_first(["memory://x", "post", "serve"]) == [
        "memory://x",
        "post",
        "serve",
    ]


def test_a_missing_web_extra_is_named(
    board: ajb.JobBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if starlette were not installed: its import fails.
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    monkeypatch.delitem(sys.modules, "aiojobboard.web.app")

    with pytest.raises(ImportError, match=r"needs starlette, which is not installed"):
        create_app(board)
    with pytest.raises(ImportError, match=r"pip install 'aiojobboard\[web\]'"):
        create_app(board)


def test_the_browser_test_says_why_it_would_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "chromium")
    ran: list[list[str]] = []
    monkeypatch.setattr(
        subprocess, "run", lambda argv, **kwargs: ran.append(list(argv))
    )

    with pytest.raises(pytest.skip.Exception, match="could not install"):
        chromium_or_skip()
    assert ran == [[str(ROOT / "scripts" / "services" / "chromium")]]
