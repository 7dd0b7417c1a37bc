"""A ``requests`` transport adapter that sends the active session id.

::

    import requests
    from sessionctx.integrations.requests import instrument_session

    http = instrument_session(requests.Session())
    http.get("https://api.example.com/items")   # carries X-Session-Id inside a session

or mount the adapter yourself, with any ``HTTPAdapter`` options::

    from sessionctx.integrations.requests import SessionIdAdapter

    http.mount("https://", SessionIdAdapter(max_retries=3, pool_maxsize=20))

``hosts=[...]`` limits the id to those hosts (a redirect elsewhere goes
without it): ``instrument_session(requests.Session(), hosts=["api.internal"])``.

The header is written into the ``PreparedRequest`` being sent, so
``response.request.headers`` shows it. A prepared request sent again
(``http.send(prepared)``) carries the id of the session it is sent in then, or
none outside a session, not the one it was first sent in.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlparse, urlsplit

from sessionctx._extras import missing_library

try:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import parse_url
except ImportError as _error:
    missing_library(_error, __name__, "requests", 'pip install "sessionctx[requests]"')


from sessionctx._outgoing import (
    CHALLENGES,
    add_outgoing_header,
    hosts_option,
    take_back_header,
)
from sessionctx._validation import _shown

__all__ = ["SessionIdAdapter", "instrument_session"]

_PREFIXES = ("http://", "https://")

# The id an adapter put on each request it sent, kept as long as the request.
_added: weakref.WeakKeyDictionary[requests.PreparedRequest, str] = weakref.WeakKeyDictionary()


class SessionIdAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that adds ``X-Session-Id`` while a session is active.

    The id is read in the thread that sends the request. A request on which
    the caller set one of the accepted session headers is left as it is, so
    an explicit header wins. A prepared request sent again gets the id of the
    session active then (none outside a session) in place of the one added
    before. Takes the same options as ``HTTPAdapter``, and ``hosts``: the
    hosts that get the id (host names or IP addresses, any letter case;
    ``".example.com"`` also matches every name under it); a request to any
    other host, a redirect's included, is sent without it. ``None`` (the
    default): every host.
    """

    # What pickling an HTTPAdapter keeps (requests pickles sessions whole); a
    # list, as requests declares it.
    __attrs__: list[str] = [*HTTPAdapter.__attrs__, "hosts"]  # noqa: RUF012

    def __init__(self, *args: Any, hosts: Iterable[str] | None = None, **kwargs: Any) -> None:
        self._set_hosts(hosts)
        super().__init__(*args, **kwargs)

    def _set_hosts(self, hosts: Iterable[str] | None) -> None:
        self._hosts, self._sends_to = hosts_option(hosts)

    @property
    def hosts(self) -> tuple[str, ...] | None:
        """The ``hosts`` option, as a tuple (``None``: every host); set it to
        change them, checked as the option is."""
        return self._hosts

    @hosts.setter
    def hosts(self, hosts: Iterable[str] | None) -> None:
        self._set_hosts(hosts)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An adapter pickled before ``hosts`` existed sends to every host.
        hosts = state.get("hosts", getattr(self, "hosts", None))
        super_any: Any = super()
        super_any.__setstate__(state)
        self._set_hosts(hosts)

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        """Add the session header unless the request carries one of the accepted names."""
        super().add_headers(request, **kwargs)
        sends_to = self._sends_to
        if sends_to is None:
            allowed = True
        else:
            host = _request_host(request.url or "")
            allowed = host is not None and sends_to(host)
        add_outgoing_header(request, request.headers, _added, allowed)

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send ``request`` with the session header (see :meth:`add_headers`).

        When the response is a redirect or an authentication challenge, the
        header this adapter added is taken off ``request`` again: requests
        builds the next request from a copy of it (an auth handler resends a
        copy, and the redirect after that is built from ``request``), which
        gets the id only through an adapter of this kind, to a host it may
        reach.
        """
        response = super().send(request, *args, **kwargs)
        if response.is_redirect or response.status_code in CHALLENGES:
            take_back_header(request, request.headers, _added)
        return response


# requests 2.32 and newer connect to the host urllib.parse reads in a URL;
# older ones to the host urllib3 reads, which differs for some URLs (a raw
# backslash in one set on a prepared request by hand).
_URLLIB3_PICKS_THE_HOST: Final = not hasattr(HTTPAdapter, "get_connection_with_tls_context")


def _request_host(url: str) -> str | None:
    """The host of ``url`` that requests connects to, lower case; with requests
    before 2.32, ``None`` when urllib.parse and urllib3 read different hosts in
    it, since the id must then not be sent."""
    try:
        host = urlsplit(url).hostname or ""
        if not _URLLIB3_PICKS_THE_HOST:
            return host
        other = parse_url(urlparse(url).geturl()).host or ""
    except ValueError:  # urllib3's LocationParseError is one
        return None
    if other.startswith("["):
        other = other[1:-1]  # an IPv6 address, as urllib.parse reads it
    return host if other.lower() == host else None


def _copy_settings(source: object, target: SessionIdAdapter) -> None:
    # An HTTPAdapter pickles exactly its settings (max_retries, pool sizes,
    # pool_block); the type stubs leave these two methods out.
    source_any: Any = source
    target_any: Any = target
    target_any.__setstate__(source_any.__getstate__())


def instrument_session(
    s: requests.Session, *, hosts: Iterable[str] | None = None
) -> requests.Session:
    """Mount :class:`SessionIdAdapter` on ``s`` for ``http://`` and ``https://``; return ``s``.

    ``hosts``: see :class:`SessionIdAdapter` (``None``: every host). A plain
    ``HTTPAdapter`` mounted there is replaced by a ``SessionIdAdapter`` with
    the same ``max_retries`` and pool settings (and then closed). Calling it
    again with the same ``hosts`` (in any order or spelling) changes nothing;
    a ``SessionIdAdapter`` mounted there with other ``hosts`` raises
    ``ValueError``, so that no call widens or narrows them unseen. Any other
    adapter class mounted there raises ``TypeError``: mount a subclass of it
    that also derives from ``SessionIdAdapter`` instead. Adapters mounted on
    longer prefixes (one host, say) are not touched.
    """
    if not isinstance(s, requests.Session):
        raise TypeError(f"expected a requests.Session, not {type(s).__name__}: {_shown(s)}")
    # Read once (it may be an iterator) and checked before anything is mounted.
    wanted, wanted_filter = hosts_option(hosts)
    current = {prefix: s.adapters.get(prefix) for prefix in _PREFIXES}
    for prefix, adapter in current.items():
        if adapter is None or type(adapter) is HTTPAdapter:
            continue
        if not isinstance(adapter, SessionIdAdapter):
            raise TypeError(
                f"cannot instrument the {type(adapter).__name__} mounted on {prefix!r}; "
                "mount a subclass of it and SessionIdAdapter instead"
            )
        # The same hosts, in any order or spelling, are no change.
        if adapter._sends_to != wanted_filter:
            raise ValueError(
                f"the SessionIdAdapter mounted on {prefix!r} has hosts={adapter.hosts!r}, "
                f"not {wanted!r}; mount SessionIdAdapter(hosts=...) yourself to change them"
            )
    for prefix, adapter in current.items():
        if isinstance(adapter, SessionIdAdapter):
            continue
        replacement = SessionIdAdapter(hosts=wanted)
        if adapter is not None:
            _copy_settings(adapter, replacement)
        s.mount(prefix, replacement)
        if adapter is not None:
            adapter.close()
    return s
