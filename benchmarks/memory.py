"""Memory over many requests: traced growth after warm-up, and no session left behind.

``tracemalloc`` traces every allocation while the middleware serves ``N``
requests in-process, cycling through the cases of the in-process benchmarks
(a valid inbound id, a different valid id per request, none and, for ASGI, an
invalid one). Growth is the traced size after the run minus the traced size
after a warm-up, both taken after a full collection: anything a request leaves
behind shows up ``N`` times. The app checks on every request that it sees that
request's session; afterwards no ``SessionContext`` may be alive, and the code
that called the middleware must see no session.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from benchmarks import asgi_inprocess, wsgi_inprocess
from benchmarks.apps import asgi_app, wsgi_app
from benchmarks.report import Row, Verdict
from benchmarks.wsgi_inprocess import serve_once
from sessionctx import SessionContext, current_session, current_session_id
from sessionctx._policy import SCOPE_KEY
from sessionctx.asgi import SessionIdMiddleware
from sessionctx.wsgi import SessionIdMiddleware as WsgiSessionIdMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["FLAT_BYTES", "WARMUP", "asgi_growth", "run", "wsgi_growth"]

#: Growth below this counts as flat, whatever ``N``: a single byte per
#: request left behind crosses it after 65,536 requests.
FLAT_BYTES = 64 * 1024
#: Requests served before the first measurement (caches, lazily built objects).
WARMUP = 1000

_Request = TypeVar("_Request")


class _Observer:
    """The app's view: in how many requests it saw the middleware's session,
    and what the calling code sees once the middleware has returned.

    Sessions the process held before (its caller's) are counted at the start,
    so only those the requests leave alive count against the middleware.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.seen = 0
        self.left_over: SessionContext | None = None
        self.alive_before = _alive_sessions()

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        if current_session_id() == scope[SCOPE_KEY]:
            self.seen += 1
        await asgi_app(scope, receive, send)

    def wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        self.requests += 1
        if current_session_id() == environ[SCOPE_KEY]:
            self.seen += 1
        return wsgi_app(environ, start_response)


def _alive_sessions() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is SessionContext)


def _traced(serve: Callable[[int], None], requests: int) -> tuple[int, list[str]]:
    """Traced growth over ``requests`` after a warm-up, and the lines that grew most."""
    tracemalloc.start()
    try:
        serve(WARMUP)
        gc.collect()
        before_snapshot = tracemalloc.take_snapshot()
        before = tracemalloc.get_traced_memory()[0]
        serve(requests)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        after_snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # The snapshots' own bookkeeping is no request's doing.
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    grew = [
        str(stat)
        for stat in after_snapshot.filter_traces(ignore).compare_to(
            before_snapshot.filter_traces(ignore), "lineno"
        )[:5]
        if stat.size_diff > 0
    ]
    return after - before, grew


def _in_turn(requests: list[list[_Request]]) -> list[_Request]:
    """One request of each case in turn, each case's requests in order, until
    the case with the most has sent all of them."""
    longest = max(map(len, requests))
    return [each[i % len(each)] for i in range(longest) for each in requests]


def _row(interface: str, requests: int, growth: int, grew: list[str], app: _Observer) -> Row:
    if app.seen != app.requests:
        raise RuntimeError(
            f"{interface}: the app saw its session in {app.seen} of {app.requests} requests"
        )
    alive = _alive_sessions() - app.alive_before
    flat = growth < FLAT_BYTES and alive == 0 and app.left_over is None
    measured = f"{growth:+,} B, {alive} alive"
    if app.left_over is not None:
        measured += ", session left set"
    return Row(
        part="memory",
        case=f"{interface}, {requests:,} req",
        candidate="sessionctx",
        absolute=growth,
        unit="bytes",
        verdict=Verdict(f"flat (< {FLAT_BYTES // 1024} KiB)", flat, measured),
        extra={"requests": requests, "growth_bytes": growth, "alive": alive, "grew": grew},
    )


def asgi_growth(
    requests: int, middleware: Callable[[ASGIApp], ASGIApp] = SessionIdMiddleware
) -> Row:
    """The memory row for ``middleware`` (default sessionctx's) serving ASGI requests."""
    observer = _Observer()
    app = middleware(observer.asgi)
    scopes = _in_turn([case.scopes() for case in asgi_inprocess.CASES])
    receive, send = asgi_inprocess.receive_request, asgi_inprocess.discard

    async def many(n: int) -> None:
        for i in range(n):
            await app(dict(scopes[i % len(scopes)]), receive, send)
        # This task awaited the middleware directly: whatever it set and did
        # not reset is still visible here.
        observer.left_over = current_session()

    loop = asyncio.new_event_loop()
    try:
        growth, grew = _traced(lambda n: loop.run_until_complete(many(n)), requests)
    finally:
        loop.close()
    return _row("asgi", requests, growth, grew, observer)


def wsgi_growth(
    requests: int,
    middleware: Callable[[WSGIApplication], WSGIApplication] = WsgiSessionIdMiddleware,
) -> Row:
    """The memory row for ``middleware`` (default sessionctx's) serving WSGI requests."""
    observer = _Observer()
    app = middleware(observer.wsgi)
    environs = _in_turn([case.environs() for case in wsgi_inprocess.CASES])
    start_response = wsgi_inprocess.discard_start

    def many(n: int) -> None:
        for i in range(n):
            serve_once(app, dict(environs[i % len(environs)]), start_response)
        observer.left_over = current_session()

    growth, grew = _traced(many, requests)
    return _row("wsgi", requests, growth, grew, observer)


def run(requests: int) -> list[Row]:
    """One row per interface: traced growth over ``requests`` requests through sessionctx."""
    return [asgi_growth(requests), wsgi_growth(requests)]
