"""The ASGI app that the reliability tests serve with uvicorn and hypercorn.

``app`` is ``Probe(SessionIdMiddleware(endpoints))``:

- ``endpoints`` is a raw ASGI app: ``/load`` reads the session id across awaits,
  a worker thread and a child task, logging each time (and reads the request
  body first when the query asks, ``r=1``); ``/fault/...`` fail in
  the ways the fault tests name;
- :class:`~sessionctx.asgi.SessionIdMiddleware` with its default options;
- :class:`Probe`, outermost, runs in the server's own context. It counts
  requests that arrive with a session already active (one left behind by an
  earlier request) or that leave with one, and answers ``/probe`` with those
  counts, so a test can ask the same worker whether a fault left anything.
"""

from __future__ import annotations

import json
import os
import random
import threading
from dataclasses import asdict
from urllib.parse import parse_qs

import anyio
import anyio.to_thread

from sessionctx import current_session_id
from sessionctx.asgi import SessionIdMiddleware
from tests.reliability.applog import configure_from_env, log_request, read_in_thread
from tests.reliability.probe import AppFault, ProbeState
from tests.support import ASGIApp, Receive, Scope, Send

__all__ = ["CANCEL_AFTER", "STREAM_CHUNK", "Probe", "app", "endpoints"]


SCOPE_KEY = "sessionctx.session_id"
#: Seconds after which the probe cancels a ``/fault/cancel`` request.
CANCEL_AFTER = 0.05
#: Large enough that a vanished client makes the server notice within a few chunks.
STREAM_CHUNK = b"x" * 65_536


async def _send_body(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Probe:
    """Outermost layer: watches the server's context around each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state = ProbeState(pid=os.getpid())

    def _check(self, seen: str | None, *, exit: bool) -> None:
        if seen is not None:
            if exit:
                self.state.dirty_exits += 1
            else:
                self.state.dirty_entries += 1
            self.state.last_dirty = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.state
        self._check(current_session_id(), exit=False)
        if scope["path"] == "/probe":
            await _send_body(send, 200, json.dumps(asdict(state)).encode())
            return None
        state.requests += 1
        state.in_flight += 1
        state.request_thread = threading.get_ident()
        try:
            if scope["path"] == "/fault/cancel":
                with anyio.move_on_after(CANCEL_AFTER):
                    await self.app(scope, receive, send)
                self._check(current_session_id(), exit=True)
                await _send_body(send, 504, b'{"cancelled": true}')
            else:
                await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1
            self._check(current_session_id(), exit=True)


async def _read_in_child(key: str, reads: list[str | None]) -> None:
    await anyio.sleep(0)
    log_request(key, "child")
    reads.append(current_session_id())


async def _load(scope: Scope, send: Send, key: str) -> None:
    reads = [current_session_id()]
    await anyio.sleep(random.random() / 500)
    reads.append(current_session_id())
    log_request(key, "loop")
    reads.append(await anyio.to_thread.run_sync(read_in_thread, key))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_read_in_child, key, reads)
    reads.append(current_session_id())
    body = json.dumps({"scope": scope[SCOPE_KEY], "reads": reads}).encode()
    await _send_body(send, 200, body)


async def _start_stream(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )


async def _stream_until_disconnect(receive: Receive, send: Send) -> None:
    await _start_stream(send)
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        # Bounded, for servers that drop writes after a disconnect without telling.
        for _ in range(1_000):
            await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
            await anyio.sleep(0.005)
        tg.cancel_scope.cancel()


async def _slow(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body as slowly as the client sends it, then stream back an id per chunk."""
    seen: list[str | None] = [current_session_id()]
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
        seen.append(current_session_id())
    await _start_stream(send)
    for sid in seen:
        await send({"type": "http.response.body", "body": f"{sid}\n".encode(), "more_body": True})
        await anyio.sleep(0.01)
        await send(
            {
                "type": "http.response.body",
                "body": f"{current_session_id()}\n".encode(),
                "more_body": True,
            }
        )
    await send({"type": "http.response.body", "body": b""})


async def endpoints(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the middleware."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/load":
        query = parse_qs(scope["query_string"].decode("latin-1"))
        if query.get("r") == ["1"]:
            while (await receive()).get("more_body", False):
                pass
        await _load(scope, send, query.get("k", ["-"])[0])
    elif path == "/fault/raise-before-start":
        raise AppFault("before the response started")
    elif path == "/fault/raise-after-start":
        await _start_stream(send)
        raise AppFault("after the response started")
    elif path == "/fault/stream-raises":
        await _start_stream(send)
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"chunk\n", "more_body": True})
            await anyio.sleep(0.001)
        raise AppFault("in the middle of the body")
    elif path == "/fault/client-disconnects":
        await _stream_until_disconnect(receive, send)
    elif path == "/fault/cancel":
        await anyio.sleep(60)
    elif path == "/fault/slow-client":
        await _slow(scope, receive, send)
    else:
        await _send_body(send, 404, b"{}")


configure_from_env()
app = Probe(SessionIdMiddleware(endpoints))
