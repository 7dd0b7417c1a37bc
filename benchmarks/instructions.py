"""Instructions per request, counted by valgrind: the in-process parts free of timing noise.

    python -m benchmarks --only instr                     # this part alone, in the table
    python -m benchmarks.instructions PART CASE NAME N    # one child run (what the part starts)

Each candidate's in-process loop (the very runners of the ``asgi``, ``wsgi``
and ``django`` parts, bare app included) runs in a child Python under
``valgrind --tool=cachegrind --cache-sim=no`` twice, with a small and a large
number of requests. The difference of the two totals over the difference of
the counts is what one request costs, with start-up, imports and warm-up
cancelled out; ``PYTHONHASHSEED`` is fixed so that both runs hash alike.
cachegrind counts per C function too, so the instructions a middleware adds
over the bare app are also split by kind of work (``WHERE``): the interpreter
loop running its Python code, its id check, contextvars, memory, calls,
coroutines, dicts and sets, and the rest.

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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from benchmarks import asgi_inprocess, django_inprocess, wsgi_inprocess
from benchmarks.apps import asgi_app, wsgi_app
from benchmarks.report import Row, inprocess_rows
from benchmarks.timing import Runner

__all__ = ["FULL", "QUICK", "WHERE", "Sizes", "child", "count", "per_request", "run", "where"]

_ROOT = Path(__file__).resolve().parent.parent
_SUMMARY = re.compile(r"^summary:\s+(\d+)\s*$", re.MULTILINE)

#: Kinds of work, by the names of CPython's (3.11) C functions that do it; the
#: first that matches wins. What a candidate runs as Python code is the
#: interpreter loop's work; what it calls in C shows under the C function.
WHERE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("bytecodes", r"^_PyEval_EvalFrameDefault$"),
        ("id check", r"sre_|translate|isascii|encode|utf8"),
        ("contextvars", r"hamt|context"),
        ("memory", r"alloc|free|gc_|newreference|memset|memcpy|memmove|trash|unlink_chunk"),
        (
            "calls",
            r"frame|initialize_locals|_PyEval_Vector|PyFunction_|^func_|vectorcall|"
            r"cfunction|MakeTpCall|CheckFunctionResult",
        ),
        ("coroutines", r"gen_|coro|PyGen"),
        ("dicts and sets", r"dict|keys_lookup|^set_|hash"),
    )
)
_REST = "the rest"


class _Part(NamedTuple):
    """What is counted of one in-process part."""

    #: The part's module: its candidates' names and its header-valid case.
    module: ModuleType
    cases: tuple[str, ...]
    names: tuple[str, ...]
    #: The part serves this many times fewer requests than ``Sizes`` say.
    share: int = 1


#: The cases with a valid header (those the budget is about) and the
#: candidates of each part that do the same work. A Django request costs some
#: 40 times a bare WSGI one, so that part counts one case, with fewer requests.
_PLAN: dict[str, _Part] = {
    "asgi": _Part(
        asgi_inprocess,
        (asgi_inprocess.VALID.name, asgi_inprocess.VARIED.name),
        (
            asgi_inprocess.BARE,
            asgi_inprocess.FLOOR,
            asgi_inprocess.OURS,
            asgi_inprocess.CORRELATION_ID,
        ),
    ),
    "wsgi": _Part(
        wsgi_inprocess,
        (wsgi_inprocess.VALID.name, wsgi_inprocess.VARIED.name),
        (wsgi_inprocess.BARE, wsgi_inprocess.FLOOR, wsgi_inprocess.OURS),
    ),
    "django": _Part(
        django_inprocess,
        (django_inprocess.VALID.name,),
        (
            django_inprocess.BARE,
            django_inprocess.FLOOR,
            django_inprocess.OURS,
            django_inprocess.DJANGO_GUID,
        ),
        share=8,
    ),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The two request counts of each candidate: ``small`` and ``large``."""

    small: int
    large: int


#: ``make bench``: 10,240 requests apart, a few instructions of rounding;
#: multiples of the 1,024 ids of the "many ids" cases, so both runs end on
#: the same id.
FULL = Sizes(small=2_048, large=12_288)
#: Smoke runs: start-up dominates, the figures only need to be sane.
QUICK = Sizes(small=64, large=192)


def _runner(part: str, case_name: str, name: str) -> Runner:
    """The timed part's runner for ``name`` in ``case_name``, its response checked first."""
    plan = _PLAN.get(part)
    if plan is None:
        raise ValueError(f"unknown part {part!r}: choose from {', '.join(_PLAN)}")
    case = next(c for c in plan.module.CASES if c.name == case_name)
    clock = time.perf_counter_ns
    if part == "asgi":
        asgi = (
            asgi_app if name == asgi_inprocess.BARE else asgi_inprocess.CANDIDATES[name](asgi_app)
        )
        loop = asyncio.new_event_loop()
        messages = loop.run_until_complete(asgi_inprocess.collect_response(asgi, case.scope()))
        asgi_inprocess.check_response(name, case, messages)
        return asgi_inprocess.runner(asgi, case, loop, clock)
    if part == "django":
        wsgi = django_inprocess.apps()[name]
    elif name == wsgi_inprocess.BARE:
        wsgi = wsgi_app
    else:
        wsgi = wsgi_inprocess.CANDIDATES[name](wsgi_app)
    wsgi_inprocess.check_response(name, case, wsgi)
    return wsgi_inprocess.runner(wsgi, case, clock)


def child(argv: list[str]) -> None:
    """Serve ``N`` requests of ``CASE`` through candidate ``NAME`` of ``PART``, then return."""
    if len(argv) != 4:
        raise SystemExit("usage: python -m benchmarks.instructions PART CASE NAME N")
    part, case_name, name, n = argv
    _runner(part, case_name, name)(int(n))


def count(valgrind: str, part: str, case: str, name: str, requests: int) -> Counter[str]:
    """Instructions of a whole child run serving ``requests`` requests, by C function."""
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
        text = out.read_text(encoding="utf-8", errors="replace") if out.exists() else ""
        by_function = _by_function(text)
        found = _SUMMARY.search(text)
        if found is None or int(found.group(1)) != by_function.total():
            raise RuntimeError(f"{part} {case} {name}: valgrind wrote no instruction count")
        return by_function


def _by_function(text: str) -> Counter[str]:
    """Instructions per function of a cachegrind output file (``fn=`` blocks of
    ``line count`` lines)."""
    counts: Counter[str] = Counter()
    function = ""
    for line in text.splitlines():
        if line.startswith("fn="):
            function = line[3:]
        elif line[:1].isdigit():
            counts[function] += int(line.split()[1])
    return counts


def per_request(valgrind: str, part: str, case: str, name: str, sizes: Sizes) -> dict[str, float]:
    """Instructions one request costs in each C function: the large run minus the small,
    per request. Their sum is what the request costs."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        small, large = pool.map(
            lambda n: count(valgrind, part, case, name, n), (sizes.small, sizes.large)
        )
    requests = sizes.large - sizes.small
    return {fn: (large[fn] - small[fn]) / requests for fn in large.keys() | small.keys()}


def where(profile: dict[str, float], bare: dict[str, float]) -> dict[str, float]:
    """Instructions a candidate adds over the bare app, by kind of work (``WHERE``)."""
    added = dict.fromkeys([kind for kind, _ in WHERE] + [_REST], 0.0)
    for fn in profile.keys() | bare.keys():
        kind = next((kind for kind, pattern in WHERE if pattern.search(fn)), _REST)
        added[kind] += profile.get(fn, 0.0) - bare.get(fn, 0.0)
    return added


def _rows(part: str, case: str, profiles: dict[str, dict[str, float]]) -> list[Row]:
    """The timed parts' rows, in instructions, with (in ``extra``) where each
    candidate's added instructions go; the note on sessionctx's row in the
    header-valid case sets that side by side with the floor's."""
    module = _PLAN[part].module
    kinds = {name: where(profile, profiles[module.BARE]) for name, profile in profiles.items()}
    counts = {name: [sum(profile.values())] for name, profile in profiles.items()}
    rows = inprocess_rows(
        "instr", f"{part}, {case}", counts, bare=module.BARE, floor=module.FLOOR, unit="instr"
    )
    for i, row in enumerate(rows[1:], start=1):
        note = ""
        if row.candidate == module.OURS and case == module.VALID.name:
            note = "added instructions by kind of work, floor / sessionctx: " + "; ".join(
                f"{kind} {kinds[module.FLOOR][kind]:,.0f} / {added:,.0f}"
                for kind, added in kinds[row.candidate].items()
            )
        rows[i] = dataclasses.replace(row, note=note, extra={"added_by_kind": kinds[row.candidate]})
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
    for part, plan in _PLAN.items():
        part_sizes = Sizes(small=sizes.small // plan.share, large=sizes.large // plan.share)
        first = len(rows)
        for case in plan.cases:
            profiles = {
                name: per_request(valgrind, part, case, name, part_sizes) for name in plan.names
            }
            rows += _rows(part, case, profiles)
        if first == 0 or part_sizes != sizes:
            rows[first] = dataclasses.replace(rows[first], note=_method(part_sizes))
    return rows


def _method(sizes: Sizes) -> str:
    return (
        f"valgrind --tool=cachegrind; (I({sizes.large:,}) - I({sizes.small:,})) / "
        f"{sizes.large - sizes.small:,} requests of the in-process loop, PYTHONHASHSEED=0"
    )


if __name__ == "__main__":
    child(sys.argv[1:])
