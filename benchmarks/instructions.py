"""Instructions per request, counted by valgrind: the in-process parts free of timing noise.

    python -m benchmarks --only instr                     # this part alone, in the table
    python -m benchmarks.instructions PART CASE NAME N    # one child run (what the part starts)

Each candidate's in-process loop (the very runners of the ``asgi`` and
``wsgi`` parts, bare app included) runs in a child Python under
``valgrind --tool=cachegrind --cache-sim=no`` twice, with a small and a large
number of requests. The difference of the two totals over the difference of
the counts is what one request costs, with start-up, imports and warm-up
cancelled out; ``PYTHONHASHSEED`` is fixed so that both runs hash alike.

The counts do not move with the load of a shared machine, so they tell a ratio
that moved because the host did from one that moved because the code did.
They do not say how long an instruction takes: cache misses, mispredicted
branches and the host's speed show only in the timed rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks import asgi_inprocess, wsgi_inprocess
from benchmarks.apps import asgi_app, wsgi_app
from benchmarks.report import Row
from benchmarks.timing import Runner

__all__ = ["FULL", "QUICK", "Sizes", "child", "count", "per_request", "run"]

_ROOT = Path(__file__).resolve().parent.parent
_SUMMARY = re.compile(rb"^summary:\s+(\d+)\s*$", re.MULTILINE)

#: What is counted: the cases with a valid header (those the budget is about)
#: and the candidates of each part that do the same work.
_PLAN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "asgi": (
        (asgi_inprocess.VALID.name, asgi_inprocess.VARIED.name),
        (
            asgi_inprocess.BARE,
            asgi_inprocess.FLOOR,
            asgi_inprocess.OURS,
            asgi_inprocess.CORRELATION_ID,
        ),
    ),
    "wsgi": (
        (wsgi_inprocess.VALID.name, wsgi_inprocess.VARIED.name),
        (wsgi_inprocess.BARE, wsgi_inprocess.FLOOR, wsgi_inprocess.OURS),
    ),
}


@dataclass(frozen=True)
class Sizes:
    """The two request counts of each candidate: ``small`` and ``large``.

    Multiples of the 1,024 ids of the "many ids" cases make both runs end
    on the same id.
    """

    small: int
    large: int


#: ``make bench``: 10,240 requests apart, a few instructions of rounding.
FULL = Sizes(small=2_048, large=12_288)
#: Smoke runs: start-up dominates, the figures only need to be sane.
QUICK = Sizes(small=64, large=192)


def _runner(part: str, case_name: str, name: str) -> Runner:
    """The timed part's runner for ``name`` in ``case_name``, its response checked first."""
    clock = time.perf_counter_ns
    if part == "asgi":
        case = next(c for c in asgi_inprocess.CASES if c.name == case_name)
        asgi = (
            asgi_app if name == asgi_inprocess.BARE else asgi_inprocess.CANDIDATES[name](asgi_app)
        )
        loop = asyncio.new_event_loop()
        messages = loop.run_until_complete(asgi_inprocess.collect_response(asgi, case.scope()))
        asgi_inprocess.check_response(name, case, messages)
        return asgi_inprocess.runner(asgi, case, loop, clock)
    if part == "wsgi":
        wcase = next(c for c in wsgi_inprocess.CASES if c.name == case_name)
        wsgi = (
            wsgi_app if name == wsgi_inprocess.BARE else wsgi_inprocess.CANDIDATES[name](wsgi_app)
        )
        wsgi_inprocess.check_response(name, wcase, wsgi)
        return wsgi_inprocess.runner(wsgi, wcase, clock)
    raise ValueError(f"unknown part {part!r}: choose from {', '.join(_PLAN)}")


def child(argv: list[str]) -> None:
    """Serve ``N`` requests of ``CASE`` through candidate ``NAME`` of ``PART``, then return."""
    if len(argv) != 4:
        raise SystemExit("usage: python -m benchmarks.instructions PART CASE NAME N")
    part, case_name, name, n = argv
    _runner(part, case_name, name)(int(n))


def count(valgrind: str, part: str, case: str, name: str, requests: int) -> int:
    """Instructions of a whole child run serving ``requests`` requests."""
    with tempfile.TemporaryDirectory(prefix="sessionctx-instr-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        env = os.environ | {"PYTHONHASHSEED": "0", "PYTHONPATH": str(_ROOT)}
        command = [
            valgrind,
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            part,
            case,
            name,
            str(requests),
        ]
        done = subprocess.run(command, env=env, cwd=_ROOT, capture_output=True, timeout=600)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{part} {case} {name}: valgrind exited {done.returncode}: {tail}")
        found = _SUMMARY.search(out.read_bytes() if out.exists() else b"")
        if found is None:
            raise RuntimeError(f"{part} {case} {name}: valgrind wrote no instruction count")
        return int(found.group(1))


def per_request(valgrind: str, part: str, case: str, name: str, sizes: Sizes) -> float:
    """Instructions one request costs: the large run minus the small, per request."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        small, large = pool.map(
            lambda n: count(valgrind, part, case, name, n), (sizes.small, sizes.large)
        )
    return (large - small) / (sizes.large - sizes.small)


def _rows(part: str, case: str, counts: dict[str, float]) -> list[Row]:
    """The bare app's row, then each candidate's: instructions added and the ratio to the floor."""
    module = asgi_inprocess if part == "asgi" else wsgi_inprocess
    bare, floor = counts[module.BARE], counts[module.FLOOR]
    label = f"{part}, {case}"
    rows = [Row("instr", label, module.BARE, bare, "instr")]
    for name, value in counts.items():
        if name != module.BARE:
            added = value - bare
            rows.append(
                Row(
                    part="instr",
                    case=label,
                    candidate=name,
                    absolute=value,
                    unit="instr",
                    added=added,
                    added_unit="instr added",
                    ratio=added / (floor - bare),
                    ratio_of="floor",
                )
            )
    return rows


def run(sizes: Sizes, valgrind: str | None) -> list[Row]:
    """Rows of instructions per request for each part's header-valid cases."""
    if valgrind is None:
        return [
            Row(
                "instr",
                "-",
                "-",
                note="skipped: valgrind not found (make bench installs it with apt-get as root)",
            )
        ]
    rows: list[Row] = []
    for part, (cases, names) in _PLAN.items():
        for case in cases:
            counts: dict[str, float] = {}
            for name in names:
                counts[name] = per_request(valgrind, part, case, name, sizes)
            rows += _rows(part, case, counts)
    method = (
        f"valgrind --tool=cachegrind; (I({sizes.large:,}) - I({sizes.small:,})) / "
        f"{sizes.large - sizes.small:,} requests of the in-process loop, PYTHONHASHSEED=0"
    )
    rows[0] = dataclasses.replace(rows[0], note=method)
    return rows


if __name__ == "__main__":
    child(sys.argv[1:])
