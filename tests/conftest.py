"""Fixtures shared by the suites: boards on every adapter under test.

``AIOJOBBOARD_TEST_BOARDS`` picks the adapters, comma-separated (default:
memory only; the test command selects every adapter whose server it starts).
Each test gets a board of its own, under a fresh name, so tests never see each
other's jobs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

import aiojobboard as ajb

from .zookeeper_helpers import SUITE_SESSION, expire_session, play_dead

REDIS_URL = os.environ.get("AIOJOBBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
ZOOKEEPER_URL = os.environ.get(
    "AIOJOBBOARD_TEST_ZOOKEEPER", "zookeeper://127.0.0.1:2181"
)

#: The lease that the suite's claims ask for, in seconds.
LEASE = 0.5


def stall(seconds: float) -> None:
    """Block the event loop, as a CPU-bound handler would."""
    time.sleep(seconds)


async def stop_hearing(board: ajb.JobBoard) -> None:
    """Make *board* stop renewing leases and hearing events, as a dead process."""
    board._start_keeper = lambda claim: None  # type: ignore[method-assign]
    await board._stop_keeper()
    board._deliver = lambda event: None  # type: ignore[method-assign]


async def stall_past_lease(board: ajb.JobBoard) -> None:
    stall(LEASE * 1.5)


@dataclass(frozen=True)
class Kit:
    """What the suite needs to know about an adapter besides its URL.

    ``lapse`` makes the claims held through a connection lapse now, as a
    stalled event loop or an ended session would; ``kill`` makes a connection
    behave as if its process had died; ``patience`` is how long a dead owner's
    job may take to come back.
    """

    url: Callable[[str], str]
    lapse: Callable[[ajb.JobBoard], Awaitable[None]] = stall_past_lease
    kill: Callable[[ajb.JobBoard], Awaitable[None]] = stop_hearing
    patience: float = LEASE * 8


REDIS_URL = os.environ.get("AIOJOBBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
ZOOKEEPER_URL = os.environ.get(
    "AIOJOBBOARD_TEST_ZOOKEEPER", "zookeeper://127.0.0.1:2181"
)

#: The adapters the suites can run on.
KITS: dict[str, Kit] = {
    "memory": Kit(lambda name: f"memory://{name}"),
    "redis": Kit(lambda name: f"{REDIS_URL}?namespace={name}"),
    # Claims on ZooKeeper end with their session, not a lease: a lapse is a
    # session ended now, and a dead owner's short session times out on the
    # server within the suite's patience.
    "zookeeper": Kit(
        lambda name: f"{ZOOKEEPER_URL}/{name}?session_timeout={SUITE_SESSION:g}",
        lapse=expire_session,
        kill=play_dead,
        patience=max(LEASE * 8, SUITE_SESSION * 3),
    ),
}

SELECTED = [
    kind.strip()
    for kind in os.environ.get("AIOJOBBOARD_TEST_BOARDS", "memory").split(",")
    if kind.strip()
]

OpenBoard = Callable[..., Awaitable[ajb.JobBoard]]


def with_options(url: str, **options: object) -> str:
    """Add query options to *url*."""
    query = "&".join(f"{key}={value}" for key, value in options.items())
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.fixture(params=SELECTED)
def kit(request: pytest.FixtureRequest) -> Kit:
    """The adapter under test."""
    kind: str = request.param
    if kind not in KITS:
        pytest.fail(f"unknown adapter {kind!r} in AIOJOBBOARD_TEST_BOARDS")
    return KITS[kind]


@pytest.fixture
def board_url(kit: Kit) -> str:
    """The URL of a board that no other test uses."""
    return kit.url(f"test-{uuid.uuid4().hex[:12]}")


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
