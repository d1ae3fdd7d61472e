"""Flows posted as jobs, run by a conductor, all in one process on memory://.

The producer saves, for each order, a logbook holding the flow's factory and
its inputs, and posts a job carrying it. The conductor claims each job,
rebuilds the flow, runs it, and records every step in the logbook. One order's
card is declined: its reservation is released and its job trashed, with the
failure kept in its logbook.

Run it with ``python examples/conductor_demo.py``.
"""

from __future__ import annotations

import asyncio

from order_flows import order_flow

import aiojobboard as ajb
from aiojobboard.book import BookStore, FlowDetail, LogBook

ORDERS = [
    {"order": 1, "items": ["tea"], "amount": 4.5, "card": "ok"},
    {"order": 2, "items": ["cups", "saucers"], "amount": 30.0, "card": "declined"},
    {"order": 3, "items": ["kettle"], "amount": 25.0, "card": "ok"},
]


async def produce(board: ajb.JobBoard, books: BookStore) -> list[ajb.Job]:
    jobs = []
    for order in ORDERS:
        book = LogBook(f"order-{order['order']}")
        flow_detail = FlowDetail("checkout")
        ajb.save_factory_details(
            flow_detail, order_flow, factory_kwargs={"express": False}
        )
        # The card travels with the job; everything else with the logbook.
        flow_detail.meta["store"] = {k: v for k, v in order.items() if k != "card"}
        book.add(flow_detail)
        await books.save_logbook(book)
        details = {"store": {"card": order["card"]}}
        jobs.append(await board.post("checkout", details, book=book))
    print(f"{len(jobs)} orders posted")
    return jobs


async def report(books: BookStore, job: ajb.Job) -> None:
    assert job.book_uuid is not None
    (flow_detail,) = await books.get_flows_for_book(job.book_uuid)
    steps = ", ".join(f"{atom.name} {atom.state}" for atom in flow_detail)
    print(f"{job.book_name}: flow {flow_detail.state} ({steps})")


async def main() -> None:
    async with (
        ajb.book.connect("memory://demo-books") as books,
        ajb.connect("memory://demo-orders", books=books) as board,
    ):
        jobs = await produce(board, books)
        conductor = ajb.Conductor(board, books, "conductor-1", concurrency=4)
        running = asyncio.create_task(conductor.run())
        await asyncio.gather(*(job.wait(timeout=10) for job in jobs))
        await conductor.stop()
        await running
        for job in jobs:
            await report(books, job)
        print(f"consumed {conductor.consumed}, trashed {conductor.trashed}")
        print("jobs left on the board:", await board.job_count())


if __name__ == "__main__":
    asyncio.run(main())
