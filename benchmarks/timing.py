"""Interleaved timing: every candidate runs a chunk in turn, round after round.

Interleaving spreads slow phases of a shared machine (another process waking
up, frequency changes) over all candidates instead of penalising whichever
ran at that moment; the median over rounds then drops the outliers. The
garbage collector stays enabled, as in production, but is run between rounds
so that one candidate does not pay for another's garbage.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["FULL", "QUICK", "Budget", "Runner", "calls", "interleave"]

#: ``run(n)`` performs ``n`` operations and returns the nanoseconds they took.
Runner = Callable[[int], int]


def calls(fn: Callable[[], object], clock: Callable[[], int]) -> Runner:
    """A runner that calls ``fn`` once per operation."""

    def run(n: int) -> int:
        start = clock()
        for _ in range(n):
            fn()
        return clock() - start

    return run


@dataclass(frozen=True)
class Budget:
    """How long to measure: ``rounds`` rounds of about ``chunk_ns`` per candidate.

    ``clock`` is what the runners read: wall time (``perf_counter_ns``) by
    default; ``thread_time_ns`` counts only the CPU time of the benchmark's
    thread, which is steadier while other processes compete for the CPUs.
    """

    rounds: int
    chunk_ns: int
    min_iterations: int
    max_iterations: int
    clock: Callable[[], int] = time.perf_counter_ns


#: Smoke runs: a handful of iterations, two rounds, no calibration.
QUICK = Budget(rounds=2, chunk_ns=0, min_iterations=20, max_iterations=20)
#: ``make bench``: ninety rounds of ~5 ms per candidate. Short chunks keep the
#: candidates compared within milliseconds of each other, so a slow phase of
#: the machine hits them alike: with nine rounds of 50 ms, the ratio of the
#: same two middlewares moved by 0.3 from run to run here (0.86x-1.14x in six
#: runs), with ninety of 5 ms by 0.1 (1.06x-1.16x).
FULL = Budget(rounds=90, chunk_ns=5_000_000, min_iterations=50, max_iterations=100_000)


def _iterations(run: Runner, budget: Budget) -> int:
    """Warm ``run`` up, then pick the iteration count that fills one chunk."""
    run(budget.min_iterations)
    if budget.chunk_ns <= 0:
        return budget.min_iterations
    probe = max(budget.min_iterations, 200)
    elapsed = max(run(probe), 1)
    wanted = budget.chunk_ns * probe // elapsed
    return max(budget.min_iterations, min(budget.max_iterations, wanted))


def interleave(runners: Mapping[str, Runner], budget: Budget) -> dict[str, list[float]]:
    """Nanoseconds per operation of each runner, one sample per round.

    The starting candidate rotates from round to round, so none always runs
    right after the collection between rounds.
    """
    counts = {name: _iterations(run, budget) for name, run in runners.items()}
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(budget.rounds):
        gc.collect()
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            n = counts[name]
            samples[name].append(runners[name](n) / n)
    return samples
