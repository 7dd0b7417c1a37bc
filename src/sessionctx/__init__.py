"""sessionctx: a session id for every request, held in a ``contextvars.ContextVar``.

Handlers, log records, spans, outgoing HTTP calls and task queues read it with
:func:`current_session_id` without passing it around. Middleware for ASGI
(:mod:`sessionctx.asgi`) and WSGI (:mod:`sessionctx.wsgi`) sets it per request.

>>> import sessionctx
>>> with sessionctx.session("abc") as ctx:
...     sessionctx.current_session_id()
'abc'
"""

from __future__ import annotations

# Import the module first: binding the function below then wins over the
# submodule attribute that the import system sets on the package.
import sessionctx.session as _session_module
from sessionctx.session import (
    ACCEPTED_HEADER_NAMES,
    SESSION_HEADER_NAME,
    SESSION_ID_ENV_VAR,
    ContextThreadPoolExecutor,
    SessionContext,
    current_session,
    current_session_id,
    extract_session_id,
    inject_session_headers,
    is_valid_session_id,
    new_session,
    reset_session,
    session,
    session_id_of,
    set_session_id,
    validate_session_id,
    wrap_context,
)

__all__ = [
    "ACCEPTED_HEADER_NAMES",
    "ContextThreadPoolExecutor",
    "SESSION_HEADER_NAME",
    "SESSION_ID_ENV_VAR",
    "SessionContext",
    "current_session",
    "current_session_id",
    "extract_session_id",
    "inject_session_headers",
    "is_valid_session_id",
    "new_session",
    "reset_session",
    "session",
    "session_id_of",
    "set_session_id",
    "validate_session_id",
    "wrap_context",
]

__version__ = "0.1.0"

del _session_module
