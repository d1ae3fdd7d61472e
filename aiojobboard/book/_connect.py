"""Opening a book store by URL."""

from __future__ import annotations

from .._connect import Opener, load_adapter, mask_url, scheme_of
from .base import BookStore, logger

__all__ = ["connect"]


def connect(url: str) -> Opener[BookStore]:
    """Open the book store that *url* names; await it or use ``async with``.

    The scheme picks the store (``memory://``, ``postgresql://``, ...); an
    unknown scheme is a ``ValueError`` that lists the known ones, raised here
    rather than when the result is awaited.
    """
    found = load_adapter("aiojobboard.books", url, "book store")
    if not (isinstance(found, type) and issubclass(found, BookStore)):
        raise TypeError(
            f"the book store registered for {scheme_of(url)}:// is {found!r}, "
            "which is not a BookStore subclass"
        )

    store_class: type[BookStore] = found

    async def open_store() -> BookStore:
        store = await store_class.from_url(url)
        logger.debug("opened book store %s", mask_url(url))
        return store

    return Opener(open_store)
