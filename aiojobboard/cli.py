"""The ``aiojobboard`` command: look at a board, post to it, trash and cancel.

The board URL comes first, then the command, so that a shell alias can hold
the URL: ``aiojobboard redis://host/0 jobs``; the command may come first too,
with the URL anywhere among its arguments. Exit codes: 0 on success, 1
when the board said no (not found, not the owner, already claimed), 2 for a
usage error or bad input, 3 when the server could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from . import _demo, connect
from . import book as booklib
from ._records import book_record, event_record, job_record, worker_record
from .board import JobBoard
from .book.models import LogBook
from .errors import ConnectionLost, InvalidJob, JobBoardError, NotFound, NotOwner
from .events import JobEvent
from .jobs import Job, JobPriority, JobState, JobStatus
from .presence import WorkerInfo

__all__ = ["main"]

PROG = "aiojobboard"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

JSON_HELP = "print JSON, one object per line, for scripts"
EPILOG = """\
exit codes: 0 success; 1 the board said no (not found, not the owner,
already claimed); 2 usage error or bad input; 3 server unreachable.
"""


SERVE_HELP = """\
Serve a live web dashboard of the board: its jobs, their owners and attempts,
events as they happen, logbooks, and a button to cancel a job. The dashboard
has no authentication: anyone who reaches it can cancel jobs, so keep it on
localhost (the default) or behind a proxy that authenticates.
"""


class UsageError(Exception):
    """Raised when an argument parses but makes no sense, as bad JSON."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(_url_first(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        # argparse exits on --help and on usage errors; callers get a code.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    try:
        return asyncio.run(run(args, sys.stdout))
    except KeyboardInterrupt:
        # Ctrl-C is how a watch or a dashboard ends; elsewhere it is an
        # interruption.
        return EXIT_OK if args.command in ("watch", "serve") else 130
    except (UsageError, InvalidJob, ValueError, ImportError) as exc:
        return _fail(exc, EXIT_USAGE)
    except (ConnectionLost, OSError) as exc:
        return _fail(exc, EXIT_UNREACHABLE)
    except JobBoardError as exc:
        return _fail(exc, EXIT_REFUSED)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _url_first(argv: Sequence[str]) -> list[str]:
    """Accept ``COMMAND ... BOARD_URL ...`` as well as ``BOARD_URL COMMAND ...``.

    A command name never holds ``://`` and a board URL always begins with a
    scheme and ``://``, so the two orders cannot be confused: the first such
    argument after the command, unless it is the value of ``--books``, moves
    in front of it.
    """
    args = list(argv)
    first = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
    if first is None or args[first] not in COMMANDS:
        return args
    for i in range(first + 1, len(args)):
        if _URL.match(args[i]) and args[i - 1] != "--books":
            args.insert(first, args.pop(i))
            break
    return args


def _fail(exc: BaseException, code: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    # --json is accepted before the URL and after the command alike.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help=JSON_HELP,
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [--json] BOARD_URL COMMAND [ARGS ...]",
        description="Look at, post to and trash from a job board.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    parser.add_argument(
        "url", metavar="BOARD_URL", help="memory://NAME, redis://HOST:PORT/DB, ..."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    jobs = commands.add_parser("jobs", parents=[shared], help="list the jobs")
    jobs.add_argument(
        "--unclaimed", action="store_true", help="only the jobs nobody holds"
    )

    show = commands.add_parser("show", parents=[shared], help="show one job")
    show.add_argument("uuid", metavar="JOB_UUID")
    show.add_argument(
        "--books", metavar="URL", help="book store to load the job's logbook from"
    )

    post = commands.add_parser("post", parents=[shared], help="post a job")
    post.add_argument("name", metavar="NAME")
    post.add_argument("--details", metavar="JSON", help="a JSON object")
    post.add_argument(
        "--priority",
        type=_priority,
        default=JobPriority.NORMAL,
        metavar="NAME",
        help=", ".join(JobPriority.__members__) + " (default NORMAL)",
    )

    trash = commands.add_parser(
        "trash", parents=[shared], help="remove a job without doing it"
    )
    trash.add_argument("uuid", metavar="JOB_UUID")
    trash.add_argument(
        "--as",
        dest="owner",
        metavar="OWNER",
        help="the holder's name, to trash a job that is claimed",
    )

    cancel = commands.add_parser(
        "cancel", parents=[shared], help="trash a job at once, even if it is held"
    )
    cancel.add_argument("uuid", metavar="JOB_UUID")
    cancel.add_argument(
        "--reason",
        default="cancelled",
        metavar="TEXT",
        help="why, for the holder's log and the TRASHED event (default: cancelled)",
    )

    commands.add_parser(
        "workers", parents=[shared], help="list the consumers alive on the board"
    )

    watch = commands.add_parser(
        "watch", parents=[shared], help="print events until Ctrl-C"
    )
    watch.add_argument(
        "--count", type=_positive, metavar="N", help="stop after N events"
    )

    serve = commands.add_parser(
        "serve",
        parents=[shared],
        help="run the live web dashboard until Ctrl-C (no authentication)",
        description=SERVE_HELP,
    )
    serve.add_argument(
        "--books", metavar="URL", help="book store to read jobs' logbooks from"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=_port, default=8080, help="0 picks a free one (default 8080)"
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the dashboard is reached under, besides localhost "
        "and --host (repeatable; '*' allows any)",
    )

    demo = commands.add_parser(
        "demo", parents=[shared], help="post jobs and drain them with a Worker"
    )
    demo.add_argument("--jobs", type=_positive, default=1000, metavar="N")
    demo.add_argument("--consumers", type=_positive, default=16, metavar="N")
    demo.add_argument(
        "--failure-rate", type=_share, default=0.01, metavar="F", help="0 to 1"
    )
    return parser


def _priority(text: str) -> JobPriority:
    try:
        return JobPriority[text.upper()]
    except KeyError:
        names = ", ".join(JobPriority.__members__)
        raise argparse.ArgumentTypeError(
            f"must be one of {names}, not {text!r}"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535: {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1: {text!r}")
    return value


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the parsed command against its board, writing to *out*."""
    as_json: bool = getattr(args, "json", False)
    async with connect(args.url) as board:
        command = COMMANDS[args.command]
        await command(board, args, _Printer(out, as_json))
    return EXIT_OK


class _Printer:
    """Writes for people, or one JSON object per line for scripts."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.json = as_json

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def record(self, obj: dict[str, Any]) -> None:
        self.line(json.dumps(obj, default=str))


# -- commands -----------------------------------------------------------------


async def cmd_jobs(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    rows: list[list[str]] = []
    now = datetime.now(UTC)
    async for job in board.iterjobs(only_unclaimed=args.unclaimed):
        try:
            status = await board.status(job)
        except NotFound:
            continue  # finished while the listing ran

        if p.json:
            p.record(_job_json(job, status))
        else:
            rows.append(_job_row(job, status, now))

    if not p.json:
        header = ["UUID", "NAME", "STATE", "OWNER", "PRIORITY", "AGE", "ATTEMPT"]
        for text in _table([header, *rows]):
            p.line(text)


async def cmd_show(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    job = await _find(board, args.uuid)
    status = await board.status(job)
    book = await _load_book(args.books, job.book_uuid)
    record = _job_json(job, status)
    if book is not None:
        record["book"] = book_record(book)

    if p.json:
        p.record(record)
        return

    for key in ("uuid", "name", "state", "owner", "attempt", "priority", "created_on"):
        p.line(f"{key + ':':<12}{record[key] if record[key] is not None else '-'}")
    p.line(f"{'sequence:':<12}{job.sequence}")
    p.line(f"{'details:':<12}{json.dumps(dict(job.details), sort_keys=True)}")
    if job.book_uuid is None:
        p.line(f"{'logbook:':<12}-")
    else:
        p.line(f"{'logbook:':<12}{job.book_name!r} ({job.book_uuid})")
    if book is not None:
        for line in _book_lines(book):
            p.line(line)


async def cmd_post(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    details = _parse_details(args.details)
    job = await board.post(args.name, details, priority=args.priority)
    if p.json:
        p.record(_job_json(job, JobStatus(JobState.UNCLAIMED, None, 0, None)))
    else:
        p.line(job.uuid)


async def cmd_trash(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    job = await _find(board, args.uuid)
    owner = await board.find_owner(job)
    if owner is None:
        # Claiming first makes the trash safe against a consumer that is
        # about to take the job: exactly one of the two wins.
        claim = await board.claim(job, args.owner or _default_owner())
        await claim.trash()
    elif args.owner == owner:
        await board.trash(job, owner)
    else:
        raise NotOwner(
            f"job {job.uuid} is claimed by {owner!r}; "
            f"pass --as {owner!r} to trash it as its holder"
        )

    if p.json:
        p.record({"uuid": job.uuid, "trashed": True})
    else:
        p.line(f"trashed {job.uuid}")


async def cmd_cancel(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    job = await _find(board, args.uuid)
    # Read first only to say whose work was stopped; the cancel itself needs
    # no owner and wins whoever holds the job.
    owner = (await board.status(job)).owner
    await board.cancel(job, args.reason)

    if p.json:
        p.record(
            {"uuid": job.uuid, "cancelled": True, "owner": owner, "reason": args.reason}
        )
    elif owner is None:
        p.line(f"cancelled {job.uuid}: {args.reason}")
    else:
        p.line(f"cancelled {job.uuid}, held by {owner!r}: {args.reason}")


async def cmd_workers(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    found = await board.workers()
    if p.json:
        for info in found:
            p.record(worker_record(info))
        return

    now = datetime.now(UTC)
    rows = [_worker_row(info, now) for info in found]
    header = ["NAME", "HOST", "PID", "UP", "SEEN", "HOLDING"]
    for text in _table([header, *rows]):
        p.line(text)


async def cmd_watch(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    seen = 0
    # events() is an async generator; the contract only promises an iterator.
    events = cast(AsyncGenerator[JobEvent, None], board.events())
    # The first step subscribes; the notice goes out only once it has, so
    # that nothing said after the notice is missed.
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    print(f"watching {board.url}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while args.count is None or seen < args.count:
            event = await waiting
            seen += 1
            if p.json:
                p.record(event_record(event))
            else:
                p.line(_event_line(event))
            if args.count is None or seen < args.count:
                waiting = asyncio.ensure_future(anext(events))
    except StopAsyncIteration:
        return
    finally:
        # The pending step must end before the generator can be closed.
        waiting.cancel()
        with suppress(asyncio.CancelledError, StopAsyncIteration):
            await waiting
        await events.aclose()


async def cmd_demo(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    # The demo's handler failures are on purpose; logging each one with its
    # traceback would bury the summary.
    worker_log = logging.getLogger("aiojobboard.worker")
    level = worker_log.level
    worker_log.setLevel(logging.CRITICAL)
    try:
        report = await _demo.drain(
            board,
            jobs=args.jobs,
            consumers=args.consumers,
            failure_rate=args.failure_rate,
        )
    finally:
        worker_log.setLevel(level)

    if p.json:
        record = {k: v for k, v in vars(report).items() if k != "attempts"}
        record["attempts"] = {str(n): c for n, c in sorted(report.attempts.items())}
        p.record(record)
    else:
        rate = report.jobs / max(report.drain_seconds, 1e-9)
        p.line(
            f"{report.jobs} jobs drained by {report.consumers} consumers in "
            f"{report.drain_seconds:.2f} s ({rate:,.0f} jobs/s)"
        )
        p.line(
            f"consumed {report.consumed}, trashed {report.trashed}, handler "
            f"failures {report.failed}, claims lost {report.lost}, "
            f"left on the board {report.left}"
        )
    if not report.ok:
        raise JobBoardError(f"the demo drained only part of its {report.jobs} jobs")


async def cmd_serve(board: JobBoard, args: argparse.Namespace, p: _Printer) -> None:
    from . import web  # starlette and uvicorn are needed only here

    # Fail now, with exit code 3, if the board cannot be reached.
    await board.job_count()

    def ready(address: str) -> None:
        if p.json:
            p.record({"url": address, "board": board.url})
        else:
            p.line(f"serving {board.url} at {address}")
        print(
            "the dashboard has no authentication; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    async with AsyncExitStack() as stack:
        books = None
        if args.books is not None:
            books = await stack.enter_async_context(booklib.connect(args.books))
        try:
            await web.serve(
                board,
                books=books,
                host=args.host,
                port=args.port,
                allowed_hosts=args.allowed_host,
                on_ready=ready,
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}"
            ) from None


COMMANDS = {
    "jobs": cmd_jobs,
    "show": cmd_show,
    "post": cmd_post,
    "trash": cmd_trash,
    "cancel": cmd_cancel,
    "workers": cmd_workers,
    "watch": cmd_watch,
    "demo": cmd_demo,
    "serve": cmd_serve,
}


# -- helpers ------------------------------------------------------------------


async def _find(board: JobBoard, uuid: str) -> Job:
    try:
        return await board.get_job(uuid)
    except (NotFound, ValueError):
        # Something that is not a uuid is not on the board either.
        raise NotFound(f"no job {uuid!r} on {board.url}") from None


async def _load_book(url: str | None, uuid: str | None) -> LogBook | None:
    # Read from the store directly rather than through job.load_book(): a job
    # read back from a memory board keeps the connection that posted it.
    if url is None or uuid is None:
        return None
    async with booklib.connect(url) as store:
        return await store.get_logbook(uuid)


def _parse_details(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        details = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--details is not JSON: {exc}") from None
    if not isinstance(details, dict):
        raise UsageError(
            f"--details must be a JSON object, not {type(details).__name__}"
        )
    return details


def _default_owner() -> str:
    return f"{PROG}@{socket.gethostname()}:{os.getpid()}"


def _job_json(job: Job, status: JobStatus) -> dict[str, Any]:
    record = job_record(job, status, datetime.now(UTC))
    record["details"] = dict(job.details)
    return record


def _job_row(job: Job, status: JobStatus, now: datetime) -> list[str]:
    age = _age((now - job.created_on).total_seconds())
    return [
        job.uuid,
        job.name,
        status.state.name,
        status.owner or "-",
        job.priority.name,
        age,
        str(status.attempt),
    ]


def _worker_row(info: WorkerInfo, now: datetime) -> list[str]:
    return [
        info.name,
        info.host,
        str(info.pid),
        _age((now - info.since).total_seconds()),
        _age((now - info.seen).total_seconds()) + " ago",
        _holding(info.holding),
    ]


def _holding(uuids: tuple[str, ...], shown: int = 2) -> str:
    if not uuids:
        return "0"
    more = ", ..." if len(uuids) > shown else ""
    return f"{len(uuids)}: {', '.join(uuids[:shown])}{more}"


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]


def _book_lines(book: LogBook) -> list[str]:
    lines = [f"{'flows:':<12}{len(book)}"]
    for flow in book:
        lines.append(f"  flow {flow.name!r} ({flow.uuid}) {flow.state or '-'}")
        for atom in flow:
            results = "" if atom.results is None else f" -> {_short(atom.results)}"
            lines.append(
                f"    atom {atom.name!r} ({atom.uuid}) {atom.state or '-'}{results}"
            )
    return lines


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _event_line(event: JobEvent) -> str:
    who = f" by {event.owner}" if event.owner else ""
    why = f": {event.reason!r}" if event.reason is not None else ""
    return f"{event.at.isoformat()}  {event.kind.name:<9}  {event.job_uuid}{who}{why}"


if __name__ == "__main__":
    sys.exit(main())
