"""Trace propagation between services: ``sessionctx.context`` with the real OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import tests.tracing
from sessionctx import current_session, current_session_id, new_session, session
from sessionctx.asgi import SessionIdMiddleware
from sessionctx.context import extract_trace_headers, inject_trace_headers, propagated_context
from sessionctx.integrations.httpx import AsyncSessionTransport
from tests.support import HOST, QuietHandler, send_json, serving_in_thread

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


class Tracing(tests.tracing.Tracing):
    """The shared test tracer, and what the two-agent tests check of it."""

    def assert_b_continues_a(self, sid: str) -> int:
        """Agent B's span is a child of Agent A's, both carry ``sid``; returns the trace id."""
        a, b = self.span("agent-a"), self.span("agent-b")
        assert a.context is not None
        assert b.context is not None
        assert b.parent is not None
        assert b.context.trace_id == a.context.trace_id
        assert b.parent.span_id == a.context.span_id
        assert a.attributes is not None
        assert b.attributes is not None
        assert a.attributes["session.id"] == b.attributes["session.id"] == sid
        trace_id: int = a.context.trace_id
        return trace_id


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    t = Tracing()
    yield t
    t.provider.shutdown()


@pytest.fixture(autouse=True)
def _global_propagator_untouched() -> Iterator[None]:
    before = propagate.get_global_textmap()
    yield
    assert propagate.get_global_textmap() is before


def in_fresh_context(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in an empty context, as code in another service or thread would."""
    return contextvars.Context().run(fn)


def current_trace_id() -> int:
    return trace.get_current_span().get_span_context().trace_id


# --------------------------------------------------------------------------- #
# inject_trace_headers
# --------------------------------------------------------------------------- #


def test_inject_fills_the_dict_it_is_given(tracing: Tracing) -> None:
    headers: dict[str, str] = {}
    with session("sess-1"), tracing.tracer.start_as_current_span("a") as span:
        returned = inject_trace_headers(headers)
    assert returned is headers
    ctx = span.get_span_context()
    assert headers == {
        "traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}",
        "X-Session-Id": "sess-1",
    }


def test_inject_keeps_the_headers_already_there() -> None:
    headers = {"Accept": "application/json"}
    with session("sess-1"):
        inject_trace_headers(headers)
    assert headers == {"Accept": "application/json", "X-Session-Id": "sess-1"}


def test_inject_without_argument_returns_a_new_dict() -> None:
    with session("sess-1"):
        first = inject_trace_headers()
        second = inject_trace_headers()
    assert first == second == {"X-Session-Id": "sess-1"}
    assert first is not second


def test_inject_outside_a_session_and_span_writes_nothing() -> None:
    assert inject_trace_headers({}) == {}


def test_inject_writes_into_any_mutable_mapping(tracing: Tracing) -> None:
    headers = httpx.Headers()
    with session("sess-1"), tracing.tracer.start_as_current_span("a"):
        assert inject_trace_headers(headers) is headers
    assert headers["x-session-id"] == "sess-1"
    assert headers["traceparent"].startswith("00-")


class _OnlySetItem:
    """Has __setitem__ but no keys(): not a mapping of headers."""

    def __init__(self) -> None:
        self.written: dict[str, str] = {}

    def __setitem__(self, key: str, value: str) -> None:
        self.written[key] = value


@pytest.mark.parametrize("headers", [[], "traceparent", 5])
def test_inject_refuses_what_is_no_mapping_also_with_a_span(
    tracing: Tracing, headers: object
) -> None:
    with session("sess-1"), tracing.tracer.start_as_current_span("a"):
        with pytest.raises(TypeError, match="headers must be a mutable mapping"):
            inject_trace_headers(headers)  # type: ignore[call-overload]
        half = _OnlySetItem()
        with pytest.raises(TypeError, match="headers must be a mutable mapping"):
            inject_trace_headers(half)  # type: ignore[call-overload]
    # Refused before the propagator wrote into it.
    assert half.written == {}


def test_inject_sends_w3c_baggage_along() -> None:
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        headers = inject_trace_headers({})
    finally:
        otel_context.detach(token)
    assert headers == {"baggage": "tenant=acme"}


# --------------------------------------------------------------------------- #
# extract_trace_headers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"traceparent": TRACEPARENT, "X-Session-Id": "abc"}, id="dict"),
        pytest.param({"TraceParent": TRACEPARENT, "X-SESSION-ID": "abc"}, id="dict-mixed-case"),
        pytest.param({"TRACEPARENT": [TRACEPARENT], "x-session-id": ["abc"]}, id="dict-of-lists"),
        pytest.param(
            [(b"traceparent", TRACEPARENT.encode()), (b"x-session-id", b"abc")], id="raw-asgi"
        ),
        pytest.param(
            httpx.Headers({"Traceparent": TRACEPARENT, "X-Session-Id": "abc"}), id="httpx"
        ),
        pytest.param(
            Headers(raw=[(b"traceparent", TRACEPARENT.encode()), (b"x-session-id", b"abc")]),
            id="starlette",
        ),
        pytest.param({"traceparent": TRACEPARENT, "Mirascope-Session-Id": "abc"}, id="other-name"),
        pytest.param(
            {"traceparent": TRACEPARENT, "baggage": "session.id=abc"}, id="baggage-session-id"
        ),
        # requests' way of dropping a header: a header nobody reads is not checked.
        pytest.param(
            {"traceparent": TRACEPARENT, "X-Session-Id": "abc", "Authorization": None},
            id="none-for-another-header",
        ),
        pytest.param(
            {
                "REQUEST_METHOD": "GET",
                "wsgi.version": (1, 0),
                "wsgi.multithread": True,
                "HTTP_TRACEPARENT": TRACEPARENT,
                "HTTP_X_SESSION_ID": "abc",
            },
            id="wsgi-environ",
        ),
    ],
)
def test_extract_attaches_the_trace_and_sets_the_session(headers: object) -> None:
    def service() -> tuple[int, int, int, str | None]:
        returned = extract_trace_headers(headers)
        returned_ids = trace.get_current_span(returned).get_span_context()
        current_ids = trace.get_current_span().get_span_context()
        return (
            returned_ids.trace_id,
            current_ids.trace_id,
            current_ids.span_id,
            current_session_id(),
        )

    assert in_fresh_context(service) == (TRACE_ID, TRACE_ID, SPAN_ID, "abc")


def test_extract_makes_new_spans_children_of_the_caller(tracing: Tracing) -> None:
    def service() -> None:
        extract_trace_headers({"traceparent": TRACEPARENT, "X-Session-Id": "abc"})
        with tracing.tracer.start_as_current_span("handler"):
            pass

    in_fresh_context(service)
    span = tracing.span("handler")
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == TRACE_ID
    assert span.parent.span_id == SPAN_ID
    assert span.parent.is_remote
    assert span.attributes is not None
    assert span.attributes["session.id"] == "abc"


@pytest.mark.parametrize(
    "session_header",
    [
        pytest.param({}, id="absent"),
        pytest.param({"X-Session-Id": "bad value"}, id="invalid"),
        pytest.param({"X-Session-Id": ["a", "b"]}, id="repeated"),
    ],
)
def test_extract_without_a_valid_session_leaves_the_session_alone(
    session_header: Mapping[str, object],
) -> None:
    def service() -> tuple[int, str | None]:
        with session("outer"):
            extract_trace_headers({"traceparent": TRACEPARENT, **session_header})
            return current_trace_id(), current_session_id()

    assert in_fresh_context(service) == (TRACE_ID, "outer")


def test_extract_keeps_an_active_session_with_the_same_id() -> None:
    def service() -> object:
        with session("abc", {"user": "u1"}) as active:
            extract_trace_headers({"x-session-id": "abc"})
            return current_session() is active

    assert in_fresh_context(service) is True


def test_extract_stays_attached_for_the_rest_of_the_context() -> None:
    def service() -> None:
        extract_trace_headers({"traceparent": TRACEPARENT, "X-Session-Id": "abc"})

    ctx = contextvars.Context()
    ctx.run(service)
    # Later code in the same context, e.g. the rest of the request's task.
    assert ctx.run(lambda: (current_trace_id(), current_session_id())) == (TRACE_ID, "abc")


def test_extract_rejects_headers_of_unknown_shape() -> None:
    with pytest.raises(TypeError, match="headers must be"):
        in_fresh_context(lambda: extract_trace_headers(42))


# --------------------------------------------------------------------------- #
# propagated_context
# --------------------------------------------------------------------------- #


def test_propagated_context_applies_inside_the_block_only(tracing: Tracing) -> None:
    with session("outer"), tracing.tracer.start_as_current_span("outer") as outer:
        with propagated_context({"traceparent": TRACEPARENT, "X-Session-Id": "abc"}) as ctx:
            inside = current_trace_id(), current_session_id()
            assert trace.get_current_span(ctx).get_span_context().trace_id == TRACE_ID
        after = trace.get_current_span(), current_session_id()
    assert inside == (TRACE_ID, "abc")
    assert after == (outer, "outer")


def test_propagated_context_is_undone_on_exception() -> None:
    headers = {"traceparent": TRACEPARENT, "X-Session-Id": "abc"}
    with pytest.raises(RuntimeError, match="boom"), propagated_context(headers):
        raise RuntimeError("boom")
    assert current_session_id() is None
    assert not trace.get_current_span().get_span_context().is_valid


def test_propagated_context_without_a_session_header_keeps_the_outer_session() -> None:
    with session("outer"), propagated_context({"traceparent": TRACEPARENT}):
        assert (current_trace_id(), current_session_id()) == (TRACE_ID, "outer")


def test_headers_without_a_trace_keep_the_current_span_and_baggage(tracing: Tracing) -> None:
    # A caller that sends only its session (inject_session_headers, the httpx
    # transport): spans in the block stay in the server's trace.
    def service() -> tuple[Context, Context]:
        with tracing.tracer.start_as_current_span("server"):
            token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                with propagated_context({"X-Session-Id": "abc"}):
                    assert baggage.get_baggage("tenant") == "acme"
                    with tracing.tracer.start_as_current_span("in-block"):
                        pass
                extracted = extract_trace_headers({"X-Session-Id": "abc"})
                with tracing.tracer.start_as_current_span("after-extract"):
                    pass
                return extracted, otel_context.get_current()
            finally:
                otel_context.detach(token)

    extracted, current = in_fresh_context(service)
    server = tracing.span("server")
    assert server.context is not None
    for name in ("in-block", "after-extract"):
        child = tracing.span(name)
        assert child.parent is not None
        assert child.parent.span_id == server.context.span_id
        assert child.attributes is not None
        assert child.attributes["session.id"] == "abc"
    assert baggage.get_baggage("tenant", extracted) == "acme"
    assert current == extracted


def test_propagated_context_nests() -> None:
    other = f"00-{1:032x}-{2:016x}-01"
    with propagated_context({"traceparent": TRACEPARENT, "X-Session-Id": "a"}):
        with propagated_context({"traceparent": other, "X-Session-Id": "b"}):
            inner = current_trace_id(), current_session_id()
        outer = current_trace_id(), current_session_id()
    assert inner == (1, "b")
    assert outer == (TRACE_ID, "a")


@pytest.mark.anyio
async def test_propagated_context_is_per_task() -> None:
    seen: dict[str, tuple[int, str | None]] = {}

    async def handle(name: str, trace_id: int) -> None:
        traceparent = f"00-{trace_id:032x}-{SPAN_ID:016x}-01"
        with propagated_context({"traceparent": traceparent, "X-Session-Id": name}):
            await asyncio.sleep(0)
            seen[name] = current_trace_id(), current_session_id()

    await asyncio.gather(handle("one", 1), handle("two", 2))
    assert seen == {"one": (1, "one"), "two": (2, "two")}


# --------------------------------------------------------------------------- #
# The global propagator: used, never replaced
# --------------------------------------------------------------------------- #


def test_w3c_baggage_survives_a_round_trip() -> None:
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with session("abc"):
            headers = inject_trace_headers({})
    finally:
        otel_context.detach(token)
    with propagated_context(headers):
        assert baggage.get_baggage("tenant") == "acme"
        assert current_session_id() == "abc"
    assert baggage.get_baggage("tenant") is None


class RequestIdPropagator(TextMapPropagator):
    """Carries a request id in ``X-Request-Id``, asking for it in mixed case."""

    KEY = otel_context.create_key("tests.request_id")

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        value = otel_context.get_value(self.KEY, context)
        if isinstance(value, str):
            setter.set(carrier, "X-Request-Id", value)

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        values = getter.get(carrier, "X-Request-Id")
        listed = getter.keys(carrier)
        context = otel_context.set_value("tests.keys", listed, context)
        if not values:
            return context
        return otel_context.set_value(self.KEY, values[0], context)

    @property
    def fields(self) -> set[str]:
        return {"X-Request-Id"}


@pytest.fixture
def request_id_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(RequestIdPropagator())
    try:
        yield
    finally:
        propagate.set_global_textmap(before)


@pytest.mark.usefixtures("request_id_propagator")
def test_the_configured_global_propagator_is_the_one_used() -> None:
    token = otel_context.attach(otel_context.set_value(RequestIdPropagator.KEY, "req-7"))
    try:
        headers = inject_trace_headers({})
    finally:
        otel_context.detach(token)
    assert headers == {"X-Request-Id": "req-7"}

    received = {"x-request-id": "req-7", "Traceparent": TRACEPARENT}
    with propagated_context(received):
        assert otel_context.get_value(RequestIdPropagator.KEY) == "req-7"
        assert otel_context.get_value("tests.keys") == ["x-request-id", "traceparent"]
        # Only the configured propagator runs: no W3C trace context here.
        assert not trace.get_current_span().get_span_context().is_valid


# --------------------------------------------------------------------------- #
# Two in-process services over httpx
# --------------------------------------------------------------------------- #


def isolated(app: ASGIApp) -> ASGIApp:
    """Run each request of ``app`` in a task with an empty context.

    httpx's ``ASGITransport`` calls the app in the caller's task, so without
    this the "other service" would simply inherit the caller's span and session.
    """

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        await contextvars.Context().run(asyncio.ensure_future, app(scope, receive, send))

    return call


def agent_b(tracing: Tracing, style: str) -> ASGIApp:
    def report() -> JSONResponse:
        with tracing.tracer.start_as_current_span("agent-b") as span:
            return JSONResponse(
                {"trace_id": span.get_span_context().trace_id, "session_id": current_session_id()}
            )

    async def run(request: Request) -> JSONResponse:
        if style == "propagated_context":
            with propagated_context(request.headers):
                return report()
        extract_trace_headers(request.headers)
        # All spans now share the same session and trace.
        return report()

    app: ASGIApp = Starlette(routes=[Route("/run", run, methods=["POST"])])
    if style == "behind-middleware":
        app = SessionIdMiddleware(app)
    return isolated(app)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "style", ["propagated_context", "extract_trace_headers", "behind-middleware"]
)
async def test_a_call_between_services_shares_trace_and_session(
    tracing: Tracing, style: str
) -> None:
    transport = AsyncSessionTransport(httpx.ASGITransport(app=agent_b(tracing, style)))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent-b") as client:
        with session("agent-a-session"), tracing.tracer.start_as_current_span("agent-a"):
            response = await client.post("/run", headers=inject_trace_headers({}))

    trace_id = tracing.assert_b_continues_a("agent-a-session")
    assert response.json() == {"trace_id": trace_id, "session_id": "agent-a-session"}
    assert response.request.headers.get_list("x-session-id") == ["agent-a-session"]


@pytest.mark.anyio
async def test_without_propagation_the_services_share_nothing(tracing: Tracing) -> None:
    transport = httpx.ASGITransport(app=agent_b(tracing, "propagated_context"))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent-b") as client:
        with session("agent-a-session"), tracing.tracer.start_as_current_span("agent-a"):
            response = await client.post("/run")

    a, b = tracing.span("agent-a"), tracing.span("agent-b")
    assert a.context is not None
    assert b.context is not None
    assert b.context.trace_id != a.context.trace_id
    assert b.parent is None
    assert b.attributes is not None
    assert "session.id" not in b.attributes
    assert response.json()["session_id"] is None


# --------------------------------------------------------------------------- #
# The TraceCtrl multi-agent example, over real HTTP with requests
# --------------------------------------------------------------------------- #


class AgentBServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tracing: Tracing) -> None:
        super().__init__((HOST, 0), AgentBHandler)
        self.tracing = tracing


class AgentBHandler(QuietHandler):
    server: AgentBServer

    def do_POST(self) -> None:
        # Agent B as in the TraceCtrl example (import root renamed); each request runs in a
        # new thread, i.e. a fresh context.
        extract_trace_headers(self.headers)
        # All spans now share the same session and trace
        with self.server.tracing.tracer.start_as_current_span("agent-b"):
            answer = {"session_id": current_session_id()}
        send_json(self, answer)


@pytest.fixture
def agent_b_url(tracing: Tracing) -> Iterator[str]:
    with serving_in_thread(AgentBServer(tracing)) as port:
        yield f"http://{HOST}:{port}/run"


def test_tracectrl_multi_agent_example(
    tracing: Tracing, agent_b_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SESSIONCTX_SESSION_ID", raising=False)
    monkeypatch.delenv("TRACECTRL_SESSION_ID", raising=False)

    def agent_a() -> tuple[str, dict[str, Any]]:
        sid = new_session()
        with tracing.tracer.start_as_current_span("agent-a"):
            headers: dict[str, str] = {}
            inject_trace_headers(headers)
            response = requests.post(agent_b_url, headers=headers, json={}, timeout=10)
        return sid, response.json()

    sid, answer = in_fresh_context(agent_a)

    tracing.assert_b_continues_a(sid)
    assert answer == {"session_id": sid}
