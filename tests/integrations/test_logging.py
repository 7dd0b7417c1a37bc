"""The stdlib logging setup from the README, run in a fresh interpreter.

``dictConfig`` closes every existing handler, so it runs in a subprocess
rather than in the test process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import logging
    import logging.config
    import sys

    from sessionctx import session

    session_filter = {"()": "sessionctx.log_filters.SessionIdFilter"}
    if len(sys.argv) > 1:
        session_filter["default"] = sys.argv[1]

    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"session_id": session_filter},
        "formatters": {
            "plain": {"format": "%(levelname)s [%(session_id)s] %(name)s: %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["session_id"],
                "formatter": "plain",
            },
        },
        "root": {"level": "INFO", "handlers": ["console"]},
    })

    log = logging.getLogger("app")
    log.info("before")
    with session("sess-1"):
        log.info("inside")
        logging.getLogger("app.db").warning("query")
    log.info("after")
    """
)


@pytest.mark.parametrize(
    ("argv", "placeholder"),
    [pytest.param([], "-", id="default-dash"), pytest.param(["none"], "none", id="custom-default")],
)
def test_dictconfig_filter_puts_the_id_on_every_line(argv: list[str], placeholder: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"INFO [{placeholder}] app: before",
        "INFO [sess-1] app: inside",
        "WARNING [sess-1] app.db: query",
        f"INFO [{placeholder}] app: after",
    ]
