"""The work that both web examples embed: a Worker that 'resizes' images.

fastapi_app.py and aiohttp_app.py differ only in how their framework starts
and stops this object and serves its answers.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import aiojobboard as ajb


class Resizer:
    """The app's state: the board, its Worker, and the results of finished jobs.

    A real app keeps results in its own database; a dict is enough to show the
    flow.
    """

    def __init__(self, board: ajb.JobBoard, concurrency: int, grace: float) -> None:
        self.board = board
        self.results: dict[str, dict[str, Any]] = {}
        name = f"resizer-{socket.gethostname()}-{os.getpid()}"
        self.worker = ajb.Worker(
            board, self.resize, name=name, concurrency=concurrency, grace=grace
        )
        self._running: asyncio.Task[None] | None = None

    async def resize(self, job: ajb.Job, claim: ajb.Claim) -> None:
        """The handler: 'resize' the image, then record where the result went."""
        await asyncio.sleep(job.details["work_seconds"])
        image, width, height = (job.details[k] for k in ("image", "width", "height"))
        self.results[job.uuid] = {
            "name": job.name,
            "thumbnail": f"{image}@{width}x{height}",
            "attempt": claim.attempt,
            "by": claim.owner,
        }

    def start(self) -> None:
        self._running = asyncio.create_task(self.worker.run(), name="resizer")

    async def stop(self) -> None:
        """Stop claiming and drain running jobs (within the grace), then wait."""
        await self.worker.stop()
        if self._running is not None:
            await self._running

    async def describe(self, uuid: str) -> dict[str, Any] | None:
        """What ``GET /jobs/{uuid}`` answers, or ``None`` for an unknown job."""
        try:
            job = await self.board.get_job(uuid)
            status = await self.board.status(job)
        except ajb.NotFound:
            # Gone from the board: done here, or by someone we cannot ask.
            result = self.results.get(uuid)
            if result is None:
                return None
            return {
                "uuid": uuid,
                "name": result["name"],
                "state": ajb.JobState.COMPLETE.name,
                "owner": None,
                "attempt": result["attempt"],
                "result": result,
            }
        return {
            "uuid": uuid,
            "name": job.name,
            "state": status.state.name,
            "owner": status.owner,
            "attempt": status.attempt,
            "result": self.results.get(uuid),
        }
