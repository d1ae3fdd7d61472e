"""Jobs, consumers, logbooks and events as JSON objects.

What the command line prints with ``--json`` and what the dashboard's API
answers are the same records, written here once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .book.models import AtomDetail, FlowDetail, LogBook
from .events import JobEvent
from .jobs import Job, JobStatus
from .presence import WorkerInfo

__all__ = ["book_record", "event_record", "job_record", "worker_record"]


def job_record(job: Job, status: JobStatus, now: datetime) -> dict[str, Any]:
    """*job* as it stands, its ``age`` in seconds at *now*."""
    return {
        "uuid": job.uuid,
        "name": job.name,
        "priority": job.priority.name,
        "state": status.state.name,
        "owner": status.owner,
        "attempt": status.attempt,
        "token": status.token,
        "created_on": job.created_on.isoformat(),
        "age": round(max((now - job.created_on).total_seconds(), 0.0), 3),
        "sequence": job.sequence,
        "book_uuid": job.book_uuid,
        "book_name": job.book_name,
    }


def worker_record(info: WorkerInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "host": info.host,
        "pid": info.pid,
        "since": info.since.isoformat(),
        "seen": info.seen.isoformat(),
        "holding": list(info.holding),
    }


def event_record(event: JobEvent) -> dict[str, Any]:
    return {
        "kind": event.kind.name,
        "job_uuid": event.job_uuid,
        "owner": event.owner,
        "token": event.token,
        "reason": event.reason,
        "at": event.at.isoformat(),
    }


def book_record(book: LogBook) -> dict[str, Any]:
    return {
        "uuid": book.uuid,
        "name": book.name,
        "meta": book.meta,
        "created_at": book.created_at.isoformat(),
        "updated_at": book.updated_at.isoformat() if book.updated_at else None,
        "flows": [_flow_record(flow) for flow in book],
    }


def _flow_record(flow: FlowDetail) -> dict[str, Any]:
    return {
        "uuid": flow.uuid,
        "name": flow.name,
        "state": flow.state,
        "meta": flow.meta,
        "atoms": [_atom_record(atom) for atom in flow],
    }


def _atom_record(atom: AtomDetail) -> dict[str, Any]:
    return {
        "uuid": atom.uuid,
        "name": atom.name,
        "state": atom.state,
        "intention": atom.intention,
        "results": atom.results,
        "failure": atom.failure,
        "meta": atom.meta,
        "version": atom.version,
    }
