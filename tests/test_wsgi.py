"""``sessionctx.wsgi.SessionIdMiddleware`` through werkzeug's test client and raw environ dicts."""

from __future__ import annotations

import io
import socket
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from wsgiref.util import FileWrapper, setup_testing_defaults
from wsgiref.validate import validator as wsgi_validator

import pytest
from werkzeug.test import Client

from sessionctx import (
    ContextThreadPoolExecutor,
    SessionContext,
    current_session,
    current_session_id,
    is_valid_session_id,
    session,
    set_session_id,
)
from sessionctx.wsgi import SessionIdMiddleware
from tests.support import (
    REFUSING_A_VALID_ID,
    VisitLog,
    assert_session,
    is_generated,
    logged_session_id,
)

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Headers = list[tuple[str, str]]

SCOPE_KEY = "sessionctx.session_id"
ENVIRON_KEY = "HTTP_X_SESSION_ID"
VALID_ID = "0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69"
TEXT = ("Content-Type", "text/plain")


def make_environ(headers: Mapping[str, str] | None = None, path: str = "/") -> dict[str, Any]:
    """A complete environ (``wsgiref``'s testing defaults), ``headers`` as ``HTTP_...`` keys."""
    environ: dict[str, Any] = {"SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def values_of(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


@dataclass
class Server:
    """A small PEP 3333 server: headers go out with the first non-empty chunk or ``write()``.

    ``start_response`` with ``exc_info`` after that re-raises, as PEP 3333 asks.
    Every ``start_response`` call is kept, and ``close()`` is called in ``finally``.
    """

    starts: list[tuple[str, Headers, OptExcInfo | None]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    headers_sent: bool = False

    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None, /
    ) -> Any:
        if exc_info is not None and self.headers_sent:
            error = exc_info[1]
            assert error is not None
            raise error.with_traceback(exc_info[2])
        self.starts.append((status, headers, exc_info))
        return self.write

    def write(self, data: bytes) -> None:
        assert self.starts, "write() before start_response()"
        self.headers_sent = True
        self.chunks.append(data)

    def run(self, app: WSGIApplication, environ: WSGIEnvironment) -> bytes:
        body = app(environ, self.start_response)
        try:
            for chunk in body:
                if chunk:
                    self.write(chunk)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return b"".join(self.chunks)

    @property
    def status(self) -> str:
        return self.starts[-1][0]

    @property
    def headers(self) -> Headers:
        return self.starts[-1][1]

    def session_header(self) -> list[str]:
        return values_of(self.headers, "X-Session-Id")


@dataclass
class Visit:
    """What the app saw during one call."""

    session: SessionContext | None
    environ: WSGIEnvironment


@dataclass
class RecordingApp(VisitLog[Visit]):
    """A WSGI app that notes what it sees, then answers 200 with a list body."""

    response_headers: Headers = field(default_factory=lambda: [TEXT])
    visits: list[Visit] = field(default_factory=list)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        self.visits.append(Visit(current_session(), dict(environ)))
        start_response("200 OK", self.response_headers)
        return [b"ok"]


class Boom(Exception):
    pass


@dataclass
class ClosingBody:
    """An iterable body whose ``__iter__``, steps and ``close()`` record the session they see."""

    chunks: tuple[bytes, ...] = (b"a", b"b")
    fail_at: int | None = None
    close_fails: bool = False
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    closes: int = 0

    def __iter__(self) -> Iterator[bytes]:
        self.seen.append(("iter", current_session_id()))
        return self._steps()

    def _steps(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise Boom(f"failed at chunk {i}")
            self.seen.append(("next", current_session_id()))
            yield chunk

    def close(self) -> None:
        self.closes += 1
        self.seen.append(("close", current_session_id()))
        if self.close_fails:
            raise Boom("close failed")


def body_app(body: Iterable[bytes], headers: Headers | None = None) -> WSGIApplication:
    """An app that calls ``start_response`` at once and returns ``body``."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT] if headers is None else headers)
        return body

    return app


# --------------------------------------------------------------------------- #
# Which id a request gets
# --------------------------------------------------------------------------- #

INBOUND_CASES = [
    pytest.param([("X-Session-Id", "abc")], "abc", id="x-session-id"),
    pytest.param([("x-session-id", VALID_ID)], VALID_ID, id="lower-case-name"),
    pytest.param([("X-TraceCtrl-Session", "abc")], "abc", id="tracectrl-header"),
    pytest.param([("Mirascope-Session-Id", "abc")], "abc", id="mirascope-header"),
    pytest.param(
        [("Mirascope-Session-Id", "low"), ("X-Session-Id", "high")],
        "high",
        id="priority-not-position",
    ),
    pytest.param(
        [("X-Session-Id", "bad value"), ("Mirascope-Session-Id", "ok")],
        None,
        id="invalid-first-name-does-not-fall-through",
    ),
    pytest.param([("baggage", "k=v, session.id=from-baggage")], "from-baggage", id="baggage"),
    pytest.param(
        [("baggage", "session.id=bag"), ("X-Session-Id", "named")],
        "named",
        id="named-header-beats-baggage",
    ),
    pytest.param([("X-Session-Id", "a"), ("X-Session-Id", "b")], None, id="duplicate-differ"),
    pytest.param([("X-Session-Id", "a"), ("X-Session-Id", "a")], None, id="duplicate-same"),
    pytest.param([("X-Session-Id", "x" * 200)], "x" * 200, id="200-chars"),
    pytest.param([("X-Session-Id", "x" * 201)], None, id="201-chars"),
    pytest.param([("X-Session-Id", "")], None, id="empty"),
    pytest.param([("X-Session-Id", "a;b")], None, id="semicolon"),
    pytest.param([], None, id="no-session-headers"),
]


@pytest.mark.parametrize(("headers", "expected"), INBOUND_CASES)
def test_inbound_header_decides_the_session(headers: Headers, expected: str | None) -> None:
    app = RecordingApp()

    response = Client(SessionIdMiddleware(app)).get("/", headers=headers)

    sid = app.sid
    assert_session(sid, expected)
    assert app.only.environ[SCOPE_KEY] == sid
    assert response.headers.getlist("X-Session-Id") == [sid]


@pytest.mark.parametrize(("headers", "expected"), INBOUND_CASES)
def test_a_value_decides_alike_every_time(headers: Headers, expected: str | None) -> None:
    app = RecordingApp()
    client = Client(SessionIdMiddleware(app))

    for _ in range(3):
        response = client.get("/", headers=headers)
        assert_session(app.visits[-1].environ[SCOPE_KEY], expected)
        assert response.headers.getlist("X-Session-Id") == [app.visits[-1].environ[SCOPE_KEY]]


def test_the_fast_path_applies_the_id_rule_to_every_character() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)

    for char in map(chr, range(0x100)):
        for value in (char, f"a{char}b", "x" * 199 + char, "x" * 200 + char):
            valid = is_valid_session_id(value)
            Server().run(middleware, make_environ({"X-Session-Id": value}))
            sid = app.visits[-1].environ[SCOPE_KEY]
            assert sid == value if valid else is_generated(sid), value


@pytest.mark.parametrize("options", REFUSING_A_VALID_ID)
def test_options_refuse_an_id_the_defaults_continue(options: dict[str, Any]) -> None:
    app = RecordingApp()
    environ = {"X-Session-Id": VALID_ID}
    Server().run(SessionIdMiddleware(app), make_environ(environ))

    Server().run(SessionIdMiddleware(app, **options), make_environ(environ))

    assert app.visits[0].environ[SCOPE_KEY] == VALID_ID
    assert is_generated(app.visits[1].environ[SCOPE_KEY])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc, def", id="duplicates-joined-by-the-server"),
        pytest.param("abc\r\nSet-Cookie: a=1", id="crlf"),
        pytest.param("abc\n", id="trailing-lf"),
        pytest.param("a\tb", id="tab"),
        pytest.param(" abc", id="leading-space"),
        pytest.param("café", id="latin-1-char"),
        pytest.param("x" * 10_000, id="over-long"),
        pytest.param("x" * 201, id="one-over-the-limit"),
        pytest.param("", id="empty"),
        pytest.param("abc\x7f", id="del"),
        pytest.param("a;b", id="semicolon"),
        pytest.param('a"b', id="quote"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("abc\ud800", id="lone-surrogate"),
    ],
)
def test_raw_environ_values_that_are_not_ids_get_a_new_session(value: str) -> None:
    app = RecordingApp()
    server = Server()

    server.run(SessionIdMiddleware(app), make_environ({"X-Session-Id": value}))

    assert is_generated(app.sid)
    assert server.session_header() == [app.sid]
    assert app.only.environ[ENVIRON_KEY] == value


@pytest.mark.parametrize(
    "value", ["x" * 200, "!", "~#+-:<[]", "0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69"]
)
def test_raw_environ_values_at_the_edges_of_the_rule_are_continued(value: str) -> None:
    app = RecordingApp()
    server = Server()

    server.run(SessionIdMiddleware(app), make_environ({"X-Session-Id": value}))

    assert app.sid == value
    assert server.session_header() == [value]


def test_generated_ids_differ_per_request() -> None:
    app = RecordingApp()
    client = Client(SessionIdMiddleware(app))

    headers = [client.get("/").headers["X-Session-Id"] for _ in range(3)]

    assert len(set(headers)) == 3
    assert headers == [visit.session.id for visit in app.visits if visit.session]


def test_app_sees_the_session_and_the_environ_key() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        seen.append((current_session_id(), environ.get(SCOPE_KEY)))
        start_response("200 OK", [TEXT])
        return [b"ok"]

    response = Client(SessionIdMiddleware(app)).get("/", headers={"X-Session-Id": "abc"})

    assert seen == [("abc", "abc")]
    assert response.text == "ok"
    assert current_session() is None


def test_the_request_has_one_session_object_in_the_body_and_threads() -> None:
    seen: list[SessionContext | None] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        assert current_session_id() == "abc"
        seen.append(current_session())
        start_response("200 OK", [TEXT])
        with ContextThreadPoolExecutor(max_workers=2) as pool:
            seen.extend(pool.map(lambda _: current_session(), range(4)))
        yield b"ok"
        seen.append(current_session())  # while the server iterates the body

    middleware = SessionIdMiddleware(app)
    assert Client(middleware).get("/", headers={"X-Session-Id": "abc"}).text == "ok"
    first = seen[0]
    assert first == SessionContext("abc")
    assert len(seen) == 6
    assert all(ctx is first for ctx in seen)

    seen.clear()
    assert Client(middleware).get("/", headers={"X-Session-Id": "abc"}).text == "ok"
    assert seen[0] == first
    assert seen[0] is not first  # a new request, a new object


# --------------------------------------------------------------------------- #
# The response header
# --------------------------------------------------------------------------- #


def test_header_is_added_once_and_the_apps_list_is_not_mutated() -> None:
    shared: Headers = [TEXT]
    client = Client(SessionIdMiddleware(body_app([b"ok"], headers=shared)))

    first = client.get("/", headers={"X-Session-Id": "one"})
    second = client.get("/", headers={"X-Session-Id": "two"})

    assert first.headers.getlist("X-Session-Id") == ["one"]
    assert second.headers.getlist("X-Session-Id") == ["two"]
    assert shared == [TEXT]


@pytest.mark.parametrize("name", ["X-Session-Id", "x-session-id", "X-SESSION-ID"])
def test_the_apps_own_header_wins(name: str) -> None:
    app = RecordingApp(response_headers=[TEXT, (name, "from-app")])
    server = Server()

    server.run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "abc"}))

    assert server.session_header() == ["from-app"]
    assert server.headers == [TEXT, (name, "from-app")]


@pytest.mark.parametrize(
    ("header_name", "own"),
    [
        pytest.param("X-Session-Id", "x-SeSsIoN-iD", id="spellings-in-a-set"),
        # More letters than a set of all spellings is kept for.
        pytest.param("X-Correlation-Identifier", "x-cORRELATION-identifier", id="long-name"),
    ],
)
def test_the_apps_own_header_wins_in_any_spelling(header_name: str, own: str) -> None:
    app = RecordingApp(response_headers=[TEXT, (own, "from-app")])
    server = Server()
    middleware = SessionIdMiddleware(app, header_name=header_name)

    server.run(middleware, make_environ({header_name: "abc"}))

    assert server.headers == [TEXT, (own, "from-app")]


@pytest.mark.parametrize("header_name", ["X-Session-Id", "X-Correlation-Identifier"])
def test_another_name_of_the_same_length_is_not_the_session_header(header_name: str) -> None:
    other = "Y" + header_name[1:]
    app = RecordingApp(response_headers=[("Content-Type", "text/plain"), (other, "v")])
    server = Server()
    middleware = SessionIdMiddleware(app, header_name=header_name)

    server.run(middleware, make_environ({header_name: "abc"}))

    assert server.headers == [("Content-Type", "text/plain"), (other, "v"), (header_name, "abc")]


def test_custom_header_name_is_read_and_written() -> None:
    app = RecordingApp()

    response = Client(SessionIdMiddleware(app, header_name="X-Request-Session")).get(
        "/", headers={"X-Request-Session": "abc"}
    )

    assert app.sid == "abc"
    assert response.headers.getlist("X-Request-Session") == ["abc"]
    assert "X-Session-Id" not in response.headers


# --------------------------------------------------------------------------- #
# Options
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("accept_headers", "headers", "expected"),
    [
        pytest.param(["X-Other"], {"X-Other": "abc"}, "abc", id="listed-name-read"),
        pytest.param(["X-Other"], {"X-Session-Id": "abc"}, None, id="header-name-not-added"),
        pytest.param(
            ["X-B", "X-A"], {"X-A": "from-a", "X-B": "from-b"}, "from-b", id="given-order"
        ),
        pytest.param(["X-Other"], {"baggage": "session.id=bag"}, "bag", id="baggage-last"),
    ],
)
def test_accept_headers_are_used_exactly_as_given(
    accept_headers: list[str], headers: dict[str, str], expected: str | None
) -> None:
    app = RecordingApp()
    server = Server()

    server.run(SessionIdMiddleware(app, accept_headers=accept_headers), make_environ(headers))

    assert_session(app.sid, expected)
    assert server.session_header() == [app.sid]


def test_header_name_leads_the_default_accepted_names() -> None:
    app = RecordingApp()
    environ = make_environ({"X-Session-Id": "default-name", "X-Mine": "mine"})

    Server().run(SessionIdMiddleware(app, header_name="X-Mine"), environ)

    assert app.sid == "mine"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Session-Id": "abc"}, id="valid-header"),
        pytest.param({"baggage": "session.id=abc"}, id="baggage"),
        pytest.param({}, id="none"),
    ],
)
def test_trust_incoming_false_always_generates(headers: dict[str, str]) -> None:
    app = RecordingApp()

    Server().run(SessionIdMiddleware(app, trust_incoming=False), make_environ(headers))

    assert is_generated(app.sid)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("tenant-1", "tenant-1", id="accepted"),
        pytest.param("other-1", None, id="refused"),
        pytest.param("tenant 1", None, id="id-rule-still-applies"),
    ],
)
def test_validator_applies_on_top_of_the_id_rule(value: str, expected: str | None) -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, validator=lambda sid: sid.startswith("tenant"))

    Server().run(middleware, make_environ({"X-Session-Id": value}))

    assert_session(app.sid, expected)


def test_custom_generator_is_used_when_an_id_is_needed() -> None:
    app = RecordingApp()
    ids = iter(["gen-1", "gen-2"])
    client = Client(SessionIdMiddleware(app, generator=lambda: next(ids)))

    assert client.get("/").headers["X-Session-Id"] == "gen-1"
    assert client.get("/", headers={"X-Session-Id": "kept"}).headers["X-Session-Id"] == "kept"
    assert client.get("/").headers["X-Session-Id"] == "gen-2"


@pytest.mark.parametrize("bad", ["", "has space", 42, None])
def test_generator_returning_an_invalid_id_raises_runtime_error(bad: object) -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, generator=lambda: bad)  # type: ignore[arg-type,return-value]

    with pytest.raises(RuntimeError, match="session id generator returned an invalid id"):
        Server().run(middleware, make_environ())

    assert app.visits == []


REJECT_CASES = [
    pytest.param({"on_missing": "reject"}, {}, "Missing X-Session-Id header", id="missing"),
    pytest.param(
        {"on_invalid": "reject"}, {"X-Session-Id": "a b"}, "Invalid X-Session-Id header", id="bad"
    ),
    pytest.param(
        {"on_invalid": "reject", "validator": lambda sid: False},
        {"X-Session-Id": "abc"},
        "Invalid X-Session-Id header",
        id="refused-by-validator",
    ),
    pytest.param(
        {"on_missing": "reject", "header_name": "X-Trace-Session"},
        {},
        "Missing X-Trace-Session header",
        id="names-the-configured-header",
    ),
    # With accept_headers the body names what is read, not the response header.
    pytest.param(
        {"on_missing": "reject", "accept_headers": ["X-Request-Id"]},
        {"X-Session-Id": "abc"},
        "Missing X-Request-Id header",
        id="missing-names-the-accepted-header",
    ),
    pytest.param(
        {"on_invalid": "reject", "accept_headers": ["A-Id", "B-Id"]},
        {"B-Id": "bad value", "X-Session-Id": "abc"},
        "Invalid B-Id header",
        id="invalid-names-the-header-that-decided",
    ),
    pytest.param(
        {"on_invalid": "reject"},
        {"Baggage": "session.id=bad%20value"},
        "Invalid baggage header",
        id="invalid-baggage",
    ),
]

# What a browser sends before a cross-origin request with a custom header: the
# header itself is only named, never sent.
PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-session-id",
}


def test_a_cors_preflight_is_not_rejected_for_a_missing_id() -> None:
    app = RecordingApp()

    response = Client(SessionIdMiddleware(app, on_missing="reject")).options("/", headers=PREFLIGHT)

    assert response.status_code == 200
    assert is_generated(app.sid)
    assert response.headers["X-Session-Id"] == app.sid


@pytest.mark.parametrize(
    ("method", "headers", "options"),
    [
        pytest.param(
            "OPTIONS", {"Origin": "https://app.example"}, {"on_missing": "reject"}, id="not-cors"
        ),
        pytest.param("POST", PREFLIGHT, {"on_missing": "reject"}, id="not-options"),
        pytest.param(
            "OPTIONS",
            {**PREFLIGHT, "X-Session-Id": "bad value"},
            {"on_invalid": "reject"},
            id="preflight-with-an-invalid-id",
        ),
    ],
)
def test_reject_still_applies_to_what_is_not_a_preflight_missing_the_id(
    method: str, headers: dict[str, str], options: dict[str, Any]
) -> None:
    app = RecordingApp()

    response = Client(SessionIdMiddleware(app, **options)).open("/", method=method, headers=headers)

    assert response.status_code == 400
    assert app.visits == []


@pytest.mark.parametrize(
    ("options", "headers"),
    [({"on_missing": "reject"}, {}), ({"on_invalid": "reject"}, {"X-Session-Id": "a b"})],
)
def test_a_rejected_head_request_gets_no_body(
    options: dict[str, Any], headers: dict[str, str]
) -> None:
    """RFC 9110: a response to HEAD has no content; a server that sent it anyway
    (waitress does) would corrupt the next response on the connection."""
    environ = make_environ(headers)
    environ["REQUEST_METHOD"] = "HEAD"
    server = Server()
    assert server.run(SessionIdMiddleware(RecordingApp(), **options), environ) == b""
    assert server.status == "400 Bad Request"
    assert int(values_of(server.headers, "Content-Length")[0]) > 0


@pytest.mark.parametrize(("options", "headers", "body"), REJECT_CASES)
def test_reject_answers_400_without_calling_the_app(
    options: dict[str, Any], headers: dict[str, str], body: str
) -> None:
    app = RecordingApp()

    response = Client(SessionIdMiddleware(app, **options)).get("/", headers=headers)

    assert response.status_code == 400
    assert response.text == body
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(body))
    assert "X-Session-Id" not in response.headers
    assert "X-Trace-Session" not in response.headers
    assert app.visits == []


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        pytest.param({"on_missing": "reject"}, {"X-Session-Id": "a b"}, id="missing-only"),
        pytest.param({"on_invalid": "reject"}, {}, id="invalid-only"),
        pytest.param({"on_missing": "reject", "on_invalid": "reject"}, {"X-Session-Id": "ok"}),
    ],
)
def test_reject_applies_only_to_its_own_case(
    options: dict[str, Any], headers: dict[str, str]
) -> None:
    app = RecordingApp()

    response = Client(SessionIdMiddleware(app, **options)).get("/", headers=headers)

    assert response.status_code == 200
    assert response.headers["X-Session-Id"] == app.sid


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, None, id="missing-is-added"),
        pytest.param({"X-Session-Id": "bad value"}, None, id="invalid-is-replaced"),
        pytest.param({"Mirascope-Session-Id": "m-1"}, "absent", id="continued-left-alone"),
        pytest.param({"X-Session-Id": "abc"}, "abc", id="valid-left-alone"),
    ],
)
def test_update_request_header_shows_a_generated_id(
    headers: dict[str, str], expected: str | None
) -> None:
    app = RecordingApp()

    Server().run(SessionIdMiddleware(app, update_request_header=True), make_environ(headers))

    written = app.only.environ.get(ENVIRON_KEY, "absent")
    if expected is None:
        assert written == app.sid
        assert is_generated(written)
    else:
        assert written == expected


def test_update_request_header_uses_the_configured_name() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, header_name="X-Trace-Session", update_request_header=True)

    Server().run(middleware, make_environ())

    assert app.only.environ["HTTP_X_TRACE_SESSION"] == app.sid
    assert ENVIRON_KEY not in app.only.environ


def test_request_headers_are_left_alone_by_default() -> None:
    app = RecordingApp()

    Server().run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "bad value"}))

    assert app.only.environ[ENVIRON_KEY] == "bad value"
    assert is_generated(app.sid)


def test_attributes_callable_gets_the_environ() -> None:
    app = RecordingApp()
    seen: list[WSGIEnvironment] = []

    def attributes(environ: WSGIEnvironment) -> dict[str, Any]:
        seen.append(environ)
        return {"path": environ["PATH_INFO"], "session": environ[SCOPE_KEY]}

    environ = make_environ({"X-Session-Id": "abc"}, path="/items")
    Server().run(SessionIdMiddleware(app, attributes=attributes), environ)

    assert seen == [environ]
    session = app.only.session
    assert session is not None
    assert session.attributes == {"path": "/items", "session": "abc"}


def test_attributes_callable_may_return_none() -> None:
    app = RecordingApp()

    Server().run(SessionIdMiddleware(app, attributes=lambda environ: None), make_environ())

    session = app.only.session
    assert session is not None
    assert session.attributes is None


def test_attributes_that_are_not_json_raise_before_the_app_runs() -> None:
    app = RecordingApp()
    middleware = SessionIdMiddleware(app, attributes=lambda environ: {"when": object()})

    with pytest.raises(TypeError, match="when"):
        Server().run(middleware, make_environ())

    assert app.visits == []


ALLOW = ("Access-Control-Allow-Origin", "https://example.com")
EXPOSE = "Access-Control-Expose-Headers"

EXPOSE_CASES = [
    pytest.param([TEXT], [], id="not-a-cors-response"),
    # The name as the response header is written (ASGI writes both in lower case).
    pytest.param([ALLOW], ["X-Session-Id"], id="cors-without-expose"),
    pytest.param([ALLOW, (EXPOSE, "X-Request-Id")], ["X-Request-Id, X-Session-Id"], id="merged"),
    pytest.param([ALLOW, (EXPOSE, "a, x-session-id")], ["a, x-session-id"], id="already-listed"),
    pytest.param(
        [(EXPOSE.lower(), "x-a"), (ALLOW[0].upper(), "*")], ["x-a, X-Session-Id"], id="any-case"
    ),
]


@pytest.mark.parametrize(("response_headers", "expected"), EXPOSE_CASES)
def test_expose_header_merges_into_cors_responses(
    response_headers: Headers, expected: list[str]
) -> None:
    app = RecordingApp(response_headers=response_headers)
    server = Server()

    server.run(SessionIdMiddleware(app, expose_header=True), make_environ())

    assert values_of(server.headers, EXPOSE) == expected
    assert server.session_header() == [app.sid]


def test_expose_header_off_leaves_cors_headers_alone() -> None:
    app = RecordingApp(response_headers=[ALLOW, (EXPOSE, "X-Request-Id")])
    server = Server()

    server.run(SessionIdMiddleware(app), make_environ())

    assert values_of(server.headers, EXPOSE) == ["X-Request-Id"]


# --------------------------------------------------------------------------- #
# One context per request
# --------------------------------------------------------------------------- #


def test_generator_body_sees_the_session_on_every_step_and_close() -> None:
    body = ClosingBody(chunks=(b"a", b"b", b"c"))
    middleware = SessionIdMiddleware(body_app(body))

    returned = middleware(make_environ({"X-Session-Id": "abc"}), Server().start_response)
    chunks = []
    for chunk in returned:
        # Between steps the caller's own context has no session.
        assert current_session() is None
        chunks.append(chunk)
    returned.close()  # type: ignore[attr-defined]

    assert chunks == [b"a", b"b", b"c"]
    assert body.seen == [
        ("iter", "abc"),
        ("next", "abc"),
        ("next", "abc"),
        ("next", "abc"),
        ("close", "abc"),
    ]
    assert current_session() is None


def test_plain_generator_function_body_sees_the_session() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [TEXT])
        for _ in range(3):
            yield f"{current_session_id()}\n".encode()

    response = Client(SessionIdMiddleware(app)).get("/", headers={"X-Session-Id": "abc"})

    assert response.text == "abc\nabc\nabc\n"


request_var: ContextVar[str] = ContextVar("request_var", default="unset")


def test_steps_and_close_share_the_requests_context() -> None:
    """A token set in one step resets in ``close()``, as Flask's ``stream_with_context`` does."""
    resets: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [TEXT])
        token = request_var.set(environ[SCOPE_KEY])
        try:
            yield b"one"
            yield request_var.get().encode()
            yield b"never read"
        finally:
            request_var.reset(token)  # raises if run in another Context
            resets.append(request_var.get())

    server = Server()
    body = SessionIdMiddleware(app)(make_environ({"X-Session-Id": "abc"}), server.start_response)
    iterator = iter(body)
    assert [next(iterator), next(iterator)] == [b"one", b"abc"]
    assert request_var.get() == "unset"
    body.close()  # type: ignore[attr-defined]

    assert resets == ["unset"]


def test_each_request_starts_from_the_server_threads_context() -> None:
    """A ContextVar the app sets is gone for the next request on the same thread."""
    seen: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        seen.append(request_var.get())
        request_var.set("set by a request")
        start_response("200 OK", [TEXT])
        return [b"ok"]

    client = Client(SessionIdMiddleware(app))
    client.get("/")
    client.get("/")

    assert seen == ["unset", "unset"]
    assert request_var.get() == "unset"


def test_a_session_active_in_the_server_thread_is_replaced_not_changed() -> None:
    app = RecordingApp()
    with session("outer") as outer:
        Server().run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "inner"}))
        assert current_session() is outer

    assert app.sid == "inner"


def test_concurrent_requests_with_interleaved_bodies_never_cross() -> None:
    threads_n = 8
    barrier = threading.Barrier(threads_n, timeout=10)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [TEXT])
        for _ in range(3):
            barrier.wait()  # every thread is inside its body at once
            yield f"{current_session_id()};".encode()

    middleware = SessionIdMiddleware(app)
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def client(sid: str) -> None:
        try:
            results[sid] = Server().run(middleware, make_environ({"X-Session-Id": sid}))
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(f"t-{i}",)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert results == {f"t-{i}": f"t-{i};t-{i};t-{i};".encode() for i in range(threads_n)}


# --------------------------------------------------------------------------- #
# start_response
# --------------------------------------------------------------------------- #


def test_start_response_called_lazily_from_the_body() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("201 Created", [TEXT])
        yield current_session_id().encode()  # type: ignore[union-attr]

    response = Client(SessionIdMiddleware(app)).get("/", headers={"X-Session-Id": "lazy"})

    assert response.status_code == 201
    assert response.text == "lazy"
    assert response.headers.getlist("X-Session-Id") == ["lazy"]


def test_write_callable_is_the_servers_own() -> None:
    returned: list[object] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [TEXT])
        returned.append(write)
        write(b"written ")
        return [b"returned"]

    server = Server()
    body = server.run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "abc"}))

    assert returned == [server.write]
    assert body == b"written returned"
    assert server.session_header() == ["abc"]


def test_exc_info_is_passed_through_and_each_header_list_gets_the_id() -> None:
    caught: list[OptExcInfo] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [TEXT])
        try:
            raise Boom("while rendering")
        except Boom:
            caught.append(sys.exc_info())
            start_response("503 Service Unavailable", [TEXT], caught[0])
        return [b"sorry"]

    server = Server()
    server.run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "abc"}))

    assert [status for status, _, _ in server.starts] == ["200 OK", "503 Service Unavailable"]
    assert server.starts[1][2] is caught[0]
    for _, headers, _ in server.starts:
        assert values_of(headers, "X-Session-Id") == ["abc"]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="default"),
        pytest.param({"handle_errors": True}, id="handle-errors"),
        pytest.param({"expose_header": True}, id="expose-header"),
    ],
)
def test_exc_info_may_be_passed_by_keyword(options: dict[str, Any]) -> None:
    """PEP 3333 names the parameter ``exc_info``; servers accept it by keyword."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        try:
            raise Boom("while rendering")
        except Boom:
            # typeshed declares it positional-only; PEP 3333 and real servers do not.
            start_response(
                "500 Internal Server Error",
                [TEXT],
                exc_info=sys.exc_info(),  # type: ignore[call-arg]
            )
        return [b"sorry"]

    server = Server()
    server.run(SessionIdMiddleware(app, **options), make_environ({"X-Session-Id": "abc"}))

    assert server.status == "500 Internal Server Error"
    assert server.session_header() == ["abc"]


@pytest.mark.parametrize("handle_errors", [False, True])
def test_exc_info_after_headers_were_sent_reraises(handle_errors: bool) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [TEXT])
        write(b"partial")
        try:
            raise Boom("too late")
        except Boom:
            start_response("500 Internal Server Error", [TEXT], sys.exc_info())
        return [b"unreachable"]

    server = Server()
    with pytest.raises(Boom, match="too late"):
        server.run(SessionIdMiddleware(app, handle_errors=handle_errors), make_environ())

    assert [status for status, _, _ in server.starts] == ["200 OK"]
    assert server.chunks == [b"partial"]


# --------------------------------------------------------------------------- #
# The returned body
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("handle_errors", [False, True])
@pytest.mark.parametrize("body", [[b"a", b"b"], (b"a", b"b")], ids=["list", "tuple"])
def test_list_and_tuple_bodies_are_returned_as_they_are(
    body: Iterable[bytes], handle_errors: bool
) -> None:
    server = Server()
    middleware = SessionIdMiddleware(body_app(body), handle_errors=handle_errors)

    returned = middleware(make_environ(), server.start_response)

    assert returned is body
    assert len(returned) == 2  # type: ignore[arg-type]
    assert server.session_header()


class SizedClosingBody(ClosingBody):
    """A body with ``len()`` and ``close()``, such as a list subclass with ``close()``."""

    def __len__(self) -> int:
        self.seen.append(("len", current_session_id()))
        return len(self.chunks)


@pytest.mark.parametrize("handle_errors", [False, True])
def test_a_wrapped_body_keeps_the_len_of_the_apps_body(handle_errors: bool) -> None:
    """waitress and wsgiref set Content-Length for a body of len() 1."""
    body = SizedClosingBody(chunks=(b"one chunk",))
    returned = SessionIdMiddleware(body_app(body), handle_errors=handle_errors)(
        make_environ({"X-Session-Id": "abc"}), Server().start_response
    )

    assert returned is not body
    assert len(returned) == 1  # type: ignore[arg-type]
    assert body.seen == [("len", "abc")]
    unsized = SessionIdMiddleware(body_app(ClosingBody()), handle_errors=handle_errors)
    assert not hasattr(unsized(make_environ(), Server().start_response), "__len__")


class RecordingFile(io.BytesIO):
    """A file whose ``close()`` notes the session it runs in."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.closed_in: list[str | None] = []

    def close(self) -> None:
        self.closed_in.append(current_session_id())
        super().close()


class SlottedFileWrapper:
    """A ``wsgi.file_wrapper`` whose instances take no new attributes."""

    __slots__ = ("filelike",)

    def __init__(self, filelike: RecordingFile, block_size: int = 8192) -> None:
        self.filelike = filelike

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.filelike.read(4), b"")

    def close(self) -> None:
        self.filelike.close()


def function_file_wrapper(filelike: RecordingFile, block_size: int = 8192) -> Iterable[bytes]:
    """A ``wsgi.file_wrapper`` that is a function, not a class (PEP 3333 allows it)."""
    return FileWrapper(filelike, 4)


def uwsgi_file_wrapper(filelike: RecordingFile, block_size: int = 8192) -> RecordingFile:
    """A function like uWSGI's: it returns the file itself, and the server sends it
    with sendfile() only when the application returns that very object."""
    return filelike


def file_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    wrapper = environ["wsgi.file_wrapper"]
    filelike = environ["test.file"] = RecordingFile(b"file contents")
    made = environ["test.made"] = wrapper(filelike, 4)
    return made  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("file_wrapper", "same_object", "closed_in"),
    [
        pytest.param(FileWrapper, True, ["abc"], id="servers-class-kept-close-in-context"),
        pytest.param(SlottedFileWrapper, True, [None], id="slotted-kept-close-outside"),
        pytest.param(uwsgi_file_wrapper, True, ["abc"], id="function-returning-the-file-kept"),
        # What it returns has no read(): not a file the server can send itself.
        pytest.param(function_file_wrapper, False, ["abc"], id="function-wrapped"),
    ],
)
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="no-options"),
        pytest.param({"handle_errors": True}, id="handle-errors"),
        pytest.param({"attributes": lambda environ: {"path": "/"}}, id="attributes"),
    ],
)
def test_file_wrapper_bodies_stay_recognisable(
    file_wrapper: Any, same_object: bool, closed_in: list[str | None], options: dict[str, Any]
) -> None:
    environ = make_environ({"X-Session-Id": "abc"})
    environ["wsgi.file_wrapper"] = file_wrapper
    server = Server()

    body = SessionIdMiddleware(file_app, **options)(environ, server.start_response)
    assert (body is environ["test.made"]) is same_object
    content = b"".join(body)
    body.close()  # type: ignore[attr-defined]

    assert content == b"file contents"
    assert environ["test.file"].closed_in == closed_in
    assert server.session_header() == ["abc"]


def test_file_wrapper_without_close_is_returned_as_it_is() -> None:
    class NoClose:
        def read(self, size: int = -1, /) -> bytes:
            return b""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return environ["wsgi.file_wrapper"](NoClose())  # type: ignore[no-any-return]

    environ = make_environ()
    environ["wsgi.file_wrapper"] = FileWrapper

    body = SessionIdMiddleware(app)(environ, Server().start_response)

    assert type(body) is FileWrapper
    assert not hasattr(body, "close")


def test_a_body_without_close_is_stepped_and_closed_safely() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return iter([b"a", b"b"])

    body = SessionIdMiddleware(app)(make_environ(), Server().start_response)

    assert list(body) == [b"a", b"b"]
    body.close()  # type: ignore[attr-defined]


@dataclass
class SequenceBody(ClosingBody):
    """Like Django's ``HttpResponse``: ``__iter__`` hands out a list's (or tuple's) iterator."""

    as_tuple: bool = False

    def __iter__(self) -> Iterator[bytes]:
        self.seen.append(("iter", current_session_id()))
        return iter(self.chunks if self.as_tuple else list(self.chunks))


@pytest.mark.parametrize("as_tuple", [False, True], ids=["list", "tuple"])
@pytest.mark.parametrize("handle_errors", [False, True])
def test_a_sequences_iterator_is_stepped_by_the_server_directly(
    as_tuple: bool, handle_errors: bool
) -> None:
    """Stepping it runs no application code; ``__iter__`` and ``close()`` still run in context."""
    inner = SequenceBody(chunks=(b"a", b"b"), as_tuple=as_tuple)
    middleware = SessionIdMiddleware(body_app(inner), handle_errors=handle_errors)
    body = middleware(make_environ({"X-Session-Id": "abc"}), Server().start_response)

    iterator = iter(body)
    # handle_errors keeps every step behind the wrapper, which turns errors into a 500.
    handed_out = iter(()) if as_tuple else iter([])
    assert (iterator is body) is handle_errors
    assert type(iterator) is (type(body) if handle_errors else type(handed_out))
    assert next(iterator) == b"a"
    # Stepping the wrapper too goes on with the same iterator.
    assert next(body) == b"b"  # type: ignore[call-overload]
    assert list(iterator) == []
    assert iter(body) is body  # asked again: no second iterator of the application's
    body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]

    assert inner.seen == [("iter", "abc"), ("close", "abc")]
    assert inner.closes == 1


CLOSE_CASES = [
    pytest.param(0, None, False, id="never-iterated"),
    pytest.param(1, None, False, id="partly-iterated"),
    pytest.param(3, None, False, id="exhausted"),
    pytest.param(3, 1, False, id="raises-mid-body"),
    pytest.param(3, 0, False, id="raises-before-the-first-chunk"),
    pytest.param(3, None, True, id="close-raises"),
]


@pytest.mark.parametrize("handle_errors", [False, True])
@pytest.mark.parametrize(("steps", "fail_at", "close_fails"), CLOSE_CASES)
def test_close_runs_exactly_once_in_the_requests_context(
    steps: int, fail_at: int | None, close_fails: bool, handle_errors: bool
) -> None:
    inner = ClosingBody(chunks=(b"a", b"b", b"c"), fail_at=fail_at, close_fails=close_fails)
    middleware = SessionIdMiddleware(body_app(inner), handle_errors=handle_errors)
    body = middleware(make_environ({"X-Session-Id": "abc"}), Server().start_response)
    iterator = iter(body)

    with pytest.raises(Boom) if fail_at is not None and fail_at < steps else nullcontext():
        for _ in range(steps):
            next(iterator)
    with pytest.raises(Boom, match="close failed") if close_fails else nullcontext():
        body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]  # a server closing twice

    assert inner.closes == 1
    assert inner.seen[-1] == ("close", "abc")


# --------------------------------------------------------------------------- #
# The id of a failed request, for the server's log of the exception
# --------------------------------------------------------------------------- #


class FailingIter:
    """A body whose ``__iter__`` raises."""

    def __iter__(self) -> Iterator[bytes]:
        raise Boom("iter failed")


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="plain"),
        pytest.param({"handle_errors": True}, id="handle-errors"),
        pytest.param({"attributes": lambda environ: {"k": 1}}, id="attributes"),
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="app-call"),
        pytest.param(lambda: ClosingBody(fail_at=1), id="a-step"),
        pytest.param(lambda: ClosingBody(fail_at=0), id="the-first-step"),
        pytest.param(lambda: ClosingBody(close_fails=True), id="close"),
        pytest.param(FailingIter, id="iter"),
    ],
)
def test_an_exception_from_the_app_carries_the_session_id_to_the_servers_log(
    options: dict[str, Any], body: Callable[[], Iterable[bytes]] | None
) -> None:
    app = raise_before_start if body is None else body_app(body())
    middleware = SessionIdMiddleware(app, **options)

    with pytest.raises(Boom) as raised:
        Server().run(middleware, make_environ({"X-Session-Id": "abc"}))

    assert current_session() is None
    assert logged_session_id(raised.value) == "abc"


def test_a_body_that_cleared_the_session_notes_no_id() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        set_session_id(None)
        start_response("200 OK", [TEXT])
        return ClosingBody(fail_at=0)._steps()

    with pytest.raises(Boom) as raised:
        Server().run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "abc"}))

    assert logged_session_id(raised.value) == "-"


def test_a_response_header_name_that_cannot_be_hashed_is_a_type_error() -> None:
    # WSGI header names are str; a server turns down anything else too.
    odd = bytearray(b"X-Session-Id")
    app = RecordingApp(response_headers=[TEXT, (odd, "x")])  # type: ignore[list-item]
    server = Server()

    with pytest.raises(TypeError, match="bytearray"):
        server.run(SessionIdMiddleware(app), make_environ({"X-Session-Id": "abc"}))

    assert server.starts == []


def test_one_exception_failing_two_requests_at_once_shows_neither_id() -> None:
    # A failed Future raises its one exception object in every waiter: a
    # server logging it for one request must not show the other's id.
    shared: Future[None] = Future()
    shared.set_exception(Boom("upstream down"))

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        shared.result()
        return []

    middleware = SessionIdMiddleware(app)
    first_left = threading.Event()
    logged: dict[str, str] = {}

    def serve(sid: str, wait: threading.Event | None) -> None:
        try:
            middleware(make_environ({"X-Session-Id": sid}), Server().start_response)
        except Boom as error:
            if wait is not None:
                first_left.set()
                wait.wait(10)
            logged[sid] = logged_session_id(error)

    second_left = threading.Event()
    first = threading.Thread(target=serve, args=("user-a", second_left))
    first.start()
    assert first_left.wait(10)
    second = threading.Thread(target=serve, args=("user-b", None))
    second.start()
    second.join(10)
    second_left.set()
    first.join(10)

    assert logged == {"user-a": "-", "user-b": "-"}


def test_a_type_error_of_the_servers_start_response_is_raised_once() -> None:
    calls = []

    def start_response(status: str, headers: Headers, exc_info: object = None) -> Any:
        calls.append(status)
        raise TypeError("5 is not a string")

    app = RecordingApp(response_headers=[("X-Session-Id", "own"), ("Content-Length", 5)])  # type: ignore[list-item]

    with pytest.raises(TypeError, match="5 is not a string"):
        SessionIdMiddleware(app)(make_environ(), start_response)

    assert calls == ["200 OK"]


def test_the_end_of_a_body_is_no_error_to_note() -> None:
    body = ClosingBody()
    returned = SessionIdMiddleware(body_app(body))(make_environ(), Server().start_response)
    steps = iter(returned)
    assert list(steps) == [b"a", b"b"]
    with pytest.raises(StopIteration) as ended:
        next(steps)
    assert logged_session_id(ended.value) == "-"


@pytest.mark.parametrize("handle_errors", [False, True])
def test_an_attributes_callable_that_raises_fails_the_request_as_the_app_would(
    handle_errors: bool,
) -> None:
    def attributes(environ: WSGIEnvironment) -> dict[str, Any]:
        raise Boom("attributes")

    app = RecordingApp()
    server = Server()
    middleware = SessionIdMiddleware(app, attributes=attributes, handle_errors=handle_errors)

    with pytest.raises(Boom) as raised:
        server.run(middleware, make_environ({"X-Session-Id": "abc"}))

    assert app.visits == []
    assert logged_session_id(raised.value) == "abc"
    if handle_errors:
        assert server.status.startswith("500 ")
        assert server.session_header() == ["abc"]
    else:
        assert server.starts == []


# --------------------------------------------------------------------------- #
# handle_errors
# --------------------------------------------------------------------------- #


def raise_before_start(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    raise Boom("before start_response")


def raise_lazily_before_start(
    environ: WSGIEnvironment, start_response: StartResponse
) -> Iterator[bytes]:
    raise Boom("before start_response")
    yield b"never"


#: The application raises before it calls ``start_response``.
FAILS_BEFORE_START = pytest.mark.parametrize(
    "app",
    [
        pytest.param(raise_before_start, id="in-the-call"),
        pytest.param(raise_lazily_before_start, id="in-the-body"),
    ],
)


@FAILS_BEFORE_START
def test_handle_errors_sends_a_500_with_the_header_then_reraises(app: WSGIApplication) -> None:
    server = Server()

    with pytest.raises(Boom, match="before start_response"):
        server.run(
            SessionIdMiddleware(app, handle_errors=True), make_environ({"X-Session-Id": "e"})
        )

    assert [status for status, _, _ in server.starts] == ["500 Internal Server Error"]
    _, headers, exc_info = server.starts[0]
    # Nothing was started that exc_info could replace; uWSGI 2.0 sends no body
    # for a response started with one.
    assert exc_info is None
    assert headers == [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", "21"),
        ("X-Session-Id", "e"),
    ]
    assert server.chunks == [b"Internal Server Error"]


@dataclass
class FailingWriteServer(Server):
    """A server whose ``write()`` raises: the client went away."""

    def write(self, data: bytes) -> None:
        raise ConnectionResetError("client went away")


@FAILS_BEFORE_START
@pytest.mark.parametrize(
    "server_class", [Server, FailingWriteServer], ids=["written", "write-fails"]
)
def test_handle_errors_500_to_a_head_request_has_no_body(
    app: WSGIApplication, server_class: type[Server]
) -> None:
    """Its headers go out before the exception reaches the server: with no
    chunk to carry them, by ``write(b"")``. A ``write()`` that fails leaves the
    application's exception to be raised."""
    environ = make_environ({"X-Session-Id": "e"})
    environ["REQUEST_METHOD"] = "HEAD"
    server = server_class()

    with pytest.raises(Boom, match="before start_response") as raised:
        server.run(SessionIdMiddleware(app, handle_errors=True), environ)

    assert server.status == "500 Internal Server Error"
    assert values_of(server.headers, "Content-Length") == ["21"]
    assert server.session_header() == ["e"]
    assert server.chunks == ([] if server_class is FailingWriteServer else [b""])
    assert raised.value.__context__ is None


def replacing_app(first: Headers, second: Headers | None = None) -> WSGIApplication:
    """Starts with ``first``, then replaces the response with ``exc_info`` (PEP 3333)
    and ``second``, also when the server refused ``first``."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        try:
            start_response("200 OK", first)
            raise Boom("after start_response, before the body")
        except Exception:
            start_response("503 Service Unavailable", second or [TEXT], sys.exc_info())
        return [b"replaced"]

    return app


LONG_NAME = "X-Request-Session-Identifier"  # too many letters to keep its spellings


@pytest.mark.parametrize(
    ("first", "second", "options", "expected"),
    [
        pytest.param([TEXT], [TEXT], {}, ["abc"], id="plain"),
        pytest.param([TEXT], [TEXT], {"expose_header": True}, ["abc"], id="expose-header"),
        pytest.param([("X-Session-Id", "app")], [TEXT], {}, ["app"], id="the-apps-own"),
        # Replaced by the app's own, over the app's own: the replacement's alone.
        pytest.param(
            [("X-Session-Id", "app")],
            [TEXT, ("X-Session-Id", "page")],
            {},
            ["page"],
            id="the-apps-own-replaced-by-its-own",
        ),
        # An error page that sets the session header itself: it alone is sent.
        pytest.param([TEXT], [TEXT, ("x-session-id", "page")], {}, ["page"], id="replaced-own"),
        pytest.param(
            [TEXT],
            [TEXT, (LONG_NAME.lower(), "page")],
            {"header_name": LONG_NAME},
            ["page"],
            id="replaced-own-long-name",
        ),
        # gunicorn refuses a value with CR/LF before it gets to the session header.
        pytest.param([("X-Bad", "a\r\nb")], [TEXT], {}, ["abc"], id="refused-first"),
    ],
)
def test_gunicorns_response_keeps_one_session_header_when_replaced(
    first: Headers, second: Headers, options: dict[str, Any], expected: list[str]
) -> None:
    """gunicorn's Response appends the headers of a start_response call made again with
    exc_info to those it kept from the first (here its real class, in-process)."""
    from gunicorn.config import Config
    from gunicorn.http.wsgi import Response

    response = Response(types.SimpleNamespace(version=(1, 1), method="GET"), None, Config())
    app = SessionIdMiddleware(replacing_app(first, second), **options)
    name = options.get("header_name", "X-Session-Id")
    environ = make_environ({name: "abc"})

    # A refusal raises into the app, which replaces the response.
    assert app(environ, response.start_response) == [b"replaced"]

    assert response.status == "503 Service Unavailable"
    sent = [value for key, value in response.headers if key.lower() == name.lower()]
    assert sent == expected
    assert [value for key, value in response.headers if key == "Content-Type"] == ["text/plain"] * (
        2 if first[0] == TEXT else 1
    )


def test_gunicorn_keeps_its_record_of_a_sent_session_header_when_the_app_fails_later() -> None:
    """An error page that sets the session header itself, after gunicorn sent the
    headers: gunicorn raises the app's exception again (PEP 3333), and its
    access log still reads the headers it sent."""
    from gunicorn.config import Config
    from gunicorn.http.wsgi import Response

    def streaming(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [TEXT])
        yield b"part 1"
        raise Boom("failed mid-stream")

    def error_page(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        try:
            yield from streaming(environ, start_response)
        except Boom:
            own = ("X-Session-Id", environ["sessionctx.session_id"])
            start_response("500 Internal Server Error", [TEXT, own], sys.exc_info())
            yield b"error"

    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        request = types.SimpleNamespace(
            version=(1, 1),
            method="GET",
            headers=[],
            path="/",
            query="",
            uri="/",
            should_close=lambda: True,
        )
        response = Response(request, server_end, Config())
        body = SessionIdMiddleware(error_page)(
            make_environ({"X-Session-Id": "abc"}), response.start_response
        )
        chunks = iter(body)
        response.write(next(chunks))  # the headers go out with it
        with pytest.raises(Boom):
            next(chunks)
        client_end.settimeout(5)
        sent = client_end.recv(65536)

    assert response.headers_sent
    assert b"X-Session-Id: abc\r\n" in sent
    assert response.headers == [TEXT, ("X-Session-Id", "abc")]


def test_handle_errors_reraises_from_close_when_the_server_stops_first() -> None:
    server = Server()
    body = SessionIdMiddleware(raise_before_start, handle_errors=True)(
        make_environ(), server.start_response
    )
    assert server.status == "500 Internal Server Error"

    with pytest.raises(Boom):
        body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]  # raised once, not again


def test_handle_errors_raises_once_and_then_ends() -> None:
    body = SessionIdMiddleware(raise_before_start, handle_errors=True)(
        make_environ(), Server().start_response
    )
    iterator = iter(body)

    assert next(iterator) == b"Internal Server Error"
    with pytest.raises(Boom):
        next(iterator)
    assert list(iterator) == []
    body.close()  # type: ignore[attr-defined]


def raise_after_start(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [TEXT])
    raise Boom("after start_response")


def raise_in_body_after_start(
    environ: WSGIEnvironment, start_response: StartResponse
) -> Iterator[bytes]:
    start_response("200 OK", [TEXT])
    raise Boom("after start_response")
    yield b"never"


@pytest.mark.parametrize(
    "app",
    [
        pytest.param(raise_after_start, id="call"),
        pytest.param(raise_in_body_after_start, id="body"),
    ],
)
@pytest.mark.parametrize("handle_errors", [False, True])
def test_errors_after_start_response_are_left_to_the_server(
    app: WSGIApplication, handle_errors: bool
) -> None:
    server = Server()

    with pytest.raises(Boom, match="after start_response"):
        server.run(SessionIdMiddleware(app, handle_errors=handle_errors), make_environ())

    assert [status for status, _, _ in server.starts] == ["200 OK"]
    assert server.chunks == []


@pytest.mark.parametrize(
    "app",
    [
        pytest.param(raise_before_start, id="call"),
        pytest.param(raise_lazily_before_start, id="body"),
    ],
)
def test_without_handle_errors_nothing_is_started_on_error(app: WSGIApplication) -> None:
    server = Server()

    with pytest.raises(Boom):
        server.run(SessionIdMiddleware(app), make_environ())

    assert server.starts == []


def test_handle_errors_leaves_a_good_streaming_body_alone() -> None:
    body = ClosingBody(chunks=(b"x", b"", b"y"))
    server = Server()

    content = server.run(
        SessionIdMiddleware(body_app(body), handle_errors=True), make_environ({"X-Session-Id": "s"})
    )

    assert content == b"xy"
    assert server.status == "200 OK"
    assert body.seen[-1] == ("close", "s")


# --------------------------------------------------------------------------- #
# Double wrap, and wsgiref's validator
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "headers",
    [pytest.param({"X-Session-Id": "abc"}, id="continued"), pytest.param({}, id="generated")],
)
def test_double_wrap_passes_through(headers: dict[str, str]) -> None:
    app = RecordingApp()
    inner = SessionIdMiddleware(app, header_name="X-Inner", on_missing="reject")
    server = Server()

    server.run(SessionIdMiddleware(inner), make_environ(headers))

    assert server.status == "200 OK"
    assert server.session_header() == [app.sid]
    assert values_of(server.headers, "X-Inner") == []
    assert app.only.environ[SCOPE_KEY] == app.sid


def test_an_environ_used_again_gets_a_session_again() -> None:
    # An error document wrapper calls the wrapped app a second time with the
    # same environ, or a copy, after the middleware has finished: the key left
    # in the environ is no enclosing middleware.
    app = RecordingApp()
    middleware = SessionIdMiddleware(app)
    environ = make_environ()
    servers = [Server(), Server(), Server()]

    servers[0].run(middleware, environ)
    servers[1].run(middleware, environ)
    servers[2].run(middleware, dict(environ, PATH_INFO="/404.html"))

    sids = [visit.session.id for visit in app.visits]  # type: ignore[union-attr]
    assert [server.session_header() for server in servers] == [[sid] for sid in sids]
    assert all(is_generated(sid) for sid in sids)
    assert len(set(sids)) == 3


def test_an_environ_used_again_in_another_session_gets_its_own() -> None:
    # The key of a finished request, met while some other session is active
    # (a process-wide one, a test's): no enclosing middleware runs it.
    app = RecordingApp()
    server = Server()
    environ = make_environ({"X-Session-Id": "abc"})
    environ[SCOPE_KEY] = "left-over"

    with session("process-wide"):
        server.run(SessionIdMiddleware(app), environ)

    assert app.only.session == SessionContext("abc")
    assert server.session_header() == ["abc"]


def test_a_layer_between_that_sets_a_session_keeps_it_under_a_double_wrap() -> None:
    # An auth or tenant layer between the two middlewares: the inner one still
    # passes through, the client gets the id the outer one decided.
    app = RecordingApp()
    inner = SessionIdMiddleware(app)
    decided: list[str] = []

    def tenant_layer(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        decided.append(environ[SCOPE_KEY])
        with session("tenant-42"):
            return inner(environ, start_response)

    server = Server()
    environ = make_environ({"X-Session-Id": "bad value"})
    server.run(SessionIdMiddleware(tenant_layer), environ)

    assert app.only.session == SessionContext("tenant-42")
    assert is_generated(decided[0])
    assert environ[SCOPE_KEY] == decided[0]
    assert server.session_header() == [decided[0]]


def generator_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [TEXT])
    yield b"one"
    yield current_session_id().encode()  # type: ignore[union-attr]


VALIDATED_APPS = [
    pytest.param(RecordingApp(), {}, id="list-body"),
    pytest.param(generator_app, {}, id="generator-body"),
    pytest.param(body_app(ClosingBody()), {}, id="closing-body"),
    pytest.param(file_app, {}, id="file-wrapper"),
    pytest.param(RecordingApp([TEXT, ("x-session-id", "own")]), {}, id="apps-own-header"),
    pytest.param(RecordingApp([TEXT, ALLOW]), {"expose_header": True}, id="expose-header"),
    pytest.param(RecordingApp(), {"update_request_header": True}, id="update-request-header"),
    pytest.param(RecordingApp(), {"on_missing": "reject"}, id="reject"),
    pytest.param(generator_app, {"handle_errors": True}, id="handle-errors-no-error"),
    pytest.param(RecordingApp(), {"attributes": lambda e: {"m": e["REQUEST_METHOD"]}}, id="attrs"),
]


@pytest.mark.parametrize(("app", "options"), VALIDATED_APPS)
def test_wsgiref_validator_on_both_sides_finds_nothing(
    app: WSGIApplication, options: dict[str, Any]
) -> None:
    environ = make_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    stack = wsgi_validator(SessionIdMiddleware(wsgi_validator(app), **options))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        server = Server()
        server.run(stack, environ)

    assert server.status in ("200 OK", "400 Bad Request")


def test_wsgiref_validator_on_both_sides_of_a_handled_error() -> None:
    stack = wsgi_validator(
        SessionIdMiddleware(wsgi_validator(raise_before_start), handle_errors=True)
    )
    server = Server()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Boom):
            server.run(stack, make_environ())

    assert server.status == "500 Internal Server Error"
    assert server.session_header()
