"""A ``logging`` filter that puts the active session id on every record.

Standard library only. Attach it to a handler, then use ``%(session_id)s`` in
the format::

    import logging
    from sessionctx.log_filters import SessionIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s session=%(session_id)s %(message)s"))

or from ``logging.config.dictConfig``::

    "filters": {"session_id": {"()": "sessionctx.log_filters.SessionIdFilter"}}
"""

from __future__ import annotations

import logging

from sessionctx.session import _get

__all__ = ["SessionIdFilter"]


class SessionIdFilter(logging.Filter):
    """Set ``record.session_id`` to the active session id, or ``default`` when
    there is none, unless the record has one already (given with
    ``extra={"session_id": ...}``). It never drops a record.

    The id is read when the record passes the filter, i.e. in the thread or
    task that logs, so attach it to handlers of loggers called from request
    code. A ``QueueHandler`` with this filter keeps the value set at that
    point, also when the listener's handlers have the filter too.
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        if not isinstance(default, str):
            raise TypeError(f"default must be a str, not {type(default).__name__}: {default!r}")
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        # A value already there is kept: one given with ``extra=``, or one set
        # where the record was made, before a ``QueueHandler`` passed it on.
        if "session_id" not in record.__dict__:
            active = _get()  # what current_session_id() reads, one call less per record
            record.session_id = self.default if active is None else active[0]
        return True
