"""Figures the reliability tests measure, printed as one table at the end of the run.

Tests record what they did (before asserting, so a failing run still shows its
numbers); ``conftest.pytest_terminal_summary`` prints :func:`render`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["FIGURES", "Figures", "render"]


@dataclass(frozen=True)
class LoadRun:
    server: str
    requests: int
    concurrency: int
    mismatches: int
    log_lines: int
    seconds: float


@dataclass(frozen=True)
class FaultRun:
    server: str
    fault: str
    clean: bool


@dataclass(frozen=True)
class LeakRun:
    middleware: str
    requests: int
    growth_bytes: int
    sessions_left: int


@dataclass
class Figures:
    """Everything measured in this run."""

    load: list[LoadRun] = field(default_factory=list)
    faults: list[FaultRun] = field(default_factory=list)
    leaks: list[LeakRun] = field(default_factory=list)
    fuzz_examples: Counter[str] = field(default_factory=Counter)

    def empty(self) -> bool:
        return not (self.load or self.faults or self.leaks or self.fuzz_examples)


FIGURES = Figures()


def _table(
    header: tuple[str, ...], rows: list[tuple[object, ...]], *, text_last: bool = False
) -> list[str]:
    """Aligned columns: the first (and with ``text_last`` the last) left, numbers right."""
    cells = [header, *(tuple(str(c) for c in row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    left = {0, len(header) - 1} if text_last else {0}
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def render(figures: Figures, sizes_name: str) -> list[str]:
    """The figures table as text lines."""
    lines = [f"sessionctx reliability figures ({sizes_name})", ""]
    if figures.load:
        lines += _table(
            ("load: server", "requests", "concurrency", "mismatches", "log lines", "seconds"),
            [
                (r.server, r.requests, r.concurrency, r.mismatches, r.log_lines, f"{r.seconds:.1f}")
                for r in figures.load
            ],
        )
        total = sum(r.requests for r in figures.load)
        bad = sum(r.mismatches for r in figures.load)
        lines += [f"{len(figures.load)} servers, {total} requests, {bad} mismatches", ""]
    if figures.faults:
        by_server: dict[str, list[FaultRun]] = {}
        for run in figures.faults:
            by_server.setdefault(run.server, []).append(run)
        lines += _table(
            ("faults: server", "tried", "unclean", "faults"),
            [
                (
                    server,
                    len(runs),
                    sum(not r.clean for r in runs),
                    ", ".join(dict.fromkeys(r.fault for r in runs)),
                )
                for server, runs in by_server.items()
            ],
            text_last=True,
        )
        unclean = sum(not r.clean for r in figures.faults)
        lines += [f"{len(figures.faults)} faults tried, {unclean} unclean", ""]
    if figures.leaks:
        lines += _table(
            ("leaks: middleware", "requests", "growth (bytes)", "sessions left"),
            [(r.middleware, r.requests, r.growth_bytes, r.sessions_left) for r in figures.leaks],
        )
        worst = max(r.growth_bytes for r in figures.leaks)
        left = sum(r.sessions_left for r in figures.leaks)
        lines += [f"largest growth {worst} bytes, {left} sessions left in a context", ""]
    if figures.fuzz_examples:
        lines += _table(
            ("fuzz: property", "examples"),
            sorted(figures.fuzz_examples.items()),
        )
        lines.append("")
    return lines
