"""End to end: real servers on 127.0.0.1 loaded by ``wrk``, with and without sessionctx.

Each server runs one worker pinned to one CPU and ``wrk`` runs pinned to
another, so the load generator does not steal the server's CPU (``taskset``;
without it or with a single CPU both run unpinned, which the row notes). The
bare and the wrapped server run side by side and are loaded in turn, ``A B B A``
per pair, so slow phases of the machine hit both alike. The figure is
throughput (requests per second) and the change of the wrapped server against
the bare one: the median over pairs of the pair's wrapped over bare throughput,
so one slow phase of a shared machine moves one pair, not the result.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import HOST, free_port, server_process

from benchmarks.apps import BODY, VALID_ID
from benchmarks.report import Row, Verdict

__all__ = ["FULL", "QUICK", "Load", "run"]

ROOT = Path(__file__).resolve().parent.parent
#: SPEC.md section 7: uvicorn throughput loss at most this many percent.
MAX_LOSS = 5.0


@dataclass(frozen=True)
class Load:
    """How long and how hard ``wrk`` loads each server."""

    seconds: int
    warmup_seconds: int
    pairs: int
    connections: int = 16


QUICK = Load(seconds=1, warmup_seconds=0, pairs=1)
FULL = Load(seconds=2, warmup_seconds=1, pairs=8)


@dataclass(frozen=True)
class Server:
    """A server command line for the bare app and for the app inside sessionctx."""

    name: str
    bare: tuple[str, ...]
    wrapped: tuple[str, ...]
    #: The throughput loss the spec allows, in percent; ``None``: reported, not judged.
    max_loss: float | None = None

    def argv(self, wrapped: bool) -> list[str]:
        """The command line, with ``{port}`` where the port goes."""
        return list(self.wrapped if wrapped else self.bare)


def _uvicorn() -> Server:
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    common = (
        *(sys.executable, "-m", "uvicorn", "--host", HOST, "--port", "{port}"),
        *("--no-access-log", "--loop", "asyncio", "--http", http, "--lifespan", "off"),
        *("--log-level", "warning"),
    )
    return Server(
        name=f"uvicorn ({http})",
        bare=(*common, "benchmarks.apps:asgi_app"),
        wrapped=(*common, "--factory", "benchmarks.apps:asgi_with_sessionctx"),
        max_loss=MAX_LOSS,
    )


def _gunicorn() -> Server:
    common = (
        *(sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread"),
        *("--threads", "4", "--bind", f"{HOST}:{{port}}", "--log-level", "warning"),
    )
    return Server(
        name="gunicorn (gthread)",
        bare=(*common, "benchmarks.apps:wsgi_app"),
        wrapped=(*common, "benchmarks.apps:wsgi_with_sessionctx()"),
    )


def _pinning() -> tuple[list[str], list[str], str]:
    """``taskset`` prefixes for the server and for ``wrk``, and a note when unpinned."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None or len(cpus) < 2:
        return [], [], "server and wrk unpinned (needs taskset and 2 CPUs)"
    return [taskset, "-c", str(cpus[0])], [taskset, "-c", str(cpus[1])], ""


@contextmanager
def _serving(argv: list[str], name: str) -> Iterator[int]:
    """Run ``argv`` (with ``{port}`` filled in) until the block ends; yield the port."""
    port = free_port()
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / f"{name}.out"
        with server_process([a.replace("{port}", str(port)) for a in argv], port, output, env=env):
            yield port


def _check(port: int, name: str, wrapped: bool) -> None:
    """One request: 200 with the body; the wrapped server echoes the session id."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/", headers={"X-Session-Id": VALID_ID})
        response = conn.getresponse()
        body = response.read()
        echoed = response.getheader("x-session-id")
    finally:
        conn.close()
    if response.status != 200 or body != BODY:
        raise RuntimeError(f"{name}: unexpected response {response.status} {body!r}")
    if wrapped and echoed != VALID_ID:
        raise RuntimeError(f"{name}: session id not echoed, got {echoed!r}")
    if not wrapped and echoed is not None:
        raise RuntimeError(f"{name}: the bare app sent a session header")


_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_ERRORS = re.compile(r"^\s*(Non-2xx or 3xx responses|Socket errors):.*$", re.MULTILINE)


def _wrk(wrk: list[str], port: int, seconds: int, connections: int) -> float:
    """Requests per second ``wrk`` reached against ``port``."""
    argv = [
        *wrk,
        *("--threads", "1", "--connections", str(connections), "--duration", f"{seconds}s"),
        *("--timeout", "5s", "--header", f"X-Session-Id: {VALID_ID}", f"http://{HOST}:{port}/"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = _RPS.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    errors = _ERRORS.search(done.stdout)
    if errors is not None:
        raise RuntimeError(f"wrk saw errors: {errors.group(0).strip()}")
    return float(found.group(1))


def _measure(
    server: Server, load: Load, wrk: list[str], pin: list[str]
) -> tuple[list[float], list[float]]:
    """Requests per second of each run of the bare and the wrapped server, loaded A B B A."""
    with ExitStack() as stack:
        ports = {
            wrapped: stack.enter_context(_serving(pin + server.argv(wrapped), server.name))
            for wrapped in (False, True)
        }
        for wrapped, port in ports.items():
            _check(port, server.name, wrapped)
            if load.warmup_seconds:
                _wrk(wrk, port, load.warmup_seconds, load.connections)
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(load.pairs):
            for wrapped in (False, True, True, False):
                rates[wrapped].append(_wrk(wrk, ports[wrapped], load.seconds, load.connections))
    return rates[False], rates[True]


def run(load: Load, wrk_path: str | None = None) -> list[Row]:
    """Rows for uvicorn and, when ``sessionctx.wsgi`` exists, gunicorn."""
    if wrk_path is None:
        return [
            Row(
                "e2e",
                "-",
                "sessionctx",
                note="skipped: wrk not found (make bench installs it with apt-get as root)",
            )
        ]
    server_pin, wrk_pin, pin_note = _pinning()
    wrk = [*wrk_pin, wrk_path]
    servers = [_uvicorn(), _gunicorn()]
    rows: list[Row] = []
    for server in servers:
        bare_runs, our_runs = _measure(server, load, wrk, server_pin)
        bare = statistics.median(bare_runs)
        ours = statistics.median(our_runs)
        # Each A B B A pair gave two runs of each server.
        pair_ratios = [
            sum(our_runs[i : i + 2]) / sum(bare_runs[i : i + 2]) for i in range(0, len(our_runs), 2)
        ]
        ratio = statistics.median(pair_ratios)
        change = (ratio - 1) * 100
        verdict = None
        if server.max_loss is not None:
            verdict = Verdict(
                f"<= {server.max_loss:.0f} % loss", -change <= server.max_loss, f"{-change:.1f} %"
            )
        # The spread of single runs shows how much of the change is noise.
        note = (
            f"{load.connections} connections, {len(our_runs)} runs of {load.seconds} s per server"
            f" ({load.pairs} A B B A pairs; change = median of the pairs' ratios);"
            f" req/s per run: bare {' '.join(f'{r:,.0f}' for r in bare_runs)},"
            f" sessionctx {' '.join(f'{r:,.0f}' for r in our_runs)}"
        )
        rows.append(Row("e2e", server.name, "bare app", bare, "req/s", extra={"runs": bare_runs}))
        rows.append(
            Row(
                part="e2e",
                case=server.name,
                candidate="sessionctx",
                absolute=ours,
                unit="req/s",
                added=change,
                added_unit="%",
                ratio=ratio,
                ratio_of="bare",
                verdict=verdict,
                note=note + (f"; {pin_note}" if pin_note else ""),
                extra={"runs": our_runs},
            )
        )
    return rows
