"""The other ways to get a per-request id.

All but one are configured to do the floor's work: read ``X-Session-Id``,
accept exactly the ids the id rule accepts, make ``str(uuid.uuid4())``
otherwise, expose the id to the app through a ContextVar and append it to the
response:

- ``asgi-correlation-id``'s ``CorrelationIdMiddleware`` (pure ASGI), once as
  deployed with its defaults (only ``header_name`` set: ids must be uuid4s,
  new ids are ``uuid4().hex``, the request header is rewritten) and once with
  the id rule and without rewriting, i.e. sessionctx's behaviour;
- ``starlette-context``'s ``RawContextMiddleware`` (pure ASGI) with a plugin
  written the way the library's own plugins are;
- a Starlette ``BaseHTTPMiddleware`` subclass, the most common hand-rolled way.
"""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from starlette.datastructures import MutableHeaders
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message
from starlette_context import context
from starlette_context.middleware import RawContextMiddleware
from starlette_context.plugins import Plugin

from benchmarks.floor import matches_id_rule

__all__ = [
    "base_http_middleware",
    "correlation_id_defaults",
    "correlation_id_middleware",
    "starlette_context_middleware",
]

HEADER = "X-Session-Id"


def _new_id() -> str:
    return str(uuid.uuid4())


def _quiet_correlation_id_logger() -> None:
    # An invalid inbound id makes the library log a warning; a NullHandler keeps
    # that cost (building the record) without writing a million lines to stderr.
    logger = logging.getLogger("asgi_correlation_id")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def correlation_id_defaults(app: ASGIApp) -> ASGIApp:
    """``CorrelationIdMiddleware`` as its README deploys it, reading ``X-Session-Id``."""
    _quiet_correlation_id_logger()
    middleware: ASGIApp = CorrelationIdMiddleware(app, header_name=HEADER)
    return middleware


def correlation_id_middleware(app: ASGIApp) -> ASGIApp:
    """``CorrelationIdMiddleware`` reading ``X-Session-Id`` with the id rule as validator.

    ``update_request_header=False`` matches sessionctx's default, so neither
    rewrites the request headers.
    """
    _quiet_correlation_id_logger()
    middleware: ASGIApp = CorrelationIdMiddleware(
        app,
        header_name=HEADER,
        update_request_header=False,
        generator=_new_id,
        validator=matches_id_rule,
    )
    return middleware


class SessionIdPlugin(Plugin):
    """A ``starlette-context`` plugin for ``X-Session-Id``, shaped like the bundled ones."""

    key = HEADER

    async def process_request(self, request: Request | HTTPConnection) -> Any:
        value = request.headers.get(self.key)
        if value is None or not matches_id_rule(value):
            value = _new_id()
        return value

    async def enrich_response(self, arg: Response | Message) -> None:
        if isinstance(arg, Response):
            return
        if arg["type"] == "http.response.start":
            MutableHeaders(scope=arg).append(self.key, str(context.get(self.key)))


def starlette_context_middleware(app: ASGIApp) -> ASGIApp:
    """``RawContextMiddleware`` with :class:`SessionIdPlugin`."""
    middleware: ASGIApp = RawContextMiddleware(app, plugins=(SessionIdPlugin(),))
    return middleware


#: What the ``BaseHTTPMiddleware`` version sets for the app.
base_http_session_id: ContextVar[str | None] = ContextVar("base_http_session_id", default=None)


class _SessionIdHTTPMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        value = request.headers.get(HEADER)
        if value is None or not matches_id_rule(value):
            value = _new_id()
        token = base_http_session_id.set(value)
        try:
            response = await call_next(request)
        finally:
            base_http_session_id.reset(token)
        response.headers.append(HEADER, value)
        return response


def base_http_middleware(app: ASGIApp) -> ASGIApp:
    """The same work written as a Starlette ``BaseHTTPMiddleware``."""
    return _SessionIdHTTPMiddleware(app)
