"""A Celery app for a real ``celery worker`` process (``test_celery_worker.py``).

It is set up as the README's Celery section says: ``connect(app)`` when the
module is imported (before the prefork pool forks its children), and the
worker's log lines given the session id with ``SessionIdFilter``. With
``$SESSIONCTX_CELERY_LOGGING=celery``, the worker configures logging itself,
with ``%(session_id)s`` in its formats. The broker
is kombu's filesystem transport, in ``$SESSIONCTX_CELERY_DIR``: no server is
needed. Results are read from the worker's log.
"""

from __future__ import annotations

import logging
import logging.config
import os
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.utils.log import get_task_logger

from sessionctx import current_session_id
from sessionctx.integrations.celery import connect

_folder = Path(os.environ["SESSIONCTX_CELERY_DIR"])
_messages, _control = _folder / "messages", _folder / "control"
for _path in (_messages, _control):
    _path.mkdir(parents=True, exist_ok=True)

app = Celery("celery_worker_app", broker="filesystem://", set_as_current=False)
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(_messages),
        "data_folder_out": str(_messages),
        # The broadcast exchanges go there too, not into the working directory.
        "control_folder": str(_control),
        "polling_interval": 0.05,
    },
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)
connect(app)

FORMAT = "%(levelname)s %(processName)s [%(session_id)s] %(name)s: %(message)s"

# The README's worker logging: with a setup_logging receiver, Celery leaves
# logging to it, and the README's configuration gives every line the id.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"session_id": {"()": "sessionctx.log_filters.SessionIdFilter"}},
    "formatters": {"plain": {"format": FORMAT}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["session_id"],
            "formatter": "plain",
        },
    },
    "root": {"level": "INFO", "handlers": ["console"]},
}


def configure_logging(**kwargs: Any) -> None:
    logging.config.dictConfig(LOGGING)


# $SESSIONCTX_CELERY_LOGGING=celery: Celery's own logging instead, the id in its formats.
if os.environ.get("SESSIONCTX_CELERY_LOGGING") == "celery":
    app.conf.worker_log_format = app.conf.worker_task_log_format = FORMAT
else:
    signals.setup_logging.connect(configure_logging)


task_logger = get_task_logger(__name__)
app_logger = logging.getLogger("celery_worker_app.work")


@app.task(name="celery_worker_app.report")  # type: ignore[untyped-decorator]
def report(tag: str) -> str | None:
    """Log one line through each logger; return the session the task runs in."""
    task_logger.info("task logger line %s", tag)
    app_logger.warning("app logger line %s", tag)
    return current_session_id()
