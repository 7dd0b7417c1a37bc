"""Reading session ids out of headers: ``extract_session_id`` and the lookup the
middlewares share (SPEC §1, §3, §4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests.structures
import starlette.datastructures
import werkzeug.datastructures
from django.http.request import HttpHeaders
from django.test import RequestFactory

from sessionctx import ACCEPTED_HEADER_NAMES, extract_session_id
from sessionctx._headers import INVALID, MISSING, VALID, HeaderLookup, name_spellings
from tests.support import configure_django

UUID4 = "0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69"


# --------------------------------------------------------------------------- #
# One table of header lists, read through every shape
# --------------------------------------------------------------------------- #

# (headers as (name, value) pairs in arrival order, expected status, expected id)
CASES = [
    pytest.param([], MISSING, None, id="no-headers"),
    pytest.param([("Accept", "*/*")], MISSING, None, id="unrelated-headers-only"),
    pytest.param([("X-Session-Id", UUID4)], VALID, UUID4, id="uuid"),
    pytest.param([("x-session-id", "abc")], VALID, "abc", id="lower-case-name"),
    pytest.param([("X-SESSION-ID", "abc")], VALID, "abc", id="upper-case-name"),
    pytest.param([("X-TraceCtrl-Session", "t")], VALID, "t", id="tracectrl-header"),
    pytest.param([("Mirascope-Session-Id", "m")], VALID, "m", id="mirascope-header"),
    pytest.param([("X-Session-Id", "x" * 200)], VALID, "x" * 200, id="200-chars"),
    pytest.param(
        [("Mirascope-Session-Id", "m"), ("X-TraceCtrl-Session", "t")],
        VALID,
        "t",
        id="tracectrl-beats-mirascope",
    ),
    pytest.param(
        [("Mirascope-Session-Id", "m"), ("X-TraceCtrl-Session", "t"), ("X-Session-Id", "x")],
        VALID,
        "x",
        id="x-session-id-beats-all-in-any-order",
    ),
    pytest.param(
        [("X-Session-Id", "bad value"), ("Mirascope-Session-Id", "m")],
        INVALID,
        None,
        id="invalid-higher-name-does-not-fall-through",
    ),
    pytest.param(
        [("X-TraceCtrl-Session", ""), ("Mirascope-Session-Id", "m")],
        INVALID,
        None,
        id="empty-higher-name-does-not-fall-through",
    ),
    pytest.param(
        [("Mirascope-Session-Id", "bad value"), ("X-Session-Id", "x")],
        VALID,
        "x",
        id="invalid-lower-name-is-irrelevant",
    ),
    pytest.param([("X-Session-Id", "")], INVALID, None, id="empty"),
    pytest.param([("X-Session-Id", "   ")], INVALID, None, id="blank"),
    pytest.param([("X-Session-Id", " abc")], INVALID, None, id="not-stripped"),
    pytest.param([("X-Session-Id", "x" * 201)], INVALID, None, id="201-chars"),
    pytest.param([("X-Session-Id", "a\tb")], INVALID, None, id="tab"),
    pytest.param([("X-Session-Id", "a\x00b")], INVALID, None, id="nul"),
    pytest.param([("X-Session-Id", "a\x7fb")], INVALID, None, id="del"),
    pytest.param([("X-Session-Id", "caf\u00e9")], INVALID, None, id="non-ascii"),
    pytest.param([("X-Session-Id", "a,b")], INVALID, None, id="comma"),
    pytest.param([("X-Session-Id", 'a"b')], INVALID, None, id="quote"),
    pytest.param(
        [("X-Session-Id", "a"), ("X-Session-Id", "b")], INVALID, None, id="two-values-for-one-name"
    ),
    pytest.param(
        [("X-Session-Id", "a"), ("x-session-id", "a")],
        INVALID,
        None,
        id="same-value-twice-still-counts-as-two",
    ),
    pytest.param(
        [("Mirascope-Session-Id", "a"), ("Mirascope-Session-Id", "b"), ("X-Session-Id", "x")],
        VALID,
        "x",
        id="repeated-lower-name-is-irrelevant",
    ),
    pytest.param(
        [("X-TraceCtrl-Session", "a"), ("X-TraceCtrl-Session", "b"), ("X-Session-Id", "x")],
        VALID,
        "x",
        id="repeated-lower-name-before-higher-name",
    ),
    pytest.param([("baggage", "session.id=abc")], VALID, "abc", id="baggage"),
    pytest.param(
        [("baggage", "user=u1, session.id = abc ;ttl=3 , other=x")],
        VALID,
        "abc",
        id="baggage-with-spaces-and-properties",
    ),
    pytest.param([("baggage", "session.id=a%2Fb%3D")], VALID, "a/b=", id="baggage-percent-encoded"),
    pytest.param(
        [("baggage", "session.id=a%20b")], INVALID, None, id="baggage-percent-encoded-space"
    ),
    pytest.param(
        [("baggage", "session.id=abc,session.id=abc")], VALID, "abc", id="baggage-same-value-twice"
    ),
    pytest.param(
        [("baggage", "session.id=abc,session.id=def")], INVALID, None, id="baggage-conflicting"
    ),
    pytest.param(
        [("baggage", "a=1"), ("baggage", "session.id=abc")],
        VALID,
        "abc",
        id="baggage-in-a-second-header",
    ),
    pytest.param(
        [("baggage", "session.id=abc"), ("baggage", "session.id=xyz")],
        INVALID,
        None,
        id="baggage-conflicting-across-headers",
    ),
    pytest.param([("baggage", "session.id=")], INVALID, None, id="baggage-empty-value"),
    pytest.param(
        [("baggage", "session.idx=1,my.session.id=2,session.id")],
        MISSING,
        None,
        id="baggage-without-the-member",
    ),
    pytest.param([("baggage", "user=u1")], MISSING, None, id="baggage-other-members-only"),
    pytest.param(
        [("baggage", "session.id=from-baggage"), ("X-Session-Id", "from-header")],
        VALID,
        "from-header",
        id="named-header-beats-baggage",
    ),
    pytest.param(
        [("X-Session-Id", "bad value"), ("baggage", "session.id=from-baggage")],
        INVALID,
        None,
        id="invalid-named-header-does-not-fall-back-to-baggage",
    ),
]


def as_dict(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def as_raw(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def as_environ(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """What a WSGI server makes of these headers: repeated ones joined with ``", "``."""
    environ: dict[str, str] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in pairs:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    return environ


SHAPES: list[Any] = [
    pytest.param(as_raw, id="asgi-raw-list"),
    pytest.param(lambda pairs: tuple(as_raw(pairs)), id="asgi-raw-tuple"),
    pytest.param(lambda pairs: list(pairs), id="str-pair-list"),
    pytest.param(as_dict, id="dict-of-lists"),
    pytest.param(
        lambda pairs: {name: tuple(values) for name, values in as_dict(pairs).items()},
        id="dict-of-tuples",
    ),
    pytest.param(
        lambda pairs: starlette.datastructures.Headers(raw=as_raw(pairs)), id="starlette-headers"
    ),
    pytest.param(lambda pairs: werkzeug.datastructures.Headers(pairs), id="werkzeug-headers"),
    pytest.param(
        lambda pairs: werkzeug.datastructures.EnvironHeaders(as_environ(pairs)),
        id="werkzeug-environ-headers",
    ),
    pytest.param(lambda pairs: httpx.Headers(as_raw(pairs)), id="httpx-headers"),
]


@pytest.mark.parametrize("make", SHAPES)
@pytest.mark.parametrize(("pairs", "status", "expected"), CASES)
def test_extract_session_id_in_every_shape(
    make: Callable[[list[tuple[str, str]]], object],
    pairs: list[tuple[str, str]],
    status: int,
    expected: str | None,
) -> None:
    assert extract_session_id(make(pairs)) == expected


@pytest.mark.parametrize(("pairs", "status", "expected"), CASES)
def test_the_middleware_lookups_agree(
    pairs: list[tuple[str, str]], status: int, expected: str | None
) -> None:
    lookup = HeaderLookup(ACCEPTED_HEADER_NAMES)
    assert lookup.lookup_raw(as_raw(pairs)) == (status, expected)
    assert lookup.lookup_environ(as_environ(pairs)) == (status, expected)


# --------------------------------------------------------------------------- #
# Mapping shapes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"X-Session-Id": "abc"}, "abc", id="canonical-case"),
        pytest.param({"x-session-id": "abc"}, "abc", id="lower-case"),
        pytest.param({"X-SESSION-ID": "abc"}, "abc", id="upper-case"),
        pytest.param({"x-SeSsIoN-iD": "abc"}, "abc", id="mixed-case"),
        pytest.param({"mirascope-session-id": "abc"}, "abc", id="mirascope-lower-case"),
        pytest.param({"X-Session-Id": ["abc"]}, "abc", id="list-with-one-value"),
        pytest.param({"X-Session-Id": ["a", "b"]}, None, id="list-with-two-values"),
        pytest.param({"X-Session-Id": ["abc", "abc"]}, None, id="list-with-a-repeated-value"),
        pytest.param({"X-Session-Id": []}, None, id="empty-list"),
        pytest.param(
            {"X-Session-Id": [], "Mirascope-Session-Id": "m"},
            None,
            id="empty-list-does-not-fall-through",
        ),
        pytest.param({"X-Session-Id": "a", "x-session-id": "b"}, None, id="two-spellings"),
        pytest.param({b"x-session-id": b"abc"}, "abc", id="bytes-names-and-values"),
        pytest.param({"x-session-id": b"\xc3\xa9"}, None, id="non-ascii-bytes"),
        pytest.param({"baggage": ["a=1", "session.id=abc"]}, "abc", id="baggage-list"),
        pytest.param(
            requests.structures.CaseInsensitiveDict({"X-TRACECTRL-SESSION": "t"}),
            "t",
            id="requests-case-insensitive-dict",
        ),
    ],
)
def test_extract_from_mappings(headers: Any, expected: str | None) -> None:
    assert extract_session_id(headers) == expected


def test_extract_from_werkzeug_environ_headers_of_a_real_environ() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "CONTENT_TYPE": "text/plain",
        "HTTP_X_TRACECTRL_SESSION": "from-environ",
    }
    assert extract_session_id(werkzeug.datastructures.EnvironHeaders(environ)) == "from-environ"


def test_httpx_joins_repeated_headers_which_makes_them_invalid() -> None:
    headers = httpx.Headers([("X-Session-Id", "a"), ("X-Session-Id", "b")])
    assert extract_session_id(headers) is None


# --------------------------------------------------------------------------- #
# header_names
# --------------------------------------------------------------------------- #


def test_custom_header_names_replace_the_default_ones() -> None:
    headers = {"X-Session-Id": "default", "X-Request-Session": "custom"}
    assert extract_session_id(headers, header_names=["X-Request-Session"]) == "custom"
    assert extract_session_id({"X-Session-Id": "x"}, header_names=("X-Request-Session",)) is None


def test_custom_header_names_keep_their_priority_order() -> None:
    headers = [("b-id", "from-b"), ("a-id", "from-a")]
    assert extract_session_id(headers, header_names=("A-Id", "B-Id")) == "from-a"
    assert extract_session_id(headers, header_names=("B-Id", "A-Id")) == "from-b"
    assert (
        extract_session_id([("a-id", "bad value"), ("b-id", "ok")], header_names=("A-Id", "B-Id"))
        is None
    )


def test_custom_header_names_still_fall_back_to_baggage() -> None:
    headers = {"baggage": "session.id=from-baggage"}
    assert extract_session_id(headers, header_names=("X-Request-Session",)) == "from-baggage"


@pytest.mark.parametrize(
    ("header_names", "error"),
    [
        pytest.param("X-Session-Id", TypeError, id="a-single-str"),
        pytest.param(b"X-Session-Id", TypeError, id="a-single-bytes"),
        pytest.param((), ValueError, id="empty"),
        pytest.param(("",), ValueError, id="empty-name"),
        pytest.param(("X-Session:Id",), ValueError, id="colon"),
        pytest.param(("X-S\u00e9ssion",), ValueError, id="non-ascii"),
        pytest.param((5,), TypeError, id="not-a-str"),
        pytest.param({"A-Id", "B-Id"}, TypeError, id="a-set-has-no-order"),
        pytest.param(frozenset({"A-Id"}), TypeError, id="a-frozenset"),
        # The middleware's and inject_session_headers()'s rule: a misspelt name
        # is an error, not a header that is silently never found.
        pytest.param(("X Session Id",), ValueError, id="space"),
        pytest.param(("X-Session-Id\r\n",), ValueError, id="crlf"),
        pytest.param(("X-Session-Id,Other",), ValueError, id="comma"),
    ],
)
def test_bad_header_names_are_rejected(header_names: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="header"):
        extract_session_id({}, header_names=header_names)


def test_header_names_are_lowered_and_deduplicated() -> None:
    lookup = HeaderLookup(["X-A", "x-a", "X-B"])
    assert lookup.names == ("x-a", "x-b")
    assert lookup.lookup_raw([(b"x-b", b"b")]) == (VALID, "b")
    assert lookup.lookup_environ({"HTTP_X_B": "b"}) == (VALID, "b")


# --------------------------------------------------------------------------- #
# Bad input types
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="none"),
        pytest.param("X-Session-Id: abc", id="str"),
        pytest.param(b"X-Session-Id: abc", id="bytes"),
        pytest.param(42, id="int"),
        pytest.param(object(), id="object"),
        pytest.param({"X-Session-Id"}, id="set"),
        pytest.param({5: "abc"}, id="int-name"),
        pytest.param([b"x-session-id"], id="list-of-names"),
        pytest.param([(b"x-session-id",)], id="one-tuple"),
        pytest.param([(b"x-session-id", b"a", b"b")], id="three-tuple"),
        pytest.param([None], id="list-of-none"),
    ],
)
def test_unsupported_headers_raise_type_error(headers: Any) -> None:
    with pytest.raises(TypeError):
        extract_session_id(headers)


def test_a_bad_header_name_is_called_a_name() -> None:
    with pytest.raises(TypeError, match="header names must be str or bytes, not int: 5"):
        extract_session_id({5: "abc", "X-Session-Id": "abc"})


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(None, id="none"),  # requests: a None value drops a header
        pytest.param(0, id="int"),
        pytest.param(object(), id="object"),
    ],
)
def test_headers_that_are_not_read_may_hold_any_value(other: object) -> None:
    headers: Any = {"Content-Length": other, "X-Session-Id": "abc", "Traceparent": other}
    assert extract_session_id(headers) == "abc"
    assert extract_session_id([*headers.items(), ("Accept", other)]) == "abc"
    assert extract_session_id({"Content-Length": other, "baggage": other}) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(123, id="int"),
        pytest.param(12.5, id="float"),
        pytest.param(object(), id="object"),
        pytest.param(bytearray(b"abc"), id="bytearray"),
        pytest.param(["abc", 5], id="list-with-an-int"),
    ],
)
def test_a_value_that_is_not_text_is_an_invalid_id(value: object) -> None:
    """Present, so it decides (no fall-through), and never a valid id."""
    headers: Any = {"X-Session-Id": value, "Mirascope-Session-Id": "lower"}
    assert extract_session_id(headers) is None
    assert extract_session_id([("x-session-id", value), ("baggage", "session.id=b")]) is None


def test_a_none_value_is_no_header() -> None:
    """As in requests, where a None value drops the header: the next name decides."""
    headers: Any = {"X-Session-Id": None, "Mirascope-Session-Id": "lower"}
    assert extract_session_id(headers) == "lower"
    assert extract_session_id({"X-Session-Id": [None, "abc"]}) == "abc"
    assert extract_session_id({"X-Session-Id": None, "baggage": "session.id=b"}) == "b"


ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "wsgi.version": (1, 0),
    "wsgi.multithread": True,
    "CONTENT_LENGTH": "",
}


def test_a_wsgi_environ_is_read_by_its_http_keys() -> None:
    """A WSGI environ or Django's request.META: its keys are not header names."""
    environ = {**ENVIRON, "HTTP_X_SESSION_ID": "from-environ", "HTTP_X_TRACECTRL_SESSION": "other"}
    assert extract_session_id(environ) == "from-environ"
    assert extract_session_id({**environ, "HTTP_X_SESSION_ID": "a b"}) is None
    del environ["HTTP_X_SESSION_ID"]
    assert extract_session_id(environ) == "other"
    assert extract_session_id({**ENVIRON, "HTTP_BAGGAGE": "session.id=b"}) == "b"
    assert extract_session_id(ENVIRON) is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(dict, id="dict"),
        pytest.param(httpx.Headers, id="httpx"),
        pytest.param(requests.structures.CaseInsensitiveDict, id="requests"),
        pytest.param(
            lambda pairs: HttpHeaders(
                {"HTTP_" + k.upper().replace("-", "_"): v for k, v in pairs.items()}
            ),
            id="django",
        ),
    ],
)
@pytest.mark.parametrize("name", ["Request-Method", "request_method", "REQUEST_METHOD"])
def test_a_request_method_header_does_not_make_headers_an_environ(
    make: Callable[[dict[str, str]], Any], name: str
) -> None:
    """Any client may send a header of that name (uvicorn keeps underscores)."""
    headers = make({name: "POST", "X-Session-Id": "caller-1"})
    assert extract_session_id(headers) == "caller-1"
    if make is not dict:
        # A header mapping is never an environ, whatever it holds.
        headers = make({name: "POST", "X-Session-Id": "caller-1", "wsgi.multithread": "1"})
        assert extract_session_id(headers) == "caller-1"


def test_djangos_request_meta_is_an_environ() -> None:
    configure_django({})
    request = RequestFactory().get("/", HTTP_X_SESSION_ID="from-meta")
    assert extract_session_id(request.META) == "from-meta"
    assert extract_session_id(request.headers) == "from-meta"


def test_name_spellings_are_every_letter_case_of_the_name() -> None:
    spellings = name_spellings("x-session-id", False)

    assert len(spellings) == 2**10
    assert {"x-session-id", "X-Session-Id", "X-SESSION-ID", "x-SeSsIoN-iD"} <= spellings
    assert all(name.lower() == "x-session-id" for name in spellings)
    assert name_spellings("x-session-id", True) == {name.encode() for name in spellings}


def test_a_name_whose_spellings_would_take_too_much_memory_has_none_kept() -> None:
    assert len(name_spellings("x-twelve-lttrs", False)) == 2**12
    assert name_spellings("x-thirteen-ltrs", False) == frozenset()
    assert name_spellings("x-thirteen-ltrs", True) == frozenset()
    # Few letters, but long: 2 ** 10 spellings of 65 characters.
    long_name = "x-session-id-" + "1" * 52
    assert name_spellings(long_name, False) == frozenset()


def test_header_names_none_means_the_default_names() -> None:
    """As the middleware's accept_headers=None."""
    assert extract_session_id({"Mirascope-Session-Id": "m"}, header_names=None) == "m"


@pytest.mark.parametrize("names", [5, object()])
def test_header_names_that_are_no_sequence_are_named_in_the_error(names: object) -> None:
    with pytest.raises(TypeError, match="header_names must be a sequence of header names"):
        extract_session_id({}, header_names=names)  # type: ignore[arg-type]
