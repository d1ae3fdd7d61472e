"""A producer and two conductor processes on a server board, books in PostgreSQL.

    python examples/conductor_processes.py [--orders 30]
        [--board redis://127.0.0.1:6379/0] [--books postgresql://postgres@127.0.0.1/test]

The producer saves a logbook per order and posts a job carrying it, then starts
two conductor processes. Once a few orders are done it kills the first
conductor with SIGKILL, in the middle of its flows; the second takes over the
jobs whose claims ran out and resumes them from their logbooks, skipping the
steps already recorded. The board (a fresh namespace or path) and the book
store (a fresh schema) are the example's own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import uuid

from order_flows import order_flow

import aiojobboard as ajb
from aiojobboard.book import BookStore, FlowDetail, LogBook

LEASE = 3


async def produce(board: ajb.JobBoard, books: BookStore, orders: int) -> list[ajb.Job]:
    jobs = []
    for n in range(1, orders + 1):
        book = LogBook(f"order-{n}")
        flow_detail = FlowDetail("checkout")
        ajb.save_factory_details(
            flow_detail, order_flow, factory_kwargs={"express": n % 2 == 0}
        )
        flow_detail.meta["store"] = {"order": n, "items": ["tea"], "amount": 4.5}
        book.add(flow_detail)
        await books.save_logbook(book)
        card = "declined" if n == orders else "ok"
        jobs.append(await board.post("checkout", {"store": {"card": card}}, book=book))
    return jobs


async def conduct(board_url: str, books_url: str, name: str) -> None:
    async with (
        ajb.book.connect(books_url) as books,
        ajb.connect(board_url, books=books) as board,
    ):
        await ajb.Conductor(board, books, name, concurrency=4).run()


def start_conductor(
    board_url: str, books_url: str, name: str
) -> asyncio.Future[asyncio.subprocess.Process]:
    script = os.path.abspath(__file__)
    return asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            sys.executable, script, "conduct", board_url, books_url, name
        )
    )


async def main(board_url: str, books_url: str, orders: int) -> int:
    async with (
        ajb.book.connect(books_url) as books,
        ajb.connect(board_url, books=books) as board,
    ):
        await books.upgrade()
        jobs = await produce(board, books, orders)
        print(f"{orders} orders posted on {board.url}")
        first = await start_conductor(board_url, books_url, "conductor-1")
        second = await start_conductor(board_url, books_url, "conductor-2")
        for done, job in enumerate(jobs, start=1):
            await job.wait(timeout=60)
            if done == orders // 4:
                first.send_signal(signal.SIGKILL)
                print(f"{done} orders done; conductor-1 killed with SIGKILL")
        pending = [
            job for job in jobs if await job.get_state() is not ajb.JobState.COMPLETE
        ]
        second.terminate()
        await asyncio.gather(first.wait(), second.wait())
        states: dict[str | None, int] = {}
        for job in jobs:
            assert job.book_uuid is not None
            (flow,) = await books.get_flows_for_book(job.book_uuid)
            states[flow.state] = states.get(flow.state, 0) + 1
        print(f"flows by state: {dict(sorted(states.items(), key=str))}")
        left = await board.job_count()
        print(f"jobs left on the board: {left}, unfinished: {len(pending)}")
        return 0 if not pending and left == 0 else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--board", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--books", default="postgresql://postgres@127.0.0.1:5432/test")
    return parser.parse_args()


def own_urls(board: str, books: str) -> tuple[str, str]:
    """Give the example a board and a schema nobody else uses."""
    tag = uuid.uuid4().hex[:10]
    sep = "&" if "?" in board else "?"
    if board.startswith("zookeeper://"):
        board_url = f"{board.rstrip('/')}/orders-{tag}"
    else:
        board_url = f"{board}{sep}namespace=orders-{tag}"
    board_url += f"{'&' if '?' in board_url else '?'}lease={LEASE}"
    books_url = f"{books}{'&' if '?' in books else '?'}schema=orders_{tag}"
    return board_url, books_url


if __name__ == "__main__":
    if sys.argv[1:2] == ["conduct"]:
        asyncio.run(conduct(*sys.argv[2:5]))
    else:
        args = parse_args()
        sys.exit(asyncio.run(main(*own_urls(args.board, args.books), args.orders)))
