"""Arbitrary input against the board's checks, on every adapter.

Each call either succeeds, with what it stored reading back the same through
another connection, or raises the error the contract documents for it, with a
message; and after every call the board holds exactly the jobs posted so far.
Memory boards get the most examples; Redis and ZooKeeper fewer, to run their
encodings.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiojobboard as ajb
from aiojobboard import book

from .conftest import KITS
from .redis_helpers import ensure_shared_redis
from .test_book_postgres import POSTGRES_URL, drop_schema, ensure_postgres
from .zookeeper_helpers import answers_ruok

ROOT = Path(__file__).resolve().parent.parent
DEPTH = 100
MANY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# -- what is drawn ------------------------------------------------------------
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(max_size=12) | st.text(
    st.characters() | SURROGATES, min_size=1, max_size=6
)
KEYS = TEXT | st.integers() | st.none() | st.booleans() | st.tuples(st.integers())
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53, max_value=2**80)
    | st.builds(lambda: Huge(10**4400))
    | st.floats()
    | TEXT
    | st.binary(max_size=4)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(TEXT, inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=3)
        | st.tuples(inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.sets(st.text(max_size=3), max_size=3)
    ),
    max_leaves=12,
)


class Huge(int):
    """An int too long for Python to write, shown without writing it."""

    def __repr__(self) -> str:
        return f"Huge(<{self.bit_length()} bits>)"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": [value]}
    return value


DETAILS = (
    st.none()
    | st.dictionaries(TEXT, VALUES, max_size=5)
    | st.integers(DEPTH // 2 - 3, DEPTH // 2 + 3).map(nested)
    | st.integers(490, 2000).map(nested)
    | VALUES
)
PRIORITIES = (
    st.sampled_from(list(ajb.JobPriority))
    | st.integers(-4, 4)
    | st.sampled_from(["high", "LOW", "Very_High", "normal ", "", "NORMAL"])
    | st.booleans()
    | st.floats()
    | st.none()
    | TEXT
)
NAMES = TEXT | st.text(min_size=1, max_size=40) | st.integers() | st.none()
OWNERS = TEXT | st.text(min_size=1, max_size=20) | st.integers() | st.binary()
# A claim with a lease of a few microseconds lapses at once, as it should:
# valid leases here are long enough to outlast the example.
LEASES = (
    st.none()
    | st.floats(max_value=0)
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.integers(-5, 0)
    | st.integers(5, 10**6)
    | st.floats(min_value=5, max_value=1e300)
    | st.booleans()
    | st.text(max_size=3)
)


# -- what the contract says about them ----------------------------------------
def encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def good_name(name: object) -> bool:
    return isinstance(name, str) and bool(name.strip()) and encodable(name)


def good_priority(priority: object) -> bool:
    if isinstance(priority, str):
        return priority.upper() in ajb.JobPriority.__members__
    return type(priority) in (int, ajb.JobPriority) and -2 <= priority <= 2  # type: ignore[operator]


def good_json(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value.bit_length() < sys.get_int_max_str_digits() * 3
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        return depth < DEPTH and all(good_json(each, depth + 1) for each in value)
    if isinstance(value, dict):
        return depth < DEPTH and all(
            isinstance(key, str) and encodable(key) and good_json(each, depth + 1)
            for key, each in value.items()
        )
    return False


def good_details(details: object) -> bool:
    return details is None or (isinstance(details, dict) and good_json(details))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


# -- the boards ----------------------------------------------------------------
@dataclass
class Boards:
    """A board, a second connection to read it back, and what it must hold."""

    writer: ajb.JobBoard
    reader: ajb.JobBoard
    held: dict[str, ajb.Job] = field(default_factory=dict)

    async def check(self) -> None:
        found = {job.uuid: job async for job in self.reader.iterjobs()}
        assert found.keys() == self.held.keys()
        assert await self.writer.job_count() == len(self.held)

    async def read_back(self, job: ajb.Job) -> ajb.Job:
        async for found in self.reader.iterjobs():
            if found.uuid == job.uuid:
                return found
        raise AssertionError(f"job {job.uuid} is not on the board")


def servers_for(kind: str) -> None:
    """Start the local server *kind* needs, unless the environment names one."""
    if kind == "redis" and "AIOJOBBOARD_TEST_REDIS" not in os.environ:
        ensure_shared_redis()
    elif (
        kind == "zookeeper"
        and "AIOJOBBOARD_TEST_ZOOKEEPER" not in os.environ
        and not answers_ruok(2181)
    ):
        script = ROOT / "scripts" / "services" / "zookeeper"
        subprocess.run([str(script)], check=True, timeout=300)


@pytest.fixture(params=["memory", "redis", "zookeeper"])
async def boards(request: pytest.FixtureRequest) -> AsyncIterator[Boards]:
    kind: str = request.param
    servers_for(kind)
    url = KITS[kind].url(f"fuzz-{uuid.uuid4().hex[:12]}")
    async with ajb.connect(url) as writer, ajb.connect(url) as reader:
        yield Boards(writer, reader)


def scaled(boards: Boards, index: int) -> bool:
    """Whether this example runs: every one on memory, one in four elsewhere."""
    return boards.writer.url.startswith("memory") or index % 4 == 0


async def outcome(call: Any, *kinds: type[Exception]) -> tuple[Any, Exception | None]:
    """Await *call*: its result, or the error of one of *kinds* it raised."""
    try:
        return await call, None
    except kinds as exc:
        refused = exc
    assert str(refused), f"{type(refused).__name__} without a message"
    return None, refused


# -- posting ---------------------------------------------------------------------
async def post_one(
    boards: Boards, name: object, details: object, priority: object
) -> None:
    expected = good_name(name) and good_details(details) and good_priority(priority)
    posting = boards.writer.post(name, details, priority)  # type: ignore[arg-type]
    job, refused = await outcome(posting, ajb.InvalidJob)
    assert (refused is None) is expected, refused
    if job is not None:
        boards.held[job.uuid] = job
        again = await boards.read_back(job)
        assert (again.name, again.priority) == (name, job.priority)
        assert same(dict(again.details), details or {})
        assert again.sequence == job.sequence
    await boards.check()


@MANY
@given(
    name=NAMES,
    details=DETAILS,
    priority=PRIORITIES,
    index=st.integers(0, 3),
)
async def test_post(
    boards: Boards, name: object, details: object, priority: object, index: int
) -> None:
    if scaled(boards, index):
        await post_one(boards, name, details, priority)


ITEMS = st.dictionaries(
    st.sampled_from(["name", "details", "priority"]) | TEXT | st.integers(),
    NAMES | DETAILS | PRIORITIES,
    max_size=4,
).map(lambda item: {"name": "job", **item} if len(item) % 2 else item)


@MANY
@given(items=st.lists(ITEMS | NAMES, max_size=5), index=st.integers(0, 3))
async def test_post_many(boards: Boards, items: list[Any], index: int) -> None:
    if not scaled(boards, index):
        return
    expected = all(
        isinstance(item, Mapping)
        and set(item) <= {"name", "details", "priority"}
        and good_name(item.get("name"))
        and good_details(item.get("details"))
        and good_priority(item.get("priority", ajb.JobPriority.NORMAL))
        for item in items
    )
    jobs, refused = await outcome(boards.writer.post_many(items), ajb.InvalidJob)
    assert (refused is None) is expected, refused
    if refused is not None:
        assert "job #" in str(refused)
    else:
        assert [job.name for job in jobs] == [item["name"] for item in items]
        sequences = [job.sequence for job in jobs]
        assert sequences == sorted(set(sequences))
        for job, item in zip(jobs, items, strict=True):
            boards.held[job.uuid] = job
            again = await boards.read_back(job)
            assert same(dict(again.details), item.get("details") or {})
    await boards.check()


# -- claiming and finishing ---------------------------------------------------
def good_owner(who: object) -> bool:
    return isinstance(who, str) and bool(who.strip()) and encodable(who)


def good_lease(lease: object) -> bool:
    if lease is None:
        return True
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        return False
    return math.isfinite(lease) and lease > 0


@MANY
@given(
    owner=OWNERS,
    lease=LEASES,
    other=OWNERS,
    how=st.sampled_from(["consume", "abandon", "trash"]),
    by_name=st.booleans(),
    index=st.integers(0, 3),
)
async def test_claim_and_finish(
    boards: Boards,
    owner: Any,
    lease: Any,
    other: Any,
    how: str,
    by_name: bool,
    index: int,
) -> None:
    if not scaled(boards, index):
        return
    job = await boards.writer.post("work")
    boards.held[job.uuid] = job

    async def claiming() -> ajb.Claim:
        return await boards.writer.claim(job, owner, lease)

    claim, refused = await outcome(claiming(), TypeError, ValueError)
    assert (refused is None) is (good_owner(owner) and good_lease(lease)), refused
    if claim is None:
        assert await boards.reader.find_owner(job) is None
        await claim_quietly(boards, job)
        return
    assert claim.owner == owner
    assert await boards.reader.find_owner(job) == owner
    if other != owner:
        with pytest.raises((ajb.NotOwner, TypeError, ValueError)):
            await getattr(boards.writer, how)(job, other)
    if by_name:
        await getattr(boards.writer, how)(job, owner)
    else:
        await getattr(claim, how)()
    if how == "abandon":
        assert await boards.reader.find_owner(job) is None
        await claim_quietly(boards, job)
    else:
        del boards.held[job.uuid]
        with pytest.raises(ajb.NotFound):
            await boards.reader.find_owner(job)
    await boards.check()


async def claim_quietly(boards: Boards, job: ajb.Job) -> None:
    """The job is still claimable: claim it and consume it."""
    async with boards.reader.claim(job, "cleaner"):
        pass
    del boards.held[job.uuid]
    await boards.check()


# -- URL options ---------------------------------------------------------------
OPTION_NAMES = st.sampled_from(
    [
        "namespace",
        "lease",
        "max_job_size",
        "max_connections",
        "socket_timeout",
        "health_check_interval",
        "reconcile",
        "ssl_ca_certs",
        "schema",
        "min_size",
        "max_size",
        "sslmode",
        "command_timeout",
        "statement_cache_size",
        "session_timeout",
        "timeout",
        "acl",
        "pool_timeout",
        "connect_timeout",
    ]
)
OPTION_VALUES = (
    st.integers(-2, 70).map(str)
    | st.floats(allow_nan=True).map(str)
    | st.sampled_from(
        ["", "x", "true", "1e-300", "0.5", "2", "1e300", "a{b}", "%00", "private"]
    )
    | TEXT
)
QUERIES = st.lists(st.tuples(OPTION_NAMES | TEXT, OPTION_VALUES), max_size=3).map(
    lambda pairs: "&".join(
        f"{quote(name, errors='replace')}={quote(value, errors='replace')}"
        for name, value in pairs
    )
) | TEXT.map(lambda text: text.encode("utf-8", "replace").decode())


def named_in(message: str, url: str) -> bool:
    """Whether *message* names one of the options of *url*."""
    query = urlsplit(url).query
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return any(repr(name) in message for name in names)


async def open_url(opener: Any, url: str) -> None:
    """Open and close; or a ValueError naming an option, or a server away."""

    async def opening() -> None:
        async with asyncio.timeout(20), opener as opened:
            assert not opened.closed

    _, refused = await outcome(opening(), ValueError, ajb.ConnectionLost)
    if isinstance(refused, ValueError):
        assert named_in(str(refused), url), refused
    elif refused is not None:
        # A timeout option so short that no call can finish in it.
        assert "timeout" in urlsplit(url).query, refused


@MANY
@given(query=QUERIES)
async def test_memory_url_options(query: str) -> None:
    base = f"lease=5&max_job_size={10**6}"
    url = f"memory://fuzz-{uuid.uuid4().hex[:8]}?{base}&{query}"
    await open_url(ajb.connect(url), url)
    await open_url(book.connect(f"memory://fuzz?{query}"), f"memory://fuzz?{query}")


@FEW
@given(query=QUERIES)
async def test_redis_url_options(query: str) -> None:
    servers_for("redis")
    base = f"namespace=fuzz-{uuid.uuid4().hex[:8]}&retries=0"
    url = f"{KITS['redis'].url('x').partition('?')[0]}?{base}&{query}"
    await open_url(ajb.connect(url), url)


@FEW
@given(query=QUERIES)
async def test_zookeeper_url_options(query: str) -> None:
    servers_for("zookeeper")
    url = f"{KITS['zookeeper'].url('x').partition('/x')[0]}/fuzz-url?{query}"
    await open_url(ajb.connect(url), url)


@FEW
@given(query=QUERIES)
async def test_postgres_url_options(query: str) -> None:
    if not POSTGRES_URL:
        pytest.skip("AIOJOBBOARD_TEST_POSTGRES is empty")
    ensure_postgres()
    schema = f"f_{uuid.uuid4().hex[:12]}"
    # Sizes kept small: the server is shared.
    base = f"schema={schema}&connect_timeout=2&min_size=1&max_size=2"
    url = f"{POSTGRES_URL}?{base}&{query}"
    try:
        await open_url(book.connect(url), url)
    finally:
        await drop_schema(POSTGRES_URL, schema)
