"""The session id rule, the default generator (SPEC §1, §6.3), and how errors show a bad value."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sessionctx import is_valid_session_id, validate_session_id
from sessionctx._validation import generate_session_id
from tests.support import any_app

UUID4 = "0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69"
ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
EXCLUDED_PUNCTUATION = '",;\\'


class StrSubclass(str):
    """A ``str`` subclass; the rule speaks of "a str", so it applies unchanged."""


VALID_IDS = [
    pytest.param(UUID4, id="uuid4"),
    pytest.param(UUID4.upper(), id="uuid4-upper-case"),
    pytest.param(uuid.UUID(UUID4).hex, id="uuid-hex-without-dashes"),
    pytest.param(str(uuid.uuid1()), id="uuid1"),
    pytest.param(ULID, id="ulid"),
    pytest.param(ULID.lower(), id="ulid-lower-case"),
    pytest.param("user-session-abc123", id="tracectrl-example"),
    pytest.param("fixed-session-for-testing", id="env-var-example"),
    pytest.param("a", id="one-char"),
    pytest.param("!", id="lowest-allowed-0x21"),
    pytest.param("~", id="highest-allowed-0x7e"),
    pytest.param("x" * 199, id="199-chars"),
    pytest.param("x" * 200, id="200-chars"),
    pytest.param("!#$%&'()*+-./:<=>?@[]^_`{|}~", id="all-allowed-punctuation"),
    pytest.param("0123456789", id="digits-only"),
    pytest.param(StrSubclass("abc"), id="str-subclass"),
]

# (value, the rule that must be named in the error message)
INVALID_IDS = [
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("x" * 201, "at most 200 characters", id="201-chars"),
    pytest.param("x" * 10_000, "at most 200 characters", id="10000-chars"),
    pytest.param("a b", "printable ASCII", id="space-inside"),
    pytest.param(" abc", "printable ASCII", id="leading-space-not-stripped"),
    pytest.param("abc ", "printable ASCII", id="trailing-space-not-stripped"),
    pytest.param(" ", "printable ASCII", id="only-space"),
    pytest.param("a\tb", "printable ASCII", id="tab"),
    pytest.param("a\rb", "printable ASCII", id="cr"),
    pytest.param("a\nb", "printable ASCII", id="lf"),
    pytest.param("abc\r\nX-Evil: 1", "printable ASCII", id="crlf-header-injection"),
    pytest.param("abc\n", "printable ASCII", id="trailing-newline"),
    pytest.param("a\x00b", "printable ASCII", id="nul"),
    pytest.param("a\x1fb", "printable ASCII", id="unit-separator-0x1f"),
    pytest.param("a\x7fb", "printable ASCII", id="del-0x7f"),
    pytest.param("caf\u00e9", "printable ASCII", id="latin-1-e-acute"),
    pytest.param("a\u00a0b", "printable ASCII", id="no-break-space"),
    pytest.param("a\u2028b", "printable ASCII", id="line-separator"),
    pytest.param("\u65e5\u672c", "printable ASCII", id="cjk"),
    pytest.param("a\U0001f600", "printable ASCII", id="emoji"),
    pytest.param('a"b', "printable ASCII", id="double-quote"),
    pytest.param("a,b", "printable ASCII", id="comma"),
    pytest.param("a, b", "printable ASCII", id="comma-joined-values"),
    pytest.param("a;b", "printable ASCII", id="semicolon"),
    pytest.param("a\\b", "printable ASCII", id="backslash"),
    pytest.param("x" * 199 + " ", "printable ASCII", id="200-chars-ending-in-space"),
]

NON_STR_VALUES = [
    pytest.param(None, id="none"),
    pytest.param(123, id="int"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(b"abc", id="bytes"),
    pytest.param(bytearray(b"abc"), id="bytearray"),
    pytest.param(["abc"], id="list-of-str"),
    pytest.param(("abc",), id="tuple-of-str"),
    pytest.param(uuid.UUID(UUID4), id="uuid-object"),
    pytest.param(object(), id="object"),
]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_ids_pass(value: str) -> None:
    assert is_valid_session_id(value) is True
    assert validate_session_id(value) is value


@pytest.mark.parametrize(("value", "rule"), INVALID_IDS)
def test_invalid_ids_fail_naming_the_rule(value: str, rule: str) -> None:
    assert is_valid_session_id(value) is False
    with pytest.raises(ValueError, match=re.escape(rule)):
        validate_session_id(value)


@pytest.mark.parametrize("value", NON_STR_VALUES)
def test_non_str_values_fail_with_type_error(value: object) -> None:
    assert is_valid_session_id(value) is False
    with pytest.raises(TypeError, match="must be a str") as excinfo:
        validate_session_id(value)
    assert type(value).__name__ in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "char", "index"),
    [
        pytest.param("ab cd", " ", 2, id="space"),
        pytest.param("\tabc", "\t", 0, id="tab-first"),
        pytest.param("abc\r\n", "\r", 3, id="cr-before-lf"),
        pytest.param("abc\x00", "\x00", 3, id="nul-last"),
        pytest.param("a\x7f", "\x7f", 1, id="del"),
        pytest.param("ok;no", ";", 2, id="semicolon"),
        pytest.param("\u00e9t\u00e9", "\u00e9", 0, id="non-ascii"),
    ],
)
def test_character_error_names_the_first_bad_character_and_its_index(
    value: str, char: str, index: int
) -> None:
    with pytest.raises(ValueError) as excinfo:
        validate_session_id(value)
    message = str(excinfo.value)
    assert f"found {char!r} at index {index}" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 201, id="too-long"),
        pytest.param("y" * 500 + "\n", id="long-with-newline"),
        pytest.param("z" * 100 + " tail", id="long-with-space"),
        pytest.param(list(range(1000)), id="long-non-str"),
    ],
)
def test_errors_show_at_most_50_characters_of_the_value(value: object) -> None:
    with pytest.raises((TypeError, ValueError)) as excinfo:
        validate_session_id(value)
    message = str(excinfo.value)
    shown = repr(value)
    assert shown[:40] in message
    assert shown[:51] not in message
    assert len(message) < 250


@pytest.mark.parametrize("codepoint", range(0x100))
def test_every_latin_1_character_follows_the_rule(codepoint: int) -> None:
    char = chr(codepoint)
    expected = 0x21 <= codepoint <= 0x7E and char not in EXCLUDED_PUNCTUATION
    for value in (char, f"a{char}b", "x" * 199 + char):
        assert is_valid_session_id(value) is expected, value
        if expected:
            assert validate_session_id(value) == value
        else:
            with pytest.raises(ValueError, match="printable ASCII"):
                validate_session_id(value)


# --------------------------------------------------------------------------- #
# The default generator
# --------------------------------------------------------------------------- #


def test_generated_ids_are_canonical_uuid4_strings() -> None:
    for _ in range(500):
        sid = generate_session_id()
        parsed = uuid.UUID(sid)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == sid
        assert len(sid) == 36
        assert is_valid_session_id(sid)


def test_generated_ids_are_unique() -> None:
    ids = [generate_session_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)


def test_generated_ids_use_all_random_bits() -> None:
    """Every hex digit appears at every random position, and the variant
    nibble takes all four RFC 4122 values, so no position is stuck."""
    ids = [generate_session_id() for _ in range(4000)]
    random_positions = [i for i in range(36) if i not in (8, 13, 14, 18, 19, 23)]
    for position in random_positions:
        assert {sid[position] for sid in ids} == set("0123456789abcdef"), position
    assert {sid[14] for sid in ids} == {"4"}
    assert {sid[19] for sid in ids} == set("89ab")


def test_generated_ids_are_unique_across_threads() -> None:
    """Ids come from a shared pool: threads drawing at once never share one."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(lambda _: [generate_session_id() for _ in range(2000)], range(8)))
    ids = [sid for batch in batches for sid in batch]
    assert len(set(ids)) == len(ids) == 16_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# Python 3.12+ warns on fork() while other threads run (asgiref's executor
# thread, started by another test); the child only draws ids and writes them
# to a pipe.
@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
def test_a_forked_child_never_reuses_the_parents_ids() -> None:
    generate_session_id()  # the parent now holds unused ids in its pool
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write_end, " ".join(generate_session_id() for _ in range(64)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split())
    parent_ids = {generate_session_id() for _ in range(64)}
    assert len(child_ids) == 64
    assert not child_ids & parent_ids


class _ReprFails:
    """A value whose ``repr()`` raises, as a half-built object's may."""

    def __repr__(self) -> str:
        raise AttributeError("half-built")


class _StrReprFails(str):
    def __repr__(self) -> str:
        raise AttributeError("half-built")


class _FloatReprFails(float):
    def __repr__(self) -> str:
        raise AttributeError("half-built")


def _asgi(**options: Any) -> object:
    from sessionctx.asgi import SessionIdMiddleware

    app = options.pop("app", any_app)
    return SessionIdMiddleware(app, **options)


def _wsgi(**options: Any) -> object:
    from sessionctx.wsgi import SessionIdMiddleware

    app = options.pop("app", any_app)
    return SessionIdMiddleware(app, **options)


def _httpx(**options: Any) -> object:
    from sessionctx.integrations.httpx import SessionTransport

    return SessionTransport(**options)


def _requests(**options: Any) -> object:
    from sessionctx.integrations.requests import SessionIdAdapter

    return SessionIdAdapter(**options)


def _otel(**options: Any) -> object:
    from sessionctx.integrations.opentelemetry import SessionSpanProcessor

    return SessionSpanProcessor(**options)


def _celery_connect(app: object) -> None:
    from sessionctx.integrations.celery import connect

    connect(app)


def _instrument_requests(session: object) -> object:
    from sessionctx.integrations.requests import instrument_session

    return instrument_session(session)  # type: ignore[arg-type]


def _log_filter(**options: Any) -> object:
    from sessionctx.log_filters import SessionIdFilter

    return SessionIdFilter(**options)


def _session_id_of(error: object) -> object:
    from sessionctx import session_id_of

    return session_id_of(error)  # type: ignore[arg-type]


def _new_session(attributes: Any) -> object:
    from sessionctx import new_session

    return new_session(attributes=attributes)


def _wrap_context(fn: object) -> object:
    from sessionctx import wrap_context

    return wrap_context(fn)  # type: ignore[arg-type]


def _extract(headers: object) -> object:
    from sessionctx import extract_session_id

    return extract_session_id(headers)


def _new_id(generator: Callable[[], str]) -> object:
    from sessionctx._policy import SessionPolicy

    return SessionPolicy(generator=generator).new_id()


_BROKEN = "<_ReprFails object>"
_BROKEN_STR = "<_StrReprFails object>"
_BROKEN_VALUES = [
    pytest.param(lambda: validate_session_id(_ReprFails()), TypeError, _BROKEN, id="session-id"),
    pytest.param(lambda: _wrap_context(_ReprFails()), TypeError, _BROKEN, id="wrap-context"),
    pytest.param(lambda: _asgi(app=_ReprFails()), TypeError, _BROKEN, id="asgi-app"),
    pytest.param(lambda: _wsgi(app=_ReprFails()), TypeError, _BROKEN, id="wsgi-app"),
    pytest.param(lambda: _asgi(validator=_ReprFails()), TypeError, _BROKEN, id="validator"),
    pytest.param(lambda: _wsgi(generator=_ReprFails()), TypeError, _BROKEN, id="generator"),
    pytest.param(lambda: _asgi(handle_errors=_ReprFails()), TypeError, _BROKEN, id="bool-option"),
    pytest.param(lambda: _wsgi(on_invalid=_ReprFails()), TypeError, _BROKEN, id="on-invalid-type"),
    pytest.param(
        lambda: _asgi(on_missing=_StrReprFails("keep")), ValueError, _BROKEN_STR, id="on-missing"
    ),
    pytest.param(
        lambda: _asgi(header_name=_ReprFails()), TypeError, _BROKEN, id="header-name-type"
    ),
    pytest.param(
        lambda: _wsgi(header_name=_StrReprFails("a b")), ValueError, _BROKEN_STR, id="header-name"
    ),
    pytest.param(
        lambda: _asgi(accept_headers=_ReprFails()), TypeError, _BROKEN, id="accept-headers"
    ),
    pytest.param(lambda: _httpx(hosts=_ReprFails()), TypeError, _BROKEN, id="hosts-type"),
    pytest.param(lambda: _httpx(hosts=[_ReprFails()]), TypeError, _BROKEN, id="hosts-entry-type"),
    pytest.param(
        lambda: _requests(hosts=[_StrReprFails("http://a.example/")]),
        ValueError,
        "'http://a.example/'",  # a str's own repr: the whole entry
        id="hosts-url",
    ),
    pytest.param(
        lambda: _requests(hosts=[_StrReprFails(".10.0.0.1")]),
        ValueError,
        "'.10.0.0.1'",
        id="hosts-ip-domain",
    ),
    pytest.param(
        lambda: _extract([(_ReprFails(), "v")]), TypeError, _BROKEN, id="extract-header-name"
    ),
    pytest.param(lambda: _extract([_ReprFails()]), TypeError, _BROKEN, id="extract-pair"),
    pytest.param(
        lambda: _new_id(lambda: _StrReprFails("a b")), RuntimeError, _BROKEN_STR, id="generated-id"
    ),
    pytest.param(
        lambda: _new_session({"k": _ReprFails()}), TypeError, _BROKEN, id="attribute-value"
    ),
    pytest.param(lambda: _otel(attribute_names=_ReprFails()), TypeError, _BROKEN, id="otel-names"),
    pytest.param(lambda: _otel(attribute_names=[_ReprFails()]), TypeError, _BROKEN, id="otel-name"),
    pytest.param(lambda: _celery_connect(_ReprFails()), TypeError, _BROKEN, id="celery-app"),
    pytest.param(
        lambda: _instrument_requests(_ReprFails()), TypeError, _BROKEN, id="requests-session"
    ),
    pytest.param(lambda: _log_filter(name=_ReprFails()), TypeError, _BROKEN, id="filter-name"),
    pytest.param(
        lambda: _log_filter(default=_ReprFails()), TypeError, _BROKEN, id="filter-default"
    ),
    pytest.param(lambda: _session_id_of(_ReprFails()), TypeError, _BROKEN, id="session-id-of"),
    pytest.param(lambda: _new_session({_ReprFails(): 1}), TypeError, _BROKEN, id="attribute-key"),
    pytest.param(
        lambda: _new_session({"n": _FloatReprFails("nan")}),
        ValueError,
        "<_FloatReprFails object>",
        id="attribute-nan",
    ),
]


@pytest.mark.parametrize(("call", "error", "shown"), _BROKEN_VALUES)
def test_every_error_about_a_value_survives_a_repr_that_raises(
    call: Callable[[], object], error: type[Exception], shown: str
) -> None:
    """The error names the bad value by its type when its ``repr()`` fails,
    rather than raising the ``repr()``'s exception in place of its own."""
    with pytest.raises(error) as raised:
        call()
    assert shown in str(raised.value)


def test_a_host_entry_is_shown_whole_in_its_error() -> None:
    # The part at fault may be at the end of a long entry: a label DNS refuses.
    entry = "api.eu-west-1.internal.example.com." + "x" * 64
    with pytest.raises(ValueError, match="longer than DNS allows") as raised:
        _httpx(hosts=[entry])
    assert str(raised.value).endswith(repr(entry))
