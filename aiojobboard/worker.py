"""The Worker: many concurrent consumers of one board in one process."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

import anyio

from . import _observe
from .board import JobBoard
from .claims import Claim, ClaimState, Finish
from .errors import ClaimLost, ConnectionLost, NotFound
from .jobs import Job

__all__ = ["Handler", "TrashJob", "Worker"]

logger = logging.getLogger("aiojobboard.worker")

#: How long a consumer waits before it asks a board it could not reach again.
UNREACHABLE_PAUSE = 1.0


class TrashJob(Exception):
    """Raised by a handler to have its job trashed at once instead of retried.

    For a job that no attempt can complete; the message says why, in the log.
    """


#: What a Worker runs for each job it claims.
Handler = Callable[[Job, Claim], Awaitable[None]]


class Worker:
    """Claim jobs from *board* and run *handler* on each, *concurrency* at once.

    A handler that returns has its job consumed; one that raises has it
    abandoned, so that another attempt follows, unless it raised
    :class:`TrashJob`, which trashes the job at once. The handler runs at most
    *max_attempts* times for a job: when the last run raises, the job is
    trashed instead, and a job claimed more often than that (its earlier
    holders died mid-run) is trashed without running.

    With *destroy_books*, the logbook a job carries is destroyed in the
    board's book store once the job is consumed; a trashed job keeps its book
    for whoever looks into the failure.
    """

    def __init__(
        self,
        board: JobBoard,
        handler: Handler,
        *,
        name: str,
        concurrency: int = 1,
        max_attempts: int | None = None,
        lease: float | None = None,
        grace: float = 30.0,
        destroy_books: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a worker name must be a non-empty str, not {name!r}")
        _check_count("concurrency", concurrency)
        if max_attempts is not None:
            _check_count("max_attempts", max_attempts)
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace must be seconds at or above 0, not {grace}")
        self.board = board
        self.handler = handler
        self.name = name
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.lease = lease
        self.grace = grace
        if destroy_books and board.books is None:
            raise ValueError(
                "destroy_books needs a board opened with a book store "
                f"(aiojobboard.connect(url, books=...)); {board.url} has none"
            )
        self.destroy_books = destroy_books
        #: Jobs whose handler returned, raised, or that were trashed unrun.
        self.consumed = self.failed = self.trashed = self.lost = 0
        #: Jobs that an operator cancelled while their handler ran.
        self.cancelled = 0
        self._busy = 0
        self._stopping = False
        #: Whether the last call to the board failed to reach it.
        self._cut_off = False
        self._idle_scopes: set[anyio.CancelScope] = set()
        self._run_scope: anyio.CancelScope | None = None
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        if self._run_scope is None:
            state = "stopped" if self._done.is_set() else "not started"
        else:
            state = "stopping" if self._stopping else "running"
        return (
            f"<Worker {self.name!r} {state}, {self._busy} of "
            f"{self.concurrency} busy, consumed={self.consumed} "
            f"failed={self.failed} trashed={self.trashed} lost={self.lost} "
            f"cancelled={self.cancelled}>"
        )

    @property
    def busy(self) -> int:
        """How many jobs the worker is running now."""
        return self._busy

    async def run(self) -> None:
        """Consume jobs until cancelled, or until :meth:`stop` has drained them."""
        if self._run_scope is not None:
            raise RuntimeError(f"worker {self.name!r} is already running")
        logger.info(
            "worker %r consuming %s with concurrency %d",
            self.name,
            self.board.url,
            self.concurrency,
        )
        self.board._register_worker(self.name)
        try:
            async with anyio.create_task_group() as group:
                self._run_scope = group.cancel_scope
                for _ in range(self.concurrency):
                    group.start_soon(self._consume)
        finally:
            self.board._withdraw_worker(self.name)
            self._run_scope = None
            self._done.set()
            logger.info("worker %r stopped", self.name)

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish within the grace period.

        Jobs still running after it are cancelled, which abandons them for
        another consumer. Returns once the worker has stopped.
        """
        self._stopping = True
        for scope in self._idle_scopes:
            scope.cancel()
        if self._run_scope is None:
            return
        with anyio.move_on_after(self.grace):
            await self._done.wait()
        if self._run_scope is not None:
            logger.warning(
                "worker %r: %d jobs still running after a grace of %g s; "
                "cancelling them, their jobs go back to the board",
                self.name,
                self._busy,
                self.grace,
            )
            self._run_scope.cancel()
            await self._done.wait()

    async def _consume(self) -> None:
        while not self._stopping:
            try:
                claim = await self.board.claim_next(self.name, self.lease)
                self._reached()
                if claim is None:
                    await self._idle(self.board.wait)
                    continue
            except ConnectionLost as exc:
                # A failover or a network fault: the board comes back later.
                self._unreachable(exc)
                await self._idle(lambda: anyio.sleep(UNREACHABLE_PAUSE))
                continue
            if _observe.INSTRUMENTS:
                await self._run_observed(claim)
            else:
                await self._run(claim)

    async def _idle(self, wait: Callable[[], Awaitable[object]]) -> None:
        with anyio.CancelScope() as scope:
            self._idle_scopes.add(scope)
            try:
                if not self._stopping:
                    await wait()
            finally:
                self._idle_scopes.discard(scope)

    def _unreachable(self, exc: ConnectionLost) -> None:
        if not self._cut_off:
            self._cut_off = True
            logger.warning(
                "worker %r cannot reach its board, trying again every %g s: %s",
                self.name,
                UNREACHABLE_PAUSE,
                exc,
            )

    def _reached(self) -> None:
        if self._cut_off:
            self._cut_off = False
            logger.warning("worker %r reaches its board again", self.name)

    async def _run_observed(self, claim: Claim) -> None:
        run = _observe.JobRun(self, claim)
        try:
            with _observe.job_run(run):
                try:
                    await self._run(claim, run)
                finally:
                    run.outcome = _OUTCOMES.get(claim.state, "unfinished")
        finally:
            _observe.busy(self)

    async def _run(self, claim: Claim, run: _observe.JobRun | None = None) -> None:
        job = claim.job
        last = self.max_attempts is not None and claim.attempt >= self.max_attempts
        handler_failed = False
        self._busy += 1
        if run is not None:
            _observe.busy(self)
        try:
            if self.max_attempts is not None and claim.attempt > self.max_attempts:
                await self._trash_poison(claim)
                return
            async with claim.guard(
                lambda exc: (
                    Finish.TRASH
                    if last or isinstance(exc, TrashJob)
                    else Finish.ABANDON
                )
            ):
                try:
                    await self.handler(job, claim)
                except Exception as exc:
                    handler_failed = True
                    if run is not None:
                        run.error = exc
                    raise
            self.consumed += 1
            if self.destroy_books:
                await self._destroy_book(job)
        except ClaimLost as exc:
            if claim.cancel_reason is not None:
                self.cancelled += 1
                logger.warning(
                    "job %s (%r) cancelled while %r ran it: %s",
                    job.uuid,
                    job.name,
                    self.name,
                    claim.cancel_reason,
                )
            else:
                self.lost += 1
                logger.warning("worker %r: %s; its work is void", self.name, exc)
        except TrashJob as exc:
            self.failed += 1
            self.trashed += 1
            logger.error(
                "worker %r: job %s (%r) trashed by its handler: %s",
                self.name,
                job.uuid,
                job.name,
                exc,
            )
        except Exception as exc:
            if handler_failed:
                self._count_failure(claim, last)
            else:
                logger.warning(
                    "worker %r: could not finish job %s: %s", self.name, job.uuid, exc
                )
        finally:
            self._busy -= 1

    def _count_failure(self, claim: Claim, last: bool) -> None:
        job = claim.job
        self.failed += 1
        if last:
            self.trashed += 1
            logger.error(
                "worker %r: job %s (%r) failed on its last attempt, %d; trashed",
                self.name,
                job.uuid,
                job.name,
                claim.attempt,
                exc_info=True,
            )
        else:
            logger.warning(
                "worker %r: job %s (%r) failed on attempt %d; abandoned for retry",
                self.name,
                job.uuid,
                job.name,
                claim.attempt,
                exc_info=True,
            )

    async def _destroy_book(self, job: Job) -> None:
        if job.book_uuid is None or self.board.books is None:
            return
        try:
            await self.board.books.destroy_logbook(job.book_uuid)
        except NotFound:
            pass  # destroyed already, for instance by a job sharing the book
        except Exception as exc:
            logger.warning(
                "worker %r: job %s was consumed but its logbook %s could not "
                "be destroyed: %s",
                self.name,
                job.uuid,
                job.book_uuid,
                exc,
            )
        else:
            logger.debug(
                "worker %r destroyed logbook %s of job %s",
                self.name,
                job.book_uuid,
                job.uuid,
            )

    async def _trash_poison(self, claim: Claim) -> None:
        job = claim.job
        logger.error(
            "worker %r: job %s (%r) was claimed %d times, over max_attempts=%d, "
            "without finishing (its holders died?); trashed unrun",
            self.name,
            job.uuid,
            job.name,
            claim.attempt,
            self.max_attempts,
        )
        await claim.trash()
        self.trashed += 1


_OUTCOMES = {
    ClaimState.CONSUMED: "consumed",
    ClaimState.ABANDONED: "abandoned",
    ClaimState.TRASHED: "trashed",
    ClaimState.LOST: "lost",
}


def _check_count(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, not {value}")
