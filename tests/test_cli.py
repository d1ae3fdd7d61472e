"""The ``aiojobboard`` command, in process against memory boards, and once as a
real process against Redis to prove the entry point and its exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import aiojobboard as ajb
from aiojobboard import cli

from .conftest import REDIS_URL
from .redis_helpers import ensure_shared_redis

ROOT = Path(__file__).resolve().parent.parent


def board_url() -> str:
    return f"memory://cli-{uuid.uuid4().hex}"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def post(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> str:
    code, out, err = run_cli(capsys, url, "post", *argv)
    assert (code, err) == (0, "")
    return out.strip()


def test_post_prints_the_uuid_and_jobs_lists_a_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = board_url()
    low = post(capsys, url, "tidy", "--priority", "low")
    high = post(capsys, url, "ship", "--details", '{"order": 1}', "--priority", "HIGH")

    code, out, err = run_cli(capsys, url, "jobs")

    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == [
        "UUID",
        "NAME",
        "STATE",
        "OWNER",
        "PRIORITY",
        "AGE",
        "ATTEMPT",
    ]
    assert [row.split()[:5] + row.split()[6:] for row in rows] == [
        [high, "ship", "UNCLAIMED", "-", "HIGH", "0"],
        [low, "tidy", "UNCLAIMED", "-", "LOW", "0"],
    ]


def test_jobs_json_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = board_url()
    first = post(capsys, url, "a", "--details", '{"n": 1}')
    second = post(capsys, url, "b")

    async def hold_second() -> None:
        board = await ajb.connect(url)
        job = await anext(job async for job in board.iterjobs() if job.uuid == second)
        await board.claim(job, "holder")
        # Not closed: closing would abandon the claim this test needs.

    asyncio.run(hold_second())
    code, out, _ = run_cli(capsys, "--json", url, "jobs")
    records = [json.loads(line) for line in out.splitlines()]

    assert code == 0
    assert [(r["uuid"], r["state"], r["owner"], r["attempt"]) for r in records] == [
        (first, "UNCLAIMED", None, 0),
        (second, "CLAIMED", "holder", 1),
    ]
    assert records[0]["details"] == {"n": 1}

    code, out, _ = run_cli(capsys, url, "jobs", "--unclaimed", "--json")
    assert [json.loads(line)["uuid"] for line in out.splitlines()] == [first]


def test_post_then_show(capsys: pytest.CaptureFixture[str]) -> None:
    url = board_url()
    job_uuid = post(capsys, url, "ship", "--details", '{"order": 7}')

    code, out, _ = run_cli(capsys, url, "show", job_uuid)
    assert code == 0
    assert f"uuid:       {job_uuid}" in out
    assert "state:      UNCLAIMED" in out
    assert "attempt:    0" in out
    assert 'details:    {"order": 7}' in out

    code, out, _ = run_cli(capsys, url, "show", job_uuid, "--json")
    assert json.loads(out)["details"] == {"order": 7}


def test_show_with_books_lists_flows_and_atoms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, books_url = board_url(), f"memory://cli-{uuid.uuid4().hex}"

    async def post_with_book() -> str:
        async with ajb.book.connect(books_url) as store:
            book = ajb.book.LogBook("order-7")
            flow = ajb.book.FlowDetail("ship", state="RUNNING")
            flow.add(ajb.book.AtomDetail("pack", state="SUCCESS", results=3))
            book.add(flow)
            await store.save_logbook(book)
            async with ajb.connect(url) as board:
                return (await board.post("ship", book=book)).uuid

    job_uuid = asyncio.run(post_with_book())

    code, out, _ = run_cli(capsys, url, "show", job_uuid, "--books", books_url)
    assert code == 0
    assert "flow 'ship'" in out
    assert "atom 'pack'" in out
    assert "SUCCESS -> 3" in out

    code, out, _ = run_cli(
        capsys, "--json", url, "show", job_uuid, "--books", books_url
    )
    flows = json.loads(out)["book"]["flows"]
    assert [atom["name"] for atom in flows[0]["atoms"]] == ["pack"]


def test_trash_claims_an_unclaimed_job_and_trashes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = board_url()
    job_uuid = post(capsys, url, "junk")

    code, out, _ = run_cli(capsys, url, "trash", job_uuid)

    assert (code, out) == (0, f"trashed {job_uuid}\n")
    assert run_cli(capsys, url, "jobs", "--json")[1] == ""


HoldFirst = Callable[..., None]


@pytest.fixture
def hold_first() -> Iterator[HoldFirst]:
    """Claim the first job of a URL through a connection open until teardown."""
    boards: list[ajb.JobBoard] = []

    async def hold(url: str, owner: str) -> ajb.JobBoard:
        board = await ajb.connect(url)
        job = await anext(job async for job in board.iterjobs())
        await board.claim(job, owner)
        return board

    def hold_first(url: str, owner: str = "holder") -> None:
        # Not closed yet: closing would abandon the claim the test needs.
        boards.append(asyncio.run(hold(url, owner)))

    yield hold_first
    for board in boards:
        asyncio.run(board.close())


def test_trash_of_a_claimed_job_needs_its_holder(
    capsys: pytest.CaptureFixture[str], hold_first: HoldFirst
) -> None:
    url = board_url()
    job_uuid = post(capsys, url, "junk")
    hold_first(url)

    code, _, err = run_cli(capsys, url, "trash", job_uuid)
    assert code == 1
    assert err.startswith("aiojobboard: error: ")
    assert "'holder'" in err

    code, _, err = run_cli(capsys, url, "trash", job_uuid, "--as", "holder")
    assert (code, err) == (0, "")


def test_not_found_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, board_url(), "show", "no-such-job")

    assert (code, out) == (1, "")
    assert err.startswith("aiojobboard: error: no job 'no-such-job'")
    assert err.count("\n") == 1


def test_cancel_an_unclaimed_job(capsys: pytest.CaptureFixture[str]) -> None:
    url = board_url()
    job_uuid = post(capsys, url, "junk")

    code, out, err = run_cli(capsys, url, "cancel", job_uuid)

    assert (code, out, err) == (0, f"cancelled {job_uuid}: cancelled\n", "")
    assert run_cli(capsys, url, "jobs", "--json")[1] == ""
    code, out, err = run_cli(capsys, url, "cancel", job_uuid)
    assert (code, out) == (1, "")
    assert err.startswith(f"aiojobboard: error: no job '{job_uuid}'")


def test_cancel_a_held_job_names_its_holder(
    capsys: pytest.CaptureFixture[str], hold_first: HoldFirst
) -> None:
    url = board_url()
    job_uuid = post(capsys, url, "junk")
    hold_first(url)

    code, out, _ = run_cli(capsys, url, "--json", "cancel", job_uuid, "--reason", "ops")

    assert code == 0
    assert json.loads(out) == {
        "uuid": job_uuid,
        "cancelled": True,
        "owner": "holder",
        "reason": "ops",
    }
    assert run_cli(capsys, url, "jobs", "--json")[1] == ""


def test_cancel_with_an_empty_reason_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = board_url()
    job_uuid = post(capsys, url, "junk")

    code, out, err = run_cli(capsys, url, "cancel", job_uuid, "--reason", " ")

    assert (code, out) == (2, "")
    assert "empty" in err
    assert json.loads(run_cli(capsys, url, "jobs", "--json")[1])["uuid"] == job_uuid


def test_workers_lists_holders(
    capsys: pytest.CaptureFixture[str], hold_first: HoldFirst
) -> None:
    url = board_url()
    code, out, _ = run_cli(capsys, url, "workers")
    assert (code, out.split()) == (0, ["NAME", "HOST", "PID", "UP", "SEEN", "HOLDING"])

    job_uuid = post(capsys, url, "a")
    hold_first(url, "w-1")

    code, out, _ = run_cli(capsys, url, "workers")
    _, row = out.splitlines()
    assert code == 0
    assert row.split()[:3] == ["w-1", socket.gethostname(), str(os.getpid())]
    assert row.endswith(f"1: {job_uuid}")

    code, out, _ = run_cli(capsys, url, "workers", "--json")
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert (record["name"], record["pid"], record["holding"]) == (
        "w-1",
        os.getpid(),
        [job_uuid],
    )
    assert record["since"] <= record["seen"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["post", "x", "--details", "{bad"], "--details is not JSON"),
        (["post", "x", "--details", "[1]"], "must be a JSON object"),
        (["post", "x", "--priority", "urgent"], "must be one of"),
        (["watch", "--count", "0"], "above 0"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run_cli(capsys, board_url(), *argv)

    assert (code, out) == (2, "")
    assert needle in err


def test_help_documents_the_argument_order_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "--help")

    assert code == 0
    assert "BOARD_URL COMMAND" in out
    assert "3 server unreachable" in out


def test_unknown_scheme_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "nosuch://x", "jobs")

    assert code == 2
    assert err.startswith("aiojobboard: error: unknown board URL scheme 'nosuch'")


def test_bad_url_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, board_url() + "?colour=red", "jobs")

    assert code == 2
    assert "colour" in err


async def test_watch_prints_count_events_then_stops(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = board_url()
    args = cli.build_parser().parse_args([url, "watch", "--count", "3"])
    out = io.StringIO()
    watching = asyncio.create_task(cli.run(args, out))
    for _ in range(500):
        if "watching" in capsys.readouterr().err:
            break
        await asyncio.sleep(0.01)

    async with ajb.connect(url) as board:
        job = await board.post("seen")
        claim = await board.claim(job, "me")
        await board.cancel(job, "not wanted")
        code = await asyncio.wait_for(watching, 5)

    lines = out.getvalue().splitlines()
    assert code == 0
    assert [line.split()[1:3] for line in lines] == [
        ["POSTED", job.uuid],
        ["CLAIMED", job.uuid],
        ["TRASHED", job.uuid],
    ]
    assert lines[2].endswith(f"{job.uuid} by me: 'not wanted'")
    assert claim.cancel_reason == "not wanted"


def test_demo_drains_its_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "--json", board_url(), "demo", "--jobs", "100", "--consumers", "4"
    )
    report = json.loads(out)

    assert code == 0
    assert (report["consumed"], report["trashed"], report["left"]) == (99, 1, 0)


# -- a real process against Redis ---------------------------------------------


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "aiojobboard.cli", *argv]


def run_process(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*argv), capture_output=True, text=True, timeout=30, cwd=ROOT
    )


@pytest.fixture
def redis_url() -> str:
    ensure_shared_redis()
    return f"{REDIS_URL}?namespace=cli-{uuid.uuid4().hex}"


def test_the_entry_point_against_redis(redis_url: str) -> None:
    posted = run_process(redis_url, "post", "ship", "--details", '{"order": 1}')
    assert (posted.returncode, posted.stderr) == (0, "")
    job_uuid = posted.stdout.strip()

    listed = run_process("--json", redis_url, "jobs")
    assert listed.returncode == 0
    assert json.loads(listed.stdout)["uuid"] == job_uuid

    missing = run_process(redis_url, "show", "no-such-job")
    assert missing.returncode == 1
    assert missing.stderr.startswith("aiojobboard: error: no job")
    assert "Traceback" not in missing.stderr

    trashed = run_process(redis_url, "trash", job_uuid)
    assert (trashed.returncode, trashed.stdout) == (0, f"trashed {job_uuid}\n")


def test_watch_as_a_process_against_redis(redis_url: str) -> None:
    with subprocess.Popen(
        command(redis_url, "watch", "--count", "2", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as watcher:
        assert watcher.stderr is not None
        assert "watching" in watcher.stderr.readline()
        first = run_process(redis_url, "post", "one").stdout.strip()
        second = run_process(redis_url, "post", "two").stdout.strip()
        out, err = watcher.communicate(timeout=30)

    events = [json.loads(line) for line in out.splitlines()]
    assert watcher.returncode == 0, err
    assert [(e["kind"], e["job_uuid"]) for e in events] == [
        ("POSTED", first),
        ("POSTED", second),
    ]


def test_unreachable_redis_exits_3_without_the_password() -> None:
    url = "redis://user:s3cret@127.0.0.1:1/0?connect_timeout=1&retries=0"
    done = run_process(url, "jobs")

    assert done.returncode == 3
    assert done.stderr.startswith("aiojobboard: error: Redis for ")
    assert done.stderr.count("\n") == 1
    assert "s3cret" not in done.stderr


async def test_cancel_and_workers_as_processes_against_redis(redis_url: str) -> None:
    async with ajb.connect(redis_url) as board:
        job = await board.post("long")
        claim = await board.claim(job, "holder")

        async def listed() -> list[dict[str, object]]:
            done = await asyncio.to_thread(run_process, redis_url, "workers", "--json")
            assert done.returncode == 0, done.stderr
            return [json.loads(line) for line in done.stdout.splitlines()]

        async with asyncio.timeout(10):
            # Presence is read, not announced: it is polled.
            while not (records := await listed()):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        assert [(r["name"], r["pid"], r["holding"]) for r in records] == [
            ("holder", os.getpid(), [job.uuid])
        ]

        done = await asyncio.to_thread(
            run_process, redis_url, "cancel", job.uuid, "--reason", "ops said so"
        )
        assert (done.returncode, done.stdout) == (
            0,
            f"cancelled {job.uuid}, held by 'holder': ops said so\n",
        )
        async with asyncio.timeout(5):
            while not claim.lost:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert claim.cancel_reason == "ops said so"

        again = await asyncio.to_thread(run_process, redis_url, "cancel", job.uuid)
        assert again.returncode == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["jobs", "memory://b"], ["memory://b", "jobs"]),
        (["memory://b", "jobs"], ["memory://b", "jobs"]),
        (["--json", "jobs", "memory://b"], ["--json", "memory://b", "jobs"]),
        (
            ["serve", "--port", "0", "memory://b"],
            ["memory://b", "serve", "--port", "0"],
        ),
        (
            ["show", "--books", "memory://k", "memory://b", "U"],
            ["memory://b", "show", "--books", "memory://k", "U"],
        ),
        (
            ["post", "x", "--details", '{"u": "http://x"}', "memory://b"],
            ["memory://b", "post", "x", "--details", '{"u": "http://x"}'],
        ),
    ],
)
def test_the_command_may_come_before_the_url(
    argv: list[str], expected: list[str]
) -> None:
    assert cli._url_first(argv) == expected


def test_command_first_runs(capsys: pytest.CaptureFixture[str]) -> None:
    url = board_url()
    code, out, err = run_cli(capsys, "post", "first", url)
    assert (code, err) == (0, "")
    code, shown, _ = run_cli(capsys, "show", out.strip(), "--json", url)
    assert (code, json.loads(shown)["name"]) == (0, "first")
