"""WSGI middleware that gives every request a session.

It reads the inbound session header, continues that session or starts a new
one, runs the application with :func:`sessionctx.current_session` set, and
echoes the id on the response. It works with any WSGI server (gunicorn,
uWSGI, mod_wsgi, werkzeug's development server, ``wsgiref``) and any WSGI
framework.

Flask: wrap ``app.wsgi_app``, so that ``app`` stays the Flask object::

    from flask import Flask
    from sessionctx.wsgi import SessionIdMiddleware

    app = Flask(__name__)
    app.wsgi_app = SessionIdMiddleware(app.wsgi_app)

Django, in ``wsgi.py``::

    from django.core.wsgi import get_wsgi_application
    from sessionctx.wsgi import SessionIdMiddleware

    application = SessionIdMiddleware(get_wsgi_application())

Each request runs in a :class:`contextvars.Context` of its own, copied from the
server thread's context when the request arrives. The application call, every
step of the response body and the body's ``close()`` run inside it, so code in
lazy bodies (generators, Flask's ``stream_with_context``, Django's
``StreamingHttpResponse``) sees the request's session, and nothing is ever set
in the server thread's own context: there is nothing to reset and nothing can
leak into the next request served by that thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import suppress
from contextvars import Context, copy_context
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

from sessionctx._headers import environ_key, name_spellings
from sessionctx._policy import (
    MISSING,
    PREFLIGHT_ENVIRON_KEY,
    SCOPE_KEY,
    VALID,
    SessionMiddlewareBase,
    SessionPolicy,
)
from sessionctx._validation import _RAW_ID_TABLE, MAX_SESSION_ID_LENGTH
from sessionctx.asgi import _expose_header
from sessionctx.session import _current, _note_escape, _request_runs

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

    # WSGIApplication is named in a string only: the base class's parameter.
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment  # noqa: F401

__all__ = ["SessionIdMiddleware"]

Headers = list[tuple[str, str]]

_set_session = _current.set
_get_session = _current.get
# Where a2wsgi's WSGIMiddleware keeps the ASGI scope it built the environ from.
_ASGI_SCOPE: Final = "asgi.scope"
_TEXT_PLAIN: Final = ("Content-Type", "text/plain; charset=utf-8")
_ERROR_STATUS: Final = "500 Internal Server Error"
_ERROR_BODY: Final = b"Internal Server Error"
_ERROR_LENGTH: Final = ("Content-Length", str(len(_ERROR_BODY)))
# Iterators whose next() runs no Python code.
_INERT_ITERATORS: Final[frozenset[type]] = frozenset({type(iter([])), type(iter(()))})
# A key no environ holds: the fast path's key when every id needs decide().
_NO_FAST_PATH: Final = "sessionctx.no_fast_path"


class SessionIdMiddleware(SessionMiddlewareBase["WSGIApplication"]):
    """Give each WSGI request a session.

    The application runs with the request's :class:`~sessionctx.SessionContext`
    active in a context of the request's own. The id is stored at
    ``environ["sessionctx.session_id"]`` (and, with ``update_request_header``,
    at the ``HTTP_...`` key of ``header_name`` when it was generated) and added
    once to the headers the application passes to ``start_response``, unless
    the application set that header itself (in any letter case). A second
    ``SessionIdMiddleware`` inside this one does nothing.

    Code that sees the session: the application call and everything it calls
    in the server's thread, each ``next()`` of the response body and its
    ``close()`` (so generators and streaming responses too), and work handed
    to :func:`sessionctx.wrap_context` or
    :class:`sessionctx.ContextThreadPoolExecutor`. Plain threads the
    application starts, and the server's own code (its access log, for
    instance) do not; gunicorn's access log can print the response header
    with ``%({x-session-id}o)s``.

    The options are those of :class:`sessionctx.asgi.SessionIdMiddleware`;
    ``attributes`` receives the WSGI ``environ``.

    Response bodies that can run no code of the application are returned as they
    are: a ``list`` or ``tuple`` keeps its ``len()`` (some servers use it to set
    ``Content-Length``), and an instance of the server's ``wsgi.file_wrapper``
    stays recognisable, so the server can still send the file with
    ``sendfile()``. When the server's ``wsgi.file_wrapper`` is a function, as
    uWSGI's is (it returns the file it is given, and sends it with
    ``sendfile()`` only when the application returns that very object), a body
    with a ``read()`` method is taken for that file and returned as it is.
    Reading such a file is the server's work and runs outside the request's
    context; its ``close()`` (which Django points at ``response.close``, firing
    ``request_finished``) is made to run inside it whenever the wrapper allows
    setting ``close`` on the instance. Any other body is wrapped in an iterator
    whose ``close()`` closes the application's body exactly once, also when
    iteration never started or raised, and which has the body's ``len()`` when
    it has one (without ``handle_errors``). When the body's ``__iter__`` (run in the
    request's context) hands out the iterator of a list or tuple, as Django's
    ``HttpResponse`` does, the server steps that iterator directly: stepping it
    runs no code of the application.

    ``handle_errors=True``: when the application raises before it called
    ``start_response`` (in the call, or in its body when it calls
    ``start_response`` lazily), the middleware calls ``start_response`` with a
    plain ``500`` carrying the session header (without ``exc_info``: nothing
    was started that it could replace, and uWSGI sends no body for a response
    started with one), and hands that body to the server; the next step of the
    body (or its ``close()``, if the server stops first) raises the exception
    again, so the server logs it as any application error, and closes the
    connection after the 500, as it does for any error once a response has
    started. Raising it straight from the application call would lose the
    header: werkzeug, gunicorn and ``wsgiref`` then discard what was given to
    ``start_response`` and send a 500 page of their own. Once the application
    called ``start_response``, errors are left to the server (gunicorn, for
    one, would merge the header lists of both calls; an application that
    replaces its response by calling ``start_response`` again with
    ``exc_info`` gets the session header once there too, when nothing but
    this middleware's own wrappers stands between it and gunicorn).

    >>> def hello(environ, start_response):
    ...     start_response("200 OK", [("Content-Type", "text/plain")])
    ...     return [environ["sessionctx.session_id"].encode()]
    >>> app = SessionIdMiddleware(hello)
    >>> sent = []
    >>> def start_response(status, headers, exc_info=None):
    ...     sent.append((status, headers))
    >>> b"".join(app({"HTTP_X_SESSION_ID": "abc"}, start_response)), sent
    (b'abc', [('200 OK', [('Content-Type', 'text/plain'), ('X-Session-Id', 'abc')])])
    """

    __slots__ = (
        "_environ_key",
        "_expose_name",
        "_first_key",
        "_handle_errors",
        "_header",
        "_header_lower",
        "_header_spellings",
        "_lookup_environ",
        "_plain",
    )

    _kind = "a WSGI"

    def _bind(self, policy: SessionPolicy) -> None:
        self._header = policy.header_name
        self._header_lower = policy.header_name_lower
        # Every spelling of the name; a long one has none, and is compared in
        # lower case instead.
        self._header_spellings = name_spellings(policy.header_name_lower, False)
        self._environ_key = environ_key(policy.header_name)
        # As the response header is written: as given.
        self._expose_name = self._header.encode("latin-1") if policy.expose_header else None
        # Bound once, so that a request pays no attribute lookups for them.
        self._lookup_environ = policy.lookup.lookup_environ
        # The first accepted name settles the usual request alone, unless a
        # validator or trust_incoming=False must see every id: then the fast
        # path reads a key no environ holds and always falls through.
        self._first_key = policy.lookup.environ_keys[0] if policy.continues_valid else _NO_FAST_PATH
        self._handle_errors = policy.handle_errors
        # Neither attributes nor handle_errors: the request needs its id only.
        self._plain = self._make_context is None and not policy.handle_errors

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Run the application for one request in its session; return its body."""
        # A SessionIdMiddleware outside this one runs the request: a WSGI one,
        # or an ASGI one around an a2wsgi bridge (its options decide, also on
        # a request with a valid id: it may trust no inbound id).
        if (SCOPE_KEY in environ and _request_runs(environ[SCOPE_KEY])) or (
            _ASGI_SCOPE in environ and _bridged(environ)
        ):
            return self.app(environ, start_response)

        # The first accepted name, when present, decides alone: the usual
        # request is settled with one lookup; everything else by the full one.
        # The id rule is written out here (ASCII, then one table pass in C,
        # cheaper than the regex); a value it turns down goes to the full
        # lookup, which applies the rule again.
        value = environ.get(self._first_key)
        if (
            value
            and value.isascii()
            and len(value) <= MAX_SESSION_ID_LENGTH
            and 0 not in value.encode().translate(_RAW_ID_TABLE)
        ):
            request_sid: str = value
        else:
            state, sid = self._lookup_environ(environ)
            sid, state = self._policy.decide(state, sid)
            if sid is None:
                if (
                    state != MISSING
                    or environ.get("REQUEST_METHOD") != "OPTIONS"
                    or PREFLIGHT_ENVIRON_KEY not in environ
                ):
                    return self._reject(environ, start_response, state)
                # Browsers never send custom headers on a CORS preflight:
                # rejecting it would block the request that follows.
                sid = self._policy.new_id()
            if state != VALID and self._policy.update_request_header:
                environ[self._environ_key] = sid
            request_sid = sid
        environ[SCOPE_KEY] = request_sid
        pair = (self._header, request_sid)
        if self._expose_name is not None:
            start_response = _exposing(start_response, self._expose_name)

        # What it needs is bound as defaults rather than closed over: no cells
        # to make per request, and the header loop reads plain locals.
        def start_response_with_session(
            status: str,
            headers: Headers,
            exc_info: OptExcInfo | None = None,
            start_response: StartResponse = start_response,
            pair: tuple[str, str] = pair,
            spellings: frozenset[str] = self._header_spellings,
        ) -> Callable[[bytes], object]:
            # The application's own session header, in any letter case, wins.
            # (Names are str: a name that cannot be hashed raises TypeError.)
            own = False
            if spellings:
                for name, _ in headers:
                    if name in spellings:
                        own = True
                        break
            else:
                # A long name, which has no spellings kept: the names of its
                # length are compared in lower case.
                lower = pair[0].lower()
                size = len(lower)
                for name, _ in headers:
                    if len(name) == size and name.lower() == lower:
                        own = True
                        break
            if own:
                if exc_info is not None:
                    _drop_kept_session_headers(start_response, pair[0].lower())
                return start_response(status, headers, exc_info)
            if exc_info is None:
                # A new list: the application may reuse its own for every response.
                return start_response(status, [*headers, pair])
            if _kept_session_headers(start_response, pair[0].lower()):
                # The server adds these headers to the first call's, which
                # hold the session header already.
                return start_response(status, headers, exc_info)
            return start_response(status, [*headers, pair], exc_info)

        ctx = copy_context()
        # The session is set in the request's own context, which is dropped
        # with the request: no token to reset in the server thread.
        tracked: _TrackedStartResponse | None = None
        # The third item marks the session of a request: True when it began
        # outside any session (see sessionctx.session._Active).
        outer = _get_session()
        outside = outer is None or outer[0] is None
        try:
            if self._plain:
                ctx.run(_set_session, [request_sid, None, outside])
                body = ctx.run(self.app, environ, start_response_with_session)
            else:
                if self._handle_errors:
                    tracked = _TrackedStartResponse(start_response_with_session)
                make_context = self._make_context
                try:
                    context = None if make_context is None else make_context(request_sid, environ)
                except Exception as error:
                    _note_escape(error, [request_sid, None, outside])
                    raise
                ctx.run(_set_session, [request_sid, context, outside])
                body = ctx.run(
                    self.app, environ, start_response_with_session if tracked is None else tracked
                )
        except BaseException as error:
            # The server logs it after the request's context is gone: the id
            # goes with it.
            _note_escape_from(ctx, error)
            if tracked is None or tracked.called or not isinstance(error, Exception):
                raise
            failed = _GuardedBody(ctx, (), tracked, start_response, pair, environ)
            failed.fail(error)
            return failed

        body_type = type(body)
        if body_type is list or body_type is tuple:
            return body
        file_wrapper = environ.get("wsgi.file_wrapper")
        if body_type is file_wrapper or (
            # A wrapper that is a function: uWSGI's returns the file it is
            # given, and sends it with sendfile() only when the app returns
            # that very object. A file is read by the server either way.
            file_wrapper is not None
            and not isinstance(file_wrapper, type)
            and hasattr(body, "read")
        ):
            return _file_in_context(ctx, body)
        # waitress and wsgiref set Content-Length for a body of len() 1.
        sized = hasattr(body, "__len__")
        if tracked is None:
            return _SizedContextBody(ctx, body) if sized else _ContextBody(ctx, body)
        guarded = _SizedGuardedBody if sized else _GuardedBody
        return guarded(ctx, body, tracked, start_response, pair, environ)

    def _reject(
        self, environ: WSGIEnvironment, start_response: StartResponse, state: int
    ) -> list[bytes]:
        body = self._policy.reject_body(state, lambda name: environ_key(name) in environ)
        start_response("400 Bad Request", [_TEXT_PLAIN, ("Content-Length", str(len(body)))])
        return [] if _is_head(environ) else [body]


def _is_head(environ: WSGIEnvironment) -> bool:
    """Whether the response the middleware makes itself must leave its body out.

    A response to HEAD has no content (RFC 9110, 9.3.2), only its length;
    waitress, for one, would send it, and the client would read it as the
    start of the next response on the connection.
    """
    return environ.get("REQUEST_METHOD") == "HEAD"


def _kept_session_headers(
    start_response: StartResponse, lower: str
) -> list[tuple[str, str]] | None:
    """The headers ``start_response`` took on its first call, when it keeps
    them, and they hold a session header (named ``lower`` in lower case),
    for a second call with ``exc_info`` that replaces the response.

    PEP 3333 says the new headers replace the first call's, and werkzeug,
    waitress and ``wsgiref`` do so; gunicorn's ``Response.start_response``
    appends them to those it kept. Adding the session header again would send
    it twice, which a client reads as one invalid id. Seen through wrappers
    that set ``__wrapped__`` (this module's own do); gunicorn behind another
    wrapper is not recognised.
    """
    response = getattr(inspect.unwrap(start_response), "__self__", None)
    if not type(response).__module__.startswith("gunicorn.") or getattr(
        response, "headers_sent", False
    ):
        # Headers already sent: gunicorn raises the app's exception again, and
        # its access log still reads the ones it kept.
        return None
    # Not there when gunicorn refused the first headers before reaching it.
    kept = getattr(response, "headers", None)
    if isinstance(kept, list) and any(_named(name, lower) for name, _ in kept):
        return kept
    return None


def _named(name: object, lower: str) -> bool:
    """Whether a header name the server kept is ``lower``, in any letter case."""
    return isinstance(name, str) and name.lower() == lower


def _drop_kept_session_headers(start_response: StartResponse, lower: str) -> None:
    """Take the session headers of the first call (the middleware's, or the
    application's own) out of the headers the server kept (see
    :func:`_kept_session_headers`), for a replacement that sets the
    application's own: it alone is sent, as PEP 3333 has the replacement's
    headers replace the first call's."""
    kept = _kept_session_headers(start_response, lower)
    if kept is not None:
        kept[:] = [header for header in kept if not _named(header[0], lower)]


def _bridged(environ: WSGIEnvironment) -> bool:
    """Whether an ASGI ``SessionIdMiddleware`` runs the request around an
    ``a2wsgi`` bridge, which keeps the scope it built ``environ`` from; its
    session then goes on, and its id is put in ``environ`` too.

    a2wsgi runs the application in a thread with a copy of the context.
    """
    scope = environ[_ASGI_SCOPE]
    if not (isinstance(scope, dict) and SCOPE_KEY in scope and _request_runs(scope[SCOPE_KEY])):
        return False
    environ[SCOPE_KEY] = scope[SCOPE_KEY]
    return True


class _TrackedStartResponse:
    """Remembers whether the application called ``start_response`` (for ``handle_errors``)."""

    __slots__ = ("called", "start_response")

    def __init__(self, start_response: StartResponse) -> None:
        self.start_response = start_response
        self.called = False

    def __call__(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        self.called = True
        return self.start_response(status, headers, exc_info)


class _ContextBody:
    """The application's response body, stepped and closed in the request's context."""

    __slots__ = ("_body", "_close", "_ctx", "_next")

    def __init__(self, ctx: Context, body: Iterable[bytes]) -> None:
        self._ctx = ctx
        self._body = body
        self._next: Callable[[], bytes] | None = None
        self._close: Callable[[], object] | None = getattr(body, "close", None)

    def __iter__(self) -> Iterator[bytes]:
        if self._next is not None:
            return self
        # ``iter()`` may run the application's code too (``__iter__``).
        try:
            inner = self._ctx.run(iter, self._body)
        except BaseException as error:
            _note_escape_from(self._ctx, error)
            raise
        self._next = inner.__next__
        if type(inner) in _INERT_ITERATORS:
            # Stepping a list or tuple runs no code of the application (a
            # Django ``HttpResponse`` hands out its list's): the server can
            # step it directly, and ``close()`` stays with this object.
            return inner
        return self

    def __next__(self) -> bytes:
        try:
            step = self._next
            if step is None:
                # ``iter()`` may run the application's code too (``__iter__``).
                step = self._next = self._ctx.run(iter, self._body).__next__
            return self._ctx.run(step)
        except StopIteration:
            raise
        except BaseException as error:
            _note_escape_from(self._ctx, error)
            raise

    def close(self) -> None:
        close = self._close
        if close is not None:
            self._close = None
            try:
                self._ctx.run(close)
            except BaseException as error:
                _note_escape_from(self._ctx, error)
                raise


class _SizedContextBody(_ContextBody):
    """A :class:`_ContextBody` that keeps the ``len()`` of a body that has one."""

    __slots__ = ()

    def __len__(self) -> int:
        return self._ctx.run(len, cast(Sized, self._body))


class _GuardedBody(_ContextBody):
    """A body for ``handle_errors``: when it raises before the application called
    ``start_response`` (lazily, from a generator), the server gets a plain 500
    carrying the session header, then the exception again to log.

    The exception comes back from the ``next()`` after the 500 body, or from
    ``close()`` when the server stops iterating first, so it is never lost.
    """

    __slots__ = ("_error", "_error_body", "_error_sent", "_pair", "_start_response", "_tracked")

    def __init__(
        self,
        ctx: Context,
        body: Iterable[bytes],
        tracked: _TrackedStartResponse,
        start_response: StartResponse,
        pair: tuple[str, str],
        environ: WSGIEnvironment,
    ) -> None:
        super().__init__(ctx, body)
        self._error_body = b"" if _is_head(environ) else _ERROR_BODY
        self._tracked = tracked
        self._start_response = start_response
        self._pair = pair
        self._error: Exception | None = None
        self._error_sent = False

    def __iter__(self) -> Iterator[bytes]:
        # Every step goes through __next__, which turns errors into the 500.
        return self

    def fail(self, error: Exception) -> None:
        """Start the 500 for ``error``, the exception being handled; it is raised
        again after the body."""
        self._tracked.called = True
        # No exc_info: nothing was started that it could replace, and uWSGI
        # (2.0) sends no body for a response started with one.
        write = self._start_response(_ERROR_STATUS, [_TEXT_PLAIN, _ERROR_LENGTH, self._pair])
        self._error = error
        if not self._error_body:
            # A HEAD response has no chunk to carry the headers out: servers
            # that send them with the first non-empty chunk or write() call, as
            # PEP 3333 has it (waitress, gevent's pywsgi), would find the
            # exception first and answer with a 500 of their own. The exception
            # to report is the application's, raised after this: a failed
            # write() is left out.
            with suppress(Exception):
                write(b"")

    def __next__(self) -> bytes:
        error = self._error
        if error is not None:
            if not self._error_sent:
                self._error_sent = True
                return self._error_body
            self._error = None
            raise error
        try:
            return super().__next__()
        except StopIteration:
            raise
        except Exception as exc:
            if self._tracked.called:
                raise
            self.fail(exc)
        self._error_sent = True
        return self._error_body

    def close(self) -> None:
        try:
            super().close()
        finally:
            error = self._error
            if error is not None:
                self._error = None
                raise error


class _SizedGuardedBody(_GuardedBody):
    """A :class:`_GuardedBody` that keeps the ``len()`` of a body that has one
    (a 500 in its place is one chunk, sent with its own ``Content-Length``)."""

    __slots__ = ()

    __len__ = _SizedContextBody.__len__


def _note_escape_from(ctx: Context, error: BaseException) -> None:
    """Note on ``error`` the session it leaves ``ctx`` in (see
    :func:`sessionctx.session._note_escape`): the server logs it outside."""
    _note_escape(error, ctx.get(_current))


def _file_in_context(ctx: Context, body: Iterable[bytes]) -> Iterable[bytes]:
    """A ``wsgi.file_wrapper`` body, left for the server to send, its ``close()``
    run in ``ctx`` when the wrapper lets it be set."""
    close = getattr(body, "close", None)
    if close is not None:
        try:
            cast(Any, body).close = partial(ctx.run, close)
        except AttributeError:
            pass  # slotted wrapper: sendfile() wins, close() runs outside the context
    return body


def _exposing(start_response: StartResponse, name: bytes) -> StartResponse:
    """``start_response`` that merges ``name`` into ``Access-Control-Expose-Headers`` of
    CORS responses: the ASGI middleware's rule, applied to WSGI's str headers."""

    def start_response_exposing(
        status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        raw = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in headers]
        headers = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in _expose_header(raw, name)
        ]
        return start_response(status, headers, exc_info)

    start_response_exposing.__wrapped__ = start_response  # type: ignore[attr-defined]
    return start_response_exposing
