"""Where the ASGI middleware's time goes, next to the floor's.

    python -m benchmarks.profile_asgi [--quick]

Two views. First, the pieces of a request timed alone (ns per call, net of
an empty call), interleaved like the main benchmark: what sessionctx does
that the floor does not shows up as a difference between the two columns.
Second, ``cProfile`` over a batch of requests through each middleware: its
own overhead inflates every call alike, so read the split between functions,
not the totals.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from starlette.types import ASGIApp

from benchmarks import asgi_inprocess
from benchmarks.apps import VALID_ID, asgi_app
from benchmarks.floor import AsgiFloorMiddleware, matches_id_rule
from benchmarks.timing import FULL, QUICK, Budget, calls, interleave
from sessionctx._policy import VALID, SessionPolicy
from sessionctx._validation import generate_session_id
from sessionctx.asgi import SessionIdMiddleware
from sessionctx.session import _plain_context

__all__ = ["main", "pieces", "profiles"]

_SID = VALID_ID
_var: ContextVar[object] = ContextVar("profile_asgi")


def _floor_scan(headers: list[tuple[bytes, bytes]]) -> bool:
    sid = None
    for name, value in headers:
        if name == b"x-session-id":
            sid = value.decode("latin-1")
            break
    return sid is not None and matches_id_rule(sid)


def _set_reset() -> None:
    _var.reset(_var.set(_SID))


def pieces(budget: Budget) -> dict[str, float]:
    """Median ns per call of each piece of a request (valid header), net of an empty call."""
    headers = asgi_inprocess.VALID.scope()["headers"]
    policy = SessionPolicy()
    lookup = policy.lookup.lookup_raw
    steps: dict[str, Callable[[], object]] = {
        "empty call": lambda: None,
        "sessionctx: HeaderLookup.lookup_raw": lambda: lookup(headers),
        "floor: scan for one name + regex": lambda: _floor_scan(headers),
        "sessionctx: SessionPolicy.decide (valid)": lambda: policy.decide(VALID, _SID),
        "sessionctx: _plain_context": lambda: _plain_context(_SID),
        "both: ContextVar set + reset": _set_reset,
        "both: sid.encode('latin-1')": lambda: _SID.encode("latin-1"),
        "sessionctx: generate_session_id()": generate_session_id,
        "floor: str(uuid.uuid4())": lambda: str(uuid.uuid4()),
    }
    samples = interleave({name: calls(step, budget.clock) for name, step in steps.items()}, budget)
    empty = statistics.median(samples.pop("empty call"))
    return {name: statistics.median(values) - empty for name, values in samples.items()}


def profiles(requests: int, top: int = 12) -> str:
    """``cProfile`` of ``requests`` valid-header requests through the floor and sessionctx."""
    out = io.StringIO()
    loop = asyncio.new_event_loop()
    try:
        apps: dict[str, ASGIApp] = {
            "floor": AsgiFloorMiddleware(asgi_app),
            "sessionctx": SessionIdMiddleware(asgi_app),
        }
        for name, app in apps.items():
            run = asgi_inprocess.runner(app, asgi_inprocess.VALID, loop, time.perf_counter_ns)
            run(min(requests, 1000))
            profiler = cProfile.Profile()
            profiler.enable()
            run(requests)
            profiler.disable()
            out.write(f"\n== cProfile: {name}, {requests:,} requests, by own time\n")
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(top)
    finally:
        loop.close()
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_asgi")
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke run)")
    args = parser.parse_args(argv)
    print("== pieces of one request (valid header), ns per call net of an empty call")
    for name, ns in pieces(QUICK if args.quick else FULL).items():
        print(f"{ns:8.0f} ns  {name}")
    print(profiles(200 if args.quick else 50_000))


if __name__ == "__main__":
    main()
