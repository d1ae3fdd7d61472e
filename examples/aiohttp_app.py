"""An aiohttp app that posts jobs and consumes them with an embedded Worker.

A cleanup context opens the board and starts a Worker beside the web server;
at shutdown it stops the Worker, which lets running jobs finish within its
grace period, and only then closes the board. Run it with::

    AIOJOBBOARD_URL=redis://127.0.0.1:6379/0?namespace=images \\
        python aiohttp_app.py --port 8080

Without ``AIOJOBBOARD_URL`` the board is ``memory://``, which lives in the
process. The routes are those of fastapi_app.py: ``POST /jobs``,
``GET /jobs/{uuid}`` and ``GET /health``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from resizer import Resizer

import aiojobboard as ajb

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PRIORITIES = {priority.name for priority in ajb.JobPriority}


class BadRequest(ValueError):
    """Raised when a posted body is not a resize request; the message says why."""


def resize_request(body: object) -> tuple[dict[str, Any], str]:
    """Check a ``POST /jobs`` body; return the job's details and priority."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - {"image", "width", "height", "work_seconds", "priority"}
    if unknown:
        raise BadRequest(f"unknown fields: {sorted(unknown)}")
    image = body.get("image")
    if not isinstance(image, str) or not 0 < len(image) <= 1000:
        raise BadRequest(f"image must be a non-empty string, not {image!r}")
    details: dict[str, Any] = {"image": image}
    for side in ("width", "height"):
        value = body.get(side)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{side} must be an integer, not {value!r}")
        if not 0 < value <= 10_000:
            raise BadRequest(f"{side} must be from 1 to 10000, not {value}")
        details[side] = value
    seconds = body.get("work_seconds", 0.05)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise BadRequest(f"work_seconds must be a number, not {seconds!r}")
    if not math.isfinite(seconds) or not 0 <= seconds <= 60:
        raise BadRequest(f"work_seconds must be from 0 to 60, not {seconds}")
    details["work_seconds"] = float(seconds)
    priority = body.get("priority", "NORMAL")
    if priority not in PRIORITIES:
        raise BadRequest(
            f"priority must be one of {sorted(PRIORITIES)}, not {priority!r}"
        )
    return details, priority


RESIZER = web.AppKey("resizer", Resizer)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"detail": message}, status=status)


async def post_job(request: web.Request) -> web.Response:
    resizer = request.app[RESIZER]
    try:
        body = await request.json()
    except ValueError as exc:
        return error(400, f"the body is not JSON: {exc}")
    try:
        details, priority = resize_request(body)
        job = await resizer.board.post("resize", details, priority=priority)
    except (BadRequest, ajb.InvalidJob) as exc:
        return error(400, str(exc))
    return web.json_response({"uuid": job.uuid}, status=201)


async def get_job(request: web.Request) -> web.Response:
    uuid = request.match_info["uuid"]
    if not UUID.fullmatch(uuid):
        return error(400, f"{uuid!r} is not a job uuid")
    described = await request.app[RESIZER].describe(uuid)
    if described is None:
        return error(404, f"no job {uuid} on the board or done here")
    return web.json_response(described)


async def health(request: web.Request) -> web.Response:
    resizer = request.app[RESIZER]
    worker = resizer.worker
    report: dict[str, Any] = {
        "board": resizer.board.url,
        "worker": {"busy": worker.busy, "consumed": worker.consumed},
    }
    try:
        report["jobs"] = await resizer.board.job_count()
    except ajb.JobBoardError as exc:
        report.update(status="unavailable", error=str(exc))
        return web.json_response(report, status=503)
    report["status"] = "ok"
    return web.json_response(report)


def create_app(
    board_url: str | None = None, *, concurrency: int = 4, grace: float = 10.0
) -> web.Application:
    """Build the app; *board_url* defaults to ``$AIOJOBBOARD_URL`` or memory://."""

    async def resizer_context(app: web.Application) -> AsyncIterator[None]:
        url = board_url or os.environ.get("AIOJOBBOARD_URL", "memory://")
        async with ajb.connect(url) as board:
            resizer = Resizer(board, concurrency, grace)
            app[RESIZER] = resizer
            resizer.start()
            try:
                yield
            finally:
                await resizer.stop()

    app = web.Application()
    app.cleanup_ctx.append(resizer_context)
    app.add_routes(
        [
            web.post("/jobs", post_job),
            web.get("/jobs/{uuid}", get_job),
            web.get("/health", health),
        ]
    )
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    arguments = parser.parse_args()
    web.run_app(create_app(), host=arguments.host, port=arguments.port)
