"""The examples run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REDIS_URL
from .test_book_postgres import POSTGRES_URL

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_quickstart() -> None:
    out = run(str(EXAMPLES / "quickstart.py"))
    assert "shipping 1234 attempt 1" in out
    assert "jobs left: 0" in out


def test_demo_drains_every_job() -> None:
    out = run(str(EXAMPLES / "demo.py"), "--jobs", "600", "--consumers", "16")
    assert "600 jobs posted" in out
    assert "trashed 1 (the poison job)" in out
    assert "jobs left on the board: 0" in out


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL is switched off")
def test_conductor_processes_survive_a_killed_conductor() -> None:
    out = run(
        str(EXAMPLES / "conductor_processes.py"),
        "--orders",
        "12",
        "--board",
        REDIS_URL,
        "--books",
        POSTGRES_URL,
    )
    assert "conductor-1 killed with SIGKILL" in out
    assert "flows by state: {'REVERTED': 1, 'SUCCESS': 11}" in out
    assert "jobs left on the board: 0, unfinished: 0" in out
