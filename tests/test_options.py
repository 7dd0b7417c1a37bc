"""Option validation of both middlewares.

The ASGI and WSGI middlewares take the same options, so each must reject every bad value at
construction with the same exception type and a message that shows the offending value.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any

import pytest
import werkzeug.test

import sessionctx.asgi
import sessionctx.wsgi
from sessionctx._policy import SessionMiddlewareBase
from tests.support import any_app, asgi_client

MIDDLEWARES = [
    pytest.param(sessionctx.asgi.SessionIdMiddleware, "an ASGI", id="asgi"),
    pytest.param(sessionctx.wsgi.SessionIdMiddleware, "a WSGI", id="wsgi"),
]


OPTION_ERRORS = [
    pytest.param({"header_name": 123}, TypeError, "123", id="header-name-not-str"),
    pytest.param({"header_name": b"X-Session-Id"}, TypeError, "b'X-Session-Id'", id="header-bytes"),
    pytest.param(
        {"header_name": ""},
        ValueError,
        "header_name: invalid header name: ''",
        id="header-name-empty",
    ),
    pytest.param({"header_name": "X Session"}, ValueError, "'X Session'", id="header-name-space"),
    pytest.param({"header_name": "X-Séssion"}, ValueError, "'X-Séssion'", id="header-non-ascii"),
    pytest.param({"header_name": "X-A:b"}, ValueError, "'X-A:b'", id="header-name-colon"),
    pytest.param({"accept_headers": "X-Session-Id"}, TypeError, "'X-Session-Id'", id="accept-str"),
    pytest.param({"accept_headers": b"x"}, TypeError, "b'x'", id="accept-bytes"),
    pytest.param({"accept_headers": 5}, TypeError, "5", id="accept-not-iterable"),
    pytest.param({"accept_headers": {"X-A", "X-B"}}, TypeError, "no order", id="accept-set"),
    pytest.param({"accept_headers": frozenset({"X-A"})}, TypeError, "frozenset", id="accept-fset"),
    pytest.param({"accept_headers": []}, ValueError, "at least one", id="accept-empty"),
    pytest.param({"accept_headers": ["X-A", 3]}, TypeError, "3", id="accept-item-not-str"),
    pytest.param(
        {"accept_headers": ["X-A", "bad name"]},
        ValueError,
        "accept_headers: invalid header name: 'bad name'",
        id="accept-bad",
    ),
    pytest.param({"trust_incoming": "yes"}, TypeError, "'yes'", id="trust-incoming-str"),
    pytest.param({"update_request_header": 1}, TypeError, "1", id="update-request-header-int"),
    pytest.param({"expose_header": None}, TypeError, "None", id="expose-header-none"),
    pytest.param({"handle_errors": "no"}, TypeError, "'no'", id="handle-errors-str"),
    pytest.param({"validator": "x"}, TypeError, "'x'", id="validator-not-callable"),
    pytest.param({"generator": 5}, TypeError, "5", id="generator-not-callable"),
    pytest.param({"attributes": {"a": 1}}, TypeError, "{'a': 1}", id="attributes-a-dict"),
    pytest.param({"on_missing": "ignore"}, ValueError, "'ignore'", id="on-missing-unknown"),
    pytest.param({"on_invalid": "Reject"}, ValueError, "'Reject'", id="on-invalid-wrong-case"),
    pytest.param({"on_invalid": None}, TypeError, "None", id="on-invalid-none"),
    pytest.param(
        {"trust_incoming": False, "on_missing": "reject"},
        ValueError,
        "on_missing='reject' would reject every request",
        id="untrusted-and-reject",
    ),
    pytest.param({"handle_errors": 1}, TypeError, "1", id="handle-errors-int"),
    pytest.param(
        {"trust_incoming": False, "on_invalid": "reject"},
        ValueError,
        "on_invalid='reject' would never apply",
        id="untrusted-and-invalid-reject",
    ),
]


@pytest.mark.parametrize(("middleware", "kind"), MIDDLEWARES)
@pytest.mark.parametrize(("options", "error", "shown"), OPTION_ERRORS)
def test_bad_options_raise_at_construction(
    middleware: type[SessionMiddlewareBase[Any]],
    kind: str,
    options: dict[str, Any],
    error: type[Exception],
    shown: str,
) -> None:
    with pytest.raises(error) as raised:
        middleware(any_app, **options)

    assert shown in str(raised.value)


@pytest.mark.parametrize(("middleware", "kind"), MIDDLEWARES)
def test_app_must_be_callable(middleware: type[SessionMiddlewareBase[Any]], kind: str) -> None:
    with pytest.raises(TypeError, match=rf"app must be {kind} callable.*'not an app'"):
        middleware("not an app")


@pytest.mark.parametrize(("middleware", "kind"), MIDDLEWARES)
def test_options_are_keyword_only(middleware: type[SessionMiddlewareBase[Any]], kind: str) -> None:
    with pytest.raises(TypeError, match="positional"):
        middleware(any_app, "X-Session-Id")  # type: ignore[call-arg]


@pytest.mark.parametrize(("middleware", "kind"), MIDDLEWARES)
def test_good_options_are_kept(middleware: type[SessionMiddlewareBase[Any]], kind: str) -> None:
    instance = middleware(
        any_app,
        header_name="X-Request-Session",
        accept_headers=["X-Request-Session", "X-Legacy-Session"],
        on_invalid="reject",
        handle_errors=True,
    )

    assert instance.app is any_app
    policy = instance._policy
    assert policy.header_name == "X-Request-Session"
    assert policy.on_invalid == "reject"
    assert policy.handle_errors is True


def _one_request(kind: str, options: dict[str, Any], sid: str | None) -> tuple[int, str | None]:
    """One request through the ``kind`` middleware in-process; the response's
    status and session header."""
    headers = {} if sid is None else {"X-Session-Id": sid}
    if kind == "wsgi":

        def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [])
            return [b""]

        client = werkzeug.test.Client(sessionctx.wsgi.SessionIdMiddleware(wsgi_app, **options))
        response = client.get("/", headers=headers)
        return response.status_code, response.headers.get("X-Session-Id")

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send() -> tuple[int, str | None]:
        app = sessionctx.asgi.SessionIdMiddleware(asgi_app, **options)
        async with asgi_client(app) as client:
            response = await client.get("/", headers=headers)
            return response.status_code, response.headers.get("X-Session-Id")

    return asyncio.run(send())


async def _async_check(sid: str) -> bool:
    return False


def _generator_check(sid: str) -> Any:
    yield False


class _AsyncCallable:
    async def __call__(self, sid: str) -> bool:
        return False


@pytest.mark.parametrize(("middleware", "kind"), MIDDLEWARES)
@pytest.mark.parametrize("option", ["validator", "generator", "attributes"])
@pytest.mark.parametrize(
    "function",
    [
        pytest.param(_async_check, id="async-def"),
        pytest.param(functools.partial(_async_check), id="partial-of-async-def"),
        pytest.param(_generator_check, id="generator-function"),
        pytest.param(_AsyncCallable(), id="async-call"),
    ],
)
def test_an_async_or_generator_function_is_refused_for_a_callable_option(
    middleware: type[SessionMiddlewareBase[Any]], kind: str, option: str, function: Any
) -> None:
    """It would return a coroutine or generator: always true as a validator's
    verdict (every client id continued), never an id or attributes."""
    with pytest.raises(TypeError, match=f"{option} must be a plain function"):
        middleware(any_app, **{option: function})


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_validator_returning_an_awaitable_fails_the_request_closed(kind: str) -> None:
    """A plain function that returns a coroutine is found at the request:
    the client's id is never continued on it."""

    def hands_back_a_coroutine(sid: str) -> Any:
        return _async_check(sid)

    options: dict[str, Any] = {"validator": hands_back_a_coroutine}
    if kind == "wsgi":
        with pytest.raises(RuntimeError, match="validator returned coroutine, not a bool"):
            _one_request(kind, options, "attacker-id")
        return
    # Called directly: how an in-process client answers the error depends on its version.
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = sessionctx.asgi.SessionIdMiddleware(app, validator=hands_back_a_coroutine)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-session-id", b"x")]}
    with pytest.raises(RuntimeError, match="validator returned coroutine, not a bool"):
        asyncio.run(middleware(scope, receive, send))
    assert sent == []


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_validator_may_return_any_true_or_false_value(kind: str) -> None:
    """A regex's fullmatch (a match or None) is a validator as it is."""
    options = {"validator": re.compile(r"ok-\d+").fullmatch}
    assert _one_request(kind, options, "ok-1") == (200, "ok-1")
    status, sid = _one_request(kind, options, "other-1")
    assert status == 200
    assert sid not in (None, "other-1")


REFUSED_IDS = [
    # (options, the request's id, words of the debug record, status)
    pytest.param({}, "a b", ["is invalid", "starting a new session"], 200, id="invalid"),
    pytest.param(
        {"on_invalid": "reject"},
        "a b",
        ["is invalid", "rejecting the request"],
        400,
        id="invalid-reject",
    ),
    pytest.param(
        {"validator": lambda sid: False},
        "abc",
        ["refused by the validator", "starting a new session"],
        200,
        id="validator",
    ),
]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize(("options", "sid", "words", "status"), REFUSED_IDS)
def test_a_refused_id_is_logged_at_debug_level_without_its_value(
    caplog: pytest.LogCaptureFixture,
    kind: str,
    options: dict[str, Any],
    sid: str,
    words: list[str],
    status: int,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sessionctx"):
        assert _one_request(kind, options, sid)[0] == status
    (record,) = [r for r in caplog.records if r.name == "sessionctx"]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert all(word in message for word in words), message
    assert sid not in message


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("options", "sid"),
    [({}, "abc"), ({}, None), ({"trust_incoming": False}, "abc"), ({"on_missing": "reject"}, None)],
)
def test_only_a_refused_id_is_logged(
    caplog: pytest.LogCaptureFixture, kind: str, options: dict[str, Any], sid: str | None
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sessionctx"):
        _one_request(kind, options, sid)[0]
    assert [r for r in caplog.records if r.name == "sessionctx"] == []
