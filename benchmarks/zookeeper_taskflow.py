"""TaskFlow's ZooKeeper job board, timed; run by zookeeper_board.py.

Runs inside .venv-taskflow (TaskFlow and kazoo), never in the project's venv.
Prints one JSON line of rates, in jobs per second:

    python zookeeper_taskflow.py HOSTS JOBS CONSUMERS POSTERS

Posting is done by POSTERS threads sharing one board; draining by CONSUMERS
threads sharing one board, each walking ``iterjobs(only_unclaimed=True)`` and
claiming what it can, which is how a TaskFlow conductor takes work.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

from taskflow import exceptions  # type: ignore[import-not-found,unused-ignore]
from taskflow.jobs import backends  # type: ignore[import-not-found,unused-ignore]


def open_board(hosts: str, path: str):  # type: ignore[no-untyped-def]
    board = backends.fetch(
        "bench", {"board": "zookeeper", "hosts": hosts, "path": path}
    )
    board.connect()
    return board


def in_threads(count: int, target, *args) -> float:  # type: ignore[no-untyped-def]
    threads = [threading.Thread(target=target, args=args) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def post(board, jobs: int, posters: int) -> float:  # type: ignore[no-untyped-def]
    per = jobs // posters

    def poster() -> None:
        for i in range(per):
            board.post("job", details={"n": i})

    return per * posters / in_threads(posters, poster)


def drain(board, jobs: int, consumers: int) -> float:  # type: ignore[no-untyped-def]
    done: list[str] = []
    lock = threading.Lock()

    def consumer(who: str) -> None:
        while True:
            with lock:
                if len(done) >= jobs:
                    return
            took = False
            for job in board.iterjobs(only_unclaimed=True):
                try:
                    board.claim(job, who)
                except (exceptions.UnclaimableJob, exceptions.NotFound):
                    continue
                board.consume(job, who)
                took = True
                with lock:
                    done.append(job.uuid)
                break
            if not took:
                time.sleep(0.001)

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
    hosts, jobs, consumers, posters = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    jobs -= jobs % posters
    path = f"/taskflow-bench-{uuid.uuid4().hex[:8]}/jobs"
    board = open_board(hosts, path)
    try:
        post_rate = post(board, jobs, posters)
        # Its view of the board follows a watch; let it catch up untimed.
        deadline = time.monotonic() + 60
        while board.job_count < jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        if board.job_count != jobs:
            raise SystemExit(f"posted {board.job_count} jobs, not {jobs}")
        drain_rate = drain(board, jobs, consumers)
    finally:
        board.close()
    rates = {
        f"post, {posters} posters": post_rate,
        f"drain, {consumers} consumers": drain_rate,
    }
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
