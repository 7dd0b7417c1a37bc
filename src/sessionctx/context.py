"""Carry the trace and the session id across a service boundary in HTTP headers.

Needs ``opentelemetry-api`` (``pip install "sessionctx[otel]"``). It uses the
process-wide propagator that OpenTelemetry is configured with (by default W3C
``traceparent``/``tracestate`` plus W3C ``baggage``) and never replaces it, so
baggage and any propagator you install keep working.

The calling service::

    from sessionctx.context import inject_trace_headers

    headers = {}
    inject_trace_headers(headers)          # traceparent, baggage, X-Session-Id
    httpx.post("http://agent-b/run", headers=headers)

The receiving service, for one block::

    from sessionctx.context import propagated_context

    with propagated_context(request.headers):
        ...  # spans are children of the caller's span; current_session_id() is the caller's

or, as in the original TraceCtrl snippet, for the rest of the handler::

    extract_trace_headers(request.headers)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TypeVar, overload

from sessionctx._extras import missing_library

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import Getter
except ImportError as _error:
    missing_library(_error, __name__, "opentelemetry", 'pip install "sessionctx[otel]"')

from sessionctx._headers import _group, _read
from sessionctx.session import (
    _headers_to_fill,
    current_session_id,
    extract_session_id,
    inject_session_headers,
    reset_session,
    set_session_id,
)

__all__ = ["extract_trace_headers", "inject_trace_headers", "propagated_context"]

H = TypeVar("H", bound=MutableMapping[str, str])


class _LowerCaseGetter(Getter[Mapping[str, list[object]]]):
    """Reads headers grouped by lower-case name, in whatever case a propagator asks."""

    def get(self, carrier: Mapping[str, list[object]], key: str) -> list[str] | None:
        return _read(carrier, key.lower())

    def keys(self, carrier: Mapping[str, list[object]]) -> list[str]:
        return list(carrier)


_GETTER = _LowerCaseGetter()


@overload
def inject_trace_headers(headers: None = None) -> dict[str, str]: ...
@overload
def inject_trace_headers(headers: dict[str, str]) -> dict[str, str]: ...
@overload
def inject_trace_headers(headers: H) -> H: ...
def inject_trace_headers(
    headers: MutableMapping[str, str] | None = None,
) -> MutableMapping[str, str]:
    """Write the current trace context and session id into ``headers``, in place.

    Runs the global OpenTelemetry propagator (``traceparent``, ``tracestate``
    and ``baggage`` by default) on the current context, then adds
    ``X-Session-Id`` when a session is active. ``headers`` is filled in place
    and returned (an empty dict passed in is the dict that gets filled);
    ``None`` gets a new dict.

    >>> from sessionctx import session
    >>> with session("abc"):
    ...     inject_trace_headers({})
    {'X-Session-Id': 'abc'}
    """
    # Checked before the propagator writes into it.
    headers = _headers_to_fill(headers)
    propagate.inject(headers)
    return inject_session_headers(headers)


def _extract(headers: object) -> tuple[Context, str | None]:
    grouped = _group(headers)
    # On top of the current context, as OpenTelemetry's propagators compose:
    # headers without ``traceparent`` (a caller that sends only its session)
    # keep the current span, the server's say, instead of starting a new trace.
    current = otel_context.get_current()
    ctx = propagate.extract(grouped, context=current, getter=_GETTER)
    span = trace.get_current_span(current)
    if _continues(span, trace.get_current_span(ctx).get_span_context()):
        # The server's instrumentation continued this very trace already: its
        # span stays the parent of what follows, as without this call, instead
        # of the spans after it becoming its siblings under the caller's.
        ctx = trace.set_span_in_context(span, ctx)
    return ctx, extract_session_id(grouped)


def _continues(span: trace.Span, caller: trace.SpanContext) -> bool:
    """Whether ``span`` is recording, and a child of the span ``caller``."""
    parent = getattr(span, "parent", None)  # an SDK span's parent
    return (
        isinstance(parent, trace.SpanContext)
        and caller.is_valid
        and parent.trace_id == caller.trace_id
        and parent.span_id == caller.span_id
        and span.is_recording()
    )


def _session_differs(sid: str | None) -> bool:
    # The same id already active (e.g. set by the middleware from the same
    # header) is kept as is, so its attributes survive.
    if sid is None:
        return False
    return current_session_id() != sid


def extract_trace_headers(headers: object) -> Context:
    """Continue the caller's trace and session for the rest of the current context.

    Extracts with the global OpenTelemetry propagator (header names are
    matched case-insensitively; ``headers`` may be a dict, any object with
    ``.items()`` such as Starlette, httpx or werkzeug headers, raw ASGI
    pairs, or a WSGI ``environ`` / Django ``request.META``), **attaches**
    the result to the current context, and when the headers carry a valid
    session id (``X-Session-Id``, the other accepted names, or the
    ``baggage`` member ``session.id``) makes it the active
    session. Returns the extracted ``Context``.

    The headers are trusted: call it for requests from your own services
    only, since it overrides the session the middleware chose (also with
    ``trust_incoming=False``).

    Nothing is undone: the trace context and session stay attached until the
    current context ends, which is the end of the request for an asyncio task
    per request (uvicorn, hypercorn) or a thread that copied its context. In a
    thread that serves many requests (a WSGI server, a worker loop) they would
    outlive the request; use :func:`propagated_context` there.
    """
    ctx, sid = _extract(headers)
    otel_context.attach(ctx)
    if _session_differs(sid):
        set_session_id(sid)
    return ctx


@contextmanager
def propagated_context(headers: object) -> Iterator[Context]:
    """Like :func:`extract_trace_headers`, but only for the ``with`` block.

    On exit, normal or by exception, the session is reset and the trace
    context detached, so the code after the block sees what it saw before.
    Yields the extracted ``Context``.

    >>> from sessionctx import current_session_id
    >>> with propagated_context({"X-Session-Id": "abc"}):
    ...     current_session_id()
    'abc'
    >>> current_session_id() is None
    True
    """
    ctx, sid = _extract(headers)
    otel_token = otel_context.attach(ctx)
    try:
        session_token = set_session_id(sid) if _session_differs(sid) else None
        try:
            yield ctx
        finally:
            if session_token is not None:
                reset_session(session_token)
    finally:
        otel_context.detach(otel_token)
