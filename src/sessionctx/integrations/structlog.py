"""A structlog processor that adds the active session id to every event.

::

    import structlog
    from sessionctx.integrations.structlog import add_session_id

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_session_id,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ]
    )
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from sessionctx._extras import missing_library

try:
    import structlog  # noqa: F401  (checks that the extra is installed)
except ImportError as _error:
    missing_library(_error, __name__, "structlog", 'pip install "sessionctx[structlog]"')

from sessionctx.log_filters import _in_its_logging_call, _record_session_id
from sessionctx.session import _escaped_session_id, current_session_id

__all__ = ["add_session_id"]


def add_session_id(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Set ``event_dict["session_id"]`` to the active session id.

    The id is read where the event is logged (the current thread or task). A
    standard library record that ``ProcessorFormatter`` renders outside the
    logging call that made it (a ``MemoryHandler`` held it back) gets none.
    With no session active the key is left out, unless the event logs an
    exception that left a session in this thread and task (asyncio's or trio's)
    (``exc_info``, or the exception being handled): then it is that session's
    id, as a server logs a request's exception once the middleware has
    restored the context (see :class:`sessionctx.log_filters.SessionIdFilter`).
    A ``session_id`` passed to the log call or bound on the logger is kept as
    it is.

    >>> from sessionctx import session
    >>> with session("abc"):
    ...     add_session_id(None, "info", {"event": "hi"})
    {'event': 'hi', 'session_id': 'abc'}
    """
    sid = current_session_id()
    if sid is None:
        # An exception that left a request, logged once its session is gone.
        sid = _escaped_session_id_of(event_dict)
    elif _held_back(event_dict.get("_record")):
        # A standard library record that structlog's ProcessorFormatter renders
        # after a handler held it back (a MemoryHandler flushed in another
        # request): the session here is not the one it was logged in.
        return event_dict
    if sid is not None:
        event_dict.setdefault("session_id", sid)
    return event_dict


def _held_back(record: object) -> bool:
    """Whether ``record`` is a standard library record handled outside the
    logging call that made it."""
    return isinstance(record, logging.LogRecord) and not _in_its_logging_call(
        record, sys._getframe(1).f_back
    )


def _escaped_session_id_of(event_dict: MutableMapping[str, Any]) -> str | None:
    """The id of the session that the exception an event logs left: see
    :class:`sessionctx.log_filters.SessionIdFilter`."""
    # A standard library record, passed on by structlog's ProcessorFormatter
    # (a copy, which may have its exc_info moved to the event already).
    record = event_dict.get("_record")
    if not isinstance(record, logging.LogRecord):
        record = None
    exc_info = event_dict.get("exc_info")
    if isinstance(exc_info, BaseException):
        error: object = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        error = exc_info[1]
    elif record is not None:
        return _record_session_id(record)
    else:
        # exc_info=True, or none: the exception being handled as the event is logged.
        error = sys.exc_info()[1]
    return _escaped_session_id(error, None if record is None else record.thread)
