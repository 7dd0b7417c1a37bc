"""An application configured by the README's logging block, as a user's module is:
``app`` (ASGI) and ``wsgi_app`` (WSGI), each failing on ``/fail``.

The block is read from the README itself and run when this module is imported,
after the server configured its own loggers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionctx.asgi import SessionIdMiddleware as AsgiMiddleware
from sessionctx.wsgi import SessionIdMiddleware as WsgiMiddleware
from tests.support import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_SECTION = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("### Logging (stdlib)", 1)[1]
_BLOCK = re.search(r"```python\n(.*?)```", _SECTION, re.S)
if _BLOCK is None:
    raise RuntimeError("README.md: no Python block under 'Logging (stdlib)'")
#: The README's logging configuration, as run here.
README_LOGGING = _BLOCK[1]
exec(README_LOGGING)


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
