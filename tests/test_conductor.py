"""The Conductor and the flow model, on memory:// boards and book stores."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import aiojobboard as ajb
from aiojobboard import Conductor, Flow, Step, load_flow, save_factory_details
from aiojobboard.book import BookStore, FlowDetail, LogBook
from aiojobboard.conductor import combined_store

from .conftest import LEASE, REDIS_URL, Kit
from .test_book_postgres import POSTGRES_URL, drop_schema, ensure_postgres, in_schema

ROOT = Path(__file__).resolve().parent.parent

#: Per test tag: how many times each step ran, and what happened in order.
RUNS: defaultdict[str, Counter[str]] = defaultdict(Counter)
EVENTS: defaultdict[str, list[str]] = defaultdict(list)
#: Per test tag: set once the stalling flow's second step has started.
STALLED: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


def arithmetic(tag: str, fail_at: str | None = None) -> Flow:
    """Three steps: sum x and y, double it, then describe it; *fail_at* raises."""

    def step(name: str, compute: Callable[..., Any]) -> Callable[..., Any]:
        async def run(**inputs: Any) -> Any:
            RUNS[tag][name] += 1
            EVENTS[tag].append(f"run {name}")
            if name == fail_at:
                raise RuntimeError(f"{name} broke")
            return compute(**inputs)

        return run

    def undo(name: str) -> Callable[..., Any]:
        async def revert(*, result: Any, **inputs: Any) -> None:
            EVENTS[tag].append(f"revert {name} {result!r}")

        return revert

    return Flow(
        "arithmetic",
        [
            Step(
                "add",
                step("add", lambda x, y: x + y),
                ("x", "y"),
                ("total",),
                undo("add"),
            ),
            Step(
                "double",
                step("double", lambda total: total * 2),
                ("total",),
                ("doubled",),
                undo("double"),
            ),
            Step(
                "describe",
                step("describe", lambda doubled: [f"is {doubled}", doubled > 10]),
                ("doubled",),
                ("text", "big"),
            ),
        ],
    )


def echo(tag: str) -> Flow:
    """One step that records the inputs it was given."""

    async def look(**inputs: Any) -> None:
        EVENTS[tag].append(repr(sorted(inputs.items())))

    return Flow("echo", [Step("look", look, ("a", "b", "c"))])


def stalling(tag: str) -> Flow:
    """Three steps; the second waits, on its first run, for its claim to lapse."""

    def counted(name: str) -> Callable[..., Any]:
        async def run() -> str:
            RUNS[tag][name] += 1
            if name == "two" and RUNS[tag][name] == 1:
                STALLED[tag].set()
                await asyncio.sleep(30)
            return name

        return run

    return Flow(
        "stalling", [Step(name, counted(name)) for name in ("one", "two", "three")]
    )


def flaky_storage(tag: str) -> Flow:
    """Two steps; the second finds its storage down on its first run."""

    def counted(name: str) -> Step:
        async def run() -> str:
            RUNS[tag][name] += 1
            if name == "two" and RUNS[tag][name] == 1:
                raise ajb.ConnectionLost("the storage did not answer")
            return name

        async def revert(*, result: Any) -> None:
            EVENTS[tag].append(f"revert {name}")

        return Step(name, run, revert=revert)

    return Flow("flaky", [counted("one"), counted("two")])


def noted(path: str) -> Flow:
    """Three steps that note in the file *path* when they start and finish.

    The second waits, on its first run, for its process to be killed.
    """

    def step(name: str) -> Callable[..., Any]:
        async def run() -> str:
            first = f"run {name}" not in lines_of(path)
            note(path, f"run {name}")
            if name == "two" and first:
                await asyncio.sleep(60)
            note(path, f"done {name}")
            return name

        return run

    return Flow("noted", [Step(name, step(name)) for name in ("one", "two", "three")])


def note(path: str, line: str) -> None:
    with open(path, "a") as file:
        file.write(line + "\n")


def lines_of(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []


async def wait_for_line(path: str, line: str) -> None:
    """Wait up to 30 s for another process to note *line* in *path*."""
    for _ in range(600):
        if line in lines_of(path):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{line!r} never appeared in {path}")


@pytest.fixture
async def books() -> AsyncIterator[BookStore]:
    async with ajb.book.connect(f"memory://books-{uuid.uuid4().hex}") as store:
        yield store


async def post_flow(
    board: ajb.JobBoard,
    books: BookStore,
    factory: Callable[..., Flow],
    args: list[Any],
    store: dict[str, Any] | None = None,
    job_store: dict[str, Any] | None = None,
) -> tuple[ajb.Job, FlowDetail]:
    book = LogBook("orders")
    flow_detail = FlowDetail("flow")
    save_factory_details(flow_detail, factory, args)
    flow_detail.meta["store"] = store or {}
    book.add(flow_detail)
    await books.save_logbook(book)
    details = {"store": job_store} if job_store else None
    job = await board.post("run-flow", details=details, book=book)
    return job, flow_detail


async def run_until_done(conductor: Conductor, *jobs: ajb.Job) -> None:
    task = asyncio.create_task(conductor.run())
    done = await asyncio.gather(*(job.wait(timeout=20) for job in jobs))
    await conductor.stop()
    await task
    assert all(done)


async def atoms_of(books: BookStore, flow_detail: FlowDetail) -> dict[str, Any]:
    return {
        atom.name: atom for atom in await books.get_atoms_for_flow(flow_detail.uuid)
    }


def new_tag() -> str:
    return uuid.uuid4().hex


async def test_combined_store_lets_the_job_win(board: ajb.JobBoard) -> None:
    flow_detail = FlowDetail("f", meta={"store": {"a": 1, "c": 3}})
    job = await board.post("j", details={"store": {"a": 2, "b": 1}})
    assert combined_store(flow_detail, job) == {"a": 2, "b": 1, "c": 3}


async def test_the_flow_runs_on_the_merged_store(
    board: ajb.JobBoard, books: BookStore
) -> None:
    tag = new_tag()
    job, _ = await post_flow(
        board, books, echo, [tag], {"a": 1, "c": 3}, {"a": 2, "b": 1}
    )
    await run_until_done(Conductor(board, books, "c1"), job)
    assert EVENTS[tag] == ["[('a', 2), ('b', 1), ('c', 3)]"]


async def test_a_flow_runs_and_its_job_is_consumed(
    board: ajb.JobBoard, books: BookStore
) -> None:
    tag = new_tag()
    # x comes from the logbook, y from the job.
    job, flow_detail = await post_flow(
        board, books, arithmetic, [tag], {"x": 2}, {"y": 3}
    )
    conductor = Conductor(board, books, "c1", concurrency=2)
    await run_until_done(conductor, job)
    atoms = await atoms_of(books, flow_detail)
    assert {name: atom.state for name, atom in atoms.items()} == {
        "add": "SUCCESS",
        "double": "SUCCESS",
        "describe": "SUCCESS",
    }
    results = [atoms[name].results for name in ("add", "double", "describe")]
    assert results == [5, 10, ["is 10", False]]
    (stored,) = await books.get_flows_for_book(job.book_uuid or "")
    assert stored.state == "SUCCESS"
    assert (conductor.consumed, conductor.failed, conductor.trashed) == (1, 0, 0)
    assert RUNS[tag] == {"add": 1, "double": 1, "describe": 1}


async def test_a_failing_step_reverts_the_done_ones_and_trashes_the_job(
    board: ajb.JobBoard, books: BookStore
) -> None:
    tag = new_tag()
    job, flow_detail = await post_flow(
        board, books, arithmetic, [tag, "describe"], {"x": 2, "y": 3}
    )
    conductor = Conductor(board, books, "c1")
    await run_until_done(conductor, job)
    assert EVENTS[tag] == [
        "run add",
        "run double",
        "run describe",
        "revert double 10",
        "revert add 5",
    ]
    atoms = await atoms_of(books, flow_detail)
    assert [atoms[n].state for n in ("add", "double", "describe")] == [
        "REVERTED",
        "REVERTED",
        "FAILURE",
    ]
    failure = atoms["describe"].failure
    assert failure is not None
    assert failure["type"] == "builtins.RuntimeError"
    assert failure["message"] == "describe broke"
    (stored,) = await books.get_flows_for_book(job.book_uuid or "")
    assert stored.state == "REVERTED"
    assert (conductor.consumed, conductor.failed, conductor.trashed) == (0, 1, 1)


async def test_the_retry_policy_runs_a_failing_flow_again(
    board: ajb.JobBoard, books: BookStore
) -> None:
    tag = new_tag()
    job, _ = await post_flow(
        board, books, arithmetic, [tag, "double"], {"x": 2, "y": 3}
    )
    conductor = Conductor(board, books, "c1", max_attempts=2, on_failure="retry")
    await run_until_done(conductor, job)
    assert RUNS[tag] == {"add": 2, "double": 2}
    assert (conductor.consumed, conductor.failed, conductor.trashed) == (0, 2, 1)


async def test_a_rerun_after_a_lost_claim_skips_the_done_steps(
    board: ajb.JobBoard, books: BookStore, kit: Kit
) -> None:
    tag = new_tag()
    job, flow_detail = await post_flow(board, books, stalling, [tag])
    conductor = Conductor(board, books, "c1", lease=LEASE)
    task = asyncio.create_task(conductor.run())
    await STALLED[tag].wait()
    await kit.lapse(board)
    assert await job.wait(timeout=20)
    await conductor.stop()
    await task
    assert RUNS[tag] == {"one": 1, "two": 2, "three": 1}
    assert (conductor.consumed, conductor.lost) == (1, 1)
    atoms = await atoms_of(books, flow_detail)
    assert [atom.results for atom in atoms.values()] == ["one", "two", "three"]


async def test_a_storage_failure_gives_the_job_back_unreverted(
    board: ajb.JobBoard, books: BookStore
) -> None:
    tag = new_tag()
    job, _ = await post_flow(board, books, flaky_storage, [tag])
    conductor = Conductor(board, books, "c1")
    await run_until_done(conductor, job)
    assert RUNS[tag] == {"one": 1, "two": 2}
    assert EVENTS[tag] == []
    assert (conductor.consumed, conductor.failed, conductor.trashed) == (1, 1, 0)


def test_an_unknown_failure_policy_is_refused(board: ajb.JobBoard) -> None:
    with pytest.raises(ValueError, match="on_failure"):
        Conductor(board, board.books, "c1", on_failure="ignore")  # type: ignore[arg-type]


async def test_a_factory_that_does_not_import_is_recorded_and_trashed(
    board: ajb.JobBoard, books: BookStore
) -> None:
    bad, bad_flow = await post_flow(board, books, echo, [new_tag()])
    bad_flow.meta["factory"]["path"] = "tests.no_such_module:make_flow"
    await books.update_flow_details(bad_flow)
    tag = new_tag()
    good, _ = await post_flow(board, books, echo, [tag], {"a": 1, "b": 2, "c": 3})
    conductor = Conductor(board, books, "c1")
    await run_until_done(conductor, bad, good)
    (stored,) = await books.get_flows_for_book(bad.book_uuid or "")
    assert stored.state == "FAILURE"
    assert "tests.no_such_module:make_flow" in stored.meta["failure"]["message"]
    assert EVENTS[tag] == ["[('a', 1), ('b', 2), ('c', 3)]"]
    assert (conductor.consumed, conductor.trashed) == (1, 1)


async def test_the_job_names_its_flow_among_several(
    board: ajb.JobBoard, books: BookStore
) -> None:
    tags = [new_tag(), new_tag()]
    book = LogBook("two flows")
    for tag in tags:
        flow_detail = FlowDetail(f"flow-{tag}")
        save_factory_details(flow_detail, echo, [tag])
        flow_detail.meta["store"] = {"a": 1, "b": 2, "c": 3}
        book.add(flow_detail)
    await books.save_logbook(book)
    chosen = list(book)[1].uuid
    job = await board.post("run", {"flow_uuid": chosen}, book=book)
    unnamed = await board.post("run", book=book)
    bookless = await board.post("run")
    conductor = Conductor(board, books, "c1")
    await run_until_done(conductor, job, unnamed, bookless)
    assert (EVENTS[tags[0]], len(EVENTS[tags[1]])) == ([], 1)
    assert (conductor.consumed, conductor.trashed) == (1, 2)


def test_save_factory_details_records_an_importable_path() -> None:
    flow_detail = FlowDetail("f")
    save_factory_details(flow_detail, arithmetic, ("t",), {"fail_at": None})
    assert flow_detail.meta["factory"] == {
        "path": "tests.test_conductor:arithmetic",
        "args": ["t"],
        "kwargs": {"fail_at": None},
    }
    assert [step.name for step in load_flow(flow_detail).steps] == [
        "add",
        "double",
        "describe",
    ]


def test_save_factory_details_refuses_what_cannot_be_rebuilt() -> None:
    def nested() -> Flow:
        return Flow("n", [])

    flow_detail = FlowDetail("f")
    with pytest.raises(ValueError, match="lambda"):
        save_factory_details(flow_detail, lambda: Flow("l", []))
    with pytest.raises(ValueError, match="nested"):
        save_factory_details(flow_detail, nested)
    with pytest.raises(ValueError, match=r"arguments .* set"):
        save_factory_details(flow_detail, echo, [{1, 2}])
    with pytest.raises(ValueError, match=r"keyword arguments .*\['when'\]"):
        save_factory_details(flow_detail, echo, (), {"when": time})
    with pytest.raises(TypeError, match="callable"):
        save_factory_details(flow_detail, "tests.test_conductor:echo")  # type: ignore[arg-type]
    assert "factory" not in flow_detail.meta


CONDUCTOR_PROCESS = """
import asyncio, sys
import aiojobboard as ajb

async def main(board_url, books_url):
    async with ajb.book.connect(books_url) as books:
        async with ajb.connect(board_url) as board:
            await ajb.Conductor(board, books, "doomed", lease=1.0).run()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.skipif(not POSTGRES_URL, reason="AIOJOBBOARD_TEST_POSTGRES is empty")
async def test_a_killed_conductor_is_resumed_without_running_done_steps(
    tmp_path: Path,
) -> None:
    ensure_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    board_url = f"{REDIS_URL}?namespace=conductor-{uuid.uuid4().hex[:12]}"
    books_url = in_schema(POSTGRES_URL, schema)
    log = str(tmp_path / "steps.log")
    try:
        async with ajb.book.connect(books_url) as books:
            await books.upgrade()
            async with ajb.connect(board_url) as board:
                job, flow_detail = await post_flow(board, books, noted, [log])
                doomed = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    CONDUCTOR_PROCESS,
                    board_url,
                    books_url,
                    cwd=ROOT,
                )
                try:
                    await wait_for_line(log, "run two")
                finally:
                    doomed.kill()
                    await doomed.wait()
                survivor = Conductor(board, books, "survivor", lease=1.0)
                await run_until_done(survivor, job)
                atoms = await atoms_of(books, flow_detail)
    finally:
        await drop_schema(POSTGRES_URL, schema)
    assert Counter(lines_of(log)) == {
        "run one": 1,
        "done one": 1,
        "run two": 2,
        "done two": 1,
        "run three": 1,
        "done three": 1,
    }
    assert [atom.state for atom in atoms.values()] == ["SUCCESS"] * 3
    assert survivor.consumed == 1


def test_the_conductor_demo_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "conductor_demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "order-2: flow REVERTED" in done.stdout
    assert "consumed 2, trashed 1" in done.stdout
    assert "jobs left on the board: 0" in done.stdout
