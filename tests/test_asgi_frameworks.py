"""``SessionIdMiddleware`` under Starlette 1.x and FastAPI, in process.

Every behaviour is checked in both placements: outermost
(``app = SessionIdMiddleware(app)``) and inside Starlette's error handling
(``app.add_middleware(SessionIdMiddleware)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from typing import Annotated, Any

import pytest
from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi import Request as FastAPIRequest
from fastapi import WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sessionctx import SessionContext, current_session, current_session_id, session
from sessionctx.asgi import SessionIdMiddleware
from tests.support import ASGIApp, asgi_client, assert_session, is_generated

with warnings.catch_warnings():
    # Starlette 1.x warns at import that it would rather use ``httpx2``.
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.anyio

Placement = Callable[..., ASGIApp]

SCOPE_KEY = "sessionctx.session_id"
ORIGIN = "https://app.example.com"
CHUNKS = 5


def outermost(app: Starlette, **options: Any) -> ASGIApp:
    return SessionIdMiddleware(app, **options)


def added(app: Starlette, **options: Any) -> ASGIApp:
    app.add_middleware(SessionIdMiddleware, **options)
    return app


PLACEMENTS = [pytest.param(outermost, id="outermost"), pytest.param(added, id="add_middleware")]


INBOUND = [
    pytest.param({"X-Session-Id": "user-session-abc123"}, "user-session-abc123", id="continued"),
    pytest.param({"Mirascope-Session-Id": "m-1"}, "m-1", id="mirascope-header"),
    pytest.param({"X-Session-Id": "bad value"}, None, id="invalid-replaced"),
    pytest.param({}, None, id="generated"),
]


# --------------------------------------------------------------------------- #
# Starlette
# --------------------------------------------------------------------------- #


def starlette_app(background_seen: list[str | None] | None = None) -> Starlette:
    seen = background_seen if background_seen is not None else []

    async def async_endpoint(request: Request) -> Response:
        await asyncio.sleep(0)
        return JSONResponse({"sid": current_session_id(), "scope": request.scope[SCOPE_KEY]})

    def sync_endpoint(request: Request) -> Response:
        # Starlette runs plain ``def`` endpoints in its thread pool.
        return JSONResponse({"sid": current_session_id(), "scope": request.scope[SCOPE_KEY]})

    async def stream_async(request: Request) -> Response:
        async def chunks() -> AsyncIterator[str]:
            for _ in range(CHUNKS):
                await asyncio.sleep(0)
                yield f"{current_session_id()}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    def stream_sync(request: Request) -> Response:
        def chunks() -> Iterator[str]:
            for _ in range(CHUNKS):
                yield f"{current_session_id()}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def background(request: Request) -> Response:
        async def record_async() -> None:
            await asyncio.sleep(0)
            seen.append(current_session_id())

        def record_sync() -> None:
            seen.append(current_session_id())

        tasks = StarletteBackgroundTasks()
        tasks.add_task(record_async)
        tasks.add_task(record_sync)
        return PlainTextResponse("queued", background=tasks)

    async def error(request: Request) -> Response:
        raise RuntimeError("unhandled")

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(
            {"sid": current_session_id(), "scope": websocket.scope[SCOPE_KEY]}
        )
        await websocket.close()

    return Starlette(
        routes=[
            Route("/async", async_endpoint),
            Route("/sync", sync_endpoint),
            Route("/stream-async", stream_async),
            Route("/stream-sync", stream_sync),
            Route("/background", background),
            Route("/error", error),
            WebSocketRoute("/ws", websocket_endpoint),
        ]
    )


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("path", ["/async", "/sync"])
@pytest.mark.parametrize(("headers", "expected"), INBOUND)
async def test_starlette_endpoints_see_the_session(
    placement: Placement, path: str, headers: dict[str, str], expected: str | None
) -> None:
    async with asgi_client(placement(starlette_app())) as http:
        response = await http.get(path, headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert_session(body["sid"], expected)
    assert body["scope"] == body["sid"]
    assert response.headers.get_list("x-session-id") == [body["sid"]]


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("path", ["/stream-async", "/stream-sync"])
async def test_starlette_streaming_chunks_see_the_session(placement: Placement, path: str) -> None:
    async with asgi_client(placement(starlette_app())) as http:
        response = await http.get(path, headers={"X-Session-Id": "stream-1"})

    assert response.text.splitlines() == ["stream-1"] * CHUNKS
    assert response.headers["x-session-id"] == "stream-1"


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_starlette_streams_a_decorated_generator_with_a_block_open_across_chunks(
    placement: Placement,
) -> None:
    # Starlette steps a sync body in its thread pool, each chunk in a fresh
    # copy of the request's context: the block opens in one and exits in another.
    @session()
    def export() -> Iterator[str]:
        yield f"job:{current_session_id() != 'stream-1'}\n"
        with session("export-db"):
            for _ in range(CHUNKS):
                yield f"{current_session_id()}\n"
        yield f"job:{current_session_id() != 'stream-1'}\n"

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(export(), media_type="text/plain")

    app = Starlette(routes=[Route("/export", endpoint)])
    async with asgi_client(placement(app)) as http:
        response = await http.get("/export", headers={"X-Session-Id": "stream-1"})

    assert response.status_code == 200
    assert response.text.splitlines() == ["job:True", *["export-db"] * CHUNKS, "job:True"]
    assert response.headers["x-session-id"] == "stream-1"


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_starlette_background_tasks_see_the_session(placement: Placement) -> None:
    seen: list[str | None] = []

    async with asgi_client(placement(starlette_app(seen))) as http:
        response = await http.get("/background", headers={"X-Session-Id": "bg-1"})

    assert response.text == "queued"
    assert seen == ["bg-1", "bg-1"]


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_handled_http_errors_carry_the_header(placement: Placement) -> None:
    async with asgi_client(placement(starlette_app())) as http:
        response = await http.get("/no-such-route", headers={"X-Session-Id": "nf-1"})

    assert response.status_code == 404
    assert response.headers["x-session-id"] == "nf-1"


# Starlette 1.6 and FastAPI 0.164 put an app-wide body limit outside the
# add_middleware ones, as they do ServerErrorMiddleware. (Python 3.10 gets a
# Starlette that has it and a FastAPI that does not.)
_APP_BODY_LIMIT = {
    framework: "max_body_size" in inspect.signature(app_class.__init__).parameters
    for framework, app_class in (("starlette", Starlette), ("fastapi", FastAPI))
}


@pytest.mark.parametrize("options", [{}, {"handle_errors": True}], ids=["plain", "handle-errors"])
@pytest.mark.parametrize(
    "framework",
    [
        pytest.param(
            framework,
            marks=pytest.mark.skipif(
                not has_limit, reason=f"this {framework} has no app-wide body limit"
            ),
        )
        for framework, has_limit in _APP_BODY_LIMIT.items()
    ],
)
@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_the_app_body_limits_413(
    placement: Placement, framework: str, options: dict[str, Any]
) -> None:
    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    limits: dict[str, Any] = {"max_body_size": 10}
    app = Starlette(**limits) if framework == "starlette" else FastAPI(**limits)
    app.add_route("/upload", upload, methods=["POST"])
    async with asgi_client(placement(app, **options)) as http:
        small = await http.post("/upload", content=b"x" * 5, headers={"X-Session-Id": "lim-1"})
        large = await http.post("/upload", content=b"x" * 100, headers={"X-Session-Id": "lim-1"})

    assert (small.status_code, small.text) == (200, "5")
    assert small.headers.get_list("x-session-id") == ["lim-1"]
    assert large.status_code == 413
    # The limit's own 413 replaces the app's response outside the middleware
    # when it is added with add_middleware (see the README).
    expected = ["lim-1"] if placement is outermost else []
    assert large.headers.get_list("x-session-id") == expected


@pytest.mark.parametrize(
    ("placement", "options", "header"),
    [
        pytest.param(outermost, {}, "err-1", id="outermost"),
        pytest.param(outermost, {"handle_errors": True}, "err-1", id="outermost-handle-errors"),
        pytest.param(added, {"handle_errors": True}, "err-1", id="add_middleware-handle-errors"),
        # Inside Starlette's ServerErrorMiddleware the framework's 500 never
        # passes through the middleware: the documented reason for the option.
        pytest.param(added, {}, None, id="add_middleware-without-handle-errors"),
    ],
)
async def test_unhandled_exception_500(
    placement: Placement, options: dict[str, Any], header: str | None
) -> None:
    async with asgi_client(placement(starlette_app(), **options)) as http:
        response = await http.get("/error", headers={"X-Session-Id": "err-1"})

    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers.get_list("x-session-id") == ([header] if header else [])


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_starlette_websocket_sees_the_session(placement: Placement) -> None:
    with (
        TestClient(placement(starlette_app())) as test_client,
        test_client.websocket_connect("/ws", headers={"X-Session-Id": "ws-1"}) as websocket,
    ):
        assert websocket.receive_json() == {"sid": "ws-1", "scope": "ws-1"}
        assert (b"x-session-id", b"ws-1") in (websocket.extra_headers or [])
        # The app has ended before the client leaves: the old TestClient's
        # teardown could hang when the two crossed.
        assert websocket.receive()["type"] == "websocket.close"


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_websocket_without_a_session_is_closed_1008(placement: Placement) -> None:
    with (
        TestClient(placement(starlette_app(), on_missing="reject")) as test_client,
        pytest.raises(WebSocketDisconnect) as closed,
        test_client.websocket_connect("/ws"),
    ):
        pytest.fail("the handshake was accepted")

    assert closed.value.code == 1008
    assert closed.value.reason == "Missing X-Session-Id header"


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_http_reject_is_a_400_without_the_header(placement: Placement) -> None:
    async with asgi_client(placement(starlette_app(), on_invalid="reject")) as http:
        rejected = await http.get("/async", headers={"X-Session-Id": "bad value"})
        allowed = await http.get("/async", headers={"X-Session-Id": "good"})

    assert rejected.status_code == 400
    assert rejected.text == "Invalid X-Session-Id header"
    assert rejected.headers["content-type"] == "text/plain; charset=utf-8"
    assert "x-session-id" not in rejected.headers
    assert allowed.json()["sid"] == "good"


# --------------------------------------------------------------------------- #
# CORS
# --------------------------------------------------------------------------- #


def cors_app(placement: Placement, **options: Any) -> ASGIApp:
    cors: dict[str, Any] = {
        "allow_origins": [ORIGIN],
        "allow_headers": ["X-Session-Id"],
        "expose_headers": ["X-Request-Id"],
    }
    if placement is outermost:
        app = Starlette(
            routes=starlette_app().routes, middleware=[Middleware(CORSMiddleware, **cors)]
        )
        return outermost(app, expose_header=True, **options)
    app = starlette_app()
    # Added last = outermost of the two: it sees the headers CORS added.
    app.add_middleware(CORSMiddleware, **cors)
    return added(app, expose_header=True, **options)


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_cors_response_exposes_the_header(placement: Placement) -> None:
    async with asgi_client(cors_app(placement)) as http:
        response = await http.get("/async", headers={"Origin": ORIGIN, "X-Session-Id": "c-1"})

    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers.get_list("access-control-expose-headers") == [
        "X-Request-Id, x-session-id"
    ]
    assert response.headers["x-session-id"] == "c-1"


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_non_cors_response_gets_no_expose_header(placement: Placement) -> None:
    async with asgi_client(cors_app(placement)) as http:
        response = await http.get("/async", headers={"X-Session-Id": "c-1"})

    assert "access-control-expose-headers" not in response.headers
    assert response.headers["x-session-id"] == "c-1"


@pytest.mark.parametrize("options", [{}, {"on_missing": "reject"}], ids=["new", "reject"])
@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_cors_preflight_is_answered_and_carries_a_session_header(
    placement: Placement, options: dict[str, Any]
) -> None:
    # A browser names the custom header on the preflight, and never sends it.
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-Session-Id",
    }
    async with asgi_client(cors_app(placement, **options)) as http:
        response = await http.options("/async", headers=preflight)
        without_id = await http.get("/async", headers={"Origin": ORIGIN})
        with_id = await http.get("/async", headers={"Origin": ORIGIN, "X-Session-Id": "c-1"})

    assert response.status_code == 200
    assert "x-session-id" in response.headers["access-control-allow-headers"].lower()
    assert is_generated(response.headers["x-session-id"])
    assert without_id.status_code == (400 if options else 200)
    assert with_id.json()["sid"] == "c-1"


# --------------------------------------------------------------------------- #
# FastAPI
# --------------------------------------------------------------------------- #


def sync_session_id() -> str | None:
    """A plain ``def`` dependency: FastAPI runs it in its thread pool."""
    return current_session_id()


async def async_session_id() -> str | None:
    await asyncio.sleep(0)
    return current_session_id()


async def session_scope(request: FastAPIRequest) -> AsyncIterator[str | None]:
    """A ``yield`` dependency whose teardown also runs inside the session."""
    yield current_session_id()
    request.app.state.seen.append(("teardown", current_session_id()))


SyncId = Annotated["str | None", Depends(sync_session_id)]
AsyncId = Annotated["str | None", Depends(async_session_id)]
ScopedId = Annotated["str | None", Depends(session_scope)]


def fastapi_app() -> FastAPI:
    api = FastAPI()
    api.state.seen = []

    def remember(label: str) -> None:
        api.state.seen.append((label, current_session_id()))

    @api.get("/items")
    async def items(
        sync_id: SyncId, async_id: AsyncId, scoped_id: ScopedId, background: BackgroundTasks
    ) -> dict[str, str | None]:
        background.add_task(remember, "background")
        return {
            "handler": current_session_id(),
            "sync_dependency": sync_id,
            "async_dependency": async_id,
            "yield_dependency": scoped_id,
        }

    @api.get("/sync-items")
    def sync_items(sync_id: SyncId) -> dict[str, str | None]:
        return {"handler": current_session_id(), "sync_dependency": sync_id}

    @api.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for _ in range(CHUNKS):
                await asyncio.sleep(0)
                yield f"{current_session_id()}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @api.get("/error")
    async def error() -> None:
        raise RuntimeError("unhandled")

    @api.websocket("/ws")
    async def websocket_endpoint(websocket: FastAPIWebSocket, async_id: AsyncId) -> None:
        await websocket.accept()
        await websocket.send_json({"handler": current_session_id(), "dependency": async_id})
        await websocket.close()

    return api


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(("headers", "expected"), INBOUND)
async def test_fastapi_handler_dependencies_and_background_see_the_session(
    placement: Placement, headers: dict[str, str], expected: str | None
) -> None:
    api = fastapi_app()

    async with asgi_client(placement(api)) as http:
        response = await http.get("/items", headers=headers)

    body = response.json()
    sid = response.headers["x-session-id"]
    assert_session(sid, expected)
    assert body == {
        "handler": sid,
        "sync_dependency": sid,
        "async_dependency": sid,
        "yield_dependency": sid,
    }
    assert sorted(api.state.seen) == [("background", sid), ("teardown", sid)]


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_fastapi_sync_handler_sees_the_session(placement: Placement) -> None:
    async with asgi_client(placement(fastapi_app())) as http:
        response = await http.get("/sync-items", headers={"X-Session-Id": "sync-1"})

    assert response.json() == {"handler": "sync-1", "sync_dependency": "sync-1"}


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_fastapi_returns_the_session_context_as_its_declared_model(
    placement: Placement,
) -> None:
    # A SessionContext return type makes FastAPI validate and serialize the
    # result with pydantic, which must take the read-only attributes.
    api = FastAPI()

    @api.get("/typed")
    async def typed() -> SessionContext:
        ctx = current_session()
        assert ctx is not None
        return ctx

    @api.get("/model", response_model=SessionContext)
    async def model() -> Any:
        return current_session()

    def attributes(scope: MutableMapping[str, Any]) -> dict[str, Any]:
        return {"user": "u1", "roles": ["a", "b"], "meta": {"tier": 2, "flags": [{"x": True}]}}

    app = placement(api, attributes=attributes)
    async with asgi_client(app) as http:
        responses = [
            await http.get(path, headers={"X-Session-Id": "t-1"}) for path in ("/typed", "/model")
        ]

    expected_attributes = {
        "user": "u1",
        "roles": ["a", "b"],
        "meta": {"tier": 2, "flags": [{"x": True}]},
    }
    for response in responses:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "t-1"
        assert body["attributes"] == expected_attributes
        assert json.loads(body["attributes_json"]) == expected_attributes


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_fastapi_streaming_chunks_see_the_session(placement: Placement) -> None:
    async with asgi_client(placement(fastapi_app())) as http:
        response = await http.get("/stream", headers={"X-Session-Id": "fs-1"})

    assert response.text.splitlines() == ["fs-1"] * CHUNKS


@pytest.mark.parametrize(
    ("placement", "options", "header"),
    [
        pytest.param(outermost, {}, "e-1", id="outermost"),
        pytest.param(added, {"handle_errors": True}, "e-1", id="add_middleware-handle-errors"),
        pytest.param(added, {}, None, id="add_middleware-without-handle-errors"),
    ],
)
async def test_fastapi_unhandled_exception_500(
    placement: Placement, options: dict[str, Any], header: str | None
) -> None:
    async with asgi_client(placement(fastapi_app(), **options)) as http:
        response = await http.get("/error", headers={"X-Session-Id": "e-1"})

    assert response.status_code == 500
    assert response.headers.get_list("x-session-id") == ([header] if header else [])


class OutOfStock(Exception):
    """An application error with a handler of its own."""


def fastapi_app_with_error_handlers() -> FastAPI:
    """Handlers for a class of its own (run by ``ExceptionMiddleware``, inside the
    ``add_middleware`` ones) and for ``Exception`` (run by ``ServerErrorMiddleware``,
    outside them)."""
    api = FastAPI()

    @api.exception_handler(OutOfStock)
    async def out_of_stock(request: FastAPIRequest, exc: OutOfStock) -> JSONResponse:
        return JSONResponse(
            {"sid": current_session_id(), "scope": request.scope.get(SCOPE_KEY)}, status_code=409
        )

    @api.exception_handler(Exception)
    async def any_error(request: FastAPIRequest, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"sid": current_session_id(), "scope": request.scope.get(SCOPE_KEY)}, status_code=500
        )

    @api.get("/out-of-stock")
    async def sold_out() -> None:
        raise OutOfStock

    @api.get("/error")
    async def error() -> None:
        raise RuntimeError("unhandled")

    return api


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_fastapi_handler_of_an_exception_class_sees_the_session(placement: Placement) -> None:
    async with asgi_client(placement(fastapi_app_with_error_handlers())) as http:
        response = await http.get("/out-of-stock", headers={"X-Session-Id": "h-1"})

    assert response.status_code == 409
    assert response.json() == {"sid": "h-1", "scope": "h-1"}
    assert response.headers.get_list("x-session-id") == ["h-1"]


@pytest.mark.parametrize(
    ("placement", "options", "header", "body"),
    [
        # Outermost, ServerErrorMiddleware and its handler run inside the middleware.
        pytest.param(outermost, {}, "h-2", {"sid": "h-2", "scope": "h-2"}, id="outermost"),
        # Added, the handler runs after the middleware returned: the session is
        # gone (the scope key stays), and the handler's response has no header.
        pytest.param(added, {}, None, {"sid": None, "scope": "h-2"}, id="add_middleware"),
        # With handle_errors the middleware's plain 500 is sent first, and
        # Starlette drops the handler's response: a response has started.
        pytest.param(
            added, {"handle_errors": True}, "h-2", None, id="add_middleware-handle-errors"
        ),
    ],
)
async def test_fastapi_handler_of_exception_runs_outside_added_middleware(
    placement: Placement,
    options: dict[str, Any],
    header: str | None,
    body: dict[str, str | None] | None,
) -> None:
    async with asgi_client(placement(fastapi_app_with_error_handlers(), **options)) as http:
        response = await http.get("/error", headers={"X-Session-Id": "h-2"})

    assert response.status_code == 500
    assert response.headers.get_list("x-session-id") == ([header] if header else [])
    if body is None:
        assert response.text == "Internal Server Error"
    else:
        assert response.json() == body


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_fastapi_websocket_sees_the_session(placement: Placement) -> None:
    with (
        TestClient(placement(fastapi_app())) as test_client,
        test_client.websocket_connect("/ws", headers={"X-Session-Id": "fws-1"}) as websocket,
    ):
        assert websocket.receive_json() == {"handler": "fws-1", "dependency": "fws-1"}
        assert (b"x-session-id", b"fws-1") in (websocket.extra_headers or [])
        assert websocket.receive()["type"] == "websocket.close"  # as in the Starlette test


async def test_lifespan_passes_through_to_the_app() -> None:
    events: list[tuple[str, str | None]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append(("startup", current_session_id()))
        yield
        events.append(("shutdown", current_session_id()))

    app = SessionIdMiddleware(FastAPI(lifespan=lifespan))
    sent: list[MutableMapping[str, Any]] = []
    inbound = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> MutableMapping[str, Any]:
        return next(inbound)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await app(scope, receive, send)

    assert events == [("startup", None), ("shutdown", None)]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert SCOPE_KEY not in scope
