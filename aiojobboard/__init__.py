"""aiojobboard: job boards for asyncio.

Producers post jobs to a board; consumers claim them under leases, do the work,
and consume them, or abandon them for another consumer. Boards live in memory,
Redis or ZooKeeper, chosen by URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import book as book
from ._connect import Opener, load_adapter
from ._observe import Instrument as Instrument
from ._observe import JobRun as JobRun
from ._observe import board_label as board_label
from ._observe import instrument as instrument
from ._observe import uninstrument as uninstrument
from .board import DEFAULT_LEASE as DEFAULT_LEASE
from .board import MAX_JOB_SIZE as MAX_JOB_SIZE
from .board import JobBoard as JobBoard
from .claims import Claim as Claim
from .claims import ClaimState as ClaimState
from .conductor import Conductor as Conductor
from .conductor import StepFailed as StepFailed
from .errors import BoardClosed as BoardClosed
from .errors import ClaimLost as ClaimLost
from .errors import ConnectionLost as ConnectionLost
from .errors import InvalidJob as InvalidJob
from .errors import JobBoardError as JobBoardError
from .errors import NotFound as NotFound
from .errors import NotOwner as NotOwner
from .errors import UnclaimableJob as UnclaimableJob
from .events import EventKind as EventKind
from .events import JobEvent as JobEvent
from .flows import FactoryError as FactoryError
from .flows import Flow as Flow
from .flows import Step as Step
from .flows import load_flow as load_flow
from .flows import save_factory_details as save_factory_details
from .jobs import Job as Job
from .jobs import JobPriority as JobPriority
from .jobs import JobState as JobState
from .jobs import JobStatus as JobStatus
from .presence import WorkerInfo as WorkerInfo
from .worker import TrashJob as TrashJob
from .worker import Worker as Worker

if TYPE_CHECKING:
    from .book.base import BookStore

__version__ = "0.1.0.dev0"

VERY_HIGH = JobPriority.VERY_HIGH
HIGH = JobPriority.HIGH
NORMAL = JobPriority.NORMAL
LOW = JobPriority.LOW
VERY_LOW = JobPriority.VERY_LOW


def connect(url: str, *, books: BookStore | None = None) -> Opener[JobBoard]:
    """Connect to the board that *url* names.

    Await the result (and close the board yourself), or use it as an async
    context manager. The scheme picks the adapter: ``memory://NAME``,
    ``redis://``, ``zookeeper://``. *books* is the store that jobs' logbooks
    are loaded from.
    """
    adapter: type[JobBoard] = load_adapter("aiojobboard.boards", url, "board")

    async def open_board() -> JobBoard:
        return await adapter.from_url(url, books=books)

    return Opener(open_board)
