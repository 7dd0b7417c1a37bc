"""End to end: real servers on 127.0.0.1 loaded by ``wrk``, side by side.

For each server, one worker of it serves each candidate app: the bare app, the
bare app again, the bare app sending the session header itself, the
hand-written floor middleware and sessionctx. All of them run at the same time,
pinned to one CPU, each loaded by its own ``wrk`` pinned to another CPU
(``taskset``; without it or with a single CPU everything runs unpinned, which
the row notes), so a slow phase of a shared machine slows all of them alike
instead of whichever ran then. Each server is a session of its own, which the
kernel gives an even share of the CPU; what each one got is read from Linux's
per-thread run time (``/proc/<pid>/task/<tid>/schedstat``, time on the CPU,
without time the hypervisor stole), and the figure is requests served per
second of that CPU time: the throughput of one worker with a CPU to itself.
The change is each candidate's figure over the bare app's in the same round,
median over rounds. The second bare app shows the method's own noise (ideally
1.00x); the app sending the header itself shows what the server pays for one
more response header, which every session middleware adds. Without ``/proc``
the figure is plain requests per second, which assumes the even share.

With ``alone`` (``--e2e-alone``), a cross-check of the method: the servers
still run side by side, but only one is loaded at a time, in turns within each
round (the order rotated from round to round), so each has the CPU to itself
while it is measured, as in a plain one-server run, at the price of comparing
candidates seconds apart rather than at the same moments.
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

__all__ = [
    "CANDIDATES",
    "FULL",
    "QUICK",
    "Load",
    "check",
    "loading",
    "pinning",
    "requests_of",
    "run",
    "servers",
    "serving",
]

ROOT = Path(__file__).resolve().parent.parent
#: SPEC.md section 7: uvicorn throughput loss at most this many percent.
MAX_LOSS = 5.0

BARE = "bare app"
OURS = "sessionctx"


@dataclass(frozen=True)
class Candidate:
    """One app every server serves: its row name and where the server finds it."""

    name: str
    #: ``module:attribute`` of the ASGI and of the WSGI app; ``()``: call it, a factory.
    asgi: str
    wsgi: str
    #: Whether the app sends the session header.
    echoes: bool


#: In the order of the table.
CANDIDATES = (
    Candidate(BARE, "benchmarks.apps:asgi_app", "benchmarks.apps:wsgi_app", echoes=False),
    Candidate("bare app again", "benchmarks.apps:asgi_app", "benchmarks.apps:wsgi_app", False),
    Candidate(
        "app sends header",
        "benchmarks.apps:asgi_with_header",
        "benchmarks.apps:wsgi_with_header",
        True,
    ),
    Candidate(
        "floor", "benchmarks.apps:asgi_with_floor()", "benchmarks.apps:wsgi_with_floor()", True
    ),
    Candidate(
        OURS,
        "benchmarks.apps:asgi_with_sessionctx()",
        "benchmarks.apps:wsgi_with_sessionctx()",
        True,
    ),
)


@dataclass(frozen=True)
class Load:
    """How long and how hard ``wrk`` loads each server."""

    seconds: int
    warmup_seconds: int
    rounds: int
    connections: int = 16
    #: Load one server at a time, in turns, instead of all at once.
    alone: bool = False


QUICK = Load(seconds=1, warmup_seconds=0, rounds=1)
FULL = Load(seconds=3, warmup_seconds=2, rounds=9)


@dataclass(frozen=True)
class Server:
    """How to start one worker of a server for a candidate."""

    name: str
    command: tuple[str, ...]
    wsgi: bool
    #: The throughput loss the spec allows, in percent; ``None``: reported, not judged.
    max_loss: float | None = None

    def argv(self, candidate: Candidate) -> list[str]:
        """The command line, with ``{port}`` where the port goes."""
        if self.wsgi:
            return [*self.command, candidate.wsgi]
        target = candidate.asgi
        if target.endswith("()"):
            return [*self.command, "--factory", target[:-2]]
        return [*self.command, target]


def _uvicorn(http: str) -> Server:
    return Server(
        name=f"uvicorn ({http})",
        command=(
            *(sys.executable, "-m", "uvicorn", "--host", HOST, "--port", "{port}"),
            *("--no-access-log", "--loop", "asyncio", "--http", http, "--lifespan", "off"),
            *("--log-level", "warning"),
        ),
        wsgi=False,
        max_loss=MAX_LOSS,
    )


def _gunicorn() -> Server:
    return Server(
        name="gunicorn (gthread)",
        command=(
            *(sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread"),
            *("--threads", "4", "--bind", f"{HOST}:{{port}}", "--log-level", "warning"),
        ),
        wsgi=True,
    )


def servers() -> list[Server]:
    """uvicorn with its pure-Python HTTP parser (h11), with httptools (what
    ``uvicorn[standard]`` runs) when installed, and gunicorn."""
    found = [_uvicorn("h11")]
    if importlib.util.find_spec("httptools") is not None:
        found.append(_uvicorn("httptools"))
    return [*found, _gunicorn()]


def pinning() -> tuple[list[str], list[str], str]:
    """``taskset`` prefixes for the servers and for ``wrk``, and a note when unpinned."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None or len(cpus) < 2:
        return [], [], "servers and wrk unpinned (needs taskset and 2 CPUs)"
    return [taskset, "-c", str(cpus[0])], [taskset, "-c", str(cpus[1])], ""


@contextmanager
def serving(argv: list[str]) -> Iterator[tuple[int, int]]:
    """Run ``argv`` (with ``{port}`` filled in) until the block ends; yield the port
    and the process group of the server and its workers."""
    port = free_port()
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "server.out"
        argv = [a.replace("{port}", str(port)) for a in argv]
        with server_process(argv, port, output, env=env) as proc:
            yield port, proc.pid  # a session of its own: the group id is its pid


_PROC = Path("/proc")


def _cpu_ns(group: int) -> int | None:
    """Time on the CPU so far of every thread of process group ``group``, in ns
    (Linux schedstat); ``None`` where ``/proc`` does not tell."""
    total = 0
    found = False
    for stat in _PROC.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        # The fields after the command name (which may hold spaces) in parentheses:
        # state, ppid, pgrp, ...
        if int(text[text.rindex(")") + 2 :].split()[2]) != group:
            continue
        for sched in stat.parent.glob("task/*/schedstat"):
            try:
                total += int(sched.read_text().split()[0])
                found = True
            except (OSError, ValueError, IndexError):
                continue
    return total if found else None


def check(port: int, server: str, candidate: Candidate) -> None:
    """One request: 200 with the body, and the session id echoed by exactly the
    candidates that send it."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/", headers={"X-Session-Id": VALID_ID})
        response = conn.getresponse()
        body = response.read()
        echoed = response.getheader("x-session-id")
    finally:
        conn.close()
    where = f"{server}, {candidate.name}"
    if response.status != 200 or body != BODY:
        raise RuntimeError(f"{where}: unexpected response {response.status} {body!r}")
    if echoed != (VALID_ID if candidate.echoes else None):
        raise RuntimeError(f"{where}: X-Session-Id {echoed!r} in the response")


_REQUESTS = re.compile(r"^\s*([0-9]+) requests in ", re.MULTILINE)
_ERRORS = re.compile(r"^\s*(Non-2xx or 3xx responses|Socket errors):.*$", re.MULTILINE)


def loading(wrk: list[str], port: int, seconds: int, connections: int) -> subprocess.Popen[str]:
    """A ``wrk`` loading ``port`` for ``seconds`` with a valid session id on every
    request, its output (see :func:`requests_of`) on its ``stdout``."""
    return subprocess.Popen(
        [
            *wrk,
            *("--threads", "1", "--connections", str(connections)),
            *("--duration", f"{seconds}s", "--timeout", "5s"),
            *("--header", f"X-Session-Id: {VALID_ID}", f"http://{HOST}:{port}/"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wrk_all(wrk: list[str], ports: list[int], seconds: int, connections: int) -> list[int]:
    """Requests answered by each port, all loaded at once by a ``wrk`` of their own."""
    procs = [loading(wrk, port, seconds, connections) for port in ports]
    outputs: list[tuple[int, str]] = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 60)
            outputs.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [requests_of(code, out) for code, out in outputs]


def _wrk_in_turns(
    wrk: list[str], ports: list[int], seconds: int, connections: int, first: int
) -> list[int]:
    """Requests answered by each port, loaded one after the other (from the
    ``first``-th on, in turn) by one ``wrk``."""
    counts = [0] * len(ports)
    for k in range(len(ports)):
        i = (first + k) % len(ports)
        counts[i] = _wrk_all(wrk, [ports[i]], seconds, connections)[0]
    return counts


def requests_of(code: int, out: str) -> int:
    """The requests one ``wrk`` run got answered, from its exit status and output;
    an error if it failed or saw errors."""
    found = _REQUESTS.search(out)
    if code != 0 or found is None:
        raise RuntimeError(f"wrk failed ({code}): {out}")
    errors = _ERRORS.search(out)
    if errors is not None:
        raise RuntimeError(f"wrk saw errors: {errors.group(0).strip()}")
    return int(found.group(1))


def _measure(
    server: Server, load: Load, wrk: list[str], pin: list[str]
) -> tuple[list[list[float]], bool]:
    """Requests per second of CPU time of every candidate in every round (in
    ``CANDIDATES`` order), all loaded at the same time; and whether the CPU time
    was known (otherwise: requests per second of the round)."""
    with ExitStack() as stack:
        served = [
            stack.enter_context(serving(pin + server.argv(candidate))) for candidate in CANDIDATES
        ]
        ports = [port for port, _ in served]
        for port, candidate in zip(ports, CANDIDATES, strict=True):
            check(port, server.name, candidate)
        if load.warmup_seconds:
            _wrk_all(wrk, ports, load.warmup_seconds, load.connections)
        groups = [group for _, group in served]
        # Decided once, so that every round is in the same unit.
        by_cpu = all(_cpu_ns(group) is not None for group in groups)
        rounds: list[list[float]] = []
        for number in range(load.rounds):
            before = [_cpu_ns(group) for group in groups] if by_cpu else []
            if load.alone:
                counts = _wrk_in_turns(wrk, ports, load.seconds, load.connections, number)
            else:
                counts = _wrk_all(wrk, ports, load.seconds, load.connections)
            if not by_cpu:
                rounds.append([n / load.seconds for n in counts])
                continue
            after = [_cpu_ns(group) for group in groups]
            rates: list[float] = []
            for n, a, b in zip(counts, before, after, strict=True):
                if a is None or b is None or b <= a:
                    raise RuntimeError(f"{server.name}: a server's CPU time could not be read")
                rates.append(n * 1e9 / (b - a))
            rounds.append(rates)
        return rounds, by_cpu


def run(load: Load, wrk_path: str | None = None) -> list[Row]:
    """One row per candidate for uvicorn (h11, and httptools when installed) and gunicorn."""
    if wrk_path is None:
        return [
            Row(
                "e2e",
                "-",
                OURS,
                note="skipped: wrk not found (make bench installs it with apt-get as root)",
            )
        ]
    server_pin, wrk_pin, pin_note = pinning()
    wrk = [*wrk_pin, wrk_path]
    rows: list[Row] = []
    for server in servers():
        rounds, by_cpu = _measure(server, load, wrk, server_pin)
        unit = "req/CPU-s" if by_cpu else "req/s"
        for i, candidate in enumerate(CANDIDATES):
            runs = [rates[i] for rates in rounds]
            absolute = statistics.median(runs)
            if i == 0:
                rows.append(Row("e2e", server.name, BARE, absolute, unit, extra={"runs": runs}))
                continue
            ratio = statistics.median(rates[i] / rates[0] for rates in rounds)
            change = (ratio - 1) * 100
            verdict = None
            if candidate.name == OURS and server.max_loss is not None:
                verdict = Verdict(
                    f"<= {server.max_loss:.0f} % loss",
                    -change <= server.max_loss,
                    f"{-change:.1f} %",
                )
            note = ""
            if candidate.name == OURS:
                measure = (
                    "requests per second of each server's CPU time"
                    if by_cpu
                    else "requests per second (no /proc: CPU time unknown)"
                )
                how = (
                    f"{len(CANDIDATES)} servers on one CPU, loaded one at a time in turns by a wrk"
                    if load.alone
                    else f"{len(CANDIDATES)} servers sharing one CPU, each loaded by its own wrk"
                )
                note = (
                    f"{how} ({load.connections} connections), {load.rounds} rounds of"
                    f" {load.seconds} s;"
                    f" {measure}; change = median of the rounds' ratios to the bare app;"
                    f" per round: bare {' '.join(f'{r[0]:,.0f}' for r in rounds)},"
                    f" sessionctx {' '.join(f'{r[i]:,.0f}' for r in rounds)}"
                    + (f"; {pin_note}" if pin_note else "")
                )
            rows.append(
                Row(
                    part="e2e",
                    case=server.name,
                    candidate=candidate.name,
                    absolute=absolute,
                    unit=unit,
                    added=change,
                    added_unit="%",
                    ratio=ratio,
                    ratio_of="bare",
                    verdict=verdict,
                    note=note,
                    extra={"runs": runs},
                )
            )
    return rows
