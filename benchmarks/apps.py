"""The trivial apps every benchmark wraps, and the app objects the servers load.

The bare apps do as little as an app can: answer ``200`` with a two-byte body.
Everything measured on top of them is the middleware's cost. The servers in
:mod:`benchmarks.end_to_end` load ``asgi_app`` / ``wsgi_app``, the same apps
sending the session header themselves (``*_with_header``: what the server
pays for one more response header, with no middleware), and the factories
below, which wrap the bare apps in the hand-written floor or in ``sessionctx``.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "BODY",
    "MANY_IDS",
    "VALID_ID",
    "asgi_app",
    "asgi_with_floor",
    "asgi_with_header",
    "asgi_with_sessionctx",
    "wsgi_app",
    "wsgi_with_floor",
    "wsgi_with_header",
    "wsgi_with_sessionctx",
]

BODY = b"ok"
#: The inbound session id of the "header valid" cases.
VALID_ID = "0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69"
#: The inbound ids of the "header valid, many ids" cases, one per request in
#: turn: valid v4 UUIDs (so every peer continues them too), as a busy service
#: sees them, the requests of many sessions interleaved. A middleware whose
#: cost hangs on one id coming again (a cache of ids) shows it here.
_random = random.Random(8)
MANY_IDS = tuple(str(uuid.UUID(int=_random.getrandbits(128), version=4)) for _ in range(1024))


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI: ``http.response.start`` then one ``http.response.body``."""
    # Fresh dicts and lists per call: middleware appends to these headers.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def wsgi_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """WSGI returning a list, so the server does no generator work."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [BODY]


async def asgi_with_header(scope: Scope, receive: Receive, send: Send) -> None:
    """``asgi_app`` that sends the session header itself, as a middleware would add it."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", b"2"),
                (b"x-session-id", VALID_ID.encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def wsgi_with_header(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """``wsgi_app`` that sends the session header itself, as a middleware would add it."""
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", "2"), ("X-Session-Id", VALID_ID)],
    )
    return [BODY]


def asgi_with_floor() -> ASGIApp:
    """``asgi_app`` inside the hand-written floor middleware (a server factory)."""
    from benchmarks.floor import AsgiFloorMiddleware

    return AsgiFloorMiddleware(asgi_app)


def wsgi_with_floor() -> WSGIApplication:
    """``wsgi_app`` inside the hand-written floor middleware (a server factory)."""
    from benchmarks.floor import WsgiFloorMiddleware

    app: WSGIApplication = WsgiFloorMiddleware(wsgi_app)
    return app


def asgi_with_sessionctx() -> ASGIApp:
    """``asgi_app`` inside ``sessionctx.asgi.SessionIdMiddleware`` (a server factory)."""
    from sessionctx.asgi import SessionIdMiddleware

    return SessionIdMiddleware(asgi_app)


def wsgi_with_sessionctx() -> WSGIApplication:
    """``wsgi_app`` inside ``sessionctx.wsgi.SessionIdMiddleware`` (a server factory)."""
    from sessionctx.wsgi import SessionIdMiddleware

    app: WSGIApplication = SessionIdMiddleware(wsgi_app)
    return app
