"""ASGI middleware that gives every HTTP request and WebSocket a session.

It reads the inbound session header, continues that session or starts a new
one, runs the app with :func:`sessionctx.current_session` set, and echoes the
id on the response. Pure ASGI: no framework is needed, and ContextVar changes
are not lost the way they are with Starlette's ``BaseHTTPMiddleware``.

Outermost, so that even a framework's own 500 carries the header::

    from fastapi import FastAPI
    from sessionctx.asgi import SessionIdMiddleware

    api = FastAPI()
    app = SessionIdMiddleware(api)

or inside Starlette's error handling (then set ``handle_errors=True`` to keep
the header on 500s)::

    api.add_middleware(SessionIdMiddleware, handle_errors=True)
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar, cast

from sessionctx._headers import name_spellings
from sessionctx._policy import (
    MISSING,
    PREFLIGHT_HEADER,
    SCOPE_KEY,
    VALID,
    SessionMiddlewareBase,
    SessionPolicy,
)
from sessionctx._validation import _RAW_ID_TABLE, MAX_SESSION_ID_LENGTH
from sessionctx.session import _current, _note_escape, _request_of, _request_runs

__all__ = ["SessionIdMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# ASGI messages are dicts: ``dict.copy`` is the cheapest shallow copy.
_copy = cast("Callable[[Message], Message]", dict.copy)
# Messages that start a response, and so carry the session header.
_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})
# HTTP/2 server push: the server starts another request in this send().
_PUSH = "http.response.push"
# What the session's send() looks at: one set test lets the body messages through.
_STARTS_AND_PUSH = _STARTS | {_PUSH}
_ALLOW_ORIGIN = b"access-control-allow-origin"
_EXPOSE = b"access-control-expose-headers"
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_CONNECTION_CLOSE = ((b"connection", b"close"),)
_HTTP1 = frozenset({"1.0", "1.1"})
_ERROR_BODY = b"Internal Server Error"
_NO_HEADERS = (MISSING, None)
# What a stand-in of the session holds once ended (see _standing_in).
_ENDED = (None, None, None)
# Stands for "several session headers" in the one-pass lookup; no header has its name.
_SEVERAL = (b"", b"")
# Bound once: attribute lookups and bound-method objects cost per request.
_set_session = _current.set
_get_session = _current.get
_reset_session = _current.reset


_F = TypeVar("_F", bound=Callable[..., Any])
T = TypeVar("T")


def _coroutine_function(fn: _F) -> _F:
    """Mark ``fn``, a plain function returning an awaitable, as a coroutine
    function: ``inspect.markcoroutinefunction`` on Python 3.12+, before that
    the attribute ``asyncio.iscoroutinefunction`` reads (asgiref's own way)."""
    if sys.version_info >= (3, 12):
        return inspect.markcoroutinefunction(fn)
    import asyncio.coroutines

    fn._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return fn


# The ``send`` an app gets is a method object bound to a plain function: one
# coroutine less per message than an ``async def`` wrapper, and cheaper to
# make per request than a function object. The function is marked once as a
# coroutine function, which its methods report too: asgiref's
# ``async_to_sync(send)`` (Django Channels' sync consumers, ``WsgiToAsgi``)
# warns about an unmarked one, and fails where warnings are errors.
_bound = types.MethodType


@_coroutine_function
def _send_with_session(
    state: tuple[Send, tuple[bytes, bytes], frozenset[bytes]], message: Message
) -> Awaitable[None]:
    """``send`` (``state[0]``), adding the session header ``pair`` to a
    message that starts a response unless the app set it itself, in any of
    its ``spellings`` (see :func:`~sessionctx._headers.name_spellings`).
    An HTTP/2 server push is sent outside any session (see :func:`_outside_session`)."""
    kind = message["type"]
    if kind in _STARTS_AND_PUSH:
        if kind == _PUSH:
            return _outside_session(state[0], message)
        send, pair, spellings = state
        # The app's message is never changed: it may send the same dict (a
        # module-level constant) to every client, and one client's id must
        # not stay in it for the next.
        headers = message.get("headers")
        if type(headers) is not list:
            message, headers = _with_header_list(message, headers)
        # The app's own session header, in any letter case, wins (Django
        # sends names as the app spelled them).
        if spellings:
            calling = False
            try:
                for name, _ in headers:
                    if name in spellings:
                        calling = True
                        return send(message)
            except TypeError:
                if calling:
                    raise  # the server's own
                spellings = frozenset()  # a name that cannot be hashed (a bytearray)
        if not spellings:
            # A long name, which has no spellings kept, or a name that cannot
            # be hashed: the names of its length are compared in lower case.
            lower = pair[0]
            size = len(lower)
            for name, _ in headers:
                if len(name) == size and name.lower() == lower:
                    return send(message)
        # A new list too: the app may reuse its own for every response.
        message = _copy(message)
        message["headers"] = [*headers, pair]
        return send(message)
    return state[0](message)


@_coroutine_function
def _send_with_session_standing_in(
    state: tuple[Send, tuple[bytes, bytes], frozenset[bytes]], message: Message
) -> Awaitable[None]:
    """:func:`_send_with_session` for a request with a body: the message that
    ends the response is sent through :func:`_standing_in`."""
    if message["type"] == "http.response.body" and not message.get("more_body"):
        return _standing_in(state[0], message)
    return _send_with_session(state, message)


async def _outside_session(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Await ``call(*args)``, a call into the server, with no session set.

    hypercorn opens the stream of an HTTP/2 server push (``http.response.push``)
    and starts the task of the pushed request right in that ``send()``: the
    task copies the context there, and everything outside the middleware in
    the pushed request (an outer middleware, its log lines, the server's own
    error line) would run in this request's session, also once it has ended.
    The pushed request's middleware gives it a session of its own either way.
    No stand-in (see :func:`_standing_in`): the server's code in this call
    works for the pushed request, not this one, and the task may start
    before the call returns.
    """
    active = _get_session()
    _set_session(None)
    try:
        return await call(*args)
    finally:
        # Set, not reset with a token, as in _standing_in.
        _set_session(active)


async def _standing_in(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Await ``call(*args)``, a call into the server, with a stand-in of the
    active session set, ended when the call returns.

    The server's own code in it still sees the session (hypercorn logs its
    access line there), but a copy of the context it makes meanwhile holds the
    stand-in, which is no session once ended (see
    ``sessionctx.session._Active``). uvicorn resumes reading the connection in
    ``receive()`` once a large body paused it, and in the ``send()`` that ends
    a response: asyncio's reader callback then runs in a copy of the request's
    context, and so do the next requests on that connection, whose tasks it
    starts (and a pipelined one started right there). Without the stand-in,
    everything outside the middleware in those requests (an outer
    middleware, an OpenTelemetry SERVER span, uvicorn's error line) would see
    this request's session.

    Used for requests that may have a body (not ``GET`` or ``HEAD``): it costs
    two context variable writes and a coroutine per call, about half a
    microsecond on the benchmark machine, where the middleware adds 1.5 to
    2 µs to a ``GET`` with a valid id.
    """
    active = _get_session()
    if active is None or active[0] is None:
        return await call(*args)
    # Tied to the same request, if any.
    stand_in = [active[0], active[1], _request_of(active)]
    _set_session(stand_in)
    try:
        return await call(*args)
    finally:
        # Set, not reset with a token: whoever steps this coroutine, the
        # session before the call comes back.
        _set_session(active)
        # Ended in one C call that keeps its length: a thread reading it
        # meanwhile gets the session or none, never an error (see
        # sessionctx.session._Active).
        stand_in[:] = _ENDED


class SessionIdMiddleware(SessionMiddlewareBase[ASGIApp]):
    """Give each ``http`` and ``websocket`` scope a session.

    The app runs with the request's :class:`~sessionctx.SessionContext` active;
    the previous value is restored when the app returns, raises or is
    cancelled. The id is stored at ``scope["sessionctx.session_id"]`` and sent
    once on ``http.response.start`` / ``websocket.accept`` (unless the app set
    that header itself). ``lifespan`` and other scopes pass through untouched,
    and a second ``SessionIdMiddleware`` inside this one does nothing.
    Inbound names are matched as the lower-case bytes ASGI servers deliver.

    Code that sees the session: the app and everything it awaits, tasks it
    creates (they copy the context), ``run_in_threadpool``/``to_thread`` calls
    (Starlette, FastAPI ``def`` endpoints and dependencies, ``BackgroundTasks``).
    A plain ``threading.Thread`` started by the app does not.

    >>> async def app(scope, receive, send): ...
    >>> app = SessionIdMiddleware(app, header_name="X-Session-Id")
    """

    __slots__ = (
        "_accepted",
        "_expose",
        "_handle_errors",
        "_header",
        "_lookup_raw",
        "_plain",
        "_spellings",
        "_watched",
    )

    _kind = "an ASGI"

    def _bind(self, policy: SessionPolicy) -> None:
        # Everything __call__ needs, bound once so a request pays no lookups.
        # Lower-case on the wire: HTTP/2 forbids upper-case field names.
        self._header = policy.header_name_lower.encode("latin-1")
        # Every spelling of the name; a long one has none, and is compared in
        # lower case instead.
        self._spellings = name_spellings(policy.header_name_lower, True)
        self._lookup_raw = policy.lookup.lookup_raw
        names = frozenset(n.encode("latin-1") for n in policy.lookup.names)
        self._watched = names | {b"baggage"}
        # The names whose one valid value is the session as is; none when a
        # validator or trust_incoming=False has a say (decide() then runs).
        self._accepted = names if policy.continues_valid else frozenset()
        self._expose = policy.expose_header
        self._handle_errors = policy.handle_errors
        # Neither attributes, handle_errors nor expose_header: the request needs
        # its id only, and one test settles that.
        self._plain = (
            self._make_context is None and not policy.handle_errors and not policy.expose_header
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application for one HTTP or WebSocket connection in its session."""
        scope_type = scope["type"]
        if (scope_type != "http" and scope_type != "websocket") or (
            # A SessionIdMiddleware outside this one runs the request.
            SCOPE_KEY in scope and _request_runs(scope[SCOPE_KEY])
        ):
            return await self.app(scope, receive, send)

        header = self._header
        raw = scope.get("headers") or ()
        # The usual request has one session header, or none: decided here
        # with one pass. More than one of the watched names (accepted names
        # and ``baggage``) needs the priority rules of the full lookup.
        watched = self._watched
        hit = None
        for item in raw:
            if item[0] in watched:
                if hit is not None:
                    hit = _SEVERAL
                    break
                hit = item
        if (
            hit is not None
            and hit[0] in self._accepted
            # The id rule of _raw_id_ok(), written out: the call would cost
            # more than the check.
            and 0 < len(value := hit[1]) <= MAX_SESSION_ID_LENGTH
            and 0 not in value.translate(_RAW_ID_TABLE)
        ):
            request_sid: str = value.decode()  # ASCII, by the id rule
        else:
            state, sid = _NO_HEADERS if hit is None else self._lookup_raw(raw)
            sid, state = self._policy.decide(state, sid)
            if sid is None:
                if state != MISSING or not _is_preflight(scope, raw):
                    return await self._reject(scope, raw, receive, send, state)
                # Browsers never send custom headers on a CORS preflight:
                # rejecting it would block the request that follows.
                sid = self._policy.new_id()
            request_sid = sid
            value = sid.encode()
            if state != VALID and self._policy.update_request_header:
                scope["headers"] = _with_header(raw, header, value)
        scope[SCOPE_KEY] = request_sid
        pair = (header, value)
        if self._expose:
            send = _exposing(send, header)

        method = scope.get("method")
        if method == "GET" or method == "HEAD" or method is None:
            send_with_session = _bound(_send_with_session, (send, pair, self._spellings))
        else:
            # A body over 64 KiB makes uvicorn pause reading and resume it in
            # receive() or in the send() that ends the response (see _standing_in).
            send_with_session = _bound(
                _send_with_session_standing_in, (send, pair, self._spellings)
            )
            receive = _bound(_standing_in, receive)
        # The third item marks the session of a request: True when it began
        # outside any session (see sessionctx.session._Active).
        outer = _get_session()
        outside = outer is None or outer[0] is None
        if self._plain:
            token = _set_session([request_sid, None, outside])
            try:
                return await self.app(scope, receive, send_with_session)
            except BaseException as error:
                # The server logs it after the session is gone: the id goes with it.
                _note_escape(error, _get_session())
                raise
            finally:
                _reset_session(token)
        make_context = self._make_context
        try:
            context = None if make_context is None else make_context(request_sid, scope)
        except Exception as error:
            _note_escape(error, [request_sid, None, outside])
            if self._handle_errors and scope_type == "http":
                await _send_500(send_with_session, scope)
            raise
        token = _set_session([request_sid, context, outside])
        try:
            if self._handle_errors:
                await _app_or_500(self.app, scope, receive, send_with_session)
            else:
                await self.app(scope, receive, send_with_session)
        except BaseException as error:
            _note_escape(error, _get_session())
            raise
        finally:
            _reset_session(token)

    async def _reject(
        self,
        scope: Scope,
        raw: Iterable[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        state: int,
    ) -> None:
        reason = self._policy.reject_body(
            state, lambda name: any(key == name.encode("latin-1") for key, _ in raw)
        )
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                # Closing before accept makes the server refuse the handshake
                # (HTTP 403); 1008 is "policy violation". Close reasons are
                # limited to 123 bytes.
                await send(
                    {
                        "type": "websocket.close",
                        "code": 1008,
                        "reason": reason[:123].decode("ascii"),
                    }
                )
            return
        await _send_plain(send, scope, 400, reason)


def _is_preflight(scope: Scope, raw: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request is a CORS preflight (``OPTIONS`` with
    ``Access-Control-Request-Method``)."""
    return scope.get("method") == "OPTIONS" and any(name == PREFLIGHT_HEADER for name, _ in raw)


async def _app_or_500(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app``; when it raises before a response has started, send a plain 500.

    The 500 goes through ``send``, the session wrapper, so it carries the
    session header, and on HTTP/1.x ``Connection: close``: the app's exception
    is re-raised either way, and a server closes the connection once it gets it.
    A start the server refused (hypercorn checks the headers as it takes them)
    has not started the response.
    """
    # ``send``, and whether the server has taken a start message.
    state: list[Any] = [send, False]
    try:
        await app(scope, receive, _bound(_tracking, state))
    except Exception:
        if not state[1] and scope["type"] == "http":
            await _send_500(send, scope)
        raise


async def _send_500(send: Send, scope: Scope) -> None:
    """Send a plain 500 for an exception the server gets next."""
    try:
        await _send_plain(
            send,
            scope,
            500,
            _ERROR_BODY,
            # The exception goes on to the server, which then closes the
            # connection (uvicorn does): said here, a client does not
            # send its next request on it. HTTP/2 has no such header.
            _CONNECTION_CLOSE if scope.get("http_version", "1.1") in _HTTP1 else (),
        )
    except Exception:
        # The app's exception is the one worth reporting; a failed
        # 500 (say, the client is gone) must not replace it.
        pass


@_coroutine_function
def _tracking(state: list[Any], message: Message) -> Awaitable[None]:
    """``send`` (``state[0]``), noting in ``state[1]`` that a start message was taken."""
    if message["type"] in _STARTS:
        return _start(state, message)
    return cast("Send", state[0])(message)


async def _start(state: list[Any], message: Message) -> None:
    await state[0](message)
    state[1] = True


def _with_header_list(
    message: Message, headers: Iterable[tuple[bytes, bytes]] | None
) -> tuple[Message, list[tuple[bytes, bytes]]]:
    """A copy of ``message`` whose ``headers`` (none, a tuple or any other
    iterable, read once) is a list, and that list."""
    listed = [] if headers is None else list(headers)
    message = dict(message)
    message["headers"] = listed
    return message, listed


def _with_header(
    raw: Iterable[tuple[bytes, bytes]], header: bytes, value: bytes
) -> list[tuple[bytes, bytes]]:
    """``raw`` with ``header`` set to ``value`` alone (for ``update_request_header``).

    A function of its own: a comprehension in ``__call__`` would make
    ``header`` a cell there, read through on every request.
    """
    headers = [h for h in raw if h[0] != header]
    headers.append((header, value))
    return headers


def _exposing(send: Send, name: bytes) -> Send:
    """``send``, merging ``name`` into the CORS expose list of a starting response."""

    def send_exposed(message: Message) -> Awaitable[None]:
        if message["type"] in _STARTS and "headers" in message:
            # A copy: the app's message is never changed (see send_with_session).
            message = {**message, "headers": _expose_header(list(message["headers"]), name)}
        return send(message)

    return send_exposed


async def _send_plain(
    send: Send,
    scope: Scope,
    status: int,
    body: bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [_TEXT_PLAIN, (b"content-length", str(len(body)).encode("ascii")), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    # A response to HEAD has no content (RFC 9110, 9.3.2), only its length.
    await send(
        {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
    )


def _expose_header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[tuple[bytes, bytes]]:
    """Merge ``name`` into ``Access-Control-Expose-Headers`` of a CORS response.

    Responses without ``Access-Control-Allow-Origin`` are returned unchanged.
    ``*`` is not treated as covering ``name``: for requests with credentials
    browsers read it as a literal header name.
    """
    is_cors = False
    expose_at = -1
    for i, (key, _) in enumerate(headers):
        key = key.lower()
        if key == _ALLOW_ORIGIN:
            is_cors = True
        elif key == _EXPOSE:
            expose_at = i
    if not is_cors:
        return headers
    out = list(headers)
    if expose_at < 0:
        out.append((_EXPOSE, name))
        return out
    current = out[expose_at][1]
    listed = {v.strip().lower() for v in current.split(b",")}
    if name.lower() not in listed:
        out[expose_at] = (out[expose_at][0], current + b", " + name if current.strip() else name)
    return out
