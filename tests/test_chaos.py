"""Chaos runs: no job lost or consumed twice while processes, servers and
connections fail (see ``tests/chaos.py``; ``benchmarks/chaos.py`` runs longer
ones from the command line).

Each run starts its own servers on free ports: a Redis server that syncs
every write to its append-only file, or a three-server ZooKeeper ensemble.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from . import chaos
from .chaos import BoardView, Config, Entry, Report, judge
from .redis_helpers import ensure_shared_redis
from .zookeeper_helpers import JAR

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_installed() -> None:
    ensure_shared_redis()


@pytest.fixture(scope="module")
def zookeeper_installed() -> None:
    if not Path(JAR).exists():
        script = ROOT / "scripts" / "services" / "zookeeper"
        subprocess.run([str(script)], check=True, timeout=300)


# -- the judge ---------------------------------------------------------------------
def ledger(*lines: str) -> list[Entry]:
    """Entries from "kind name uuid token pid" lines."""
    entries = []
    for at, line in enumerate(lines):
        kind, name, job_uuid, token, pid = line.split()
        entries.append(Entry(float(at), kind, name, job_uuid, token, int(pid), "-"))
    return entries


POSTED = ("posting p1-0 - - 1", "posted p1-0 u0 - 1")


def dead(pid: int) -> bool:
    return False


def test_a_job_consumed_once_is_counted_once() -> None:
    verdict = judge(
        ledger(
            *POSTED,
            "claimed p1-0 u0 5 10",
            "consuming p1-0 u0 5 10",
            "consumed p1-0 u0 5 10",
        ),
        {},
        dead,
    )
    assert (verdict.posted, verdict.consumed, verdict.reruns) == (1, 1, 0)
    assert verdict.ok


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (
            ["consumed p1-0 u0 5 10", "consumed p1-0 u0 9 11"],
            "consumed by tokens 5 and 9",
        ),
        (
            ["consumed p1-0 u0 5 10", "consumed p1-0 u0 5 10"],
            "consumed by tokens 5 and 5",
        ),
        (
            ["consumed p1-0 u0 5 10", "claimed p1-0 u0 9 11"],
            "claimed again (token 9) after its consume by token 5",
        ),
    ],
)
def test_two_consumes_are_a_duplicate(lines: list[str], why: str) -> None:
    verdict = judge(ledger(*POSTED, "claimed p1-0 u0 5 10", *lines), {}, dead)
    assert verdict.duplicates == {"u0": why}
    assert verdict.consumed == 0
    assert not verdict.ok


def test_a_consume_that_did_not_take_is_a_duplicate() -> None:
    verdict = judge(
        ledger(*POSTED, "consumed p1-0 u0 5 10"), {"u0": BoardView("p1-0", None)}, dead
    )
    assert verdict.duplicates == {
        "u0": "still on the board after its consume by token 5"
    }


def test_a_holder_that_died_mid_consume_consumed_a_job_that_is_gone() -> None:
    story = [*POSTED, "claimed p1-0 u0 5 10", "consuming p1-0 u0 5 10"]
    verdict = judge(ledger(*story), {}, dead)
    assert (verdict.consumed, verdict.consumed_unconfirmed) == (0, 1)
    assert verdict.ok
    # A consume the board refused did not take: the job is lost.
    verdict = judge(ledger(*story, "refused p1-0 u0 5 10"), {}, dead)
    assert verdict.lost == {"u0": "gone from the board, no consume landed"}


def test_a_job_gone_unconsumed_is_lost() -> None:
    verdict = judge(ledger(*POSTED), {}, dead)
    assert verdict.lost == {"u0": "gone from the board, never claimed"}
    assert not verdict.ok


def test_a_job_held_by_a_dead_owner_is_stuck() -> None:
    board = {"u0": BoardView("p1-0", "c0-10")}
    verdict = judge(ledger(*POSTED, "claimed p1-0 u0 5 10"), board, dead)
    assert verdict.stuck == {"u0": "claimed by c0-10, which is dead"}
    verdict = judge(ledger(*POSTED), board, lambda pid: pid == 10)
    assert (verdict.stuck, verdict.left) == ({}, ["u0"])


def test_work_begun_again_is_a_rerun_not_a_duplicate() -> None:
    verdict = judge(
        ledger(
            *POSTED,
            "claimed p1-0 u0 5 10",
            "consuming p1-0 u0 5 10",
            "refused p1-0 u0 5 10",
            "claimed p1-0 u0 9 11",
            "consuming p1-0 u0 9 11",
            "consumed p1-0 u0 9 11",
        ),
        {},
        dead,
    )
    assert (verdict.consumed, verdict.reruns, verdict.refused) == (1, 1, 1)
    assert verdict.ok


def test_posts_are_judged_by_what_became_of_them() -> None:
    verdict = judge(
        ledger(
            "posting p1-0 - - 1",  # the producer died; the job was seen
            "claimed p1-0 u0 5 10",
            "consuming p1-0 u0 5 10",
            "consumed p1-0 u0 5 10",
            "posting p1-1 - - 1",  # the producer died; never seen
            "posting p1-2 - - 1",  # failed; never seen
            "postfail p1-2 - - 1",
            "posting p1-3 - - 1",  # posted twice
            "posted p1-3 u3 - 1",
            "claimed p1-3 u4 6 10",
            "claimed x u5 7 10",  # posted by no one
        ),
        {"u3": BoardView("p1-3", None), "u4": BoardView("p1-3", None)},
        dead,
    )
    assert (verdict.posted, verdict.consumed) == (3, 1)
    assert (verdict.post_unsure, verdict.post_failed) == (1, 1)
    assert verdict.double_posts == {"p1-3": "posted as u3, u4"}
    assert verdict.strangers == ["u5"]
    assert not verdict.ok


# -- the runs ----------------------------------------------------------------------
def assert_survived(report: Report) -> None:
    verdict = report.verdict
    summary = chaos.table(report)
    assert verdict.ok, summary
    assert (verdict.duplicates, verdict.lost, verdict.stuck) == ({}, {}, {}), summary
    assert verdict.errors == {}, summary
    assert report.crashes == 0, summary
    # The chaos happened, and work went on through it.
    assert report.kills > 0, summary
    assert report.restarts > 0, summary
    assert report.cuts > 0, summary
    assert verdict.consumed > 100, summary
    assert report.drained_in is not None, summary
    assert verdict.left == [], summary


@pytest.mark.usefixtures("redis_installed")
async def test_redis_loses_and_repeats_nothing(tmp_path: Path) -> None:
    config = Config("redis", seconds=15, consumers=3, seed=11, drain=20)
    config.folder = tmp_path
    assert_survived(await chaos.run(config))


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("zookeeper_installed")
async def test_zookeeper_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # Half the rate: the consumers of a busy machine fall behind ZooKeeper's
    # posts, and the drain at the end should stay short.
    config = Config("zookeeper", seconds=15, consumers=3, seed=11, rate=50, drain=30)
    config.folder = tmp_path
    assert_survived(await chaos.run(config))


@pytest.mark.soak
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("redis_installed")
async def test_redis_soak(tmp_path: Path) -> None:
    config = Config("redis", seconds=60, consumers=4, seed=12)
    config.folder = tmp_path
    assert_survived(await chaos.run(config))


@pytest.mark.soak
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("zookeeper_installed")
async def test_zookeeper_soak(tmp_path: Path) -> None:
    config = Config("zookeeper", seconds=60, consumers=4, seed=12)
    config.folder = tmp_path
    assert_survived(await chaos.run(config))
