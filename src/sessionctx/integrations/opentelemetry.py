"""An OpenTelemetry span processor that stamps the session id on every span.

Needs the OpenTelemetry SDK (a span processor is an SDK object)::

    pip install "sessionctx[otel]" opentelemetry-sdk

Usage::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from sessionctx.integrations.opentelemetry import SessionSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor())
    trace.set_tracer_provider(provider)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sessionctx._extras import missing_library

try:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span, SpanProcessor
    from opentelemetry.trace import SpanKind, get_current_span
except ImportError as _error:
    missing_library(
        _error, __name__, "opentelemetry", 'pip install "sessionctx[otel]" opentelemetry-sdk'
    )

from sessionctx._validation import _shown
from sessionctx.session import (
    SessionContext,
    _get,
    _plain_context,
    _request_of,
    current_session,
)

__all__ = ["SessionSpanProcessor"]


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}: {_shown(value)}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


class SessionSpanProcessor(SpanProcessor):
    """Set the active session on each span when it starts.

    For every span started while a session is active in the code that starts
    it (the current thread or task, not the span's parent), the id is set
    under each name in ``attribute_names`` (add aliases such as
    ``"tracectrl.session_id"`` or ``"mirascope.session.id"`` for backends that
    look for them), and the session's attributes, as compact JSON, under
    ``attributes_key`` when the session has attributes (``None`` turns that
    off). A name the span was started with, e.g.
    ``start_span(..., attributes={"session.id": ...})``, keeps its value: an
    explicit value wins, and only the names it does not have are set. Spans
    started with no session active get no attribute; for them the processor
    costs one ``ContextVar`` read.

    The request's own span: an instrumentation outside ``SessionIdMiddleware``
    (``FastAPIInstrumentor``, OpenTelemetry's ASGI or WSGI middleware) starts
    its ``SERVER`` span before the request has a session. When the first span
    started in the request under a span of this process is a child of a local
    ``SERVER`` span still recording (the ASGI instrumentation's ``http
    receive`` / ``http send`` spans are), the request's session is set on that
    parent too: the request's own session, not one set inside it, on the names
    the parent does not have. Not for a request that began inside a session,
    such as an app called in-process by another request's code: the parent is
    that request's span. Wrapping ``SessionIdMiddleware`` outermost gives the
    ``SERVER`` span its session when it starts.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(
    ...     SessionSpanProcessor(attribute_names=("session.id", "tracectrl.session_id"))
    ... )
    """

    def __init__(
        self,
        attribute_names: Sequence[str] = ("session.id",),
        attributes_key: str | None = "session.attributes",
    ) -> None:
        single = isinstance(attribute_names, (str, bytes))
        if (
            single
            or isinstance(attribute_names, Mapping)
            or not isinstance(attribute_names, Iterable)
        ):
            what = "a single name" if single else type(attribute_names).__name__
            raise TypeError(
                f"attribute_names must be a sequence of attribute names, not {what}: "
                f"{_shown(attribute_names)}"
            )
        names = tuple(dict.fromkeys(_check_name(n, "attribute name") for n in attribute_names))
        if not names:
            raise ValueError("attribute_names must name at least one attribute")
        if attributes_key is not None:
            _check_name(attributes_key, "attributes_key")
            if attributes_key in names:
                raise ValueError(
                    f"attributes_key {attributes_key!r} is also in attribute_names {names!r}"
                )
        self.attribute_names: tuple[str, ...] = names
        self.attributes_key = attributes_key

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Set the active session on ``span`` (and, once per request, on its
        ``SERVER`` parent started before the session), as the class describes."""
        ctx = current_session()
        if ctx is None:
            return
        self._stamp(span, ctx)
        request = _request_of(_get())
        if request is None:
            return
        # One look per request and processor, at the parent of the first span
        # started in the request under a span of this process: later spans pay
        # a length check and a list scan. The processors that looked are a
        # fourth item on the middleware's list (see sessionctx.session._Active).
        looked: list[SessionSpanProcessor] | None = request[3] if len(request) > 3 else None
        if looked is not None and self in looked:
            return
        parent: Any = get_current_span(parent_context)
        if not isinstance(parent, Span):
            # No parent, or a remote one (a span under the caller's trace
            # context): the next span may still be the SERVER span's child.
            return
        if looked is None:
            request.append([self])
        else:
            looked.append(self)
        # True: a request that began outside any session. One called in-process
        # from another request's code runs under that request's SERVER span.
        if (
            request[2] is True
            and parent.kind is SpanKind.SERVER
            and parent.is_recording()
            and not all(map((parent.attributes or {}).__contains__, self.attribute_names))
        ):
            # The request's SERVER span, started before its session: the
            # request's own session, not one set inside it, on the names it
            # does not have.
            self._stamp(parent, request[1] or _plain_context(request[0]))

    def _stamp(self, span: Span, ctx: SessionContext) -> None:
        # What the span was started with: the SDK stores it before on_start.
        started_with = span.attributes or ()
        attributes = {name: ctx.id for name in self.attribute_names if name not in started_with}
        key = self.attributes_key
        # ``attributes`` first: ``attributes_json`` is set whenever it is not None.
        if ctx.attributes is not None and key is not None and key not in started_with:
            attributes[key] = cast(str, ctx.attributes_json)
        if attributes:
            span.set_attributes(attributes)
