"""The WSGI app that ``tests/servers/test_wsgi_servers.py`` serves with werkzeug,
gunicorn (gthread and gevent workers), waitress, gevent's pywsgi and uWSGI.

``app`` is ``ThreadContextProbe(SessionIdMiddleware(endpoints, handle_errors=True))``:

- ``/echo``: the session id seen in the app call, after a short sleep (other
  requests run meanwhile), and in the lazy body, plus ``environ[...]``, as JSON;
  with ``?run=R``, it notes how many ``/echo`` requests were in the app when
  its sleep ended, and its OS thread, which ``/echo-report?run=R`` returns;
- ``/stream?chunks=N``: ``N`` chunks of ``STREAM_CHUNK`` bytes, each starting
  with the session id seen when the server asked for it;
- ``/boom``: raises before ``start_response`` (``handle_errors`` answers 500),
  with the query string, if any, in the exception's message;
- ``/file?key=K``: this module's source through the server's
  ``wsgi.file_wrapper`` (wsgiref's where the server has none); the file notes
  how often it was ``read()`` (never, when the server used ``sendfile()``) and
  the session its ``close()`` saw, which ``/file-report?key=K`` returns;
- ``/leaks``: answered by the probe itself: how many times a session was
  active in the server thread's own context around a request.

gunicorn and uWSGI import it as ``tests.servers.wsgi_server:app``.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.util import FileWrapper

from sessionctx import current_session_id
from sessionctx.wsgi import SessionIdMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["FILE_PATH", "STREAM_CHUNK", "ThreadContextProbe", "app", "endpoints"]

#: Big enough that a client reading slowly fills the socket buffers, so the
#: server asks the body for its next chunk only when the client reads on.
STREAM_CHUNK = 65_536
FILE_PATH = __file__
_JSON = ("Content-Type", "application/json")
_TEXT = ("Content-Type", "text/plain")
_FILE_REPORTS: dict[str, dict[str, Any]] = {}


class RecordingFile(io.FileIO):
    """A real file (``sendfile()`` works on it) that reports its reads and ``close()``."""

    def __init__(self, key: str) -> None:
        super().__init__(FILE_PATH, "rb")
        self.report: dict[str, Any] = {"reads": 0}
        _FILE_REPORTS[key] = self.report

    def read(self, size: int | None = -1, /) -> bytes:
        self.report["reads"] += 1
        return super().read(size)

    def close(self) -> None:
        if not self.closed:
            self.report["closed_in"] = current_session_id()
        super().close()


def endpoints(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/echo":
        return _echo(environ, start_response)
    if path == "/stream":
        chunks = int(parse_qs(environ["QUERY_STRING"]).get("chunks", ["4"])[0])
        start_response("200 OK", [_TEXT])
        return _stream(chunks)
    if path == "/boom":
        # The query, if any, in the message: a server's traceback can be told apart.
        query = environ["QUERY_STRING"]
        raise RuntimeError("failed before start_response" + (f" ({query})" if query else ""))
    if path == "/replaced":
        # PEP 3333's way to replace a response that has not been sent yet.
        start_response("200 OK", [_TEXT])
        try:
            raise RuntimeError("failed after start_response, before the body")
        except RuntimeError:
            headers = [_TEXT]
            if environ["QUERY_STRING"] == "own":
                # An error page that sets the session header itself.
                headers.append(("X-Session-Id", environ["sessionctx.session_id"]))
            start_response("503 Service Unavailable", headers, sys.exc_info())
        return [b"replaced"]
    if path == "/refused-first":
        # The same, after a server that checks headers (gunicorn) refused the
        # first ones: before it got to the session header, appended last.
        try:
            start_response("200 OK", [_TEXT, ("X-Bad", "a\r\nb")])
            raise RuntimeError("a server that takes any header: replaced all the same")
        except Exception:
            start_response("500 Internal Server Error", [_TEXT], sys.exc_info())
        return [b"refused"]
    if path == "/file":
        key = parse_qs(environ["QUERY_STRING"])["key"][0]
        start_response("200 OK", [("Content-Type", "text/x-python")])
        file_wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        return file_wrapper(RecordingFile(key), 8192)  # type: ignore[no-any-return]
    if path == "/echo-report":
        run = parse_qs(environ["QUERY_STRING"])["run"][0]
        start_response("200 OK", [_JSON])
        return [json.dumps(_OVERLAPS.runs.get(run)).encode()]
    if path == "/file-report":
        key = parse_qs(environ["QUERY_STRING"])["key"][0]
        start_response("200 OK", [_JSON])
        return [json.dumps(_FILE_REPORTS.get(key)).encode()]
    start_response("404 Not Found", [_TEXT])
    return [b"not found"]


class _Overlaps:
    """How many ``/echo`` requests were in the app at once, and the OS threads
    they ran in, for each ``run`` query value."""

    def __init__(self) -> None:
        self.in_app = 0
        self.runs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.in_app += 1

    def leave(self) -> None:
        with self._lock:
            self.in_app -= 1

    def note(self, run: str) -> None:
        """Note, for ``run``, how many requests are in the app now, and this OS thread
        (not ``threading.get_ident()``, which tells gevent's greenlets apart)."""
        with self._lock:
            report = self.runs.setdefault(run, {"most_at_once": 0, "threads": []})
            report["most_at_once"] = max(report["most_at_once"], self.in_app)
            if threading.get_native_id() not in report["threads"]:
                report["threads"].append(threading.get_native_id())


_OVERLAPS = _Overlaps()


def _echo(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    run = parse_qs(environ["QUERY_STRING"]).get("run", [""])[0]
    in_call = current_session_id()
    _OVERLAPS.enter()
    try:
        time.sleep(0.002)
        if run:
            _OVERLAPS.note(run)
        after_sleep = current_session_id()
        start_response("200 OK", [_JSON])
    finally:
        _OVERLAPS.leave()
    return _echo_body(environ["sessionctx.session_id"], in_call, after_sleep)


def _echo_body(in_environ: str, in_call: str | None, after_sleep: str | None) -> Iterator[bytes]:
    time.sleep(0.001)
    seen = {
        "environ": in_environ,
        "call": in_call,
        "after_sleep": after_sleep,
        "body": current_session_id(),
    }
    yield json.dumps(seen).encode()


def _stream(chunks: int) -> Iterator[bytes]:
    for i in range(chunks):
        head = f"{i} {current_session_id()}\n".encode()
        yield head + b"." * (STREAM_CHUNK - len(head))


class ThreadContextProbe:
    """Outermost layer: counts sessions found in the server thread's own context.

    It runs outside ``SessionIdMiddleware``, in the context the server calls
    the app in, before the app call, after it, after each body step and after
    ``close()``; each time a session is active there counts as a leak.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.leaks = 0
        self._lock = threading.Lock()

    def _check(self) -> None:
        if current_session_id() is not None:
            with self._lock:
                self.leaks += 1

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/leaks":
            start_response("200 OK", [_TEXT])
            return [str(self.leaks).encode()]
        self._check()
        body = self.app(environ, start_response)
        self._check()
        file_wrapper = environ.get("wsgi.file_wrapper")
        if type(body) is file_wrapper or (
            # uWSGI's wrapper is a function that returns the file itself, and
            # uWSGI sends it with sendfile() only when the app returns that object.
            file_wrapper is not None
            and not isinstance(file_wrapper, type)
            and hasattr(body, "read")
        ):
            return body  # as it is, so that the server can still use sendfile()
        return self._checked(body)

    def _checked(self, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                self._check()
                yield chunk
                self._check()
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self._check()


_MIDDLEWARE = SessionIdMiddleware(endpoints, handle_errors=True)
# One that wraps start_response once more, for requests with the query "expose".
_EXPOSING = SessionIdMiddleware(endpoints, expose_header=True)


def _by_query(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["QUERY_STRING"] == "expose":
        return _EXPOSING(environ, start_response)
    return _MIDDLEWARE(environ, start_response)


app = ThreadContextProbe(_by_query)
