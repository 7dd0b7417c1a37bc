"""``sessionctx.wsgi.SessionIdMiddleware`` on real servers: werkzeug's threaded
``make_server`` (in a thread), gunicorn's ``gthread`` and ``gevent`` workers,
waitress, gevent's ``pywsgi`` and uWSGI (each a subprocess), all on 127.0.0.1.

The app is :mod:`tests.servers.wsgi_server`. Every server is stopped when its
fixture ends, whatever the tests did. gevent and uWSGI (``pyuwsgi``) are in the
test extra only where they have binary wheels: elsewhere their servers' tests
are skipped.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from sessionctx.log_filters import SessionIdFilter
from tests.servers import wsgi_server
from tests.support import HOST, free_port, request_once, server_process, serving_in_thread

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

REQUESTS = 200
CLIENT_THREADS = 32
STREAM_CHUNKS = 6


class QuietHandler(WSGIRequestHandler):
    """No access log line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


#: How the servers' error logs, through ``SessionIdFilter``, write a record.
LOG_FORMAT = "%(levelname)s [%(session_id)s] %(name)s: %(message)s"


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    #: What the server's error log has written so far.
    error_log: Callable[[], str]


@pytest.fixture(scope="module")
def werkzeug() -> Iterator[Server]:
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.addHandler(handler)
    server = make_server(HOST, 0, wsgi_server.app, threaded=True, request_handler=QuietHandler)
    try:
        with serving_in_thread(server) as port:
            yield Server("werkzeug", port, log.getvalue)
    finally:
        werkzeug_log.removeHandler(handler)


@contextmanager
def subprocess_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, command: list[str]
) -> Iterator[Server]:
    """Run ``command`` (``{port}`` filled in with a free port) until the block ends,
    its output as the server's error log."""
    port = free_port()
    output = tmp_path_factory.mktemp(name) / f"{name}.out"
    with server_process([a.replace("{port}", str(port)) for a in command], port, output):
        yield Server(name, port, lambda: output.read_text(errors="replace"))


def gunicorn_command(worker_class: str, *options: str) -> list[str]:
    """One gunicorn worker of ``worker_class``, its error log through ``SessionIdFilter``."""
    return [
        *(sys.executable, "-m", "gunicorn", "tests.servers.wsgi_server:app"),
        *("--bind", f"{HOST}:{{port}}", "--worker-class", worker_class, "--workers", "1"),
        *options,
        *("--graceful-timeout", "2", "--log-level", "warning"),
        *("--config", "python:tests.servers.server_logging"),
    ]


def needs(module: str) -> None:
    """Skip unless ``module`` can be imported (it is not imported here: gevent's
    servers patch the standard library in their own processes only)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (the test extra has it where it has wheels)")


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    command = gunicorn_command("gthread", "--threads", "8")
    with subprocess_server(tmp_path_factory, "gunicorn", command) as server:
        yield server


@pytest.fixture(scope="module")
def waitress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    command = [sys.executable, "-m", "tests.servers.waitress_server", "{port}"]
    with subprocess_server(tmp_path_factory, "waitress", command) as server:
        yield server


@pytest.fixture(scope="module")
def gunicorn_gevent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn's ``gevent`` worker: one process and thread, a greenlet per connection,
    the standard library monkey-patched before the app is imported."""
    needs("gevent")
    with subprocess_server(
        tmp_path_factory, "gunicorn-gevent", gunicorn_command("gevent")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def pywsgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    needs("gevent")
    command = [sys.executable, "-m", "tests.servers.gevent_server", "{port}"]
    with subprocess_server(tmp_path_factory, "pywsgi", command) as server:
        yield server


@pytest.fixture(scope="module")
def uwsgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    needs("pyuwsgi")
    command = [sys.executable, "-m", "tests.servers.uwsgi_server", "{port}"]
    with subprocess_server(tmp_path_factory, "uwsgi", command) as server:
        yield server


#: The servers that run every request in a greenlet of one thread.
GREENLETS = {"gunicorn-gevent", "pywsgi"}


@pytest.fixture(params=["werkzeug", "gunicorn", "waitress", "gunicorn_gevent", "pywsgi", "uwsgi"])
def server(request: pytest.FixtureRequest) -> Server:
    served: Server = request.getfixturevalue(request.param)
    return served


def leaks(port: int) -> int:
    """How often the server thread's own context had a session around a request."""
    return int(request_once(port, "/leaks")[2])


def file_report(port: int, key: str) -> dict[str, Any]:
    """What the served file saw; the server closes it just after the client got the body."""
    deadline = time.monotonic() + 10
    while True:
        report: dict[str, Any] | None = json.loads(request_once(port, f"/file-report?key={key}")[2])
        if report is not None and "closed_in" in report:
            return report
        assert time.monotonic() < deadline, f"the file was not closed: {report}"
        time.sleep(0.05)


def test_concurrent_requests_each_see_only_their_own_id(server: Server) -> None:
    port = server.port
    run = uuid.uuid4().hex
    sids = [f"client-{i}-{uuid.uuid4().hex[:12]}" for i in range(REQUESTS)]

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        results = list(pool.map(lambda sid: request_once(port, f"/echo?run={run}", sid), sids))

    crossed = []
    for sid, (status, header, body) in zip(sids, results, strict=True):
        seen = json.loads(body)
        if status != 200 or header != sid or set(seen.values()) != {sid}:
            crossed.append((sid, status, header, seen))
    assert crossed == []
    assert leaks(port) == 0
    # The requests were in the app at the same time: each in a thread of its own,
    # or, under gevent, each in a greenlet of one thread, where the app's
    # time.sleep (monkey-patched) let the others run.
    overlaps = json.loads(request_once(port, f"/echo-report?run={run}")[2])
    assert overlaps["most_at_once"] > 1, overlaps
    if server.name in GREENLETS:
        assert len(overlaps["threads"]) == 1, overlaps
    else:
        assert len(overlaps["threads"]) > 1, overlaps


def test_a_request_without_the_header_gets_a_new_id_echoed(server: Server) -> None:
    status, header, body = request_once(server.port, "/echo")

    assert status == 200
    assert header is not None
    assert uuid.UUID(header).version == 4
    assert set(json.loads(body).values()) == {header}


def test_a_stream_read_slowly_keeps_its_id_for_every_chunk(server: Server) -> None:
    port = server.port
    sid = f"stream-{uuid.uuid4().hex[:12]}"
    conn = http.client.HTTPConnection(HOST, port, timeout=20)
    try:
        conn.request("GET", f"/stream?chunks={STREAM_CHUNKS}", headers={"X-Session-Id": sid})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("X-Session-Id") == sid
        heads = []
        others: list[tuple[str, tuple[int, str | None, bytes]]] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for i in range(STREAM_CHUNKS):
                chunk = response.read(wsgi_server.STREAM_CHUNK)
                assert len(chunk) == wsgi_server.STREAM_CHUNK
                heads.append(chunk.split(b"\n", 1)[0].decode())
                # Other sessions are served while this stream waits for its reader.
                batch = [f"between-{i}-{j}" for j in range(8)]
                others += zip(
                    batch,
                    pool.map(lambda other: request_once(port, "/echo", other), batch),
                    strict=True,
                )
                time.sleep(0.02)
        assert response.read() == b""
    finally:
        conn.close()

    assert heads == [f"{i} {sid}" for i in range(STREAM_CHUNKS)]
    assert [(other, header) for other, (_, header, _) in others] == [
        (other, other) for other, _ in others
    ]
    assert all(set(json.loads(body).values()) == {other} for other, (_, _, body) in others)
    assert leaks(port) == 0


def test_handle_errors_500_reaches_the_client_with_the_header(server: Server) -> None:
    status, header, body = request_once(server.port, "/boom", "err-session")

    assert status == 500
    assert header == "err-session"
    assert body == b"Internal Server Error"


def test_handle_errors_500_to_a_head_request_reaches_the_client_with_the_header(
    server: Server,
) -> None:
    """A HEAD response has no body to send the headers with: waitress and
    gevent's pywsgi send them on the first non-empty chunk (PEP 3333), and
    answered with a 500 of their own, without the header, when the exception
    came first."""
    assert request_once(server.port, "/boom", "head-session", method="HEAD") == (
        500,
        "head-session",
        b"",
    )


def test_the_servers_log_of_a_failed_request_carries_its_session_id(server: Server) -> None:
    # werkzeug writes the traceback as text from its except block, gunicorn
    # (either worker) and waitress log the exception; all once the request's
    # context is gone.
    if server.name in OUTSIDE_LOGGING:
        pytest.skip("prints the exception outside logging: see the test after this one")
    message = {
        "werkzeug": "werkzeug: Error on request",
        "gunicorn": "gunicorn.error: Error handling request",
        "gunicorn-gevent": "gunicorn.error: Error handling request",
        "waitress": "waitress: Exception while serving /boom",
    }[server.name]
    sids = [f"logged-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for sid in sids:
        assert request_once(server.port, "/boom", sid)[:2] == (500, sid)

    deadline = time.monotonic() + 10
    while True:
        logged = [line for line in server.error_log().splitlines() if message in line]
        if all(any(f"[{sid}]" in line for line in logged) for sid in sids):
            break
        assert time.monotonic() < deadline, server.error_log()
        time.sleep(0.05)
    assert not [line for line in logged if "[-]" in line]


#: Servers that report an application's exception outside Python's ``logging``,
#: where no filter can add the id: gevent's pywsgi hands it to the hub's
#: ``handle_error``, which prints the traceback and ``<environ> failed with
#: RuntimeError`` to stderr (the environ shown only by REMOTE_ADDR, REMOTE_PORT
#: and HTTP_HOST); uWSGI prints it with ``PyErr_Print()``.
OUTSIDE_LOGGING = {"pywsgi", "uwsgi"}


@pytest.mark.parametrize("server", sorted(OUTSIDE_LOGGING), indirect=True)
def test_a_server_that_reports_errors_outside_logging_reports_each_without_its_id(
    server: Server,
) -> None:
    """The 500 carries the id; the server's report of its exception does not.
    README says so: a log line with the id takes the app's own logging."""
    sids = [f"unlogged-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    tags = [f"tag-{uuid.uuid4().hex[:8]}" for _ in sids]
    for sid, tag in zip(sids, tags, strict=True):
        assert request_once(server.port, f"/boom?{tag}", sid)[:2] == (500, sid)

    deadline = time.monotonic() + 10
    while True:
        logged = server.error_log()
        reports = [
            line
            for line in logged.splitlines()
            for tag in tags
            if line == f"RuntimeError: failed before start_response ({tag})"
        ]
        if len(reports) >= len(tags):
            break
        assert time.monotonic() < deadline, logged
        time.sleep(0.05)
    assert sorted(reports) == sorted(
        f"RuntimeError: failed before start_response ({tag})" for tag in tags
    )
    assert [sid for sid in sids if sid in logged] == []


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/replaced", 503, b"replaced"),
        ("/replaced?expose", 503, b"replaced"),
        ("/replaced?own", 503, b"replaced"),
        ("/refused-first", 500, b"refused"),
    ],
)
def test_a_response_replaced_with_exc_info_carries_the_header_once(
    server: Server, path: str, status: int, body: bytes
) -> None:
    """gunicorn adds the headers of the second call to those it took from the first."""
    if server.name == "uwsgi":
        # uWSGI's start_response takes the replacement's status and headers, but
        # sets the exc_info exception again and returns with it set: the call
        # raises (a SystemError from it) in the app, whose body is never
        # returned, and uWSGI sends the headers with no body.
        body = b""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=20)
    try:
        conn.request("GET", path, headers={"X-Session-Id": "replaced-1"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (status, body)
        sent = [value for name, value in response.getheaders() if name.lower() == "x-session-id"]
    finally:
        conn.close()
    assert sent == ["replaced-1"]


def test_a_file_is_sent_zero_copy_and_closed_in_the_session(server: Server) -> None:
    key = uuid.uuid4().hex
    sid = f"file-{key[:12]}"

    status, header, body = request_once(server.port, f"/file?key={key}", sid)

    assert (status, header) == (200, sid)
    assert body == Path(wsgi_server.FILE_PATH).read_bytes()
    report = file_report(server.port, key)
    assert report["closed_in"] == sid
    if server.name in {"gunicorn", "uwsgi"}:
        # gunicorn recognised its own wsgi.file_wrapper and used sendfile();
        # uWSGI's wrapper returned the file itself, which the app returned as it
        # was (so did the middleware), and uWSGI used sendfile().
        assert report["reads"] == 0
    else:
        # werkzeug's server and pywsgi have no wsgi.file_wrapper, waitress's
        # reads the file into its buffers, and gunicorn's gevent worker, which
        # recognised its own, sends it with gevent's socket.sendfile(), which
        # reads and sends (os.sendfile() would block the other greenlets): the
        # file is read in Python.
        assert report["reads"] > 0
