"""Run an ASGI app on a real server (uvicorn or hypercorn) on 127.0.0.1.

``"hypercorn-trio"`` is hypercorn's trio worker, for apps that run on trio
(no asyncio calls: anyio's work on both).

Each server runs its own event loop in a background thread of the test
process, so a test can look at what the app recorded. ``serving`` always
stops the server and joins its thread, with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import anyio
import uvicorn
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from tests.support import HOST, ASGIApp, free_port, wait_until_listening

SERVERS = ("uvicorn", "hypercorn")
# uvicorn's own WebSocket protocol on the websockets library's sans-I/O API
# (uvicorn >= 0.35); before it, the one on the library's legacy API.
WEBSOCKETS = (
    "websockets-sansio" if "websockets-sansio" in uvicorn.config.WS_PROTOCOLS else "websockets"
)
STARTUP_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 10.0


@contextlib.contextmanager
def serving(server: str, app: ASGIApp, **uvicorn_options: Any) -> Iterator[str]:
    """Serve ``app`` with ``server`` on a free port; yield ``"127.0.0.1:port"``."""
    port = free_port()
    if server == "uvicorn":
        runner = _uvicorn(app, port, **uvicorn_options)
    elif server == "hypercorn":
        runner = _hypercorn(app, port)
    elif server == "hypercorn-trio":
        runner = _hypercorn(app, port, trio=True)
    else:
        raise ValueError(f"unknown server: {server!r}")
    with runner:
        wait_until_listening(port, timeout=STARTUP_TIMEOUT)
        yield f"{HOST}:{port}"


@contextlib.contextmanager
def _uvicorn(app: ASGIApp, port: int, **options: Any) -> Iterator[None]:
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        lifespan="on",
        ws=WEBSOCKETS,
        log_level="warning",
        timeout_graceful_shutdown=2,
        **options,
    )
    server = uvicorn.Server(config)
    # Off the main thread uvicorn installs no signal handlers.
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"uvicorn on port {port} did not stop")


@contextlib.contextmanager
def _hypercorn(app: ASGIApp, port: int, trio: bool = False) -> Iterator[None]:
    config = HypercornConfig()
    config.bind = [f"{HOST}:{port}"]
    config.loglevel = "WARNING"
    # A logger rather than a stream: a test can add a handler to it.
    config.errorlog = logging.getLogger("hypercorn.error")
    # It logs an access line only at INFO, which a test can turn on.
    config.accesslog = logging.getLogger("hypercorn.access")
    config.graceful_timeout = 2
    stop = threading.Event()

    async def until_stopped() -> None:
        while not stop.is_set():
            await anyio.sleep(0.05)

    # Hypercorn types apps with its own TypedDict scopes and events.
    framework: Any = app
    options: dict[str, Any] = {"shutdown_trigger": until_stopped, "mode": "asgi"}

    def run() -> None:
        if trio:
            import trio as trio_module
            from hypercorn.trio import serve as hypercorn_trio_serve

            served = partial(hypercorn_trio_serve, _answering_lifespan(framework), config)
            trio_module.run(partial(served, **options))
            return
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(hypercorn_serve(framework, config, **options))
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"hypercorn-{port}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"hypercorn on port {port} did not stop")


def _answering_lifespan(app: Any) -> Any:
    """``app`` with the lifespan scope answered here: hypercorn's trio worker
    does not start when an app returns from it without a word, as a test's
    plain HTTP app does."""

    async def lifespan_answered(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    return lifespan_answered
