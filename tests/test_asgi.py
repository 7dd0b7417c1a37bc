"""``sessionctx.asgi.SessionIdMiddleware`` driven by raw ASGI calls, no framework."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import Context, copy_context
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import AsyncToSync
from asgiref.wsgi import WsgiToAsgi

from sessionctx import (
    SessionContext,
    current_session,
    current_session_id,
    is_valid_session_id,
    session,
    set_session_id,
    wrap_context,
)
from sessionctx._policy import INVALID, MISSING, VALID, SessionPolicy
from sessionctx.asgi import SessionIdMiddleware
from sessionctx.session import _current
from tests.support import (
    REFUSING_A_VALID_ID,
    Message,
    Receive,
    Scope,
    Send,
    SessionRecords,
    VisitLog,
    assert_session,
    is_generated,
    logged_session_id,
)

pytestmark = pytest.mark.anyio

RawHeaders = list[tuple[bytes, bytes]]

SCOPE_KEY = "sessionctx.session_id"
HEADER = b"x-session-id"
EXPOSE = b"access-control-expose-headers"
VALID_ID = "0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69"


def http_scope(headers: Iterable[Any] | None = None, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/items", **extra}
    if headers is not None:
        scope["headers"] = headers
    return scope


def websocket_scope(headers: Iterable[Any] = ()) -> dict[str, Any]:
    return {"type": "websocket", "path": "/ws", "headers": list(headers)}


async def call(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    inbound: Iterable[Message] = ({"type": "http.request"},),
    sent: list[Message] | None = None,
) -> list[Message]:
    """Run ``app`` once; return every message it sent (also collected in ``sent``,
    which keeps them when the app raises)."""
    pending = list(inbound)
    if sent is None:
        sent = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def start_headers(messages: list[Message]) -> RawHeaders:
    """Headers of the one message that started the response."""
    starts = [m for m in messages if m["type"] in ("http.response.start", "websocket.accept")]
    assert len(starts) == 1, messages
    return [(bytes(name), bytes(value)) for name, value in starts[0]["headers"]]


def values_of(headers: RawHeaders, name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def session_header(messages: list[Message]) -> list[bytes]:
    return values_of(start_headers(messages), HEADER)


@dataclass
class Visit:
    """What the app saw during one call."""

    session: SessionContext | None
    scope: Scope
    request_headers: Any


@dataclass
class RecordingApp(VisitLog[Visit]):
    """An ASGI app that notes what it sees, then answers 200 (or accepts a websocket)."""

    response_headers: Iterable[Any] | None = ((b"content-type", b"text/plain"),)
    visits: list[Visit] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.visits.append(Visit(current_session(), scope, scope.get("headers")))
        start: Message
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            start = {"type": "websocket.accept"}
        else:
            start = {"type": "http.response.start", "status": 200}
        if self.response_headers is not None:
            start["headers"] = self.response_headers
        await send(start)
        if scope["type"] == "http":
            await send({"type": "http.response.body", "body": b"ok"})


class Boom(Exception):
    pass


# --------------------------------------------------------------------------- #
# Which id a request gets
# --------------------------------------------------------------------------- #

INBOUND_CASES = [
    pytest.param([(b"x-session-id", b"abc")], "abc", id="x-session-id"),
    pytest.param([(b"x-tracectrl-session", b"abc")], "abc", id="tracectrl-header"),
    pytest.param([(b"mirascope-session-id", b"abc")], "abc", id="mirascope-header"),
    pytest.param([(b"x-session-id", VALID_ID.encode())], VALID_ID, id="uuid"),
    pytest.param(
        [(b"mirascope-session-id", b"low"), (b"x-session-id", b"high")],
        "high",
        id="priority-not-position",
    ),
    pytest.param(
        [(b"x-session-id", b"bad value"), (b"mirascope-session-id", b"ok")],
        None,
        id="invalid-first-name-does-not-fall-through",
    ),
    pytest.param([(b"baggage", b"k=v, session.id=from-baggage")], "from-baggage", id="baggage"),
    pytest.param(
        [(b"baggage", b"session.id=bag"), (b"x-session-id", b"named")],
        "named",
        id="named-header-beats-baggage",
    ),
    pytest.param([(b"baggage", b"session.id=a b")], None, id="invalid-baggage"),
    pytest.param([(b"x-session-id", b"a"), (b"x-session-id", b"a")], None, id="duplicate-same"),
    pytest.param([(b"x-session-id", b"a"), (b"x-session-id", b"b")], None, id="duplicate-differ"),
    pytest.param([(b"x-session-id", b"x" * 200)], "x" * 200, id="200-chars"),
    pytest.param([(b"x-session-id", b"x" * 201)], None, id="201-chars"),
    pytest.param([(b"x-session-id", b"abc\r\nset-cookie: a=1")], None, id="crlf"),
    pytest.param([(b"x-session-id", b"abc\n")], None, id="trailing-lf"),
    pytest.param([(b"x-session-id", b"")], None, id="empty"),
    pytest.param([(b"x-session-id", b" abc")], None, id="leading-space"),
    pytest.param([(b"x-session-id", b"a,b")], None, id="comma"),
    pytest.param([(b"x-session-id", "café".encode("latin-1"))], None, id="latin-1-byte"),
    pytest.param([(b"x-session-id", b"\xff\xfe\x00")], None, id="not-utf-8"),
    pytest.param([], None, id="no-headers"),
    pytest.param([(b"host", b"example.com")], None, id="other-headers-only"),
]


@pytest.mark.parametrize(("headers", "expected"), INBOUND_CASES)
async def test_inbound_header_decides_the_session(
    headers: RawHeaders, expected: str | None
) -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(app), http_scope(headers))

    sid = app.sid
    assert_session(sid, expected)
    assert app.only.scope[SCOPE_KEY] == sid
    assert session_header(messages) == [sid.encode()]


@pytest.mark.parametrize(("headers", "expected"), INBOUND_CASES)
async def test_a_value_decides_alike_every_time(headers: RawHeaders, expected: str | None) -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)

    for _ in range(3):
        messages = await call(middleware, http_scope(list(headers)))
        assert_session(app.visits[-1].scope[SCOPE_KEY], expected)
        assert session_header(messages) == [app.visits[-1].scope[SCOPE_KEY].encode()]


async def test_the_fast_path_applies_the_id_rule_to_every_byte() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)

    for byte in range(0x100):
        char = bytes([byte])
        for value in (char, b"a" + char + b"b", b"x" * 199 + char, b"x" * 200 + char):
            valid = is_valid_session_id(value.decode("latin-1"))
            await call(middleware, http_scope([(HEADER, value)]))
            sid = app.visits[-1].scope[SCOPE_KEY]
            assert sid == value.decode() if valid else is_generated(sid), value


@pytest.mark.parametrize("options", REFUSING_A_VALID_ID)
async def test_options_refuse_an_id_the_defaults_continue(options: dict[str, Any]) -> None:
    app = RecordingApp()
    await call(SessionIdMiddleware(app), http_scope([(HEADER, VALID_ID.encode())]))

    await call(SessionIdMiddleware(app, **options), http_scope([(HEADER, VALID_ID.encode())]))

    assert app.visits[0].scope[SCOPE_KEY] == VALID_ID
    assert is_generated(app.visits[1].scope[SCOPE_KEY])


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param(http_scope(None), None, id="headers-key-missing"),
        pytest.param(http_scope(()), None, id="empty-tuple"),
        pytest.param(http_scope(((b"x-session-id", b"abc"),)), "abc", id="tuple-of-tuples"),
        pytest.param(http_scope([[b"x-session-id", b"abc"]]), "abc", id="list-of-lists"),
        pytest.param(
            http_scope([(b"x-session-id", bytearray(b"abc"))]), "abc", id="bytearray-value"
        ),
    ],
)
async def test_scope_headers_in_any_allowed_shape(scope: Scope, expected: str | None) -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(app), scope)

    assert_session(app.sid, expected)
    assert session_header(messages) == [app.sid.encode()]


async def test_app_sees_a_session_context_and_the_scope_key() -> None:
    seen: list[tuple[SessionContext | None, str | None, str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((current_session(), current_session_id(), scope[SCOPE_KEY]))
        await send({"type": "http.response.start", "status": 204})

    await call(SessionIdMiddleware(app), http_scope([(b"x-session-id", b"abc")]))

    assert seen == [(SessionContext("abc"), "abc", "abc")]
    ctx = seen[0][0]
    assert isinstance(ctx, SessionContext)
    assert ctx.attributes is None


async def test_the_request_has_one_session_object_in_tasks_and_threads() -> None:
    seen: list[SessionContext | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The id alone first: logs and outgoing headers read only that.
        assert current_session_id() == "abc"
        seen.append(current_session())
        seen.append(await asyncio.create_task(asyncio.sleep(0, current_session())))
        seen.append(await asyncio.to_thread(current_session))
        seen.append(current_session())
        await send({"type": "http.response.start", "status": 204})

    middleware = SessionIdMiddleware(app)
    await call(middleware, http_scope([(b"x-session-id", b"abc")]))
    first = seen[0]
    assert first == SessionContext("abc")
    assert all(ctx is first for ctx in seen)

    seen.clear()
    await call(middleware, http_scope([(b"x-session-id", b"abc")]))
    assert seen[0] == first
    assert seen[0] is not first  # a new request, a new object


async def test_generated_ids_differ_per_request_and_ignore_the_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SESSIONCTX_SESSION_ID", "fixed-session-for-testing")
    monkeypatch.setenv("TRACECTRL_SESSION_ID", "fixed-session-for-testing")
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)

    for _ in range(3):
        await call(middleware, http_scope([]))

    ids = [visit.scope[SCOPE_KEY] for visit in app.visits]
    assert len(set(ids)) == 3
    assert all(is_generated(sid) for sid in ids)


async def test_concurrent_requests_never_see_each_other() -> None:
    mismatches: list[tuple[str, str | None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        mine = scope[SCOPE_KEY]
        for _ in range(5):
            await asyncio.sleep(0)
            if current_session_id() != mine:
                mismatches.append((mine, current_session_id()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": mine.encode()})

    middleware = SessionIdMiddleware(app)
    ids = [f"req-{i}" for i in range(200)]

    results = await asyncio.gather(
        *(call(middleware, http_scope([(HEADER, sid.encode())])) for sid in ids)
    )

    assert mismatches == []
    assert [session_header(messages) for messages in results] == [[sid.encode()] for sid in ids]
    assert [messages[1]["body"] for messages in results] == [sid.encode() for sid in ids]


# --------------------------------------------------------------------------- #
# The response header
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "response_headers",
    [
        pytest.param(None, id="no-headers-key"),
        pytest.param([], id="empty-list"),
        pytest.param([(b"content-type", b"text/plain")], id="list"),
        pytest.param(((b"content-type", b"text/plain"),), id="tuple"),
        pytest.param([[b"content-type", b"text/plain"]], id="list-of-lists"),
    ],
)
async def test_header_is_added_once_to_any_header_shape(response_headers: Any) -> None:
    app = RecordingApp(response_headers=response_headers)

    messages = await call(SessionIdMiddleware(app), http_scope([(HEADER, b"abc")]))

    headers = start_headers(messages)
    assert headers[-1] == (HEADER, b"abc")
    assert headers[:-1] == [(bytes(n), bytes(v)) for n, v in response_headers or ()]


async def test_header_read_from_a_one_shot_iterable() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pairs = iter([(b"content-type", b"text/plain")])
        await send({"type": "http.response.start", "status": 200, "headers": pairs})

    messages = await call(SessionIdMiddleware(app), http_scope([(HEADER, b"abc")]))

    assert start_headers(messages) == [(b"content-type", b"text/plain"), (HEADER, b"abc")]


async def test_the_apps_header_list_is_not_mutated() -> None:
    shared = [(b"content-type", b"text/plain")]
    app = RecordingApp(response_headers=shared)
    middleware = SessionIdMiddleware(app)

    first = await call(middleware, http_scope([(HEADER, b"one")]))
    second = await call(middleware, http_scope([(HEADER, b"two")]))

    assert shared == [(b"content-type", b"text/plain")]
    assert session_header(first) == [b"one"]
    assert session_header(second) == [b"two"]


@pytest.mark.parametrize(
    "start",
    [
        pytest.param({"type": "http.response.start", "status": 200}, id="no-headers"),
        pytest.param(
            {"type": "http.response.start", "status": 200, "headers": ((b"a", b"1"),)},
            id="tuple",
        ),
        pytest.param(
            {"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]}, id="list"
        ),
        pytest.param(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"access-control-allow-origin", b"*")],
            },
            id="cors",
        ),
        pytest.param({"type": "websocket.accept"}, id="websocket-accept"),
    ],
)
async def test_a_start_message_sent_to_every_client_keeps_no_clients_id(
    start: dict[str, Any],
) -> None:
    # An app may send one constant dict to every client: what the middleware
    # adds for one client must not stay in it for the next.
    original = dict(start)
    is_websocket = start["type"] == "websocket.accept"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(start)

    middleware = SessionIdMiddleware(app, expose_header=True)
    sent_ids = []
    for sid in (b"alice", b"bob", None):
        inbound = [] if sid is None else [(HEADER, sid)]
        if is_websocket:
            messages = await call(
                middleware, websocket_scope(inbound), [{"type": "websocket.connect"}]
            )
        else:
            messages = await call(middleware, http_scope(inbound))
        sent_ids.append(session_header(messages))
        assert start == original

    assert sent_ids[:2] == [[b"alice"], [b"bob"]]
    assert len(sent_ids[2]) == 1
    assert is_generated(sent_ids[2][0].decode())


@pytest.mark.parametrize("name", [b"x-session-id", b"X-Session-Id", b"X-SESSION-ID"])
async def test_the_apps_own_header_wins(name: bytes) -> None:
    app = RecordingApp(response_headers=[(name, b"set-by-app"), (b"content-type", b"text/plain")])

    messages = await call(SessionIdMiddleware(app), http_scope([(HEADER, b"abc")]))

    assert [(n, v) for n, v in start_headers(messages) if n.lower() == HEADER] == [
        (name, b"set-by-app")
    ]
    assert app.sid == "abc"


@pytest.mark.parametrize(
    ("header_name", "own"),
    [
        pytest.param("X-Session-Id", b"x-SeSsIoN-iD", id="spellings-in-a-set"),
        # More letters than a set of all spellings is kept for.
        pytest.param("X-Correlation-Identifier", b"x-cORRELATION-identifier", id="long-name"),
        # A name that cannot be hashed is compared in lower case.
        pytest.param("X-Session-Id", bytearray(b"X-Session-ID"), id="bytearray-name"),
    ],
)
async def test_the_apps_own_header_wins_in_any_spelling(
    header_name: str, own: bytes | bytearray
) -> None:
    own_headers = [(b"content-type", b"text/plain"), (own, b"set-by-app")]
    app = RecordingApp(response_headers=own_headers)
    inbound = [(header_name.lower().encode(), b"abc")]

    messages = await call(SessionIdMiddleware(app, header_name=header_name), http_scope(inbound))

    assert start_headers(messages) == own_headers


@pytest.mark.parametrize("header_name", ["X-Session-Id", "X-Correlation-Identifier"])
async def test_another_name_of_the_same_length_is_not_the_session_header(
    header_name: str,
) -> None:
    lower = header_name.lower().encode()
    other = b"y" + lower[1:]
    app = RecordingApp(response_headers=[(b"content-type", b"text/plain"), (other, b"v")])

    messages = await call(
        SessionIdMiddleware(app, header_name=header_name), http_scope([(lower, b"abc")])
    )

    assert start_headers(messages) == [
        (b"content-type", b"text/plain"),
        (other, b"v"),
        (lower, b"abc"),
    ]


async def test_custom_header_name_is_sent_lower_case() -> None:
    app = RecordingApp()

    messages = await call(
        SessionIdMiddleware(app, header_name="X-Request-Session"),
        http_scope([(b"x-request-session", b"abc")]),
    )

    assert values_of(start_headers(messages), b"x-request-session") == [b"abc"]
    assert session_header(messages) == []


async def test_body_messages_pass_unchanged_and_streaming_chunks_see_the_session() -> None:
    chunks = [
        {"type": "http.response.body", "body": b"%d" % i, "more_body": True} for i in range(5)
    ]
    last = {"type": "http.response.body", "body": b"", "more_body": False}
    seen_per_chunk: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in [*chunks, last]:
            await asyncio.sleep(0)
            seen_per_chunk.append(current_session_id())
            await send(chunk)

    messages = await call(SessionIdMiddleware(app), http_scope([(HEADER, b"abc")]))

    assert seen_per_chunk == ["abc"] * 6
    assert all(
        sent is original for sent, original in zip(messages[1:], [*chunks, last], strict=True)
    )
    assert chunks[0] == {"type": "http.response.body", "body": b"0", "more_body": True}


async def test_double_wrap_passes_through() -> None:
    app = RecordingApp()
    # The inner one has other options; it still must not act.
    inner = SessionIdMiddleware(app, header_name="X-Other", update_request_header=True)
    outer = SessionIdMiddleware(inner)
    request_headers = [(HEADER, b"bad value")]

    messages = await call(outer, http_scope(request_headers))

    headers = start_headers(messages)
    assert values_of(headers, HEADER) == [app.sid.encode()]
    assert values_of(headers, b"x-other") == []
    assert is_generated(app.sid)
    assert app.only.request_headers is request_headers


@pytest.mark.parametrize("inbound", [pytest.param([(HEADER, b"abc")], id="continued"), []])
async def test_double_wrap_with_the_same_options(inbound: RawHeaders) -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(SessionIdMiddleware(app)), http_scope(inbound))

    assert session_header(messages) == [app.sid.encode()]
    assert app.only.scope[SCOPE_KEY] == app.sid


async def test_a_scope_used_again_gets_a_session_again() -> None:
    # An error page or SPA fallback wrapper calls the wrapped app a second time
    # with the same scope, or a copy, after the middleware has finished: the
    # key left in the scope is no enclosing middleware.
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)
    scope = http_scope([(b"host", b"example.com")])

    first = await call(middleware, scope)
    again = await call(middleware, scope)
    copied = await call(middleware, {**scope, "path": "/index.html"})

    sids = [visit.session.id for visit in app.visits]  # type: ignore[union-attr]
    assert [session_header(m) for m in (first, again, copied)] == [[s.encode()] for s in sids]
    assert all(is_generated(sid) for sid in sids)
    assert len(set(sids)) == 3


async def test_a_scope_used_again_in_another_session_gets_its_own() -> None:
    # The key of a finished request, met while some other session is active
    # (a process-wide one, a test's): no enclosing middleware runs it.
    app = RecordingApp()
    scope = http_scope([(HEADER, b"abc")])
    scope[SCOPE_KEY] = "left-over"

    with session("process-wide"):
        messages = await call(SessionIdMiddleware(app), scope)

    assert app.only.session == SessionContext("abc")
    assert session_header(messages) == [b"abc"]
    assert scope[SCOPE_KEY] == "abc"


@dataclass
class ServerCopies:
    """A server's ``receive`` and ``send`` that copy the context they run in,
    as uvicorn's do when they resume reading the connection (asyncio's reader
    callback takes a copy of the context it is registered in)."""

    body: list[Message]
    copies: dict[str, Context] = field(default_factory=dict)
    seen: dict[str, str | None] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)

    async def receive(self) -> Message:
        self.note("receive")
        return self.body.pop(0) if self.body else {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.start":
            self.note("start")
        elif not message.get("more_body"):
            self.note("end")
        else:
            self.note("body")

    def note(self, where: str) -> None:
        self.copies[where] = copy_context()
        self.seen[where] = current_session_id()


async def streaming_upload(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"1", "more_body": True})
    await send({"type": "http.response.body", "body": b"2"})


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_what_the_server_copies_in_receive_and_the_last_send_holds_no_session(
    method: str,
) -> None:
    server = ServerCopies([{"type": "http.request", "body": b"x", "more_body": True}] * 2)
    server.body.append({"type": "http.request", "body": b"x"})
    scope = http_scope([(HEADER, b"upload-1")], method=method)

    await SessionIdMiddleware(streaming_upload)(scope, server.receive, server.send)

    # The server's own code still runs in the session...
    assert server.seen == {
        "receive": "upload-1",
        "start": "upload-1",
        "body": "upload-1",
        "end": "upload-1",
    }
    assert values_of(start_headers(server.sent), HEADER) == [b"upload-1"]
    # ...but what it copied in receive() and in the send() ending the response
    # holds none once the call returned: the next request uvicorn starts from
    # there, and everything outside the middleware in it, begins outside any session.
    after = {where: copied.run(current_session) for where, copied in server.copies.items()}
    assert after == {
        "receive": None,
        "start": SessionContext("upload-1"),
        "body": SessionContext("upload-1"),
        "end": None,
    }
    assert current_session() is None


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_request_without_a_body_is_sent_as_it_is(method: str) -> None:
    # No stand-in (it costs a coroutine per call): uvicorn pauses reading only
    # for a body over 64 KiB or for requests pipelined behind this one. A
    # pipelined request after it begins in its session (the README says so).
    server = ServerCopies([])
    scope = http_scope([(HEADER, b"get-1")], method=method)

    await SessionIdMiddleware(streaming_upload)(scope, server.receive, server.send)

    after = {where: copied.run(current_session_id) for where, copied in server.copies.items()}
    assert after == {"receive": "get-1", "start": "get-1", "body": "get-1", "end": "get-1"}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_the_server_starts_in_a_push_begins_outside_any_session(
    method: str,
) -> None:
    # HTTP/2 server push: hypercorn opens the promised stream, and starts the
    # task that runs the pushed request, in the send() of the app's
    # "http.response.push" message. The task copies the context there, and
    # everything outside the middleware in the pushed request runs in it.
    pushed: list[asyncio.Task[str | None]] = []

    async def pushed_request() -> str | None:
        return current_session_id()  # what a layer outside the middleware sees

    async def send(message: Message) -> None:
        if message["type"] == "http.response.push":
            pushed.append(asyncio.create_task(pushed_request()))

    async def receive() -> Message:
        return {"type": "http.request"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.push", "path": "/style.css", "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = http_scope([(HEADER, b"pusher-1")], method=method, http_version="2")
    await SessionIdMiddleware(app)(scope, receive, send)

    assert [await task for task in pushed] == [None]


async def test_the_app_keeps_its_session_and_context_object_across_the_servers_calls() -> None:
    seen: list[SessionContext | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        seen.append(current_session())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        seen.append(current_session())  # say, a background task after the response

    server = ServerCopies([{"type": "http.request", "body": b"x"}])
    in_server: list[SessionContext | None] = []

    # Code outside the middleware that asks first, in receive() and in the
    # send() ending the response (an OpenTelemetry span of those calls).
    async def receive() -> Message:
        in_server.append(current_session())
        return await server.receive()

    async def send(message: Message) -> None:
        in_server.append(current_session())
        await server.send(message)

    with session("around"):
        outer = current_session()
        await SessionIdMiddleware(app)(
            http_scope([(HEADER, b"post-1")], method="POST"), receive, send
        )
        assert current_session() is outer

    assert in_server[0] == SessionContext("post-1")
    assert [ctx is in_server[0] for ctx in in_server + seen] == [True] * 5


async def test_a_server_send_that_raises_leaves_the_apps_session_in_place() -> None:
    class Gone(Exception):
        pass

    after_failed_send: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            after_failed_send.append(current_session_id())

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise Gone("the client left")

    with pytest.raises(Gone) as raised:
        await SessionIdMiddleware(app)(
            http_scope([(HEADER, b"gone-1")], method="POST"), receive, send
        )

    assert after_failed_send == ["gone-1"]
    assert logged_session_id(raised.value) == "gone-1"
    assert current_session() is None


async def test_the_last_send_in_a_session_of_the_apps_own_or_in_none() -> None:
    # The app may send from a session of its own that no request holds (a
    # function wrapped outside any request), or from none at all.
    with session("wrapped-outside"):

        @wrap_context
        async def send_end(send: Send) -> None:
            await send({"type": "http.response.body", "body": b"ok"})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/wrapped":
            await send_end(send)
        else:
            set_session_id(None)
            await send({"type": "http.response.body", "body": b"ok"})
            assert current_session() is None

    for path, seen in (("/wrapped", "wrapped-outside"), ("/cleared", None)):
        server = ServerCopies([])
        scope = http_scope([(HEADER, b"own-1")], method="POST", path=path)
        await SessionIdMiddleware(app)(scope, server.receive, server.send)
        assert server.seen["end"] == seen
        assert server.copies["end"].run(current_session) is None
        assert values_of(start_headers(server.sent), HEADER) == [b"own-1"]


async def test_a_thread_reading_a_stand_in_while_it_ends_never_fails() -> None:
    # A thread started in the send() ending the response (an outer layer's
    # fire-and-forget audit log) holds the stand-in, which ends while it reads.
    handler = SessionRecords()
    logger = logging.getLogger("tests.stand_in.race")
    failures: list[BaseException] = []
    # Per request: what its thread read while the stand-in lived and ended...
    readings: dict[str, set[str | None]] = {}
    # ...and once more after the request was over.
    last: dict[str, tuple[str | None, str | None]] = {}

    def reading(own: str, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                logger.warning("during %s", own)
                ctx = current_session()
                readings[own].update((current_session_id(), None if ctx is None else ctx.id))
            logger.warning("after %s", own)
            ctx = current_session()
            last[own] = (current_session_id(), None if ctx is None else ctx.id)
        except BaseException as error:  # any failure at all
            failures.append(error)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = SessionIdMiddleware(app)
    threads: list[tuple[threading.Thread, threading.Event]] = []

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        async def starting_a_reader(message: Message) -> None:
            if message["type"] == "http.response.body":
                own = scope[SCOPE_KEY]
                readings[own] = set()
                stop = threading.Event()
                thread = threading.Thread(target=copy_context().run, args=(reading, own, stop))
                thread.start()
                threads.append((thread, stop))
                time.sleep(0.0002)  # the thread reads the live stand-in
            await send(message)

        await middleware(scope, receive, starting_a_reader)

    def stop_all() -> None:
        for thread, stop in threads:
            stop.set()
            thread.join(10)
            assert not thread.is_alive()
        threads.clear()

    logger.addHandler(handler)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two reads
    try:
        for i in range(300):
            await call(outer, http_scope([(HEADER, b"race-%d" % i)], method="POST"))
            stop_all()
    finally:
        sys.setswitchinterval(interval)
        stop_all()
        logger.removeHandler(handler)

    assert failures == []
    assert len(last) == len(readings) == 300
    for own, seen in readings.items():
        # Its own session or none, never another request's.
        assert seen <= {own, None}, (own, seen)
        # Once the request was over: none at all.
        assert last[own] == (None, None)
    for sid, message, _ in handler.records:
        when, own = message.split()
        assert sid in ((own, "-") if when == "during" else ("-",)), (sid, message)
    assert sum(message.startswith("after") for _, message, _ in handler.records) == 300


async def test_an_ended_stand_in_is_no_session_anywhere() -> None:
    # What a copy made in the server's last send() holds once it returned.
    server = ServerCopies([])
    await SessionIdMiddleware(streaming_upload)(
        http_scope([(HEADER, b"left-1")], method="POST"), server.receive, server.send
    )
    copied = server.copies["end"]
    handler = SessionRecords()
    logger = logging.getLogger("tests.stand_in")
    logger.addHandler(handler)
    try:
        copied.run(logger.warning, "after the response")
    finally:
        logger.removeHandler(handler)

    assert copied.run(current_session_id) is None
    assert handler.records == [("-", "after the response", False)]
    # A request the server starts from there begins outside any session (the
    # middleware's mark of that, which the OpenTelemetry processor reads).
    began_outside: list[bool] = []

    async def nested(scope: Scope, receive: Receive, send: Send) -> None:
        began_outside.append(_current.get()[2])  # type: ignore[index]
        await RecordingApp()(scope, receive, send)

    messages = await copied.run(
        asyncio.ensure_future, call(SessionIdMiddleware(nested), http_scope([(HEADER, b"next-1")]))
    )
    assert session_header(messages) == [b"next-1"]
    assert began_outside == [True]
    assert copied.run(current_session_id) is None


async def test_a_scope_used_again_where_an_earlier_request_of_its_id_left_its_session() -> None:
    # uvicorn starts a pipelined request's task inside the previous response,
    # so the task begins with that request's session: same client, same id.
    # The next request's scope, used a second time (a fallback wrapper), is no
    # request the earlier one runs.
    contexts: list[Context] = []

    async def keeping_its_context(scope: Scope, receive: Receive, send: Send) -> None:
        contexts.append(copy_context())
        await RecordingApp()(scope, receive, send)

    await call(SessionIdMiddleware(keeping_its_context), http_scope([(HEADER, b"client-s")]))
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)
    scope = http_scope([(HEADER, b"client-s")])

    async def next_request() -> list[list[Message]]:
        return [await call(middleware, scope), await call(middleware, scope)]

    # A task made inside that context copies it, as uvicorn's does.
    sent = await contexts[0].run(asyncio.ensure_future, next_request())

    assert [session_header(messages) for messages in sent] == [[b"client-s"], [b"client-s"]]
    assert [visit.session == SessionContext("client-s") for visit in app.visits] == [True, True]
    assert app.visits[0].session is not app.visits[1].session  # each call its own


async def test_a_layer_between_that_sets_a_session_keeps_it_under_a_double_wrap() -> None:
    # An auth or tenant layer between the two middlewares: the inner one still
    # passes through, the client gets the id the outer one decided.
    app = RecordingApp()
    inner = SessionIdMiddleware(app)
    decided: list[str] = []

    async def tenant_layer(scope: Scope, receive: Receive, send: Send) -> None:
        decided.append(scope[SCOPE_KEY])
        with session("tenant-42"):
            await inner(scope, receive, send)

    scope = http_scope([(HEADER, b"bad value")])
    messages = await call(SessionIdMiddleware(tenant_layer), scope)

    assert app.only.session == SessionContext("tenant-42")
    assert is_generated(decided[0])
    assert scope[SCOPE_KEY] == decided[0]
    assert session_header(messages) == [decided[0].encode()]


@pytest.mark.parametrize("scope_type", ["lifespan", "webtransport", "custom.protocol"])
async def test_other_scopes_pass_through_untouched(scope_type: str) -> None:
    seen: list[tuple[Scope, Receive, Send, dict[str, Any], SessionContext | None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send, dict(scope), current_session()))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    scope = {"type": scope_type, "headers": [(HEADER, b"abc")]}

    await SessionIdMiddleware(app)(scope, receive, send)

    [(got_scope, got_receive, got_send, snapshot, got_session)] = seen
    assert got_scope is scope
    assert got_receive is receive
    assert got_send is send
    assert snapshot == {"type": scope_type, "headers": [(HEADER, b"abc")]}
    assert got_session is None


# --------------------------------------------------------------------------- #
# WebSocket
# --------------------------------------------------------------------------- #

CONNECT = ({"type": "websocket.connect"},)


@pytest.mark.parametrize(
    "accept_headers",
    [pytest.param(None, id="no-headers-key"), [(b"sec-websocket-protocol", b"chat")]],
)
async def test_websocket_accept_carries_the_header(accept_headers: RawHeaders | None) -> None:
    app = RecordingApp(response_headers=accept_headers)

    messages = await call(SessionIdMiddleware(app), websocket_scope([(HEADER, b"ws-1")]), CONNECT)

    assert app.sid == "ws-1"
    assert start_headers(messages) == [*(accept_headers or []), (HEADER, b"ws-1")]


async def test_websocket_keeps_the_apps_own_header() -> None:
    app = RecordingApp(response_headers=[(b"X-Session-Id", b"from-app")])

    messages = await call(SessionIdMiddleware(app), websocket_scope(), CONNECT)

    assert start_headers(messages) == [(b"X-Session-Id", b"from-app")]
    assert is_generated(app.sid)


async def test_websocket_denial_response_carries_the_header() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    messages = await call(SessionIdMiddleware(app), websocket_scope([(HEADER, b"ws-1")]), CONNECT)

    assert messages[0]["headers"] == [(HEADER, b"ws-1")]


# --------------------------------------------------------------------------- #
# on_missing / on_invalid = "reject"
# --------------------------------------------------------------------------- #

REJECT_CASES = [
    pytest.param({"on_missing": "reject"}, [], b"Missing X-Session-Id header", id="missing"),
    pytest.param(
        {"on_invalid": "reject"}, [(HEADER, b"")], b"Invalid X-Session-Id header", id="empty"
    ),
    pytest.param(
        {"on_invalid": "reject"}, [(HEADER, b"bad value")], b"Invalid X-Session-Id header", id="bad"
    ),
    pytest.param(
        {"on_invalid": "reject"},
        [(HEADER, b"a"), (HEADER, b"b")],
        b"Invalid X-Session-Id header",
        id="duplicate",
    ),
    pytest.param(
        {"on_invalid": "reject", "validator": lambda sid: sid.startswith("ok-")},
        [(HEADER, b"nope")],
        b"Invalid X-Session-Id header",
        id="refused-by-validator",
    ),
    pytest.param(
        {"on_missing": "reject", "header_name": "X-Request-Session"},
        [(b"host", b"example.com")],
        b"Missing X-Request-Session header",
        id="body-names-the-configured-header",
    ),
    pytest.param(
        {"on_missing": "reject", "on_invalid": "reject"},
        [(b"host", b"example.com")],
        b"Missing X-Session-Id header",
        id="both-reject",
    ),
    # With accept_headers the body names what is read, not the response header.
    pytest.param(
        {"on_missing": "reject", "accept_headers": ["X-Request-Id"]},
        [(HEADER, b"abc")],
        b"Missing X-Request-Id header",
        id="missing-names-the-accepted-header",
    ),
    pytest.param(
        {"on_invalid": "reject", "accept_headers": ["X-Request-Id"]},
        [(b"x-request-id", b"bad value")],
        b"Invalid X-Request-Id header",
        id="invalid-names-the-accepted-header",
    ),
    pytest.param(
        {"on_invalid": "reject", "accept_headers": ["A-Id", "B-Id"]},
        [(b"b-id", b"bad value"), (HEADER, b"abc")],
        b"Invalid B-Id header",
        id="invalid-names-the-header-that-decided",
    ),
    pytest.param(
        {"on_invalid": "reject"},
        [(b"baggage", b"session.id=bad%20value")],
        b"Invalid baggage header",
        id="invalid-baggage",
    ),
]


@pytest.mark.parametrize(
    ("options", "headers"),
    [({"on_missing": "reject"}, []), ({"on_invalid": "reject"}, [(HEADER, b"a b")])],
)
async def test_a_rejected_head_request_gets_no_body(
    options: dict[str, Any], headers: RawHeaders
) -> None:
    """RFC 9110: a response to HEAD has no content, only its length."""
    messages = await call(
        SessionIdMiddleware(RecordingApp(), **options), http_scope(headers, method="HEAD")
    )
    assert messages[0]["status"] == 400
    assert int(values_of(start_headers(messages), b"content-length")[0]) > 0
    assert messages[1] == {"type": "http.response.body", "body": b""}


@pytest.mark.parametrize(("options", "headers", "body"), REJECT_CASES)
async def test_reject_answers_400_without_calling_the_app(
    options: dict[str, Any], headers: RawHeaders, body: bytes
) -> None:
    app = RecordingApp()
    scope = http_scope(headers)

    messages = await call(SessionIdMiddleware(app, **options), scope)

    assert app.visits == []
    assert SCOPE_KEY not in scope
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[0]["status"] == 400
    assert messages[1]["body"] == body
    headers_sent = start_headers(messages)
    assert values_of(headers_sent, b"content-type") == [b"text/plain; charset=utf-8"]
    assert values_of(headers_sent, b"content-length") == [str(len(body)).encode()]
    assert values_of(headers_sent, HEADER) == []
    assert values_of(headers_sent, b"x-request-session") == []


@pytest.mark.parametrize(
    ("options", "headers", "expected"),
    [
        pytest.param({"on_missing": "reject"}, [(HEADER, b"abc")], "abc", id="missing-rule-valid"),
        pytest.param({"on_missing": "reject"}, [(HEADER, b"a b")], None, id="missing-rule-invalid"),
        pytest.param({"on_invalid": "reject"}, [], None, id="invalid-rule-missing"),
        pytest.param({"on_invalid": "reject"}, [(HEADER, b"abc")], "abc", id="invalid-rule-valid"),
    ],
)
async def test_reject_applies_only_to_its_own_case(
    options: dict[str, Any], headers: RawHeaders, expected: str | None
) -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(app, **options), http_scope(headers))

    assert messages[0]["status"] == 200
    assert_session(app.sid, expected)


# What a browser sends before a cross-origin request with a custom header: the
# header itself is only named, never sent.
PREFLIGHT = [
    (b"origin", b"https://app.example"),
    (b"access-control-request-method", b"POST"),
    (b"access-control-request-headers", b"x-session-id"),
]


async def test_a_cors_preflight_is_not_rejected_for_a_missing_id() -> None:
    app = RecordingApp()

    messages = await call(
        SessionIdMiddleware(app, on_missing="reject"), http_scope(PREFLIGHT, method="OPTIONS")
    )

    sid = app.only.session.id  # type: ignore[union-attr]
    assert is_generated(sid)
    assert messages[0]["status"] == 200
    assert session_header(messages) == [sid.encode()]


@pytest.mark.parametrize(
    ("method", "headers", "options"),
    [
        pytest.param("OPTIONS", PREFLIGHT[:1], {"on_missing": "reject"}, id="options-not-cors"),
        pytest.param("POST", PREFLIGHT, {"on_missing": "reject"}, id="not-options"),
        pytest.param(
            "OPTIONS",
            [*PREFLIGHT, (HEADER, b"bad value")],
            {"on_invalid": "reject"},
            id="preflight-with-an-invalid-id",
        ),
    ],
)
async def test_reject_still_applies_to_what_is_not_a_preflight_missing_the_id(
    method: str, headers: RawHeaders, options: dict[str, Any]
) -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(app, **options), http_scope(headers, method=method))

    assert messages[0]["status"] == 400
    assert app.visits == []


async def test_websocket_reject_closes_1008_before_accept() -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(app, on_missing="reject"), websocket_scope(), CONNECT)

    assert app.visits == []
    assert messages == [
        {"type": "websocket.close", "code": 1008, "reason": "Missing X-Session-Id header"}
    ]


async def test_websocket_reject_sends_nothing_when_the_client_already_left() -> None:
    app = RecordingApp()

    messages = await call(
        SessionIdMiddleware(app, on_invalid="reject"),
        websocket_scope([(HEADER, b"bad value")]),
        [{"type": "websocket.disconnect", "code": 1006}],
    )

    assert app.visits == []
    assert messages == []


async def test_websocket_close_reason_fits_the_protocol_limit() -> None:
    long_name = "X-" + "S" * 200

    messages = await call(
        SessionIdMiddleware(RecordingApp(), header_name=long_name, on_missing="reject"),
        websocket_scope(),
        CONNECT,
    )

    reason = messages[0]["reason"]
    assert len(reason.encode()) == 123
    assert reason.startswith("Missing X-SSS")


# --------------------------------------------------------------------------- #
# Options
# --------------------------------------------------------------------------- #


async def test_custom_generator_is_used_when_an_id_is_needed() -> None:
    made = iter(["gen-1", "gen-2"])
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, generator=lambda: next(made))

    await call(middleware, http_scope([]))
    await call(middleware, http_scope([(HEADER, b"bad value")]))
    await call(middleware, http_scope([(HEADER, b"kept")]))

    assert [visit.scope[SCOPE_KEY] for visit in app.visits] == ["gen-1", "gen-2", "kept"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param("has space", id="space"),
        pytest.param("x" * 201, id="too-long"),
        pytest.param("new\nline", id="newline"),
        pytest.param(123, id="not-a-str"),
        pytest.param(None, id="none"),
    ],
)
async def test_generator_returning_an_invalid_id_raises_runtime_error(bad: object) -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, generator=lambda: bad)  # type: ignore[arg-type,return-value]

    with pytest.raises(RuntimeError, match="generator returned an invalid id") as raised:
        await call(middleware, http_scope([]))

    assert repr(bad)[:20] in str(raised.value)
    assert app.visits == []


async def test_a_generated_str_subclass_is_sent_as_the_plain_str_it_holds() -> None:
    class Tagged(str):
        pass

    app = RecordingApp()
    middleware = SessionIdMiddleware(app, generator=lambda: Tagged("tagged-id"))
    messages = await call(middleware, http_scope([]))

    session = app.visits[0].session
    assert session is not None
    assert type(session.id) is str
    assert session.id == "tagged-id"
    assert type(app.visits[0].scope["sessionctx.session_id"]) is str
    assert (b"x-session-id", b"tagged-id") in messages[0]["headers"]


async def test_validator_applies_on_top_of_the_id_rule() -> None:
    asked: list[str] = []

    def validator(sid: str) -> bool:
        asked.append(sid)
        return sid.startswith("ok-") or sid == "bad value"

    app = RecordingApp()
    middleware = SessionIdMiddleware(app, validator=validator)

    for value in (b"ok-1", b"no-1", b"bad value"):
        await call(middleware, http_scope([(HEADER, value)]))
    await call(middleware, http_scope([]))

    got = [visit.scope[SCOPE_KEY] for visit in app.visits]
    assert got[0] == "ok-1"
    assert is_generated(got[1])
    assert is_generated(got[2])  # the rule fails first: the validator cannot allow it
    assert is_generated(got[3])
    assert asked == ["ok-1", "no-1"]


async def test_validator_also_judges_a_baggage_id() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, validator=lambda sid: sid.startswith("ok-"))

    await call(middleware, http_scope([(b"baggage", b"session.id=ok-bag")]))
    await call(middleware, http_scope([(b"baggage", b"session.id=other")]))

    assert app.visits[0].scope[SCOPE_KEY] == "ok-bag"
    assert is_generated(app.visits[1].scope[SCOPE_KEY])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(HEADER, b"abc")], id="named-header"),
        pytest.param([(b"baggage", b"session.id=abc")], id="baggage"),
        pytest.param([], id="none"),
    ],
)
async def test_trust_incoming_false_always_generates(headers: RawHeaders) -> None:
    app = RecordingApp()

    messages = await call(SessionIdMiddleware(app, trust_incoming=False), http_scope(headers))

    assert is_generated(app.sid)
    assert session_header(messages) == [app.sid.encode()]


@pytest.mark.parametrize(
    ("accept_headers", "headers", "expected"),
    [
        pytest.param(["X-Custom"], [(b"x-custom", b"c")], "c", id="custom-name-read"),
        pytest.param(["X-Custom"], [(HEADER, b"abc")], None, id="default-names-not-read"),
        pytest.param(
            ["X-B", "X-A"], [(b"x-a", b"a"), (b"x-b", b"b")], "b", id="given-order-is-priority"
        ),
        pytest.param(["X-Custom"], [(b"baggage", b"session.id=bag")], "bag", id="baggage-last"),
        pytest.param(("X-Custom",), [(b"x-custom", b"c")], "c", id="tuple"),
    ],
)
async def test_accept_headers_are_used_exactly_as_given(
    accept_headers: list[str], headers: RawHeaders, expected: str | None
) -> None:
    app = RecordingApp()

    messages = await call(
        SessionIdMiddleware(app, accept_headers=accept_headers), http_scope(headers)
    )

    assert_session(app.sid, expected)
    assert session_header(messages) == [app.sid.encode()]


async def test_header_name_leads_the_default_accepted_names() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, header_name="X-Request-Session")

    await call(middleware, http_scope([(HEADER, b"lower"), (b"x-request-session", b"first")]))
    await call(middleware, http_scope([(b"mirascope-session-id", b"fallback")]))

    assert [visit.scope[SCOPE_KEY] for visit in app.visits] == ["first", "fallback"]


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        pytest.param({}, [], id="missing"),
        pytest.param({}, [(b"accept", b"*/*"), (HEADER, b"bad value")], id="invalid-replaced"),
        pytest.param({}, [(HEADER, b"a"), (b"accept", b"*/*"), (HEADER, b"b")], id="duplicates"),
        pytest.param({"trust_incoming": False}, [(HEADER, b"abc")], id="untrusted-replaced"),
        pytest.param({}, ((b"accept", b"*/*"),), id="tuple"),
    ],
)
async def test_update_request_header_shows_the_generated_id(
    options: dict[str, Any], headers: Iterable[tuple[bytes, bytes]]
) -> None:
    app = RecordingApp()
    original = list(headers)

    await call(SessionIdMiddleware(app, update_request_header=True, **options), http_scope(headers))

    seen = app.only.request_headers
    assert values_of(seen, HEADER) == [app.sid.encode()]
    assert [pair for pair in seen if pair[0] != HEADER] == [p for p in original if p[0] != HEADER]
    assert list(headers) == original  # the server's own list is left alone
    assert is_generated(app.sid)


async def test_update_request_header_without_headers_key() -> None:
    app = RecordingApp()

    await call(SessionIdMiddleware(app, update_request_header=True), http_scope(None))

    assert app.only.request_headers == [(HEADER, app.sid.encode())]


async def test_update_request_header_uses_the_configured_name() -> None:
    app = RecordingApp()

    await call(
        SessionIdMiddleware(app, header_name="X-Request-Session", update_request_header=True),
        http_scope([(b"x-request-session", b"bad value")]),
    )

    assert app.only.request_headers == [(b"x-request-session", app.sid.encode())]


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        pytest.param({"update_request_header": True}, [(HEADER, b"abc")], id="id-continued"),
        pytest.param({}, [(HEADER, b"bad value")], id="option-off"),
    ],
)
async def test_request_headers_left_alone(options: dict[str, Any], headers: RawHeaders) -> None:
    app = RecordingApp()
    snapshot = list(headers)

    await call(SessionIdMiddleware(app, **options), http_scope(headers))

    assert app.only.request_headers is headers
    assert headers == snapshot


async def test_attributes_callable_gets_the_scope() -> None:
    given: list[Scope] = []

    def attributes(scope: Scope) -> Mapping[str, Any]:
        given.append(scope)
        return {"path": scope["path"], "tags": ["a", "b"], "sid": scope[SCOPE_KEY]}

    app = RecordingApp()
    scope = http_scope([(HEADER, b"abc")])

    await call(SessionIdMiddleware(app, attributes=attributes), scope)

    assert given == [scope]
    assert given[0] is scope
    seen = app.only.session
    assert seen is not None
    assert seen.id == "abc"
    assert seen.attributes == {"path": "/items", "tags": ["a", "b"], "sid": "abc"}


async def test_attributes_callable_may_return_none() -> None:
    app = RecordingApp()

    await call(SessionIdMiddleware(app, attributes=lambda scope: None), http_scope([]))

    assert app.only.session == SessionContext(app.sid)


async def test_attributes_that_are_not_json_raise_before_the_app_runs() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, attributes=lambda scope: {"scope": object()})

    with pytest.raises(TypeError, match="not JSON-serializable"):
        await call(middleware, http_scope([]))

    assert app.visits == []


ALLOW = (b"access-control-allow-origin", b"https://example.com")

EXPOSE_CASES = [
    pytest.param([(b"content-type", b"text/plain")], [], id="not-a-cors-response"),
    pytest.param([ALLOW], [b"x-session-id"], id="cors-without-expose"),
    pytest.param([ALLOW, (EXPOSE, b"x-request-id")], [b"x-request-id, x-session-id"], id="merged"),
    pytest.param(
        [
            (b"Access-Control-Expose-Headers", b"X-Request-Id"),
            (b"Access-Control-Allow-Origin", b"*"),
        ],
        [b"X-Request-Id, x-session-id"],
        id="mixed-case-names",
    ),
    pytest.param([ALLOW, (EXPOSE, b"a, X-Session-Id")], [b"a, X-Session-Id"], id="already-listed"),
    pytest.param([ALLOW, (EXPOSE, b" ")], [b"x-session-id"], id="blank-list"),
    pytest.param([ALLOW, (EXPOSE, b"*")], [b"*, x-session-id"], id="wildcard"),
    pytest.param(
        [ALLOW, (HEADER, b"from-app"), (EXPOSE, b"x-a")],
        [b"x-a, x-session-id"],
        id="apps-own-session-header",
    ),
]


@pytest.mark.parametrize(("response_headers", "expected"), EXPOSE_CASES)
async def test_expose_header_merges_into_cors_responses(
    response_headers: RawHeaders, expected: list[bytes]
) -> None:
    app = RecordingApp(response_headers=tuple(response_headers))

    messages = await call(SessionIdMiddleware(app, expose_header=True), http_scope([]))

    headers = start_headers(messages)
    assert values_of(headers, EXPOSE) == expected
    assert len(values_of(headers, HEADER)) == 1
    others = [pair for pair in headers if pair[0].lower() not in (EXPOSE, HEADER)]
    assert others == [pair for pair in response_headers if pair[0].lower() not in (EXPOSE, HEADER)]


async def test_expose_header_off_leaves_cors_headers_alone() -> None:
    app = RecordingApp(response_headers=[ALLOW, (EXPOSE, b"x-request-id")])

    messages = await call(SessionIdMiddleware(app), http_scope([]))

    assert values_of(start_headers(messages), EXPOSE) == [b"x-request-id"]


async def test_expose_header_on_websocket_accept() -> None:
    app = RecordingApp(response_headers=[ALLOW])

    messages = await call(SessionIdMiddleware(app, expose_header=True), websocket_scope(), CONNECT)

    assert values_of(start_headers(messages), EXPOSE) == [b"x-session-id"]


# --------------------------------------------------------------------------- #
# handle_errors
# --------------------------------------------------------------------------- #


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise Boom("before the response")


async def test_handle_errors_sends_a_500_with_the_header_then_reraises() -> None:
    sent: list[Message] = []
    middleware = SessionIdMiddleware(failing_app, handle_errors=True)

    with pytest.raises(Boom):
        await call(middleware, http_scope([(HEADER, b"abc")]), sent=sent)

    assert sent[0]["status"] == 500
    assert values_of(sent[0]["headers"], HEADER) == [b"abc"]
    assert values_of(sent[0]["headers"], b"content-type") == [b"text/plain; charset=utf-8"]
    assert values_of(sent[0]["headers"], b"content-length") == [b"21"]
    # The server closes the connection once the exception reaches it.
    assert values_of(sent[0]["headers"], b"connection") == [b"close"]
    assert sent[1] == {"type": "http.response.body", "body": b"Internal Server Error"}
    assert len(sent) == 2


@pytest.mark.parametrize(
    ("version", "expected"), [("1.0", [b"close"]), ("1.1", [b"close"]), ("2", []), ("3", [])]
)
async def test_handle_errors_says_connection_close_on_http_1_only(
    version: str, expected: list[bytes]
) -> None:
    sent: list[Message] = []
    with pytest.raises(Boom):
        await call(
            SessionIdMiddleware(failing_app, handle_errors=True),
            http_scope([], http_version=version),
            sent=sent,
        )
    assert sent[0]["status"] == 500
    # HTTP/2 and HTTP/3 forbid connection-specific header fields.
    assert values_of(sent[0]["headers"], b"connection") == expected


async def test_without_handle_errors_nothing_is_sent_on_error() -> None:
    sent: list[Message] = []

    with pytest.raises(Boom):
        await call(SessionIdMiddleware(failing_app), http_scope([]), sent=sent)

    assert sent == []


async def test_handle_errors_after_the_response_started_only_reraises() -> None:
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise Boom("mid-body")

    with pytest.raises(Boom):
        await call(SessionIdMiddleware(app, handle_errors=True), http_scope([]), sent=sent)

    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_handle_errors_sends_a_500_when_the_server_refused_the_start() -> None:
    # hypercorn checks the headers as it takes the start message, and raises
    # before anything is written: the response has not started.
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        for _, value in message.get("headers", ()):
            if b"\n" in value:
                raise ValueError("invalid header value")
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\n2")]})

    middleware = SessionIdMiddleware(app, handle_errors=True)
    with pytest.raises(ValueError, match="invalid header value"):
        await middleware(http_scope([(HEADER, b"abc")]), receive, send)

    assert sent[0]["status"] == 500
    assert values_of(sent[0]["headers"], HEADER) == [b"abc"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="plain"),
        pytest.param({"handle_errors": True}, id="handle-errors"),
        pytest.param({"attributes": lambda scope: {"k": 1}}, id="attributes"),
    ],
)
async def test_an_exception_from_the_app_carries_the_session_id_to_the_servers_log(
    options: dict[str, Any],
) -> None:
    with pytest.raises(Boom) as raised:
        await call(SessionIdMiddleware(failing_app, **options), http_scope([(HEADER, b"abc")]))

    assert current_session() is None
    assert logged_session_id(raised.value) == "abc"


async def test_one_exception_failing_two_requests_at_once_shows_neither_id() -> None:
    # A failed Future raises its one exception object in every task awaiting it.
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    shared.set_exception(Boom("upstream down"))
    second_left = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await shared

    middleware = SessionIdMiddleware(app)

    async def serve(sid: bytes, wait: bool) -> str:
        try:
            await call(middleware, http_scope([(HEADER, sid)]))
        except Boom as error:
            if wait:
                await second_left.wait()
            else:
                second_left.set()
            return logged_session_id(error)
        raise AssertionError("did not fail")

    first = asyncio.create_task(serve(b"user-a", True))
    await asyncio.sleep(0)
    second = asyncio.create_task(serve(b"user-b", False))

    assert [await first, await second] == ["-", "-"]


async def test_a_type_error_of_the_servers_send_is_raised_once() -> None:
    calls = []

    def send(message: Message) -> Awaitable[None]:
        calls.append(message["type"])
        raise TypeError("not a valid message")

    async def receive() -> Message:
        return {"type": "http.request"}

    app = RecordingApp(response_headers=[(HEADER, b"own")])

    with pytest.raises(TypeError, match="not a valid message"):
        await SessionIdMiddleware(app)(http_scope([]), receive, send)

    assert calls == ["http.response.start"]


@pytest.mark.parametrize("handle_errors", [False, True])
async def test_an_attributes_callable_that_raises_fails_the_request_as_the_app_would(
    handle_errors: bool,
) -> None:
    def attributes(scope: Scope) -> dict[str, Any]:
        raise Boom("attributes")

    app = RecordingApp()
    sent: list[Message] = []
    middleware = SessionIdMiddleware(app, attributes=attributes, handle_errors=handle_errors)

    with pytest.raises(Boom) as raised:
        await call(middleware, http_scope([(HEADER, b"abc")]), sent=sent)

    assert app.visits == []
    assert logged_session_id(raised.value) == "abc"
    if handle_errors:
        assert sent[0]["status"] == 500
        assert values_of(sent[0]["headers"], HEADER) == [b"abc"]
    else:
        assert sent == []


async def test_handle_errors_leaves_websockets_to_the_server() -> None:
    sent: list[Message] = []
    middleware = SessionIdMiddleware(failing_app, handle_errors=True)

    with pytest.raises(Boom):
        await call(middleware, websocket_scope(), [{"type": "websocket.connect"}], sent)

    assert sent == []


async def test_handle_errors_keeps_the_apps_exception_when_sending_fails() -> None:
    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        raise OSError("client went away")

    with pytest.raises(Boom):
        await SessionIdMiddleware(failing_app, handle_errors=True)(http_scope([]), receive, send)


async def test_cancellation_is_not_turned_into_a_500() -> None:
    sent: list[Message] = []
    entered = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await asyncio.Event().wait()

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.ensure_future(
        SessionIdMiddleware(app, handle_errors=True)(http_scope([]), receive, send)
    )
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert sent == []


# --------------------------------------------------------------------------- #
# The context is restored
# --------------------------------------------------------------------------- #


async def test_context_restored_after_return() -> None:
    app = RecordingApp()

    with session("outer"):
        await call(SessionIdMiddleware(app), http_scope([(HEADER, b"inner")]))
        assert current_session_id() == "outer"

    assert app.sid == "inner"
    assert current_session() is None


async def test_context_restored_after_exception() -> None:
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(current_session_id())
        raise Boom

    with session("outer"):
        with pytest.raises(Boom):
            await call(SessionIdMiddleware(app), http_scope([(HEADER, b"inner")]))
        assert current_session_id() == "outer"

    assert seen == ["inner"]


async def test_context_restored_after_cancellation() -> None:
    seen: list[str | None] = []
    after: list[str | None] = []
    entered = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(current_session_id())
        entered.set()
        await asyncio.Event().wait()

    async def request() -> None:
        with session("outer"):
            try:
                await call(SessionIdMiddleware(app), http_scope([(HEADER, b"inner")]))
            finally:
                after.append(current_session_id())

    task = asyncio.ensure_future(request())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert seen == ["inner"]
    assert after == ["outer"]


async def test_tasks_created_by_the_app_see_the_session() -> None:
    seen: list[str | None] = []

    async def child() -> None:
        await asyncio.sleep(0)
        seen.append(current_session_id())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.gather(child(), asyncio.to_thread(lambda: seen.append(current_session_id())))
        await send({"type": "http.response.start", "status": 204})

    await call(SessionIdMiddleware(app), http_scope([(HEADER, b"abc")]))

    assert seen == ["abc", "abc"]


# --------------------------------------------------------------------------- #
# The decision the WSGI middleware shares
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("options", "state", "sid", "expected"),
    [
        pytest.param({}, VALID, "abc", ("abc", VALID), id="valid-continued"),
        pytest.param({}, MISSING, None, (None, MISSING), id="missing-generated"),
        pytest.param({}, INVALID, None, (None, INVALID), id="invalid-generated"),
        pytest.param({"trust_incoming": False}, VALID, "abc", (None, MISSING), id="untrusted"),
        pytest.param(
            {"validator": lambda sid: False}, VALID, "abc", (None, INVALID), id="validator-no"
        ),
        pytest.param({"validator": bool}, VALID, "abc", ("abc", VALID), id="validator-yes"),
        pytest.param({"on_missing": "reject"}, MISSING, None, ("reject", MISSING), id="reject-m"),
        pytest.param({"on_invalid": "reject"}, INVALID, None, ("reject", INVALID), id="reject-i"),
    ],
)
def test_policy_decide(
    options: dict[str, Any], state: int, sid: str | None, expected: tuple[str | None, int]
) -> None:
    policy = SessionPolicy(**options)

    decided, new_state = policy.decide(state, sid)

    want_sid, want_state = expected
    assert new_state == want_state
    if want_sid == "reject":
        assert decided is None
    else:
        assert decided is not None
        assert_session(decided, want_sid)
    assert policy.continues_valid == (
        not options.get("validator") and "trust_incoming" not in options
    )


def test_policy_context_with_and_without_attributes() -> None:
    plain = SessionPolicy().context("abc", {"path": "/"})
    rich = SessionPolicy(attributes=lambda request: dict(request)).context("abc", {"path": "/"})

    assert plain == SessionContext("abc")
    assert plain.attributes is None
    assert rich == SessionContext("abc", {"path": "/"})


# --------------------------------------------------------------------------- #
# The send an app gets
# --------------------------------------------------------------------------- #


def is_coroutine_function(fn: object) -> bool:
    """What asgiref asks of a ``send`` (``asgiref.sync.iscoroutinefunction``)."""
    if sys.version_info >= (3, 12):
        return inspect.iscoroutinefunction(fn)
    return asyncio.iscoroutinefunction(fn)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"handle_errors": True},
        {"expose_header": True},
        {"attributes": lambda scope: {"path": scope["path"]}},
    ],
    ids=["plain", "handle_errors", "expose_header", "attributes"],
)
@pytest.mark.parametrize("scope", [http_scope([]), websocket_scope()], ids=["http", "websocket"])
async def test_the_send_an_app_gets_is_a_coroutine_function(
    options: dict[str, Any], scope: Scope
) -> None:
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(is_coroutine_function(send))
        # asgiref warns about a send it does not take for a coroutine function.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            AsyncToSync(send)
        start = "http.response.start" if scope["type"] == "http" else "websocket.accept"
        await send({"type": start, "status": 200, "headers": []})

    sent = await call(SessionIdMiddleware(app, **options), scope, [{"type": "websocket.connect"}])

    assert seen == [True]
    assert len(values_of(start_headers(sent), HEADER)) == 1


@pytest.mark.parametrize("handle_errors", [False, True])
async def test_a_wsgi_app_behind_asgirefs_wsgi_to_asgi_sees_the_session(
    handle_errors: bool,
) -> None:
    # WsgiToAsgi sends through async_to_sync(send); Django Channels' sync
    # consumers do the same.
    seen: list[str | None] = []

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(current_session_id())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    bridged = WsgiToAsgi(wsgi_app)  # type: ignore[no-untyped-call]
    middleware = SessionIdMiddleware(bridged, handle_errors=handle_errors)
    scope = http_scope(
        [(HEADER, b"abc")], query_string=b"", http_version="1.1", server=("127.0.0.1", 80)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sent = await call(middleware, scope)

    assert seen == ["abc"]
    assert values_of(start_headers(sent), HEADER) == [b"abc"]
    assert b"".join(m.get("body", b"") for m in sent) == b"ok"
