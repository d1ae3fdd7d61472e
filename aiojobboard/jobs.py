"""Jobs: immutable snapshots of postings, and the enums that describe them."""

from __future__ import annotations

import enum
import json
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._json import MAX_DEPTH, check_json, deeper_than, dumps, unencodable
from .errors import InvalidJob

if TYPE_CHECKING:
    from .board import JobBoard
    from .book.models import LogBook

__all__ = ["Job", "JobPriority", "JobState", "JobStatus", "Posting"]


class JobPriority(enum.IntEnum):
    """How urgent a job is; a board offers higher priorities first."""

    VERY_LOW = -2
    LOW = -1
    NORMAL = 0
    HIGH = 1
    VERY_HIGH = 2

    def __repr__(self) -> str:
        return f"JobPriority.{self.name}"


class JobState(enum.Enum):
    """Where a job stands on its board."""

    UNCLAIMED = "UNCLAIMED"
    CLAIMED = "CLAIMED"
    #: Consumed or trashed: the job is no longer on the board.
    COMPLETE = "COMPLETE"

    def __repr__(self) -> str:
        return f"JobState.{self.name}"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Where a job stands, read in one step: what ``board.status()`` answers.

    ``attempt`` counts the claims on the job so far (0 if it was never
    claimed); ``token`` is the fencing token of its current claim, ``None``
    while it is unclaimed, as ``owner`` is.
    """

    state: JobState
    owner: str | None
    attempt: int
    token: int | None


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class Job:
    """One posting on a board, as it was when it was read.

    The attributes never change; the methods ask the board for the job's
    current state. Two snapshots of the same posting compare equal.
    """

    uuid: str
    name: str
    details: Mapping[str, Any]
    priority: JobPriority
    created_on: datetime
    sequence: int
    book_uuid: str | None = None
    book_name: str | None = None
    board: JobBoard = field(repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return self.uuid == other.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    async def get_state(self) -> JobState:
        """Return the job's state now; a job no longer on the board is COMPLETE."""
        return (await self.board._status(self))[0]

    async def get_owner(self) -> str | None:
        """Return who holds the job now, or ``None`` (also once it is gone)."""
        return (await self.board._status(self))[1]

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job is consumed or trashed.

        Return ``True`` once it is, ``False`` when *timeout* seconds pass first.
        """
        return await self.board._wait_for_job(self, timeout)

    async def load_book(self) -> LogBook:
        """Load the logbook this job carries from the board's book store."""
        return await self.board._load_book(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Posting:
    """A checked posting, before a board gives it a sequence number.

    ``encoded`` is its JSON text, the form an adapter stores and the one the
    board's size limit applies to.
    """

    uuid: str
    name: str
    details: dict[str, Any]
    priority: JobPriority
    created_on: datetime
    book_uuid: str | None
    book_name: str | None
    encoded: str

    @classmethod
    def create(
        cls,
        name: object,
        details: object,
        priority: object,
        book: object,
        max_size: int,
    ) -> Posting:
        """Check a posting's parts; raise :class:`InvalidJob` naming the problem."""
        if not isinstance(name, str):
            raise InvalidJob(f"a job name must be a str, not {type(name).__name__}")
        if not name.strip():
            raise InvalidJob("a job name must not be empty")
        fields = {
            "uuid": str(uuidlib.uuid4()),
            "name": name,
            "details": _check_details(details),
            "priority": _check_priority(priority).name,
            "created_on": datetime.now(UTC).isoformat(),
            **_check_book(book),
        }
        encoded, size = _encode(name, fields)
        if size > max_size:
            raise InvalidJob(
                f"job {name!r} is {size} bytes encoded, over this board's limit "
                f"of {max_size} bytes"
            )
        return cls.decode(encoded)

    @classmethod
    def decode(cls, encoded: str) -> Posting:
        """Read a stored posting; raise ``ValueError`` if it is not one."""
        try:
            fields = json.loads(encoded)
            return cls(
                uuid=_text(fields["uuid"]),
                name=_text(fields["name"]),
                details=_mapping(fields["details"]),
                priority=JobPriority[fields["priority"]],
                created_on=datetime.fromisoformat(fields["created_on"]),
                book_uuid=fields.get("book_uuid"),
                book_name=fields.get("book_name"),
                encoded=encoded,
            )
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"not a job posting: {exc!r}") from exc

    def to_job(self, board: JobBoard, sequence: int) -> Job:
        return Job(
            uuid=self.uuid,
            name=self.name,
            details=MappingProxyType(self.details),
            priority=self.priority,
            created_on=self.created_on,
            sequence=sequence,
            book_uuid=self.book_uuid,
            book_name=self.book_name,
            board=board,
        )


def _encode(name: str, fields: dict[str, Any]) -> tuple[str, int]:
    """Return the posting's JSON text and its size in bytes, or refuse it."""
    try:
        encoded: str | None = dumps(fields)
    except (ValueError, RecursionError):
        # An int too long to write, or nesting too deep for the encoder.
        encoded = None
    braces = -1 if encoded is None else encoded.count("{") + encoded.count("[")
    if (braces < 0 or braces > MAX_DEPTH) and deeper_than(fields["details"]):
        raise InvalidJob(
            f"job {name!r} has details nested more than {MAX_DEPTH} levels deep"
        )
    try:
        if encoded is None:
            raise ValueError
        return encoded, len(encoded.encode())
    except ValueError:
        # A lone surrogate, which UTF-8 cannot encode, is a ValueError too.
        problem = unencodable(fields)
        raise InvalidJob(f"job {name!r} cannot be stored: {problem}") from None


def _check_details(details: object) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise InvalidJob(f"job details must be a mapping, not {type(details).__name__}")
    try:
        check_json(details, "details")
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None
    return dict(details)


def _check_priority(priority: object) -> JobPriority:
    if isinstance(priority, str) and priority.upper() in JobPriority.__members__:
        return JobPriority[priority.upper()]
    if isinstance(priority, int) and not isinstance(priority, bool):
        try:
            return JobPriority(priority)
        except ValueError:
            pass
    names = ", ".join(JobPriority.__members__)
    raise InvalidJob(f"priority must be one of {names}, not {priority!r}")


def _check_book(book: object) -> dict[str, str]:
    if book is None:
        return {}
    name, uuid = getattr(book, "name", None), getattr(book, "uuid", None)
    if not isinstance(name, str) or not isinstance(uuid, str) or not uuid:
        raise InvalidJob(f"book must be a LogBook with a name and a uuid, not {book!r}")
    return {"book_uuid": uuid, "book_name": name}


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return value
