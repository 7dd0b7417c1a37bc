"""Run an ASGI app on uvicorn and a WSGI app on werkzeug, each in a thread on 127.0.0.1.

Both context managers pick a free port, yield the base URL once the server accepts
connections, and stop the server when the block exits, also on error.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import uvicorn
from werkzeug.serving import make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from sessionctx.asgi import ASGIApp

__all__ = ["HOST", "quiet_expected_errors", "serve_asgi", "serve_wsgi"]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@contextmanager
def serve_asgi(app: ASGIApp, name: str = "asgi-server") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yield ``http://127.0.0.1:<port>``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start on {HOST}:{port}")
                time.sleep(0.02)
            yield f"http://{HOST}:{port}"
        finally:
            server.should_exit = True
            thread.join(STOP_TIMEOUT)
    finally:
        sock.close()


@contextmanager
def serve_wsgi(app: WSGIApplication, name: str = "wsgi-server") -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server in a thread; yield its base URL."""
    # Werkzeug logs every request at INFO; the demo shows its own lines instead.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(STOP_TIMEOUT)
        server.server_close()


class _DropExpected(logging.Filter):
    def __init__(self, expected: type[BaseException]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], self.expected))


@contextmanager
def quiet_expected_errors(expected: type[BaseException]) -> Iterator[None]:
    """Keep uvicorn from printing the traceback of an error raised on purpose.

    Any other error is still logged.
    """
    logger = logging.getLogger("uvicorn.error")
    drop = _DropExpected(expected)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
