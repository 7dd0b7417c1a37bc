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

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from sessionctx._headers import SESSION_HEADER_NAME
from sessionctx._policy import MISSING, SCOPE_KEY, VALID, OnMissing, SessionPolicy
from sessionctx.session import _current

__all__ = ["SessionIdMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = Iterable[tuple[bytes, bytes]]

# Messages that start a response, and so carry the session header.
_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})
_ALLOW_ORIGIN = b"access-control-allow-origin"
_EXPOSE = b"access-control-expose-headers"
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_ERROR_BODY = b"Internal Server Error"


class SessionIdMiddleware:
    """Give each ``http`` and ``websocket`` scope a session.

    The app runs with the request's :class:`~sessionctx.SessionContext` active;
    the previous value is restored when the app returns, raises or is
    cancelled. The id is stored at ``scope["sessionctx.session_id"]`` and sent
    once on ``http.response.start`` / ``websocket.accept`` (unless the app set
    that header itself). ``lifespan`` and other scopes pass through untouched,
    and a second ``SessionIdMiddleware`` inside this one does nothing.

    Code that sees the session: the app and everything it awaits, tasks it
    creates (they copy the context), ``run_in_threadpool``/``to_thread`` calls
    (Starlette, FastAPI ``def`` endpoints and dependencies, ``BackgroundTasks``).

    >>> async def app(scope, receive, send): ...
    >>> app = SessionIdMiddleware(app, header_name="X-Session-Id")
    """

    __slots__ = ("_header", "_header_len", "_policy", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        header_name: str = SESSION_HEADER_NAME,
        accept_headers: Iterable[str] | None = None,
        trust_incoming: bool = True,
        validator: Callable[[str], bool] | None = None,
        generator: Callable[[], str] | None = None,
        on_missing: OnMissing = "new",
        on_invalid: OnMissing = "new",
        attributes: Callable[[Scope], Mapping[str, Any] | None] | None = None,
        update_request_header: bool = False,
        expose_header: bool = False,
        handle_errors: bool = False,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI callable, not {type(app).__name__}: {app!r}")
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
        # Lower-case on the wire: HTTP/2 forbids upper-case field names.
        self._header = self._policy.header_name_lower.encode("latin-1")
        self._header_len = len(self._header)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if (scope_type != "http" and scope_type != "websocket") or SCOPE_KEY in scope:
            return await self.app(scope, receive, send)

        policy = self._policy
        raw = scope.get("headers")
        state, sid = policy.lookup.lookup_raw(raw) if raw else (MISSING, None)
        sid, state = policy.decide(state, sid)
        if sid is None:
            return await self._reject(scope_type, receive, send, state)

        scope[SCOPE_KEY] = sid
        header = self._header
        pair = (header, sid.encode("latin-1"))
        if state != VALID and policy.update_request_header:
            scope["headers"] = [h for h in raw or () if h[0] != header]
            scope["headers"].append(pair)
        header_len = self._header_len
        expose = policy.expose_header
        started = False

        async def send_with_session(message: Message) -> None:
            nonlocal started
            if message["type"] in _STARTS:
                started = True
                headers = message.get("headers")
                if headers is None:
                    message["headers"] = [pair]
                else:
                    if not isinstance(headers, (list, tuple)):
                        headers = list(headers)
                    for name, _ in headers:
                        if len(name) == header_len and name.lower() == header:
                            message["headers"] = headers
                            break
                    else:
                        message["headers"] = [*headers, pair]
                    if expose:
                        message["headers"] = _expose_header(message["headers"], header)
            await send(message)

        token = _current.set(policy.context(sid, scope))
        try:
            await self.app(scope, receive, send_with_session)
        except Exception:
            if policy.handle_errors and not started and scope_type == "http":
                await _send_plain(send, 500, _ERROR_BODY, pair)
            raise
        finally:
            _current.reset(token)

    async def _reject(self, scope_type: str, receive: Receive, send: Send, state: int) -> None:
        if scope_type == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
            return
        await _send_plain(send, 400, self._policy.reject_body(state))


async def _send_plain(send: Send, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [_TEXT_PLAIN, (b"content-length", str(len(body)).encode("ascii")), *extra]
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception:
        pass


def _expose_header(
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...], name: bytes
) -> list[tuple[bytes, bytes]]:
    """Merge ``name`` into ``Access-Control-Expose-Headers`` of a CORS response."""
    out = list(headers)
    is_cors = False
    expose_at = -1
    for i, (key, _) in enumerate(out):
        key = key.lower()
        if key == _ALLOW_ORIGIN:
            is_cors = True
        elif key == _EXPOSE:
            expose_at = i
    if not is_cors:
        return out
    if expose_at < 0:
        out.append((_EXPOSE, name))
        return out
    current = out[expose_at][1]
    listed = {v.strip().lower() for v in current.split(b",")}
    if name not in listed and b"*" not in listed:
        out[expose_at] = (out[expose_at][0], current + b", " + name if current.strip() else name)
    return out
