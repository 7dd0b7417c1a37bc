"""Helpers shared by several test modules: real servers on 127.0.0.1, ASGI clients, Django."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
import pytest

from sessionctx import SessionContext, session_id_of
from sessionctx.log_filters import SessionIdFilter

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Each module that needs an extra: the library it names as missing, and the extra.
NEEDS_EXTRA: dict[str, tuple[str, str]] = {
    "sessionctx.context": ("opentelemetry", "otel"),
    "sessionctx.integrations.celery": ("celery", "celery"),
    "sessionctx.integrations.httpx": ("httpx", "httpx"),
    "sessionctx.integrations.opentelemetry": ("opentelemetry", "otel"),
    "sessionctx.integrations.requests": ("requests", "requests"),
    "sessionctx.integrations.structlog": ("structlog", "structlog"),
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def readme_logging() -> str:
    """The README's logging configuration: the Python block under "Logging (stdlib)"."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text.split("### Logging (stdlib)", 1)[1], re.S)
    if block is None:
        raise RuntimeError("README.md: no Python block under 'Logging (stdlib)'")
    return block[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on ``HOST:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout}s") from None
            time.sleep(0.05)


@contextmanager
def running_process(
    argv: Sequence[str], output: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` from the repository root, its output going to ``output``, until the
    block ends. Its process group is stopped with SIGTERM, then SIGKILL after 15 seconds."""
    with output.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: worker processes go with it
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


@contextmanager
def server_process(
    argv: Sequence[str],
    port: int,
    output: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`running_process`, whose block starts once it listens on ``port``.

    Raises with the server's output if it exits first or does not listen within
    ``timeout`` seconds.
    """
    with running_process(argv, output, env) as proc:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with {proc.returncode}:\n{_tail(output)}")
            try:
                wait_until_listening(port, timeout=0.5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{argv} did not listen on {port}:\n{_tail(output)}"
                    ) from None
        yield proc


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-4_000:]


def request_once(
    port: int, path: str, sid: str | None = None, method: str = "GET"
) -> tuple[int, str | None, bytes]:
    """One request to 127.0.0.1 on a new connection: ``(status, X-Session-Id, body)``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=20)
    try:
        conn.request(method, path, headers={} if sid is None else {"X-Session-Id": sid})
        response = conn.getresponse()
        return response.status, response.getheader("X-Session-Id"), response.read()
    finally:
        conn.close()


@contextmanager
def serving_in_thread(server: socketserver.TCPServer) -> Iterator[int]:
    """Serve ``server`` (bound to ``HOST``) from a daemon thread until the block ends;
    yield its port."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(BaseHTTPRequestHandler):
    """An ``http.server`` handler that logs nothing to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving_http(handler: type[BaseHTTPRequestHandler], host: str = HOST) -> Iterator[str]:
    """Serve ``handler`` on ``host`` (a loopback address; a thread per request)
    until the block ends; yield the server's ``http://host:port`` URL."""
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    with serving_in_thread(server) as port:
        yield f"http://{host}:{port}"


def send_json(handler: BaseHTTPRequestHandler, value: object) -> None:
    """Answer an ``http.server`` request with ``value`` as a 200 JSON body."""
    body = json.dumps(value).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def asgi_client(app: ASGIApp) -> httpx.AsyncClient:
    """An in-process client for ``app`` that turns an unhandled app error into the 500 it sent."""
    # The app's exception still reaches the transport after a 500 was sent;
    # the response is what these tests look at.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


#: Options under which a valid id the defaults continue is not continued.
REFUSING_A_VALID_ID = [
    pytest.param({"validator": lambda sid: False}, id="validator"),
    pytest.param({"trust_incoming": False}, id="trust-incoming-false"),
    pytest.param({"accept_headers": ["X-Other"]}, id="name-not-accepted"),
]


def any_app(*args: Any) -> Any:
    """An app for a middleware built to check its options: never called."""
    raise AssertionError("construction must not call the app")


def is_generated(sid: str | None) -> bool:
    """Whether ``sid`` looks like the default generator's output (a canonical v4 uuid string)."""
    if sid is None:
        return False
    try:
        parsed = uuid.UUID(sid)
    except ValueError:
        return False
    return str(parsed) == sid and parsed.version == 4


def assert_session(sid: str | None, expected: str | None) -> None:
    """``expected=None`` stands for a freshly generated id."""
    assert sid is not None
    if expected is None:
        assert is_generated(sid), sid
    else:
        assert sid == expected


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    """This Python run with ``args`` (flags, ``-c`` and a script, its argv), which must
    exit 0 within a minute; its output is text."""
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def configure_django(project_settings: Mapping[str, Any]) -> None:
    """Configure Django once per process; each test applies its own settings on top."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="sessionctx-tests-only",
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
            **project_settings,
        )
        django.setup()


class _Visit(Protocol):
    @property
    def session(self) -> SessionContext | None: ...


VisitT = TypeVar("VisitT", bound=_Visit)


class VisitLog(Generic[VisitT]):
    """For a recording test app: what it saw on each call, and the one call's session id."""

    visits: list[VisitT]

    @property
    def only(self) -> VisitT:
        assert len(self.visits) == 1, self.visits
        return self.visits[0]

    @property
    def sid(self) -> str:
        seen = self.only.session
        assert seen is not None
        return seen.id


class SessionRecords(logging.Handler):
    """A handler with a ``SessionIdFilter`` that keeps ``(session_id, message, exc_info)``
    of every record."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(SessionIdFilter())
        self.records: list[tuple[str, str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        entry = (str(record.__dict__["session_id"]), record.getMessage(), bool(record.exc_info))
        self.records.append(entry)


def logged_session_id(error: BaseException) -> str:
    """The session id ``SessionIdFilter`` writes, outside any session, on a
    record of ``error`` (as a server logs an exception that left the app)."""
    record = logging.LogRecord(
        "server", logging.ERROR, __file__, 0, "error", None, (type(error), error, None)
    )
    SessionIdFilter().filter(record)
    logged = str(record.__dict__["session_id"])
    # The public reading of the same note agrees, wherever it is asked.
    assert (session_id_of(error) or "-") == logged, (session_id_of(error), logged)
    return logged
