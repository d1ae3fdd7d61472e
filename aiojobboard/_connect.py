"""Finding an adapter by URL scheme, and reading its options from the URL.

Adapters register under the entry point groups ``aiojobboard.boards`` and
``aiojobboard.books``; one is imported only when a URL names its scheme, so a
missing optional dependency costs nothing until it is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Generator, Mapping
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

__all__ = [
    "Opener",
    "load_adapter",
    "mask_url",
    "positive_float",
    "positive_int",
    "read_options",
    "scheme_of",
]


class _Closable(Protocol):
    async def close(self) -> None: ...


_T = TypeVar("_T", bound=_Closable)


class Opener(Generic[_T]):
    """What ``connect()`` returns: await it, or use it as an async context manager.

    ``await opener`` gives the open object, which the caller closes;
    ``async with opener as obj`` closes it on the way out.
    """

    __slots__ = ("_factory", "_opened")

    def __init__(self, factory: Callable[[], Awaitable[_T]]) -> None:
        self._factory = factory
        self._opened: _T | None = None

    def __await__(self) -> Generator[Any, None, _T]:
        return self._open().__await__()

    async def _open(self) -> _T:
        return await self._factory()

    async def __aenter__(self) -> _T:
        if self._opened is not None:
            raise RuntimeError("this connect() was already entered; call it again")
        self._opened = await self._factory()
        return self._opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            await opened.close()


#: Query options whose values are masked like a password, wherever they appear.
_SECRET_OPTIONS = frozenset(
    {"password", "passwd", "pass", "secret", "token", "auth", "sslpassword"}
)


def mask_url(url: str) -> str:
    """Return *url* with any password replaced by ``***``, for logs and errors.

    The password of the user part goes, and so does the value of any query
    option named like a secret (``password=``, ``token=``...). A password
    holding a character that should have been percent-encoded (``/``, ``?``,
    ``#``) makes the URL parse with its ``@`` outside the host part: then
    everything up to the last ``@`` is masked.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    scheme, sep, rest = url.partition("://")
    if sep and "@" not in parts.netloc and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    secret_option = parts.query and any(
        name.lower() in _SECRET_OPTIONS for name, _ in parse_qsl(parts.query)
    )
    masked = url
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        masked = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    if secret_option:
        # Rebuilt by hand: urlunsplit drops the // of a URL with no host.
        head, mark, tail = masked.partition("?")
        query, hash_, fragment = tail.partition("#")
        query = "&".join(_mask_option(item) for item in query.split("&"))
        masked = f"{head}{mark}{query}{hash_}{fragment}"
    return masked


def _mask_option(item: str) -> str:
    name, sep, _ = item.partition("=")
    if sep and unquote(name).lower() in _SECRET_OPTIONS:
        return f"{name}=***"
    return item


def scheme_of(url: object) -> str:
    """Return the scheme of *url*, or raise the errors ``connect()`` documents."""
    if not isinstance(url, str):
        raise TypeError(f"a URL must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not a URL (no scheme://): {mask_url(url)!r}")
    return scheme.lower()


def load_adapter(group: str, url: str, what: str) -> Any:
    """Import and return the adapter registered in *group* for *url*'s scheme."""
    scheme = scheme_of(url)
    found = {ep.name: ep for ep in entry_points(group=group)}
    if scheme not in found:
        known = ", ".join(f"{name}://" for name in sorted(found)) or "none"
        raise ValueError(
            f"unknown {what} URL scheme {scheme!r} in {mask_url(url)!r}; "
            f"known schemes: {known}"
        )
    entry = found[scheme]
    try:
        return entry.load()
    except ImportError as exc:
        # An entry point names the extra that brings its adapter's dependencies.
        extra = ",".join(entry.extras) or "all"
        raise ImportError(
            f"the {scheme}:// {what} adapter needs {exc.name or 'a package'}, "
            f"which is not installed: pip install 'aiojobboard[{extra}]'",
            name=exc.name,
        ) from exc


def read_options(
    url: str, converters: Mapping[str, Callable[[str, str], Any]]
) -> dict[str, Any]:
    """Parse the query of *url* with one converter per allowed option.

    An unknown, repeated or badly formed option is a ``ValueError`` naming it.
    """
    _check_credentials(url)
    query = urlsplit(url).query
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in converters:
            allowed = ", ".join(sorted(converters)) or "none"
            raise ValueError(
                f"unknown option {name!r} in {mask_url(url)!r}; allowed: {allowed}"
            )
        if name in options:
            raise ValueError(f"option {name!r} is given twice in {mask_url(url)!r}")
        options[name] = converters[name](name, raw)
    return options


def _check_credentials(url: str) -> None:
    """Refuse a URL whose password was cut short by a character left unencoded.

    ``redis://user:pa/ss@host`` parses as host ``user``, port ``pa``: left to
    the adapter, a piece of the password would show in its complaint.
    """
    netloc = urlsplit(url).netloc
    rest = url.partition("://")[2]
    port = netloc.rpartition(":")[2] if ":" in netloc.rpartition("]")[2] else ""
    if "@" in rest and "@" not in netloc and port and not port.isdigit():
        raise ValueError(
            f"the host part of {mask_url(url)!r} does not parse: a password "
            "holding '/', '?' or '#' must be percent-encoded (as %2F, %3F, %23)"
        )


def positive_float(name: str, raw: str) -> float:
    """Convert an option that must be a finite number of seconds above zero."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"option {name!r} must be a number, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"option {name!r} must be above zero, not {raw!r}")
    return value


def positive_int(name: str, raw: str) -> int:
    """Convert an option that must be a whole number above zero."""
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"option {name!r} must be an integer, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"option {name!r} must be above zero, not {raw!r}")
    return value
