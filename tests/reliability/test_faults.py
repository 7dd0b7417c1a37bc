"""Faults on real servers: after each one the serving worker holds no session, the
next request on it is clean, and the server keeps serving.

The servers run one worker (and, for WSGI, one thread), so the request after a
fault lands where the fault happened. The app's outermost ``Probe`` layer
reports any session it finds in the server's own context when a request
arrives or after it leaves (see ``asgi_app`` / ``wsgi_app``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from sessionctx import current_session_id, session
from sessionctx.asgi import SessionIdMiddleware as AsgiSessionIdMiddleware
from sessionctx.wsgi import SessionIdMiddleware as WsgiSessionIdMiddleware
from tests.reliability.figures import FIGURES, FaultRun
from tests.reliability.inprocess import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    WSGIApp,
    http_scope,
    receive_request,
    wsgi_environ,
)
from tests.reliability.servers import (
    ASGI_FAULT_SERVERS,
    WSGI_FAULT_SERVERS,
    RunningServer,
    server_pool,
)
from tests.reliability.sizes import SIZES

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(SIZES.test_timeout)]

COMMON_FAULTS = (
    "raise-before-start",
    "raise-after-start",
    "stream-raises",
    "client-disconnects",
    "slow-client",
)
ASGI_FAULTS = (*COMMON_FAULTS, "cancel")
WSGI_FAULTS = (*COMMON_FAULTS, "close-raises")
FAULT_SERVERS = {**ASGI_FAULT_SERVERS, **WSGI_FAULT_SERVERS}
SERVER_FAULTS = [
    pytest.param(server, fault, id=f"{server}-{fault}")
    for servers, faults in ((ASGI_FAULT_SERVERS, ASGI_FAULTS), (WSGI_FAULT_SERVERS, WSGI_FAULTS))
    for server in servers
    for fault in faults
]
TIMEOUT = httpx.Timeout(20.0)


@pytest.fixture(scope="module")
def fault_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], RunningServer]]:
    """Start each server once for the module, on first use."""
    with server_pool(FAULT_SERVERS, tmp_path_factory) as get:
        yield get


async def probe_when_idle(client: httpx.AsyncClient) -> dict[str, Any]:
    """The probe report once no other request is in flight on the server."""
    with anyio.fail_after(30):
        while True:
            report: dict[str, Any] = (await client.get("/probe")).json()
            if report["in_flight"] == 0:
                return report
            await anyio.sleep(0.02)


async def _slow_body() -> AsyncIterator[bytes]:
    for _ in range(4):
        await anyio.sleep(0.05)
        yield b"s" * 16


async def provoke(client: httpx.AsyncClient, fault: str, sid: str) -> None:
    """Send the request that makes the app fail as ``fault`` says; check what can be checked."""
    path = f"/fault/{fault}"
    headers = {"x-session-id": sid}
    if fault == "client-disconnects":
        async with client.stream("GET", path, headers=headers) as response:
            assert response.headers["x-session-id"] == sid
            async for _ in response.aiter_raw():
                break  # leaving the block drops the connection mid-stream
        return
    if fault == "slow-client":
        lines = []
        async with client.stream(
            "POST",
            path,
            headers={**headers, "content-length": "64"},
            content=_slow_body(),
        ) as response:
            async for line in response.aiter_lines():
                lines.append(line)
                await anyio.sleep(0.02)
        assert response.headers["x-session-id"] == sid
        assert lines, "the slow client got no body"
        assert set(lines) == {sid}
        return
    try:
        response = await client.get(path, headers=headers)
    except httpx.TransportError:
        # The server cut a response short that had already started: expected.
        assert fault in ("raise-after-start", "stream-raises")
        return
    if fault == "raise-before-start":
        assert response.status_code == 500
    elif fault == "cancel":
        assert response.status_code == 504
        assert "x-session-id" not in response.headers
    elif fault == "close-raises":
        assert response.status_code == 200
        assert response.headers["x-session-id"] == sid


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize(("server", "fault"), SERVER_FAULTS)
async def test_fault_leaves_the_worker_clean(
    server: str, fault: str, fault_server: Callable[[str], RunningServer]
) -> None:
    running = fault_server(server)
    async with httpx.AsyncClient(base_url=running.base_url, timeout=TIMEOUT) as control:
        before = await probe_when_idle(control)
        async with httpx.AsyncClient(base_url=running.base_url, timeout=TIMEOUT) as client:
            await provoke(client, fault, f"fault-{fault}-{uuid.uuid4()}")
        after = await probe_when_idle(control)

        # The server keeps serving, and the next request sees only its own id.
        sid = f"after-{fault}-{uuid.uuid4()}"
        response = await control.get("/load", params={"k": sid}, headers={"X-Session-Id": sid})
        body = response.json()
        next_is_clean = (
            response.status_code == 200
            and response.headers.get_list("x-session-id") == [sid]
            and set(body["reads"]) == {sid}
        )
        final = await probe_when_idle(control)

    worker_is_clean = (
        after["dirty_entries"] == before["dirty_entries"]
        and after["dirty_exits"] == before["dirty_exits"]
        and final["dirty_entries"] == before["dirty_entries"]
        and final["dirty_exits"] == before["dirty_exits"]
    )
    FIGURES.faults.append(FaultRun(server, fault, worker_is_clean and next_is_clean))
    assert after["requests"] == before["requests"] + 1, "the fault request never reached the app"
    # The fault and the request after it ran in the same process, on the same thread.
    assert before["pid"] == after["pid"] == final["pid"]
    assert after["request_thread"] == final["request_thread"]
    assert worker_is_clean, f"a session was left in the worker's context: {final}"
    assert next_is_clean, f"the next request was not clean: {response.headers} {body}"


# --------------------------------------------------------------------------- #
# In-process: the caller's own session survives every fault
# --------------------------------------------------------------------------- #


async def _discard(message: Message) -> None:
    pass


async def _hang_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(3600)


async def _raise_before_start(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


async def _raise_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("boom")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "app"),
    [
        pytest.param("raise-before-start", _raise_before_start, id="raise-before-start"),
        pytest.param("raise-after-start", _raise_after_start, id="raise-after-start"),
        pytest.param("task-cancelled", _hang_after_start, id="task-cancelled"),
    ],
)
@pytest.mark.parametrize("handle_errors", [False, True], ids=["plain", "handle-errors"])
async def test_asgi_fault_restores_the_callers_session(
    fault: str, app: ASGIApp, handle_errors: bool
) -> None:
    """The task that ran the request has its own session back after the fault."""
    middleware = AsgiSessionIdMiddleware(app, handle_errors=handle_errors)
    after: list[str | None] = []
    scope = http_scope([(b"x-session-id", b"inner")])

    async def request() -> None:
        with session("outer"):
            try:
                await middleware(scope, receive_request, _discard)
            finally:
                after.append(current_session_id())

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0.01)
    if not task.done():
        task.cancel()
    with pytest.raises((RuntimeError, asyncio.CancelledError)):
        await task
    FIGURES.faults.append(FaultRun("asgi in-process", fault, after == ["outer"]))
    assert after == ["outer"]


class _Body:
    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in

    def __iter__(self) -> Iterator[bytes]:
        yield b"one"
        if self.fail_in == "next":
            raise RuntimeError("boom in next()")
        yield b"two"

    def close(self) -> None:
        if self.fail_in == "close":
            raise RuntimeError("boom in close()")


def _serve_once(app: WSGIApp, seen: list[str | None]) -> None:
    """What a WSGI server does with one request, noting the session of its own thread."""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    body = app(wsgi_environ({"HTTP_X_SESSION_ID": "inner"}), start_response)
    try:
        for _ in body:
            seen.append(current_session_id())
    finally:
        seen.append(current_session_id())
        close = getattr(body, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize("fail_in", ["app", "next", "close"])
@pytest.mark.parametrize("handle_errors", [False, True], ids=["plain", "handle-errors"])
def test_wsgi_fault_leaves_the_server_thread_alone(fail_in: str, handle_errors: bool) -> None:
    """The server thread's own session is the same before, during and after the fault."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        if fail_in == "app":
            raise RuntimeError("boom in the app")
        return _Body(fail_in)

    middleware = WsgiSessionIdMiddleware(app, handle_errors=handle_errors)
    seen: list[str | None] = []
    with session("server-thread"):
        with pytest.raises(RuntimeError, match="boom"):
            _serve_once(middleware, seen)
        seen.append(current_session_id())
    clean = set(seen) == {"server-thread"}
    FIGURES.faults.append(FaultRun("wsgi in-process", f"raise-in-{fail_in}", clean))
    assert clean, seen
