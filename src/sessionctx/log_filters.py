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


class _Default(str):
    """A filter's ``default`` as set on a record: a str, told apart by its type
    from an id or an ``extra=`` value without another attribute on the record
    (formatters that write every attribute of a record would print it)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # A record pickled to another process (a multiprocessing queue, a
        # SocketHandler) carries a plain str, which any receiver can load, with
        # or without sessionctx (or this class) installed.
        return str, (str(self),)


class SessionIdFilter(logging.Filter):
    """Set ``record.session_id`` to the active session id, or ``default`` when
    there is none, unless the record has a value already (given with
    ``extra={"session_id": ...}``). It never drops a record.

    The id is read when the record passes the filter, i.e. in the thread or
    task that logs, so attach it to handlers of loggers called from request
    code. A ``QueueHandler`` with this filter keeps the id, or the ``extra=``
    value, found at that point, also when the listener's handlers have the
    filter too. Outside a session each handler's filter writes its own
    ``default``: another handler's filter, or a ``QueueHandler``'s in the same
    process, does not decide it. A record pickled to another process carries
    the default as a plain ``str``, which is kept there like an ``extra=``
    value.
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    @property
    def default(self) -> str:
        """What ``record.session_id`` is set to outside a session."""
        return str(self._default)

    @default.setter
    def default(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"default must be a str, not {type(value).__name__}: {value!r}")
        self._default = _Default(value)

    def filter(self, record: logging.LogRecord) -> bool:
        if "session_id" not in record.__dict__:
            active = _get()  # what current_session_id() reads, one call less per record
            record.session_id = self._default if active is None else active[0]
        elif type(record.__dict__["session_id"]) is _Default:
            # Set by another filter where no session was active (this thread
            # may be a QueueListener's, in a session of its own): no id, so
            # this filter's default.
            record.session_id = self._default
        # Any other value is kept: one given with ``extra=``, or an id set where
        # the record was made, before a ``QueueHandler`` passed it on.
        return True
