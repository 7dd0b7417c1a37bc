"""Start the reliability apps on real servers, as subprocesses on 127.0.0.1.

Each server gets a free port and its own log directory; it is stopped (SIGTERM,
then SIGKILL) when the ``with`` block ends, whatever happens inside it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.applog import LOG_DIR_ENV
from tests.support import HOST, free_port, server_process

__all__ = [
    "ASGI_FAULT_SERVERS",
    "H2_WORKER_CLASSES",
    "LOAD_SERVERS",
    "WSGI_FAULT_SERVERS",
    "RunningServer",
    "ServerCommand",
    "ServerSetup",
    "hypercorn_h2",
    "serve",
    "server_pool",
]

ASGI_APP = "tests.reliability.asgi_app:app"
WSGI_APP = "tests.reliability.wsgi_app:app"

ServerCommand = Callable[[int], list[str]]


def uvicorn(port: int) -> list[str]:
    return [
        *("-m", "uvicorn", ASGI_APP, "--host", HOST, "--port", str(port)),
        *("--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2"),
    ]


def hypercorn(port: int) -> list[str]:
    # --workers 0 serves from this process instead of a spawned child, so
    # stopping the process stops the server.
    return [
        *("-m", "hypercorn", ASGI_APP, "--bind", f"{HOST}:{port}", "--workers", "0"),
        *("--graceful-timeout", "2", "--log-level", "warning"),
    ]


H2_APP = "tests.reliability.h2_app:app"
#: hypercorn's worker classes the HTTP/2 tests run, each with the module it needs.
H2_WORKER_CLASSES: dict[str, str | None] = {"asyncio": None, "uvloop": "uvloop", "trio": "trio"}


def hypercorn_h2(worker_class: str) -> ServerCommand:
    """hypercorn serving :data:`H2_APP` with ``worker_class``; cleartext HTTP/2
    needs no flag (a client with prior knowledge opens it with the preface)."""

    def command(port: int) -> list[str]:
        return [
            *("-m", "hypercorn", H2_APP, "--bind", f"{HOST}:{port}", "--workers", "0"),
            *("--worker-class", worker_class),
            *("-c", "python:tests.reliability.h2_app.HypercornSettings"),
        ]

    return command


def gunicorn_gthread(port: int) -> list[str]:
    return [
        *("-m", "gunicorn", WSGI_APP, "--bind", f"{HOST}:{port}", "--worker-class", "gthread"),
        *("--workers", "2", "--threads", "16", "--graceful-timeout", "2"),
    ]


def gunicorn_gevent(port: int) -> list[str]:
    # One thread per worker, a greenlet per connection; the standard library
    # (threads and locks of the app's executor too) monkey-patched.
    return [
        *("-m", "gunicorn", WSGI_APP, "--bind", f"{HOST}:{port}", "--worker-class", "gevent"),
        *("--workers", "2", "--graceful-timeout", "2"),
    ]


def gunicorn_single_thread(port: int) -> list[str]:
    # One worker with one thread: the request after a fault runs on the same thread.
    return [
        *("-m", "gunicorn", WSGI_APP, "--bind", f"{HOST}:{port}", "--worker-class", "gthread"),
        *("--workers", "1", "--threads", "1", "--graceful-timeout", "2"),
    ]


def werkzeug_threaded(port: int) -> list[str]:
    return ["-m", "tests.reliability.wsgi_app", "--port", str(port), "--threaded"]


def werkzeug_single_thread(port: int) -> list[str]:
    return ["-m", "tests.reliability.wsgi_app", "--port", str(port)]


@dataclass(frozen=True)
class ServerSetup:
    command: ServerCommand
    #: Where ``/load`` logs from; each request logs once from each place.
    log_places: frozenset[str]
    #: A module the server needs that the test extra has only where it has wheels.
    needs: str | None = None


_ASGI_PLACES = frozenset({"loop", "thread", "child"})
_WSGI_PLACES = frozenset({"handler", "thread", "body"})

#: Servers for the cross-talk test, configured for concurrency.
LOAD_SERVERS: dict[str, ServerSetup] = {
    "uvicorn": ServerSetup(uvicorn, _ASGI_PLACES),
    "hypercorn": ServerSetup(hypercorn, _ASGI_PLACES),
    "gunicorn-gthread": ServerSetup(gunicorn_gthread, _WSGI_PLACES),
    "gunicorn-gevent": ServerSetup(gunicorn_gevent, _WSGI_PLACES, needs="gevent"),
    "werkzeug-threaded": ServerSetup(werkzeug_threaded, _WSGI_PLACES),
}
#: ASGI servers for the fault tests (one process, one event loop each).
ASGI_FAULT_SERVERS: dict[str, ServerCommand] = {"uvicorn": uvicorn, "hypercorn": hypercorn}
#: WSGI servers for the fault tests, serving every request from the same thread.
WSGI_FAULT_SERVERS: dict[str, ServerCommand] = {
    "gunicorn-1-thread": gunicorn_single_thread,
    "werkzeug-1-thread": werkzeug_single_thread,
}


@dataclass(frozen=True)
class RunningServer:
    name: str
    base_url: str
    #: ``host:port``
    address: str
    log_dir: Path
    output: Path


@contextmanager
def serve(name: str, command: ServerCommand, work_dir: Path) -> Iterator[RunningServer]:
    """Run ``python <command(port)>`` until the block ends."""
    port = free_port()
    log_dir = work_dir / f"{name}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    output = work_dir / f"{name}.out"
    env = {**os.environ, LOG_DIR_ENV: str(log_dir), "PYTHONUNBUFFERED": "1"}
    with server_process([sys.executable, *command(port)], port, output, env=env):
        yield RunningServer(name, f"http://{HOST}:{port}", f"{HOST}:{port}", log_dir, output)


@contextmanager
def server_pool(
    commands: Mapping[str, ServerCommand], work_dirs: pytest.TempPathFactory
) -> Iterator[Callable[[str], RunningServer]]:
    """A function that starts the named server on first use; all stop when the block ends."""
    with ExitStack() as stack:
        running: dict[str, RunningServer] = {}

        def get(name: str) -> RunningServer:
            if name not in running:
                work_dir = work_dirs.mktemp(name)
                running[name] = stack.enter_context(serve(name, commands[name], work_dir))
            return running[name]

        yield get
