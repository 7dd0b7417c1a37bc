"""An application configured by the README's logging block, as a user's module is:
``app`` (ASGI) and ``wsgi_app`` (WSGI), each failing on ``/fail``.

The block is read from the README itself and run when this module is imported,
after the server configured its own loggers: import it only in a server's
process, never in the test process, whose logging it would change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionctx.asgi import SessionIdMiddleware as AsgiMiddleware
from sessionctx.wsgi import SessionIdMiddleware as WsgiMiddleware
from tests.support import readme_logging

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

exec(readme_logging())


class Failed(RuntimeError):
    """What the application raises on ``/fail``."""


def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _fail(request: Request) -> PlainTextResponse:
    raise Failed("the request failed")


def _wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/fail":
        raise Failed("the request failed")
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


#: Starlette's own 500 goes out through the middleware, outermost as the README has it.
app = AsgiMiddleware(Starlette(routes=[Route("/", _ok), Route("/fail", _fail)]))
#: The server's own 500, with no session header (the README's handle_errors adds one).
wsgi_app = WsgiMiddleware(_wsgi)
