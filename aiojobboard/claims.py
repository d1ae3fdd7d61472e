"""Claims: leases on jobs, renewed in the background until they are finished."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from .errors import ClaimLost, JobBoardError, NotOwner

if TYPE_CHECKING:
    from .board import JobBoard
    from .jobs import Job

__all__ = ["Claim", "ClaimContext", "ClaimState", "Finish", "Grant", "check_holder"]

logger = logging.getLogger("aiojobboard.claim")


class ClaimState(enum.Enum):
    """Where a claim stands, as seen by the process that holds it."""

    HELD = "HELD"
    CONSUMED = "CONSUMED"
    ABANDONED = "ABANDONED"
    TRASHED = "TRASHED"
    #: The lease ran out, the session ended, or the board was closed under it.
    LOST = "LOST"

    def __repr__(self) -> str:
        return f"ClaimState.{self.name}"


class Finish(enum.Enum):
    """The ways a holder lets go of a job."""

    CONSUME = ClaimState.CONSUMED
    ABANDON = ClaimState.ABANDONED
    TRASH = ClaimState.TRASHED


@dataclass(frozen=True, slots=True)
class Grant:
    """What a board's server answers to a successful claim."""

    token: int
    attempt: int


def check_holder(
    uuid: str, held_by: str | None, held_token: int, owner: str, token: int | None
) -> None:
    """Raise :class:`NotOwner` unless *owner*, and *token* if given, hold the job.

    For adapters that judge ownership in Python; *held_by* is ``None`` for an
    unclaimed job.
    """
    if held_by is None:
        raise NotOwner(f"job {uuid} is not claimed")
    if held_by != owner:
        raise NotOwner(f"job {uuid} is claimed by {held_by!r}, not {owner!r}")
    if token is not None and held_token != token:
        raise NotOwner(f"job {uuid} is now held under token {held_token}, not {token}")


class Claim:
    """A lease on one job, held by one owner.

    The board renews it in the background for as long as it is held, whether or
    not this object is kept. ``token`` is a fencing token: it strictly increases
    each time the job is claimed. ``attempt`` counts the claims on the job, this
    one included.
    """

    __slots__ = (
        "_board",
        "_on_lost",
        "attempt",
        "cancel_reason",
        "expires_at",
        "finishing",
        "job",
        "lease",
        "lost_reason",
        "owner",
        "renew_at",
        "state",
        "token",
    )

    def __init__(
        self,
        board: JobBoard,
        job: Job,
        owner: str,
        grant: Grant,
        lease: float,
        sent_at: float,
    ) -> None:
        self._board = board
        self.job = job
        self.owner = owner
        self.token = grant.token
        self.attempt = grant.attempt
        self.lease = lease
        self.state = ClaimState.HELD
        #: Why the claim was lost, once it is.
        self.lost_reason: str | None = None
        #: The operator's reason, once the claim was lost to ``board.cancel()``.
        self.cancel_reason: str | None = None
        #: Whether a consume, abandon or trash of it is on its way to the board.
        self.finishing = False
        self._on_lost: list[Callable[[], object]] = []
        self.renewed(sent_at)

    def __repr__(self) -> str:
        return (
            f"<Claim job={self.job.uuid} owner={self.owner!r} token={self.token} "
            f"attempt={self.attempt} state={self.state.name}>"
        )

    @property
    def lost(self) -> bool:
        """True once the claim was lost; a lost claim stays lost."""
        return self.state is ClaimState.LOST

    @property
    def held(self) -> bool:
        return self.state is ClaimState.HELD

    async def consume(self) -> None:
        """Remove the job from the board: its work is done.

        Raises :class:`NotOwner` when this claim is no longer the job's current
        claim, even if the job is held again under the same owner name.
        """
        await self._board._finish_claim(self, Finish.CONSUME)

    async def abandon(self) -> None:
        """Give the job back to the board, for another consumer to claim."""
        await self._board._finish_claim(self, Finish.ABANDON)

    async def trash(self) -> None:
        """Remove the job from the board without doing it."""
        await self._board._finish_claim(self, Finish.TRASH)

    def renewed(self, sent_at: float) -> None:
        """Record a lease that the server granted or extended at *sent_at*.

        The local deadline counts from when the request was sent, so it never
        lies past the server's own.
        """
        self.expires_at = sent_at + self.lease
        self.renew_at = sent_at + self.lease / 3

    def set_finished(self, how: Finish) -> None:
        if self.state is not ClaimState.HELD:
            return
        self.state = how.value
        self._on_lost.clear()

    def set_lost(self, reason: str) -> None:
        if self.state is not ClaimState.HELD:
            return
        self.state = ClaimState.LOST
        self.lost_reason = reason
        logger.warning(
            "claim on job %s (%r) by %r, token %d, lost: %s",
            self.job.uuid,
            self.job.name,
            self.owner,
            self.token,
            reason,
        )
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            callback()

    @asynccontextmanager
    async def guard(
        self, on_error: Finish | Callable[[BaseException], Finish] = Finish.ABANDON
    ) -> AsyncIterator[Claim]:
        """Run a block under this claim and finish it on the way out.

        A clean exit consumes the job; an exception finishes it with *on_error*,
        or with what *on_error* answers for that exception.
        If the claim is lost, the block is cancelled and ``ClaimLost`` is raised
        out of it, also when the block raised first. Finishing is shielded from
        cancellation, so a cancelled block still gives its job back at once.
        """
        with anyio.CancelScope() as scope:
            self._on_lost.append(scope.cancel)
            try:
                yield self
            except BaseException as exc:
                await self._finish_after_error(exc, on_error)
                raise
            finally:
                if scope.cancel in self._on_lost:
                    self._on_lost.remove(scope.cancel)
        if self.lost:
            raise self._lost_error()
        await self._finish_shielded(Finish.CONSUME)

    async def _finish_after_error(
        self, exc: BaseException, on_error: Finish | Callable[[BaseException], Finish]
    ) -> None:
        if isinstance(exc, asyncio.CancelledError) and self.lost:
            # Our own scope cancelled the block; it turns this into ClaimLost.
            return
        if self.held:
            how = on_error if isinstance(on_error, Finish) else on_error(exc)
            await self._finish_shielded(how)
        if self.lost and not isinstance(exc, asyncio.CancelledError):
            raise self._lost_error() from exc

    async def _finish_shielded(self, how: Finish) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._board._finish_claim(self, how)
            except NotOwner as exc:
                raise self._lost_error() from exc
            except JobBoardError as exc:
                logger.warning(
                    "could not %s job %s after its block: %s; its lease will "
                    "return it to the board",
                    how.name.lower(),
                    self.job.uuid,
                    exc,
                )
                raise

    def _lost_error(self) -> ClaimLost:
        reason = self.lost_reason or "it is no longer held"
        return ClaimLost(
            f"claim on job {self.job.uuid} by {self.owner!r} (token {self.token}) "
            f"was lost: {reason}"
        )


class ClaimContext:
    """What ``board.claim()`` returns: await it, or use it with ``async with``.

    ``await board.claim(...)`` gives a :class:`Claim` that the caller finishes;
    ``async with board.claim(...) as claim`` consumes the job on a clean exit
    and abandons it on an exception.
    """

    __slots__ = ("_acquire", "_guard")

    def __init__(self, acquire: Callable[[], Any]) -> None:
        self._acquire = acquire
        self._guard: Any = None

    def __await__(self) -> Generator[Any, None, Claim]:
        coro: Any = self._acquire()
        result: Claim = yield from coro.__await__()
        return result

    async def __aenter__(self) -> Claim:
        if self._guard is not None:
            raise RuntimeError("this claim() was already entered; call it again")
        claim: Claim = await self._acquire()
        self._guard = claim.guard()
        await self._guard.__aenter__()
        return claim

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        guard, self._guard = self._guard, None
        result: bool | None = await guard.__aexit__(exc_type, exc, tb)
        return result
