"""Where a uvicorn worker's time goes: its Python stacks sampled under ``wrk``.

The end-to-end part measures what a middleware costs a real server; this part
shows what that cost is made of. For each of uvicorn's HTTP parsers, one worker
serves the floor, then one serves sessionctx, each alone, pinned to one CPU and
loaded by ``wrk`` on the other (as in the end-to-end part), while ``py-spy``
samples the worker's Python stacks without stopping it. A sample whose
innermost frame is in the middleware's own source is time the middleware spends
running its own code, and C code it calls directly (a regex, a ContextVar, an
allocation); the rest is the server's and the app's. The figure is the share
of such samples among the worker's busy ones (those not waiting in the event
loop's ``select()``). Sampling slows the worker a little, alike for both.

It shows that, inside a server, even the hand-written floor's own code takes
several times what it costs in the tight in-process loop, and how much of the
end-to-end loss the middleware's own code accounts for.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import HOST

import sessionctx
from benchmarks import end_to_end, floor
from benchmarks.apps import VALID_ID
from benchmarks.end_to_end import OURS, Candidate, Server
from benchmarks.report import Row

__all__ = ["FULL", "QUICK", "Load", "find_py_spy", "own_share", "run"]


@dataclass(frozen=True)
class Load:
    """How long each worker is sampled, and how often."""

    seconds: int
    rate: int
    warmup_seconds: int = 1
    connections: int = 16


QUICK = Load(seconds=1, rate=100)
FULL = Load(seconds=10, rate=200)

#: The source files of each middleware: the floor's module, sessionctx's package.
OWN_FILES: dict[str, tuple[str, ...]] = {
    "floor": (str(Path(floor.__file__).resolve()),),
    OURS: tuple(
        str(p.resolve()) for p in sorted(Path(sessionctx.__file__).resolve().parent.rglob("*.py"))
    ),
}


def find_py_spy() -> str | None:
    """The ``py-spy`` of this Python's environment (the ``bench`` extra), else on the PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


def _file_of(frame: str) -> str:
    """The file of one py-spy frame, ``function (path/to/file.py:line)``."""
    inside = frame[frame.rfind("(") + 1 : frame.rfind(")")]
    return inside.rpartition(":")[0] if ":" in inside else inside


def _is_one_of(path: str, files: tuple[str, ...]) -> bool:
    """Whether ``path``, as py-spy prints it (absolute, or from the package's
    directory on ``sys.path``), is one of ``files`` (absolute)."""
    return any(f == path or f.endswith("/" + path) for f in files)


def _waits(frame: str) -> bool:
    """Whether the innermost frame is the event loop waiting for the sockets
    (``EpollSelector.select (selectors.py:468)``)."""
    function = frame[: frame.rfind(" (")]
    return (function == "select" or function.endswith(".select")) and _file_of(frame).endswith(
        "selectors.py"
    )


def own_share(raw: str, files: tuple[str, ...]) -> tuple[int, int]:
    """From py-spy's ``--format raw`` output (one ``frame;frame;... count`` line
    per distinct stack, outermost first): the samples whose innermost frame is
    in one of ``files``, and the busy samples (all but those waiting in ``select()``)."""
    own = busy = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        innermost = stack.rpartition(";")[2]
        if _waits(innermost):
            continue
        busy += int(count)
        if _is_one_of(_file_of(innermost), files):
            own += int(count)
    return own, busy


def _sample(
    server: Server, candidate: Candidate, load: Load, wrk: list[str], pin: list[str], spy: str
) -> tuple[int, int, float]:
    """Own and busy samples of one worker serving ``candidate``, and the requests
    per second ``wrk`` got meanwhile."""
    loaded = load.warmup_seconds + load.seconds + 2
    with (
        end_to_end.serving(pin + server.argv(candidate)) as (port, pid),
        tempfile.TemporaryDirectory() as tmp,
    ):
        end_to_end.check(port, server.name, candidate)
        raw = Path(tmp) / "samples.txt"
        with subprocess.Popen(
            [
                *wrk,
                *("--threads", "1", "--connections", str(load.connections)),
                *("--duration", f"{loaded}s", "--timeout", "5s"),
                *("--header", f"X-Session-Id: {VALID_ID}"),
                f"http://{HOST}:{port}/",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as load_proc:
            try:
                time.sleep(load.warmup_seconds)
                spied = subprocess.run(
                    [
                        *pin,  # py-spy reads the worker's memory: on its CPU, off wrk's
                        *(spy, "record", "--pid", str(pid), "--rate", str(load.rate)),
                        *("--duration", str(load.seconds), "--nonblocking"),
                        *("--format", "raw", "--output", str(raw)),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=load.seconds + 60,
                    check=False,
                )
                out, _ = load_proc.communicate(timeout=loaded + 60)
            finally:
                if load_proc.poll() is None:
                    load_proc.kill()
        if spied.returncode != 0 or not raw.is_file():
            said = (spied.stderr or spied.stdout).strip().splitlines()
            raise RuntimeError(
                f"py-spy exited {spied.returncode}: {said[-1] if said else 'no output'}"
            )
        own, busy = own_share(raw.read_text(), OWN_FILES[candidate.name])
    served = end_to_end.requests_of(load_proc.returncode, out)
    if busy == 0:
        raise RuntimeError(f"{server.name}, {candidate.name}: py-spy took no busy sample")
    return own, busy, served / loaded


def run(load: Load, wrk_path: str | None, spy_path: str | None) -> list[Row]:
    """One row per middleware (floor, sessionctx) for each of uvicorn's parsers."""
    missing = [
        f"{tool} not found ({how})"
        for tool, path, how in (
            ("wrk", wrk_path, "make bench installs it with apt-get as root"),
            ("py-spy", spy_path, "the bench extra installs it"),
        )
        if path is None
    ]
    if missing or wrk_path is None or spy_path is None:
        return [Row("sampled", "-", OURS, note=f"skipped: {'; '.join(missing)}")]
    server_pin, wrk_pin, pin_note = end_to_end.pinning()
    candidates = [c for c in end_to_end.CANDIDATES if c.name in OWN_FILES]
    rows: list[Row] = []
    for server in end_to_end.servers():
        if server.wsgi:
            continue
        floor_share: float | None = None
        for candidate in candidates:
            try:
                own, busy, per_second = _sample(
                    server, candidate, load, [*wrk_pin, wrk_path], server_pin, spy_path
                )
            except RuntimeError as exc:
                if "py-spy exited" not in str(exc):
                    raise
                # Attaching needs ptrace rights (root, or kernel.yama.ptrace_scope 0).
                return [Row("sampled", "-", OURS, note=f"skipped: {exc}")]
            share = 100 * own / busy
            ours = candidate.name == OURS
            if not ours:
                floor_share = share
            rows.append(
                Row(
                    part="sampled",
                    case=server.name,
                    candidate=candidate.name,
                    absolute=share,
                    unit="% own",
                    ratio=share / floor_share if ours and floor_share else None,
                    ratio_of="floor" if ours and floor_share else "",
                    note=(
                        f"{own:,} of {busy:,} busy samples in its own code; py-spy at"
                        f" {load.rate}/s for {load.seconds} s, the worker alone, loaded by"
                        f" wrk ({load.connections} connections, {per_second:,.0f} req/s"
                        " while sampled)" + (f"; {pin_note}" if pin_note else "")
                    ),
                    extra={"own": own, "busy": busy, "requests_per_second": per_second},
                )
            )
    return rows
