"""Agent A: a FastAPI service that asks agent B for help.

``SessionIdMiddleware`` wraps the whole FastAPI app (outermost), so every response
carries ``X-Session-Id``, FastAPI's own 500 included. Under ``/strict`` the same app
is served with ``on_invalid="reject"``: an invalid inbound id gets a 400 there
instead of a fresh session.

The endpoints are plain ``def`` functions: FastAPI runs them in its thread pool in a
copy of the request's context, so the session set by the middleware is there, and
the one shared :func:`b_client` sends each request's own id to B.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.trace import Tracer, format_trace_id
from starlette.routing import Mount, Router

from sessionctx import SESSION_HEADER_NAME, current_session_id
from sessionctx.asgi import SessionIdMiddleware
from sessionctx.context import inject_trace_headers
from sessionctx.integrations.httpx import SessionTransport

__all__ = ["ScriptedFailure", "b_client", "create_api", "create_app"]

log = logging.getLogger("agent-a")


class ScriptedFailure(RuntimeError):
    """Raised by ``GET /boom``: the demo shows that its 500 still carries the session."""


def b_client(b_url: str) -> httpx.Client:
    """The client A uses to call B; ``SessionTransport`` adds the caller's session id.

    ``trust_env=False``: proxy variables in the environment must not reroute calls
    meant for 127.0.0.1.
    """
    return httpx.Client(base_url=b_url, transport=SessionTransport(), timeout=5.0, trust_env=False)


def create_api(b: httpx.Client, tracer: Tracer) -> FastAPI:
    """The FastAPI app alone, without session middleware."""
    api = FastAPI(title="agent-a", openapi_url=None)

    @api.get("/ask")
    def ask(pause: float = 0.0) -> dict[str, Any]:
        with tracer.start_as_current_span("GET /ask") as span:
            log.info("asking agent B")
            # inject_trace_headers writes traceparent (and the session header), so
            # B's span joins this trace.
            reply = b.get("/work", params={"pause": pause}, headers=inject_trace_headers())
            reply.raise_for_status()
            # No headers of A's own: SessionTransport alone carries the session.
            plain = b.get("/whoami")
            plain.raise_for_status()
            return {
                "session_id": current_session_id(),
                "trace_id": format_trace_id(span.get_span_context().trace_id),
                "b": reply.json(),
                # What B's SessionIdMiddleware echoed on its response.
                "b_echoed": reply.headers.get(SESSION_HEADER_NAME),
                "b_plain": plain.json()["session_id"],
            }

    @api.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"session_id": current_session_id()}

    @api.get("/boom")
    def boom() -> None:
        with tracer.start_as_current_span("GET /boom"):
            log.info("failing on purpose")
            raise ScriptedFailure("scripted failure")

    return api


def create_app(b: httpx.Client, tracer: Tracer) -> Router:
    """Agent A as served: the app behind two ``SessionIdMiddleware`` configurations."""
    api = create_api(b, tracer)
    return Router(
        routes=[
            Mount("/strict", app=SessionIdMiddleware(api, on_invalid="reject")),
            Mount("/", app=SessionIdMiddleware(api)),
        ]
    )
