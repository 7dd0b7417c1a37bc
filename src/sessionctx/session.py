"""The session id of the work in progress, held in a ``contextvars.ContextVar``.

Which code sees a session set here:

- the rest of the current thread or asyncio task, until it is reset;
- asyncio tasks created afterwards from that task (``asyncio.create_task`` copies
  the context when the task is created; later changes are not shared);
- ``asyncio.to_thread`` and anything run through :func:`wrap_context` or
  :class:`ContextThreadPoolExecutor`, which copy the caller's context;
- **not** a plain ``threading.Thread`` or ``ThreadPoolExecutor``: threads start
  with an empty context.

Example::

    from sessionctx.session import new_session, current_session_id

    sid = new_session()
    assert current_session_id() == sid
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import sys
import threading
import types
import weakref
from collections.abc import (
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
)
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar, Token, copy_context
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    NamedTuple,
    NoReturn,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

from sessionctx._headers import (
    ACCEPTED_HEADER_NAMES,
    SESSION_HEADER_NAME,
    check_header_name,
    extract_session_id,
)
from sessionctx._validation import (
    _shown,
    generate_session_id,
    is_valid_session_id,
    validate_session_id,
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

SESSION_ID_ENV_VAR: Final = "SESSIONCTX_SESSION_ID"
_FALLBACK_ENV_VAR: Final = "TRACECTRL_SESSION_ID"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
P = ParamSpec("P")

_logger = logging.getLogger("sessionctx")

_EMPTY: Final[Mapping[str, Any]] = types.MappingProxyType({})

# Ints below 2**2000 (603 digits) are under the lowest digit limit Python allows.
_INT_DIGITS_CHECKED_BITS: Final = 2000


# --------------------------------------------------------------------------- #
# SessionContext
# --------------------------------------------------------------------------- #


class _FrozenMapping(dict[str, Any]):
    """A read-only ``dict``: what :class:`SessionContext` keeps its attributes in.

    A ``dict`` to every serializer (``json``, pydantic, so a FastAPI endpoint
    can return a ``SessionContext``, also declared as its return type), whose
    methods that would change it raise ``TypeError``. Unlike
    ``MappingProxyType`` it can be copied, deep-copied (as
    ``dataclasses.asdict`` does) and pickled. Its values are frozen too, so a
    copy is the object itself.
    """

    __slots__ = ()

    def __new__(cls, items: Mapping[str, Any] = _EMPTY) -> _FrozenMapping:
        frozen = super().__new__(cls)
        dict.update(frozen, items)
        return frozen

    def __init__(self, items: Mapping[str, Any] = _EMPTY) -> None:
        # Filled by __new__: dict.__init__ would add to it.
        pass

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("session attributes are read-only")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __ior__(self, other: Any) -> dict[str, Any]:  # type: ignore[override,misc]
        # ``attributes |= more`` binds a new plain dict (Python falls back to
        # ``|``), as with ``MappingProxyType`` or a frozenset: this one stays.
        return NotImplemented

    def copy(self) -> dict[str, Any]:
        """A shallow plain ``dict`` copy, as ``MappingProxyType.copy()`` gives."""
        return dict(self)

    def __copy__(self) -> _FrozenMapping:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _FrozenMapping:
        return self

    def __reduce__(self) -> tuple[type[_FrozenMapping], tuple[dict[str, Any]]]:
        return _FrozenMapping, (dict(self),)


class _FrozenList(list[Any]):
    """A read-only ``list``: what :func:`_freeze` makes of a list or tuple.

    A ``list`` to every serializer (``json``, orjson, pydantic) and to ``==``
    (so the copy equals what was passed in, compared in C however deeply it
    nests), whose methods that would change it raise ``TypeError``; ``+``,
    ``*`` and slices give plain lists, and ``+=`` binds one. Like
    :class:`_FrozenMapping`, it can be copied, deep-copied and pickled. What
    writes a list's items in C without its methods (``list.__setitem__``
    called on it, ``heapq``'s functions) is not stopped.
    """

    __slots__ = ()

    def __new__(cls, items: Iterable[Any] = ()) -> _FrozenList:
        frozen = super().__new__(cls)
        list.extend(frozen, items)
        return frozen

    def __init__(self, items: Iterable[Any] = ()) -> None:
        # Filled by __new__: list.__init__ would replace its items.
        pass

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("session attributes are read-only")

    __setitem__ = __delitem__ = _read_only
    append = extend = insert = remove = pop = clear = sort = reverse = _read_only

    def __iadd__(self, other: Any) -> Any:  # type: ignore[misc]
        # ``items += more`` binds a new plain list (Python falls back to ``+``).
        return NotImplemented

    def __imul__(self, other: Any) -> Any:  # type: ignore[misc]
        return NotImplemented

    def copy(self) -> list[Any]:
        """A shallow plain ``list`` copy."""
        return list(self)

    def __copy__(self) -> _FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _FrozenList:
        return self

    def __reduce__(self) -> tuple[type[_FrozenList], tuple[list[Any]]]:
        return _FrozenList, (list(self),)


def _freeze(value: object, where: str, open_containers: set[int]) -> Any:
    """Deep, read-only copy of a JSON-able value; raise naming ``where`` if not JSON-able.

    ``open_containers`` holds the ids of the containers being copied around
    ``value``: meeting one again is a cycle, which ``json.dumps`` rejects too.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # json.dumps writes an int through str(), which refuses more digits
        # than sys.get_int_max_str_digits() allows (4300 by default, 640 at least).
        if value.bit_length() > _INT_DIGITS_CHECKED_BITS:
            try:
                str(value)
            except ValueError as exc:
                raise ValueError(
                    f"session attribute {where} cannot be written as JSON: {exc}"
                ) from None
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"session attribute {where} must be a finite number, got {_shown(value)}"
            )
        return value
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in open_containers:
            raise ValueError(f"session attribute {where or 'attributes'} contains itself")
        open_containers.add(id(value))
        frozen: Any
        if isinstance(value, Mapping):
            items: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(
                        "session attribute keys must be str: "
                        f"{_shown(key)} in {where or 'attributes'}"
                    )
                try:
                    items[key] = _freeze(item, f"{where}[{key!r}]", open_containers)
                except RecursionError:
                    if where:
                        raise
                    # Named at the top, where the stack has room again.
                    raise ValueError(
                        f"session attribute [{key!r}] is nested too deeply to write as JSON"
                    ) from None
            frozen = _FrozenMapping(items)
        else:
            # A loop, not a generator expression: one frame per level of
            # nesting, as deep as json.dumps goes.
            listed = []
            for i, item in enumerate(value):
                listed.append(_freeze(item, f"{where}[{i}]", open_containers))
            frozen = _FrozenList(listed)
        open_containers.discard(id(value))
        return frozen
    raise TypeError(
        f"session attribute {where} is not JSON-serializable: "
        f"{type(value).__name__} {_shown(value)}"
    )


def _thaw(value: object) -> Any:
    """Plain dicts and lists again, from what :func:`_freeze` made."""
    # Loops, not comprehensions: one frame per level, as in _freeze().
    if isinstance(value, Mapping):
        thawed: dict[str, Any] = {}
        for key, item in value.items():
            thawed[key] = _thaw(item)
        return thawed
    if isinstance(value, list):
        listed = []
        for item in value:
            listed.append(_thaw(item))
        return listed
    return value


def _to_json(frozen: Mapping[str, Any]) -> str:
    """Compact JSON of what :func:`_freeze` made (read-only dicts and lists,
    which ``json`` writes as it writes dicts and lists)."""
    try:
        return json.dumps(frozen, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise ValueError("session attributes are nested too deeply to write as JSON") from None


@dataclass(frozen=True, slots=True)
class SessionContext:
    """One session: its ``id`` and optional JSON-able ``attributes``.

    ``id`` must follow the session id rule; left out, it is a fresh uuid4.
    ``attributes`` is checked when the
    object is made (string keys, values ``json.dumps(..., allow_nan=False)``
    accepts) and stored as a deep read-only copy (mappings become dicts whose
    changing methods raise ``TypeError``, lists and tuples become lists that
    do the same), so later
    changes to the caller's dict change nothing.

    >>> SessionContext("abc", {"user": "u1"}).attributes_json
    '{"user":"u1"}'
    """

    #: Left out, a fresh uuid4 (as Mirascope's ``SessionContext()`` made one).
    id: str = field(default_factory=generate_session_id)
    attributes: Mapping[str, Any] | None = None
    #: ``attributes`` as compact JSON (``None`` without attributes), for span attributes.
    attributes_json: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_session_id(self.id)
        if self.attributes is not None:
            if not isinstance(self.attributes, Mapping):
                raise TypeError(
                    "session attributes must be a mapping or None, "
                    f"not {type(self.attributes).__name__}"
                )
            frozen = _freeze(self.attributes, "", set())
            object.__setattr__(self, "attributes", frozen)
            object.__setattr__(self, "attributes_json", _to_json(frozen))

    def __hash__(self) -> int:
        return hash(self.id)

    # Immutable all the way down (the id is a str, the attributes frozen):
    # a copy is the object itself, however deeply the attributes nest.
    def __copy__(self) -> SessionContext:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SessionContext:
        return self

    def __reduce__(self) -> tuple[type[SessionContext], tuple[str, Any]]:
        # Rebuilt from plain values: ``copy``, ``pickle`` and ``multiprocessing``
        # carry a session, and it is checked again on the way in.
        attributes = None if self.attributes is None else _thaw(self.attributes)
        return SessionContext, (self.id, attributes)


class _Unfrozen:
    """:class:`SessionContext`'s slot layout without its frozen ``__setattr__``.

    An instance filled here and then given ``SessionContext`` as its class is a
    genuine ``SessionContext``; plain attribute stores are the cheapest way to
    fill the slots (a frozen dataclass otherwise needs ``object.__setattr__``).
    """

    __slots__ = SessionContext.__slots__


def _plain_context(sid: str) -> SessionContext:
    """A :class:`SessionContext` without attributes, for an id already known to be
    valid: made for most requests (on the first :func:`current_session` call) and
    by ``session()`` / ``set_session_id()``, so it skips ``__init__`` and its
    second check of the id."""
    ctx: Any = _Unfrozen()
    ctx.id = sid
    ctx.attributes = None
    ctx.attributes_json = None
    ctx.__class__ = SessionContext
    return cast(SessionContext, ctx)


def _make_context(sid: str, attributes: Mapping[str, Any] | None) -> SessionContext:
    if attributes is None:
        return _plain_context(validate_session_id(sid))
    return SessionContext(sid, attributes)


# --------------------------------------------------------------------------- #
# The context variable and its accessors
# --------------------------------------------------------------------------- #

#: The active session as ``[id, SessionContext | None]``. The middleware sets
#: only the id (most requests never need more: logs and outgoing headers read
#: the id); :func:`current_session` makes the :class:`SessionContext` on first
#: use and keeps it in the list, which every copy of the context shares, so
#: later calls, tasks and threads get that same object. A two-item list is
#: several times cheaper to make than the frozen object.
#:
#: A third item ties the session to a request a ``SessionIdMiddleware`` runs:
#: a ``bool`` in the list the middleware sets, ``True`` when the request began
#: outside any session, ``False`` when inside one (an app called in-process
#: by another request's code); a session set inside that request
#: (``session()``, ``set_session_id()``) holds the middleware's list there.
#: See :func:`_request_runs`. The OpenTelemetry integration appends a fourth
#: item to the middleware's list: the span processors that have looked for the
#: request's SERVER span.
#:
#: A list whose id is ``None`` is no session. The ASGI middleware sets a
#: stand-in of the session (its id and context, and the request's list as
#: the third item) while the server runs the app's ``receive()`` and the
#: ``send()`` that ends a response, and sets all its items to ``None`` after:
#: a copy of the context the server makes meanwhile (uvicorn's socket reader,
#: resumed there, and the tasks of the next requests on the connection that
#: it starts) holds no session once the call has returned (see
#: ``sessionctx.asgi._standing_in``). A reader takes the id once: another
#: thread may end a stand-in between two reads, never shorten it.
_Active = list[Any]

_current: ContextVar[_Active | None] = ContextVar("sessionctx.session", default=None)
_get = _current.get


#: Where an exception that left a session keeps that session's id: an
#: :class:`_EscapeNote`, or ``""`` when no id can be told (see :func:`_note_escape`).
_ESCAPED_FROM: Final = "_sessionctx_session_id"
#: Exceptions that end iteration or close a generator: no error to log.
_CONTROL_FLOW: Final = (StopIteration, StopAsyncIteration, GeneratorExit)


class _EscapeNote:
    """The session an exception left, and where it left it."""

    __slots__ = ("request", "sid", "task", "thread")

    def __init__(
        self, sid: str, thread: int, task: weakref.ref[Any] | None, request: int | None
    ) -> None:
        self.sid = sid
        self.thread = thread
        #: The task (asyncio's or trio's) it left the session in (a weak reference), if any.
        self.task = task
        #: ``id()`` of the request's list in ``_current``, if in a request.
        self.request = request

    def __reduce__(self) -> tuple[type[str], tuple[()]]:
        # An exception pickled (to another process) or deep-copied carries
        # "": where it left the session means nothing there. A plain str
        # loads where sessionctx is not installed, too.
        return str, ()


def _current_task() -> Any:
    """The running task of this thread: asyncio's, else trio's (anyio runs on
    either), or ``None``."""
    # A library never imported runs no task: no import here.
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            pass  # no asyncio event loop runs in this thread
        else:
            if task is not None:
                return task
            # A loop runs, but no task of its: trio may run as its guest.
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_task()
        except RuntimeError:
            pass  # no trio run in this thread
    return None


def _note_escape(error: BaseException, active: _Active | None) -> None:
    """Note on ``error``, which is leaving the session ``active`` (what
    ``_current`` holds), that session's id.

    A server logs an application's exception (uvicorn's "Exception in ASGI
    application", werkzeug's "Error on request", gunicorn's "Error handling
    request") after the middleware has restored the session, and
    :class:`~sessionctx.log_filters.SessionIdFilter` and the structlog
    processor read the id from the exception there, for a record made in the
    thread and task the note was made in (:func:`_escaped_session_id`).

    The last session it leaves in one thread and task is noted, and in one
    request also across threads: the request's, whose id the response
    carries, over a ``session()`` block inside it. An exception object that
    leaves sessions in two places (the one exception a failed ``Future``
    raises in every task that awaits it) tells no id any more: a log line must
    never show another request's id.
    """
    if active is None or (sid := active[0]) is None or isinstance(error, _CONTROL_FLOW):
        return
    thread = threading.get_ident()
    task = _current_task()
    request = _request_of(active)
    try:
        task_ref = None if task is None else weakref.ref(task)
    except TypeError:
        # A task type that takes no weak reference: told by thread only, here
        # and where the note is compared below.
        task = task_ref = None
    note: _EscapeNote | str = _EscapeNote(
        sid, thread, task_ref, None if request is None else id(request)
    )
    try:
        noted = error.__dict__.get(_ESCAPED_FROM, note)
        if noted is not note and not (
            isinstance(noted, _EscapeNote)
            and (
                (noted.thread == thread and _task_of(noted) is task)
                or (request is not None and noted.request == id(request))
            )
        ):
            note = ""  # it left a session in another place too: no id can be told
        setattr(error, _ESCAPED_FROM, note)
    except Exception:
        pass  # an exception that takes no attributes: no note, the error goes on as it is


def _task_of(note: _EscapeNote) -> Any:
    return None if note.task is None else note.task()


def _note_escaping(error: object) -> None:
    """:func:`_note_escape` for ``error`` (if any), leaving the active session."""
    if error is not None:
        _note_escape(cast(BaseException, error), _get())


def _escaped_session_id(error: object, thread: int | None) -> str | None:
    """The id noted by :func:`_note_escape` on ``error`` or on the exceptions
    it was raised from or while handling, when the note was made in ``thread``
    (``None``: this one) and, if it was made in a task, in the task running now.

    ``None`` for an exception with no note, or one that left sessions in more
    than one place, and for a record made elsewhere (in a ``QueueListener``'s
    thread, say) of an exception noted in a task: which task made the record
    cannot be told there.
    """
    here = threading.get_ident()
    # A server may log another exception, raised from the app's or while
    # handling it: the cause (and its chain) is looked at first, then the context.
    later: list[BaseException] | None = None
    # The ids of those looked at so far (at most 8; the chain keeps them
    # alive): a cycle of causes is not walked round again.
    seen: set[int] = set()
    while len(seen) < 8:
        if isinstance(error, BaseException) and id(error) not in seen:
            seen.add(id(error))
            if _ESCAPED_FROM in error.__dict__:
                note = error.__dict__[_ESCAPED_FROM]
                if (
                    not isinstance(note, _EscapeNote)
                    or note.thread != (here if thread is None else thread)
                    or (
                        note.task is not None
                        and (
                            here != note.thread
                            # A task that is gone runs no code any more.
                            or (task := _task_of(note)) is None
                            or task is not _current_task()
                        )
                    )
                ):
                    return None
                return note.sid
            cause, context = error.__cause__, error.__context__
            if cause is None:
                error = context
                continue
            if context is not None and context is not cause:
                if later is None:
                    later = [context]
                else:
                    later.append(context)
            error = cause
        elif later:
            error = later.pop()
        else:
            return None
    return None


def _request_of(active: _Active | None) -> _Active | None:
    """The list a ``SessionIdMiddleware`` set for the request that ``active`` (what
    ``_current`` holds) belongs to, or ``None`` outside any request."""
    if active is None or len(active) < 3:
        return None
    return active if active[2].__class__ is bool else cast(_Active, active[2])


def _active(ctx: SessionContext) -> _Active:
    request = _request_of(_get())
    # Inside a request: tied to the middleware's list.
    return [ctx.id, ctx] if request is None else [ctx.id, ctx, request]


def _request_runs(sid: str) -> bool:
    """Whether a ``SessionIdMiddleware`` runs, in this context, the request it
    gave the id ``sid`` (the very ``str`` it stored in the scope or environ):
    that request's session, or one set inside it, is active.

    The middleware resets its session when it returns, so a scope or environ
    used again after its request (an error page handler calling the app a
    second time, a copy of it) holds the id of a request that no longer runs
    here; a layer between two middlewares may set a session of its own, which
    still ties to the request. The id object, not its value, names the request:
    a client sends the same id on many requests, and a context copied during
    one of them (uvicorn starts a pipelined request's task inside the previous
    response) still holds that earlier request's session.
    """
    request = _request_of(_get())
    return request is not None and request[0] is sid


def current_session() -> SessionContext | None:
    """Return the active :class:`SessionContext`, or ``None``.

    It is the same object that :func:`session` yielded; in a request, the
    same object on every call.
    """
    active = _get()
    if active is None or (sid := active[0]) is None:
        return None
    ctx: SessionContext | None = active[1]
    if ctx is None:
        made = _plain_context(sid)
        # A stand-in (see _Active) keeps it in the request's own list too:
        # the app gets the same object.
        owner = _request_of(active) or active
        # Another thread sharing this request may have made one meanwhile:
        # the first one stored stays (no call, so no thread switch, below).
        ctx = owner[1]
        if ctx is None:
            owner[1] = ctx = made
        active[1] = ctx
    return ctx


def current_session_id() -> str | None:
    """Return the active session id, or ``None``."""
    active = _get()
    return None if active is None else cast(str, active[0])


def session_id_of(error: BaseException) -> str | None:
    """Return the id of the session ``error`` left, as the log filter reads it, or ``None``.

    For code that handles a request's exception after the middleware has
    restored the context (an error tracker's hook, such as Sentry's
    ``before_send``, run by a middleware outside ``SessionIdMiddleware``):
    ``current_session_id()`` is ``None`` there. The id is that of the last
    session ``error`` (or an exception it was raised from or while handling)
    left in this thread and task; ``None`` when it left none here, or left
    sessions in other places too (one exception shared by several requests),
    so that no other request's id is ever returned.

    >>> try:
    ...     with session("sess-1"):
    ...         raise RuntimeError("boom")
    ... except RuntimeError as error:
    ...     print(current_session_id(), session_id_of(error))
    None sess-1
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception, not {type(error).__name__}: {_shown(error)}")
    return _escaped_session_id(error, None)


def set_session_id(sid: str | None, *, attributes: Mapping[str, Any] | None = None) -> Token[Any]:
    """Validate ``sid`` and make it the active session; ``None`` clears it.

    Returns a token for :func:`reset_session`. The env var override does not
    apply here.

    >>> token = set_session_id("user-session-abc123")
    >>> current_session_id()
    'user-session-abc123'
    >>> reset_session(token)
    """
    if sid is None:
        if attributes is not None:
            raise ValueError("attributes need a session id; got sid=None with attributes")
        return _current.set(None)
    return _current.set(_active(_make_context(sid, attributes)))


def reset_session(token: Token[Any]) -> None:
    """Restore the session that was active before the matching set."""
    _current.reset(token)


# (variable, value) pairs warned about: one warning for each.
_warned_env_values: set[tuple[str, str]] = set()


def _session_id_from_env() -> str | None:
    for name in (SESSION_ID_ENV_VAR, _FALLBACK_ENV_VAR):
        value = os.environ.get(name)
        if value is None or not value.strip():
            continue
        if is_valid_session_id(value):
            return value
        if (name, value) not in _warned_env_values:
            _warned_env_values.add((name, value))
            _logger.warning(
                "ignoring %s: %r is not a valid session id", name, value[:50], stacklevel=2
            )
    return None


def new_session(attributes: Mapping[str, Any] | None = None) -> str:
    """Start a session in the current context and return its id.

    The id comes from the ``SESSIONCTX_SESSION_ID`` env var (or the older
    ``TRACECTRL_SESSION_ID``) when it holds a valid id, else it is a fresh
    uuid4. A blank env var counts as unset; an invalid one is ignored with one
    logged warning.
    """
    sid = _session_id_from_env() or generate_session_id()
    _current.set(_active(_make_context(sid, attributes)))
    return sid


# --------------------------------------------------------------------------- #
# session(): context manager, async context manager and decorator in one
# --------------------------------------------------------------------------- #


#: The ``session()`` scopes entered in this context and not yet exited, innermost
#: last. Per context, so that one scope object (say a module-level
#: ``session(attributes=...)``) can be open in several tasks or threads at once.
_open_scopes: ContextVar[tuple[_OpenScope, ...]] = ContextVar("sessionctx.open_scopes", default=())


class _OpenScope(NamedTuple):
    """One entry of :data:`_open_scopes`."""

    scope: _SessionScope
    #: The token of the scope's ``set``: resetting it proves that the exit runs
    #: in the context the scope was entered in.
    token: Token[_Active | None]
    #: What the exit restores.
    previous: _Active | None
    #: The ``id()`` of the generator or coroutine frame whose ``with`` or
    #: ``async with`` entered it (``None`` for other frames): one scope object
    #: may be open in several generators stepped in turn in one context.
    frame: int | None = None
    #: Kept by a decorated generator from one step to the next (see
    #: ``sessionctx._stepping._Steps``), whose steps may each run in a context
    #: of their own.
    carried: bool = False


# Frames that can be suspended inside a block: generators and coroutines.
_SUSPENDABLE: Final = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_ITERABLE_COROUTINE
)


def _frame_key(frame: types.FrameType) -> int | None:
    """What an open scope's entry keeps of the frame that entered it: the id of a
    generator or coroutine frame (alive while suspended in the block), not
    the frame, which would keep its locals alive in every copy of the context.

    ``contextlib``'s own frames (``ExitStack``, ``AsyncExitStack``) stand for
    the frame that called them.
    """
    while frame.f_globals.get("__name__") == "contextlib" and frame.f_back is not None:
        frame = frame.f_back
    return id(frame) if frame.f_code.co_flags & _SUSPENDABLE else None


if TYPE_CHECKING:
    from sessionctx import _stepping
else:
    _stepping = None


def _load_stepping() -> None:
    """Load ``sessionctx._stepping``, which steps decorated and wrapped coroutines
    and generators, into this module's ``_stepping``: by the first function
    decorated or wrapped, not by ``import sessionctx`` (an import statement on
    every ``wrap_context()`` call would cost more than the global's lookup)."""
    global _stepping
    from sessionctx import _stepping


class _SessionScope:
    """What :func:`session` returns; see there."""

    __slots__ = ("_attributes", "_id")

    def __init__(self, sid: str | None, attributes: Mapping[str, Any] | None) -> None:
        if sid is not None:
            validate_session_id(sid)
        if attributes is not None:
            # Checked and copied now, so errors surface at the call site.
            attributes = SessionContext("checked", attributes).attributes
        self._id = sid
        self._attributes = attributes

    def _make(self) -> SessionContext:
        sid = generate_session_id() if self._id is None else self._id
        if self._attributes is None:
            return _plain_context(sid)
        return SessionContext(sid, self._attributes)

    def __enter__(self) -> SessionContext:
        return self._enter(sys._getframe(1))

    def __exit__(self, *exc_info: object) -> None:
        _note_escaping(exc_info[1])
        self._exit(sys._getframe(1))

    async def __aenter__(self) -> SessionContext:
        return self._enter(sys._getframe(1))

    async def __aexit__(self, *exc_info: object) -> None:
        _note_escaping(exc_info[1])
        self._exit(sys._getframe(1))

    def _enter(self, frame: types.FrameType) -> SessionContext:
        ctx = self._make()
        previous = _get()
        entry = _OpenScope(self, _current.set(_active(ctx)), previous, _frame_key(frame))
        _open_scopes.set((*_open_scopes.get(), entry))
        return ctx

    def _exit(self, frame: types.FrameType) -> None:
        # This scope's innermost entry in the current context: right also when
        # the block replaced the session itself (``set_session_id()``), and
        # when other tasks or threads have the same scope object open. When
        # generators stepped in turn each have the scope open, though, a frame
        # exits an entry of its own kind: a generator its own, another frame
        # the innermost one no generator made.
        entries = _open_scopes.get()
        i = len(entries) - 1
        while i >= 0 and entries[i].scope is not self:
            i -= 1
        if i < 0:
            raise RuntimeError(
                "session() scope exited in a context it was not entered in, or exited twice"
            )
        key = _frame_key(frame)
        if entries[i].frame != key:
            for j in range(i - 1, -1, -1):
                if entries[j].scope is self and entries[j].frame == key:
                    i = j
                    break
        entry = entries[i]
        now = _get()
        if not entry.carried:
            try:
                _current.reset(entry.token)
            except ValueError:
                # A copy of the context it was entered in (another task,
                # ``copy_context().run``): the entry came with the copy.
                raise RuntimeError(
                    "session() scope exited in a context it was not entered in "
                    "(a copy of that context: another task, copy_context().run)"
                ) from None
        inner = entries[i + 1 :]
        if inner:
            # Exited before scopes entered after it (two generators stepped in
            # turn, each with a block open): those keep the session they set,
            # and the next one restores, when it exits, what this one would have.
            _current.set(now)
            inner = (inner[0]._replace(previous=entry.previous), *inner[1:])
        else:
            _current.set(entry.previous)
        _open_scopes.set(entries[:i] + inner)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn`` so that each call runs in its own session.

        Coroutine functions get the session while they run, generator and
        async generator functions while each step runs (the consumer does not
        see it between steps), and plain functions while they run; when a plain
        function returns a coroutine, generator or async generator (a wrapper,
        an object with ``async def __call__``), that gets the same session too.
        """
        if isinstance(fn, (staticmethod, classmethod)):
            # ``@session()`` above ``@staticmethod``/``@classmethod``: decorate the
            # function inside and wrap it the same way again.
            return cast(F, type(fn)(self(fn.__func__)))
        _check_wrappable(fn, "session()")
        if _stepping is None:
            _load_stepping()
        make = self._make
        steps = _stepping._Steps
        later_steps = _stepping._later_steps
        stepping = _stepping._stepping_function(fn, lambda: steps(_active(make())).run)
        if stepping is not None:
            return cast(F, stepping)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            active = _active(make())
            token = _current.set(active)
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                _note_escaping(error)
                raise
            finally:
                _current.reset(token)
            # Code that runs later, when awaited or stepped: a wrapper's
            # coroutine, an object's ``async def __call__``.
            return later_steps(steps(active).run, result)

        return cast(F, run)


def session(
    id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> _SessionScope:
    """Run a block or a function inside a session.

    ``id=None`` generates a fresh id on each entry (never from the env var).
    Works as ``with``, ``async with`` and as a decorator on sync and async
    functions, generators and async generators (each call gets its own
    session; a generator's steps run in it). Yields the
    :class:`SessionContext`; the outer session is restored on exit, also on
    exception. Scopes nest.

    >>> with session("1"):
    ...     with session("2"):
    ...         inner = current_session_id()
    ...     outer = current_session_id()
    >>> inner, outer
    ('2', '1')
    """
    return _SessionScope(id, attributes)


# --------------------------------------------------------------------------- #
# Headers
# --------------------------------------------------------------------------- #

H = TypeVar("H", bound=MutableMapping[str, str])


def _headers_to_fill(headers: object) -> MutableMapping[str, str]:
    """``headers`` to write into in place (a new dict for ``None``), or a
    ``TypeError`` for anything but a mutable mapping, before anything is written."""
    if headers is None:
        return {}
    if not (hasattr(headers, "keys") and hasattr(headers, "__setitem__")):
        raise TypeError(
            "headers must be a mutable mapping of header names to values or None, "
            f"not {type(headers).__name__}: {_shown(headers)}"
        )
    return cast(MutableMapping[str, str], headers)


@overload
def inject_session_headers(headers: None = None, *, header_name: str = ...) -> dict[str, str]: ...
# Listed before the generic form so that ``inject_session_headers({})`` type-checks.
@overload
def inject_session_headers(
    headers: dict[str, str], *, header_name: str = ...
) -> dict[str, str]: ...
@overload
def inject_session_headers(headers: H, *, header_name: str = ...) -> H: ...
def inject_session_headers(
    headers: MutableMapping[str, str] | None = None, *, header_name: str = SESSION_HEADER_NAME
) -> MutableMapping[str, str]:
    """Write the active session id into ``headers`` in place and return it.

    ``None`` gets a new dict. Nothing is written when no session is active.
    ``header_name`` must be a valid header name and ``headers`` a mutable
    mapping (a ``dict``, ``httpx.Headers``, ...), else ``TypeError``/``ValueError``,
    with or without a session.
    In a plain ``dict`` (case-sensitive keys) other spellings of
    ``header_name`` (any letter case, ``str`` or ``bytes``) are removed, so
    only one such header is sent.

    >>> with session("abc"):
    ...     inject_session_headers({})
    {'X-Session-Id': 'abc'}
    """
    check_header_name(header_name, "header_name")
    headers = _headers_to_fill(headers)
    sid = current_session_id()
    if sid is not None:
        if isinstance(headers, dict):
            # A valid header name is ASCII: its bytes spelling is the same
            # letters. Each key is compared with the spelling of its own type
            # (comparing str with bytes warns under python -b).
            lowered = header_name.lower()
            lowered_bytes = lowered.encode("ascii")
            others = [
                k
                for k in headers
                if (isinstance(k, str) and k != header_name and k.lower() == lowered)
                or (isinstance(k, bytes) and k.lower() == lowered_bytes)
            ]
            for key in others:
                del headers[key]
        headers[header_name] = sid
    return headers


# --------------------------------------------------------------------------- #
# Carrying the context into threads and callbacks
# --------------------------------------------------------------------------- #


def _check_wrappable(fn: object, wrapper: str) -> None:
    """Refuse what cannot be called when it is wrapped, not at its first call
    (in a worker thread or a callback, far from the cause)."""
    if not callable(fn):
        raise TypeError(f"{wrapper} wraps a callable, not {type(fn).__name__}: {_shown(fn)}")


def wrap_context(fn: Callable[P, T]) -> Callable[P, T]:
    """Return a callable that runs ``fn`` in a copy of the caller's current context.

    The copy is taken now, when ``wrap_context`` is called; each call of the
    result runs in a fresh copy of that snapshot, so calls do not leak into
    each other. Use it for ``threading.Thread(target=...)``,
    ``loop.run_in_executor`` and callbacks.

    Coroutine functions, generator functions and async generator functions stay
    what they are, and every step of the coroutine or generator a call makes
    runs in that call's copy (an ``async def`` wrapped and awaited later, in
    another task, still sees the snapshot); so does a coroutine or generator
    that a plain ``fn`` returns.
    """
    _check_wrappable(fn, "wrap_context")
    if _stepping is None:
        _load_stepping()
    snapshot = copy_context()
    later_steps = _stepping._later_steps
    stepping = _stepping._stepping_function(fn, lambda: snapshot.copy().run)
    if stepping is not None:
        return cast(Callable[P, T], stepping)

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        ctx = snapshot.copy()
        return later_steps(ctx.run, ctx.run(fn, *args, **kwargs))

    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose ``submit`` and ``map`` run each call in a
    copy of the submitter's context, so worker threads see the submitter's
    session (and nothing they set leaks back into the pool's threads)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the caller's context."""
        return super().submit(copy_context().run, fn, *args, **kwargs)

    # ``Executor.map`` submits each call through ``submit`` above, from the
    # caller's thread, so it needs no override.
