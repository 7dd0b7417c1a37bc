"""Run Celery tasks in the session of the code that published them.

::

    from celery import Celery
    from sessionctx.integrations import celery as sessionctx_celery

    app = Celery("proj", broker="redis://localhost:6379/0")
    sessionctx_celery.connect(app)   # in the publishing process and in the worker

How it works, with Celery's signals:

- ``before_task_publish``: the publisher's session id goes into the task
  message headers under ``X-Session-Id`` (a session header already passed
  with ``apply_async(headers=...)``, under any accepted name in any letter
  case, is kept); a message published outside any
  session gets a new id of its own, so a redelivery (``acks_late``, a worker
  lost mid-task) runs in the same session as the first delivery. Celery does
  not tell this signal which app publishes, so while any app is connected
  every task message published from the process carries the header; workers
  of apps that are not connected ignore it.
- ``task_prerun``: for tasks of a connected app, the worker sets that session
  (ahead of the other ``task_prerun`` handlers, which see the task's session)
  for the task's run, read as an inbound HTTP header is; without a valid
  header it starts a new one and writes its id into ``task.request.headers``
  (over an invalid one, under any accepted name). A task run
  eagerly (``task.apply()``, ``task_always_eager``) with no header runs in
  the caller's session id, since it runs in the caller's thread.
- ``task_postrun``: the worker restores the session it had before the task.
  Celery sends it from a ``finally`` block, so this happens after success,
  failure, retry, reject and ignore alike; ``on_failure``, ``on_retry`` and
  ``task_failure`` handlers run before it and still see the task's session;
  ``task_postrun`` handlers connected after :func:`connect` run after it and
  see the worker's own session again.
  Runs nested in one thread, such as the replacement an eager
  ``self.replace(sig)`` runs under the same task id, each restore what they
  found.

A ``task.retry()``, in a worker or eager, republishes ``task.request.headers``,
so every attempt runs in the same session, also one the first attempt started.
Tasks a task publishes carry its session on.

Only the id travels: a session's attributes stay in the process that set
them, and an eager run does not see them either, as a worker would not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from contextvars import Token
from typing import Any, Final, cast

from sessionctx._extras import missing_library

try:
    from celery import Celery, signals
    from celery.local import Proxy
    from celery.utils.log import ColorFormatter, get_multiprocessing_logger
except ImportError as _error:
    missing_library(_error, __name__, "celery", 'pip install "sessionctx[celery]"')

from sessionctx._headers import ACCEPTED_HEADER_NAMES, SESSION_HEADER_NAME
from sessionctx._validation import _shown, generate_session_id
from sessionctx.log_filters import SessionIdFilter
from sessionctx.session import (
    _Active,
    _current,
    current_session_id,
    extract_session_id,
    set_session_id,
)

__all__ = ["connect", "disconnect"]

_DISPATCH_UID = "sessionctx.integrations.celery"
# The names a message's session header may have, in any letter case.
_ACCEPTED_LOWER: Final = frozenset(name.lower() for name in ACCEPTED_HEADER_NAMES)

# The tokens of each running task, keyed by task id and thread (the same task
# id may run in two pool threads at once after a redelivery). A stack, since
# an eager ``self.replace(sig)`` runs the replacement nested in the same thread
# under the same task id.
_tokens: dict[tuple[str, int], list[Token[_Active | None]]] = {}


def connect(app: Celery) -> None:
    """Propagate sessions into the tasks of ``app``; calling it again changes nothing.

    Call it in the process that publishes and in the worker (importing the
    module that builds the app and calls ``connect`` does both). The signal
    handlers hold a reference to ``app`` until :func:`disconnect`.
    ``celery.current_app`` (a proxy) stands for the app behind it.
    """
    app = _unproxied(app)
    if not isinstance(app, Celery):
        raise TypeError(f"expected a celery.Celery app, not {type(app).__name__}: {_shown(app)}")

    def on_prerun(task_id: str, task: Any, **kwargs: Any) -> None:
        if task.app is app:
            _start_task(task_id, task.request)

    def on_postrun(task_id: str, task: Any, **kwargs: Any) -> None:
        if task.app is app:
            _end_task(task_id)

    # One uid per app: a second connect of the same app adds nothing.
    uid = _dispatch_uid(app)
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=uid)
    signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid=uid)
    _run_first(signals.task_prerun, uid)
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid=uid)
    signals.after_setup_logger.connect(_filter_handlers, weak=False, dispatch_uid=uid)
    signals.after_setup_task_logger.connect(_filter_handlers, weak=False, dispatch_uid=uid)


def disconnect(app: Celery) -> None:
    """Remove the signal handlers that :func:`connect` added for ``app``.

    Call it while none of the app's tasks is running (at shutdown, or between
    tests); a task running meanwhile keeps its session until its thread's
    context ends. Disconnecting an app that is not connected does nothing.
    """
    uid = _dispatch_uid(_unproxied(app))
    signals.before_task_publish.disconnect(dispatch_uid=uid)
    signals.task_prerun.disconnect(dispatch_uid=uid)
    signals.task_postrun.disconnect(dispatch_uid=uid)
    signals.after_setup_logger.disconnect(dispatch_uid=uid)
    signals.after_setup_task_logger.disconnect(dispatch_uid=uid)


def _filter_handlers(logger: logging.Logger | None = None, **kwargs: Any) -> None:
    """Give the handlers a worker made for its own logging configuration
    (``after_setup_logger``, ``after_setup_task_logger``) a
    :class:`SessionIdFilter`, billiard's logger's too: a ``worker_log_format``
    or ``worker_task_log_format`` may then hold ``%(session_id)s``.

    Celery's handlers are told by their formatter, which Celery makes with
    those formats; other handlers on these loggers (the application's own,
    with ``worker_hijack_root_logger=False``) are left alone. Celery sends
    neither signal when a ``setup_logging`` receiver configures logging
    instead.
    """
    for each in (logger, get_multiprocessing_logger()):
        for handler in [] if each is None else each.handlers:
            if isinstance(handler.formatter, ColorFormatter) and not any(
                isinstance(known, SessionIdFilter) for known in handler.filters
            ):
                handler.addFilter(SessionIdFilter())


def _run_first(signal: Any, uid: object) -> None:
    """Move ``signal``'s receiver connected under ``uid`` ahead of the others.

    Celery calls receivers in the order they were connected, and a
    ``task_prerun`` receiver connected before :func:`connect` would see the
    worker's session instead of the task's: OpenTelemetry's
    ``CeleryInstrumentor`` starts the task's span in one, and
    ``opentelemetry-instrument`` connects it before any app module runs.
    """
    with signal.lock:
        receivers = signal.receivers
        for index, (lookup_key, _) in enumerate(receivers):
            if lookup_key[0] == uid:
                receivers.insert(0, receivers.pop(index))
                signal.sender_receivers_cache.clear()
                return


def _unproxied(app: Celery) -> Celery:
    """The app itself for ``celery.current_app`` (a proxy), whose tasks' ``app``
    is never the proxy."""
    if isinstance(app, Proxy):
        return cast(Celery, app._get_current_object())
    return app


def _dispatch_uid(app: Celery) -> tuple[str, int]:
    return (_DISPATCH_UID, id(app))


def _is_session_header(name: object) -> bool:
    return isinstance(name, str) and name.lower() in _ACCEPTED_LOWER


def _on_publish(headers: dict[str, Any], **kwargs: Any) -> None:
    # A session header passed with apply_async(headers=...) wins, under any
    # accepted name in any letter case, as an inbound HTTP header does.
    if not any(map(_is_session_header, headers)):
        # Outside any session the message gets an id of its own now, so that a
        # redelivery (acks_late, a worker lost mid-task) runs in the same session.
        headers[SESSION_HEADER_NAME] = current_session_id() or generate_session_id()


def _header_session_id(request: Any) -> tuple[bool, str | None]:
    """Whether the message has a session header, and its valid id, read as
    ``extract_session_id`` reads HTTP headers: the first accepted name present
    decides, in any letter case; a value that is not ``str`` or ``bytes`` (a
    ``None`` sent outside a session, say) is invalid too."""
    # A worker puts custom message headers on the request itself;
    # ``task.apply(headers=...)`` puts them under ``request.headers``.
    for headers in (getattr(request, "__dict__", None), request.headers):
        if not isinstance(headers, Mapping):
            continue
        # Only the session headers: another name (not a str, say) is no concern here.
        session_headers = [(k, v) for k, v in headers.items() if _is_session_header(k)]
        if session_headers:
            try:
                return True, extract_session_id(session_headers)
            except TypeError:  # a value that is not str or bytes
                return True, None
    return False, None


def _start_task(task_id: str, request: Any) -> None:
    present, sid = _header_session_id(request)
    if not present and request.is_eager:
        # Run in the caller's thread with no message: its id, as a message
        # would carry it. Only the id, as on a worker, so that tests run
        # eagerly see what production sees (an invalid header, a new id).
        sid = current_session_id()
    if sid is None:
        sid = generate_session_id()
        # task.retry() republishes request.headers (eagerly too), so the
        # next attempt finds this id there instead of none or an invalid one.
        # Any other session header goes: the retry must not carry two.
        headers = request.headers if isinstance(request.headers, Mapping) else {}
        kept = {name: value for name, value in headers.items() if not _is_session_header(name)}
        request.headers = {**kept, SESSION_HEADER_NAME: sid}
    # The reset after the task also undoes whatever the task body set.
    token = set_session_id(sid)
    _tokens.setdefault((task_id, threading.get_ident()), []).append(token)


def _end_task(task_id: str) -> None:
    key = (task_id, threading.get_ident())
    tokens = _tokens.get(key)
    if tokens is None:
        return
    token = tokens.pop()
    if not tokens:
        del _tokens[key]
    _current.reset(token)
