"""Security: what a client sends can never shape a response header or a log line,
and with ``trust_incoming=False`` a client cannot choose its session at all.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionctx import current_session_id
from sessionctx.asgi import SessionIdMiddleware as AsgiSessionIdMiddleware
from sessionctx.log_filters import SessionIdFilter
from sessionctx.wsgi import SessionIdMiddleware as WsgiSessionIdMiddleware
from tests.integrations.outgoing import SESSION_NAMES
from tests.reliability.applog import APP_LOGGER
from tests.reliability.figures import FIGURES
from tests.reliability.inprocess import (
    Receive,
    Scope,
    Send,
    call_asgi,
    call_wsgi,
    environ_key,
    http_scope,
    wsgi_environ,
)
from tests.reliability.oracle import follows_id_rule, looks_generated
from tests.reliability.servers import LOAD_SERVERS, RunningServer, server_pool
from tests.reliability.sizes import FUZZ_SETTINGS, SIZES
from tests.reliability.strategies import INBOUND_NAMES, Inbound, inbound_headers, latin1_values

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(SIZES.test_timeout)]

SCOPE_KEY = "sessionctx.session_id"
FORBIDDEN = ("\r", "\n", "\x00")

ATTACKS = [
    pytest.param("abc\r\nSet-Cookie: stolen=1", id="crlf-injects-a-header"),
    pytest.param("abc\r\n\r\n<html>", id="crlf-splits-the-response"),
    pytest.param("abc\nX-Admin: 1", id="bare-lf"),
    pytest.param("abc\rX-Admin: 1", id="bare-cr"),
    pytest.param("abc\x00def", id="nul"),
    pytest.param("\x00", id="only-nul"),
    pytest.param("x" * 201, id="201-chars"),
    pytest.param("x" * 10_000, id="10000-chars"),
    pytest.param("abc\x85def", id="latin-1-next-line"),
]
#: ``baggage`` values are percent-decoded, so the attack may also arrive encoded.
BAGGAGE_ATTACKS = [
    pytest.param("session.id=abc%0D%0ASet-Cookie%3A%20stolen%3D1", id="encoded-crlf"),
    pytest.param("session.id=abc%00def", id="encoded-nul"),
    pytest.param("session.id=abc%0Adef", id="encoded-lf"),
    pytest.param("session.id=" + "x" * 201, id="201-chars"),
    pytest.param("session.id=" + "%41" * 201, id="201-chars-after-decoding"),
    pytest.param("session.id=abc\r\nX-Admin: 1", id="raw-crlf"),
]


class CapturingHandler(logging.Handler):
    """Keeps every record, tagged by ``SessionIdFilter`` like a real handler would."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(SessionIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured_logs() -> Iterator[CapturingHandler]:
    """Records of the app's logger and of the library's own ``sessionctx`` logger."""
    handler = CapturingHandler()
    loggers = [APP_LOGGER, logging.getLogger("sessionctx")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def asgi_exchange(name: str, value: str, **options: Any) -> tuple[list[tuple[str, str]], bytes]:
    """One request through the ASGI middleware; the response headers (latin-1) and body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        APP_LOGGER.info("handling %s", scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = AsgiSessionIdMiddleware(app, **options)
    raw = [(name.encode("latin-1"), value.encode("latin-1"))]
    reply = call_asgi(middleware, http_scope(raw))
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.headers]
    body = b"".join(m.get("body", b"") for m in reply.messages if m["type"] == "http.response.body")
    return headers, body


def wsgi_exchange(name: str, value: str, **options: Any) -> tuple[list[tuple[str, str]], bytes]:
    """One request through the WSGI middleware; the response headers and body."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        APP_LOGGER.info("handling %s", environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    middleware = WsgiSessionIdMiddleware(app, **options)
    key = environ_key(name)
    reply = call_wsgi(middleware, wsgi_environ({key: value}))
    return reply.headers, reply.body


EXCHANGES: dict[str, Callable[..., tuple[list[tuple[str, str]], bytes]]] = {
    "asgi": asgi_exchange,
    "wsgi": wsgi_exchange,
}


def assert_nothing_of(attack: str, headers: list[tuple[str, str]], logs: CapturingHandler) -> None:
    for key, value in headers:
        assert not any(c in key or c in value for c in FORBIDDEN), (key, value)
    echoed = [value for key, value in headers if key.lower() == "x-session-id"]
    assert len(echoed) == 1
    assert follows_id_rule(echoed[0])
    assert attack not in echoed[0]
    assert logs.records, "the app logged nothing"
    for record in logs.records:
        session_id = record.__dict__["session_id"]
        assert session_id == echoed[0]
        message = record.getMessage()
        assert attack not in message
        assert len(message) <= 200


@pytest.mark.parametrize("kind", sorted(EXCHANGES))
@pytest.mark.parametrize("name", SESSION_NAMES)
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_hostile_header_never_reaches_the_response_or_the_log(
    kind: str, name: str, attack: str, captured_logs: CapturingHandler
) -> None:
    headers, _ = EXCHANGES[kind](name, attack)
    assert_nothing_of(attack, headers, captured_logs)


@pytest.mark.parametrize("kind", sorted(EXCHANGES))
@pytest.mark.parametrize("baggage", BAGGAGE_ATTACKS)
def test_a_hostile_baggage_member_never_reaches_the_response_or_the_log(
    kind: str, baggage: str, captured_logs: CapturingHandler
) -> None:
    headers, _ = EXCHANGES[kind]("baggage", baggage)
    assert_nothing_of(baggage.removeprefix("session.id="), headers, captured_logs)


@pytest.mark.parametrize("kind", sorted(EXCHANGES))
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_rejection_does_not_echo_the_hostile_value(kind: str, attack: str) -> None:
    headers, body = EXCHANGES[kind]("x-session-id", attack, on_invalid="reject")
    assert [k for k, _ in headers if k.lower() == "x-session-id"] == []
    assert attack.encode("latin-1") not in body
    assert len(body) <= 200


# --------------------------------------------------------------------------- #
# trust_incoming=False: the client never chooses
# --------------------------------------------------------------------------- #


def chosen_by_client(headers: list[Inbound]) -> set[str]:
    """Every id the client offered, in any header or baggage member."""
    offered = {h.text for h in headers}
    for header in headers:
        offered.update(header.session_members or ())
    return offered


def assert_generated(sid: str, offered: set[str]) -> None:
    assert sid not in offered
    assert looks_generated(sid)


@FUZZ_SETTINGS
@given(headers=inbound_headers)
def test_asgi_untrusted_ids_are_never_used(headers: list[Inbound]) -> None:
    FIGURES.fuzz_examples["asgi trust_incoming=False"] += 1
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(current_session_id())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = AsgiSessionIdMiddleware(app, trust_incoming=False)
    raw = [(h.name.encode("latin-1"), h.value) for h in headers]
    echoed = call_asgi(middleware, http_scope(raw)).header_values(b"x-session-id")
    assert len(echoed) == 1
    sid = echoed[0].decode("latin-1")
    assert seen == [sid]
    assert_generated(sid, chosen_by_client(headers))


@FUZZ_SETTINGS
@given(values=st.dictionaries(st.sampled_from(INBOUND_NAMES), latin1_values, max_size=5))
def test_wsgi_untrusted_ids_are_never_used(values: dict[str, str]) -> None:
    FIGURES.fuzz_examples["wsgi trust_incoming=False"] += 1
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(current_session_id())
        start_response("204 No Content", [])
        return []

    middleware = WsgiSessionIdMiddleware(app, trust_incoming=False)
    environ = {environ_key(k): v for k, v in values.items()}
    echoed = call_wsgi(middleware, wsgi_environ(environ)).header_values("x-session-id")
    assert len(echoed) == 1
    assert seen == echoed
    offered = set(values.values()) | {v.removeprefix("session.id=") for v in values.values()}
    assert_generated(echoed[0], offered)


# --------------------------------------------------------------------------- #
# Real servers, raw bytes on the wire
# --------------------------------------------------------------------------- #

WIRE_ATTACKS = [
    pytest.param(b"X-Session-Id: abc\x00def\r\n", id="nul"),
    pytest.param(b"X-Session-Id: abc\x85\xff\r\n", id="high-bytes"),
    pytest.param(b"X-Session-Id: abc\r\n def\r\n", id="obs-fold"),
    pytest.param(b"X-Session-Id: " + b"x" * 8_000 + b"\r\n", id="8000-chars"),
    pytest.param(b"X-Session-Id: a\r\nX-Session-Id: b\r\n", id="repeated"),
    pytest.param(b"X-Session-Id: \r\n", id="empty"),
    pytest.param(b"baggage: session.id=abc%0D%0AX-Admin%3A%201\r\n", id="baggage-encoded-crlf"),
]
WIRE_SERVERS = ("uvicorn", "gunicorn-gthread")


@pytest.fixture(scope="module")
def wire_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], RunningServer]]:
    commands = {name: LOAD_SERVERS[name].command for name in WIRE_SERVERS}
    with server_pool(commands, tmp_path_factory) as get:
        yield get


def raw_exchange(address: str, header_lines: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Send one request with ``header_lines`` as they are; the status line and headers."""
    host, port = address.split(":")
    request = (
        b"GET /load?k=wire HTTP/1.1\r\nHost: "
        + host.encode()
        + b"\r\nConnection: close\r\n"
        + header_lines
        + b"\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    head, _, _ = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return status, headers


@pytest.mark.server
@pytest.mark.parametrize("server", WIRE_SERVERS)
@pytest.mark.parametrize("attack", WIRE_ATTACKS)
def test_hostile_bytes_on_the_wire(
    server: str, attack: bytes, wire_server: Callable[[str], RunningServer]
) -> None:
    """The server may refuse the request itself; if the app runs, its id is a fresh one."""
    address = wire_server(server).address
    status, headers = raw_exchange(address, attack)
    assert status.startswith(b"HTTP/1.1 ")
    echoed = [value for name, value in headers if name == b"x-session-id"]
    assert len(echoed) <= 1
    for name, value in headers:
        assert b"\x00" not in name + value
    if echoed:
        sid = echoed[0].decode("latin-1")
        assert follows_id_rule(sid)
        assert looks_generated(sid)
    # The server keeps serving, and honest requests still get their own id.
    status, headers = raw_exchange(address, b"X-Session-Id: honest-after-attack\r\n")
    assert status.startswith(b"HTTP/1.1 200")
    assert [v for n, v in headers if n == b"x-session-id"] == [b"honest-after-attack"]
