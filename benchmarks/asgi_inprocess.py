"""ASGI middleware called in-process: added time per request over the bare app.

No server and no sockets: one asyncio task awaits the app in a tight loop with
a fresh copy of a precomputed ``scope``, a ``receive`` that returns the request
and a ``send`` that drops every message. What remains is the middleware's own
Python work, the part a server cannot hide.

Each request gets header names and values of its own, as from a server (h11
and httptools make a new ``bytes`` of every name and value): a middleware
that looks them up in a set or dict hashes them on every request, and with
objects reused across the run it would hash each only once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle, islice

from starlette.types import ASGIApp, Message, Scope

from benchmarks import apps
from benchmarks.apps import BODY, asgi_app
from benchmarks.floor import AsgiFloorMiddleware, matches_id_rule
from benchmarks.peers import (
    base_http_middleware,
    correlation_id_defaults,
    correlation_id_middleware,
    starlette_context_middleware,
)
from benchmarks.report import Row, Verdict, inprocess_rows
from benchmarks.timing import Budget, Runner, interleave
from sessionctx.asgi import SessionIdMiddleware

__all__ = [
    "CANDIDATES",
    "CASES",
    "Case",
    "check_response",
    "collect_response",
    "discard",
    "receive_request",
    "run",
    "runner",
]

VALID_ID = apps.VALID_ID.encode("latin-1")
INVALID_ID = b"not a valid id"
# What a browser or an HTTP client typically sends besides the session header;
# every candidate scans the same list.
COMMON_HEADERS = (
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"benchmark/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
)
BARE = "bare app"
FLOOR = "floor"
OURS = "sessionctx"
CORRELATION_ID = "asgi-correlation-id"
CORRELATION_ID_RULE = "asgi-correlation-id, id rule"

#: The middleware compared, each wrapping the bare app.
CANDIDATES: dict[str, Callable[[ASGIApp], ASGIApp]] = {
    FLOOR: AsgiFloorMiddleware,
    OURS: SessionIdMiddleware,
    CORRELATION_ID: correlation_id_defaults,
    CORRELATION_ID_RULE: correlation_id_middleware,
    "starlette-context": starlette_context_middleware,
    "BaseHTTPMiddleware": base_http_middleware,
}


@dataclass(frozen=True)
class Case:
    """One kind of request: its ``X-Session-Id`` value, or none.

    With ``session_headers``, request ``i`` sends ``session_headers[i % n]``
    instead (``session_header`` is the first of them).
    """

    name: str
    session_header: bytes | None
    session_headers: tuple[bytes, ...] = ()

    def scope(self, session_header: bytes | None = None) -> Scope:
        """The request's scope, with ``session_header`` if given."""
        headers = list(COMMON_HEADERS)
        if session_header is None:
            session_header = self.session_header
        if session_header is not None:
            headers.append((b"x-session-id", session_header))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": headers,
        }

    def scopes(self) -> list[Scope]:
        """One scope per request in turn."""
        return [self.scope(header) for header in self.session_headers or (self.session_header,)]


VALID = Case("header valid", VALID_ID)
_MANY_IDS = tuple(sid.encode("latin-1") for sid in apps.MANY_IDS)
VARIED = Case("header valid, many ids", _MANY_IDS[0], _MANY_IDS)
ABSENT = Case("header absent", None)
INVALID = Case("header invalid", INVALID_ID)
CASES = (VALID, VARIED, ABSENT, INVALID)

_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive_request() -> Message:
    """An ASGI ``receive``: the request, without a body."""
    return _REQUEST


async def discard(message: Message) -> None:
    """An ASGI ``send`` that drops the message."""


def runner(
    app: ASGIApp, case: Case, loop: asyncio.AbstractEventLoop, clock: Callable[[], int]
) -> Runner:
    """Time ``n`` requests of ``case`` through ``app``."""
    scope = case.scope()
    names = tuple(name for name, _ in scope["headers"])
    # Each request's values, as bytearrays: bytes() of one is a new object.
    rows = [tuple(bytearray(value) for _, value in each["headers"]) for each in case.scopes()]

    async def many(n: int) -> int:
        receive, send, lower = receive_request, discard, bytes.lower
        start = clock()
        for values in islice(cycle(rows), n):
            request = dict(scope)
            request["headers"] = list(zip(map(lower, names), map(bytes, values), strict=True))
            await app(request, receive, send)
        return clock() - start

    def run(n: int) -> int:
        return loop.run_until_complete(many(n))

    return run


async def collect_response(app: ASGIApp, scope: Scope) -> list[Message]:
    """Every message ``app`` sends for one request with a copy of ``scope``."""
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    await app(dict(scope), receive_request, record)
    return sent


def check_response(name: str, case: Case, messages: list[Message]) -> None:
    """Raise unless ``messages`` are a 200 with the body and one valid session header.

    This keeps the comparison honest: every candidate must echo the inbound id
    when it is valid and a new valid one otherwise.
    """
    starts = [m for m in messages if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    if len(starts) != 1 or starts[0]["status"] != 200 or body != BODY:
        raise RuntimeError(f"{name} ({case.name}): not the bare app's response: {messages!r}")
    if name == BARE:
        return
    ids = [v for k, v in starts[0]["headers"] if k.lower() == b"x-session-id"]
    if len(ids) != 1:
        raise RuntimeError(f"{name} ({case.name}): expected one X-Session-Id, got {ids!r}")
    sent = ids[0]
    if case.session_header is not None and matches_id_rule(case.session_header.decode()):
        ok = sent == case.session_header
    else:
        ok = sent != case.session_header and matches_id_rule(sent.decode("latin-1"))
    if not ok:
        raise RuntimeError(f"{name} ({case.name}): wrong X-Session-Id {sent!r}")


def _rows(case: Case, samples: dict[str, list[float]]) -> list[Row]:
    def verdict(name: str, added: dict[str, float]) -> Verdict | None:
        if name == OURS and case in (VALID, VARIED):
            ratio = added[OURS] / added[FLOOR]
            return Verdict("<= 1.20x floor", ratio <= 1.2, f"{ratio:.2f}x")
        if name == OURS and case is ABSENT:
            ratio = added[OURS] / added[FLOOR]
            return Verdict("< floor with uuid4", ratio < 1.0, f"{ratio:.2f}x")
        if name == CORRELATION_ID and case is VALID:
            cheaper = added[CORRELATION_ID] / added[OURS]
            return Verdict(">= 2.2x sessionctx", cheaper >= 2.2, f"{cheaper:.2f}x")
        return None

    return inprocess_rows("asgi", case.name, samples, bare=BARE, floor=FLOOR, verdict=verdict)


def run(budget: Budget) -> list[Row]:
    """Rows for every case: the bare app, then each candidate against the floor."""
    loop = asyncio.new_event_loop()
    rows: list[Row] = []
    try:
        for case in CASES:
            scope = case.scope()
            apps = {BARE: asgi_app} | {name: wrap(asgi_app) for name, wrap in CANDIDATES.items()}
            for name, app in apps.items():
                check_response(name, case, loop.run_until_complete(collect_response(app, scope)))
            runners = {name: runner(app, case, loop, budget.clock) for name, app in apps.items()}
            rows += _rows(case, interleave(runners, budget))
    finally:
        loop.close()
    return rows
