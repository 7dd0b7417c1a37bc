"""Rows of results, the table they print as, and the JSON they are saved as."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Row",
    "Verdict",
    "inprocess_rows",
    "machine",
    "median_added",
    "render",
    "write_json",
]


@dataclass(frozen=True)
class Verdict:
    """A section 7 target and whether the measured figure meets it."""

    target: str
    passed: bool
    measured: str


@dataclass(frozen=True)
class Row:
    """One line of the table.

    ``absolute`` is the candidate's own figure in ``unit`` (ns or instructions
    per request, requests per second, or per second of the server's CPU time,
    bytes of growth). ``added`` is what it costs over the bare app of the same
    part: ns or instructions per request in-process, the change in throughput
    in percent end to end (negative is a loss). ``ratio`` compares it with
    ``ratio_of``: added time (or instructions) over the floor's in-process,
    throughput over the bare app's end to end, time over ``uuid4``'s for the
    generator.
    """

    part: str
    case: str
    candidate: str
    absolute: float | None = None
    unit: str = ""
    added: float | None = None
    added_unit: str = ""
    ratio: float | None = None
    ratio_of: str = ""
    verdict: Verdict | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        if self.verdict is None:
            return "skip" if self.note.startswith("skipped") else ""
        return ("pass" if self.verdict.passed else "FAIL") + f" ({self.verdict.measured})"


def median_added(samples: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Median over rounds of each candidate's time minus the baseline's in the same round."""
    base = samples[baseline]
    return {
        name: statistics.median(v - b for v, b in zip(values, base, strict=True))
        for name, values in samples.items()
        if name != baseline
    }


def inprocess_rows(
    part: str,
    case: str,
    samples: dict[str, list[float]],
    *,
    bare: str,
    floor: str,
    verdict: Callable[[str, dict[str, float]], Verdict | None] = lambda name, added: None,
    unit: str = "ns",
) -> list[Row]:
    """The bare app's row, then one per other candidate: ``unit`` added (ns or
    instructions per request) and the ratio to ``floor``.

    ``verdict(name, added)`` gives the target a candidate is judged by in this case, if any.
    """
    added = median_added(samples, bare)
    rows = [Row(part, case, bare, statistics.median(samples[bare]), unit)]
    for name in samples:
        if name == bare:
            continue
        rows.append(
            Row(
                part=part,
                case=case,
                candidate=name,
                absolute=statistics.median(samples[name]),
                unit=unit,
                added=added[name],
                added_unit=f"{unit} added",
                ratio=added[name] / added[floor],
                ratio_of="floor",
                verdict=verdict(name, added),
                extra={f"samples_{unit}": samples[name]},
            )
        )
    return rows


def machine() -> dict[str, Any]:
    """Python version, CPU model (from ``/proc/cpuinfo``), CPU count, load and date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    try:
        load: list[float] | None = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load": load,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _duration(ns: float) -> str:
    if abs(ns) >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if abs(ns) >= 1_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns:.0f} ns"


def _bytes(n: float) -> str:
    sign = "+" if n >= 0 else "-"
    n = abs(n)
    if n >= 1024 * 1024:
        return f"{sign}{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{sign}{n / 1024:.1f} KiB"
    return f"{sign}{n:.0f} B"


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ns":
        return _duration(value)
    if unit == "ns added":
        return ("+" if value >= 0 else "") + _duration(value)
    if unit in ("req/s", "req/CPU-s"):
        return f"{value:,.0f} {unit}"
    if unit == "requests":
        return f"{value:,.0f} req"
    if unit == "bytes":
        return _bytes(value)
    if unit == "%":
        return f"{value:+.1f} %"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "% own":
        return f"{value:.1f} % own"
    if unit == "instr":
        return f"{value:,.0f} instr"
    if unit == "instr added":
        return f"{value:+,.0f} instr"
    return f"{value:g} {unit}".strip()


_COLUMNS = ("part", "case", "candidate", "measured", "added", "ratio", "target", "result")


def _cells(row: Row) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x {row.ratio_of}".strip()
    return (
        row.part,
        row.case,
        row.candidate,
        _figure(row.absolute, row.unit),
        _figure(row.added, row.added_unit),
        ratio,
        row.verdict.target if row.verdict else "",
        row.result,
    )


def render(rows: Sequence[Row], info: dict[str, Any]) -> str:
    """The table as text: a header naming the machine, one line per row, then notes."""
    cells = [_COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    load = info.get("load")
    head = (
        f"sessionctx benchmarks: {info['python']}, {info['cpu']} ({info['cpus']} CPUs), "
        f"{info['date']}"
        + (f", load {load[0]:.2f}" if load else "")
        + (f", clock {info['clock']}" if "clock" in info else "")
    )
    out = [head, ""]
    for i, line in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [
        " ".join(x for x in (row.part, row.case, row.candidate) if x != "-") + f": {row.note}"
        for row in rows
        if row.note
    ]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def write_json(rows: Iterable[Row], info: dict[str, Any], path: Path) -> None:
    """Save the machine info and every row (with its raw numbers) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "rows": [asdict(row) | {"result": row.result} for row in rows]}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
