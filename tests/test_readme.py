"""The README's Python blocks run, each in a Python of its own.

A block runs as written, from an empty directory, with the example Django
project's settings for the blocks that set Django up. An HTML comment on the
line before a block can say ``<!-- readme-test: continues the block above -->``
(it runs after that block, in the same Python) or
``<!-- readme-test: not run (why) -->`` (a part of a larger program, or one
that would reach a server); no other block is left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(
    r"^(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```python\n(?P<code>.*?)^```$", re.M | re.S
)
CONTINUES = "continues the block above"
NOT_RUN = re.compile(r"not run \(.+\)")
TIMEOUT = 60


class Program(NamedTuple):
    line: int
    code: str


def programs() -> tuple[list[Program], list[str]]:
    """The programs the README's blocks make, and the marks of those not run."""
    text = README.read_text(encoding="utf-8")
    runs: list[Program] = []
    skipped: list[str] = []
    for block in BLOCK.finditer(text):
        mark, code = block["mark"], block["code"]
        line = text.count("\n", 0, block.start("code")) + 1
        if mark is None:
            runs.append(Program(line, code))
        elif mark == CONTINUES:
            if not runs:
                raise AssertionError(f"README.md:{line}: no block above to continue")
            runs[-1] = Program(runs[-1].line, runs[-1].code + code)
        elif NOT_RUN.fullmatch(mark):
            skipped.append(mark)
        else:
            raise AssertionError(f"README.md:{line}: unknown readme-test mark {mark!r}")
    return runs, skipped


RUNS, SKIPPED = programs()


def test_the_readme_has_blocks_to_run_and_few_left_out() -> None:
    assert len(RUNS) >= 12
    assert len(SKIPPED) <= 4


@pytest.mark.parametrize("program", RUNS, ids=[f"line-{p.line}" for p in RUNS])
def test_a_readme_block_runs(program: Program, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "examples.django_project.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", program.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"README.md:{program.line}:\n{done.stderr}"
