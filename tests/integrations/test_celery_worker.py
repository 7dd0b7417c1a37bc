"""A real ``celery worker`` process, set up as the README says
(``celery_worker_app.py``): each task runs in its sender's session, in a forked
child too, and every line the task logs carries that id."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import is_generated, running_process

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integrations.celery_worker_app"
TIMEOUT = 60
#: (tag, session the task is sent in); ``None``: sent outside any session.
SENT = [("t1", "sess-1"), ("t2", "sess-2"), ("t3", "sess-1"), ("t0", None)]
PUBLISH = f"""
from sessionctx import session
from {APP} import report
for tag, sid in {SENT!r}:
    if sid is None:
        report.delay(tag)
    else:
        with session(sid):
            report.delay(tag)
"""
# "INFO ForkPoolWorker-1 [sess-1] celery_worker_app.work: app logger line t1"
LINE = re.compile(
    r"^(?P<level>[A-Z]+) (?P<process>\S+) \[(?P<sid>[^\]]+)\] (?P<name>\S+): (?P<message>.*)$"
)


@contextmanager
def running_worker(folder: Path, pool: str, logging: str) -> Iterator[Path]:
    """A worker of ``APP`` until the block ends; yields its log file."""
    log = folder / "worker.log"
    env = {**os.environ, "SESSIONCTX_CELERY_DIR": str(folder), "SESSIONCTX_CELERY_LOGGING": logging}
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        APP,
        "worker",
        "-P",
        pool,
        "-c",
        "2",
        "-l",
        "INFO",
    ]
    argv += ["--without-heartbeat", "--without-mingle", "--without-gossip"]
    with running_process(argv, log, env):
        yield log


def task_lines(log: Path, count: int) -> list[re.Match[str]]:
    """The lines the tasks and Celery's tracer logged, once ``count`` tasks succeeded."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [m for m in map(LINE.match, text.splitlines()) if m is not None]
        if sum(" succeeded in " in m["message"] for m in lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"the worker did not run {count} tasks:\n{text}"
        time.sleep(0.1)


@pytest.mark.server
@pytest.mark.parametrize(
    ("pool", "logging"),
    [
        # The README's configuration, given to the setup_logging signal.
        ("prefork", "setup_logging"),
        ("threads", "setup_logging"),
        ("solo", "setup_logging"),
        # Celery's own, with %(session_id)s in worker_log_format and worker_task_log_format.
        ("prefork", "celery"),
        ("threads", "celery"),
    ],
)
def test_a_worker_runs_each_task_in_its_senders_session_and_logs_its_id(
    tmp_path: Path, pool: str, logging: str
) -> None:
    env = {**os.environ, "SESSIONCTX_CELERY_DIR": str(tmp_path)}
    # Sent before the worker starts: kombu's filesystem transport reads a
    # message file that is being written as broken.
    subprocess.run([sys.executable, "-c", PUBLISH], cwd=ROOT, env=env, check=True, timeout=TIMEOUT)
    with running_worker(tmp_path, pool, logging) as log:
        lines = task_lines(log, len(SENT))

    for tag, sid in SENT:
        mine = [m for m in lines if m["message"].endswith(f" line {tag}")]
        assert [m["name"] for m in mine] == [APP, "celery_worker_app.work"], mine
        seen = {m["sid"] for m in mine}
        assert len(seen) == 1, mine
        (logged,) = seen
        if sid is None:
            assert is_generated(logged)
        else:
            assert logged == sid
        # Celery's own line for the task carries the id, and the result names it.
        done = [m for m in lines if m["name"] == "celery.app.trace" and m["sid"] == logged]
        assert any(m["message"].endswith(f": {logged!r}") for m in done), lines
    if pool == "prefork":
        assert all(
            m["process"].startswith("ForkPoolWorker-") for m in lines if " line " in m["message"]
        )
    # Nothing of the broker's lands in the working directory (the repository).
    assert not (ROOT / "control").exists()
    # Lines the worker's main process logs outside any task show the default.
    received = [m for m in lines if m["message"].endswith(" received")]
    assert len(received) == len(SENT)
    assert {m["sid"] for m in received} == {"-"}
