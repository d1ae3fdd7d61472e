"""The instrumentation seam: what boards and Workers tell registered instruments.

An instrument subclasses :class:`Instrument`, overrides the hooks it wants,
and is registered for the whole process with :func:`instrument`, the way a
tracer or metrics registry is: every board and Worker in the process reports
to it. With nothing registered each call site costs one truthiness check of
:data:`INSTRUMENTS`.

Hooks run synchronously on the event loop, at the state change they report:
they must be quick and must not block. An exception from a hook is logged and
swallowed; it never reaches the board's caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .board import JobBoard
    from .claims import Claim, ClaimState
    from .jobs import Job
    from .worker import Worker

__all__ = [
    "INSTRUMENTS",
    "Instrument",
    "JobRun",
    "board_label",
    "instrument",
    "uninstrument",
]

logger = logging.getLogger("aiojobboard.observe")

#: The registered instruments. Replaced, never changed in place, so that a hook
#: that registers or removes an instrument does not upset the calls under way.
INSTRUMENTS: tuple[Instrument, ...] = ()
_HOOKS = (
    "on_posted",
    "on_claimed",
    "on_finished",
    "on_lost",
    "on_expired",
    "on_cancelled",
    "on_renewed",
    "on_busy",
    "job_run",
)
#: For each hook, the registered instruments that override it: the others are
#: not called at all.
_BY_HOOK: dict[str, tuple[Instrument, ...]] = dict.fromkeys(_HOOKS, ())


@dataclass(slots=True, eq=False)
class JobRun:
    """One run of a Worker's handler on a claimed job, as an instrument sees it.

    ``outcome`` is set when the run ends: ``"consumed"``, ``"abandoned"``,
    ``"trashed"``, ``"lost"`` (the claim was lost under it), or
    ``"unfinished"`` (the board could not be told, or the run was cancelled
    before it could). ``error`` is what the handler raised, if it did.
    """

    worker: Worker
    claim: Claim
    outcome: str | None = None
    error: BaseException | None = None

    @property
    def job(self) -> Job:
        return self.claim.job


class Instrument:
    """Hooks that boards and Workers call; every one does nothing by default.

    Subclass it, override what you need, and pass an instance to
    :func:`aiojobboard.instrument`; a hook that the subclass does not override
    is never called. *board* is the connection that saw the
    change; counts are of what this process did through its connections.
    """

    def on_posted(self, board: JobBoard, count: int) -> None:
        """*count* jobs were posted through *board*."""

    def on_claimed(
        self, board: JobBoard, job: Job, owner: str, latency_s: float
    ) -> None:
        """*owner* claimed *job*; the claim took *latency_s* seconds to grant."""

    def on_finished(
        self, board: JobBoard, job: Job, owner: str, state: ClaimState
    ) -> None:
        """*owner* consumed, abandoned or trashed *job* (*state* says which)."""

    def on_lost(self, board: JobBoard, job: Job, owner: str, reason: str) -> None:
        """A claim on *job* held by *owner* through *board* was lost."""

    def on_expired(self, board: JobBoard, job: Job, owner: str) -> None:
        """The claim on *job* held by *owner* was lost for want of its lease:
        it ran out, the board refused to renew it, or (ZooKeeper) the session
        ended. Called after :meth:`on_lost`, which counts it too."""

    def on_cancelled(self, board: JobBoard, job: Job, reason: str) -> None:
        """*job* was cancelled through *board* (``board.cancel()``)."""

    def on_renewed(self, board: JobBoard, count: int) -> None:
        """*board* renewed the leases of *count* claims."""

    def on_busy(self, worker: Worker, busy: int) -> None:
        """*worker* now runs *busy* jobs at once."""

    def job_run(self, run: JobRun) -> AbstractContextManager[object]:
        """Return a context that encloses a Worker's run of one job.

        The handler runs inside it, so a tracer can make its span current;
        ``run.outcome`` is set by the time the context exits.
        """
        return _NOTHING


class _Nothing:
    """A reusable context that does nothing, cheaper than a fresh generator."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NOTHING = _Nothing()


def instrument(obj: Instrument) -> None:
    """Have every board and Worker in the process report to *obj*.

    Registering the same instrument twice does nothing.
    """
    global INSTRUMENTS
    if not isinstance(obj, Instrument):
        raise TypeError(
            f"an instrument must subclass aiojobboard.Instrument, not "
            f"{type(obj).__name__}"
        )
    if obj not in INSTRUMENTS:
        INSTRUMENTS = (*INSTRUMENTS, obj)
        _sort_hooks()


def uninstrument(obj: Instrument) -> None:
    """Stop reporting to *obj*; an instrument not registered is ignored."""
    global INSTRUMENTS
    INSTRUMENTS = tuple(each for each in INSTRUMENTS if each is not obj)
    _sort_hooks()


def _sort_hooks() -> None:
    global _BY_HOOK
    _BY_HOOK = {
        hook: tuple(
            obj
            for obj in INSTRUMENTS
            if getattr(type(obj), hook) is not getattr(Instrument, hook)
        )
        for hook in _HOOKS
    }


def board_label(board: JobBoard) -> str:
    """Name *board* for a metric label: its namespace, path or memory name.

    ``memory://orders``, ``redis://host/0?namespace=orders`` and
    ``zookeeper://host/orders`` are all ``orders``; a board that names none
    is ``default``. Never the host or credentials.
    """
    parts = urlsplit(board.url)
    namespace = parse_qs(parts.query).get("namespace")
    if namespace:
        return namespace[-1]
    if parts.scheme.startswith("redis"):
        return "default"
    if parts.scheme == "memory":
        return parts.netloc or "default"
    return parts.path.strip("/") or "default"


# -- what the board and the Worker call, once INSTRUMENTS is known non-empty --
#
# One function per hook, each with its own loop: a shared dispatcher that
# looks the hook up by name cost about a microsecond more per job with
# Prometheus registered (benchmarks/instruments.py).


def _failed(obj: Instrument, hook: str) -> None:
    logger.warning("instrument %r failed in %s", obj, hook, exc_info=True)


def posted(board: JobBoard, count: int) -> None:
    for obj in _BY_HOOK["on_posted"]:
        try:
            obj.on_posted(board, count)
        except Exception:
            _failed(obj, "on_posted")


def claimed(board: JobBoard, job: Job, owner: str, latency_s: float) -> None:
    for obj in _BY_HOOK["on_claimed"]:
        try:
            obj.on_claimed(board, job, owner, latency_s)
        except Exception:
            _failed(obj, "on_claimed")


def finished(board: JobBoard, job: Job, owner: str, state: ClaimState) -> None:
    for obj in _BY_HOOK["on_finished"]:
        try:
            obj.on_finished(board, job, owner, state)
        except Exception:
            _failed(obj, "on_finished")


def lost(board: JobBoard, job: Job, owner: str, reason: str) -> None:
    for obj in _BY_HOOK["on_lost"]:
        try:
            obj.on_lost(board, job, owner, reason)
        except Exception:
            _failed(obj, "on_lost")


def expired(board: JobBoard, job: Job, owner: str) -> None:
    for obj in _BY_HOOK["on_expired"]:
        try:
            obj.on_expired(board, job, owner)
        except Exception:
            _failed(obj, "on_expired")


def cancelled(board: JobBoard, job: Job, reason: str) -> None:
    for obj in _BY_HOOK["on_cancelled"]:
        try:
            obj.on_cancelled(board, job, reason)
        except Exception:
            _failed(obj, "on_cancelled")


def renewed(board: JobBoard, count: int) -> None:
    for obj in _BY_HOOK["on_renewed"]:
        try:
            obj.on_renewed(board, count)
        except Exception:
            _failed(obj, "on_renewed")


def busy(worker: Worker) -> None:
    for obj in _BY_HOOK["on_busy"]:
        try:
            obj.on_busy(worker, worker.busy)
        except Exception:
            _failed(obj, "on_busy")


def job_run(run: JobRun) -> AbstractContextManager[object]:
    """Return the instruments' :meth:`Instrument.job_run` contexts as one."""
    hooks = _BY_HOOK["job_run"]
    if not hooks:
        return _NOTHING
    if len(hooks) == 1:
        return _guarded(hooks[0], run)
    return _stacked(hooks, run)


@contextmanager
def _stacked(hooks: tuple[Instrument, ...], run: JobRun) -> Iterator[None]:
    with ExitStack() as stack:
        for obj in hooks:
            stack.enter_context(_guarded(obj, run))
        yield


@contextmanager
def _guarded(obj: Instrument, run: JobRun) -> Iterator[None]:
    """Run *obj*'s context for *run*, keeping its failures away from the run."""
    try:
        context = obj.job_run(run)
        context.__enter__()
    except Exception:
        _failed(obj, "job_run")
        yield
        return
    try:
        yield
    except BaseException as exc:
        try:
            context.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            _failed(obj, "job_run")
        raise
    try:
        context.__exit__(None, None, None)
    except Exception:
        _failed(obj, "job_run")
