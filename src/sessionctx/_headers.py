"""Reading session ids out of headers, in every shape callers hand us.

Shapes: a ``Mapping[str, str | list[str]]`` in any key case, any object with
``.items()`` (Starlette ``Headers``, ``httpx.Headers``, werkzeug ``Headers`` and
``EnvironHeaders``), and raw ASGI ``[(b"name", b"value"), ...]`` pairs.

The rule for choosing: the first accepted name (in priority order) that is
present decides. One valid value wins; an invalid value, or several values for
that name, mean "no id" with no fall-through to lower-priority names. Only when
no accepted name is present at all does the W3C ``baggage`` member
``session.id`` count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache, partial
from itertools import product
from typing import Any, Final, TypeGuard
from urllib.parse import unquote

from sessionctx._validation import _match_id, _raw_id_ok, _shown

__all__ = [
    "ACCEPTED_HEADER_NAMES",
    "BAGGAGE_SESSION_KEY",
    "HeaderLookup",
    "SESSION_HEADER_NAME",
    "baggage_session_id",
    "check_header_name",
    "check_name_order",
    "environ_key",
    "extract_session_id",
    "name_spellings",
]

SESSION_HEADER_NAME: Final = "X-Session-Id"
ACCEPTED_HEADER_NAMES: Final = ("X-Session-Id", "X-TraceCtrl-Session", "Mirascope-Session-Id")
BAGGAGE_SESSION_KEY: Final = "session.id"

# Header names with at most 2 ** 16 characters in all their spellings have
# them in a set: up to 12 letters (4,096 spellings) in a short name.
_MAX_SPELLED_CHARACTERS: Final = 1 << 16

# RFC 9110 token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Outcomes of a header lookup, before any policy applies.
MISSING: Final = 0
VALID: Final = 1
INVALID: Final = 2


def baggage_session_id(values: Sequence[str]) -> tuple[int, str | None]:
    """Find the ``session.id`` member across the given ``baggage`` header values.

    Returns ``(MISSING, None)`` when no member has that key, ``(VALID, id)`` when
    the members that have it agree on one valid (percent-decoded) id, and
    ``(INVALID, None)`` otherwise.
    """
    found: str | None = None
    for header in values:
        if BAGGAGE_SESSION_KEY not in header:
            continue
        for member in header.split(","):
            key, sep, rest = member.partition("=")
            if not sep or key.strip() != BAGGAGE_SESSION_KEY:
                continue
            value = unquote(rest.split(";", 1)[0].strip())
            if found is not None and value != found:
                return INVALID, None
            found = value
    if found is None:
        return MISSING, None
    if _match_id(found) is None:
        return INVALID, None
    return VALID, found


def check_header_name(name: object, option: str = "") -> str:
    """``name`` if it is a valid HTTP header name, else ``TypeError``/``ValueError``
    (naming ``option``, the argument it was given as, when set)."""
    where = f"{option}: " if option else ""
    if not isinstance(name, str):
        raise TypeError(
            f"{where}header names must be str, not {type(name).__name__}: {_shown(name)}"
        )
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{where}invalid header name: {_shown(name)}")
    return name


def environ_key(name: str) -> str:
    """The WSGI ``environ`` key of header ``name`` (``X-Session-Id``: ``HTTP_X_SESSION_ID``)."""
    return "HTTP_" + name.upper().replace("-", "_")


@lru_cache(maxsize=16)
def name_spellings(lower: str, encoded: bool) -> frozenset[Any]:
    """Every spelling of the lower-case header name ``lower`` in any letter case
    (as latin-1 ``bytes`` when ``encoded``), or none for a name whose
    spellings would take more than 2 ** 16 characters in all (a name of more
    than 12 letters, or a long one), which would cost too much memory.

    A scan of response headers for the session header then costs one set
    lookup a name instead of a ``lower()`` of each name of its length
    (``Content-Type`` has the length of ``X-Session-Id``); for a longer name it
    compares the ``lower()`` of each name of its length.
    """
    letters = [(c, c.upper()) if c.upper() != c else (c,) for c in lower]
    if len(lower) << sum(len(options) > 1 for options in letters) > _MAX_SPELLED_CHARACTERS:
        return frozenset()
    spellings = map("".join, product(*letters))
    if encoded:
        return frozenset(name.encode("latin-1") for name in spellings)
    return frozenset(spellings)


def check_name_order(names: object, option: str) -> None:
    """Refuse header names that cannot be in priority order: one name (a
    ``str`` or ``bytes``) or a set (its order depends on the hash seed)."""
    if isinstance(names, (str, bytes)):
        raise TypeError(
            f"{option} must be a sequence of header names, not one name: {_shown(names)}"
        )
    if isinstance(names, (set, frozenset)):
        raise TypeError(
            f"{option} must be a sequence of header names in priority order, "
            f"not a {type(names).__name__}, which has no order: {_shown(names)}"
        )
    if not isinstance(names, Iterable):
        raise TypeError(
            f"{option} must be a sequence of header names, "
            f"not {type(names).__name__}: {_shown(names)}"
        )


class HeaderLookup:
    """Finds the session id among pre-lowered header names, in priority order.

    Built once (by the middleware's ``__init__`` or per call of
    :func:`extract_session_id`), used many times. ``lookup_raw`` works on raw
    ASGI byte pairs; ``lookup_values`` on values already grouped by lower-case
    name.
    """

    __slots__ = ("_environ_keys", "_index_raw", "_names", "_size")

    def __init__(self, header_names: Iterable[str]) -> None:
        check_name_order(header_names, "header_names")
        names: list[str] = []
        for name in header_names:
            # The rule the middleware and inject_session_headers() apply: a
            # misspelt name is an error, not a header that is never found.
            check_header_name(name, "header_names")
            if name.lower() not in names:
                names.append(name.lower())
        if not names:
            raise ValueError("header_names must name at least one header")
        self._names: tuple[str, ...] = tuple(names)
        self._size = len(names)
        self._index_raw = {n.encode("latin-1"): i for i, n in enumerate(names)}
        self._index_raw.setdefault(b"baggage", len(names) + 1)
        self._environ_keys = tuple(environ_key(n) for n in names)

    @property
    def names(self) -> tuple[str, ...]:
        """The accepted names, lower-case, in priority order."""
        return self._names

    @property
    def environ_keys(self) -> tuple[str, ...]:
        """The accepted names as WSGI ``environ`` keys, in priority order."""
        return self._environ_keys

    def lookup_raw(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, str | None]:
        """Look up raw ASGI header pairs (names lower-case bytes, values latin-1).

        Returns ``(MISSING | VALID | INVALID, id | None)``.
        """
        index = self._index_raw
        size = best = self._size
        value: bytes | None = None
        repeated = False
        baggage: list[str] | None = None
        for name, raw in headers:
            # Most headers are none of ours: one ``in`` test and on.
            if name in index:
                pos = index[name]
                if pos < best:
                    best, value, repeated = pos, raw, False
                elif pos == best:
                    repeated = True
                elif pos > size:  # ``baggage``, indexed past the accepted names
                    if baggage is None:
                        baggage = []
                    baggage.append(raw.decode("latin-1"))
        if value is None:
            if baggage is None:
                return MISSING, None
            return baggage_session_id(baggage)
        if repeated:
            return INVALID, None
        if not _raw_id_ok(value):
            return INVALID, None
        # ASCII by the rule, so the default (UTF-8) decoding is exact, and quickest.
        return VALID, value.decode()

    def lookup_environ(self, environ: Mapping[str, Any]) -> tuple[int, str | None]:
        """Look up a WSGI ``environ`` (``HTTP_...`` keys, latin-1 str values).

        Servers join repeated headers with ``", "``; the comma makes such a
        value invalid, which is the rule for several values anyway.
        """
        for key in self._environ_keys:
            value = environ.get(key)
            if value is None:
                continue
            if _match_id(value) is None:
                return INVALID, None
            return VALID, value
        baggage = environ.get("HTTP_BAGGAGE")
        if baggage is None:
            return MISSING, None
        return baggage_session_id((baggage,))

    def lookup_values(self, get: Any) -> tuple[int, str | None]:
        """Look up through ``get(lower_name) -> list[str] | None``."""
        for name in self._names:
            values = get(name)
            if values is None:
                continue
            if len(values) != 1 or _match_id(values[0]) is None:
                return INVALID, None
            return VALID, values[0]
        baggage = get("baggage")
        if baggage is None:
            return MISSING, None
        return baggage_session_id(baggage)


_DEFAULT_LOOKUP = HeaderLookup(ACCEPTED_HEADER_NAMES)


def _name_text(name: object) -> str:
    if isinstance(name, bytes):
        return name.decode("latin-1")
    if isinstance(name, str):
        return name
    raise TypeError(f"header names must be str or bytes, not {type(name).__name__}: {_shown(name)}")


def _is_environ(headers: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``headers`` is a WSGI environ or Django's ``request.META``: a
    plain dict with keys PEP 3333 requires (Django's ASGI requests have them
    too). Header mappings are never plain dicts of such keys; asking one of
    them for ``REQUEST_METHOD`` would find a ``Request-Method`` header."""
    return (
        isinstance(headers, dict) and "REQUEST_METHOD" in headers and "wsgi.multithread" in headers
    )


def _group(headers: object) -> dict[str, list[object]]:
    """Group any supported header shape by lower-case name.

    Values stay as given until :func:`_read` reads them: a header nobody
    looks at may hold anything (``None`` drops a header in ``requests``).
    """
    if _is_environ(headers):
        # A WSGI environ, or Django's request.META: its headers are the
        # HTTP_ keys (CONTENT_TYPE and CONTENT_LENGTH hold no session).
        pairs: Iterable[Any] = [
            (key[5:].replace("_", "-"), value)
            for key, value in headers.items()
            if isinstance(key, str) and key.startswith("HTTP_")
        ]
    elif isinstance(headers, Mapping) or hasattr(headers, "items"):
        pairs = headers.items()
    elif isinstance(headers, (list, tuple)):
        pairs = headers
    else:
        raise TypeError(
            "headers must be a mapping, an object with .items(), or a list of "
            f"(name, value) pairs, not {type(headers).__name__}"
        )
    grouped: dict[str, list[object]] = {}
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"headers must hold (name, value) pairs, not {_shown(pair)}") from None
        bucket = grouped.setdefault(_name_text(name).lower(), [])
        if isinstance(value, (list, tuple)):
            bucket.extend(value)
        else:
            bucket.append(value)
    return grouped


def _read(grouped: Mapping[str, list[object]], name: str) -> list[str] | None:
    """The values of one lower-case ``name`` in ``grouped``, as text.

    A ``None`` value is no value (``requests`` drops such a header); any other
    value that is not text reads as ``""``, which no id rule passes: the name
    is present with an invalid value.
    """
    values = grouped.get(name)
    if values is None:
        return None
    texts: list[str] = []
    for value in values:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, bytes):
            texts.append(value.decode("latin-1"))
        elif value is not None:
            texts.append("")
    # Only None values: no header. An empty list is present, with no value.
    return None if values and not texts and None in values else texts


def extract_session_id(
    headers: object, *, header_names: Sequence[str] | None = ACCEPTED_HEADER_NAMES
) -> str | None:
    """Return the valid session id carried by ``headers``, else ``None``.

    Names are matched case-insensitively, in the priority order of
    ``header_names``; the first name present decides (an invalid value gives
    ``None``, it does not fall through). Without any of those names, the W3C
    ``baggage`` member ``session.id`` is used. A WSGI ``environ`` (or
    Django's ``request.META``) is read by its ``HTTP_...`` keys: a ``dict``
    holding ``REQUEST_METHOD`` and ``wsgi.multithread``, as every server's
    does (a header of any name may come from a client).

    >>> extract_session_id({"mirascope-session-id": "abc"})
    'abc'
    >>> extract_session_id([(b"x-session-id", b"bad value")]) is None
    True
    """
    lookup = (
        _DEFAULT_LOOKUP
        # None: the default, as the middleware's accept_headers=None.
        if header_names is ACCEPTED_HEADER_NAMES or header_names is None
        else HeaderLookup(header_names)
    )
    return lookup.lookup_values(partial(_read, _group(headers)))[1]
