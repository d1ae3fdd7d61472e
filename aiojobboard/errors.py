"""The exceptions that aiojobboard raises.

Every error that says something about a board, a job or a book store derives
from :class:`JobBoardError`. Misuse of the API (a wrong type, an empty owner
name, a bad URL option) raises the builtin ``TypeError`` or ``ValueError``
instead, so that it is never mistaken for a state of the board.

An adapter translates its backend's exceptions into these at its edge and keeps
the original as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BoardClosed",
    "ClaimLost",
    "ConnectionLost",
    "InvalidJob",
    "JobBoardError",
    "NotFound",
    "NotOwner",
    "UnclaimableJob",
]


class JobBoardError(Exception):
    """Raised when a board, a job or a book store cannot do what was asked.

    The base class of every aiojobboard error.
    """


class NotFound(JobBoardError):
    """Raised when a job, logbook, flow or atom does not exist.

    A job that was consumed or trashed no longer exists.
    """


class UnclaimableJob(JobBoardError):
    """Raised when a job is already claimed, by anyone, the same owner too."""

    def __init__(self, message: str, *, owner: str | None = None) -> None:
        super().__init__(message)
        #: The name of the current holder, when the board knows it.
        self.owner = owner


class NotOwner(JobBoardError):
    """Raised when anyone but the current holder of a claim tries to finish it.

    Also raised on an unclaimed job, and on a stale claim: one whose lease ran
    out, or that was already finished, even under the same owner name.
    """


class ClaimLost(JobBoardError):
    """Raised when a held claim was lost before its ``async with`` block ended.

    A claim is lost when its lease runs out (for instance while the event loop
    was blocked), when its ZooKeeper session ends, or when its board is closed
    under it. A lost claim stays lost.
    """


class InvalidJob(JobBoardError):
    """Raised when a posting is refused: nothing was written.

    An empty name, details that are not JSON, or a posting over the board's
    size limit.
    """


class BoardClosed(JobBoardError):
    """Raised when a board or a book store is used after ``close()``."""


class ConnectionLost(JobBoardError):
    """Raised when the server could not be reached within the configured time."""
