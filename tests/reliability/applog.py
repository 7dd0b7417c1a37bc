"""Logging of the apps the reliability tests serve: one line per log call, tagged
with the session id by :class:`sessionctx.log_filters.SessionIdFilter`.

Servers run as subprocesses and write to ``<dir>/<pid>.log`` (``dir`` from the
``SESSIONCTX_RELIABILITY_LOG_DIR`` environment variable); the test reads the
files back once the server has stopped. In-process tests attach their own
handler to :data:`APP_LOGGER` instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sessionctx import current_session_id
from sessionctx.log_filters import SessionIdFilter

__all__ = [
    "APP_LOGGER",
    "LOG_DIR_ENV",
    "LOG_FORMAT",
    "LogLine",
    "configure_from_env",
    "log_request",
    "log_to_file",
    "read_in_thread",
    "read_log_lines",
]

LOG_DIR_ENV = "SESSIONCTX_RELIABILITY_LOG_DIR"
LOG_FORMAT = "%(session_id)s %(message)s"
APP_LOGGER = logging.getLogger("sessionctx.reliability.app")
APP_LOGGER.setLevel(logging.INFO)
APP_LOGGER.propagate = False

LogLine = tuple[str, str, str]
"""``(session id, request key, where)`` parsed from one line."""


def log_to_file(logger: logging.Logger, suffix: str) -> None:
    """Send ``logger``'s records through ``SessionIdFilter`` to this process's
    ``<pid>.<suffix>`` when the env var names a directory (once)."""
    log_dir = os.environ.get(LOG_DIR_ENV)
    if not log_dir or logger.handlers:
        return
    handler = logging.FileHandler(Path(log_dir) / f"{os.getpid()}.{suffix}", encoding="utf-8")
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)


def configure_from_env() -> None:
    """Send :data:`APP_LOGGER` to this process's file when the env var names a directory."""
    log_to_file(APP_LOGGER, "log")


def log_request(key: str, where: str) -> None:
    """Log one line for request ``key`` from the place named ``where``."""
    APP_LOGGER.info("req=%s where=%s", key, where)


def read_in_thread(key: str) -> str | None:
    """The session id a worker thread the app hands work to sees, logged from ``thread``."""
    log_request(key, "thread")
    return current_session_id()


def read_log_lines(log_dir: Path) -> Iterator[LogLine]:
    """Every app log line written under ``log_dir``."""
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(encoding="utf-8").splitlines():
            sid, _, rest = line.partition(" req=")
            key, _, where = rest.partition(" where=")
            yield sid, key, where
