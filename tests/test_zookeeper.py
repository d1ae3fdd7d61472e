"""What only the ZooKeeper adapter can show: sessions, faults, ACLs, aiozk.

The board contract itself runs on ZooKeeper from test_contract.py, with the
adapter's Kit in conftest.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiojobboard as ajb
from aiojobboard.boards import _aiozk as zk

from .conftest import KITS, ZOOKEEPER_URL, Kit, OpenBoard, stall
from .zookeeper_helpers import (
    Proxy,
    answers_ruok,
    ensemble,
    expire_session,
    play_dead,
    private_server,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def zookeeper_running() -> None:
    """Start the shared test server with the project's script if none answers."""
    if "AIOJOBBOARD_TEST_ZOOKEEPER" in os.environ or answers_ruok(2181):
        return
    script = ROOT / "scripts" / "services" / "zookeeper"
    subprocess.run([str(script)], check=True, timeout=300)


@pytest.fixture
def kit() -> Kit:
    """Every test here runs on ZooKeeper, whichever adapters the run selects."""
    return KITS["zookeeper"]


def fresh_url(base: str = ZOOKEEPER_URL, **options: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    url = f"{base}/test-{uuid.uuid4().hex[:12]}"
    return f"{url}?{query}" if query else url


@pytest.fixture
async def client() -> AsyncIterator[zk.Client]:
    opened = zk.Client(
        ZOOKEEPER_URL.partition("://")[2],
        session_timeout=5,
        call_timeout=5,
        credentials=None,
        on_event=lambda event: None,
        on_state=lambda state: None,
    )
    await opened.start()
    yield opened
    await opened.close()


# -- aiozk's sharp edges, each worked around in _aiozk -------------------------


async def test_a_failed_multi_raises(client: zk.Client) -> None:
    path = f"/test-{uuid.uuid4().hex[:12]}"
    await client.create(path, b"", [zk.OPEN_ACL])
    ops = [zk.Op.check(path, 0), zk.Op.create(path, b"", [zk.OPEN_ACL])]
    with pytest.raises(zk.MultiFailed) as caught:
        await client.multi(ops)
    assert caught.value.index == 1
    assert isinstance(caught.value.error, zk.NodeExists)
    ops = [zk.Op.set_data(path, b"x", 5), zk.Op.delete(path, 0)]
    with pytest.raises(zk.MultiFailed) as caught:
        await client.multi(ops)
    assert caught.value.index == 0
    assert isinstance(caught.value.error, zk.BadVersion)
    await client.multi([zk.Op.delete(path, 0)])
    assert await client.exists(path) is None


async def test_connect_with_no_server_gives_up() -> None:
    with socket_port() as port:
        started = time.monotonic()
        with pytest.raises(ajb.ConnectionLost):
            await ajb.connect(f"zookeeper://127.0.0.1:{port}/x?timeout=1")
        assert time.monotonic() - started < 10


async def test_a_call_on_a_closed_client_fails_at_once(client: zk.Client) -> None:
    await client.close()
    with pytest.raises(ajb.ConnectionLost):
        await asyncio.wait_for(client.exists("/"), 5)


async def test_a_dropped_connection_fails_calls_in_flight(tmp_path: Path) -> None:
    async with private_server(tmp_path) as server:
        proxy = Proxy(server.port)
        await proxy.start()
        board = await ajb.connect(
            f"zookeeper://127.0.0.1:{proxy.port}/b?session_timeout=2&timeout=2"
        )
        try:
            await board.post("x")
            proxy.cut()
            with pytest.raises(ajb.ConnectionLost) as caught:
                await asyncio.wait_for(board.job_count(), 10)
            assert type(caught.value).__module__.startswith("aiojobboard")
        finally:
            await asyncio.wait_for(board.close(), 15)
            await proxy.close()


def run_script(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


async def test_close_while_unreachable_lets_the_process_exit(tmp_path: Path) -> None:
    async with private_server(tmp_path) as server:
        code = f"""
            import asyncio, os, signal, sys
            import aiojobboard as ajb

            async def main():
                board = await ajb.connect(
                    "zookeeper://{server.address}/b?session_timeout=2&timeout=2")
                job = await board.post("x")
                await board.claim(job, "w")
                print("ready", flush=True)
                sys.stdin.readline()          # the test kills the server now
                await board.close()
                print("closed", flush=True)

            asyncio.run(main())
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(code),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
        await server.stop()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        # Half-closed aiozk clients and leftover watchers would hang here.
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"closed\n"
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_a_cancelled_claim_leaves_no_claim_behind(
    open_board: OpenBoard,
) -> None:
    board = await open_board()
    job = await board.post("x")

    async def take() -> ajb.Claim:
        claim: ajb.Claim = await board.claim(job, "w")
        return claim

    for delay in (0, 0.001, 0.005, 0.02):
        task = asyncio.create_task(take())
        await asyncio.sleep(delay)
        task.cancel()
        try:
            claim = await task
        except asyncio.CancelledError:
            pass
        else:
            await claim.abandon()
        assert await job.get_state() is ajb.JobState.UNCLAIMED


# -- sessions that fail safe ---------------------------------------------------


async def test_a_killed_claimers_job_goes_to_another_process() -> None:
    url = fresh_url(session_timeout=2)
    async with ajb.connect(url) as board:
        job = await board.post("x")
        code = f"""
            import asyncio, aiojobboard as ajb

            async def main():
                board = await ajb.connect({url!r})
                claim = await board.claim_next("doomed")
                print(claim.job.uuid, claim.attempt, flush=True)
                await asyncio.sleep(3600)

            asyncio.run(main())
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", textwrap.dedent(code), stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.split() == [job.uuid.encode(), b"1"]
        assert await board.find_owner(job) == "doomed"
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await board.wait(timeout=15)
        async with board.claim(job, "survivor") as claim:
            assert claim.attempt == 2
        assert await job.get_state() is ajb.JobState.COMPLETE


async def first_expiry(board: ajb.JobBoard) -> ajb.JobEvent:
    async for event in board.events():
        if event.kind is ajb.EventKind.EXPIRED:
            return event
    raise AssertionError("events() ended")


async def test_a_cut_connection_loses_the_claim(tmp_path: Path) -> None:
    async with private_server(tmp_path) as server:
        proxy = Proxy(server.port)
        await proxy.start()
        via_proxy = f"zookeeper://127.0.0.1:{proxy.port}/b?session_timeout=5"
        direct = f"zookeeper://{server.address}/b"
        try:
            async with ajb.connect(via_proxy) as board, ajb.connect(direct) as other:
                job = await board.post("x")
                expiry = asyncio.create_task(first_expiry(board))
                finished = False
                with pytest.raises(ajb.ClaimLost, match=r"ZooKeeper|session"):
                    async with board.claim(job, "w"):
                        proxy.cut()
                        await asyncio.sleep(30)
                        finished = True
                assert not finished
                event = await asyncio.wait_for(expiry, 5)
                assert (event.job_uuid, event.owner) == (job.uuid, "w")
                # Failing safe: the holder gave up while the server still had
                # its session, so no one else could have the job meanwhile.
                assert await other.find_owner(job) == "w"
                await other.wait(timeout=20)
                again = await other.claim(job, "w2")
                assert again.attempt == 2
                await again.consume()
        finally:
            await proxy.close()


async def test_a_stalled_loop_loses_the_claim() -> None:
    url = fresh_url(session_timeout=1)
    async with ajb.connect(url) as board, ajb.connect(url) as other:
        await stall_through_a_session(board, other)


async def stall_through_a_session(board: ajb.JobBoard, other: ajb.JobBoard) -> None:
    job = await board.post("x")
    with pytest.raises(ajb.ClaimLost):
        async with board.claim(job, "w"):
            stall(3)  # longer than the session: the server expires it
            await asyncio.sleep(10)
    assert await job.get_state() is not ajb.JobState.COMPLETE
    await other.wait(timeout=15)
    again = await other.claim(job, "w2")
    assert again.attempt == 2
    await again.consume()


async def test_no_claims_while_suspended(tmp_path: Path) -> None:
    async with private_server(tmp_path) as server:
        proxy = Proxy(server.port)
        await proxy.start()
        url = f"zookeeper://127.0.0.1:{proxy.port}/b?session_timeout=3&timeout=2"
        try:
            async with ajb.connect(url) as board:
                job = await board.post("x")
                proxy.cut()
                await asyncio.sleep(2.5)  # aiozk's heartbeat times out
                with pytest.raises(ajb.ConnectionLost):
                    await board.claim(job, "w")
        finally:
            await proxy.close()


# -- restarts and ensembles ------------------------------------------------------


async def drain(url: str, who: str, done: list[str], unsure: list[str]) -> None:
    """Consume jobs until the board is empty, riding out connection trouble.

    A consume whose answer was lost may or may not have happened: *unsure*.
    """
    async with ajb.connect(url) as board:
        while True:
            try:
                if await board.job_count() == 0:
                    return
                claim = await board.claim_next(who)
            except ajb.ConnectionLost:
                await asyncio.sleep(0.2)
                continue
            if claim is None:
                await asyncio.sleep(0.05)
                continue
            await consume(claim, done, unsure)


async def consume(claim: ajb.Claim, done: list[str], unsure: list[str]) -> None:
    """Consume, again after connection trouble, as a careful worker would."""
    tried = False
    while True:
        try:
            await claim.consume()
        except ajb.ConnectionLost:
            tried = True
            await asyncio.sleep(0.2)
            continue
        except (ajb.NotOwner, ajb.ClaimLost):
            # Gone: by a consume whose answer was lost, or with its session.
            if tried:
                unsure.append(claim.job.name)
            return
        done.append(claim.job.name)
        return


async def run_through_fault(url: str, fault: object, jobs: int = 60) -> None:
    """Post jobs, drain them with two consumers, cause *fault* half-way."""
    async with ajb.connect(url) as poster:
        await poster.post_many([{"name": f"j{i}"} for i in range(jobs)])
    done: list[str] = []
    unsure: list[str] = []
    workers = [asyncio.create_task(drain(url, f"w{i}", done, unsure)) for i in range(2)]
    while len(done) < jobs // 3:  # noqa: ASYNC110 - other tasks fill it
        await asyncio.sleep(0.01)
    await fault()  # type: ignore[operator]
    await asyncio.wait_for(asyncio.gather(*workers), 90)
    # None consumed twice, none lost.
    assert len(done) == len(set(done))
    assert set(done) | set(unsure) == {f"j{i}" for i in range(jobs)}
    async with ajb.connect(url) as checker:
        assert await checker.job_count() == 0


@pytest.mark.timeout(180)
async def test_a_server_restart_mid_run(tmp_path: Path) -> None:
    async with private_server(tmp_path) as server:
        url = f"zookeeper://{server.address}/b?session_timeout=10&timeout=20"

        async def restart() -> None:
            await server.stop(signal.SIGTERM)
            server.start()
            await server.wait_ready()

        await run_through_fault(url, restart)


@pytest.mark.timeout(180)
async def test_an_ensemble_loses_its_leader_mid_run(tmp_path: Path) -> None:
    async with ensemble(tmp_path) as servers:
        hosts = ",".join(server.address for server in servers)
        url = f"zookeeper://{hosts}/b?session_timeout=10&timeout=20"
        leader = next(server for server in servers if server.mode == "leader")

        async def kill_leader() -> None:
            await leader.stop(signal.SIGKILL)

        await run_through_fault(url, kill_leader)


# -- ACLs, limits and options -------------------------------------------------------


async def test_another_identity_cannot_claim_or_delete() -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    base = ZOOKEEPER_URL.partition("://")[2]
    owner_url = f"zookeeper://alice:s3cret@{base}/{name}"
    async with ajb.connect(owner_url) as alice:
        job = await alice.post("x")
        async with ajb.connect(f"zookeeper://mallory:guess@{base}/{name}") as mallory:
            assert [j.name async for j in mallory.iterjobs()] == ["x"]
            with pytest.raises(ajb.JobBoardError, match="identity"):
                await mallory.claim(job, "mallory")
            assert await alice.find_owner(job) is None
            claim = await alice.claim(job, "alice")
            with pytest.raises(ajb.NotOwner):
                await mallory.consume(job, "alice")
            assert await job.get_state() is ajb.JobState.CLAIMED
            await claim.consume()
    assert "s3cret" not in repr(alice)
    assert "s3cret" not in alice.url


async def raw_client(credentials: tuple[str, str] | None) -> zk.Client:
    opened = zk.Client(
        ZOOKEEPER_URL.partition("://")[2],
        session_timeout=5,
        call_timeout=5,
        credentials=credentials,
        on_event=lambda event: None,
        on_state=lambda state: None,
    )
    await opened.start()
    return opened


@pytest.mark.parametrize("credentials", [("mallory", "guess"), None])
async def test_another_identity_cannot_touch_the_nodes(
    credentials: tuple[str, str] | None,
) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    base = ZOOKEEPER_URL.partition("://")[2]
    async with ajb.connect(f"zookeeper://alice:s3cret@{base}/{name}") as alice:
        job = await alice.post("x", {"card": "4111"})
        claimed = await alice.post("y")
        claim = await alice.claim(claimed, "alice")
        jobs = await alice._client.children(f"/{name}/jobs")  # type: ignore[attr-defined]
        free = next(node for node in jobs if job.uuid in node)
        held = next(node for node in jobs if claimed.uuid in node)
        other = await raw_client(credentials)
        try:
            # The world may read a board (the default acl=read)...
            data, _ = await other.get(f"/{name}/jobs/{free}")
            assert b"4111" in data
            # ...and change nothing of it.
            refused = [
                zk.Op.delete(f"/{name}/jobs/{free}", -1),
                zk.Op.delete(f"/{name}/claims/{held}", -1),
                zk.Op.set_data(f"/{name}/jobs/{free}", b"{}", -1),
                zk.Op.create(f"/{name}/claims/{free}", b"{}", [zk.OPEN_ACL]),
                zk.Op.create(f"/{name}/jobs/9-fake-1", b"{}", [zk.OPEN_ACL]),
                zk.Op.create(f"/{name}/trash/{held}", b"{}", [zk.OPEN_ACL]),
                zk.Op.delete(f"/{name}/jobs", -1),
            ]
            for op in refused:
                with pytest.raises(zk.MultiFailed) as failed:
                    await other.multi([op])
                assert isinstance(failed.value.error, zk.NoAuth), op
        finally:
            await other.close()
        anonymous = "" if credentials is None else "mallory:guess@"
        async with ajb.connect(f"zookeeper://{anonymous}{base}/{name}") as stranger:
            with pytest.raises(ajb.JobBoardError, match="identity"):
                await stranger.claim(job, "stranger")
            with pytest.raises(ajb.JobBoardError, match="identity"):
                await stranger.post("planted")
            for finish in (stranger.consume, stranger.trash, stranger.abandon):
                with pytest.raises(ajb.NotOwner, match="identity"):
                    await finish(claimed, "alice")
        assert claim.held
        assert await alice.find_owner(claimed) == "alice"
        assert {j.name async for j in alice.iterjobs()} == {"x", "y"}
        await claim.consume()


async def test_credentials_are_sent_again_on_a_new_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aiozk.connection.payload")
    name = f"test-{uuid.uuid4().hex[:12]}"
    base = ZOOKEEPER_URL.partition("://")[2]
    async with ajb.connect(f"zookeeper://alice:s3cret@{base}/{name}") as alice:
        job = await alice.post("x")
        claim = await alice.claim(job, "alice")
        await expire_session(alice)
        assert claim.lost
        async with alice.claim(job, "alice") as again:
            assert again.attempt == 2
        assert await job.get_state() is ajb.JobState.COMPLETE
    assert "AuthRequest" in caplog.text
    assert "s3cret" not in caplog.text


async def test_a_private_board_is_hidden_from_others() -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    base = ZOOKEEPER_URL.partition("://")[2]
    async with ajb.connect(
        f"zookeeper://alice:s3cret@{base}/{name}?acl=private"
    ) as alice:
        job = await alice.post("x", {"card": "4111"})
        with pytest.raises(ajb.JobBoardError, match=r"identity|refused"):
            async with ajb.connect(f"zookeeper://{base}/{name}") as other:
                [j async for j in other.iterjobs()]
        nodes = await alice._client.children(f"/{name}/jobs")  # type: ignore[attr-defined]
        for credentials in [None, ("mallory", "guess")]:
            stranger = await raw_client(credentials)
            try:
                for path in (f"/{name}/jobs", f"/{name}/jobs/{nodes[0]}"):
                    with pytest.raises(ajb.JobBoardError, match="identity"):
                        await stranger.get(path)
                with pytest.raises(ajb.JobBoardError, match="identity"):
                    await stranger.children(f"/{name}/jobs")
            finally:
                await stranger.close()
        assert await alice.find_owner(job) is None


async def test_the_size_limit_fits_a_node() -> None:
    with pytest.raises(ValueError, match="max_job_size"):
        await ajb.connect(fresh_url(max_job_size=2 * 1024 * 1024))
    async with ajb.connect(fresh_url()) as board:
        assert board.max_job_size <= zk_request_limit()
        with pytest.raises(ajb.InvalidJob, match="limit"):
            await board.post("big", {"blob": "x" * board.max_job_size})
        assert await board.job_count() == 0


async def test_a_batch_over_one_request_is_refused_whole(board: ajb.JobBoard) -> None:
    blob = "x" * (400 * 1024)
    with pytest.raises(ajb.InvalidJob, match="one ZooKeeper request"):
        await board.post_many(
            [{"name": f"j{i}", "details": {"blob": blob}} for i in range(3)]
        )
    assert await board.job_count() == 0


async def test_live_workers_are_listed(client: zk.Client) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    async with ajb.connect(f"{ZOOKEEPER_URL}/{name}") as board:
        await board.claim(await board.post("x"), "worker/1")
        entities = f"/{name}/entities"
        for _ in range(100):
            if await client.children(entities):
                break
            await asyncio.sleep(0.05)
        assert await client.children(entities) == ["worker%2F1"]
    assert await client.children(entities) == []


async def test_bad_urls() -> None:
    for url, word in [
        ("zookeeper:///path", "host"),
        ("zookeeper://alice@127.0.0.1:2181/p", "USER:PASSWORD"),
        ("zookeeper://127.0.0.1:2181/a//b", "path"),
        ("zookeeper://127.0.0.1:2181/p?acl=everyone", "acl"),
        ("zookeeper://127.0.0.1:2181/p?session_timeout=0", "session_timeout"),
        ("zookeeper://127.0.0.1:2181/p?session_timeout=1e9", "session_timeout"),
        ("zookeeper://127.0.0.1:http/p", "port"),
        ("zookeeper://127.0.0.1:2181,/p", "port"),
        ("zookeeper://alice:pa/ss@127.0.0.1:2181/p", "percent-encoded"),
    ]:
        with pytest.raises(ValueError, match=word):
            await ajb.connect(url)


async def test_lease_is_accepted_and_ignored(board: ajb.JobBoard) -> None:
    job = await board.post("x")
    claim = await board.claim(job, "w", lease=0.2)
    await asyncio.sleep(1)
    assert claim.held
    await claim.consume()


def zk_request_limit() -> int:
    from aiojobboard.boards import zookeeper

    return zookeeper.REQUEST_LIMIT


class socket_port:
    """A loopback port that nothing listens on, for as long as it is held."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


# -- cancels and presence ------------------------------------------------------


async def test_a_cancel_missed_by_the_watch_is_found_on_rebuild() -> None:
    url = fresh_url()
    async with ajb.connect(url) as holder, ajb.connect(url) as operator:
        job = await holder.post("x")
        claim = await holder.claim(job, "w")
        # The watch's events are lost, as across a reconnect. A real cut long
        # enough to lose them makes the holder give its claims up first (it
        # fails safe on silence), so the loss is made here.
        holder._apply = lambda event: None  # type: ignore[attr-defined]
        await operator.cancel(job, "gone fishing")
        await asyncio.sleep(0.3)
        assert claim.held
        del holder._apply  # type: ignore[attr-defined]
        await holder._rebuild(announce=True)  # type: ignore[attr-defined]
        async with asyncio.timeout(10):
            while not claim.lost:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert claim.cancel_reason == "gone fishing"


async def test_a_failed_rebuild_is_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = fresh_url()
    async with ajb.connect(url) as board, ajb.connect(url) as poster:
        # The watch's events are lost, as across a reconnect...
        board._apply = lambda event: None  # type: ignore[attr-defined]
        job = await poster.post("posted meanwhile")
        del board._apply  # type: ignore[attr-defined]
        # ...and the first reads of the rebuild fail: a server that answers
        # nothing cannot be made to fail just these reads.
        client = board._client  # type: ignore[attr-defined]
        children = client.children
        failures: list[str] = []

        async def flaky(path: str) -> list[str]:
            if len(failures) < 2:
                failures.append(path)
                raise ajb.ConnectionLost("no answer")
            return await children(path)  # type: ignore[no-any-return]

        client.children = flaky
        with caplog.at_level(logging.WARNING, "aiojobboard.boards.zookeeper"):
            await asyncio.wait_for(board._recover(None), 10)  # type: ignore[attr-defined]
        assert len(failures) == 2
        assert caplog.text.count("could not rebuild the view") == 2
        claim = await board.claim_next("w")
        assert claim is not None
        assert claim.job.uuid == job.uuid
        await claim.consume()


async def test_a_dead_sessions_presence_goes_with_it() -> None:
    url = fresh_url(session_timeout=2)
    async with ajb.connect(url) as dead, ajb.connect(url) as watcher:
        job = await dead.post("x")
        await dead.claim(job, "doomed")
        async with asyncio.timeout(5):
            while not (found := await watcher.workers()):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert [(w.name, w.holding) for w in found] == [("doomed", (job.uuid,))]
        await play_dead(dead)
        async with asyncio.timeout(10):
            while await watcher.workers():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert await watcher.find_owner(job) is None
