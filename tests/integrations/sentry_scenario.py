"""The README's Sentry recipe with a real sentry-sdk, in a process of its own.

Sentry's integrations patch Starlette, FastAPI, Flask and even the middleware
class for the whole process, so ``tests/integrations/test_sentry.py`` runs
this module with ``python -m``, one placement per process. It sends
``REQUESTS`` requests, each with an id of its own, half of them to a handler
that fails, and prints JSON: for each request the id it sent, the status and
the session headers of the response; and for each event Sentry would have
sent (kept in memory: nothing leaves the process), its ``session_id`` tag and
the exception's message, which names the id the handler saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import sentry_sdk
from sentry_sdk.transport import Transport

from sessionctx import current_session_id, session_id_of
from tests.support import HOST, serving_in_thread

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from sentry_sdk.envelope import Envelope
    from starlette.types import ASGIApp

REQUESTS = 20
ASGI_PLACEMENTS = ("asgi-outermost", "asgi-add-middleware", "asgi-add-middleware-handle-errors")
WSGI_PLACEMENTS = ("flask-wsgi-app", "wsgi-sentry-outside")

_events: list[dict[str, Any]] = []
_lock = threading.Lock()


class MemoryTransport(Transport):
    """Keeps the events Sentry would send."""

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                with _lock:
                    _events.append(item.payload.json)


# The README's recipe.
def before_send(event: Any, hint: Any) -> Any:
    sid = current_session_id()
    if sid is None and "exc_info" in hint:
        # Sentry captured the error after SessionIdMiddleware had returned.
        sid = session_id_of(hint["exc_info"][1])
    if sid is not None:
        event.setdefault("tags", {})["session_id"] = sid
    return event


def asgi_app(placement: str) -> ASGIApp:
    from fastapi import FastAPI

    from sessionctx.asgi import SessionIdMiddleware

    api = FastAPI()

    @api.get("/boom")
    async def boom() -> None:
        await asyncio.sleep(0.001)  # the requests interleave
        raise RuntimeError(f"boom in {current_session_id()}")

    @api.get("/ok")
    async def ok() -> dict[str, str | None]:
        return {"session": current_session_id()}

    if placement == "asgi-outermost":
        return SessionIdMiddleware(api)
    handle_errors = placement == "asgi-add-middleware-handle-errors"
    api.add_middleware(SessionIdMiddleware, handle_errors=handle_errors)
    return api


def wsgi_app(placement: str) -> WSGIApplication:
    from sessionctx.wsgi import SessionIdMiddleware

    if placement == "flask-wsgi-app":
        from flask import Flask

        flask_app = Flask(__name__)

        @flask_app.get("/boom")
        def flask_boom() -> str:
            raise RuntimeError(f"boom in {current_session_id()}")

        @flask_app.get("/ok")
        def flask_ok() -> str:
            return f"{current_session_id()}"

        flask_app.wsgi_app = SessionIdMiddleware(flask_app.wsgi_app)  # type: ignore[method-assign]
        return flask_app

    from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

    def plain(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError(f"boom in {current_session_id()}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{current_session_id()}".encode()]

    return SentryWsgiMiddleware(SessionIdMiddleware(plain, handle_errors=True))


def request_ids() -> list[tuple[str, str]]:
    """(id sent, path): every other request fails."""
    return [(f"sess-{i:02}", "/boom" if i % 2 == 0 else "/ok") for i in range(REQUESTS)]


def response_of(sid: str, response: httpx.Response) -> dict[str, Any]:
    return {
        "sent": sid,
        "status": response.status_code,
        "headers": response.headers.get_list("x-session-id"),
    }


async def send_asgi(app: ASGIApp) -> list[dict[str, Any]]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

        async def one(sid: str, path: str) -> dict[str, Any]:
            return response_of(sid, await client.get(path, headers={"X-Session-Id": sid}))

        return list(await asyncio.gather(*(one(sid, path) for sid, path in request_ids())))


def send_wsgi(app: WSGIApplication) -> list[dict[str, Any]]:
    """Through werkzeug's threaded server on 127.0.0.1, as a server logs the
    error that the body raises after the 500 it started."""
    from werkzeug.serving import make_server

    server = make_server(HOST, 0, app, threaded=True)
    with serving_in_thread(server) as port:

        def one(pair: tuple[str, str]) -> dict[str, Any]:
            sid, path = pair
            with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as client:
                return response_of(sid, client.get(path, headers={"X-Session-Id": sid}))

        with ThreadPoolExecutor(max_workers=4) as pool:
            responses = list(pool.map(one, request_ids()))
        # The server raises the error of a response already sent, and Sentry
        # captures it, after the client has its 500.
        failed = sum(path == "/boom" for _, path in request_ids())
        deadline = time.monotonic() + 10
        while sum("exception" in event for event in _events) < failed:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return responses


def main(placement: str) -> None:
    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",  # never contacted: the transport keeps events
        transport=MemoryTransport,
        before_send=before_send,
    )
    if placement in ASGI_PLACEMENTS:
        responses = asyncio.run(send_asgi(asgi_app(placement)))
    else:
        responses = send_wsgi(wsgi_app(placement))
    sentry_sdk.flush(timeout=10)
    # Error events only: Sentry 2's logging integration also makes one of
    # werkzeug's "Error on request" line, a record with no exception.
    events = [
        {
            "tag": (event.get("tags") or {}).get("session_id"),
            "message": event["exception"]["values"][-1]["value"],
        }
        for event in _events
        if "exception" in event
    ]
    print(json.dumps({"version": sentry_sdk.VERSION, "responses": responses, "events": events}))


if __name__ == "__main__":
    main(sys.argv[1])
