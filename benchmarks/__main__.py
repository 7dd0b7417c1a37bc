"""``python -m benchmarks``: run the parts, print one table, save it as JSON.

    python -m benchmarks                      # everything, as ``make bench`` does
    python -m benchmarks --quick              # tiny counts: checks the harness, not speed
    python -m benchmarks --only asgi,wsgi     # some parts
    python -m benchmarks --requests 100000    # fewer requests for the memory part
    python -m benchmarks --cpu-time           # CPU time instead of wall time, on a busy machine

The memory part serves ``--requests`` requests (default 1,000,000, or
``$SESSIONCTX_BENCH_REQUESTS``). The end-to-end part needs ``wrk`` on the PATH,
the instruction counts (``instr``) ``valgrind``, the sampled part (``sampled``)
``wrk`` and ``py-spy`` (the ``bench`` extra); each is skipped with a note
otherwise. ``--strict`` exits 1 when a target of
SPEC.md section 7 is missed; a part that fails to run always exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import (
    asgi_inprocess,
    django_inprocess,
    end_to_end,
    generator,
    import_time,
    instructions,
    memory,
    sampled,
    wsgi_inprocess,
)
from benchmarks.report import Row, machine, render, write_json
from benchmarks.timing import FULL, QUICK

__all__ = ["PARTS", "main"]

PARTS = ("import", "generator", "asgi", "wsgi", "django", "instr", "e2e", "sampled", "memory")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
REQUESTS_ENV_VAR = "SESSIONCTX_BENCH_REQUESTS"
FULL_REQUESTS = 1_000_000
QUICK_REQUESTS = 2000


def _parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}"
        )
    return chosen


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="sessionctx against its peers and hand-written floors (SPEC.md section 7).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny counts: a smoke run of the harness"
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        metavar="PARTS",
        help=f"comma-separated parts to run, from: {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--requests",
        type=_positive,
        default=None,
        metavar="N",
        help=f"requests for the memory part (default ${REQUESTS_ENV_VAR} or {FULL_REQUESTS:,}; "
        f"{QUICK_REQUESTS:,} with --quick)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to save the results (default benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a section 7 target is missed"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time in-process parts with time.thread_time_ns (CPU time of this thread) "
        "instead of time.perf_counter_ns: steadier on a busy machine",
    )
    parser.add_argument(
        "--e2e-alone",
        action="store_true",
        help="e2e part: load one server at a time, in turns, instead of all at once "
        "(a cross-check of the method)",
    )
    args = parser.parse_args(argv)
    if args.requests is None:
        from_env = os.environ.get(REQUESTS_ENV_VAR)
        if from_env:
            try:
                args.requests = _positive(from_env)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"${REQUESTS_ENV_VAR}: {exc}")
        else:
            args.requests = QUICK_REQUESTS if args.quick else FULL_REQUESTS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print the table, save the JSON; return the exit status."""
    args = _arguments(argv)
    budget = QUICK if args.quick else FULL
    if args.cpu_time:
        budget = dataclasses.replace(budget, clock=time.thread_time_ns)
    runs: dict[str, Callable[[], list[Row]]] = {
        "import": lambda: import_time.run(import_time.QUICK if args.quick else import_time.FULL),
        "generator": lambda: generator.run(budget),
        "asgi": lambda: asgi_inprocess.run(budget),
        "wsgi": lambda: wsgi_inprocess.run(budget),
        "django": lambda: django_inprocess.run(budget),
        "instr": lambda: instructions.run(
            instructions.QUICK if args.quick else instructions.FULL, shutil.which("valgrind")
        ),
        "e2e": lambda: end_to_end.run(
            dataclasses.replace(
                end_to_end.QUICK if args.quick else end_to_end.FULL, alone=args.e2e_alone
            ),
            shutil.which("wrk"),
        ),
        "sampled": lambda: sampled.run(
            sampled.QUICK if args.quick else sampled.FULL,
            shutil.which("wrk"),
            sampled.find_py_spy(),
        ),
        "memory": lambda: memory.run(args.requests),
    }
    info = machine() | {"clock": budget.clock.__name__}
    rows: list[Row] = []
    failed = False
    for part in PARTS:
        if part not in args.only:
            continue
        print(f"running {part} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            rows += runs[part]()
        except Exception as exc:  # one broken part should not hide the others' results
            failed = True
            rows.append(Row(part, "-", "-", note=f"error: {type(exc).__name__}: {exc}"))
        print(f"  {part} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(render(rows, info))
    write_json(rows, info, args.json)
    print(f"\nsaved {args.json}")
    missed = any(row.verdict is not None and not row.verdict.passed for row in rows)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
