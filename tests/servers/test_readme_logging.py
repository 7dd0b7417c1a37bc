"""The README's logging configuration puts the request's id on the servers' own
error lines, with the servers started as the README says (real processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import HOST, free_port, readme_logging, request_once, server_process

pytestmark = pytest.mark.server

APP = "tests.servers.readme_logging_app"
# uvicorn started in the same script after the application configured logging.
UVICORN_RUN = (
    "import sys, uvicorn; from {app} import app; "
    "uvicorn.run(app, host='{host}', port=int(sys.argv[1]), log_config=None)"
)

SERVERS = [
    pytest.param(
        lambda port: [
            sys.executable,
            "-m",
            "uvicorn",
            f"{APP}:app",
            "--host",
            HOST,
            f"--port={port}",
        ],
        "ERROR [{sid}] uvicorn.error: Exception in ASGI application",
        True,
        id="uvicorn-main:app",
    ),
    pytest.param(
        lambda port: [sys.executable, "-c", UVICORN_RUN.format(app=APP, host=HOST), port],
        "ERROR [{sid}] uvicorn.error: Exception in ASGI application",
        True,
        id="uvicorn.run(app)-log_config=None",
    ),
    pytest.param(
        lambda port: [
            *(sys.executable, "-m", "gunicorn", f"{APP}:wsgi_app", "--bind", f"{HOST}:{port}"),
            *("--workers", "1", "--graceful-timeout", "2"),
        ],
        # (gunicorn before 22 leaves the method out)
        "ERROR [{sid}] gunicorn.error: Error handling request ",
        False,
        id="gunicorn",
    ),
]


def test_the_readme_configures_the_servers_loggers() -> None:
    for logger in ('"uvicorn.error"', '"gunicorn.error"'):
        assert logger in readme_logging()


@pytest.mark.parametrize(("command", "line", "echoed"), SERVERS)
def test_the_servers_error_line_shows_the_failed_requests_id(
    command: object, line: str, echoed: bool, tmp_path: Path
) -> None:
    port = free_port()
    output = tmp_path / "server.out"
    argv = command(str(port))  # type: ignore[operator]
    with server_process(argv, port, output):
        assert request_once(port, "/", "sess-ok")[:2] == (200, "sess-ok")
        for sid in ("sess-fail-1", "sess-fail-2"):
            assert request_once(port, "/fail", sid)[:2] == (500, sid if echoed else None)
    logged = output.read_text(errors="replace")
    for sid in ("sess-fail-1", "sess-fail-2"):
        assert line.format(sid=sid) in logged, logged


def test_uvicorns_log_level_and_access_log_flags_still_apply(tmp_path: Path) -> None:
    """The README's entries replace the error logger's handlers only."""
    port = free_port()
    output = tmp_path / "server.out"
    argv = [sys.executable, "-m", "uvicorn", f"{APP}:app", "--host", HOST, f"--port={port}"]
    with server_process([*argv, "--log-level", "warning", "--no-access-log"], port, output):
        assert request_once(port, "/", "sess-ok")[:2] == (200, "sess-ok")
        assert request_once(port, "/fail", "sess-fail")[:2] == (500, "sess-fail")
    logged = output.read_text(errors="replace")
    assert "ERROR [sess-fail] uvicorn.error: Exception in ASGI application" in logged, logged
    assert "Application startup complete" not in logged, logged  # an INFO line
    assert "GET / HTTP/1.1" not in logged, logged  # an access line
