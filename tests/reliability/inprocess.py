"""Drive the middlewares in-process, without a server or an event loop.

The apps used with these drivers never wait on anything, so one ``send(None)``
runs an ASGI call to the end in the caller's own context: whatever the
middleware leaves behind would be visible to the caller right away.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.support import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ASGIApp",
    "AsgiReply",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "WSGIApp",
    "WsgiReply",
    "call_asgi",
    "call_wsgi",
    "environ_key",
    "http_scope",
    "receive_request",
    "run_to_end",
    "wsgi_environ",
]

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass(frozen=True)
class AsgiReply:
    messages: list[Message]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        assert len(starts) == 1, f"expected one response start, got {self.messages}"
        return [(bytes(k), bytes(v)) for k, v in starts[0].get("headers", [])]

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


def http_scope(headers: Any = None, *, path: str = "/") -> dict[str, Any]:
    """An ``http`` scope; ``headers=None`` leaves the key out, as the spec allows."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    if headers is not None:
        scope["headers"] = headers
    return scope


def environ_key(name: str) -> str:
    """The WSGI ``environ`` key of request header ``name``."""
    return "HTTP_" + name.upper().replace("-", "_")


async def receive_request() -> Message:
    """An ASGI ``receive``: a request without a body."""
    return {"type": "http.request", "body": b"", "more_body": False}


def run_to_end(coroutine: Any) -> None:
    """Run an ASGI call that never waits on anything, in the current context."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the ASGI app waited on something; in-process apps must not")


def call_asgi(app: ASGIApp, scope: Scope) -> AsgiReply:
    """Run one request through ``app`` to completion in the current context."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    run_to_end(app(scope, receive_request, send))
    return AsgiReply(sent)


@dataclass(frozen=True)
class WsgiReply:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


def wsgi_environ(extra: dict[str, str] | None = None, *, path: str = "/") -> dict[str, Any]:
    """A complete WSGI environ (PEP 3333), plus ``extra`` keys."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    environ.update(extra or {})
    return environ


def call_wsgi(app: WSGIApp, environ: dict[str, Any]) -> WsgiReply:
    """Run one request through ``app``: call it, read the body, close it."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        started.append((status, headers))
        return lambda data: None

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    assert len(started) == 1, f"start_response was called {len(started)} times"
    status, headers = started[0]
    return WsgiReply(status, list(headers), data)
