"""Fuzzing: arbitrary inbound headers, environ values and attributes never break a response.

For every input the middleware must not raise, must echo exactly one session
header whose value follows the id rule, must continue the inbound id exactly
when the deciding header holds a valid one, and must run the app (and every
body step) with that id. The id rule itself is checked against an oracle
written from the SPEC text.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from wsgiref.validate import validator as wsgi_validator

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sessionctx import current_session, current_session_id, is_valid_session_id, validate_session_id
from sessionctx.asgi import SessionIdMiddleware as AsgiSessionIdMiddleware
from sessionctx.wsgi import SessionIdMiddleware as WsgiSessionIdMiddleware
from tests.reliability.figures import FIGURES
from tests.reliability.inprocess import (
    Receive,
    Scope,
    Send,
    call_asgi,
    call_wsgi,
    environ_key,
    http_scope,
    wsgi_environ,
)
from tests.reliability.oracle import follows_id_rule, looks_generated
from tests.reliability.sizes import FUZZ_SETTINGS, SIZES
from tests.reliability.strategies import (
    ACCEPT_OPTIONS,
    BREAKERS,
    HEADER_NAME_OPTIONS,
    ID_CHARS,
    INBOUND_NAMES,
    Inbound,
    Outcome,
    expected_outcome,
    inbound_headers,
    latin1_values,
    priority_names,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(SIZES.test_timeout)]

SCOPE_KEY = "sessionctx.session_id"
APP_CHOSEN_ID = "app-chosen-id"


# --------------------------------------------------------------------------- #
# The id rule against the oracle
# --------------------------------------------------------------------------- #

_rule_inputs = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
    st.text(alphabet=ID_CHARS + BREAKERS, min_size=190, max_size=210),
    st.text(alphabet=ID_CHARS, min_size=195, max_size=205),
    st.text(alphabet=st.sampled_from(ID_CHARS + BREAKERS), max_size=5),
)


@FUZZ_SETTINGS
@given(value=_rule_inputs)
def test_id_rule_agrees_with_the_oracle(value: str) -> None:
    FIGURES.fuzz_examples["id rule vs oracle"] += 1
    valid = follows_id_rule(value)
    assert is_valid_session_id(value) is valid
    if valid:
        assert validate_session_id(value) is value
    else:
        with pytest.raises(ValueError):
            validate_session_id(value)


@FUZZ_SETTINGS
@given(
    value=st.one_of(
        st.none(), st.integers(), st.floats(), st.binary(max_size=20), st.lists(st.text())
    )
)
def test_only_str_can_be_an_id(value: object) -> None:
    FIGURES.fuzz_examples["id rule: non-str"] += 1
    assert is_valid_session_id(value) is False
    with pytest.raises(TypeError):
        validate_session_id(value)


# --------------------------------------------------------------------------- #
# ASGI: raw header bytes
# --------------------------------------------------------------------------- #


def check_echo(sid: str, outcome: Outcome) -> None:
    """The echoed id follows the rule, and is the inbound one exactly when it should be."""
    assert follows_id_rule(sid), f"echoed {sid!r}, which breaks the id rule"
    if not outcome.modelled:
        event("outcome: outside the model")
        return
    event(f"outcome: {'continued' if outcome.continued is not None else 'generated'}")
    if outcome.continued is not None:
        assert sid == outcome.continued
    else:
        # A fresh id from the default generator, never a refused inbound value.
        assert looks_generated(sid), sid
        assert sid not in outcome.refused


class RecordingApp:
    """An ASGI app that notes the session it sees at each step, then answers."""

    def __init__(self, header_name: str, sets_header: bool) -> None:
        self.header_name = header_name
        self.sets_header = sets_header
        self.seen: list[str | None] = []
        self.scope_ids: list[str | None] = []
        self.request_headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(current_session_id())
        self.scope_ids.append(scope.get(SCOPE_KEY))
        self.request_headers = list(scope.get("headers") or [])
        headers = [(b"content-type", b"text/plain")]
        if self.sets_header:
            headers.append((self.header_name.encode(), APP_CHOSEN_ID.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self.seen.append(current_session_id())
        await send({"type": "http.response.body", "body": b"ok"})


@FUZZ_SETTINGS
@given(
    headers=inbound_headers,
    header_name=st.sampled_from(HEADER_NAME_OPTIONS),
    accept_headers=st.sampled_from(ACCEPT_OPTIONS),
    shape=st.sampled_from(["list", "tuple", "absent"]),
    update_request_header=st.booleans(),
    app_sets_header=st.booleans(),
    double_wrap=st.booleans(),
)
def test_asgi_any_raw_headers_give_one_valid_session_header(
    headers: list[Inbound],
    header_name: str,
    accept_headers: tuple[str, ...] | None,
    shape: str,
    update_request_header: bool,
    app_sets_header: bool,
    double_wrap: bool,
) -> None:
    FIGURES.fuzz_examples["asgi raw headers"] += 1
    app = RecordingApp(header_name, app_sets_header)
    options: dict[str, Any] = {
        "header_name": header_name,
        "accept_headers": accept_headers,
        "update_request_header": update_request_header,
    }
    middleware = AsgiSessionIdMiddleware(app, **options)
    if double_wrap:
        middleware = AsgiSessionIdMiddleware(middleware, **options)
    raw = [(h.name.encode("latin-1"), h.value) for h in headers]
    scope_headers = {"list": raw, "tuple": tuple(raw), "absent": None}[shape]
    if shape == "absent":
        headers = []

    reply = call_asgi(middleware, http_scope(scope_headers))

    assert current_session() is None
    lower = header_name.lower().encode()
    echoed = reply.header_values(lower)
    assert len(echoed) == 1, f"session headers on the response: {echoed}"
    sid = app.scope_ids[0]
    assert isinstance(sid, str)
    assert app.seen == [sid, sid]
    assert echoed[0] == (APP_CHOSEN_ID if app_sets_header else sid).encode("latin-1")
    outcome = expected_outcome(headers, priority_names(header_name, accept_headers))
    check_echo(sid, outcome)
    if update_request_header and outcome.modelled and outcome.continued is None:
        assert [v for k, v in app.request_headers if k == lower] == [sid.encode()]


# --------------------------------------------------------------------------- #
# WSGI: environ strings
# --------------------------------------------------------------------------- #


_environ_headers = st.dictionaries(
    st.sampled_from(INBOUND_NAMES),
    latin1_values,
    max_size=5,
)


@FUZZ_SETTINGS
@given(
    values=_environ_headers,
    baggage=st.one_of(
        st.none(), inbound_headers.map(lambda hs: [h for h in hs if h.name == "baggage"])
    ),
    header_name=st.sampled_from(HEADER_NAME_OPTIONS),
    accept_headers=st.sampled_from(ACCEPT_OPTIONS),
    update_request_header=st.booleans(),
    app_sets_header=st.booleans(),
    lazy_start=st.booleans(),
    double_wrap=st.booleans(),
)
def test_wsgi_any_environ_gives_one_valid_session_header(
    values: dict[str, str],
    baggage: list[Inbound] | None,
    header_name: str,
    accept_headers: tuple[str, ...] | None,
    update_request_header: bool,
    app_sets_header: bool,
    lazy_start: bool,
    double_wrap: bool,
) -> None:
    FIGURES.fuzz_examples["wsgi environ"] += 1
    headers = [Inbound(name, value.encode("latin-1")) for name, value in values.items()]
    if baggage:
        # A WSGI server joins repeated headers into one value.
        values.pop("baggage", None)
        headers = [h for h in headers if h.name != "baggage"]
        members = [m for h in baggage if h.session_members is not None for m in h.session_members]
        joined = b",".join(h.value for h in baggage)
        headers.append(Inbound("baggage", joined, tuple(members)))
        values["baggage"] = joined.decode("latin-1")
    seen: list[str | None] = []
    environ_seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        seen.append(current_session_id())
        environ_seen.append(environ.get(SCOPE_KEY))
        environ_seen.append(environ.get(environ_key(header_name)))
        response_headers = [("Content-Type", "text/plain")]
        if app_sets_header:
            response_headers.append((header_name.lower(), APP_CHOSEN_ID))
        if not lazy_start:
            start_response("200 OK", response_headers)

        def body() -> Iterator[bytes]:
            if lazy_start:
                start_response("200 OK", response_headers)
            seen.append(current_session_id())
            yield b"ok"
            seen.append(current_session_id())

        return body()

    options: dict[str, Any] = {
        "header_name": header_name,
        "accept_headers": accept_headers,
        "update_request_header": update_request_header,
    }
    middleware = WsgiSessionIdMiddleware(app, **options)
    if double_wrap:
        middleware = WsgiSessionIdMiddleware(middleware, **options)
    environ = wsgi_environ({environ_key(name): value for name, value in values.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reply = call_wsgi(wsgi_validator(middleware), environ)

    assert current_session() is None
    echoed = reply.header_values(header_name.lower())
    assert len(echoed) == 1, f"session headers on the response: {echoed}"
    sid = environ_seen[0]
    assert isinstance(sid, str)
    assert seen == [sid, sid, sid]
    assert echoed[0] == (APP_CHOSEN_ID if app_sets_header else sid)
    outcome = expected_outcome(headers, priority_names(header_name, accept_headers))
    check_echo(sid, outcome)
    if update_request_header and outcome.modelled and outcome.continued is None:
        assert environ_seen[1] == sid


# --------------------------------------------------------------------------- #
# Attributes
# --------------------------------------------------------------------------- #

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_attribute_maps = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=8), _json_values, max_size=5)
)


def _as_json(attributes: Mapping[str, Any] | None) -> str | None:
    if attributes is None:
        return None
    return json.dumps(attributes, separators=(",", ":"), allow_nan=False)


@FUZZ_SETTINGS
@given(attributes=_attribute_maps, headers=inbound_headers)
def test_asgi_attributes_reach_the_app_unchanged(
    attributes: dict[str, Any] | None, headers: list[Inbound]
) -> None:
    FIGURES.fuzz_examples["asgi attributes"] += 1
    expected = _as_json(attributes)
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ctx = current_session()
        assert ctx is not None
        seen.append(ctx.attributes_json)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def attributes_of(scope: Scope) -> Mapping[str, Any] | None:
        # Handed over by reference: the middleware must copy, not keep, it.
        return attributes

    middleware = AsgiSessionIdMiddleware(app, attributes=attributes_of)
    raw = [(h.name.encode("latin-1"), h.value) for h in headers]
    reply = call_asgi(middleware, http_scope(raw))
    assert len(reply.header_values(b"x-session-id")) == 1
    assert seen == [expected]
    assert current_session() is None


@FUZZ_SETTINGS
@given(attributes=_attribute_maps, values=_environ_headers)
def test_wsgi_attributes_reach_the_app_unchanged(
    attributes: dict[str, Any] | None, values: dict[str, str]
) -> None:
    FIGURES.fuzz_examples["wsgi attributes"] += 1
    expected = _as_json(attributes)
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ctx = current_session()
        assert ctx is not None
        seen.append(ctx.attributes_json)
        start_response("204 No Content", [])
        return []

    middleware = WsgiSessionIdMiddleware(app, attributes=lambda environ: attributes)
    environ = wsgi_environ({environ_key(name): value for name, value in values.items()})
    reply = call_wsgi(middleware, environ)
    assert len(reply.header_values("x-session-id")) == 1
    assert seen == [expected]
    assert current_session() is None
