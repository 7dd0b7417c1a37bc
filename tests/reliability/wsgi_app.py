"""The WSGI app that the reliability tests serve with gunicorn and werkzeug.

``app`` is ``Probe(SessionIdMiddleware(endpoints))``, the WSGI twin of
:mod:`tests.reliability.asgi_app`:

- ``endpoints``: ``/load`` reads the session id before and after a sleep, in a
  :class:`~sessionctx.ContextThreadPoolExecutor` worker and lazily in the body
  generator (which also calls ``start_response``), logging from each place;
  ``/fault/...`` fail in the ways the fault tests name;
- :class:`~sessionctx.wsgi.SessionIdMiddleware` with its default options;
- :class:`Probe`, outermost, runs in the server thread's own context: it counts
  requests that arrive with a session already active there, or that leave one
  behind after the app call, any body step or ``close()``, and answers
  ``/probe`` with those counts and the thread of the latest request.

``python -m tests.reliability.wsgi_app --port N [--threaded]`` serves it with
werkzeug's development server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from sessionctx import ContextThreadPoolExecutor, current_session_id
from sessionctx.wsgi import SessionIdMiddleware
from tests.reliability.applog import configure_from_env, log_request
from tests.reliability.probe import AppFault, ProbeState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["STREAM_CHUNK", "Probe", "app", "endpoints"]

SCOPE_KEY = "sessionctx.session_id"
STREAM_CHUNK = b"x" * 65_536
_JSON = ("Content-Type", "application/json")
_STREAM = ("Content-Type", "application/octet-stream")
_EXECUTOR = ContextThreadPoolExecutor(max_workers=4, thread_name_prefix="reliability")


class Probe:
    """Outermost layer: watches the server thread's context around each request."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.state = ProbeState(pid=os.getpid())
        self._lock = threading.Lock()

    def check(self, *, exit: bool) -> None:
        seen = current_session_id()
        if seen is None:
            return
        with self._lock:
            if exit:
                self.state.dirty_exits += 1
            else:
                self.state.dirty_entries += 1
            self.state.last_dirty = seen

    def finish(self) -> None:
        with self._lock:
            self.state.in_flight -= 1
        self.check(exit=True)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.check(exit=False)
        if environ["PATH_INFO"] == "/probe":
            with self._lock:
                report = asdict(self.state)
            body = json.dumps(report).encode()
            start_response("200 OK", [_JSON, ("Content-Length", str(len(body)))])
            return [body]
        with self._lock:
            self.state.requests += 1
            self.state.in_flight += 1
            self.state.request_thread = threading.get_ident()
        try:
            body_iter = self.app(environ, start_response)
        except BaseException:
            self.finish()
            raise
        self.check(exit=True)
        return _ProbedBody(self, body_iter)


class _ProbedBody:
    """The middleware's body, checked after every step and after ``close()``."""

    def __init__(self, probe: Probe, body: Iterable[bytes]) -> None:
        self._probe = probe
        self._body = body
        self._iter: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iter is None:
            self._iter = iter(self._body)
        try:
            return next(self._iter)
        finally:
            self._probe.check(exit=True)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._probe.finish()


def _read_in_worker(key: str) -> str | None:
    log_request(key, "thread")
    return current_session_id()


def _load(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    key = parse_qs(environ.get("QUERY_STRING", "")).get("k", ["-"])[0]
    reads = [current_session_id()]
    time.sleep(random.random() / 500)
    reads.append(current_session_id())
    log_request(key, "handler")
    reads.append(_EXECUTOR.submit(_read_in_worker, key).result(timeout=30))
    reads.append(current_session_id())

    def body() -> Iterator[bytes]:
        # Runs when the server steps the body, possibly much later.
        log_request(key, "body")
        reads.append(current_session_id())
        payload = json.dumps({"scope": environ[SCOPE_KEY], "reads": reads}).encode()
        start_response("200 OK", [_JSON, ("Content-Length", str(len(payload)))])
        yield payload

    return body()


def _stream_raises(start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [_STREAM])
    for _ in range(3):
        yield b"chunk\n"
        time.sleep(0.001)
    raise AppFault("in the middle of the body")


def _stream_until_disconnect(start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [_STREAM])
    # Bounded, in case the server never notices the client is gone.
    for _ in range(1_000):
        yield STREAM_CHUNK
        time.sleep(0.005)


class _CloseRaises:
    """A body whose ``close()`` fails."""

    def __init__(self, start_response: StartResponse) -> None:
        start_response("200 OK", [_JSON, ("Content-Length", "2")])

    def __iter__(self) -> Iterator[bytes]:
        yield b"{}"

    def close(self) -> None:
        raise AppFault("in close()")


def _slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    """Read the body in small pieces as the client sends it, then stream an id per line."""
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    seen = [current_session_id()]
    while remaining > 0:
        chunk = stream.read(min(16, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        seen.append(current_session_id())
    start_response("200 OK", [_STREAM])
    for sid in seen:
        yield f"{sid}\n".encode()
        time.sleep(0.01)
        yield f"{current_session_id()}\n".encode()


def endpoints(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The app behind the middleware."""
    path = environ["PATH_INFO"]
    if path == "/load":
        return _load(environ, start_response)
    if path == "/fault/raise-before-start":
        raise AppFault("before start_response")
    if path == "/fault/raise-after-start":
        start_response("200 OK", [_STREAM])
        raise AppFault("after start_response")
    if path == "/fault/stream-raises":
        return _stream_raises(start_response)
    if path == "/fault/client-disconnects":
        return _stream_until_disconnect(start_response)
    if path == "/fault/close-raises":
        return _CloseRaises(start_response)
    if path == "/fault/slow-client":
        return _slow(environ, start_response)
    start_response("404 Not Found", [_JSON, ("Content-Length", "2")])
    return [b"{}"]


configure_from_env()
app = Probe(SessionIdMiddleware(endpoints))


def main() -> None:
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threaded", action="store_true")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    make_server("127.0.0.1", args.port, app, threaded=args.threaded).serve_forever()


if __name__ == "__main__":
    main()
