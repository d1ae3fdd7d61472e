"""What only the PostgreSQL book store can show: its URL, schema, server.

The store runs against ``AIOJOBBOARD_TEST_POSTGRES`` (default: the machine's
server on 127.0.0.1:5432, database ``test``, started by
``scripts/services/postgres`` when nothing answers there). Each test works in a
schema of its own, dropped afterwards. Tests that stop and start a server run
one of their own, on a free port, with its data in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiojobboard as ajb
from aiojobboard.book import AtomDetail, BookStore, FlowDetail, LogBook, connect
from aiojobboard.book.postgres import SCHEMA_VERSION, SchemaMismatch
from aiojobboard.errors import ConnectionLost, NotFound

from .tls_helpers import make_certificates

#: The server the tests use; empty to leave PostgreSQL out of the book suites.
POSTGRES_URL = os.environ.get(
    "AIOJOBBOARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
ROOT = Path(__file__).resolve().parent.parent
_started: list[bool] = []


def ensure_postgres() -> None:
    """Start the machine's server through the project's script, once, if down."""
    if _started:
        return

    parts = urlsplit(POSTGRES_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 5432), 2).close()
    except OSError:
        subprocess.run([ROOT / "scripts" / "services" / "postgres"], check=True)

    _started.append(True)


def plain_dsn(url: str) -> str:
    """*url* without the store's own query options, for asyncpg itself."""
    return urlunsplit(urlsplit(url)._replace(query=""))


def in_schema(url: str, schema: str, **options: object) -> str:
    """*url* with the store's tables in *schema*, plus *options*."""
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **options}.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def drop_schema(url: str, schema: str) -> None:
    """Remove *schema* and everything in it."""
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def isolated_store(url: str) -> AsyncIterator[BookStore]:
    """Yield an upgraded store in a fresh schema of *url*'s database; drop it."""
    ensure_postgres()
    schema = f"t_{uuid4().hex[:16]}"
    try:
        async with connect(in_schema(url, schema)) as opened:
            await opened.upgrade()
            yield opened
    finally:
        await drop_schema(url, schema)


needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="AIOJOBBOARD_TEST_POSTGRES is empty"
)
pytestmark = needs_postgres


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema name no other test uses, dropped at teardown."""
    ensure_postgres()
    name = f"t_{uuid4().hex[:16]}"
    yield name
    await drop_schema(POSTGRES_URL, name)


@pytest.fixture
async def store() -> AsyncIterator[BookStore]:
    async for opened in isolated_store(POSTGRES_URL):
        yield opened


def make_book(flows: int = 2, atoms: int = 2) -> LogBook:
    book = LogBook("orders", meta={"owner": "ops"})
    for i in range(flows):
        flow = FlowDetail(f"flow-{i}", state="RUNNING")
        for j in range(atoms):
            flow.add(AtomDetail(f"atom-{i}-{j}", results={"n": [i, j]}))

        book.add(flow)

    return book


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the URL --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("colour=blue", "unknown option 'colour'"),
        ("schema=1bad", "option 'schema' must be a plain SQL identifier"),
        ('schema=a"b', "option 'schema' must be a plain SQL identifier"),
        ("sslmode=maybe", "option 'sslmode' must be one of"),
        ("max_size=0", "option 'max_size' must be above zero"),
        ("min_size=-1", "option 'min_size' must be an integer|above zero"),
        ("min_size=5&max_size=2", "min_size 5 is above max_size 2"),
        ("connect_timeout=soon", "option 'connect_timeout' must be a number"),
        ("command_timeout=0", "option 'command_timeout' must be above zero"),
    ],
)
async def test_bad_options_are_named(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await connect(f"postgresql://u:secret@127.0.0.1:1/db?{query}")


async def test_the_password_never_shows(schema: str) -> None:
    port = free_port()
    url = f"postgresql://someone:hunter2@127.0.0.1:{port}/db?connect_timeout=0.3"
    with pytest.raises(ConnectionLost) as caught:
        await connect(url)

    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)

    parts = urlsplit(POSTGRES_URL)
    with_password = POSTGRES_URL.replace(
        f"{parts.username}@", f"{parts.username}:hunter2@"
    )
    async with connect(in_schema(with_password, schema)) as opened:
        assert "hunter2" not in repr(opened)
        assert "hunter2" not in opened.url  # type: ignore[attr-defined]


async def test_both_schemes_open_the_store(schema: str) -> None:
    other = POSTGRES_URL.replace("postgresql://", "postgres://", 1)
    async with connect(in_schema(other, schema, statement_cache_size=0)) as opened:
        await opened.upgrade()
        saved = await opened.save_logbook(make_book())
        assert await opened.get_logbook(saved.uuid) == saved


# -- the schema ---------------------------------------------------------------
async def test_using_the_store_before_upgrade_names_the_cure(schema: str) -> None:
    async with connect(in_schema(POSTGRES_URL, schema)) as opened:
        with pytest.raises(SchemaMismatch, match=r"call upgrade\(\)"):
            await opened.get_logbook(str(uuid4()))


async def test_concurrent_upgrades_apply_each_migration_once(schema: str) -> None:
    url = in_schema(POSTGRES_URL, schema)
    stores = [await connect(url) for _ in range(8)]
    try:
        await asyncio.gather(*(store.upgrade() for store in stores))
        await asyncio.gather(*(store.upgrade() for store in stores))
        saved = await stores[0].save_logbook(make_book())
        assert await stores[7].get_logbook(saved.uuid) == saved
    finally:
        for store in stores:
            await store.close()

    conn = await asyncpg.connect(plain_dsn(POSTGRES_URL))
    try:
        versions = await conn.fetch(
            f'SELECT version FROM "{schema}".ajb_schema_version ORDER BY version'
        )
    finally:
        await conn.close()

    assert [row["version"] for row in versions] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_newer_schema_is_refused_up_front(schema: str) -> None:
    url = in_schema(POSTGRES_URL, schema)
    async with connect(url) as opened:
        await opened.upgrade()

    conn = await asyncpg.connect(plain_dsn(POSTGRES_URL))
    try:
        await conn.execute(
            f'INSERT INTO "{schema}".ajb_schema_version (version) VALUES ($1)',
            SCHEMA_VERSION + 1,
        )
    finally:
        await conn.close()

    newer = f"version {SCHEMA_VERSION + 1}, newer than version {SCHEMA_VERSION}"
    with pytest.raises(SchemaMismatch, match=newer):
        await connect(url)


async def test_children_are_indexed_by_parent(store: BookStore) -> None:
    saved = await store.save_logbook(make_book(flows=12, atoms=9))
    conn = await asyncpg.connect(plain_dsn(POSTGRES_URL))
    try:
        indexes = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 "
            "AND indexname IN ('ajb_flowdetails_logbook', 'ajb_atomdetails_flow')",
            store.schema,  # type: ignore[attr-defined]
        )
    finally:
        await conn.close()

    assert indexes == 2
    loaded = await store.get_logbook(saved.uuid)
    assert [len(flow) for flow in loaded] == [9] * 12


async def test_no_flow_or_atom_outlives_its_book(store: BookStore) -> None:
    await store.save_logbook(make_book(flows=2, atoms=3))
    doomed = await store.save_logbook(make_book(flows=3, atoms=4))
    first = next(iter(doomed))
    first.add(AtomDetail("added later"))
    await store.update_flow_details(first)
    await store.destroy_logbook(doomed.uuid)

    schema = store.schema  # type: ignore[attr-defined]
    count = (
        f'SELECT (SELECT count(*) FROM "{schema}".ajb_flowdetails), '
        f'(SELECT count(*) FROM "{schema}".ajb_atomdetails)'
    )
    conn = await asyncpg.connect(plain_dsn(POSTGRES_URL))
    try:
        assert tuple(await conn.fetchrow(count)) == (2, 6)
        await store.clear_all()
        assert tuple(await conn.fetchrow(count)) == (0, 0)
    finally:
        await conn.close()


# -- bad input ----------------------------------------------------------------
@pytest.mark.parametrize("where", ["book name", "flow state", "atom results"])
async def test_nul_characters_are_refused_before_any_write(
    store: BookStore, where: str
) -> None:
    saved = await store.save_logbook(make_book())
    change = await store.get_logbook(saved.uuid)
    change.add(FlowDetail("extra"))
    flow = next(iter(change))
    atom = next(iter(flow))
    if where == "book name":
        change.name = "bad\x00name"
    elif where == "flow state":
        flow.state = "RUN\x00NING"
    else:
        atom.results = {"text": "a\x00b"}

    with pytest.raises(ValueError, match="NUL character"):
        await store.save_logbook(change)

    assert await store.get_logbook(saved.uuid) == saved


async def test_a_failed_save_rolls_back_every_level(store: BookStore) -> None:
    first = await store.save_logbook(make_book())
    second = await store.save_logbook(make_book())
    change = await store.get_logbook(second.uuid)
    change.name = "renamed"
    next(iter(change)).add(AtomDetail("new"))
    stolen = next(iter(first))
    taken = FlowDetail("thief", uuid=stolen.uuid)
    taken.add(AtomDetail("new too"))
    change.add(taken)

    with pytest.raises(ValueError, match="already belongs to logbook 'orders'"):
        await store.save_logbook(change)

    assert await store.get_logbook(second.uuid) == second
    assert await store.get_logbook(first.uuid) == first


async def test_json_values_keep_their_types(store: BookStore) -> None:
    book = LogBook("types")
    flow = FlowDetail("flow", meta={"nested": {"list": [1, 2.5, "x", None, False]}})
    values: list[Any] = [None, 0, -1, 2**70, 0.1, 1.5e-7, "", "é\u2603", [], {}, True]
    for value in values:
        flow.add(AtomDetail(repr(value), results=value))

    book.add(flow)
    saved = await store.save_logbook(book)
    loaded = await store.get_logbook(saved.uuid)
    got = [atom.results for atom in next(iter(loaded))]
    want = [atom.results for atom in flow]
    assert got == want
    assert [type(value) for value in got] == [type(value) for value in want]


async def test_lone_surrogates_are_refused_and_nothing_is_written(
    store: BookStore,
) -> None:
    saved = await store.save_logbook(make_book())
    change = await store.get_logbook(saved.uuid)
    change.meta = {"text": "\ud800"}
    change.add(FlowDetail("extra"))
    with pytest.raises(ValueError, match="cannot be sent to PostgreSQL"):
        await store.save_logbook(change)

    assert await store.get_logbook(saved.uuid) == saved


async def test_a_nul_in_an_atom_update_is_refused(store: BookStore) -> None:
    saved = await store.save_logbook(make_book())
    atom = copy.deepcopy(next(iter(next(iter(saved)))))
    atom.meta = {"k\x00": 1}
    with pytest.raises(ValueError, match=r"atom 'atom-0-0' .* meta holds a NUL"):
        await store.update_atom_details(atom)

    assert await store.get_logbook(saved.uuid) == saved


# -- concurrent atom updates ---------------------------------------------------
async def test_concurrent_atom_updates_all_land(store: BookStore) -> None:
    books = [await store.save_logbook(make_book(flows=4, atoms=4)) for _ in range(3)]
    atoms = [atom for book in books for flow in book for atom in flow]
    for n, atom in enumerate(atoms):
        atom.state = "SUCCESS"
        atom.results = {"n": n}

    updated = await asyncio.gather(*(store.update_atom_details(a) for a in atoms))
    assert updated == atoms
    for book in books:
        loaded = await store.get_logbook(book.uuid)
        assert [atom for flow in loaded for atom in flow] == [
            atom for flow in book for atom in flow
        ]


async def test_concurrent_updates_of_one_atom_keep_the_last(store: BookStore) -> None:
    saved = await store.save_logbook(make_book())
    flow = next(iter(saved))
    atom = next(iter(flow))
    versions = []
    for n in range(20):
        version = copy.deepcopy(atom)
        version.results = n
        versions.append(version)

    await asyncio.gather(*(store.update_atom_details(v) for v in versions))
    atoms = await store.get_atoms_for_flow(flow.uuid)
    assert atoms[0].results == 19


async def test_a_missing_atom_in_a_batch_fails_alone(store: BookStore) -> None:
    saved = await store.save_logbook(make_book())
    atoms = [atom for flow in saved for atom in flow]
    ghosts = [AtomDetail(f"ghost-{n}") for n in range(3)]
    results = await asyncio.gather(
        *(store.update_atom_details(a) for a in [*atoms, *ghosts]),
        return_exceptions=True,
    )
    assert results[: len(atoms)] == atoms
    assert all(isinstance(found, NotFound) for found in results[len(atoms) :])


async def test_closing_sends_the_updates_already_made(schema: str) -> None:
    url = in_schema(POSTGRES_URL, schema)
    async with connect(url) as opened:
        await opened.upgrade()
        saved = await opened.save_logbook(make_book(flows=3, atoms=5))

    atoms = [atom for flow in saved for atom in flow]
    opened = await connect(url)
    for atom in atoms:
        atom.state = "REVERTED"

    pending = [asyncio.create_task(opened.update_atom_details(a)) for a in atoms]
    await asyncio.sleep(0)
    await opened.close()
    assert await asyncio.gather(*pending) == atoms
    async with connect(url) as again:
        loaded = await again.get_logbook(saved.uuid)
        assert {atom.state for flow in loaded for atom in flow} == {"REVERTED"}


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    # JSONB keeps numbers as decimals, so a float it prints without a point
    # (1e+20 comes back as 100000000000000000000) reads back as an int.
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
    | st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]))
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), inner)
    ),
    max_leaves=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=JSON_VALUES)
async def test_json_reads_back_as_the_memory_store_gives_it(
    store: BookStore, value: Any
) -> None:
    book = LogBook("any")
    flow = FlowDetail("flow", meta={"value": value})
    flow.add(AtomDetail("atom", results=value, meta={"v": [value]}))
    book.add(flow)
    async with connect(f"memory://json-{uuid4().hex}") as memory:
        expected = await memory.save_logbook(book)

    saved = await store.save_logbook(book)
    loaded = await store.get_logbook(book.uuid)
    got = next(iter(next(iter(loaded))))
    want = next(iter(next(iter(expected))))
    assert typed(got.results) == typed(want.results)
    assert typed(got.meta) == typed(want.meta)
    assert typed(next(iter(loaded)).meta) == typed(next(iter(saved)).meta)


def typed(value: Any) -> Any:
    """*value* with every scalar's type beside it, since ``1 == 1.0 == True``.

    Object keys are sorted: JSONB keeps its own key order (shorter keys
    first), which dict equality ignores too.
    """
    if isinstance(value, dict):
        return ("dict", sorted((key, typed(item)) for key, item in value.items()))

    if isinstance(value, list):
        return ("list", [typed(item) for item in value])

    return (type(value).__name__, value)


# -- the connection -----------------------------------------------------------
async def test_connection_lost_after_the_configured_time() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/db?connect_timeout=1"
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="within 1 s") as caught:
        await connect(url)

    assert time.monotonic() - started >= 0.9
    assert isinstance(caught.value.__cause__, OSError)


class PrivateServer:
    """A PostgreSQL server of this test's own, on a free port.

    With *password*, it stores passwords as SCRAM-SHA-256 and lets in nobody
    but the ``postgres`` user with that password; with *certs* too (a folder
    holding ``server.pem`` and ``server.key``), over TLS only.
    """

    def __init__(self, password: str | None = None, certs: Path | None = None) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            pytest.fail("no PostgreSQL binaries: run scripts/services/postgres")

        self.bin = found[-1].parent
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix="ajb-pg-"))
        # The server refuses to run as root.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if self.prefix:
            shutil.chown(self.data, "postgres")

        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if password is None:
            self.run(
                "initdb", "-D", str(self.data / "db"), "-U", "postgres", "-A", "trust"
            )
        else:
            self._init_secure(password, certs)

    def _init_secure(self, password: str, certs: Path | None) -> None:
        db = self.data / "db"
        pwfile = self.data / "pwfile"
        pwfile.write_text(password + "\n")
        self._own(pwfile)
        try:
            self.run(
                *("initdb", "-D", str(db), "-U", "postgres"),
                *("-A", "scram-sha-256", "--pwfile", str(pwfile)),
            )
        finally:
            pwfile.unlink()
        settings = ["password_encryption = 'scram-sha-256'"]
        if certs is not None:
            for name in ("server.pem", "server.key"):
                shutil.copy(certs / name, db / name)
                (db / name).chmod(0o600)
                self._own(db / name)
            settings += [
                "ssl = on",
                "ssl_cert_file = 'server.pem'",
                "ssl_key_file = 'server.key'",
            ]
        with open(db / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")
        # Nothing but a password (over TLS only, when it serves TLS): no trust.
        kind = "host" if certs is None else "hostssl"
        hba = f"{kind} all all 127.0.0.1/32 scram-sha-256\n"
        (db / "pg_hba.conf").write_text(f"local all all scram-sha-256\n{hba}")

    def _own(self, path: Path) -> None:
        if self.prefix:
            shutil.chown(path, "postgres")

    def run(self, tool: str, *args: str) -> None:
        command = [*self.prefix, str(self.bin / tool), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data}"
        db = str(self.data / "db")
        log = str(self.data / "log")
        self.run(
            "pg_ctl", "-D", db, "-l", log, "-w", "-t", "60", "-o", options, "start"
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data / "db"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        # It may be stopped already.
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()

        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    ensure_postgres()
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.timeout(180)
async def test_the_pool_recovers_after_a_server_restart(
    private_server: PrivateServer,
) -> None:
    url = f"{private_server.url}?connect_timeout=1&min_size=2&max_size=4"
    async with connect(url) as opened:
        await opened.upgrade()
        saved = await opened.save_logbook(make_book())

        await asyncio.to_thread(private_server.stop)
        with pytest.raises(ConnectionLost):
            await opened.get_logbook(saved.uuid)

        await asyncio.to_thread(private_server.start)
        assert await opened.get_logbook(saved.uuid) == saved
        assert len(await opened.save_logbook(make_book(flows=3))) == 3


@pytest.mark.timeout(180)
async def test_a_call_during_a_restart_waits_for_the_server(
    private_server: PrivateServer,
) -> None:
    url = f"{private_server.url}?connect_timeout=60"
    async with connect(url) as opened:
        await opened.upgrade()
        saved = await opened.save_logbook(make_book())
        doomed = await opened.save_logbook(make_book())
        await asyncio.to_thread(private_server.stop)
        pending = asyncio.create_task(opened.get_logbook(saved.uuid))
        destroying = asyncio.create_task(opened.destroy_logbook(doomed.uuid))
        await asyncio.sleep(0.5)
        assert not pending.done()
        assert not destroying.done()

        await asyncio.to_thread(private_server.start)
        assert await pending == saved
        await destroying
        with pytest.raises(NotFound):
            await opened.get_logbook(doomed.uuid)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[PrivateServer, Path]]:
    ensure_postgres()
    certs = tmp_path / "certs"
    make_certificates(certs)
    server = PrivateServer(password="s3cret-pg", certs=certs)
    try:
        server.start()
        yield server, certs
    finally:
        server.remove()


@pytest.mark.timeout(120)
async def test_tls_and_scram_only(
    tls_server: tuple[PrivateServer, Path], tmp_path: Path
) -> None:
    server, certs = tls_server
    base = f"postgresql://postgres:s3cret-pg@127.0.0.1:{server.port}/postgres"
    ca = certs / "ca.pem"
    for query in ["sslmode=require", f"sslmode=verify-full&sslrootcert={ca}"]:
        async with connect(f"{base}?{query}&connect_timeout=5") as opened:
            await opened.upgrade()
            saved = await opened.save_logbook(make_book())
            assert await opened.get_logbook(saved.uuid) == saved
            assert "s3cret-pg" not in repr(opened)

    other = tmp_path / "other"
    make_certificates(other)
    failures = {
        "password authentication failed": base.replace("s3cret-pg", "wrong-pw")
        + "?sslmode=require",
        "no encryption": f"{base}?sslmode=disable",
        "TLS certificate": f"{base}?sslmode=verify-ca&sslrootcert={other / 'ca.pem'}",
    }
    timeout = 20
    for problem, url in failures.items():
        started = time.monotonic()
        with pytest.raises(ajb.JobBoardError, match=problem) as caught:
            await connect(f"{url}&connect_timeout={timeout}")
        # A refusal is told at once, not retried until the timeout as a server
        # away would be.
        assert time.monotonic() - started < timeout / 2
        assert not isinstance(caught.value, ConnectionLost)
        for secret in ("s3cret-pg", "wrong-pw"):
            assert secret not in str(caught.value)
            assert secret not in str(caught.value.__cause__)

    with pytest.raises(ValueError, match="sslrootcert"):
        await connect(f"{base}?sslmode=verify-full&sslrootcert={tmp_path / 'none'}")


# -- jobs and books -----------------------------------------------------------
@pytest.fixture
async def board(store: BookStore) -> AsyncIterator[ajb.JobBoard]:
    async with ajb.connect(f"memory://books-{uuid4().hex}", books=store) as opened:
        yield opened


async def test_a_job_carries_its_book(board: ajb.JobBoard, store: BookStore) -> None:
    book = await store.save_logbook(make_book())
    job = await board.post("convert", {"file": "a.txt"}, book=book)
    assert (job.book_uuid, job.book_name) == (book.uuid, book.name)

    found = [each async for each in board.iterjobs()]
    assert [(each.book_uuid, each.book_name) for each in found] == [
        (book.uuid, "orders")
    ]
    assert await found[0].load_book() == book


async def test_loading_a_missing_book_is_not_found(
    board: ajb.JobBoard, store: BookStore
) -> None:
    bare = await board.post("bare")
    with pytest.raises(NotFound, match="carries no logbook"):
        await bare.load_book()

    unsaved = LogBook("never saved")
    job = await board.post("orphan", book=unsaved)
    with pytest.raises(NotFound, match=unsaved.uuid):
        await job.load_book()


@pytest.mark.parametrize("destroy", [True, False])
async def test_the_worker_may_destroy_a_consumed_jobs_book(
    board: ajb.JobBoard, store: BookStore, destroy: bool
) -> None:
    books = [await store.save_logbook(make_book()) for _ in range(3)]
    jobs = [await board.post("step", book=book) for book in books]
    failing = await store.save_logbook(make_book())
    jobs.append(await board.post("fails", book=failing))
    seen: list[str] = []

    async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
        loaded = await job.load_book()
        seen.append(loaded.uuid)
        if job.name == "fails":
            raise RuntimeError("this job always fails")

    worker = ajb.Worker(
        board, handle, name="w", concurrency=2, max_attempts=1, destroy_books=destroy
    )
    running = asyncio.create_task(worker.run())
    for job in jobs:
        assert await job.wait(timeout=20)

    # stop() returns once the jobs in flight, their books' fate included, are done.
    await worker.stop()
    await running
    assert sorted(seen) == sorted(book.uuid for book in [*books, failing])
    for book in books:
        if destroy:
            with pytest.raises(NotFound):
                await store.get_logbook(book.uuid)
        else:
            assert await store.get_logbook(book.uuid) == book

    # A trashed job's book stays for whoever looks into the failure.
    assert await store.get_logbook(failing.uuid) == failing


async def test_destroy_books_needs_a_book_store() -> None:
    async with ajb.connect(f"memory://bare-{uuid4().hex}") as bare:

        async def handle(job: ajb.Job, claim: ajb.Claim) -> None:
            pass

        with pytest.raises(ValueError, match="destroy_books"):
            ajb.Worker(bare, handle, name="w", destroy_books=True)
