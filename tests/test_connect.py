"""Finding adapters by URL, and what happens when one cannot be loaded."""

from __future__ import annotations

import sys

import pytest

import aiojobboard as ajb
from aiojobboard._connect import mask_url


@pytest.mark.parametrize(
    ("url", "extra", "module"),
    [
        ("redis://127.0.0.1:6379/0", "redis", "redis"),
        ("zookeeper://127.0.0.1:2181/x", "zookeeper", "aiozk"),
    ],
)
def test_a_missing_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, extra: str, module: str
) -> None:
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, module, None)
    adapter = f"aiojobboard.boards.{url.partition(':')[0]}"
    monkeypatch.delitem(sys.modules, adapter, raising=False)
    with pytest.raises(ImportError, match=rf"aiojobboard\[{extra}\]"):
        ajb.connect(url)


def test_a_missing_book_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "aiojobboard.book.postgres", raising=False)
    with pytest.raises(ImportError, match=r"aiojobboard\[postgres\]"):
        ajb.book.connect("postgresql://127.0.0.1/test")


def test_unknown_schemes_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"memory://.*redis://.*zookeeper://"):
        ajb.connect("mongodb://127.0.0.1")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/0?x=1", "redis://user:***@host/0?x=1"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        (
            "redis://host/0?namespace=a&password=s3cret",
            "redis://host/0?namespace=a&password=***",
        ),
        ("redis://host/0?Token=s3cret&x=1", "redis://host/0?Token=***&x=1"),
        ("redis://u:s3/cret@host/0", "redis://***@host/0"),
        ("redis://u:s3?cret@host/0", "redis://***@host/0"),
        ("redis://u:s3#cret@host/0", "redis://***@host/0"),
        ("redis://u:s3@cret@host/0", "redis://u:***@host/0"),
        ("memory://a@b", "memory://a@b"),
        ("redis://host/0?namespace=a", "redis://host/0?namespace=a"),
        ("memory://", "memory://"),
        ("memory://?password=x", "memory://?password=***"),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
