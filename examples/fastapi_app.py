"""A FastAPI app that posts jobs and consumes them with an embedded Worker.

The app's lifespan opens the board and starts a Worker beside the web server;
at shutdown it stops the Worker, which lets running jobs finish within its
grace period, and only then closes the board. Run it with::

    AIOJOBBOARD_URL=redis://127.0.0.1:6379/0?namespace=images \\
        uvicorn fastapi_app:app

and try ``curl -d '{"image": "cat.png", "width": 64, "height": 64}'
-H 'content-type: application/json' localhost:8000/jobs``, then
``curl localhost:8000/jobs/UUID``. Without ``AIOJOBBOARD_URL`` the board is
``memory://``, which lives in the process: fine to try, gone on restart.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from resizer import Resizer

import aiojobboard as ajb

#: A uuid as aiojobboard writes them, so that a malformed one is a 422.
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class ResizeRequest(BaseModel):
    """What ``POST /jobs`` takes: an image to scale, and how long the work takes."""

    image: str = Field(min_length=1, max_length=1000)
    width: int = Field(gt=0, le=10_000)
    height: int = Field(gt=0, le=10_000)
    #: Stands in for the real work's duration.
    work_seconds: float = Field(default=0.05, ge=0, le=60)
    priority: Literal["VERY_HIGH", "HIGH", "NORMAL", "LOW", "VERY_LOW"] = "NORMAL"


def create_app(
    board_url: str | None = None, *, concurrency: int = 4, grace: float = 10.0
) -> FastAPI:
    """Build the app; *board_url* defaults to ``$AIOJOBBOARD_URL`` or memory://."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = board_url or os.environ.get("AIOJOBBOARD_URL", "memory://")
        async with ajb.connect(url) as board:
            resizer = Resizer(board, concurrency, grace)
            app.state.resizer = resizer
            resizer.start()
            try:
                yield
            finally:
                await resizer.stop()

    app = FastAPI(title="resizer", lifespan=lifespan)

    def resizer_of(request: Request) -> Resizer:
        resizer: Resizer = request.app.state.resizer
        return resizer

    @app.exception_handler(ajb.InvalidJob)
    async def invalid_job(request: Request, exc: ajb.InvalidJob) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.post("/jobs", status_code=201)
    async def post_job(body: ResizeRequest, request: Request) -> dict[str, str]:
        resizer = resizer_of(request)
        job = await resizer.board.post(
            "resize", body.model_dump(exclude={"priority"}), priority=body.priority
        )
        return {"uuid": job.uuid}

    @app.get("/jobs/{uuid}")
    async def get_job(
        uuid: Annotated[str, Path(pattern=UUID_PATTERN)], request: Request
    ) -> dict[str, Any]:
        described = await resizer_of(request).describe(uuid)
        if described is None:
            raise HTTPException(404, f"no job {uuid} on the board or done here")
        return described

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        resizer = resizer_of(request)
        worker = resizer.worker
        report: dict[str, Any] = {
            "board": resizer.board.url,
            "worker": {"busy": worker.busy, "consumed": worker.consumed},
        }
        try:
            report["jobs"] = await resizer.board.job_count()
        except ajb.JobBoardError as exc:
            report.update(status="unavailable", error=str(exc))
            return JSONResponse(report, status_code=503)
        report["status"] = "ok"
        return JSONResponse(report)

    return app


app = create_app()
