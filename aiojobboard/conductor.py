"""The Conductor: a Worker that runs the flows that jobs' logbooks describe.

A producer saves a logbook holding a flow detail (the flow's factory and its
inputs, see :func:`aiojobboard.flows.save_factory_details`) and posts a job
carrying that logbook. A conductor claims the job, builds the flow, and runs
its steps in order, saving each step's state and result in its atom detail as
the step finishes. A conductor that dies leaves those records behind: the next
one to claim the job skips the steps already done and reuses their results.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any, Literal

from .board import JobBoard
from .book.base import BookStore
from .book.models import AtomDetail, FlowDetail, LogBook
from .claims import Claim
from .errors import BoardClosed, ClaimLost, ConnectionLost, NotFound
from .flows import STORE_KEY, FactoryError, Flow, Step, load_flow
from .jobs import Job
from .worker import TrashJob, Worker

__all__ = ["Conductor", "StepFailed", "combined_store"]

logger = logging.getLogger("aiojobboard.conductor")

#: States recorded in atom and flow details.
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVERTED = "REVERTED"
REVERT_FAILURE = "REVERT_FAILURE"

#: Errors that say the storage or the claim failed, not the flow: the job is
#: given back for another conductor, and nothing is reverted.
INFRASTRUCTURE_ERRORS = (BoardClosed, ClaimLost, ConnectionLost)


class StepFailed(Exception):
    """Raised when a step of a flow failed; its earlier steps were reverted."""


class _BadJob(Exception):
    """A job that no run can complete: no logbook, no flow, no factory."""


def combined_store(flow_detail: FlowDetail, job: Job) -> dict[str, Any]:
    """Merge the flow detail's stored inputs with the job's; the job wins."""
    store = dict(_as_mapping(flow_detail.meta.get(STORE_KEY)))
    store.update(_as_mapping(job.details.get(STORE_KEY)))
    return store


class Conductor(Worker):
    """Claim jobs from *board* and run the flows their logbooks in *books* hold.

    The flow detail is the one ``job.details["flow_uuid"]`` names, or the
    logbook's only one. A flow that succeeds has its job consumed. A step that
    fails has the done steps reverted, last first, and the failure recorded in
    the logbook; then, with ``on_failure="trash"``, the job is trashed, and
    with ``"retry"`` it is abandoned for another run, up to *max_attempts*. A
    job whose flow cannot be found or built is trashed with the reason
    recorded. A failure of the board or the book store abandons the job, for
    this or another conductor to resume.

    A step is recorded once it has finished, so a conductor that dies between
    the two runs that step again on resume: steps should be idempotent.
    """

    def __init__(
        self,
        board: JobBoard,
        books: BookStore,
        name: str,
        *,
        concurrency: int = 1,
        max_attempts: int | None = None,
        on_failure: Literal["trash", "retry"] = "trash",
        lease: float | None = None,
        grace: float = 30.0,
    ) -> None:
        if on_failure not in ("trash", "retry"):
            raise ValueError(
                f"on_failure must be 'trash' or 'retry', not {on_failure!r}"
            )
        super().__init__(
            board,
            self._conduct,
            name=name,
            concurrency=concurrency,
            max_attempts=max_attempts,
            lease=lease,
            grace=grace,
        )
        self.books = books
        self.on_failure = on_failure

    def __repr__(self) -> str:
        return "<Conductor" + super().__repr__().removeprefix("<Worker")

    async def _conduct(self, job: Job, claim: Claim) -> None:
        try:
            book, flow_detail = await self._find_flow(job)
        except _BadJob as exc:
            raise TrashJob(str(exc)) from exc
        try:
            flow = load_flow(flow_detail)
        except FactoryError as exc:
            flow_detail.state = FAILURE
            flow_detail.meta["failure"] = _failure(exc)
            await self.books.update_flow_details(flow_detail)
            raise TrashJob(f"logbook {book.uuid}: {exc}") from exc
        run = _FlowRun(self.books, flow, flow_detail, combined_store(flow_detail, job))
        try:
            await run.run()
        except StepFailed as exc:
            if self.on_failure == "trash":
                raise TrashJob(str(exc)) from exc
            raise

    async def _find_flow(self, job: Job) -> tuple[LogBook, FlowDetail]:
        if job.book_uuid is None:
            raise _BadJob(f"job {job.uuid} ({job.name!r}) carries no logbook")
        try:
            book = await self.books.get_logbook(job.book_uuid)
        except NotFound as exc:
            raise _BadJob(f"job {job.uuid}: {exc}") from exc
        wanted = job.details.get("flow_uuid")
        if wanted is not None:
            flow_detail = book.find(wanted)
            if flow_detail is None:
                raise _BadJob(
                    f"job {job.uuid}: logbook {book.uuid} has no flow {wanted!r}"
                )
            return book, flow_detail
        flows = list(book)
        if len(flows) != 1:
            raise _BadJob(
                f"job {job.uuid}: logbook {book.uuid} holds {len(flows)} flows "
                "and the job names none in details['flow_uuid']"
            )
        return book, flows[0]


class _FlowRun:
    """One run of a flow against its flow detail, from where the last one left."""

    def __init__(
        self,
        books: BookStore,
        flow: Flow,
        flow_detail: FlowDetail,
        store: dict[str, Any],
    ) -> None:
        self.books = books
        self.flow = flow
        self.flow_detail = flow_detail
        self.store = store
        self.atoms: dict[str, AtomDetail] = {}

    async def run(self) -> None:
        await self._prepare_atoms()
        done: list[Step] = []
        for step in self.flow.steps:
            atom = self.atoms[step.name]
            if atom.state == SUCCESS:
                self.store.update(step.outputs(atom.results))
            else:
                await self._run_step(step, atom, done)
            done.append(step)
        await self._set_flow_state(SUCCESS)

    async def _prepare_atoms(self) -> None:
        by_name = {atom.name: atom for atom in self.flow_detail}
        for step in self.flow.steps:
            atom = by_name.get(step.name)
            if atom is None:
                atom = AtomDetail(step.name)
                self.flow_detail.add(atom)
            self.atoms[step.name] = atom
        self.flow_detail.state = RUNNING
        self.flow_detail.meta.pop("failure", None)
        await self.books.update_flow_details(self.flow_detail)

    async def _run_step(self, step: Step, atom: AtomDetail, done: list[Step]) -> None:
        try:
            inputs = step.inputs(self.store)
            result = await step.run(**inputs)
            outputs = step.outputs(result)
            atom.state, atom.results, atom.failure = SUCCESS, result, None
            # A result that cannot be saved fails the step, not the conductor.
            await self.books.update_atom_details(atom)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            await self._fail(step, atom, exc, done)
        else:
            self.store.update(outputs)

    async def _fail(
        self, step: Step, atom: AtomDetail, exc: Exception, done: list[Step]
    ) -> None:
        atom.state, atom.results, atom.failure = FAILURE, None, _failure(exc)
        await self.books.update_atom_details(atom)
        for earlier in reversed(done):
            await self._revert(earlier)
        await self._set_flow_state(REVERTED)
        raise StepFailed(
            f"flow {self.flow.name!r}, step {step.name!r} failed: {exc!r}"
        ) from exc

    async def _revert(self, step: Step) -> None:
        atom = self.atoms[step.name]
        if step.revert is not None:
            try:
                await step.revert(**step.inputs(self.store), result=atom.results)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:
                # One revert failing must not keep the earlier steps from
                # being undone; the failure stays on its atom for a human.
                atom.state, atom.failure = REVERT_FAILURE, _failure(exc)
                await self.books.update_atom_details(atom)
                return
        atom.state, atom.results = REVERTED, None
        await self.books.update_atom_details(atom)

    async def _set_flow_state(self, state: str) -> None:
        self.flow_detail.state = state
        await self.books.update_flow_details(self.flow_detail)


def _failure(exc: BaseException) -> dict[str, Any]:
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
