"""Fixtures shared by the suites: boards on every adapter under test.

``AIOJOBBOARD_TEST_BOARDS`` picks the adapters, comma-separated (default:
every adapter whose server the test command provides). Each test gets a board
of its own, under a fresh name, so tests never see each other's jobs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import aiojobboard as ajb

REDIS_URL = os.environ.get("AIOJOBBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
ZOOKEEPER_URL = os.environ.get(
    "AIOJOBBOARD_TEST_ZOOKEEPER", "zookeeper://127.0.0.1:2181"
)

#: How to make the URL of a fresh board, per adapter.
BOARD_URLS: dict[str, Callable[[str], str]] = {
    "memory": lambda name: f"memory://{name}",
    "redis": lambda name: f"{REDIS_URL}?namespace={name}",
    "zookeeper": lambda name: f"{ZOOKEEPER_URL}/{name}",
}

SELECTED = [
    kind.strip()
    for kind in os.environ.get("AIOJOBBOARD_TEST_BOARDS", "memory").split(",")
    if kind.strip()
]

OpenBoard = Callable[..., Awaitable[ajb.JobBoard]]


def stall(seconds: float) -> None:
    """Block the event loop, as a CPU-bound handler would."""
    time.sleep(seconds)


def with_options(url: str, **options: object) -> str:
    """Add query options to *url*."""
    query = "&".join(f"{key}={value}" for key, value in options.items())
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.fixture(params=SELECTED)
def board_url(request: pytest.FixtureRequest) -> str:
    """The URL of a board that no other test uses."""
    kind: str = request.param
    if kind not in BOARD_URLS:
        pytest.fail(f"unknown adapter {kind!r} in AIOJOBBOARD_TEST_BOARDS")
    return BOARD_URLS[kind](f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def open_board(board_url: str) -> AsyncIterator[OpenBoard]:
    """Open more connections to the test's board; all are closed at teardown."""
    opened: list[ajb.JobBoard] = []

    async def open_(**options: object) -> ajb.JobBoard:
        board = await ajb.connect(with_options(board_url, **options))
        opened.append(board)
        return board

    yield open_
    for board in opened:
        await board.close()


@pytest.fixture
async def board(open_board: OpenBoard) -> ajb.JobBoard:
    """A connection to the test's board."""
    return await open_board()
