"""A chaos run: no job lost or consumed twice while everything fails.

Starts a private Redis server (persisting every write) or a three-server
ZooKeeper ensemble, behind TCP proxies; one producer process posts jobs at a
steady rate and several consumer processes claim and consume them, while
consumers and the producer are killed, the server (or an ensemble member) is
restarted and client connections are cut, at random from a seed. Then it
drains the board and checks the ledger that every process wrote against the
board, prints a table, and exits 1 on any duplicate, loss or stuck job, or
when a crash, an unexpected error or an unfinished drain leaves it unsure.

    .venv/bin/python benchmarks/chaos.py --board redis|zookeeper \\
        [--seconds 60] [--consumers 4] [--seed N]

The machinery lives in ``tests/chaos.py``, which the test suite runs too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos import main

if __name__ == "__main__":
    sys.exit(main())
