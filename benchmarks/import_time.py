"""What ``import sessionctx`` costs: SPEC.md section 1's budget of 15 ms for the
package's own modules.

Each run is a fresh interpreter with ``-X importtime``; the figure is the sum of
the self times of the ``sessionctx`` modules (the standard library modules they
import are the interpreter's, listed apart as the whole import). Two ways:

- bytecode cached, as after ``pip install`` (which compiles it) or any earlier
  import that could write ``__pycache__``;
- compiled on every import, as where no ``.pyc`` can be written or read
  (``PYTHONDONTWRITEBYTECODE=1`` with an editable install, a read-only tree).

Both import a copy of the package in a temporary directory: nothing is
written into the source tree. Run alone with ``python -m benchmarks.import_time``.
"""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import sessionctx
from benchmarks.report import Row, Verdict

__all__ = ["BUDGET_MS", "FULL", "QUICK", "run"]

#: SPEC.md section 1: the package's own modules add less than this.
BUDGET_MS = 15.0
#: Interpreters started per way of importing.
FULL = 21
QUICK = 2
TIMEOUT = 60


_NO_BYTECODE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _import_once(env: dict[str, str], *args: str, stderr: bool = False) -> str:
    """Run a fresh interpreter (``-B``: it writes no bytecode); its stdout, or stderr."""
    done = subprocess.run(
        [sys.executable, "-B", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=True,
    )
    return done.stderr if stderr else done.stdout.strip()


def _times(report: str) -> tuple[float, float]:
    """From ``-X importtime``'s report: (own modules' self time, the whole
    import's time), in ms."""
    own = whole = 0
    for line in report.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        if not self_us.strip().isdigit():
            continue  # the header line
        module = name.strip()
        if module == "sessionctx" or module.startswith("sessionctx."):
            own += int(self_us)
        if module == "sessionctx":
            whole = int(cumulative_us)
    if whole == 0:
        raise RuntimeError(f"no import time reported for sessionctx: {report[-500:]!r}")
    return own / 1000, whole / 1000


def run(runs: int = FULL) -> list[Row]:
    """Rows for the import with cached bytecode and compiled on every import."""
    package = Path(sessionctx.__file__).parent
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sessionctx-import-") as scratch:
        # Two copies of the package, first on the path: one compiled ahead,
        # one never (-B: nothing is written). The standard library keeps its
        # own cached bytecode either way.
        ways: dict[str, dict[str, str]] = {}
        for way in ("bytecode cached", "compiled on import"):
            root = Path(scratch, way.replace(" ", "-"))
            shutil.copytree(package, root / "sessionctx", ignore=_NO_BYTECODE)
            if way == "bytecode cached":
                compileall.compile_dir(root, quiet=1)
            ways[way] = {**os.environ, "PYTHONPATH": str(root)}
        for way, env in ways.items():
            where = _import_once(env, "-c", "import sessionctx; print(sessionctx.__file__)")
            if not where.startswith(scratch):
                raise RuntimeError(f"{way}: imported {where}, not the copy in {scratch}")
        samples: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
        for _ in range(runs):  # interleaved: a slow phase of the machine hits both
            for way, env in ways.items():
                samples[way].append(
                    _times(
                        _import_once(
                            env, "-X", "importtime", "-c", "import sessionctx", stderr=True
                        )
                    )
                )
    for way, measured in samples.items():
        own = statistics.median(m[0] for m in measured)
        whole = statistics.median(m[1] for m in measured)
        rows.append(
            Row(
                part="import",
                case=way,
                candidate="import sessionctx",
                absolute=own,
                unit="ms",
                note=f"{whole:.1f} ms with the standard library modules it loads; median of {runs}",
                verdict=Verdict(f"< {BUDGET_MS:g} ms", own < BUDGET_MS, f"{own:.1f} ms"),
                extra={"own_ms": [m[0] for m in measured], "whole_ms": [m[1] for m in measured]},
            )
        )
    return rows


if __name__ == "__main__":
    from benchmarks.report import machine, render

    print(render(run(), machine()))
