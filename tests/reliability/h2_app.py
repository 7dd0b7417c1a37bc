"""The app the HTTP/2 tests serve with hypercorn (h2c, prior knowledge).

``app`` is ``Outer(SessionIdMiddleware(endpoints))``:

- ``endpoints`` is a Starlette app: ``/read`` reads the session id across
  awaits of random length, in a child task and in a worker thread;
  ``/stream`` streams chunks, each naming the id it was made in, with awaits
  between them; ``/upload`` reads a body that arrives in several ``DATA``
  frames, one ``receive()`` at a time; ``/push`` promises a pushed ``/read``
  first (HTTP/2 server push). Each logs through ``SessionIdFilter`` (see
  :mod:`tests.reliability.applog`) with the request's ``x-key`` header.
- :class:`~sessionctx.asgi.SessionIdMiddleware` with its default options;
- :class:`Outer`, outermost, runs in the server's own context. It logs a line
  as each request arrives and as it leaves (outside any session: ``-``), and
  counts requests that arrive or leave with a session active, which
  ``/probe`` reports.

Served with ``-c python:tests.reliability.h2_app.HypercornSettings``, hypercorn
writes its access lines through ``SessionIdFilter`` to ``<pid>.access`` in
the log directory, one ``<session id> req=<x-key> where=access`` line each.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sessionctx import current_session_id
from sessionctx.asgi import SessionIdMiddleware
from tests.reliability.applog import configure_from_env, log_request, log_to_file, read_in_thread
from tests.support import ASGIApp, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "HypercornSettings", "Outer", "app", "endpoints"]

SCOPE_KEY = "sessionctx.session_id"
#: hypercorn's access logger, given to it as a logger (see :class:`HypercornSettings`).
ACCESS_LOGGER = logging.getLogger("sessionctx.reliability.h2.access")


def _key(scope: Scope) -> str:
    """The request's ``x-key`` header; for a pushed request, ``<the pusher's key>.pushed``."""
    for name, value in scope.get("headers") or ():
        if name == b"x-key":
            return str(value.decode("latin-1"))
    pushed_by = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("pushed-by")
    return f"{pushed_by[0]}.pushed" if pushed_by else "-"


def _pause() -> float:
    """A random await of up to 4 ms: other streams' handlers run meanwhile."""
    return random.random() / 250


async def _read_in_child(key: str, reads: list[str | None]) -> None:
    await anyio.sleep(_pause())
    log_request(key, "child")
    reads.append(current_session_id())


async def read(request: Request) -> Response:
    key = _key(request.scope)
    reads = [current_session_id()]
    # A fixed wait first, when asked: the response starts that much later.
    await anyio.sleep(float(request.query_params.get("pause", "0")))
    for _ in range(3):
        await anyio.sleep(_pause())
        reads.append(current_session_id())
    log_request(key, "handler")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_read_in_child, key, reads)
    reads.append(await anyio.to_thread.run_sync(read_in_thread, key))
    reads.append(current_session_id())
    return JSONResponse({"scope": request.scope[SCOPE_KEY], "reads": reads})


async def stream(request: Request) -> Response:
    key = _key(request.scope)
    chunks = int(request.query_params.get("n", "4"))
    pause = float(request.query_params.get("pause", "0"))

    async def body() -> Any:
        for i in range(chunks):
            await anyio.sleep(pause or _pause())
            yield f"{i} {current_session_id()}\n".encode()
        log_request(key, "stream")

    return StreamingResponse(body(), media_type="text/plain")


async def upload(request: Request) -> Response:
    key = _key(request.scope)
    reads = [current_session_id()]
    size = parts = 0
    try:
        async for part in request.stream():
            if part:
                parts += 1
                size += len(part)
            reads.append(current_session_id())
    except ClientDisconnect:
        # The client reset the stream partway: nobody reads an answer.
        log_request(key, "upload-reset")
        return Response(status_code=499)
    log_request(key, "upload")
    return JSONResponse(
        {"scope": request.scope[SCOPE_KEY], "reads": reads, "size": size, "parts": parts}
    )


async def push(request: Request) -> Response:
    key = _key(request.scope)
    await request.send_push_promise(f"/read?pushed-by={key}")
    await anyio.sleep(_pause())
    log_request(key, "push")
    return JSONResponse({"scope": request.scope[SCOPE_KEY], "reads": [current_session_id()]})


endpoints = Starlette(
    routes=[
        Route("/read", read),
        Route("/stream", stream),
        Route("/upload", upload, methods=["POST"]),
        Route("/push", push),
    ]
)


class Outer:
    """Outermost layer: watches the server's context around each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0
        self.in_flight = 0
        #: The most requests in the app at once.
        self.peak_in_flight = 0
        #: ``(path, x-key, the session id seen)`` of requests that arrived with a session.
        self.dirty_entries: list[tuple[str, str, str]] = []
        #: The same, for requests that left one behind.
        self.dirty_exits: list[tuple[str, str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        key = _key(scope)
        seen = current_session_id()
        if seen is not None:
            self.dirty_entries.append((scope["path"], key, seen))
        if scope["path"] == "/probe":
            return await self._report(send)
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        log_request(key, "outer-in")
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            seen = current_session_id()
            if seen is not None:
                self.dirty_exits.append((scope["path"], key, seen))
            log_request(key, "outer-out")

    async def _report(self, send: Send) -> None:
        body = json.dumps(
            {
                "pid": os.getpid(),
                "requests": self.requests,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "dirty_entries": self.dirty_entries[:20],
                "dirty_entry_count": len(self.dirty_entries),
                "dirty_exits": self.dirty_exits[:20],
                "dirty_exit_count": len(self.dirty_exits),
                "threads": threading.active_count(),
            }
        ).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _access_logger() -> logging.Logger:
    """hypercorn's access logger: lines through ``SessionIdFilter`` to ``<pid>.access``."""
    ACCESS_LOGGER.setLevel(logging.INFO)
    ACCESS_LOGGER.propagate = False
    log_to_file(ACCESS_LOGGER, "access")
    return ACCESS_LOGGER


class HypercornSettings:
    """hypercorn's configuration (``-c python:tests.reliability.h2_app.HypercornSettings``)."""

    #: Room for the tests' streams on one connection (hypercorn's default is 100).
    h2_max_concurrent_streams = 512
    #: hypercorn ends a connection (GOAWAY) after this many requests: the tests
    #: send every request of a run on a few connections.
    keep_alive_max_requests = 1_000_000
    graceful_timeout = 2
    loglevel = "WARNING"
    access_log_format = "req=%({x-key}i)s where=access"
    accesslog = _access_logger()


configure_from_env()
app = Outer(SessionIdMiddleware(endpoints))
