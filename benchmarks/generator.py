"""The default session id generator against ``str(uuid.uuid4())``.

Both produce a random version-4 UUID string with dashes; the generator runs on
every request that arrives without a session id.

Run alone with ``python -m benchmarks.generator``.
"""

from __future__ import annotations

import statistics
import uuid

from benchmarks.report import Row, Verdict
from benchmarks.timing import FULL, Budget, calls, interleave
from sessionctx._validation import generate_session_id

__all__ = ["run"]


def _uuid4_str() -> str:
    return str(uuid.uuid4())


def run(budget: Budget) -> list[Row]:
    """Rows for ``generate_session_id()`` and ``str(uuid.uuid4())``, ns per call."""
    sample = generate_session_id()
    if uuid.UUID(sample).version != 4 or str(uuid.UUID(sample)) != sample:
        raise RuntimeError(f"generate_session_id() made a non-canonical uuid4: {sample!r}")
    samples = interleave(
        {
            "generate_session_id()": calls(generate_session_id, budget.clock),
            "str(uuid.uuid4())": calls(_uuid4_str, budget.clock),
        },
        budget,
    )
    ours = statistics.median(samples["generate_session_id()"])
    theirs = statistics.median(samples["str(uuid.uuid4())"])
    return [
        Row(
            part="generator",
            case="new id",
            candidate="str(uuid.uuid4())",
            absolute=theirs,
            unit="ns",
        ),
        Row(
            part="generator",
            case="new id",
            candidate="generate_session_id()",
            absolute=ours,
            unit="ns",
            ratio=ours / theirs,
            ratio_of="uuid4",
            verdict=Verdict("< str(uuid4())", ours < theirs, f"{theirs / ours:.1f}x faster"),
        ),
    ]


if __name__ == "__main__":
    from benchmarks.report import machine, render

    print(render(run(FULL), machine()))
