"""The TaskFlow half of postgres_books.py: its SQLAlchemy persistence backend.

Run by postgres_books.py in the venv that benchmarks/taskflow_setup.sh makes,
never imported by aiojobboard. It saves, loads and updates books shaped like
the other half's, one call at a time as TaskFlow's backend works, and prints
its figures as one line of JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any
from uuid import uuid4

from taskflow.persistence import (  # type: ignore[import-not-found,unused-ignore]
    backends,
    models,
)


def make_book(index: int, flows: int, atoms: int) -> Any:
    book = models.LogBook(f"book-{index}")
    book.meta = {"owner": "bench", "index": index}
    for i in range(flows):
        flow = models.FlowDetail(f"flow-{i}", uuid=str(uuid4()))
        flow.meta = {"index": i}
        for j in range(atoms):
            atom = models.TaskDetail(f"atom-{i}-{j}", uuid=str(uuid4()))
            atom.state = "SUCCESS"
            atom.results = {"value": [i, j], "text": "done"}
            atom.meta = {"try": 1}
            flow.add(atom)

        book.add(flow)

    return book


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="a postgresql:// URL for SQLAlchemy")
    parser.add_argument("--books", type=int, required=True)
    parser.add_argument("--flows", type=int, required=True)
    parser.add_argument("--atoms", type=int, required=True)
    parser.add_argument("--updates", type=int, required=True)
    args = parser.parse_args()

    backend = backends.fetch({"connection": args.url})
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()
        conn.clear_all()
        books = [make_book(i, args.flows, args.atoms) for i in range(args.books)]

        started = time.perf_counter()
        for book in books:
            conn.save_logbook(book)
        save = time.perf_counter() - started

        started = time.perf_counter()
        for book in books:
            conn.get_logbook(book.uuid)
        load = time.perf_counter() - started

        atoms = [atom for book in books for flow in book for atom in flow]
        started = time.perf_counter()
        for n in range(args.updates):
            atom = atoms[n % len(atoms)]
            atom.state = "REVERTED"
            atom.results = {"value": n}
            conn.update_atom_details(atom)
        update = time.perf_counter() - started
        conn.clear_all()

    backend.close()
    print(
        json.dumps(
            {
                "save": args.books / save,
                "load": args.books / load,
                "update": args.updates / update,
            }
        )
    )


if __name__ == "__main__":
    main()
