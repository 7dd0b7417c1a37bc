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
import sys
import types
from collections.abc import Callable
from typing import Final

from sessionctx._validation import _shown
from sessionctx.session import _escaped_session_id, _get

__all__ = ["SessionIdFilter"]

# The exception being handled, or None (sys.exception() is new in 3.11).
_handled_exception: Callable[[], BaseException | None] = getattr(
    sys, "exception", lambda: sys.exc_info()[1]
)
_getframe = sys._getframe


def _record_session_id(record: logging.LogRecord) -> str | None:
    """The id of the session that the exception ``record`` logs left (its
    ``exc_info``, else the exception being handled as it is logged), for a
    record made outside any session; see :func:`_escaped_session_id`."""
    exc_info = record.exc_info
    if not exc_info:
        error = _handled_exception_of(record)
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        error = exc_info[1]
    else:
        # Not what logging makes of exc_info (a record made by hand): the
        # formatter, not this filter, is where logging reports it.
        return None
    return _escaped_session_id(error, record.thread)


#: The code of ``logging.Logger._log``, which makes a record and hands it to
#: the logger's ``handle`` (see :func:`_in_its_logging_call`).
_LOGGER_LOG: Final = logging.Logger._log.__code__


def _in_its_logging_call(record: logging.LogRecord, frame: types.FrameType | None) -> bool:
    """Whether the logging call that made ``record`` is handling it right now,
    in the call stack from ``frame`` up: the nearest ``Logger._log`` there made
    ``record`` (or the record it is a copy of, as structlog's
    ``ProcessorFormatter`` makes one). Such a record was made in this thread.

    ``Logger._log`` is where every standard library logging call (``info()``,
    ``log()``, a ``LoggerAdapter``'s, structlog's standard library loggers)
    makes its record, whatever a ``Logger`` subclass or a patch does with
    ``handle`` (absl's ``ABSLLogger`` replaces it, Sentry wraps
    ``callHandlers``).

    Not for a record a ``MemoryHandler`` held back and passes on now (flushed,
    or pushed out by the next record), one a ``QueueListener`` hands on, or one
    that other code gives a handler or filter: where that record was made, in
    which thread and which request's session, is not known here. Thread ids
    cannot tell: a later request in the same thread has the same one, and a
    gevent greenlet gets the id of one that ended. Looks 32 frames up at most.
    """
    depth = 0
    while frame is not None and depth < 32:
        if frame.f_code is _LOGGER_LOG:
            made = frame.f_locals.get("record")
            return made is record or (
                isinstance(made, logging.LogRecord)
                and made.msg is record.msg
                and (made.created, made.thread, made.name, made.lineno, made.pathname)
                == (record.created, record.thread, record.name, record.lineno, record.pathname)
            )
        frame = frame.f_back
        depth += 1
    return False


def _handled_exception_of(record: logging.LogRecord) -> BaseException | None:
    """The exception being handled where ``record``, which has none of its own,
    is being logged right now (a server may log the traceback as text from its
    ``except`` block, as werkzeug's "Error on request" does), or ``None``.

    Only while the logging call that made the record handles it (see
    :func:`_in_its_logging_call`): a record made elsewhere was made while
    something else was handled.
    """
    error = _handled_exception()
    if error is None or not _in_its_logging_call(record, _getframe(1)):
        return None
    return error


# The code of what usually runs the filter for a record the logging call that
# made it is handling (see SessionIdFilter.filter).
_HANDLER_HANDLE: Final = logging.Handler.handle.__code__

# The modules whose code hands records to handlers and filters: a logger, a
# handler, a MemoryHandler's flush, a QueueListener.
_LOGGING_MODULES: Final = frozenset({"logging", "logging.handlers"})


def _called_by_logging(frame: types.FrameType | None) -> bool:
    """Whether the record is being handed on, from ``frame`` up: by code of the
    ``logging`` package, or by a method of a handler or logger (a
    ``logging.Filterer``: one of your own that holds records back and runs its
    filters later), not given to the filter directly by code that knows which
    session it is in (see SessionIdFilter.filter)."""
    while frame is not None:
        if frame.f_globals.get("__name__") in _LOGGING_MODULES:
            return True
        code = frame.f_code
        if code.co_argcount:
            # A method of that very class (not a function that takes a logger
            # first, such as a test with a logger fixture). type(), not
            # isinstance(): a lazy proxy must not be evaluated.
            owner = type(frame.f_locals.get(code.co_varnames[0]))
            if (
                issubclass(owner, logging.Filterer)
                and getattr(getattr(owner, code.co_name, None), "__code__", None) is code
            ):
                return True
        frame = frame.f_back
    return False


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

    The id is read when the record passes the filter, so the filter belongs on
    the first handler a record reaches. A handler that holds records back and
    passes them on later, a ``QueueHandler`` or a ``MemoryHandler``, needs it
    itself: what it found is kept when the handlers behind it have the filter
    too. Those run later, maybe in another request's session, where the filter
    cannot know which session the record was made in. So the filter writes an
    id only while the standard library logging call that made the record
    (``info()``, ``log()`` and the like) is handling it, or when code calls
    ``filter(record)`` itself (a unit test; not logging's code, nor a method of
    a handler's or logger's own class, which may run its filters on records it
    held back); and the default for a record that logging passes on later, or
    that other code hands to a logger or handler: even one held back and
    passed on in the same request. Thread ids would not tell: a later
    request in the same thread has the same one, and a gevent greenlet gets the
    id of one that ended. Outside a session each
    handler's filter writes its own ``default``: another handler's filter, or a
    ``QueueHandler``'s in the same process, does not decide it. A record
    pickled to another process carries the default as a plain ``str``, which is
    kept there like an ``extra=`` value.

    A record made outside any session that logs an exception which left a
    session gets that session's id, when it is made in the thread and task
    (asyncio's or trio's) the exception left the session in (its
    ``exc_info``, or the exception being handled while it is logged): a
    server logs an application's exception after the middleware has restored
    the context (uvicorn's "Exception in ASGI application", werkzeug's "Error
    on request"). An exception that left sessions in two places shows no id.

    ``default`` can be set later too, to a ``str`` only (else ``TypeError``,
    and the old value stays). A copy of the filter (``copy.deepcopy``, a pickle
    round trip) writes its own default like the original.
    """

    #: What ``record.session_id`` is set to outside a session.
    default: str

    def __init__(self, name: str = "", default: str = "-") -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}: {_shown(name)}")
        super().__init__(name)
        self.default = default

    def __setattr__(self, name: str, value: object) -> None:
        # ``default`` is checked here, when it is set, rather than in the
        # middle of a logging call; a property would be shadowed by a
        # subclass's class attribute of that name.
        if name == "default" and type(value) is not _Default:
            if not isinstance(value, str):
                raise TypeError(
                    f"default must be a str, not {type(value).__name__}: {_shown(value)}"
                )
            value = _Default(value)
        super().__setattr__(name, value)

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.session_id``, unless the record has one already; keep every record."""
        if "session_id" not in record.__dict__:
            active = _get()  # what current_session_id() reads, one call less per record
            sid = None if active is None else active[0]
            # The session of the logging call that made the record, which runs
            # in this thread. A record made elsewhere (in a QueueListener's
            # thread, or held back by a MemoryHandler and flushed in another
            # request) gets the default, never the id of the session here.
            if sid is not None:
                # Run where a filter usually runs, for a record the logging call
                # that made it is handling: a handler's, Handler.handle two
                # frames up, that the logging call's Logger._log (five up) had
                # run through its handle() and callHandlers(); or a logger's
                # own, Logger._log three up. Anything else is looked for the
                # long way.
                try:
                    made_here = (
                        _getframe(2).f_code is _HANDLER_HANDLE
                        and _getframe(5).f_code is _LOGGER_LOG
                    ) or _getframe(3).f_code is _LOGGER_LOG
                except ValueError:  # a shorter stack: called by other code
                    made_here = False
                if (
                    made_here
                    or _in_its_logging_call(record, _getframe(0))
                    # Called directly, as ``log_filter.filter(record)``: the
                    # caller gives the record in the session it runs in (a unit test).
                    or not _called_by_logging(_getframe(0).f_back)
                ):
                    record.session_id = sid
                    return True
            if sid is None and (record.exc_info or _handled_exception() is not None):
                # A server's record of an exception that left a request, made
                # once the request's session is gone: the exception notes it.
                escaped = _record_session_id(record)
                if escaped is not None:
                    record.session_id = escaped
                    return True
        elif type(record.__dict__["session_id"]) is not _Default:
            # Kept: a value given with ``extra=``, or an id set where the record
            # was made, before a ``QueueHandler`` passed it on.
            return True
        # No session active here, or a default another filter set where none
        # was (this thread may be a QueueListener's, in a session of its own):
        # no id, so this filter's default.
        default = self.default
        if default.__class__ is not _Default:  # a little cheaper than type()
            # A copied or unpickled filter (a _Default pickles as a plain str),
            # or a subclass's class attribute: wrapped once, here.
            self.default = default = _Default(default)
        record.session_id = default
        return True
