"""``SessionIdMiddleware`` on real uvicorn and hypercorn servers on 127.0.0.1.

The served app is raw ASGI. Around the middleware sits a probe that records
the session before and after each call, in the server's own task: after the
middleware returns, nothing of the request may be left in that context.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import anyio
import h11
import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sessionctx import SessionContext, current_session, current_session_id
from sessionctx.asgi import SessionIdMiddleware
from tests.servers.asgi_server import SERVERS, serving
from tests.support import Receive, Scope, Send, SessionRecords

pytestmark = [pytest.mark.server, pytest.mark.anyio, pytest.mark.timeout(90)]


SCOPE_KEY = "sessionctx.session_id"
CONCURRENT = 300
STREAM_CHUNK_LIMIT = 500  # bounds a stream whose client never leaves: about 5 s
CLIENT_TIMEOUT = httpx.Timeout(20.0)


@dataclass
class Call:
    """One pass through the middleware, as the probe around it saw it."""

    scope_type: str
    sid: str | None
    before: SessionContext | None
    after: SessionContext | None
    #: The client's port: which connection the request came on.
    port: int | None = field(default=None, compare=False)


@dataclass
class ServerLog:
    """What the served app observed (written by the server thread)."""

    calls: list[Call] = field(default_factory=list)
    lifespan: list[tuple[str, SessionContext | None, bool]] = field(default_factory=list)
    # sid -> the session seen while producing each chunk, then at the end
    stream_chunks: dict[str, list[str | None]] = field(default_factory=dict)
    stream_end: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0


def build_app(log: ServerLog) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def respond(send: Send, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            log.lifespan.append((kind, current_session(), SCOPE_KEY in scope))
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return

    async def echo_id(scope: Scope, receive: Receive, send: Send) -> None:
        """Read the id several times, yielding to other requests in between."""
        log.in_flight += 1
        log.peak_in_flight = max(log.peak_in_flight, log.in_flight)
        try:
            reads = []
            for _ in range(3):
                reads.append(current_session_id())
                await asyncio.sleep(0.01)
        finally:
            log.in_flight -= 1
        await respond(send, 200, {"reads": reads, "scope": scope[SCOPE_KEY]})

    async def upload(scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole request body, then answer with its size."""
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await respond(send, 200, {"read": size, "scope": scope[SCOPE_KEY]})

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        """Send a chunk every 10 ms until the client leaves (or the limit)."""
        sid = scope[SCOPE_KEY]
        seen = log.stream_chunks.setdefault(sid, [])
        left = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left.set()

        watcher = asyncio.ensure_future(watch_disconnect())
        why = "limit"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(STREAM_CHUNK_LIMIT):
                if left.is_set():
                    why = "disconnect"
                    break
                seen.append(current_session_id())
                await send({"type": "http.response.body", "body": b"%d\n" % i, "more_body": True})
                await asyncio.sleep(0.01)
        except Exception as exc:  # how a server reports a gone client varies
            why = f"send failed: {type(exc).__name__}"
            raise
        finally:
            watcher.cancel()
            log.stream_end[sid] = (current_session_id(), why)

    async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": current_session_id()})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
        elif scope["type"] == "websocket":
            await websocket(scope, receive, send)
        elif scope["path"].endswith("/stream"):
            await stream(scope, receive, send)
        elif scope["path"].endswith("/upload"):
            await upload(scope, receive, send)
        else:
            await echo_id(scope, receive, send)

    lenient = SessionIdMiddleware(inner)
    strict = SessionIdMiddleware(inner, on_missing="reject", on_invalid="reject")

    async def probe(scope: Scope, receive: Receive, send: Send) -> None:
        before = current_session()
        target = strict if scope.get("path", "").startswith("/strict/") else lenient
        try:
            await target(scope, receive, send)
        finally:
            client = scope.get("client")
            port = client[1] if client else None
            call = Call(scope["type"], scope.get(SCOPE_KEY), before, current_session(), port)
            log.calls.append(call)

    return probe


@dataclass
class Served:
    server: str
    address: str
    log: ServerLog

    @property
    def http(self) -> str:
        return f"http://{self.address}"

    @property
    def ws(self) -> str:
        return f"ws://{self.address}"


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    log = ServerLog()
    with serving(request.param, build_app(log)) as address:
        yield Served(request.param, address, log)
    # Shutdown ran through the middleware too, untouched.
    assert [kind for kind, _, _ in log.lifespan] == ["startup", "shutdown"]


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the server never got there")
        await asyncio.sleep(0.02)


def calls_for(served: Served, sid: str) -> list[Call]:
    return [call for call in served.log.calls if call.sid == sid]


async def test_lifespan_reaches_the_app_without_a_session(served: Served) -> None:
    assert served.log.lifespan[0] == ("startup", None, False)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"X-Session-Id": "srv-1"}, "srv-1", id="continued"),
        pytest.param({"Mirascope-Session-Id": "srv-2"}, "srv-2", id="mirascope-header"),
        pytest.param({"baggage": "session.id=srv-3"}, "srv-3", id="baggage"),
        pytest.param({"X-Session-Id": "bad value"}, None, id="invalid"),
        pytest.param({}, None, id="missing"),
    ],
)
async def test_http_request_gets_its_session(
    served: Served, headers: dict[str, str], expected: str | None
) -> None:
    async with httpx.AsyncClient(base_url=served.http, timeout=CLIENT_TIMEOUT) as http:
        response = await http.get("/id", headers=headers)

    sid = response.headers["x-session-id"]
    if expected is None:
        assert uuid.UUID(sid).version == 4
    else:
        assert sid == expected
    assert response.json() == {"reads": [sid] * 3, "scope": sid}
    await wait_for(lambda: bool(calls_for(served, sid)))
    assert calls_for(served, sid) == [Call("http", sid, None, None)]


UVICORN_PARSERS = [
    pytest.param("uvicorn", {"http": "h11"}, id="uvicorn-h11"),
    pytest.param(
        "uvicorn",
        {"http": "httptools"},
        id="uvicorn-httptools",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("httptools") is None, reason="httptools is not installed"
        ),
    ),
]


def read_response(raw: bytes) -> tuple[str, bytes, bytes]:
    """The session header and body of the first HTTP/1.1 response in ``raw``,
    and the bytes after it (h11 reads one response per request it sent)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "pipelined")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    event = client.next_event()
    assert isinstance(event, h11.Response), event
    sid = dict(event.headers)[b"x-session-id"].decode()
    body = b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        body += event.data
    return sid, body, client.trailing_data[0]


@pytest.mark.parametrize(
    ("server", "options"),
    [
        *UVICORN_PARSERS,
        pytest.param(
            "uvicorn",
            {"reset_contextvars": True},
            id="uvicorn-reset-contextvars",
            marks=pytest.mark.skipif(
                "reset_contextvars" not in inspect.signature(uvicorn.Config).parameters,
                reason="uvicorn < 0.45 has no reset_contextvars",
            ),
        ),
        pytest.param("hypercorn", {}, id="hypercorn"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_pipelined_requests_each_get_their_own_session(
    server: str, options: dict[str, Any], method: str
) -> None:
    # HTTP/1.1 pipelining: the server reads the next request while the one
    # before it is still being answered. uvicorn starts the next request's task
    # from inside the previous response's send, so that task begins in a copy
    # of the previous request's context (CPython #140947; uvicorn's
    # reset_contextvars avoids it). After a request that may have a body, the
    # middleware's session there is a stand-in, ended once that send
    # returns; after a GET it is the previous request's session, which code
    # outside the middleware then sees (the README says so). Either way each
    # request gets its own, and the middleware leaves the context as it found it.
    inbound = ["pipe-0", None, "pipe-2", "bad value", None, "pipe-5"]
    log = ServerLog()
    with serving(server, build_app(log), **options) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            requests = []
            for i, sid in enumerate(inbound):
                lines = [f"{method} /id?n={i} HTTP/1.1", f"Host: {address}"]
                if method == "POST":
                    lines.append("Content-Length: 0")
                if sid is not None:
                    lines.append(f"X-Session-Id: {sid}")
                if i == len(inbound) - 1:
                    lines.append("Connection: close")
                requests.append("\r\n".join(lines) + "\r\n\r\n")
            writer.write("".join(requests).encode())
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), timeout=20)
        finally:
            writer.close()

    answered = []
    while raw:
        sid, body, raw = read_response(raw)
        answered.append((sid, json.loads(body)))
    assert len(answered) == len(inbound)

    sids = [sid for sid, _ in answered]
    for sid, body in answered:
        assert body == {"reads": [sid] * 3, "scope": sid}
    assert [
        s for s, i in zip(sids, inbound, strict=True) if i in ("pipe-0", "pipe-2", "pipe-5")
    ] == [
        "pipe-0",
        "pipe-2",
        "pipe-5",
    ]
    generated = [s for s, i in zip(sids, inbound, strict=True) if i in (None, "bad value")]
    assert all(uuid.UUID(s).version == 4 for s in generated)
    assert len(set(sids)) == len(sids)
    calls = [call for call in log.calls if call.scope_type == "http"]
    assert [call.sid for call in calls] == sids
    assert all(call.after == call.before for call in calls)
    if method == "POST" or server == "hypercorn" or options.get("reset_contextvars"):
        assert all(call.before is None for call in calls)
    else:
        # An earlier request's session, if any (which one depends on how the
        # server read the requests).
        assert all(
            call.before is None or call.before.id in sids[:i] for i, call in enumerate(calls)
        )


LARGE_BODY = b"x" * 300_000  # over uvicorn's 64 KiB, at which it pauses reading


@pytest.mark.parametrize("path", ["/upload", "/id"], ids=["body-read", "body-left-unread"])
@pytest.mark.parametrize(
    ("server", "options"), [*UVICORN_PARSERS, pytest.param("hypercorn", {}, id="hypercorn")]
)
async def test_a_large_body_leaves_no_session_on_its_keep_alive_connection(
    server: str, options: dict[str, Any], path: str
) -> None:
    # uvicorn pauses reading a body over 64 KiB and resumes in the app's
    # receive() or in the send() that ends the response; asyncio's reader
    # callback, and the tasks of the next requests on the connection that it
    # starts, then run in a copy of the request's context. The session in
    # that copy is a stand-in, ended once the call returns.
    log = ServerLog()
    with serving(server, build_app(log), **options) as address:
        limits = httpx.Limits(max_connections=1)  # one keep-alive connection
        async with httpx.AsyncClient(
            base_url=f"http://{address}", limits=limits, timeout=CLIENT_TIMEOUT
        ) as http:
            large = await http.post(path, content=LARGE_BODY, headers={"X-Session-Id": "large"})
            after = [
                await http.get("/id", headers={"X-Session-Id": f"after-{i}"}) for i in range(3)
            ]

    assert large.status_code == 200
    if path == "/upload":
        assert large.json() == {"read": len(LARGE_BODY), "scope": "large"}
    assert [response.json()["reads"] for response in after] == [
        [f"after-{i}"] * 3 for i in range(3)
    ]
    calls = [call for call in log.calls if call.scope_type == "http"]
    assert [call.sid for call in calls] == ["large", "after-0", "after-1", "after-2"]
    assert len({call.port for call in calls}) == 1  # all on one connection
    # What a layer outside the middleware sees, before and after it.
    assert all(call.before is None and call.after is None for call in calls)


async def get_concurrently(
    served: Served, headers: list[dict[str, str]], per_client: int = 30
) -> list[httpx.Response]:
    """One GET ``/id`` per item of ``headers``, all in flight at once, in order.

    Spread over several clients: one httpx pool slows down sharply with
    hundreds of requests queued on it, which would only measure the client.
    """

    async def batch(part: list[dict[str, str]]) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(part))
        async with httpx.AsyncClient(
            base_url=served.http, limits=limits, timeout=CLIENT_TIMEOUT
        ) as http:
            return await asyncio.gather(*(http.get("/id", headers=h) for h in part))

    parts = [headers[i : i + per_client] for i in range(0, len(headers), per_client)]
    return [response for part in await asyncio.gather(*map(batch, parts)) for response in part]


async def test_concurrent_requests_never_cross(served: Served) -> None:
    ids = [f"conc-{served.server}-{i:03d}" for i in range(CONCURRENT)]

    responses = await get_concurrently(served, [{"X-Session-Id": sid} for sid in ids])

    assert [r.headers["x-session-id"] for r in responses] == ids
    assert [r.json() for r in responses] == [{"reads": [sid] * 3, "scope": sid} for sid in ids]
    # The handlers really did overlap, so the ids had a chance to cross.
    assert served.log.peak_in_flight > 1
    await wait_for(lambda: all(calls_for(served, sid) for sid in ids))
    assert all(calls_for(served, sid) == [Call("http", sid, None, None)] for sid in ids)


async def test_concurrent_generated_ids_are_distinct(served: Served) -> None:
    responses = await get_concurrently(served, [{}] * 50)

    ids = [r.headers["x-session-id"] for r in responses]
    assert len(set(ids)) == 50
    assert [r.json()["reads"] for r in responses] == [[sid] * 3 for sid in ids]


async def test_disconnect_mid_stream_leaves_no_session_behind(served: Served) -> None:
    sid = f"gone-{served.server}"

    async with (
        httpx.AsyncClient(base_url=served.http, timeout=CLIENT_TIMEOUT) as http,
        http.stream("GET", "/stream", headers={"X-Session-Id": sid}) as response,
    ):
        assert response.headers["x-session-id"] == sid
        async for line in response.aiter_lines():
            if line == "2":
                break  # leave the stream: the connection is closed, not reused
    await wait_for(lambda: bool(calls_for(served, sid)))

    chunks = served.log.stream_chunks[sid]
    assert 3 <= len(chunks) < STREAM_CHUNK_LIMIT
    assert set(chunks) == {sid}
    end_sid, why = served.log.stream_end[sid]
    assert end_sid == sid
    assert why != "limit"
    assert calls_for(served, sid) == [Call("http", sid, None, None)]

    async with httpx.AsyncClient(base_url=served.http, timeout=CLIENT_TIMEOUT) as http:
        after = await http.get("/id")
    next_sid = after.headers["x-session-id"]
    assert next_sid != sid
    assert after.json()["reads"] == [next_sid] * 3
    await wait_for(lambda: bool(calls_for(served, next_sid)))
    assert calls_for(served, next_sid) == [Call("http", next_sid, None, None)]


async def test_rejected_http_request_is_a_400_without_the_header(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.http, timeout=CLIENT_TIMEOUT) as http:
        missing = await http.get("/strict/id")
        invalid = await http.get("/strict/id", headers={"X-Session-Id": "a b"})
        allowed = await http.get("/strict/id", headers={"X-Session-Id": "strict-ok"})

    assert (missing.status_code, missing.text) == (400, "Missing X-Session-Id header")
    assert (invalid.status_code, invalid.text) == (400, "Invalid X-Session-Id header")
    assert "x-session-id" not in missing.headers
    assert "x-session-id" not in invalid.headers
    assert allowed.headers["x-session-id"] == "strict-ok"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"X-Session-Id": "ws-1"}, "ws-1", id="continued"),
        pytest.param({}, None, id="generated"),
    ],
)
async def test_websocket_gets_its_session_and_the_handshake_header(
    served: Served, headers: dict[str, str], expected: str | None
) -> None:
    async with connect(f"{served.ws}/ws", additional_headers=headers, open_timeout=10) as ws:
        sid = await asyncio.wait_for(ws.recv(), timeout=10)
        assert ws.response is not None
        handshake_header = ws.response.headers["X-Session-Id"]

    assert isinstance(sid, str)
    assert handshake_header == sid
    if expected is None:
        assert uuid.UUID(sid).version == 4
    else:
        assert sid == expected
    await wait_for(lambda: bool(calls_for(served, sid)))
    assert calls_for(served, sid) == [Call("websocket", sid, None, None)]


async def test_rejected_websocket_fails_the_handshake(served: Served) -> None:
    calls_before = len(served.log.calls)

    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{served.ws}/strict/ws", open_timeout=10):
            pytest.fail("the handshake was accepted")

    # The middleware closed with 1008 before accept; servers answer that with 403.
    assert refused.value.response.status_code == 403
    assert "X-Session-Id" not in refused.value.response.headers
    await wait_for(lambda: len(served.log.calls) > calls_before)
    assert served.log.calls[-1] == Call("websocket", None, None, None)


@pytest.mark.parametrize("server", SERVERS)
async def test_handle_errors_500_closes_the_connection_it_announces(server: str) -> None:
    # The exception goes on to the server after the 500, and uvicorn then
    # closes the connection: the 500 says so, so a client's next request goes
    # on a new connection instead of failing on the closed one.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(server, SessionIdMiddleware(app, handle_errors=True)) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=CLIENT_TIMEOUT) as http:
            for i in range(10):
                failed = await http.get("/boom", headers={"X-Session-Id": f"err-{i}"})
                assert failed.status_code == 500
                assert failed.headers["x-session-id"] == f"err-{i}"
                assert failed.headers["connection"] == "close"
                ok = await http.get("/ok", headers={"X-Session-Id": f"ok-{i}"})
                assert (ok.status_code, ok.text) == (200, "ok")
                assert ok.headers["x-session-id"] == f"ok-{i}"


#: The servers and hypercorn's trio worker, for apps that run on either loop.
ANY_LOOP_SERVERS = (*SERVERS, "hypercorn-trio")


def error_log_of(server: str) -> logging.Logger:
    return logging.getLogger(server.split("-")[0] + ".error")


@pytest.mark.parametrize("handle_errors", [False, True])
@pytest.mark.parametrize("server", ANY_LOOP_SERVERS)
async def test_the_servers_log_of_a_failed_request_carries_its_session_id(
    server: str, handle_errors: bool
) -> None:
    # uvicorn and hypercorn log the app's exception once the middleware has
    # restored the context: the exception brings the id along.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raise RuntimeError("boom")

    handler = SessionRecords()
    error_log = error_log_of(server)
    sids = [f"logged-{i}" for i in range(3)]
    try:
        middleware = SessionIdMiddleware(app, handle_errors=handle_errors)
        with serving(server, middleware) as address:
            # Once the server has set up its logging (uvicorn's clears the handlers).
            error_log.addHandler(handler)
            async with httpx.AsyncClient(
                base_url=f"http://{address}", timeout=CLIENT_TIMEOUT
            ) as http:
                for sid in sids:
                    failed = await http.get("/", headers={"X-Session-Id": sid})
                    assert failed.status_code == 500
                    # Without handle_errors the 500 is the server's own.
                    assert failed.headers.get("x-session-id") == (sid if handle_errors else None)
            await wait_for(lambda: len([r for r in handler.records if r[2]]) >= len(sids))
    finally:
        error_log.removeHandler(handler)

    assert [sid for sid, _, exc_info in handler.records if exc_info] == sids


@pytest.mark.parametrize(("server", "options"), UVICORN_PARSERS)
async def test_after_a_large_body_the_servers_error_line_shows_the_failed_requests_id(
    server: str, options: dict[str, Any]
) -> None:
    # The request after a large body on its connection starts outside any
    # session (see the keep-alive test above), so the exception's note decides.
    ports: set[int] = set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        ports.add(scope["client"][1])
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    handler = SessionRecords()
    error_log = error_log_of(server)
    try:
        with serving(server, SessionIdMiddleware(app), **options) as address:
            error_log.addHandler(handler)
            async with httpx.AsyncClient(
                base_url=f"http://{address}",
                limits=httpx.Limits(max_connections=1),
                timeout=CLIENT_TIMEOUT,
            ) as http:
                large = await http.post(
                    "/upload", content=LARGE_BODY, headers={"X-Session-Id": "large"}
                )
                failed = await http.get("/fail", headers={"X-Session-Id": "failed"})
            await wait_for(lambda: any(exc_info for _, _, exc_info in handler.records))
    finally:
        error_log.removeHandler(handler)

    assert (large.status_code, failed.status_code) == (204, 500)
    assert len(ports) == 1  # both on one connection
    assert [sid for sid, _, exc_info in handler.records if exc_info] == ["failed"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_hypercorns_access_line_carries_the_requests_id(method: str) -> None:
    # hypercorn logs it in the send() that ends the response, which for a POST
    # runs with a stand-in of the session (see the keep-alive test above).
    log = ServerLog()
    handler = SessionRecords()
    access_log = logging.getLogger("hypercorn.access")
    level = access_log.level
    try:
        with serving("hypercorn", build_app(log)) as address:
            access_log.setLevel(logging.INFO)
            access_log.addHandler(handler)
            async with httpx.AsyncClient(
                base_url=f"http://{address}", timeout=CLIENT_TIMEOUT
            ) as http:
                response = await http.request(
                    method, "/upload", content=b"x" * 10, headers={"X-Session-Id": "access-1"}
                )
            await wait_for(lambda: bool(handler.records))
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(level)

    assert response.headers["x-session-id"] == "access-1"
    # (hypercorn 0.16 logs a second line as the stream closes, in the same send.)
    assert {(sid, f'"{method} /upload' in line) for sid, line, _ in handler.records} == {
        ("access-1", True)
    }


@pytest.mark.parametrize("server", ANY_LOOP_SERVERS)
async def test_one_exception_failing_two_requests_is_logged_with_no_id(server: str) -> None:
    """The one exception a failed shared computation raises in every request
    awaiting it, logged after both requests left their sessions (a layer
    outside the middleware awaits before it raises again): no line may show
    the other request's id."""
    shared = RuntimeError("the shared computation failed")
    arrived = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal arrived
        if scope["type"] != "http":
            return
        arrived += 1
        for _ in range(500):  # both requests wait for each other, 5 s at most
            if arrived >= 2:
                break
            await anyio.sleep(0.01)
        raise shared

    middleware = SessionIdMiddleware(app)

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await middleware(scope, receive, send)
        except RuntimeError:
            await anyio.sleep(0.05)  # say, an error page sent first
            raise

    handler = SessionRecords()
    error_log = error_log_of(server)
    try:
        with serving(server, outer) as address:
            error_log.addHandler(handler)
            async with httpx.AsyncClient(
                base_url=f"http://{address}", timeout=CLIENT_TIMEOUT
            ) as http:
                failed = await asyncio.gather(
                    *(http.get("/", headers={"X-Session-Id": f"shared-{i}"}) for i in range(2))
                )
                assert [response.status_code for response in failed] == [500, 500]
            await wait_for(lambda: len([r for r in handler.records if r[2]]) >= 2)
    finally:
        error_log.removeHandler(handler)

    assert [sid for sid, _, exc_info in handler.records if exc_info] == ["-", "-"]


@pytest.mark.skipif(
    tuple(int(part) for part in metadata.version("hypercorn").split(".")[:2]) < (0, 17),
    reason="hypercorn < 0.17 holds the start back until the first body message",
)
async def test_handle_errors_500_follows_a_start_hypercorn_refused() -> None:
    # hypercorn checks the headers of a start message as it takes it, and
    # raises before anything is written: the response has not started, so the
    # 500 still goes out, with the session header.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\n2")]})
        await send({"type": "http.response.body", "body": b"never sent"})

    with serving("hypercorn", SessionIdMiddleware(app, handle_errors=True)) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=CLIENT_TIMEOUT) as http:
            for i in range(3):
                failed = await http.get("/", headers={"X-Session-Id": f"refused-{i}"})
                assert (failed.status_code, failed.text) == (500, "Internal Server Error")
                assert failed.headers["x-session-id"] == f"refused-{i}"
