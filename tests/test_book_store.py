"""The conformance suite every book store must pass.

Each URL in ``BOOK_URLS`` is one store under test. A ``memory://`` URL is
replaced by a store of its own per test; any other store is cleared before
each test, so a server URL can be added here as it is.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest

from aiojobboard.book import AtomDetail, BookStore, FlowDetail, LogBook, connect
from aiojobboard.errors import BoardClosed, NotFound

from .test_book_postgres import POSTGRES_URL, isolated_store

BOOK_URLS = ["memory://", *([POSTGRES_URL] if POSTGRES_URL else [])]


def fresh_url(url: str) -> str:
    if url.startswith("memory://"):
        return f"memory://books-{uuid4().hex}"

    return url


@pytest.fixture(params=BOOK_URLS, ids=lambda url: url.partition(":")[0])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BookStore]:
    if request.param.startswith(("postgresql://", "postgres://")):
        # A schema of its own per test, dropped afterwards.
        async for isolated in isolated_store(request.param):
            yield isolated

        return

    async with connect(fresh_url(request.param)) as opened:
        await opened.upgrade()
        await opened.clear_all()
        yield opened


def make_book(name: str = "orders", flows: int = 3, atoms: int = 3) -> LogBook:
    book = LogBook(
        name,
        meta={"owner": "ops", "tags": ["a", "b"]},
        created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )
    for i in range(flows):
        flow = FlowDetail(f"flow-{i}", state="RUNNING", meta={"index": i})
        for j in range(atoms):
            flow.add(
                AtomDetail(
                    f"atom-{i}-{j}",
                    state="SUCCESS" if j else "PENDING",
                    intention="REVERT" if j == 1 else "EXECUTE",
                    results={"value": [i, j, 1.5, None, True], "text": "é"},
                    failure={"type": "KeyError", "args": ["x"]} if j == 2 else None,
                    meta={"try": j},
                    version=f"{i}.{j}",
                )
            )

        book.add(flow)

    return book


def nth_flow(book: LogBook, index: int) -> FlowDetail:
    return list(book)[index]


def nth_atom(book: LogBook, flow: int, atom: int) -> AtomDetail:
    return list(nth_flow(book, flow))[atom]


async def test_round_trip_keeps_every_field_and_the_order(store: BookStore) -> None:
    book = make_book()
    saved = await store.save_logbook(book)
    loaded = await store.get_logbook(book.uuid)

    assert loaded == saved
    assert [flow.name for flow in loaded] == ["flow-0", "flow-1", "flow-2"]
    assert [atom.name for atom in nth_flow(loaded, 2)] == [
        "atom-2-0",
        "atom-2-1",
        "atom-2-2",
    ]
    book.updated_at = saved.updated_at
    assert loaded == book


async def test_store_sets_updated_at_and_keeps_created_at(store: BookStore) -> None:
    book = make_book()
    book.updated_at = datetime(2000, 1, 1, tzinfo=UTC)
    before = datetime.now(UTC)
    saved = await store.save_logbook(book)

    assert saved.updated_at is not None
    assert before <= saved.updated_at <= datetime.now(UTC)
    assert saved.updated_at.utcoffset() == timedelta(0)
    assert saved.created_at == book.created_at

    later = LogBook(book.name, uuid=book.uuid, created_at=datetime.now(UTC))
    merged = await store.save_logbook(later)
    assert merged.created_at == book.created_at
    assert merged.updated_at is not None
    assert merged.updated_at >= saved.updated_at


async def test_updates_move_the_books_updated_at(store: BookStore) -> None:
    book = make_book()
    await store.save_logbook(book)
    after_save = datetime.now(UTC)
    await store.update_atom_details(nth_atom(book, 0, 0))
    after_atom = (await store.get_logbook(book.uuid)).updated_at
    assert after_atom is not None
    assert after_atom >= after_save

    after_atom_clock = datetime.now(UTC)
    await store.update_flow_details(nth_flow(book, 1))
    after_flow = (await store.get_logbook(book.uuid)).updated_at
    assert after_flow is not None
    assert after_flow >= after_atom_clock


async def test_save_merges_into_the_stored_book(store: BookStore) -> None:
    book = make_book(flows=2, atoms=2)
    await store.save_logbook(book)
    first, second = list(book)
    kept_atom, old_atom = list(first)

    change = LogBook("renamed", uuid=book.uuid, meta={"new": True})
    first_change = FlowDetail("flow-0 again", uuid=first.uuid, state="SUCCESS")
    atom_change = AtomDetail(
        "atom-0-1 again",
        uuid=old_atom.uuid,
        state="FAILURE",
        intention="RETRY",
        failure={"type": "OSError"},
        version="2",
    )
    new_atom = AtomDetail("atom-0-2")
    first_change.add(atom_change)
    first_change.add(new_atom)
    new_flow = FlowDetail("flow-2", meta={"late": True})
    new_flow.add(AtomDetail("atom-2-0"))
    change.add(first_change)
    change.add(new_flow)
    merged = await store.save_logbook(change)

    assert merged == await store.get_logbook(book.uuid)
    assert (merged.name, merged.meta) == ("renamed", {"new": True})
    assert [flow.uuid for flow in merged] == [first.uuid, second.uuid, new_flow.uuid]
    merged_first, merged_second, merged_new = list(merged)
    assert merged_first.name == "flow-0 again"
    assert merged_first.state == "SUCCESS"
    assert merged_first.meta == {}
    assert list(merged_first) == [kept_atom, atom_change, new_atom]
    assert merged_second == second
    assert merged_new == new_flow


async def test_update_flow_details_merges_the_flow_and_its_atoms(
    store: BookStore,
) -> None:
    book = make_book()
    await store.save_logbook(book)
    flow = nth_flow(book, 1)
    atoms = list(flow)

    change = FlowDetail("renamed", uuid=flow.uuid, state="SUCCESS", meta={"done": 1})
    atom_change = AtomDetail("changed", uuid=atoms[0].uuid, results=[1])
    new_atom = AtomDetail("added", meta={"late": True})
    change.add(atom_change)
    change.add(new_atom)
    updated = await store.update_flow_details(change)

    assert (updated.name, updated.state, updated.meta) == (
        "renamed",
        "SUCCESS",
        {"done": 1},
    )
    assert list(updated) == [atom_change, atoms[1], atoms[2], new_atom]
    stored = await store.get_logbook(book.uuid)
    assert nth_flow(stored, 1) == updated
    assert nth_flow(stored, 0) == nth_flow(book, 0)
    assert nth_flow(stored, 2) == nth_flow(book, 2)


async def test_update_atom_details_replaces_every_field(store: BookStore) -> None:
    book = make_book()
    await store.save_logbook(book)
    atom = nth_atom(book, 2, 1)

    change = AtomDetail(
        "renamed",
        uuid=atom.uuid,
        state="FAILURE",
        intention="REVERT",
        results=None,
        failure={"type": "ValueError", "traceback": "..."},
        meta={"attempt": 2},
        version="9",
    )
    updated = await store.update_atom_details(change)

    assert updated == change
    atoms = await store.get_atoms_for_flow(nth_flow(book, 2).uuid)
    assert atoms == [nth_atom(book, 2, 0), change, nth_atom(book, 2, 2)]


async def test_get_flows_for_book_and_atoms_for_flow(store: BookStore) -> None:
    book = make_book()
    await store.save_logbook(book)

    assert await store.get_flows_for_book(book.uuid) == list(book)
    for flow in book:
        assert await store.get_atoms_for_flow(flow.uuid) == list(flow)


MissingCall = Callable[[BookStore], Awaitable[object]]
MISSING_CALLS: dict[str, MissingCall] = {
    "get_logbook": lambda s: s.get_logbook(str(uuid4())),
    "destroy_logbook": lambda s: s.destroy_logbook(str(uuid4())),
    "get_flows_for_book": lambda s: s.get_flows_for_book(str(uuid4())),
    "get_atoms_for_flow": lambda s: s.get_atoms_for_flow(str(uuid4())),
    "update_flow_details": lambda s: s.update_flow_details(FlowDetail("ghost")),
    "update_atom_details": lambda s: s.update_atom_details(AtomDetail("ghost")),
}


@pytest.mark.parametrize("call", MISSING_CALLS.values(), ids=MISSING_CALLS.keys())
async def test_missing_objects_are_not_found(
    store: BookStore, call: MissingCall
) -> None:
    await store.save_logbook(make_book())
    with pytest.raises(NotFound):
        await call(store)


async def test_destroy_removes_the_book_its_flows_and_atoms(store: BookStore) -> None:
    book = make_book()
    other = make_book("other")
    await store.save_logbook(book)
    await store.save_logbook(other)
    await store.destroy_logbook(book.uuid)

    with pytest.raises(NotFound):
        await store.get_logbook(book.uuid)

    with pytest.raises(NotFound):
        await store.get_flows_for_book(book.uuid)

    with pytest.raises(NotFound):
        await store.get_atoms_for_flow(nth_flow(book, 0).uuid)

    with pytest.raises(NotFound):
        await store.update_flow_details(nth_flow(book, 1))

    with pytest.raises(NotFound):
        await store.update_atom_details(nth_atom(book, 2, 2))

    with pytest.raises(NotFound):
        await store.destroy_logbook(book.uuid)

    other.updated_at = (await store.get_logbook(other.uuid)).updated_at
    assert await store.get_logbook(other.uuid) == other
    saved_again = await store.save_logbook(book)
    assert len(saved_again) == 3


async def test_get_logbooks_yields_every_book(store: BookStore) -> None:
    books = [await store.save_logbook(make_book(f"book-{i}")) for i in range(3)]
    found = [book async for book in store.get_logbooks()]
    assert sorted(found, key=lambda book: book.uuid) == sorted(
        books, key=lambda book: book.uuid
    )

    await store.destroy_logbook(books[1].uuid)
    left = {book.uuid async for book in store.get_logbooks()}
    assert left == {books[0].uuid, books[2].uuid}


async def test_clear_all_empties_the_store(store: BookStore) -> None:
    book = make_book()
    await store.save_logbook(book)
    await store.save_logbook(make_book("other"))
    await store.clear_all()

    assert [found async for found in store.get_logbooks()] == []
    with pytest.raises(NotFound):
        await store.get_logbook(book.uuid)

    with pytest.raises(NotFound):
        await store.get_atoms_for_flow(nth_flow(book, 0).uuid)

    assert len(await store.save_logbook(book)) == 3


NOT_JSON = [
    pytest.param({1, 2}, "is of type set", id="set"),
    pytest.param(float("nan"), "is nan", id="nan"),
    pytest.param({1: "one"}, "has key 1 of type int", id="int-key"),
    pytest.param(object(), "is of type object", id="object"),
]
PLACES = ["book meta", "flow meta", "atom meta", "atom results", "atom failure"]


def spoil(book: LogBook, place: str, bad: object) -> str:
    """Put *bad* deep inside the field *place* names; return its error prefix."""
    flow = nth_flow(book, 1)
    targets: dict[str, LogBook | FlowDetail | AtomDetail] = {
        "book": book,
        "flow": flow,
        "atom": list(flow)[2],
    }
    kind, _, field = place.partition(" ")
    target = targets[kind]
    setattr(target, field, {"fine": 1, "bad": [bad]})
    noun = "logbook" if kind == "book" else kind
    return f"{noun} {target.name!r} (uuid {target.uuid}) {field}['bad'][0]"


@pytest.mark.parametrize(("bad", "why"), NOT_JSON)
@pytest.mark.parametrize("place", PLACES)
async def test_save_refuses_values_json_cannot_hold(
    store: BookStore, bad: object, why: str, place: str
) -> None:
    saved = await store.save_logbook(make_book())
    before = await store.get_logbook(saved.uuid)
    change = await store.get_logbook(saved.uuid)
    change.name = "renamed"
    nth_flow(change, 0).add(AtomDetail("extra"))
    change.add(FlowDetail("extra"))
    where = spoil(change, place, bad)

    with pytest.raises(ValueError, match=re.escape(where) + ".*" + re.escape(why)):
        await store.save_logbook(change)

    assert await store.get_logbook(saved.uuid) == before


@pytest.mark.parametrize(("bad", "why"), NOT_JSON)
async def test_updates_refuse_values_json_cannot_hold(
    store: BookStore, bad: object, why: str
) -> None:
    saved = await store.save_logbook(make_book())
    before = await store.get_logbook(saved.uuid)
    flow = nth_flow(await store.get_logbook(saved.uuid), 1)
    flow.state = "SUCCESS"
    atom = list(flow)[2]
    atom.results = {"bad": [bad]}
    where = f"atom {atom.name!r} (uuid {atom.uuid}) results['bad'][0]"
    pattern = re.escape(where) + ".*" + re.escape(why)

    with pytest.raises(ValueError, match=pattern):
        await store.update_flow_details(flow)

    with pytest.raises(ValueError, match=pattern):
        await store.update_atom_details(atom)

    assert await store.get_logbook(saved.uuid) == before


async def test_save_checks_fields_changed_after_construction(store: BookStore) -> None:
    saved = await store.save_logbook(make_book())
    before = await store.get_logbook(saved.uuid)
    change = await store.get_logbook(saved.uuid)
    atom = nth_atom(change, 0, 1)
    atom.name = ""
    with pytest.raises(ValueError, match=f"atom '' \\(uuid {atom.uuid}\\) name"):
        await store.save_logbook(change)

    atom.name = "fine"
    nth_flow(change, 2).uuid = nth_flow(change, 1).uuid
    with pytest.raises(ValueError, match="holds two flows"):
        await store.save_logbook(change)

    assert await store.get_logbook(saved.uuid) == before


async def test_a_flow_of_another_book_is_refused(store: BookStore) -> None:
    first = await store.save_logbook(make_book("first"))
    taken = nth_flow(first, 0)
    second = LogBook("second")
    second.add(FlowDetail("thief", uuid=taken.uuid))

    with pytest.raises(ValueError, match=f"{taken.uuid}.* already belongs to"):
        await store.save_logbook(second)

    with pytest.raises(NotFound):
        await store.get_logbook(second.uuid)

    assert await store.get_logbook(first.uuid) == first


async def test_an_atom_of_another_flow_is_refused(store: BookStore) -> None:
    book = await store.save_logbook(make_book())
    taken = nth_atom(book, 0, 0)
    flow = copy.deepcopy(nth_flow(book, 1))
    flow.add(AtomDetail("thief", uuid=taken.uuid))
    other = LogBook("other")
    other_flow = FlowDetail("other")
    other_flow.add(AtomDetail("thief", uuid=taken.uuid))
    other.add(other_flow)

    with pytest.raises(ValueError, match=f"{taken.uuid}.* already belongs to"):
        await store.update_flow_details(flow)

    with pytest.raises(ValueError, match=f"{taken.uuid}.* already belongs to"):
        await store.save_logbook(other)

    assert await store.get_logbook(book.uuid) == book
    with pytest.raises(NotFound):
        await store.get_logbook(other.uuid)


async def test_callers_objects_are_never_aliased(store: BookStore) -> None:
    book = make_book()
    expected = copy.deepcopy(book)
    saved = await store.save_logbook(book)
    expected.updated_at = saved.updated_at

    book.meta["tags"].append("c")
    nth_atom(book, 0, 0).results["value"].append(99)
    nth_flow(book, 0).add(AtomDetail("sneaked in"))
    book.add(FlowDetail("sneaked in"))
    saved.meta["owner"] = "someone else"
    nth_flow(saved, 1).meta["index"] = 42
    loaded = await store.get_logbook(book.uuid)
    loaded.meta.clear()
    nth_atom(loaded, 2, 2).failure = None
    assert await store.get_logbook(book.uuid) == expected

    flow = copy.deepcopy(nth_flow(expected, 1))
    updated_flow = await store.update_flow_details(flow)
    flow.meta["after"] = True
    updated_flow.meta["after"] = True
    atom = copy.deepcopy(nth_atom(expected, 1, 1))
    updated_atom = await store.update_atom_details(atom)
    atom.results["value"].clear()
    updated_atom.results["value"].clear()
    for got in await store.get_flows_for_book(book.uuid):
        got.meta["x"] = 1

    for found in await store.get_atoms_for_flow(flow.uuid):
        found.meta["x"] = 1

    assert list(await store.get_logbook(book.uuid)) == list(expected)


async def test_writes_are_logged_at_debug(
    store: BookStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiojobboard.book")
    saved = await store.save_logbook(make_book())
    records = [r for r in caplog.records if r.name == "aiojobboard.book"]
    assert any(saved.uuid in record.getMessage() for record in records)
    assert all(record.levelno == logging.DEBUG for record in records)


ClosedCall = Callable[[BookStore, LogBook], Awaitable[object]]
CLOSED_CALLS: dict[str, ClosedCall] = {
    "save_logbook": lambda s, b: s.save_logbook(b),
    "get_logbook": lambda s, b: s.get_logbook(b.uuid),
    "destroy_logbook": lambda s, b: s.destroy_logbook(b.uuid),
    "update_flow_details": lambda s, b: s.update_flow_details(nth_flow(b, 0)),
    "update_atom_details": lambda s, b: s.update_atom_details(nth_atom(b, 0, 0)),
    "get_flows_for_book": lambda s, b: s.get_flows_for_book(b.uuid),
    "get_atoms_for_flow": lambda s, b: s.get_atoms_for_flow(nth_flow(b, 0).uuid),
    "clear_all": lambda s, b: s.clear_all(),
    "upgrade": lambda s, b: s.upgrade(),
    "__aenter__": lambda s, b: s.__aenter__(),
}


@pytest.mark.parametrize("call", CLOSED_CALLS.values(), ids=CLOSED_CALLS.keys())
async def test_a_closed_store_refuses_every_call(
    store: BookStore, call: ClosedCall
) -> None:
    book = await store.save_logbook(make_book())
    assert not store.closed
    await store.close()
    assert store.closed
    await store.close()

    with pytest.raises(BoardClosed):
        await call(store, book)

    with pytest.raises(BoardClosed):
        store.get_logbooks()


async def test_closing_stops_a_running_get_logbooks(store: BookStore) -> None:
    await store.save_logbook(make_book("one"))
    await store.save_logbook(make_book("two"))
    books = store.get_logbooks()
    await anext(books)
    await store.close()
    with pytest.raises(BoardClosed):
        await anext(books)


def test_models_refuse_bad_names_and_uuids() -> None:
    with pytest.raises(ValueError, match=r"logbook '' .* name must not be empty"):
        LogBook("")

    with pytest.raises(TypeError, match=r"flow 7 .* name must be a str, not int"):
        FlowDetail(7)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=r"atom 'fetch' .* uuid must not be empty"):
        AtomDetail("fetch", uuid="")

    with pytest.raises(TypeError, match=r"atom 'fetch' .* meta must be a dict"):
        AtomDetail("fetch", meta=["not", "a", "dict"])  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="created_at must be timezone-aware"):
        LogBook("naive", created_at=datetime(2024, 1, 1))


def test_models_keep_children_in_order_and_refuse_twins() -> None:
    book = LogBook("book")
    flows = [FlowDetail(name) for name in ("c", "a", "b")]
    for flow in flows:
        book.add(flow)

    atom = AtomDetail("atom")
    flows[0].add(atom)

    assert list(book) == flows
    assert len(book) == 3
    assert book.find(flows[2].uuid) is flows[2]
    assert book.find("missing") is None
    assert flows[0].find(atom.uuid) is atom
    with pytest.raises(ValueError, match=f"already holds a flow {flows[1].uuid}"):
        book.add(FlowDetail("twin", uuid=flows[1].uuid))

    with pytest.raises(TypeError, match="expected an AtomDetail"):
        flows[0].add(flows[1])  # type: ignore[arg-type]


def test_created_at_is_held_in_utc() -> None:
    local = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=5)))
    book = LogBook("book", created_at=local)
    assert book.created_at.utcoffset() == timedelta(0)
    assert book.created_at == local


async def test_memory_connections_to_one_name_share_books() -> None:
    url = f"memory://shared-{uuid4().hex}"
    async with connect(url) as first, connect(url) as second:
        saved = await first.save_logbook(make_book())
        assert await second.get_logbook(saved.uuid) == saved

        await first.close()
        assert not second.closed
        assert await second.get_logbook(saved.uuid) == saved


async def test_memory_stores_with_different_names_are_apart() -> None:
    async with (
        connect(f"memory://one-{uuid4().hex}") as one,
        connect(f"memory://two-{uuid4().hex}") as two,
    ):
        saved = await one.save_logbook(make_book())
        with pytest.raises(NotFound):
            await two.get_logbook(saved.uuid)

        assert [book async for book in two.get_logbooks()] == []


async def test_the_default_memory_store_is_shared() -> None:
    async with connect("memory://") as first, connect("memory://") as second:
        saved = await first.save_logbook(make_book())
        try:
            assert await second.get_logbook(saved.uuid) == saved
        finally:
            await first.destroy_logbook(saved.uuid)


async def test_connect_awaited_gives_an_open_store() -> None:
    opened = await connect(f"memory://awaited-{uuid4().hex}")
    try:
        assert isinstance(opened, BookStore)
        assert not opened.closed
        saved = await opened.save_logbook(make_book())
        assert await opened.get_logbook(saved.uuid) == saved
    finally:
        await opened.close()

    assert opened.closed


async def test_connect_as_a_context_manager_closes_on_exit() -> None:
    async with connect(f"memory://managed-{uuid4().hex}") as opened:
        assert not opened.closed
        await opened.save_logbook(make_book())

    assert opened.closed
    with pytest.raises(BoardClosed):
        await opened.get_logbook(str(uuid4()))


async def test_a_bad_url_option_is_named() -> None:
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        await connect("memory://named?colour=blue")


async def test_an_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'nosuch'.*known schemes: .*memory://"):
        await connect("nosuch://host/db")
