"""WSGI middleware called in-process: added time per request over the bare app.

Like a server would, the loop calls the app with a fresh copy of a
precomputed ``environ`` and a ``start_response`` that keeps nothing, iterates
the body and closes it when it has ``close()``. As from a server, the session
header's value is a new ``str`` on every request, so nothing a middleware
works out from it (a hash, a cached lookup) carries over to the next request.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import cycle, islice
from typing import TYPE_CHECKING, Any

from benchmarks.apps import BODY, MANY_IDS, VALID_ID, wsgi_app
from benchmarks.floor import WsgiFloorMiddleware, matches_id_rule
from benchmarks.report import Row, Verdict, inprocess_rows
from benchmarks.timing import Budget, Runner, interleave
from sessionctx.wsgi import SessionIdMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "CANDIDATES",
    "CASES",
    "Case",
    "check_response",
    "discard_start",
    "measure",
    "run",
    "runner",
    "serve_once",
]

BARE = "bare app"
FLOOR = "floor"
OURS = "sessionctx"
SESSION_KEY = "HTTP_X_SESSION_ID"
#: SPEC.md section 7: WSGI, header present, at most this many ns added.
BUDGET_NS = 1500

#: The middleware compared, each wrapping the bare app.
CANDIDATES: dict[str, Callable[[WSGIApplication], WSGIApplication]] = {
    FLOOR: WsgiFloorMiddleware,
    OURS: SessionIdMiddleware,
}


@dataclass(frozen=True)
class Case:
    """One kind of request: its ``X-Session-Id`` value, or none.

    With ``session_headers``, request ``i`` sends ``session_headers[i % n]``
    instead (``session_header`` is the first of them).
    """

    name: str
    session_header: str | None
    session_headers: tuple[str, ...] = ()

    def environ(self, session_header: str | None = None) -> WSGIEnvironment:
        """The keys werkzeug's server puts in ``environ`` for a plain GET (26 with
        the session header), with the values of a request on loopback, and
        ``session_header`` if given."""
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "werkzeug.socket": None,
            "SERVER_SOFTWARE": "Werkzeug/3.1",
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "REQUEST_URI": "/",
            "RAW_URI": "/",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": 50000,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "benchmark/1.0",
            "HTTP_ACCEPT": "*/*",
            "HTTP_ACCEPT_ENCODING": "gzip, deflate",
            "HTTP_CONNECTION": "keep-alive",
        }
        if session_header is None:
            session_header = self.session_header
        if session_header is not None:
            environ[SESSION_KEY] = session_header
        return environ

    def environs(self) -> list[WSGIEnvironment]:
        """One ``environ`` per request in turn."""
        return [self.environ(header) for header in self.session_headers or (self.session_header,)]


VALID = Case("header valid", VALID_ID)
VARIED = Case("header valid, many ids", MANY_IDS[0], MANY_IDS)
ABSENT = Case("header absent", None)
CASES = (VALID, VARIED, ABSENT)


def _write(data: bytes) -> object:
    return None


def discard_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    """A ``start_response`` that keeps nothing."""
    return _write


def serve_once(
    app: WSGIApplication, environ: WSGIEnvironment, start_response: StartResponse
) -> bytes:
    """What a server does with one request: call, read the whole body, close it."""
    body = app(environ, start_response)
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def runner(app: WSGIApplication, case: Case, clock: Callable[[], int]) -> Runner:
    """Time ``n`` requests of ``case`` through ``app``."""
    environ = case.environ()
    # The session header's value is decoded anew per request, as a server
    # decodes every value: the one value every candidate reads (all ASCII).
    keys = (SESSION_KEY,) if SESSION_KEY in environ else ()
    rows = [tuple(each[key].encode("latin-1") for key in keys) for each in case.environs()]

    def run(n: int) -> int:
        start_response, decode = discard_start, bytes.decode
        start = clock()
        for values in islice(cycle(rows), n):
            request = dict(environ)
            request.update(zip(keys, map(decode, values), strict=True))
            body = app(request, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return clock() - start

    return run


def measure(apps: dict[str, WSGIApplication], case: Case, budget: Budget) -> dict[str, list[float]]:
    """Check each app's response to ``case``, then time them interleaved: ns per request."""
    for name, app in apps.items():
        check_response(name, case, app)
    return interleave({name: runner(app, case, budget.clock) for name, app in apps.items()}, budget)


def check_response(name: str, case: Case, app: WSGIApplication) -> None:
    """Raise unless ``app`` answers the bare app's body with one valid session header."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return _write

    data = serve_once(app, case.environ(), record)
    if len(started) != 1 or started[0][0] != "200 OK" or data != BODY:
        raise RuntimeError(f"{name} ({case.name}): not the bare app's response: {started!r}")
    if name == BARE:
        return
    ids = [v for k, v in started[0][1] if k.lower() == "x-session-id"]
    if len(ids) != 1:
        raise RuntimeError(f"{name} ({case.name}): expected one X-Session-Id, got {ids!r}")
    ok = ids[0] == case.session_header if case.session_header else matches_id_rule(ids[0])
    if not ok:
        raise RuntimeError(f"{name} ({case.name}): wrong X-Session-Id {ids[0]!r}")


def _verdict(case: Case, name: str, added: dict[str, float]) -> Verdict | None:
    if name == OURS and case in (VALID, VARIED):
        ns = added[OURS]
        return Verdict(f"<= {BUDGET_NS} ns added", ns <= BUDGET_NS, f"{ns:.0f} ns")
    return None


def run(budget: Budget) -> list[Row]:
    """Rows for every case: bare app, floor and sessionctx."""
    rows: list[Row] = []
    for case in CASES:
        apps = {BARE: wsgi_app} | {name: wrap(wsgi_app) for name, wrap in CANDIDATES.items()}
        samples = measure(apps, case, budget)
        rows += inprocess_rows(
            "wsgi", case.name, samples, bare=BARE, floor=FLOOR, verdict=partial(_verdict, case)
        )
    return rows
