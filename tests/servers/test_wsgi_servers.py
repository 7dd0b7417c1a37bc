"""``sessionctx.wsgi.SessionIdMiddleware`` on real servers: werkzeug's threaded
``make_server`` (in a thread), gunicorn's ``gthread`` worker and waitress (each
a subprocess), all on 127.0.0.1.

The app is :mod:`tests.servers.wsgi_server`. Every server is stopped when its
fixture ends, whatever the tests did.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", "tests.servers.wsgi_server:app"),
        *("--bind", f"{HOST}:{port}", "--worker-class", "gthread", "--workers", "1"),
        *("--threads", "8", "--graceful-timeout", "2", "--log-level", "warning"),
        *("--config", "python:tests.servers.server_logging"),
    ]
    output = tmp_path_factory.mktemp("gunicorn") / "gunicorn.out"
    with server_process(command, port, output):
        yield Server("gunicorn", port, lambda: output.read_text(errors="replace"))


@pytest.fixture(scope="module")
def waitress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "tests.servers.waitress_server", str(port)]
    output = tmp_path_factory.mktemp("waitress") / "waitress.out"
    with server_process(command, port, output):
        yield Server("waitress", port, lambda: output.read_text(errors="replace"))


@pytest.fixture(params=["werkzeug", "gunicorn", "waitress"])
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
    sids = [f"client-{i}-{uuid.uuid4().hex[:12]}" for i in range(REQUESTS)]

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        results = list(pool.map(lambda sid: request_once(port, "/echo", sid), sids))

    crossed = []
    for sid, (status, header, body) in zip(sids, results, strict=True):
        seen = json.loads(body)
        if status != 200 or header != sid or set(seen.values()) != {sid}:
            crossed.append((sid, status, header, seen))
    assert crossed == []
    assert leaks(port) == 0


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
    """A HEAD response has no body to send the headers with: waitress sends
    them on the first non-empty chunk (PEP 3333), and answered with a 500 of its
    own, without the header, when the exception came first."""
    assert request_once(server.port, "/boom", "head-session", method="HEAD") == (
        500,
        "head-session",
        b"",
    )


def test_the_servers_log_of_a_failed_request_carries_its_session_id(server: Server) -> None:
    # werkzeug writes the traceback as text from its except block, gunicorn
    # and waitress log the exception; all once the request's context is gone.
    message = {
        "werkzeug": "werkzeug: Error on request",
        "gunicorn": "gunicorn.error: Error handling request",
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
    if server.name == "gunicorn":
        # gunicorn recognised its own wsgi.file_wrapper and used sendfile().
        assert report["reads"] == 0
    else:
        # werkzeug's server has no wsgi.file_wrapper, waitress's reads the file
        # into its buffers: the file is read in Python.
        assert report["reads"] > 0
