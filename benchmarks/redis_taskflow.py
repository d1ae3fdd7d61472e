"""TaskFlow's Redis job board, measured the way benchmarks/redis_board.py
measures aiojobboard's; run by that script in TaskFlow's own venv.

    .venv-taskflow/bin/python benchmarks/redis_taskflow.py HOST PORT JOBS C...

Prints one JSON line: jobs/s for posting and for draining with each number
of consumers (threads of one process, TaskFlow being synchronous); a number
given more than once is run that often, and the best rate is kept.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from typing import Any

# TaskFlow lives only in its own venv, where this script runs.
from taskflow import exceptions  # type: ignore[import-not-found]
from taskflow.jobs import backends  # type: ignore[import-not-found]


def open_board(host: str, port: int) -> Any:
    conf = {
        "board": "redis",
        "host": host,
        "port": port,
        "namespace": f"tf-bench-{uuid.uuid4().hex[:8]}",
    }
    board = backends.fetch("bench", conf)
    board.connect()
    return board


def post(board: Any, jobs: int) -> float:
    started = time.perf_counter()
    for i in range(jobs):
        board.post("job", details={"n": i})
    return jobs / (time.perf_counter() - started)


def drain(board: Any, consumers: int, jobs: int) -> float:
    done = [0]
    lock = threading.Lock()

    def consumer(who: str) -> None:
        while True:
            took = 0
            for job in board.iterjobs(only_unclaimed=True, ensure_fresh=True):
                try:
                    board.claim(job, who)
                except (exceptions.UnclaimableJob, exceptions.NotFound):
                    continue
                board.consume(job, who)
                took += 1
            with lock:
                done[0] += took
                if done[0] >= jobs:
                    return

    threads = [
        threading.Thread(target=consumer, args=(f"c{i}",)) for i in range(consumers)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return jobs / (time.perf_counter() - started)


def main() -> None:
    host, port, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rates: dict[str, float] = {}
    for consumers in (int(c) for c in sys.argv[4:]):
        board = open_board(host, port)
        try:
            key = "post, 1 poster"
            rates[key] = max(rates.get(key, 0.0), post(board, jobs))
            key = f"drain, {consumers:>2} consumers"
            rates[key] = max(rates.get(key, 0.0), drain(board, consumers, jobs))
        finally:
            board.close()
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
