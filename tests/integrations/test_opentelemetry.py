"""``SessionSpanProcessor`` on a real SDK ``TracerProvider``."""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.context import Context as OtelContext
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
    use_span,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionctx import ContextThreadPoolExecutor, current_session_id, session
from sessionctx.asgi import SessionIdMiddleware
from sessionctx.context import extract_trace_headers, propagated_context
from sessionctx.integrations.opentelemetry import SessionSpanProcessor
from sessionctx.log_filters import SessionIdFilter
from sessionctx.wsgi import SessionIdMiddleware as WsgiSessionIdMiddleware
from tests.support import ASGIApp, Receive, Scope, Send
from tests.tracing import Tracing


@pytest.fixture
def recorder() -> Iterator[Tracing]:
    r = Tracing(SessionSpanProcessor())
    yield r
    r.provider.shutdown()


def test_spans_in_a_session_carry_its_id_and_attributes(recorder: Tracing) -> None:
    attributes = {"user": "u1", "plan": {"tier": "pro", "seats": [1, 2]}}
    tracer = recorder.tracer
    with (
        session("sess-1", attributes),
        tracer.start_as_current_span("outer"),
        tracer.start_as_current_span("inner"),
    ):
        pass
    for name in ("outer", "inner"):
        got = recorder.attributes(name)
        assert got["session.id"] == "sess-1"
        assert got["session.attributes"] == '{"user":"u1","plan":{"tier":"pro","seats":[1,2]}}'
        assert json.loads(str(got["session.attributes"])) == attributes


def test_a_session_without_attributes_sets_only_the_id(recorder: Tracing) -> None:
    with session("sess-1"), recorder.tracer.start_as_current_span("span"):
        pass
    assert recorder.attributes("span") == {"session.id": "sess-1"}


def test_spans_outside_a_session_get_nothing(recorder: Tracing) -> None:
    with recorder.tracer.start_as_current_span("span", attributes={"k": "v"}):
        pass
    assert recorder.attributes("span") == {"k": "v"}


def test_the_session_is_read_when_each_span_starts(recorder: Tracing) -> None:
    with recorder.tracer.start_as_current_span("parent"):
        with session("one"), recorder.tracer.start_as_current_span("first"):
            pass
        with session("two"), recorder.tracer.start_as_current_span("second"):
            pass
    assert "session.id" not in recorder.attributes("parent")
    assert recorder.attributes("first")["session.id"] == "one"
    assert recorder.attributes("second")["session.id"] == "two"


def test_spans_in_threads_see_the_session_only_through_a_context_copy(
    recorder: Tracing,
) -> None:
    def work(name: str) -> None:
        with recorder.tracer.start_as_current_span(name):
            pass

    with session("sess-1"):
        plain = threading.Thread(target=work, args=("plain-thread",))
        plain.start()
        plain.join(timeout=10)
        with ContextThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(work, "copied-context").result(timeout=10)
    assert "session.id" not in recorder.attributes("plain-thread")
    assert recorder.attributes("copied-context")["session.id"] == "sess-1"


def test_alias_names_and_a_custom_attributes_key() -> None:
    processor = SessionSpanProcessor(
        attribute_names=("session.id", "tracectrl.session_id", "mirascope.session.id"),
        attributes_key="app.session",
    )
    recorder = Tracing(processor)
    with session("sess-1", {"a": 1}), recorder.tracer.start_as_current_span("span"):
        pass
    assert recorder.attributes("span") == {
        "session.id": "sess-1",
        "tracectrl.session_id": "sess-1",
        "mirascope.session.id": "sess-1",
        "app.session": '{"a":1}',
    }


def test_attributes_key_none_leaves_the_attributes_out() -> None:
    recorder = Tracing(SessionSpanProcessor(attributes_key=None))
    with session("sess-1", {"a": 1}), recorder.tracer.start_as_current_span("span"):
        pass
    assert recorder.attributes("span") == {"session.id": "sess-1"}


@pytest.mark.parametrize(
    ("started_with", "expected"),
    [
        pytest.param(
            {"session.id": "explicit"},
            {
                "session.id": "explicit",
                "tracectrl.session_id": "ambient",
                "session.attributes": '{"a":1}',
            },
            id="id",
        ),
        pytest.param(
            {"tracectrl.session_id": "explicit"},
            {
                "session.id": "ambient",
                "tracectrl.session_id": "explicit",
                "session.attributes": '{"a":1}',
            },
            id="alias",
        ),
        pytest.param(
            {"session.attributes": "{}"},
            {
                "session.id": "ambient",
                "tracectrl.session_id": "ambient",
                "session.attributes": "{}",
            },
            id="attributes-key",
        ),
        pytest.param(
            {"session.id": "x", "tracectrl.session_id": "y", "session.attributes": "{}"},
            {"session.id": "x", "tracectrl.session_id": "y", "session.attributes": "{}"},
            id="every-name",
        ),
    ],
)
def test_a_value_the_span_was_started_with_wins(
    started_with: dict[str, str], expected: dict[str, str]
) -> None:
    recorder = Tracing(SessionSpanProcessor(attribute_names=("session.id", "tracectrl.session_id")))
    with (
        session("ambient", {"a": 1}),
        recorder.tracer.start_as_current_span("span", attributes=started_with),
    ):
        pass
    assert recorder.attributes("span") == expected


def test_options_are_kept_in_order_without_duplicates() -> None:
    processor = SessionSpanProcessor(attribute_names=["b", "a", "b"], attributes_key=None)
    assert processor.attribute_names == ("b", "a")
    assert processor.attributes_key is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"attribute_names": "session.id"}, TypeError, "not a single name", id="str"),
        pytest.param({"attribute_names": ()}, ValueError, "at least one", id="empty"),
        pytest.param({"attribute_names": ("",)}, ValueError, "must not be empty", id="blank"),
        pytest.param({"attribute_names": (1,)}, TypeError, "must be a str", id="not-str"),
        pytest.param(
            {"attribute_names": None}, TypeError, "attribute_names .* not NoneType", id="none"
        ),
        pytest.param({"attribute_names": 5}, TypeError, "attribute_names .* not int: 5", id="int"),
        pytest.param({"attribute_names": {"session.id": 1}}, TypeError, "not dict", id="mapping"),
        pytest.param({"attributes_key": ""}, ValueError, "must not be empty", id="blank-key"),
        pytest.param({"attributes_key": b"k"}, TypeError, "must be a str", id="bytes-key"),
        pytest.param(
            {"attributes_key": "session.id"}, ValueError, "also in attribute_names", id="clash"
        ),
    ],
)
def test_invalid_options_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SessionSpanProcessor(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# The request's SERVER span, started by an instrumentation outside the middleware
# --------------------------------------------------------------------------- #


def instrumented_app(
    recorder: Tracing, *, outermost: bool, handler_session: str | None = None, **options: Any
) -> ASGIApp:
    """A Starlette app under OpenTelemetry's ASGI middleware (what
    ``FastAPIInstrumentor`` installs) and ``SessionIdMiddleware``: inside it,
    as ``add_middleware`` puts it, or outermost."""

    async def endpoint(request: Request) -> PlainTextResponse:
        if handler_session is None:
            with recorder.tracer.start_as_current_span("work"):
                return PlainTextResponse("ok")
        # A session of the handler's own, and a span in it, before anything
        # else starts a span under the SERVER span.
        with session(handler_session), recorder.tracer.start_as_current_span("work"):
            return PlainTextResponse("ok")

    telemetry = Middleware(OpenTelemetryMiddleware, tracer_provider=recorder.provider)
    sessions = Middleware(SessionIdMiddleware, **options)
    if outermost:
        inner = Starlette(routes=[Route("/items", endpoint)], middleware=[telemetry])
        return SessionIdMiddleware(inner, **options)
    return Starlette(routes=[Route("/items", endpoint)], middleware=[telemetry, sessions])


async def get_items(app: ASGIApp, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get("/items", headers=headers)


def server_span_attributes(recorder: Tracing) -> dict[str, object]:
    (server,) = [s for s in recorder.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return dict(server.attributes or {})


async def check_server_span(recorder: Tracing, app: ASGIApp, *, tagged: bool) -> None:
    """One request with an id to ``app``, whose handler answers with the session
    it saw: its own; the SERVER span has that id when ``tagged``, else none."""
    response = await get_items(app, {"X-Session-Id": "sess-req"})
    assert response.text == "sess-req"
    assert server_span_attributes(recorder).get("session.id") == ("sess-req" if tagged else None)


@pytest.mark.anyio
@pytest.mark.parametrize("outermost", [False, True], ids=["instrumentation-outside", "outermost"])
async def test_the_request_server_span_gets_the_requests_session(
    recorder: Tracing, outermost: bool
) -> None:
    response = await get_items(
        instrumented_app(recorder, outermost=outermost), {"X-Session-Id": "sess-req"}
    )
    assert response.headers["x-session-id"] == "sess-req"
    assert server_span_attributes(recorder)["session.id"] == "sess-req"
    assert recorder.attributes("work")["session.id"] == "sess-req"


# FastAPI 0.142 and later start a SERVER span of their own in FastAPI.__call__,
# outside every add_middleware middleware, when a tracer provider is configured.
_FASTAPI_TRACES = "telemetry" in inspect.signature(FastAPI.__init__).parameters


@pytest.mark.anyio
@pytest.mark.skipif(not _FASTAPI_TRACES, reason="this FastAPI starts no span of its own")
@pytest.mark.parametrize("operation_spans", [True, False], ids=["operation-spans", "server-only"])
@pytest.mark.parametrize("outermost", [False, True], ids=["add_middleware", "outermost"])
async def test_fastapis_own_server_span_gets_the_session(
    recorder: Tracing, outermost: bool, operation_spans: bool
) -> None:
    telemetry = {"tracer_provider": recorder.provider, "metrics": False, "logs": False}
    options: dict[str, Any] = {"telemetry": {**telemetry, "operation_spans": operation_spans}}
    api = FastAPI(**options)

    @api.get("/items", response_class=PlainTextResponse)
    async def items() -> str:
        return current_session_id() or ""

    app: ASGIApp = api
    if outermost:
        app = SessionIdMiddleware(api)
    else:
        api.add_middleware(SessionIdMiddleware)
    # Outermost, the span starts in the session; under add_middleware, the
    # first span started under it (FastAPI's "fastapi.dependencies") sets it,
    # and without operation spans nothing does (see the README).
    await check_server_span(recorder, app, tagged=outermost or operation_spans)


# Starlette 1.x has an (experimental) OpenTelemetry middleware of its own.
_STARLETTE_TRACES = importlib.util.find_spec("starlette.middleware.opentelemetry") is not None


@pytest.mark.anyio
@pytest.mark.skipif(not _STARLETTE_TRACES, reason="this Starlette has no OpenTelemetryMiddleware")
@pytest.mark.parametrize("child_span", [True, False], ids=["child-span", "no-child-span"])
@pytest.mark.parametrize("outermost", [False, True], ids=["listed-after-it", "outermost"])
async def test_starlettes_own_server_span_gets_the_session(
    recorder: Tracing, outermost: bool, child_span: bool
) -> None:
    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware

    async def items(request: Request) -> PlainTextResponse:
        if child_span:
            with recorder.tracer.start_as_current_span("work"):
                pass
        return PlainTextResponse(current_session_id() or "")

    middleware = [Middleware(OpenTelemetryMiddleware, tracer_provider=recorder.provider)]
    if not outermost:
        # Listed after it: inside it.
        middleware.append(Middleware(SessionIdMiddleware))
    app: ASGIApp = Starlette(routes=[Route("/items", items)], middleware=middleware)
    if outermost:
        app = SessionIdMiddleware(app)
    # Inside it, only a span started under its own sets the session there:
    # it starts none itself.
    await check_server_span(recorder, app, tagged=outermost or child_span)


@pytest.mark.anyio
async def test_the_server_span_gets_the_requests_attributes_not_a_handler_session(
    recorder: Tracing,
) -> None:
    app = instrumented_app(
        recorder,
        outermost=False,
        handler_session="sess-inner",
        attributes=lambda scope: {"path": scope["path"]},
    )
    await get_items(app, {"X-Session-Id": "sess-req"})
    server = server_span_attributes(recorder)
    assert server["session.id"] == "sess-req"
    assert server["session.attributes"] == '{"path":"/items"}'
    assert recorder.attributes("work")["session.id"] == "sess-inner"


@pytest.mark.anyio
async def test_a_server_span_keeps_a_name_it_was_started_with() -> None:
    recorder = Tracing(SessionSpanProcessor(attribute_names=("session.id", "alias.id")))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with recorder.tracer.start_as_current_span("work"):
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def instrumented(scope: Scope, receive: Receive, send: Send) -> None:
        with recorder.tracer.start_as_current_span(
            "request", kind=SpanKind.SERVER, attributes={"alias.id": "given"}
        ):
            await SessionIdMiddleware(app)(scope, receive, send)

    try:
        await get_items(instrumented, {"X-Session-Id": "sess-req"})
    finally:
        recorder.provider.shutdown()
    assert recorder.attributes("request") == {"alias.id": "given", "session.id": "sess-req"}
    assert recorder.attributes("work") == {"session.id": "sess-req", "alias.id": "sess-req"}


def test_a_server_span_outside_any_request_is_left_alone(recorder: Tracing) -> None:
    # Only a request's session goes up to its SERVER span, not a session()
    # block of code that runs under some SERVER span.
    tracer = recorder.tracer
    with (
        tracer.start_as_current_span("server", kind=SpanKind.SERVER),
        session("block"),
        tracer.start_as_current_span("child"),
    ):
        pass
    assert "session.id" not in recorder.attributes("server")
    assert recorder.attributes("child")["session.id"] == "block"


@pytest.mark.anyio
async def test_a_finished_server_span_is_left_alone(recorder: Tracing) -> None:
    tracer = recorder.tracer
    server = tracer.start_span("server", kind=SpanKind.SERVER)
    server.end()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with use_span(server), tracer.start_as_current_span("late"):
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    await get_items(SessionIdMiddleware(app), {"X-Session-Id": "sess-req"})
    assert "session.id" not in recorder.attributes("server")
    assert recorder.attributes("late")["session.id"] == "sess-req"


def ignore_start(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], object]:
    """A WSGI ``start_response`` that keeps nothing."""
    return lambda data: None


def wsgi_app_with_a_span(recorder: Tracing) -> WsgiSessionIdMiddleware:
    """A WSGI app that starts a span ``work``, behind the session middleware."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with recorder.tracer.start_as_current_span("work"):
            start_response("204 No Content", [])
            return []

    return WsgiSessionIdMiddleware(app)


def test_a_wsgi_request_server_span_gets_the_session(recorder: Tracing) -> None:
    # What OpenTelemetry's WSGI middleware does around the session middleware:
    # the SERVER span is current when the session middleware copies the context.
    tracer = recorder.tracer
    sessions = wsgi_app_with_a_span(recorder)

    def instrumented(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with tracer.start_as_current_span("request", kind=SpanKind.SERVER):
            return sessions(environ, start_response)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_SESSION_ID": "sess-wsgi"}
    instrumented(environ, ignore_start)
    assert recorder.attributes("request")["session.id"] == "sess-wsgi"


@pytest.mark.anyio
async def test_an_app_called_in_process_leaves_the_callers_server_span_alone(
    recorder: Tracing,
) -> None:
    # The handler calls another app, with a SessionIdMiddleware of its own,
    # before its own request has started any span: that app's request, and
    # its spans, run under the caller's SERVER span, which keeps the caller's
    # session.
    tracer = recorder.tracer

    async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("inner work"):
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    inner = SessionIdMiddleware(inner_app)

    async def outer_app(scope: Scope, receive: Receive, send: Send) -> None:
        answer = await get_items(inner, {"X-Session-Id": "sess-inner"})
        assert answer.headers["x-session-id"] == "sess-inner"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    outer = OpenTelemetryMiddleware(
        SessionIdMiddleware(outer_app), tracer_provider=recorder.provider
    )
    await get_items(outer, {"X-Session-Id": "sess-outer"})
    assert server_span_attributes(recorder)["session.id"] == "sess-outer"
    assert recorder.attributes("inner work")["session.id"] == "sess-inner"


def test_a_wsgi_app_called_inside_a_session_leaves_the_server_span_alone(
    recorder: Tracing,
) -> None:
    tracer = recorder.tracer
    sessions = wsgi_app_with_a_span(recorder)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_SESSION_ID": "sess-wsgi"}
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER), session("caller"):
        sessions(environ, ignore_start)
    assert "session.id" not in recorder.attributes("request")
    assert recorder.attributes("work")["session.id"] == "sess-wsgi"


def remote_parent() -> OtelContext:
    """A context whose span is the caller's, from another process."""
    caller = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return set_span_in_context(NonRecordingSpan(caller))


@pytest.mark.anyio
@pytest.mark.parametrize("first_parent", ["remote", "none"])
async def test_a_first_span_under_no_local_parent_leaves_the_look_to_the_next(
    recorder: Tracing, first_parent: str
) -> None:
    # The handler's first span continues the caller's trace (or starts a new
    # one): not a child of the SERVER span, which the next span under it
    # still gives the request's session.
    tracer = recorder.tracer

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        context = remote_parent() if first_parent == "remote" else OtelContext()
        with tracer.start_as_current_span("job", context=context):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    outer = OpenTelemetryMiddleware(SessionIdMiddleware(app), tracer_provider=recorder.provider)
    await get_items(outer, {"X-Session-Id": "sess-req"})
    assert recorder.attributes("job")["session.id"] == "sess-req"
    assert server_span_attributes(recorder)["session.id"] == "sess-req"


@pytest.mark.anyio
async def test_each_processor_sets_its_names_on_the_server_span(recorder: Tracing) -> None:
    recorder.provider.add_span_processor(
        SessionSpanProcessor(attribute_names=("tracectrl.session_id",), attributes_key=None)
    )
    await get_items(instrumented_app(recorder, outermost=False), {"X-Session-Id": "sess-req"})
    server = server_span_attributes(recorder)
    assert server["session.id"] == "sess-req"
    assert server["tracectrl.session_id"] == "sess-req"


# --------------------------------------------------------------------------- #
# extract_trace_headers in a handler under an instrumentation that continued the
# caller's trace already (the README's service B)
# --------------------------------------------------------------------------- #

CALLER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER_TRACEPARENT = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"


def service_b(recorder: Tracing, how: str, carried: dict[str, str]) -> ASGIApp:
    async def endpoint(request: Request) -> PlainTextResponse:
        # ``carried``: the headers the handler continues from, by default the request's.
        headers = carried or request.headers
        if how == "extract":
            extract_trace_headers(headers)
            with recorder.tracer.start_as_current_span("work"):
                pass
        else:
            with propagated_context(headers), recorder.tracer.start_as_current_span("work"):
                pass
        return PlainTextResponse("ok")

    telemetry = Middleware(OpenTelemetryMiddleware, tracer_provider=recorder.provider)
    sessions = Middleware(SessionIdMiddleware)
    return Starlette(routes=[Route("/items", endpoint)], middleware=[telemetry, sessions])


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["extract", "propagated"])
async def test_spans_after_extract_stay_under_the_server_span_that_continued_the_trace(
    recorder: Tracing, how: str
) -> None:
    headers = {"traceparent": CALLER_TRACEPARENT, "X-Session-Id": "caller-1"}
    await get_items(service_b(recorder, how, {}), headers)

    (server,) = [s for s in recorder.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    work = recorder.span("work")
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == CALLER_TRACEPARENT.split("-")[2]
    assert work.parent is not None
    assert server.context is not None
    assert work.parent.span_id == server.context.span_id
    assert server_span_attributes(recorder)["session.id"] == "caller-1"
    assert recorder.attributes("work")["session.id"] == "caller-1"


@pytest.mark.anyio
async def test_extract_of_another_trace_still_parents_on_the_caller(recorder: Tracing) -> None:
    # Headers the server's span did not continue (a message's, say): its trace wins.
    carried = {"traceparent": OTHER_TRACEPARENT, "X-Session-Id": "job-1"}
    await get_items(service_b(recorder, "extract", carried), {"traceparent": CALLER_TRACEPARENT})

    work = recorder.span("work")
    assert work.parent is not None
    assert f"{work.parent.span_id:016x}" == OTHER_TRACEPARENT.split("-")[2]
    assert recorder.attributes("work")["session.id"] == "job-1"


def test_opentelemetry_log_records_carry_the_filters_session_id() -> None:
    """OpenTelemetry's ``LoggingHandler`` exports a record's extra attributes:
    ``SessionIdFilter`` on it gives each log record ``session_id``."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs import export as log_export

    exporter_class = getattr(log_export, "InMemoryLogRecordExporter", None)
    if exporter_class is None:  # SDKs before 1.39
        exporter_class = log_export.InMemoryLogExporter
    exporter = exporter_class()
    provider = LoggerProvider()
    provider.add_log_record_processor(log_export.SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        # Deprecated in newer SDKs for opentelemetry-instrumentation-logging's,
        # which exports the same attributes.
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.sdk._logs import LoggingHandler

        handler = LoggingHandler(logger_provider=provider)
    handler.addFilter(SessionIdFilter())
    logger = logging.getLogger("tests.otel-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with session("sess-log"):
            logger.info("inside")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
        provider.shutdown()

    exported = {
        str(data.log_record.body): dict(data.log_record.attributes or {})
        for data in exporter.get_finished_logs()
    }
    assert exported["inside"]["session_id"] == "sess-log"
    assert exported["outside"]["session_id"] == "-"
