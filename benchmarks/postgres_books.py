"""Logbook throughput on PostgreSQL: aiojobboard's store against TaskFlow's.

Runs TaskFlow's SQLAlchemy persistence backend (in its own venv, made by
taskflow_setup.sh) and aiojobboard's PostgreSQL store on the same server, back
to back, each in a fresh database, with the same books: ``--flows`` flows of
``--atoms`` atoms each. It measures saving whole books, loading them, and
updating atoms; TaskFlow's backend is synchronous, so it runs one call at a
time, while aiojobboard runs one call at a time and then ``--tasks`` at once.

    .venv/bin/python benchmarks/postgres_books.py

The server is the machine's (``--url``), started by scripts/services/postgres
when nothing answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]

from aiojobboard.book import AtomDetail, BookStore, FlowDetail, LogBook, connect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def make_book(index: int, flows: int, atoms: int) -> LogBook:
    book = LogBook(f"book-{index}", meta={"owner": "bench", "index": index})
    for i in range(flows):
        flow = FlowDetail(f"flow-{i}", meta={"index": i})
        for j in range(atoms):
            flow.add(
                AtomDetail(
                    f"atom-{i}-{j}",
                    state="SUCCESS",
                    results={"value": [i, j], "text": "done"},
                    meta={"try": 1},
                )
            )

        book.add(flow)

    return book


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def rate(
    count: int, tasks: int, call: Callable[[int], Awaitable[object]]
) -> float:
    """Run ``call(n)`` for n below *count* from *tasks* tasks; return calls/s."""
    queue = iter(range(count))

    async def drain() -> None:
        for n in queue:
            await call(n)

    started = time.perf_counter()
    await asyncio.gather(*(drain() for _ in range(tasks)))
    return count / (time.perf_counter() - started)


async def measure_ours(url: str, args: argparse.Namespace) -> dict[str, float]:
    options = f"max_size={args.tasks}&min_size={args.tasks}"
    async with connect(f"{url}?{options}") as store:
        await store.upgrade()
        figures: dict[str, float] = {}
        for tasks in sorted({1, 8, args.tasks}):
            await store.clear_all()
            figures.update(await measure_round(store, tasks, args))

        await store.clear_all()
        return figures


async def measure_round(
    store: BookStore, tasks: int, args: argparse.Namespace
) -> dict[str, float]:
    # Concurrent rounds do more of each, so that each lasts about as long.
    scale = 1 if tasks == 1 else 4
    count = args.books * scale
    books = [make_book(i, args.flows, args.atoms) for i in range(count)]
    save = await rate(count, tasks, lambda n: store.save_logbook(books[n]))
    load = await rate(count, tasks, lambda n: store.get_logbook(books[n].uuid))
    atoms = [atom for book in books for flow in book for atom in flow]

    def update(n: int) -> Awaitable[AtomDetail]:
        atom = atoms[n % len(atoms)]
        atom.state = "REVERTED"
        atom.results = {"value": n}
        return store.update_atom_details(atom)

    updates = args.updates * scale * 2
    changed = await rate(updates, tasks, update)
    return {f"save x{tasks}": save, f"load x{tasks}": load, f"update x{tasks}": changed}


def measure_taskflow(url: str, args: argparse.Namespace) -> dict[str, float]:
    setup = subprocess.run(
        ["bash", str(HERE / "taskflow_setup.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    python = setup.stdout.strip().splitlines()[-1]
    parts = urlsplit(url)
    sqlalchemy_url = urlunsplit(parts._replace(scheme="postgresql+psycopg2"))
    command = [
        python,
        str(HERE / "postgres_taskflow.py"),
        sqlalchemy_url,
        f"--books={args.books}",
        f"--flows={args.flows}",
        f"--atoms={args.atoms}",
        f"--updates={args.updates}",
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--books", type=int, default=100)
    parser.add_argument("--flows", type=int, default=10)
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=32)
    args = parser.parse_args()

    service = [ROOT / "scripts" / "services" / "postgres"]
    await asyncio.to_thread(subprocess.run, service, check=True)
    admin = await asyncpg.connect(args.url)
    databases = {kind: f"ajb_bench_{kind}_{uuid4().hex[:8]}" for kind in ("tf", "ajb")}
    try:
        for database in databases.values():
            await admin.execute(f'CREATE DATABASE "{database}"')

        theirs = await asyncio.to_thread(
            measure_taskflow, with_database(args.url, databases["tf"]), args
        )
        figures = await measure_ours(with_database(args.url, databases["ajb"]), args)
    finally:
        for database in databases.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')

        await admin.close()

    rounds = sorted({1, 8, args.tasks})
    where = urlsplit(args.url)
    print(
        f"PostgreSQL at {where.hostname}:{where.port or 5432}; books of "
        f"{args.flows} flows x {args.atoms} atoms; TaskFlow: {args.books} books, "
        f"{args.updates} atom updates, one call at a time"
    )
    header = ["operation", "TaskFlow/s", *(f"ours x{n}/s" for n in rounds)]
    header += [f"x{n} ratio" for n in rounds]
    print("".join(f"{cell:>14}" for cell in header))
    for op, unit in (("save", "books"), ("load", "books"), ("update", "atoms")):
        ours = [figures[f"{op} x{n}"] for n in rounds]
        cells = [f"{op} {unit}", f"{theirs[op]:.1f}", *(f"{v:.1f}" for v in ours)]
        cells += [f"{v / theirs[op]:.1f}x" for v in ours]
        print("".join(f"{cell:>14}" for cell in cells))


if __name__ == "__main__":
    asyncio.run(main())
