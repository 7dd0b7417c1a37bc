"""Starlette with ``SessionIdMiddleware`` in the app's middleware list.

Placed this way the middleware sits inside Starlette's error handling, so an
exception would reach Starlette's 500 before the session header is added;
``handle_errors=True`` makes the middleware send its own plain 500 carrying the
header instead. (Wrapping the app, ``app = SessionIdMiddleware(Starlette(...))``,
needs no such option: see ``fastapi_app.py``.) Run it from the repository root::

    .venv/bin/uvicorn examples.starlette_app:app --port 8000
    curl -i http://127.0.0.1:8000/whoami
    curl -i http://127.0.0.1:8000/boom
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionctx import current_session_id
from sessionctx.asgi import SessionIdMiddleware


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"session_id": current_session_id()})


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("this handler always fails; the 500 still carries X-Session-Id")


app = Starlette(
    routes=[Route("/whoami", whoami), Route("/boom", boom)],
    middleware=[Middleware(SessionIdMiddleware, handle_errors=True)],
)
