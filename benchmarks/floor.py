"""Hand-written minimal session middleware: the floor the library is measured against.

Each does the least a correct session middleware can do: read one header, check
it against the id rule with one compiled regex, put the id in a ContextVar
(reset in ``finally``) and append it to the response headers. A missing or
invalid id is replaced by ``str(uuid.uuid4())``, the obvious way to make one.

What the floor leaves out and ``sessionctx`` does: several accepted header
names in priority order plus the ``baggage`` fallback, rejecting repeated
headers, keeping a header the app already set, the ``scope``/``environ`` key,
a ``SessionContext`` object, and options. The ratio to the floor is the price
of those.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["AsgiFloorMiddleware", "WsgiFloorMiddleware", "floor_session_id", "matches_id_rule"]

# The id rule of SPEC.md section 1, written out independently of sessionctx:
# 1-200 printable ASCII characters except space, '"', ',', ';' and '\'.
_ID = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,200}")
_match = _ID.fullmatch

#: The session id the floor middleware set; what the app sees.
floor_session_id: ContextVar[str | None] = ContextVar("floor_session_id", default=None)


def matches_id_rule(value: str) -> bool:
    """Whether ``value`` follows the id rule (the floor's own copy of it)."""
    return _match(value) is not None


class AsgiFloorMiddleware:
    """Pure ASGI, one header, no options."""

    def __init__(self, app: ASGIApp, header_name: str = "X-Session-Id") -> None:
        self.app = app
        self.header = header_name.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self.header
        sid = None
        for name, value in scope["headers"]:
            if name == header:
                sid = value.decode("latin-1")
                break
        if sid is None or _match(sid) is None:
            sid = str(uuid.uuid4())
        pair = (header, sid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), pair]
            await send(message)

        token = floor_session_id.set(sid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            floor_session_id.reset(token)


class WsgiFloorMiddleware:
    """WSGI, one header, no options.

    The id is set around the app call only: enough for a body that is already
    built (a list), not for a generator body that reads the id while the
    server iterates it, which ``sessionctx.wsgi`` also covers.
    """

    def __init__(self, app: WSGIApplication, header_name: str = "X-Session-Id") -> None:
        self.app = app
        self.header_name = header_name
        self.environ_key = "HTTP_" + header_name.upper().replace("-", "_")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sid = environ.get(self.environ_key)
        if sid is None or _match(sid) is None:
            sid = str(uuid.uuid4())
        pair = (self.header_name, sid)

        def start_with_id(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType]
            | tuple[None, None, None]
            | None = None,
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, pair], exc_info)

        token = floor_session_id.set(sid)
        try:
            return self.app(environ, start_with_id)
        finally:
            floor_session_id.reset(token)
