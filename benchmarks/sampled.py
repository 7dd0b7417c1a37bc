"""Where a uvicorn worker's time goes: its Python stacks sampled under ``wrk``.

The end-to-end part measures what a middleware costs a real server; this part
shows what that cost is made of. For each of uvicorn's HTTP parsers, one worker
serves the floor, then one serves sessionctx, in turns, each alone, pinned to
one CPU and loaded by ``wrk`` on the other (as in the end-to-end part), while
``py-spy`` samples the worker's Python stacks. py-spy runs on the worker's CPU:
while it reads, the worker is not running, so no stack is read half-changed,
and the CPU it takes is taken alike from both. A sample whose innermost frame is
in the middleware's own source is time the middleware spends running its own
code, and C code it calls directly (a regex, a ContextVar, an allocation); the
rest is the server's and the app's. The figure is the share of such samples
among all the worker's samples (py-spy leaves out those where it sleeps).

It shows that, inside a server, even the hand-written floor's own code takes
more time than in the tight in-process loop (1.4x to 2.7x in the runs so far),
and how much of the end-to-end loss the middleware's own code accounts for.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sessionctx
from benchmarks import end_to_end, floor
from benchmarks.end_to_end import OURS, Candidate, Server
from benchmarks.report import Row

__all__ = ["FULL", "OWN_FILES", "QUICK", "Load", "find_py_spy", "own_share", "run"]


@dataclass(frozen=True)
class Load(end_to_end.Load):
    """How long each worker is sampled (``seconds``, after ``warmup_seconds``
    of load), in how many turns, and how many times a second."""

    rate: int = 200


QUICK = Load(seconds=1, warmup_seconds=1, rounds=1, rate=100)
FULL = Load(seconds=10, warmup_seconds=1, rounds=2)

#: The source files of each middleware (real paths): the floor's module, sessionctx's package.
OWN_FILES: dict[str, frozenset[str]] = {
    "floor": frozenset({os.path.realpath(floor.__file__)}),
    OURS: frozenset(
        os.path.realpath(p) for p in Path(sessionctx.__file__).resolve().parent.rglob("*.py")
    ),
}

#: What py-spy says (in any letter case) when the system does not let it read
#: another process: "Permission Denied: Try running again with elevated ...".
_NOT_PERMITTED = ("permission denied", "operation not permitted")


class _CannotAttach(Exception):
    """py-spy may not read the worker's memory (no ptrace rights)."""


def find_py_spy() -> str | None:
    """The ``py-spy`` of this Python's environment (the ``bench`` extra), else on the PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


def _file_of(frame: str) -> str:
    """The file of one py-spy frame, ``function (/path/to/file.py:line)``."""
    inside = frame[frame.rfind("(") + 1 : frame.rfind(")")]
    return inside.rpartition(":")[0] if ":" in inside else inside


def own_share(raw: str, files: frozenset[str]) -> tuple[int, int]:
    """From py-spy's ``--format raw --full-filenames`` output (one
    ``frame;frame;... count`` line per distinct stack, outermost first): the
    samples whose innermost frame is in one of ``files`` (real paths), and all
    the samples."""
    own = total = 0
    # Whether each file py-spy names is one of ``files``: resolved once per file,
    # not once per stack (realpath asks the file system).
    is_own: dict[str, bool] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        path = _file_of(stack.rpartition(";")[2])
        if path not in is_own:
            is_own[path] = os.path.realpath(path) in files
        if is_own[path]:
            own += int(count)
    return own, total


def _sample(
    server: Server, candidate: Candidate, load: Load, wrk: list[str], pin: list[str], spy: str
) -> tuple[int, int, float]:
    """Own samples and all samples of one worker serving ``candidate``, and the
    requests per second ``wrk`` got on average over its run."""
    loaded = load.warmup_seconds + load.seconds + 2
    with (
        end_to_end.serving(pin + server.argv(candidate)) as (port, pid),
        tempfile.TemporaryDirectory() as tmp,
    ):
        end_to_end.check(port, server.name, candidate)
        raw = Path(tmp) / "samples.txt"
        with end_to_end.loading(wrk, port, loaded, load.connections) as load_proc:
            try:
                time.sleep(load.warmup_seconds)
                spied = subprocess.run(
                    [
                        *pin,  # on the worker's CPU: see the module's docstring
                        *(spy, "record", "--pid", str(pid), "--rate", str(load.rate)),
                        *("--duration", str(load.seconds), "--nonblocking", "--full-filenames"),
                        *("--format", "raw", "--output", str(raw)),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=load.seconds + 60,
                    check=False,
                )
                if spied.returncode != 0 or not raw.is_file():
                    said = (spied.stderr or spied.stdout).strip().splitlines()
                    failure = (
                        f"py-spy exited {spied.returncode}: {said[-1] if said else 'no output'}"
                    )
                    if any(words in spied.stderr.lower() for words in _NOT_PERMITTED):
                        raise _CannotAttach(failure)
                    raise RuntimeError(f"{server.name}, {candidate.name}: {failure}")
                out, _ = load_proc.communicate(timeout=loaded + 60)
            finally:
                if load_proc.poll() is None:
                    load_proc.kill()
        own, total = own_share(raw.read_text(), OWN_FILES[candidate.name])
    served = end_to_end.requests_of(load_proc.returncode, out)
    if total == 0:
        raise RuntimeError(f"{server.name}, {candidate.name}: py-spy took no sample")
    return own, total, served / loaded


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
        # Own samples, all samples and requests per second, summed over the turns.
        sums = {c.name: [0, 0, 0.0] for c in candidates}
        for _ in range(load.rounds):
            for candidate in candidates:
                try:
                    sampled = _sample(
                        server, candidate, load, [*wrk_pin, wrk_path], server_pin, spy_path
                    )
                except _CannotAttach as exc:
                    # Attaching needs ptrace rights (root, or kernel.yama.ptrace_scope 0).
                    return [Row("sampled", "-", OURS, note=f"skipped: {exc}")]
                for i, value in enumerate(sampled):
                    sums[candidate.name][i] += value
        floor_us: float | None = None
        for candidate in candidates:
            own, total, per_second = sums[candidate.name]
            per_second /= load.rounds
            share = own / total
            # Seconds of its own code over the requests served meanwhile.
            own_ns = (own / load.rate) / (per_second * load.seconds * load.rounds) * 1e9
            ours = candidate.name == OURS
            if not ours:
                floor_us = own_ns
            rows.append(
                Row(
                    part="sampled",
                    case=server.name,
                    candidate=candidate.name,
                    absolute=100 * share,
                    unit="% own",
                    added=own_ns,
                    added_unit="ns added",
                    ratio=own_ns / floor_us if ours and floor_us else None,
                    ratio_of="floor" if ours and floor_us else "",
                    note=(
                        f"{own:,} of {total:,} samples in its own code"
                        f" (sampling error ±{100 * math.sqrt(share * (1 - share) / total):.1f}"
                        f" points); {load.rounds} turn{'s' if load.rounds > 1 else ''} of"
                        f" {load.seconds} s at {load.rate}/s, the"
                        f" worker alone, loaded by wrk ({load.connections} connections,"
                        f" {per_second:,.0f} req/s on average over its runs); added = its own"
                        " code's time per request" + (f"; {pin_note}" if pin_note else "")
                    ),
                    extra={"own": own, "samples": total, "requests_per_second": per_second},
                )
            )
    return rows
