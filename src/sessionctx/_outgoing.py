"""What the outgoing integrations (httpx, requests) share: the ``hosts``
option, and adding the session header to a request and taking it back.

Imported by those integrations only: ``import sessionctx`` does not load it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, MutableMapping
from contextlib import suppress
from typing import Final, TypeVar

from sessionctx._headers import ACCEPTED_HEADER_NAMES, SESSION_HEADER_NAME
from sessionctx._validation import _shown
from sessionctx.session import current_session_id

__all__ = [
    "CHALLENGES",
    "Hosts",
    "add_outgoing_header",
    "hosts_option",
    "take_back_header",
]

T = TypeVar("T")


#: A host name as a client sends it: lower-case letters, digits, ``-`` and ``_``
#: in dot-separated labels (IDNA names in their ``xn--`` form).
_HOST_NAME: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


class Hosts:
    """The ``hosts`` option of the outgoing integrations, checked once: whether
    a request's host (as the client sends it: lower case, IDNA) gets the id.

    Each entry is a host name or IP address, matched whole and in any letter
    case; one that starts with ``.`` (or ``*.``) also matches every name under
    it. Non-ASCII names are encoded with IDNA 2008 (UTS 46 mapping), by the
    ``idna`` package that httpx and requests encode hosts with; IPv6 addresses
    are compared in their compressed form.
    """

    __slots__ = ("_ends", "_exact")

    def __init__(self, hosts: Iterable[str]) -> None:
        exact: set[str] = set()
        ends: set[str] = set()
        for entry in hosts:
            if not isinstance(entry, str):
                raise TypeError(f"hosts must hold str, not {type(entry).__name__}: {_shown(entry)}")
            name, domain = self._parse(entry)
            exact.add(name)
            if domain:
                ends.add("." + name)
        self._exact = frozenset(exact)
        self._ends = tuple(sorted(ends))

    @staticmethod
    def _parse(entry: str) -> tuple[str, bool]:
        """The entry's host in the form a client sends it, and whether it names a domain.

        Errors show the whole entry (``str.__repr__``, which a ``str``
        subclass cannot make fail): the part at fault may be at its end.
        """
        shown = str.__repr__(entry)
        name = entry.strip().lower()
        domain = name.startswith((".", "*."))
        if domain:
            name = name[name.index(".") + 1 :]
        name = name.removesuffix(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]  # an IPv6 address in URL brackets
        bad = f"hosts must hold host names or IP addresses (no scheme, port or path): {shown}"
        if ":" in name:
            if domain:
                raise ValueError(f"hosts: an IP address has no names under it: {shown}")
            try:
                address = ipaddress.IPv6Address(name)
            except ValueError:
                raise ValueError(bad) from None
            if address.scope_id is not None:
                raise ValueError(bad)
            return address.compressed, False
        if not name.isascii():
            # Only the integrations, whose clients depend on it, get here.
            import idna

            try:
                name = idna.encode(name, uts46=True).decode("ascii")
            except UnicodeError:
                raise ValueError(f"hosts holds a name IDNA cannot encode: {shown}") from None
        if not _HOST_NAME.fullmatch(name):
            raise ValueError(bad)
        labels = name.split(".")
        if len(name) > 253 or max(map(len, labels)) > 63:
            raise ValueError(
                f"hosts holds a name longer than DNS allows (63 characters a label, 253 in all): "
                f"{shown}"
            )
        if domain and name.rpartition(".")[2].isdigit():
            # A name's last label is never all digits: an IPv4 address's is.
            raise ValueError(f"hosts: an IP address has no names under it: {shown}")
        return name, domain

    def __call__(self, host: str) -> bool:
        host = host.lower()
        if host.endswith("."):
            host = host.rstrip(".")
            if host.rpartition(".")[2].isdigit():
                # Written like an IPv4 address with a final dot: the clients
                # look this up as a name, which may lead anywhere.
                return False
        if host in self._exact:
            return True
        if ":" in host:
            # An IPv6 address written another way than the entry.
            with suppress(ValueError):
                return ipaddress.IPv6Address(host).compressed in self._exact
            return False
        return bool(self._ends) and host.endswith(self._ends)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Hosts) and self._exact == other._exact and self._ends == other._ends
        )

    __hash__ = None  # type: ignore[assignment]


def hosts_option(
    hosts: Iterable[str] | None,
) -> tuple[tuple[str, ...] | None, Hosts | None]:
    """The ``hosts`` option of the outgoing integrations, checked: as they keep
    and show it (a tuple, read once: it may be an iterator), and its matcher
    (``None`` for both: every host gets the id)."""
    if hosts is None:
        return None, None
    if isinstance(hosts, (str, bytes)):
        raise TypeError(
            f"hosts must be an iterable of host names, not a single {type(hosts).__name__}: "
            f"{_shown(hosts)}"
        )
    if not isinstance(hosts, Iterable):
        raise TypeError(
            f"hosts must be an iterable of host names, not {type(hosts).__name__}: {_shown(hosts)}"
        )
    kept: list[str] = []
    for entry in hosts:
        # Checked as it comes: an iterable of something else (an ip_network's
        # addresses) is refused at its first item, not once it is all read.
        if not isinstance(entry, str):
            raise TypeError(f"hosts must hold str, not {type(entry).__name__}: {_shown(entry)}")
        kept.append(entry)
    return tuple(kept), Hosts(kept)


#: Authentication challenges (401, 407): the clients' auth flows send the
#: request again, or a copy of it (see :func:`take_back_header`).
CHALLENGES: Final = frozenset({401, 407})


def take_back_header(
    request: T, headers: MutableMapping[str, str], added: MutableMapping[T, str]
) -> None:
    """Remove from ``request`` the id :func:`add_outgoing_header` put on it, if
    the header still holds it.

    The integrations call it when a response is a redirect or an
    authentication challenge: the client builds the next request from a copy
    of this one's headers, and a copy of the id would reach the next host even
    when the request is sent another way than through the integration (a
    client's other mounts, ``next_request`` sent later in another session or
    outside any).
    """
    ours = added.pop(request, None)
    if ours is not None and headers.get(SESSION_HEADER_NAME) == ours:
        del headers[SESSION_HEADER_NAME]


def add_outgoing_header(
    request: T,
    headers: MutableMapping[str, str],
    added: MutableMapping[T, str],
    allowed: bool = True,
) -> None:
    """Add the active id to the case-insensitive ``headers`` of an outgoing
    ``request`` (httpx, requests), unless the caller set a session header.

    A session header the caller set under any accepted name wins: adding ours
    would outrank it on the receiving side. ``headers`` are the request's own,
    changed in place, so a request sent again still has the id added before.
    ``added`` maps each request (weakly: it keeps none alive) to the id this
    function put on it; a header still holding exactly that id is ours, and
    is replaced by the active id, or removed when no session is active.

    A ``SESSION_HEADER_NAME`` header that already holds the active id, with no
    other accepted name present, is recorded as ours too: a request the client
    (httpx, requests) built with a copy of the header added to another one
    (a redirect's, when :func:`take_back_header` did not run) arrives so, and
    sent again later it must not keep that id.

    ``allowed=False`` (a host outside the integration's ``hosts``): no id is
    added, and such a header holding the active id is removed.
    """
    take_back_header(request, headers, added)
    sid = current_session_id()
    if sid is None:
        return
    for name in ACCEPTED_HEADER_NAMES:
        if name != SESSION_HEADER_NAME and name in headers:
            return
    present = headers.get(SESSION_HEADER_NAME)
    if not allowed:
        # A host the id must not reach: the copy of the header that a
        # redirect's request carries over from the request before goes too.
        if present == sid:
            del headers[SESSION_HEADER_NAME]
        return
    if present is None:
        headers[SESSION_HEADER_NAME] = sid
    elif present != sid:
        return
    added[request] = sid
