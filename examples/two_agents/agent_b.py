"""Agent B: a Flask service that does the work agent A asks for.

The WSGI ``SessionIdMiddleware`` wraps the Flask app, so each request runs in its own
context with the session named by A's ``X-Session-Id`` header. Inside the handler,
``propagated_context`` attaches A's trace context (``traceparent``) as well, so the
span B records is a child of A's span, in A's trace.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, request
from opentelemetry.trace import Tracer, format_span_id, format_trace_id

from sessionctx import current_session_id
from sessionctx.context import propagated_context
from sessionctx.wsgi import SessionIdMiddleware

__all__ = ["MAX_PAUSE", "create_app", "create_flask_app"]

log = logging.getLogger("agent-b")

#: Upper bound of ``?pause=`` in seconds: the demo slows B down to make requests overlap.
MAX_PAUSE = 1.0


def create_flask_app(tracer: Tracer) -> Flask:
    """The Flask app alone, without session middleware."""
    app = Flask("agent-b")

    @app.get("/work")
    def work() -> dict[str, Any]:
        with (
            propagated_context(request.headers),
            tracer.start_as_current_span("GET /work") as span,
        ):
            time.sleep(min(request.args.get("pause", 0.0, type=float), MAX_PAUSE))
            log.info("working for agent A")
            context = span.get_span_context()
            return {
                "session_id": current_session_id(),
                "trace_id": format_trace_id(context.trace_id),
                "span_id": format_span_id(context.span_id),
            }

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        # The session the middleware found on the request: nothing else sets one here.
        return {"session_id": current_session_id()}

    return app


def create_app(tracer: Tracer) -> SessionIdMiddleware:
    """Agent B as served: the Flask app inside the WSGI ``SessionIdMiddleware``."""
    return SessionIdMiddleware(create_flask_app(tracer))
