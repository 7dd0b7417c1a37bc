"""httpx transports that send the active session id on every outgoing request.

Each transport wraps another one (httpx's own by default) and adds
``X-Session-Id`` while a session is active in the code that sends the request::

    import httpx
    from sessionctx.integrations.httpx import AsyncSessionTransport, SessionTransport

    client = httpx.Client(transport=SessionTransport())
    async_client = httpx.AsyncClient(transport=AsyncSessionTransport())

A client given a transport no longer builds its own from ``verify``, ``cert``,
``http2``, ``limits`` or ``trust_env`` (proxies from the environment are then
ignored); set those on the wrapped transport instead, e.g.
``SessionTransport(httpx.HTTPTransport(retries=2))``. A client's ``proxy=`` and
``mounts=`` route requests through transports of their own, around this one:
give the proxy to the wrapped transport,
``SessionTransport(httpx.HTTPTransport(proxy=httpx.Proxy(...)))``, and wrap
each mounted transport in a session transport of its own.

``hosts=[...]`` limits the id to those hosts (a redirect elsewhere goes
without it): ``SessionTransport(hosts=["api.internal", ".svc.cluster.local"])``.

The header is written into the request being sent, so
``response.request.headers`` shows it. A request sent again
(``client.send(request)``, a retry helper) carries the id of the session it is
sent in then, or none outside a session, not the one it was first sent in.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from types import TracebackType

from sessionctx._extras import missing_library

try:
    import httpx
except ImportError as _error:
    missing_library(_error, __name__, "httpx", 'pip install "sessionctx[httpx]"')

from sessionctx._outgoing import (
    CHALLENGES,
    add_outgoing_header,
    hosts_option,
    take_back_header,
)

__all__ = ["AsyncSessionTransport", "SessionTransport"]

# The id a transport put on each request it sent, kept as long as the request.
_added: weakref.WeakKeyDictionary[httpx.Request, str] = weakref.WeakKeyDictionary()


class SessionTransport(httpx.BaseTransport):
    """Wrap ``transport`` (default ``httpx.HTTPTransport()``) and add ``X-Session-Id``.

    The header is added to each request sent while a session is active in the
    thread that sends it, unless the caller set one of the accepted session
    headers on the request. A request sent again gets the id of the session
    active then (none outside a session) in place of the one added before.
    Closing, and use as a context manager, are passed on to the wrapped
    transport.

    ``hosts``: the hosts that get the id (host names or IP addresses, any
    letter case; ``".example.com"`` also matches every name under it). A
    request to any other host, a redirect's included, is sent without it.
    ``None`` (the default): every host.

    >>> client = httpx.Client(transport=SessionTransport(httpx.HTTPTransport(retries=2)))
    """

    def __init__(
        self, transport: httpx.BaseTransport | None = None, *, hosts: Iterable[str] | None = None
    ) -> None:
        self._hosts, self._sends_to = hosts_option(hosts)
        if transport is None:
            transport = httpx.HTTPTransport()
        elif not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"transport must be an httpx.BaseTransport, not {type(transport).__name__}"
            )
        self.transport = transport

    @property
    def hosts(self) -> tuple[str, ...] | None:
        """The ``hosts`` option, as a tuple (``None``: every host)."""
        return self._hosts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Add the session header, then send ``request`` through the wrapped transport."""
        add_outgoing_header(request, request.headers, _added, _allowed(self._sends_to, request))
        return _taken_back_when_resent(request, self.transport.handle_request(request))

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()

    def __enter__(self) -> SessionTransport:
        self.transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.transport.__exit__(exc_type, exc_value, traceback)


class AsyncSessionTransport(httpx.AsyncBaseTransport):
    """Wrap ``transport`` (default ``httpx.AsyncHTTPTransport()``) and add ``X-Session-Id``.

    The header is added to each request sent while a session is active in the
    task that sends it, unless the caller set one of the accepted session
    headers on the request. A request sent again gets the id of the session
    active then (none outside a session) in place of the one added before.
    Closing, and use as an async context manager, are passed on to the wrapped
    transport. ``hosts`` as for :class:`SessionTransport`.

    >>> client = httpx.AsyncClient(transport=AsyncSessionTransport())
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        hosts: Iterable[str] | None = None,
    ) -> None:
        self._hosts, self._sends_to = hosts_option(hosts)
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport, not {type(transport).__name__}"
            )
        self.transport = transport

    @property
    def hosts(self) -> tuple[str, ...] | None:
        """The ``hosts`` option, as a tuple (``None``: every host)."""
        return self._hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Add the session header, then send ``request`` through the wrapped transport."""
        add_outgoing_header(request, request.headers, _added, _allowed(self._sends_to, request))
        return _taken_back_when_resent(request, await self.transport.handle_async_request(request))

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncSessionTransport:
        await self.transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.transport.__aexit__(exc_type, exc_value, traceback)


def _allowed(sends_to: Callable[[str], bool] | None, request: httpx.Request) -> bool:
    # raw_host: the name as sent, IDNA-encoded (``host`` decodes it).
    return sends_to is None or sends_to(request.url.raw_host.decode("ascii", "replace"))


def _taken_back_when_resent(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    # The client builds a redirect's next request from a copy of the request's
    # headers (and resends the request on an authentication challenge): the id
    # goes there only through this transport, to a host it may reach.
    if response.has_redirect_location or response.status_code in CHALLENGES:
        take_back_header(request, request.headers, _added)
    return response
