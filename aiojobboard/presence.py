"""Presence: which consumers are alive on a board, and what they hold.

A connection announces one record for each owner name that holds a claim
through it or that a running Worker registered. Each adapter keeps the
records where every connection can read them, and makes them disappear with
the connection: see ``docs/contract.md``.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["WorkerInfo"]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One consumer on a board, as its connection last announced it.

    ``name`` is the worker's or owner's name, ``host`` and ``pid`` the process
    it runs in, ``since`` when the record appeared and ``seen`` when it was
    last heard of (both UTC); ``holding`` is the uuids of the jobs it holds.
    """

    name: str
    host: str
    pid: int
    since: datetime
    seen: datetime
    holding: tuple[str, ...]

    def encode(self) -> str:
        """The record as the JSON text that Redis and ZooKeeper keep."""
        return json.dumps(
            {
                "name": self.name,
                "host": self.host,
                "pid": self.pid,
                "since": self.since.timestamp(),
                "seen": self.seen.timestamp(),
                "holding": list(self.holding),
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | bytes) -> WorkerInfo | None:
        """Read a record written by :meth:`encode`; ``None`` if it is not one."""
        try:
            fields: Any = json.loads(text)
            return cls(
                name=str(fields["name"]),
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                since=datetime.fromtimestamp(float(fields["since"]), UTC),
                seen=datetime.fromtimestamp(float(fields["seen"]), UTC),
                holding=tuple(str(uuid) for uuid in fields["holding"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError):
            return None


def this_process() -> tuple[str, int]:
    """The host name and process id that this process's records carry."""
    return socket.gethostname(), os.getpid()
