"""FastAPI with ``SessionIdMiddleware`` wrapping the whole app.

Wrapped outermost, the middleware sees every response, FastAPI's own 500 included,
so the ``X-Session-Id`` header is always there. Both kinds of endpoint see the
session: ``async def`` ones run in the request's task, and FastAPI runs ``def`` ones
in its thread pool in a copy of the request's context. Run it from the repository
root, then call it with and without a session header::

    .venv/bin/uvicorn examples.fastapi_app:app --port 8000
    curl -i http://127.0.0.1:8000/whoami
    curl -i -H 'X-Session-Id: my-session' http://127.0.0.1:8000/whoami-sync
"""

from __future__ import annotations

from fastapi import FastAPI

from sessionctx import current_session_id
from sessionctx.asgi import SessionIdMiddleware

api = FastAPI(title="sessionctx FastAPI example")


@api.get("/whoami")
async def whoami() -> dict[str, str | None]:
    return {"session_id": current_session_id()}


@api.get("/whoami-sync")
def whoami_sync() -> dict[str, str | None]:
    return {"session_id": current_session_id()}


app = SessionIdMiddleware(api)
