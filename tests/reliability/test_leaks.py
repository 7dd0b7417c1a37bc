"""Leaks: many in-process requests through each middleware leave nothing behind.

After a warm-up, traced memory may not grow by more than a small fixed bound
however many requests pass, and the driver's own context holds no session
afterwards (no ``ContextVar`` value survives a request).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextvars import copy_context
from typing import Any

import pytest

from sessionctx import SessionContext, current_session_id
from sessionctx.asgi import SessionIdMiddleware as AsgiSessionIdMiddleware
from sessionctx.wsgi import SessionIdMiddleware as WsgiSessionIdMiddleware
from tests.reliability.figures import FIGURES, LeakRun
from tests.reliability.inprocess import (
    Message,
    Receive,
    Scope,
    Send,
    environ_key,
    http_scope,
    run_to_end,
    wsgi_environ,
)
from tests.reliability.sizes import SIZES

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(SIZES.test_timeout)]

#: Growth allowed after the warm-up, whatever the number of requests.
GROWTH_BOUND = 64 * 1024
WARM_UP = 2_000
SCOPE_KEY = "sessionctx.session_id"
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"access-control-allow-origin", b"*")],
}
BODY: Message = {"type": "http.response.body", "body": b"ok"}

#: Three requests in four go to a middleware with default options, the fourth to
#: one with every option that does per-request work (attributes, a custom
#: validator, rewriting request headers, merging CORS headers).
OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {
        "header_name": "X-Request-Id",
        "update_request_header": True,
        "expose_header": True,
        "validator": lambda sid: not sid.startswith("refused-"),
        "attributes": lambda request: {"tenant": "t1"},
    },
)


def inbound(i: int) -> tuple[str, str] | None:
    """The inbound session header of request ``i``: a mix of every case the middleware meets."""
    # Six kinds, each met by both middlewares (see ``middleware_for``).
    kind = i // 4 % 6
    if kind == 0:
        return None
    if kind == 1:
        return ("x-session-id", f"leak-{i}")
    if kind == 2:
        return ("x-request-id", f"leak-{i}")
    if kind == 3:
        return ("baggage", f"k=v,session.id=leak-{i}")
    if kind == 4:
        return ("x-request-id", f"refused-{i}")
    return ("mirascope-session-id", f"bad value {i}")


def middleware_for(i: int) -> int:
    """Index into ``OPTIONS`` of the middleware that serves request ``i``."""
    return 1 if i % 4 == 3 else 0


def asgi_driver() -> Callable[[int], bool]:
    """One request per call, with as little driver work as possible: tracemalloc
    slows every allocation down, the driver's included."""
    template = http_scope()
    results: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        results.append(current_session_id() == scope[SCOPE_KEY])
        await send(dict(START))
        await send(BODY)

    async def receive() -> Message:
        return REQUEST

    async def send(message: Message) -> None:
        pass

    middlewares = [AsgiSessionIdMiddleware(app, **options) for options in OPTIONS]

    def one(i: int) -> bool:
        header = inbound(i)
        scope = template.copy()
        scope["headers"] = [] if header is None else [(header[0].encode(), header[1].encode())]
        run_to_end(middlewares[middleware_for(i)](scope, receive, send))
        return results.pop()

    return one


def wsgi_driver() -> Callable[[int], bool]:
    """The WSGI twin of :func:`asgi_driver`."""
    template = wsgi_environ()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Access-Control-Allow-Origin", "*")])
        yield b"ok" if current_session_id() == environ[SCOPE_KEY] else b"mismatch"

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    middlewares = [WsgiSessionIdMiddleware(app, **options) for options in OPTIONS]

    def one(i: int) -> bool:
        header = inbound(i)
        environ = template.copy()
        if header is not None:
            environ[environ_key(header[0])] = header[1]
        body = middlewares[middleware_for(i)](environ, start_response)
        try:
            return b"".join(body) == b"ok"
        finally:
            body.close()  # type: ignore[attr-defined]

    return one


DRIVERS = {"asgi": asgi_driver, "wsgi": wsgi_driver}


def sessions_in_context() -> list[SessionContext]:
    """Every ``SessionContext`` held by any context variable of the caller's context."""
    return [value for _, value in copy_context().items() if isinstance(value, SessionContext)]


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_no_growth_and_nothing_left_in_the_context(kind: str) -> None:
    one = DRIVERS[kind]()
    count = SIZES.leak_requests
    gc.collect()
    tracemalloc.start()
    try:
        mismatches = sum(not one(i) for i in range(WARM_UP))
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        mismatches += sum(not one(i) for i in range(WARM_UP, WARM_UP + count))
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    left = sessions_in_context()
    FIGURES.leaks.append(LeakRun(kind, count, growth, len(left)))
    assert mismatches == 0
    assert left == []
    assert growth < GROWTH_BOUND, f"traced memory grew by {growth} bytes over {count} requests"
