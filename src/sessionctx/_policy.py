"""The per-request session decision shared by the ASGI and WSGI middleware.

Sans-I/O: it sees header names and values, never a socket, a scope or an
environ object as such. Given the inbound headers it decides, once per
request, whether to continue the caller's session, start a new one, or reject
the request.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

from sessionctx._headers import (
    ACCEPTED_HEADER_NAMES,
    INVALID,
    MISSING,
    SESSION_HEADER_NAME,
    VALID,
    HeaderLookup,
    check_header_name,
    check_name_order,
)
from sessionctx._validation import _match_id, _shown, generate_session_id, validate_session_id
from sessionctx.session import SessionContext, _plain_context

__all__ = [
    "INVALID",
    "MISSING",
    "OnMissing",
    "PREFLIGHT_ENVIRON_KEY",
    "PREFLIGHT_HEADER",
    "SCOPE_KEY",
    "SessionMiddlewareBase",
    "SessionPolicy",
    "VALID",
]

#: Where both middlewares store the decided id: ``scope[...]`` / ``environ[...]``.
SCOPE_KEY: Final = "sessionctx.session_id"

OnMissing = Literal["new", "reject"]
#: The request header of a CORS preflight, as an ASGI name and a WSGI key.
PREFLIGHT_HEADER: Final = b"access-control-request-method"
PREFLIGHT_ENVIRON_KEY: Final = "HTTP_ACCESS_CONTROL_REQUEST_METHOD"
AppT = TypeVar("AppT")
_ACTIONS = ("new", "reject")

_logger = logging.getLogger("sessionctx")


def _check_callable(name: str, value: object) -> None:
    if value is None:
        return
    if not callable(value):
        raise TypeError(
            f"{name} must be callable or None, not {type(value).__name__}: {_shown(value)}"
        )
    if _is_async_or_generator(value):
        # Its result would be a coroutine or generator object: always true to
        # an ``if``, never an id or attributes. The id is decided before the
        # application runs, by plain calls.
        raise TypeError(
            f"{name} must be a plain function, not an async or generator function: {_shown(value)}"
        )


def _is_async_or_generator(fn: object) -> bool:
    """Whether calling ``fn`` makes a coroutine, an async generator or a generator."""
    kinds = (inspect.iscoroutinefunction, inspect.isasyncgenfunction, inspect.isgeneratorfunction)
    if any(kind(fn) for kind in kinds):
        return True
    # An object whose __call__ is one of those (inspect looks through
    # functools.partial and methods, but not through __call__ before 3.12).
    call = getattr(type(fn), "__call__", None)  # noqa: B004 (the method, not callable())
    return not inspect.isfunction(fn) and any(kind(call) for kind in kinds)


def _plain_verdict(verdict: object) -> bool:
    """A true ``validator`` result that is not ``True``: accepted (a regex
    match, a non-empty value), unless it is an awaitable or a generator, which
    an async or generator ``validator`` returns whatever it decides."""
    if inspect.isawaitable(verdict) or isinstance(verdict, (Generator, AsyncGenerator)):
        close = getattr(verdict, "close", None)
        if close is not None:
            close()  # no "never awaited" warning on top
        raise RuntimeError(
            f"session id validator returned {type(verdict).__name__}, not a bool: "
            "it must be a plain function, not an async or generator one"
        )
    return True


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}: {_shown(value)}")


class SessionPolicy:
    """Options of a session middleware, checked once, and the decision they imply.

    Shared by the ASGI and WSGI middleware, which only move bytes around it:

    >>> policy = SessionPolicy()
    >>> state, sid = policy.lookup.lookup_raw([(b"x-session-id", b"abc")])
    >>> policy.decide(state, sid)
    ('abc', 1)

    :meth:`decide` turns a header lookup into the request's session id, or
    ``None`` when the request is to be rejected with a 400.
    """

    __slots__ = (
        "accept_headers",
        "attributes",
        "continues_valid",
        "expose_header",
        "generator",
        "handle_errors",
        "header_name",
        "header_name_lower",
        "lookup",
        "on_invalid",
        "on_missing",
        "reject_invalid",
        "reject_missing",
        "trust_incoming",
        "update_request_header",
        "validator",
    )

    def __init__(
        self,
        *,
        header_name: str = SESSION_HEADER_NAME,
        accept_headers: Iterable[str] | None = None,
        trust_incoming: bool = True,
        validator: Callable[[str], bool] | None = None,
        generator: Callable[[], str] | None = None,
        on_missing: OnMissing = "new",
        on_invalid: OnMissing = "new",
        attributes: Callable[[Any], Mapping[str, Any] | None] | None = None,
        update_request_header: bool = False,
        expose_header: bool = False,
        handle_errors: bool = False,
    ) -> None:
        self.header_name = check_header_name(header_name, "header_name")
        self.header_name_lower = header_name.lower()
        if accept_headers is None:
            names: tuple[str, ...] = (header_name, *ACCEPTED_HEADER_NAMES)
        else:
            check_name_order(accept_headers, "accept_headers")
            names = tuple(check_header_name(n, "accept_headers") for n in accept_headers)
            if not names:
                raise ValueError("accept_headers must name at least one header (or be None)")
        self.accept_headers = names
        self.lookup = HeaderLookup(names)
        for flag, value in (
            ("trust_incoming", trust_incoming),
            ("update_request_header", update_request_header),
            ("expose_header", expose_header),
            ("handle_errors", handle_errors),
        ):
            _check_bool(flag, value)
        for option, action in (("on_missing", on_missing), ("on_invalid", on_invalid)):
            if not isinstance(action, str):
                raise TypeError(
                    f"{option} must be 'new' or 'reject', "
                    f"not {type(action).__name__}: {_shown(action)}"
                )
            if action not in _ACTIONS:
                raise ValueError(f"{option} must be 'new' or 'reject', not {_shown(action)}")
        if not trust_incoming and "reject" in (on_missing, on_invalid):
            raise ValueError(
                "trust_incoming=False ignores inbound ids, so "
                + (
                    "on_missing='reject' would reject every request"
                    if on_missing == "reject"
                    else "on_invalid='reject' would never apply"
                )
            )
        _check_callable("validator", validator)
        _check_callable("generator", generator)
        _check_callable("attributes", attributes)
        self.trust_incoming = trust_incoming
        self.validator = validator
        self.generator = generator
        self.on_missing = on_missing
        self.on_invalid = on_invalid
        self.reject_missing = on_missing == "reject"
        self.reject_invalid = on_invalid == "reject"
        self.attributes = attributes
        self.update_request_header = update_request_header
        self.expose_header = expose_header
        self.handle_errors = handle_errors
        #: ``decide(VALID, sid)`` is always ``(sid, VALID)``: a middleware may
        #: skip the call for a valid inbound id (the common case).
        self.continues_valid = trust_incoming and validator is None

    def decide(self, state: int, sid: str | None) -> tuple[str | None, int]:
        """Return ``(session_id, state)`` for one request.

        ``state`` and ``sid`` come in from a :class:`HeaderLookup`. The state
        going out is ``VALID`` when the inbound id is continued (it also passed
        the user's ``validator``), else ``MISSING`` or ``INVALID`` and the id
        was generated; ``session_id`` is ``None`` when the request must be
        rejected (see :meth:`reject_body`).
        """
        refused = False
        if not self.trust_incoming:
            state = MISSING
        elif state == VALID:
            validator = self.validator
            if validator is None:
                return sid, VALID
            verdict = validator(sid)  # type: ignore[arg-type]
            if verdict is True or (verdict and _plain_verdict(verdict)):
                return sid, VALID
            state = INVALID
            refused = True
        reject = self.reject_missing if state == MISSING else self.reject_invalid
        if state == INVALID and _logger.isEnabledFor(logging.DEBUG):
            # Why a client's id did not continue its session; never the value,
            # which the client chose.
            _logger.debug(
                "The request's session id %s: %s",
                "was refused by the validator" if refused else "is invalid",
                "rejecting the request" if reject else "starting a new session",
            )
        if reject:
            return None, state
        return self.new_id(), state

    def new_id(self) -> str:
        """Generate an id; a custom generator's output must follow the id rule."""
        generator = self.generator
        if generator is None:
            return generate_session_id()
        sid = generator()
        if type(sid) is str and _match_id(sid) is not None:
            return sid
        try:
            # A str subclass that follows the rule is taken as the plain str
            # it holds; anything else is a bug in the generator.
            return str.__str__(validate_session_id(sid))
        except (TypeError, ValueError) as error:
            raise RuntimeError(
                f"session id generator returned an invalid id {_shown(sid)} ({error})"
            ) from None

    def context(self, sid: str, request: object) -> SessionContext:
        """The request's :class:`SessionContext`, with ``attributes(request)`` if configured."""
        attributes = self.attributes
        if attributes is None:
            return _plain_context(sid)
        return SessionContext(sid, attributes(request))

    def reject_body(self, state: int, present: Callable[[str], bool]) -> bytes:
        """The short plain-text body of a 400 for a rejected ``state``.

        It names the header the request was judged by: the first accepted
        name when none was sent; else the first accepted name the request
        carries (``present(lower_name)``), or ``baggage`` when only that was.
        """
        if state == MISSING:
            return f"Missing {self.accept_headers[0]} header".encode("ascii")
        for name in self.accept_headers:
            if present(name.lower()):
                break
        else:
            name = "baggage"
        return f"Invalid {name} header".encode("ascii")


class SessionMiddlewareBase(ABC, Generic[AppT]):
    """The constructor shared by the ASGI and WSGI ``SessionIdMiddleware``.

    It checks the options once, into a :class:`SessionPolicy`, and lets the
    subclass precompute what its ``__call__`` needs in :meth:`_bind`.
    """

    __slots__ = ("_make_context", "_policy", "app")
    #: The wrapped application.
    app: AppT
    #: "an ASGI" / "a WSGI", for the error about a bad ``app``.
    _kind: ClassVar[str]

    def __init__(
        self,
        app: AppT,
        *,
        header_name: str = SESSION_HEADER_NAME,
        accept_headers: Iterable[str] | None = None,
        trust_incoming: bool = True,
        validator: Callable[[str], bool] | None = None,
        generator: Callable[[], str] | None = None,
        on_missing: OnMissing = "new",
        on_invalid: OnMissing = "new",
        attributes: Callable[[Any], Mapping[str, Any] | None] | None = None,
        update_request_header: bool = False,
        expose_header: bool = False,
        handle_errors: bool = False,
    ) -> None:
        if not callable(app):
            raise TypeError(
                f"app must be {self._kind} callable, not {type(app).__name__}: {_shown(app)}"
            )
        self.app = app
        self._policy = SessionPolicy(
            header_name=header_name,
            accept_headers=accept_headers,
            trust_incoming=trust_incoming,
            validator=validator,
            generator=generator,
            on_missing=on_missing,
            on_invalid=on_invalid,
            attributes=attributes,
            update_request_header=update_request_header,
            expose_header=expose_header,
            handle_errors=handle_errors,
        )
        #: ``None`` without ``attributes``: the request's SessionContext is then
        #: made only when asked for (see ``sessionctx.session._current``).
        self._make_context: Callable[[str, Any], SessionContext] | None = (
            None if attributes is None else self._policy.context
        )
        self._bind(self._policy)

    @abstractmethod
    def _bind(self, policy: SessionPolicy) -> None:
        """Precompute, once, what each request needs from ``policy``."""
