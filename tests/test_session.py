"""The core session API of SPEC §1, and the fixes of §6 items 3, 4, 5, 7 and 9."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import gc
import inspect
import json
import logging
import math
import pickle
import re
import sys
import threading
import types
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context, ContextVar, Token, copy_context
from typing import Any, TypeVar, cast

import anyio
import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from sessionctx import (
    SESSION_HEADER_NAME,
    SESSION_ID_ENV_VAR,
    ContextThreadPoolExecutor,
    SessionContext,
    current_session,
    current_session_id,
    extract_session_id,
    inject_session_headers,
    new_session,
    reset_session,
    session,
    session_id_of,
    set_session_id,
    wrap_context,
)
from sessionctx.session import _current
from tests.support import is_generated, logged_session_id, run_python

T = TypeVar("T")

FALLBACK_ENV_VAR = "TRACECTRL_SESSION_ID"
THREAD_TIMEOUT = 10.0


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Neither env var is set; returns ``monkeypatch`` to set them."""
    monkeypatch.delenv(SESSION_ID_ENV_VAR, raising=False)
    monkeypatch.delenv(FALLBACK_ENV_VAR, raising=False)
    return monkeypatch


@pytest.fixture
def restore_session() -> Iterator[None]:
    """Undo sessions the test sets without a token (``new_session()``)."""
    token = set_session_id(None)
    yield
    reset_session(token)


def run_in_thread(fn: Any) -> Any:
    """Run ``fn`` in a plain ``threading.Thread`` and return its result."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(fn()))
    thread.start()
    thread.join(THREAD_TIMEOUT)
    assert not thread.is_alive()
    return results[0]


# --------------------------------------------------------------------------- #
# The seeds' documented examples (import root renamed)
# --------------------------------------------------------------------------- #


def test_seed_new_session_example(no_env: pytest.MonkeyPatch, restore_session: None) -> None:
    from sessionctx.session import current_session_id, new_session

    sid = new_session()
    assert current_session_id() == sid


def test_seed_set_session_id_example(restore_session: None) -> None:
    from sessionctx.session import current_session_id, set_session_id

    set_session_id("user-session-abc123")
    assert current_session_id() == "user-session-abc123"


@pytest.mark.parametrize("variable", ["SESSIONCTX_SESSION_ID", "TRACECTRL_SESSION_ID"])
def test_seed_env_var_override_example(
    variable: str, no_env: pytest.MonkeyPatch, restore_session: None
) -> None:
    from sessionctx.session import new_session

    no_env.setenv(variable, "fixed-session-for-testing")
    sid = new_session()
    assert sid == "fixed-session-for-testing"


def test_seed_nested_session_example() -> None:
    from sessionctx.session import current_session_id, session

    with session(id="1"):
        assert current_session_id() == "1"
        with session(id="2"):
            assert current_session_id() == "2"
        assert current_session_id() == "1"
    assert current_session_id() is None


def test_seed_extract_session_id_example() -> None:
    from sessionctx.session import extract_session_id

    assert extract_session_id({"mirascope-session-id": "abc"}) == "abc"


# --------------------------------------------------------------------------- #
# SessionContext
# --------------------------------------------------------------------------- #


def test_session_context_is_a_frozen_slotted_dataclass() -> None:
    ctx = SessionContext("abc", {"k": 1})
    assert dataclasses.is_dataclass(ctx)
    assert "__slots__" in vars(SessionContext)
    assert not hasattr(ctx, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.attributes = None  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        ctx.extra = 1  # type: ignore[attr-defined]
    assert ctx.id == "abc"


def test_session_context_takes_id_and_attributes_positionally_or_by_keyword() -> None:
    assert SessionContext("abc", {"k": 1}) == SessionContext(id="abc", attributes={"k": 1})
    assert SessionContext("abc").attributes is None
    assert SessionContext("abc").attributes_json is None


@pytest.mark.parametrize(
    ("sid", "error"),
    [
        pytest.param("", ValueError, id="empty"),
        pytest.param("a b", ValueError, id="space"),
        pytest.param("a\nb", ValueError, id="newline"),
        pytest.param("x" * 201, ValueError, id="201-chars"),
        pytest.param(123, TypeError, id="int"),
        pytest.param(None, TypeError, id="none"),
    ],
)
def test_session_context_validates_the_id(sid: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="session id"):
        SessionContext(cast(str, sid))


@pytest.mark.parametrize(
    ("attributes", "error", "names"),
    [
        pytest.param({"x": math.nan}, ValueError, "['x']", id="nan"),
        pytest.param({"x": math.inf}, ValueError, "['x']", id="inf"),
        pytest.param({"x": -math.inf}, ValueError, "['x']", id="minus-inf"),
        pytest.param(
            {"a": {"b": [1, math.nan]}}, ValueError, "['a']['b'][1]", id="nested-nan-in-list"
        ),
        pytest.param({1: "v"}, TypeError, "1", id="int-key"),
        pytest.param({None: "v"}, TypeError, "None", id="none-key"),
        pytest.param({("a",): "v"}, TypeError, "('a',)", id="tuple-key"),
        pytest.param({"outer": {2: "v"}}, TypeError, "['outer']", id="nested-int-key"),
        pytest.param({"x": {1, 2}}, TypeError, "['x']", id="set-value"),
        pytest.param({"x": b"raw"}, TypeError, "['x']", id="bytes-value"),
        pytest.param({"x": object()}, TypeError, "['x']", id="object-value"),
        pytest.param({"a": [{"b": 1j}]}, TypeError, "['a'][0]['b']", id="nested-complex"),
    ],
)
def test_bad_attributes_are_rejected_eagerly_naming_the_key(
    attributes: dict[Any, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error) as excinfo:
        SessionContext("abc", attributes)
    assert names in str(excinfo.value)
    # The same check runs wherever attributes enter.
    with pytest.raises(error):
        set_session_id("abc", attributes=attributes)
    with pytest.raises(error):
        session("abc", attributes)
    with pytest.raises(error):
        new_session(attributes)
    assert current_session() is None


def test_attributes_that_contain_themselves_are_rejected() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match=re.escape("['inner']['self']")):
        SessionContext("abc", {"inner": looped})
    items: list[Any] = []
    items.append(items)
    with pytest.raises(ValueError, match=re.escape("['items'][0]")):
        SessionContext("abc", {"items": items})


def test_a_value_shared_by_two_keys_is_not_a_cycle() -> None:
    shared = [1, 2]
    ctx = SessionContext("abc", {"a": shared, "b": shared})
    assert ctx.attributes_json == '{"a":[1,2],"b":[1,2]}'


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param(["a", 1], id="list"),
        pytest.param("key=value", id="str"),
        pytest.param(5, id="int"),
    ],
)
def test_attributes_must_be_a_mapping(attributes: object) -> None:
    with pytest.raises(TypeError, match="mapping"):
        SessionContext("abc", cast(dict[str, Any], attributes))


def test_attributes_are_a_deep_read_only_copy() -> None:
    original: dict[str, Any] = {"user": "u1", "roles": ["admin"], "meta": {"tags": ["a"]}}
    ctx = SessionContext("abc", original)

    original["user"] = "u2"
    original["new"] = True
    original["roles"].append("root")
    original["meta"]["tags"].append("b")
    original["meta"]["extra"] = 1

    assert ctx.attributes_json == '{"user":"u1","roles":["admin"],"meta":{"tags":["a"]}}'
    assert ctx.attributes is not None
    assert ctx.attributes["user"] == "u1"
    assert list(ctx.attributes["roles"]) == ["admin"]
    assert list(ctx.attributes["meta"]["tags"]) == ["a"]
    # The copy equals what was passed in, lists included.
    assert ctx.attributes == {"user": "u1", "roles": ["admin"], "meta": {"tags": ["a"]}}
    assert ctx.attributes["roles"] == ["admin"]
    with pytest.raises(TypeError):
        ctx.attributes["user"] = "u3"  # type: ignore[index]
    with pytest.raises(TypeError):
        ctx.attributes["meta"]["extra"] = 2
    with pytest.raises((TypeError, AttributeError)):
        ctx.attributes["roles"].append("root")


def test_attributes_json_is_compact_and_round_trips() -> None:
    attributes = {
        "s": "caf\u00e9",
        "i": 1,
        "f": 1.5,
        "b": True,
        "n": None,
        "l": [1, "a"],
        "t": (2, 3),
        "d": {"k": [{"z": False}]},
    }
    ctx = SessionContext("abc", attributes)
    assert ctx.attributes_json is not None
    assert ", " not in ctx.attributes_json
    assert ": " not in ctx.attributes_json
    assert json.loads(ctx.attributes_json) == {**attributes, "t": [2, 3]}
    assert SessionContext("abc", {}).attributes_json == "{}"


def test_session_context_is_equal_by_value_and_hashable() -> None:
    a = SessionContext("abc", {"k": [1, {"z": 2}]})
    b = SessionContext("abc", {"k": [1, {"z": 2}]})
    assert a == b
    assert a is not b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "value"}[b] == "value"
    assert a != SessionContext("abd", {"k": [1, {"z": 2}]})
    assert a != SessionContext("abc", {"k": [1, {"z": 3}]})
    assert SessionContext("abc") == SessionContext("abc")
    assert SessionContext("abc") != SessionContext("abc", {})


def test_session_context_survives_copy_and_pickle() -> None:
    ctx = SessionContext("abc", {"k": [1, {"z": 2}]})
    for clone in (copy.copy(ctx), copy.deepcopy(ctx), pickle.loads(pickle.dumps(ctx))):
        assert clone == ctx
        assert clone.attributes_json == ctx.attributes_json
    # Immutable all the way down: a copy is the object itself.
    assert copy.copy(ctx) is ctx
    assert copy.deepcopy(ctx) is ctx
    plain = SessionContext("abc")
    assert pickle.loads(pickle.dumps(plain)) == plain


def nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "mapping"])
def test_attributes_nest_as_deep_as_json_dumps_goes(kind: str) -> None:
    # Half the recursion limit: json.dumps takes it; one frame per level here.
    attributes = {"deep": nested(500, kind)}

    ctx = SessionContext("abc", attributes)

    assert ctx.attributes_json == json.dumps(attributes, separators=(",", ":"))
    assert pickle.loads(pickle.dumps(SessionContext("abc", {"deep": nested(300, kind)}))) == (
        SessionContext("abc", {"deep": nested(300, kind)})
    )


@pytest.mark.parametrize("kind", ["list", "mapping"])
def test_attributes_nested_deeper_than_json_takes_name_the_key(kind: str) -> None:
    # Five times the recursion limit: json.dumps refuses it before Python 3.13
    # (RecursionError), and the attributes are refused on every version.
    attributes = {"deep": nested(5000, kind)}
    if sys.version_info < (3, 13):
        with pytest.raises(RecursionError):
            json.dumps(attributes)

    with pytest.raises(ValueError, match=r"\['deep'\] is nested too deeply"):
        SessionContext("abc", attributes)


def test_attributes_json_cannot_write_raises_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nesting _freeze() takes but json.dumps does not, a few frames deeper
    # (where the stack happens to be when the attributes are checked).
    def too_deep(*args: Any, **kwargs: Any) -> str:
        raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")

    monkeypatch.setattr(json, "dumps", too_deep)

    with pytest.raises(ValueError, match="nested too deeply to write as JSON"):
        SessionContext("abc", {"deep": [[1]]})


def test_an_int_too_long_for_json_names_the_key() -> None:
    with pytest.raises(ValueError):
        json.dumps(10**5000)  # beyond sys.get_int_max_str_digits()

    with pytest.raises(ValueError, match=r"session attribute \['big'\]\[0\] cannot be written"):
        SessionContext("abc", {"big": [10**5000]})
    assert SessionContext("abc", {"big": 10**4000, "small": -(2**64)}).attributes_json == (
        json.dumps({"big": 10**4000, "small": -(2**64)}, separators=(",", ":"))
    )


def test_a_list_or_tuple_in_the_attributes_is_a_read_only_list() -> None:
    """Lists and tuples are JSON arrays: kept as a list type that compares,
    serializes, slices and adds as the list it was, and cannot change."""
    import orjson

    attributes: Any = SessionContext("abc", {"l": ["a", ["b", 1]], "t": ("a", 1)}).attributes
    listed, tupled = attributes["l"], attributes["t"]
    assert isinstance(listed, list)
    assert listed == ["a", ["b", 1]]
    assert ["a", ["b", 1]] == listed  # noqa: SIM300 (the list on the left)
    assert tupled == ["a", 1]
    assert listed != ["a", ["b", 2]]
    assert listed != ["a"]
    assert not (listed != ["a", ["b", 1]])  # noqa: SIM202
    assert listed[:1] == ["a"]
    assert type(listed[:1]) is list
    assert copy.copy(listed) is listed
    assert copy.deepcopy(listed) is listed
    assert pickle.loads(pickle.dumps(listed)) == listed
    assert type(pickle.loads(pickle.dumps(listed))) is type(listed)
    assert listed.copy() == listed
    assert type(listed.copy()) is list
    assert json.dumps(listed) == '["a", ["b", 1]]'
    assert orjson.loads(orjson.dumps(attributes)) == {"l": ["a", ["b", 1]], "t": ["a", 1]}
    # + with a list gives a plain list. (The concatenations are what is
    # tested: RUF005's unpacking would not call +.)
    added = listed + ["c"]  # noqa: RUF005
    assert added == ["a", ["b", 1], "c"]
    assert type(added) is list
    added = ["z"] + listed  # noqa: RUF005
    assert added == ["z", "a", ["b", 1]]
    assert type(added) is list


def test_deeply_nested_attributes_compare_equal() -> None:
    """Compared in C, as deep as the attributes may nest."""
    deep: Any = "leaf"
    for _ in range(500):  # a Python __eq__ per level ran out of stack at about 330
        deep = [deep]
    assert SessionContext("a", {"k": deep}) == SessionContext("a", {"k": deep})


def test_a_session_context_made_without_an_id_gets_a_fresh_one() -> None:
    """As Mirascope's ``SessionContext()`` did."""
    first, second = SessionContext(), SessionContext(attributes={"k": 1})
    assert is_generated(first.id)
    assert is_generated(second.id)
    assert first.id != second.id
    assert second.attributes == {"k": 1}
    with pytest.raises(TypeError, match="NoneType"):
        SessionContext(None)  # type: ignore[arg-type]
    with session(first.id) as entered:
        assert entered == first


def test_attributes_copy_deep_copy_and_pickle_on_their_own() -> None:
    # What MappingProxyType offered too: copy(), | and reversed().
    attributes: Any = SessionContext("abc", {"k": [1, {"z": 2}], "s": "v"}).attributes
    assert copy.copy(attributes) is attributes
    assert copy.deepcopy(attributes) is attributes  # read-only all the way down
    assert pickle.loads(pickle.dumps(attributes)) == attributes
    assert attributes.copy() == {"k": [1, {"z": 2}], "s": "v"}
    assert type(attributes.copy()) is dict
    assert attributes | {"s": "w"} == {"k": [1, {"z": 2}], "s": "w"}
    assert {"s": "w", "t": 1} | attributes == {"k": [1, {"z": 2}], "s": "v", "t": 1}
    assert list(reversed(attributes)) == ["s", "k"]
    assert len(attributes) == 2
    assert "k" in attributes
    assert "x" not in attributes
    assert repr(attributes) == "{'k': [1, {'z': 2}], 's': 'v'}"


def test_a_session_context_with_attributes_converts_to_a_dict() -> None:
    # dataclasses.asdict deep-copies field values; FastAPI's jsonable_encoder
    # calls it, so an endpoint can return current_session().
    from fastapi.encoders import jsonable_encoder

    ctx = SessionContext("abc", {"user": "u1", "roles": ["a"]})

    as_dict = dataclasses.asdict(ctx)
    encoded = jsonable_encoder(ctx)

    assert as_dict == {
        "id": "abc",
        "attributes": {"user": "u1", "roles": ["a"]},
        "attributes_json": '{"user":"u1","roles":["a"]}',
    }
    assert encoded == {
        "id": "abc",
        "attributes": {"user": "u1", "roles": ["a"]},
        "attributes_json": '{"user":"u1","roles":["a"]}',
    }


def test_attributes_are_a_read_only_dict_to_serializers() -> None:
    import pydantic

    ctx = SessionContext("abc", {"user": "u1", "meta": {"tags": ["a"]}})
    attributes: Any = ctx.attributes
    assert isinstance(attributes, dict)
    assert isinstance(attributes["meta"], dict)
    for change in (
        lambda: attributes.update(user="u2"),
        lambda: attributes.setdefault("new", 1),
        lambda: attributes.pop("user"),
        lambda: attributes.popitem(),
        lambda: attributes.clear(),
        lambda: attributes["meta"].__setitem__("tags", []),
        lambda: attributes.__delitem__("user"),
        lambda: attributes["meta"]["tags"].append("b"),
        lambda: attributes["meta"]["tags"].extend(["b"]),
        lambda: attributes["meta"]["tags"].insert(0, "b"),
        lambda: attributes["meta"]["tags"].remove("a"),
        lambda: attributes["meta"]["tags"].pop(),
        lambda: attributes["meta"]["tags"].clear(),
        lambda: attributes["meta"]["tags"].sort(),
        lambda: attributes["meta"]["tags"].reverse(),
        lambda: attributes["meta"]["tags"].__setitem__(0, "b"),
        lambda: attributes["meta"]["tags"].__delitem__(0),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change()
    type(attributes).__init__(attributes, {"new": 1})  # filled once, when made
    tags = attributes["meta"]["tags"]
    type(tags).__init__(tags, ["b"])
    assert attributes == {"user": "u1", "meta": {"tags": ["a"]}}
    # As with MappingProxyType: |= binds a new plain dict, the attributes stay;
    # += and *= bind a new plain list.
    more = attributes
    more |= {"new": 1}
    assert type(more) is dict
    assert more == {"user": "u1", "meta": {"tags": ["a"]}, "new": 1}
    tags += ["b"]
    assert type(tags) is list
    assert tags == ["a", "b"]
    tags = attributes["meta"]["tags"]
    tags *= 2
    assert type(tags) is list
    assert tags == ["a", "a"]
    assert attributes == {"user": "u1", "meta": {"tags": ["a"]}}
    assert type(attributes | {"new": 1}) is dict
    assert json.loads(json.dumps(attributes)) == {"user": "u1", "meta": {"tags": ["a"]}}
    assert pydantic.TypeAdapter(SessionContext).dump_python(ctx, mode="json") == {
        "id": "abc",
        "attributes": {"user": "u1", "meta": {"tags": ["a"]}},
        "attributes_json": '{"user":"u1","meta":{"tags":["a"]}}',
    }


# --------------------------------------------------------------------------- #
# new_session and the env var
# --------------------------------------------------------------------------- #


def test_new_session_generates_a_uuid4_and_sets_it(
    no_env: pytest.MonkeyPatch, restore_session: None
) -> None:
    first = new_session()
    assert is_generated(first)
    assert current_session_id() == first
    second = new_session()
    assert second != first
    assert current_session_id() == second


def test_new_session_sets_attributes(no_env: pytest.MonkeyPatch, restore_session: None) -> None:
    sid = new_session({"tenant": "t1"})
    assert current_session() == SessionContext(sid, {"tenant": "t1"})


def test_the_primary_env_var_wins_over_the_fallback(
    no_env: pytest.MonkeyPatch, restore_session: None
) -> None:
    no_env.setenv(SESSION_ID_ENV_VAR, "primary")
    no_env.setenv(FALLBACK_ENV_VAR, "fallback")
    assert new_session() == "primary"
    assert current_session_id() == "primary"


@pytest.mark.parametrize(
    "blank",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param("\t\n", id="tab-newline"),
    ],
)
def test_a_blank_env_var_counts_as_unset(
    blank: str,
    no_env: pytest.MonkeyPatch,
    restore_session: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionctx")
    no_env.setenv(SESSION_ID_ENV_VAR, blank)
    assert is_generated(new_session())
    no_env.setenv(FALLBACK_ENV_VAR, "fallback")
    assert new_session() == "fallback"
    no_env.setenv(FALLBACK_ENV_VAR, blank)
    assert is_generated(new_session())
    assert caplog.records == []


@pytest.mark.parametrize("name", [SESSION_ID_ENV_VAR, FALLBACK_ENV_VAR])
def test_an_invalid_env_var_is_ignored_with_one_warning(
    name: str,
    no_env: pytest.MonkeyPatch,
    restore_session: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionctx")
    # Unique per run: the warning is logged once per variable and value for the
    # whole process.
    invalid = f"not valid {uuid.uuid4()}"
    no_env.setenv(name, invalid)

    first = new_session()
    second = new_session()

    assert is_generated(first)
    assert is_generated(second)
    assert first != second
    warnings = [r for r in caplog.records if r.name == "sessionctx"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert name in warnings[0].getMessage()
    assert invalid in warnings[0].getMessage()


def test_the_same_invalid_value_is_warned_about_once_in_each_variable(
    no_env: pytest.MonkeyPatch, restore_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionctx")
    invalid = f"not valid {uuid.uuid4()}"
    no_env.setenv(SESSION_ID_ENV_VAR, invalid)
    new_session()
    no_env.delenv(SESSION_ID_ENV_VAR)
    no_env.setenv(FALLBACK_ENV_VAR, invalid)
    new_session()
    new_session()
    messages = [r.getMessage() for r in caplog.records if r.name == "sessionctx"]
    assert len(messages) == 2
    assert SESSION_ID_ENV_VAR in messages[0]
    assert FALLBACK_ENV_VAR in messages[1]


def test_an_invalid_primary_env_var_falls_back_to_the_tracectrl_name(
    no_env: pytest.MonkeyPatch, restore_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionctx")
    no_env.setenv(SESSION_ID_ENV_VAR, f"bad\n{uuid.uuid4()}")
    no_env.setenv(FALLBACK_ENV_VAR, "fallback")
    assert new_session() == "fallback"
    assert len(caplog.records) == 1
    assert SESSION_ID_ENV_VAR in caplog.records[0].getMessage()


def test_an_env_var_value_is_not_stripped(
    no_env: pytest.MonkeyPatch, restore_session: None
) -> None:
    no_env.setenv(SESSION_ID_ENV_VAR, f" padded-{uuid.uuid4()} ")
    assert is_generated(new_session())


# --------------------------------------------------------------------------- #
# set_session_id / reset_session / current_session
# --------------------------------------------------------------------------- #


def test_set_session_id_and_reset_session() -> None:
    outer = set_session_id("outer", attributes={"k": "v"})
    assert current_session_id() == "outer"
    assert current_session() == SessionContext("outer", {"k": "v"})

    inner = set_session_id("inner")
    assert current_session() == SessionContext("inner")
    reset_session(inner)
    assert current_session_id() == "outer"

    reset_session(outer)
    assert current_session() is None


def test_set_session_id_none_clears_and_reset_restores() -> None:
    with session("active"):
        token = set_session_id(None)
        assert current_session() is None
        assert current_session_id() is None
        reset_session(token)
        assert current_session_id() == "active"


def test_set_session_id_none_with_attributes_is_an_error() -> None:
    with pytest.raises(ValueError, match="attributes"):
        set_session_id(None, attributes={"k": "v"})
    assert current_session() is None


@pytest.mark.parametrize(
    ("sid", "error"),
    [
        pytest.param("", ValueError, id="empty"),
        pytest.param("a b", ValueError, id="space"),
        pytest.param("a\r\nb", ValueError, id="crlf"),
        pytest.param("x" * 201, ValueError, id="201-chars"),
        pytest.param(123, TypeError, id="int"),
        pytest.param(b"abc", TypeError, id="bytes"),
    ],
)
def test_set_session_id_rejects_invalid_ids_and_changes_nothing(
    sid: object, error: type[Exception]
) -> None:
    with session("before"):
        with pytest.raises(error):
            set_session_id(cast(str, sid))
        assert current_session_id() == "before"


def test_set_session_id_ignores_the_env_var(no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv(SESSION_ID_ENV_VAR, "from-env")
    token = set_session_id("explicit")
    assert current_session_id() == "explicit"
    reset_session(token)


# --------------------------------------------------------------------------- #
# session(): with, async with, decorators
# --------------------------------------------------------------------------- #


def test_session_yields_the_active_context() -> None:
    with session("abc", {"k": 1}) as ctx:
        assert isinstance(ctx, SessionContext)
        assert current_session() is ctx
        assert ctx == SessionContext("abc", {"k": 1})
    assert current_session() is None


def test_a_context_set_by_id_alone_is_made_once_for_every_thread() -> None:
    # What the middlewares set: the id, with the SessionContext made on first use.
    token = _current.set(["abc", None])
    barrier = threading.Barrier(8)

    def ask(_: int) -> SessionContext | None:
        barrier.wait(timeout=10)
        return current_session()

    try:
        assert current_session_id() == "abc"
        with ContextThreadPoolExecutor(max_workers=8) as pool:
            seen = list(pool.map(ask, range(8)))
        seen.append(current_session())
    finally:
        _current.reset(token)
    assert seen[0] == SessionContext("abc")
    assert all(ctx is seen[0] for ctx in seen)
    assert current_session() is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: session("abc").__enter__(), id="session"),
        pytest.param(lambda: (set_session_id("abc"), current_session())[1], id="set_session_id"),
        pytest.param(lambda: (_current.set(["abc", None]), current_session())[1], id="made-on-use"),
    ],
)
def test_contexts_without_attributes_are_whole_session_contexts(
    make: Callable[[], SessionContext | None],
) -> None:
    ctx = copy_context().run(make)

    assert type(ctx) is SessionContext
    assert ctx == SessionContext("abc")
    assert (ctx.id, ctx.attributes, ctx.attributes_json) == ("abc", None, None)
    assert hash(ctx) == hash(SessionContext("abc"))
    assert copy.deepcopy(ctx) == ctx
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ctx.nope  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.id = "other"  # type: ignore[misc]


def test_session_takes_the_id_positionally_or_by_keyword() -> None:
    with session("positional") as a:
        assert current_session_id() == "positional"
    with session(id="keyword", attributes={"k": 1}) as b:
        assert current_session_id() == "keyword"
    assert a.id == "positional"
    assert b.attributes == {"k": 1}


def test_session_without_id_generates_a_fresh_id_per_entry_and_ignores_the_env_var(
    no_env: pytest.MonkeyPatch,
) -> None:
    no_env.setenv(SESSION_ID_ENV_VAR, "fixed-session-for-testing")
    no_env.setenv(FALLBACK_ENV_VAR, "fixed-session-for-testing")
    scope = session()
    seen = []
    for _ in range(3):
        with scope as ctx:
            seen.append(ctx.id)
    with session(id=None) as ctx:
        seen.append(ctx.id)
    assert all(is_generated(sid) for sid in seen)
    assert len(set(seen)) == len(seen)
    assert "fixed-session-for-testing" not in seen


def test_sessions_nest_and_restore_the_outer_one() -> None:
    with session("1") as one:
        with session("2") as two:
            assert current_session() is two
            with session() as generated:
                assert current_session() is generated
            assert current_session() is two
        assert current_session() is one
    assert current_session() is None


def fail_inside(sid: str) -> None:
    with session(sid):
        assert current_session_id() == sid
        raise RuntimeError("boom")


def test_the_outer_session_is_restored_on_exception() -> None:
    with session("outer"):
        with pytest.raises(RuntimeError, match="boom"):
            fail_inside("inner")
        assert current_session_id() == "outer"
    with pytest.raises(RuntimeError, match="boom"):
        fail_inside("alone")
    assert current_session_id() is None


def test_session_checks_id_and_attributes_when_called() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        session("bad id")
    with pytest.raises(TypeError, match="must be a str"):
        session(cast(str, 123))
    with pytest.raises(ValueError, match="finite"):
        session("ok", {"x": math.nan})


def test_session_copies_attributes_when_called() -> None:
    attributes: dict[str, Any] = {"roles": ["admin"]}
    scope = session("abc", attributes)
    attributes["roles"].append("root")
    attributes["new"] = 1
    with scope as ctx:
        assert ctx.attributes_json == '{"roles":["admin"]}'


def test_a_session_replaced_inside_the_block_is_still_undone(
    no_env: pytest.MonkeyPatch,
) -> None:
    with session("outer"):
        with session("inner"):
            new_session()
            set_session_id("replaced")
        assert current_session_id() == "outer"
    assert current_session_id() is None


def test_one_scope_object_entered_in_several_threads_at_once() -> None:
    """Threads enter one after the other and leave in the same order, so
    exits are not the reverse of entries."""
    count = 4
    scope = session(attributes={"shared": True})
    may_enter = [threading.Event() for _ in range(count + 1)]
    may_leave = [threading.Event() for _ in range(count + 1)]
    errors: list[BaseException] = []
    seen: list[str] = []

    def worker(index: int) -> None:
        try:
            assert may_enter[index].wait(THREAD_TIMEOUT)
            with scope as ctx:
                may_enter[index + 1].set()
                assert may_leave[index].wait(THREAD_TIMEOUT)
                assert current_session() is ctx
                seen.append(ctx.id)
            assert current_session() is None
        except BaseException as exc:
            errors.append(exc)
        finally:
            may_enter[index + 1].set()
            may_leave[index + 1].set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    may_enter[0].set()
    assert may_enter[count].wait(THREAD_TIMEOUT)
    may_leave[0].set()
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
    assert errors == []
    assert len(set(seen)) == count


@pytest.mark.anyio
async def test_async_with() -> None:
    async with session("outer") as outer:
        assert current_session() is outer
        async with session() as inner:
            assert current_session() is inner
            await asyncio.sleep(0)
            assert current_session() is inner
        assert current_session() is outer
        with pytest.raises(KeyError):
            async with session("failing"):
                raise KeyError("x")
        assert current_session() is outer
    assert current_session() is None


@pytest.mark.anyio
async def test_one_scope_object_entered_by_concurrent_tasks() -> None:
    scope = session("shared")

    async def enter(delay: int) -> bool:
        async with scope as ctx:
            for _ in range(delay):
                await asyncio.sleep(0)
            return current_session() is ctx

    assert await asyncio.gather(*(enter(d) for d in (3, 1, 2, 0))) == [True] * 4
    assert current_session() is None


@pytest.mark.anyio
async def test_one_scope_object_replaced_inside_by_concurrent_tasks() -> None:
    """Each task's exit undoes its own entry, also when the block replaced the
    session and the tasks leave in another order than they entered."""
    scope = session("shared")

    async def enter(index: int, delay: int) -> bool:
        async with scope:
            set_session_id(f"replaced-{index}")
            # Every task enters before the first one leaves.
            await asyncio.sleep(0)
            for _ in range(delay):
                await asyncio.sleep(0)
        return current_session() is None

    results = await asyncio.gather(*(enter(i, d) for i, d in enumerate((0, 2, 1, 3))))
    assert results == [True] * 4
    assert current_session() is None


def test_exiting_a_scope_that_was_not_entered_here_raises() -> None:
    scope = session("abc")
    scope.__enter__()
    try:
        with pytest.raises(RuntimeError, match="not entered"):
            Context().run(scope.__exit__, None, None, None)
        # A copy holds the scope's entry too, but not the context it was entered in.
        with pytest.raises(RuntimeError, match="not entered"):
            copy_context().run(scope.__exit__, None, None, None)
        assert current_session_id() == "abc"
    finally:
        scope.__exit__(None, None, None)
    assert current_session() is None


@pytest.mark.anyio
async def test_exiting_a_scope_in_another_task_raises() -> None:
    scope = session("abc")
    await scope.__aenter__()
    try:
        with pytest.raises(RuntimeError, match="not entered"):
            await asyncio.create_task(scope.__aexit__(None, None, None))
        assert current_session_id() == "abc"
    finally:
        await scope.__aexit__(None, None, None)
    assert current_session() is None


def test_sync_decorator_gives_each_call_its_own_session() -> None:
    @session(attributes={"job": "report"})
    def job(x: int, *, y: int) -> tuple[int, SessionContext | None]:
        """Job docstring."""
        return x + y, current_session()

    assert job.__name__ == "job"
    assert job.__doc__ == "Job docstring."
    results = [job(1, y=2) for _ in range(3)]
    contexts = [ctx for _, ctx in results]
    assert [value for value, _ in results] == [3, 3, 3]
    assert all(ctx is not None and is_generated(ctx.id) for ctx in contexts)
    assert all(ctx is not None and ctx.attributes == {"job": "report"} for ctx in contexts)
    assert len({ctx.id for ctx in contexts if ctx is not None}) == 3
    assert current_session() is None


def test_sync_decorator_with_a_fixed_id_restores_the_outer_session() -> None:
    @session("fixed")
    def job() -> str | None:
        return current_session_id()

    @session()
    def failing() -> None:
        raise ValueError("job failed")

    with session("outer"):
        assert job() == "fixed"
        assert current_session_id() == "outer"
        with pytest.raises(ValueError, match="job failed"):
            failing()
        assert current_session_id() == "outer"


@pytest.mark.anyio
async def test_async_decorator_gives_each_concurrent_call_its_own_session() -> None:
    @session()
    async def handler(name: str) -> tuple[str, list[str | None]]:
        seen = [current_session_id()]
        for _ in range(3):
            await asyncio.sleep(0)
            seen.append(current_session_id())
        return name, seen

    assert inspect.iscoroutinefunction(handler)
    assert handler.__name__ == "handler"
    async with session("outer"):
        results = await asyncio.gather(*(handler(f"call-{i}") for i in range(5)))
        assert current_session_id() == "outer"
    assert [name for name, _ in results] == [f"call-{i}" for i in range(5)]
    ids = set()
    for _, seen in results:
        assert len(set(seen)) == 1, seen
        assert is_generated(seen[0])
        ids.add(seen[0])
    assert len(ids) == 5
    assert "outer" not in ids


@pytest.mark.anyio
async def test_async_decorator_restores_the_outer_session_on_exception() -> None:
    @session("inner")
    async def failing() -> None:
        await asyncio.sleep(0)
        assert current_session_id() == "inner"
        raise LookupError("missing")

    with session("outer"):
        with pytest.raises(LookupError, match="missing"):
            await failing()
        assert current_session_id() == "outer"


def test_generator_decorator_runs_each_step_in_the_calls_session() -> None:
    @session("gen")
    def numbers(n: int) -> Generator[Any, Any, str]:
        """Numbers docstring."""
        received = yield current_session_id()
        try:
            yield (current_session_id(), received)
        except KeyError as exc:
            yield ("caught", current_session_id(), exc.args[0])
        yield from range(n)
        return f"done in {current_session_id()}"

    assert inspect.isgeneratorfunction(numbers)
    assert numbers.__name__ == "numbers"
    assert numbers.__doc__ == "Numbers docstring."
    with session("outer"):
        steps = numbers(2)
        assert current_session_id() == "outer"
        assert next(steps) == "gen"
        assert current_session_id() == "outer"  # not between steps
        assert steps.send(5) == ("gen", 5)
        assert steps.throw(KeyError("k")) == ("caught", "gen", "k")
        assert current_session_id() == "outer"
        assert [next(steps), next(steps)] == [0, 1]
        with pytest.raises(StopIteration) as stop:
            next(steps)
        assert stop.value.value == "done in gen"
        assert current_session_id() == "outer"


def test_generator_decorator_closes_in_the_session_and_gives_each_call_one() -> None:
    closed_in: list[str | None] = []

    @session()
    def endless() -> Generator[str | None, None, None]:
        try:
            while True:
                yield current_session_id()
        finally:
            closed_in.append(current_session_id())

    first, second = endless(), endless()
    a = [next(first), next(second), next(first), next(second)]
    first.close()
    with pytest.raises(ValueError, match="thrown"):
        second.throw(ValueError("thrown"))

    assert a[0] == a[2] != a[1] == a[3]
    assert all(is_generated(sid) for sid in a)
    assert closed_in == [a[0], a[1]]
    assert current_session_id() is None


@pytest.mark.parametrize("wrapper", ["session", "wrap_context"])
@pytest.mark.parametrize(
    "kind", ["generator-function", "returns-a-generator", "returns-a-types.coroutine-generator"]
)
def test_a_wrapped_generator_closes_as_the_generator_itself_does(wrapper: str, kind: str) -> None:
    # From Python 3.13, close() returns what a generator returns on its
    # GeneratorExit: the wrapped one's close() returns the same.
    def stops_on_close() -> Generator[str | None, None, str | None]:
        try:
            yield current_session_id()
        except GeneratorExit:
            return f"closed in {current_session_id()}"
        return None

    target: Callable[[], Generator[str | None, None, str | None]] = stops_on_close
    if kind == "returns-a-generator":
        target = lambda: stops_on_close()  # noqa: E731 (a plain function)
    elif kind == "returns-a-types.coroutine-generator":
        iterable_coroutine: Any = types.coroutine(stops_on_close)
        target = lambda: iterable_coroutine()  # noqa: E731
    with session("caller"):
        wrap = session() if wrapper == "session" else wrap_context
        wrapped = wrap(target)
        plain = target()
        gen = wrapped()
    sid = next(gen)
    next(plain)
    # (typeshed has close() return None, as before 3.13)
    close_plain: Callable[[], object] = plain.close
    close: Callable[[], object] = gen.close
    expected = close_plain()
    assert expected == (f"closed in {None}" if sys.version_info >= (3, 13) else None)
    assert close() == (None if expected is None else f"closed in {sid}")
    assert close() is None  # closed already
    assert current_session() is None


@pytest.mark.parametrize("wrapper", ["session", "wrap_context"])
@pytest.mark.parametrize("kind", ["generator", "coroutine"])
def test_generator_exit_thrown_into_a_wrapped_generator_or_coroutine_ends_it_as_itself(
    wrapper: str, kind: str
) -> None:
    # throw(GeneratorExit) into one that returns on it raises StopIteration
    # with the value. The wrapped one closes what it steps, as yield from and
    # await do, and close() gives that value only from Python 3.13: before,
    # GeneratorExit goes on.
    def returns_on_generator_exit() -> Generator[None, None, str | None]:
        try:
            yield
        except GeneratorExit:
            return f"ended in {current_session_id()}"
        return None

    async def returns_on_generator_exit_too() -> str | None:
        try:
            await asyncio.sleep(0)
        except GeneratorExit:
            return f"ended in {current_session_id()}"
        return None

    target: Callable[[], Any] = (
        returns_on_generator_exit if kind == "generator" else returns_on_generator_exit_too
    )
    with session("thrown"):
        wrapped = (session("thrown") if wrapper == "session" else wrap_context)(target)
        plain, stepped = target(), wrapped()
    plain.send(None)
    with pytest.raises(StopIteration) as stopped:
        plain.throw(GeneratorExit)
    assert stopped.value.value == f"ended in {None}"
    stepped.send(None)
    if sys.version_info < (3, 13):
        with pytest.raises(GeneratorExit):
            stepped.throw(GeneratorExit)
    else:
        with pytest.raises(StopIteration) as stopped:
            stepped.throw(GeneratorExit)
        assert stopped.value.value == "ended in thrown"
    assert current_session() is None


@pytest.mark.parametrize("wrapper", ["session", "wrap_context"])
def test_closing_a_wrapped_coroutine_whose_own_coroutine_is_closed_already_is_silent(
    wrapper: str,
) -> None:
    # The collector may close the two in either order (an abandoned task's
    # cycle): a coroutine that is closed already closes again silently.
    async def waits() -> None:
        await asyncio.sleep(0)

    own = waits()
    wrap = session("closed") if wrapper == "session" else wrap_context
    coro = cast("types.CoroutineType[Any, Any, None]", wrap(lambda: own)())
    coro.send(None)
    own.close()
    coro.close()
    coro.close()
    assert current_session() is None


@pytest.mark.parametrize("wrapper", ["session", "wrap_context"])
def test_a_wrapped_generator_or_coroutine_that_ignores_generator_exit_fails_to_close_as_itself(
    wrapper: str,
) -> None:
    def ignores() -> Generator[str | None, None, None]:
        try:
            yield current_session_id()
        except GeneratorExit:
            yield "again"

    async def ignores_too() -> None:
        try:
            await asyncio.sleep(0)
        except GeneratorExit:
            await asyncio.sleep(0)

    with session("ignored"):
        wrap = session("ignored") if wrapper == "session" else wrap_context
        gens = [ignores(), wrap(ignores)()]
        coros: list[Any] = [ignores_too(), wrap(ignores_too)()]
    for gen in gens:
        next(gen)
        with pytest.raises(RuntimeError, match=r"^generator ignored GeneratorExit$"):
            gen.close()
    for coro in coros:
        coro.send(None)
        with pytest.raises(RuntimeError, match=r"^coroutine ignored GeneratorExit$"):
            coro.close()
    # Left suspended by close(): the plain ones are ended here, not by the collector.
    with pytest.raises(StopIteration):
        next(gens[0])
    with pytest.raises(StopIteration):
        coros[0].send(None)
    assert current_session() is None


@pytest.mark.parametrize("wrapper", ["session", "wrap_context"])
@pytest.mark.parametrize("kind", ["coroutine-function", "returns-a-coroutine"])
@pytest.mark.parametrize("ending", ["returns", "raises-again"])
def test_a_wrapped_coroutine_closes_as_the_coroutine_itself_does(
    wrapper: str, kind: str, ending: str
) -> None:
    # From Python 3.13, close() returns what a coroutine returns on its
    # GeneratorExit, and None when it lets the GeneratorExit go on: the
    # wrapped one's close() returns the same.
    started_in: list[str | None] = []

    async def stops_on_close() -> str | None:
        started_in.append(current_session_id())
        try:
            await asyncio.sleep(0)
        except GeneratorExit:
            if ending == "raises-again":
                raise
            return f"closed in {current_session_id()}"
        return None

    target: Callable[[], Awaitable[str | None]] = stops_on_close
    if kind == "returns-a-coroutine":
        target = lambda: stops_on_close()  # noqa: E731 (a plain function)
    with session("caller"):
        wrap = session() if wrapper == "session" else wrap_context
        wrapped = wrap(target)
        plain = cast("types.CoroutineType[Any, Any, str | None]", stops_on_close())
        coro = cast("types.CoroutineType[Any, Any, str | None]", wrapped())
    plain.send(None)
    coro.send(None)
    sid = started_in[1]
    assert sid == "caller" if wrapper == "wrap_context" else is_generated(sid)
    # (typeshed has close() return None, as before 3.13)
    close_plain: Callable[[], object] = plain.close
    close: Callable[[], object] = coro.close
    expected = close_plain()
    returns = sys.version_info >= (3, 13) and ending == "returns"
    assert expected == (f"closed in {None}" if returns else None)
    assert close() == (f"closed in {sid}" if returns else None)
    assert close() is None  # closed already
    assert current_session() is None


@pytest.mark.anyio
async def test_async_generator_decorator_runs_each_step_in_the_calls_session() -> None:
    closed_in: list[str | None] = []

    @session("agen")
    async def events() -> Any:
        """Events docstring."""
        try:
            received = yield current_session_id()
            await asyncio.sleep(0)
            try:
                yield (current_session_id(), received)
            except KeyError as exc:
                yield ("caught", current_session_id(), exc.args[0])
            yield "last"
        finally:
            await asyncio.sleep(0)
            closed_in.append(current_session_id())

    assert inspect.isasyncgenfunction(events)
    assert events.__name__ == "events"
    assert events.__doc__ == "Events docstring."
    async with session("outer"):
        steps = events()
        assert await steps.asend(None) == "agen"
        assert current_session_id() == "outer"
        assert await steps.asend(7) == ("agen", 7)
        assert await steps.athrow(KeyError("k")) == ("caught", "agen", "k")
        await steps.aclose()
        assert closed_in == ["agen"]
        assert [item async for item in events()] == ["agen", ("agen", None), "last"]
        assert closed_in == ["agen", "agen"]
        assert current_session_id() == "outer"


def test_a_decorated_generator_keeps_what_its_steps_set() -> None:
    # As in a generator that is not decorated: a block left open, or a session
    # set, at a yield is there at the next step; never for the consumer.
    @session("gen")
    def steps() -> Iterator[str | None]:
        with session("inner"):
            yield current_session_id()
            yield current_session_id()
        yield current_session_id()
        set_session_id("switched")
        yield current_session_id()
        yield current_session_id()

    with session("outer"):
        seen = []
        for sid in steps():
            seen.append(sid)
            assert current_session_id() == "outer"
    assert seen == ["inner", "inner", "gen", "switched", "switched"]
    assert current_session() is None


@pytest.mark.anyio
async def test_a_decorated_async_generator_keeps_what_its_steps_set() -> None:
    @session("agen")
    async def steps() -> AsyncIterator[str | None]:
        async with session("inner"):
            yield current_session_id()
            await asyncio.sleep(0)
            yield current_session_id()
        yield current_session_id()
        set_session_id("switched")
        yield current_session_id()
        yield current_session_id()

    async with session("outer"):
        seen = []
        async for sid in steps():
            seen.append(sid)
            assert current_session_id() == "outer"
    assert seen == ["inner", "inner", "agen", "switched", "switched"]
    assert current_session() is None


def test_a_decorated_generator_keeps_an_open_block_when_steps_run_in_other_contexts() -> None:
    # Starlette steps a sync body in a thread pool, each next() in a fresh copy
    # of the request's context: the block entered in one step exits in another.
    @session("gen")
    def steps() -> Iterator[str | None]:
        yield current_session_id()
        with session("inner"):
            yield current_session_id()
            yield current_session_id()
        yield current_session_id()

    with session("outer"):
        gen = steps()
        seen = [copy_context().run(next, gen) for _ in range(4)]
        with pytest.raises(StopIteration):
            copy_context().run(next, gen)
        assert current_session_id() == "outer"
    assert seen == ["gen", "inner", "inner", "gen"]
    assert current_session() is None


def test_a_decorated_generator_closed_in_another_context_exits_its_open_block() -> None:
    cleanup: list[str | None] = []

    @session("gen")
    def steps() -> Generator[int, None, None]:
        with session("inner"):
            try:
                yield 1
                yield 2
            finally:
                cleanup.append(current_session_id())

    gen = steps()
    assert copy_context().run(next, gen) == 1
    copy_context().run(gen.close)
    assert cleanup == ["inner"]
    assert current_session() is None


@pytest.mark.anyio
async def test_a_decorated_async_generator_keeps_an_open_block_across_tasks() -> None:
    # asyncio.wait_for (Python 3.10 and 3.11) runs each step in a task of its
    # own, so in a copy of the consumer's context.
    @session("agen")
    async def steps() -> AsyncIterator[str | None]:
        async with session("inner"):
            yield current_session_id()
            yield current_session_id()
        yield current_session_id()

    async def step(agen: AsyncIterator[str | None]) -> str | None:
        return await agen.__anext__()

    agen = steps()
    seen = [await asyncio.create_task(step(agen)) for _ in range(3)]
    with pytest.raises(StopAsyncIteration):
        await asyncio.create_task(step(agen))
    assert seen == ["inner", "inner", "agen"]
    assert current_session() is None


@pytest.mark.anyio
async def test_a_decorated_async_generator_left_by_break_closes_its_block_cleanly() -> None:
    # An async generator dropped unfinished is closed by asyncio in a task of
    # its own (the loop's async generator hooks): its block exits there.
    errors: list[dict[str, Any]] = []
    cleanup: list[str | None] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    @session("agen")
    async def rows() -> AsyncIterator[int]:
        async with session("inner"):
            try:
                for i in range(10):
                    yield i
            finally:
                cleanup.append(current_session_id())

    async def consume() -> None:
        async for i in rows():
            if i == 1:
                break

    try:
        await consume()
        for _ in range(20):
            if cleanup:
                break
            gc.collect()
            await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(handler)
    assert cleanup == ["inner"]
    assert errors == []
    assert current_session() is None


@pytest.mark.anyio
async def test_a_decorated_async_generator_in_a_reference_cycle_cleans_up_in_its_session() -> None:
    # Collected together, the wrapper and the generator it drives: the loop
    # closes the wrapper, which closes the generator in its session.
    cleanup: list[tuple[str, str | None]] = []

    class Feed:
        stream: AsyncIterator[int]

        @session("feed")
        async def rows(self) -> AsyncIterator[int]:
            try:
                yield 1
                yield 2
            finally:
                cleanup.append(("finally", current_session_id()))
                await asyncio.sleep(0)
                cleanup.append(("after await", current_session_id()))

    async def start() -> None:
        feed = Feed()
        feed.stream = feed.rows()  # the feed keeps its own stream: a cycle
        assert await feed.stream.__anext__() == 1

    await start()
    for _ in range(20):
        gc.collect()
        await asyncio.sleep(0)
        if len(cleanup) == 2:
            break
    assert cleanup == [("finally", "feed"), ("after await", "feed")]
    assert current_session() is None


def test_blocks_of_generators_stepped_in_turn_exit_in_any_order() -> None:
    # Two generators that are not decorated share the consumer's context: the
    # first block to exit is not the innermost one.
    def rows(job: str, n: int) -> Generator[tuple[str, str | None], None, None]:
        with session(job):
            for i in range(n):
                yield f"{job}:{i}", current_session_id()

    first, second = rows("job-a", 2), rows("job-b", 3)
    assert list(zip(first, second, strict=False)) == [
        (("job-a:0", "job-a"), ("job-b:0", "job-b")),
        (("job-a:1", "job-b"), ("job-b:1", "job-b")),
    ]
    # job-a's block exited (its generator ran out); job-b's is still open.
    assert current_session_id() == "job-b"
    second.close()
    assert current_session() is None


def test_one_scope_object_open_in_generators_stepped_in_turn() -> None:
    # Each block exits the entry its own generator made, not the innermost one.
    shared = session()

    def rows() -> Generator[str, None, None]:
        with shared as ctx:
            assert current_session_id() == ctx.id
            yield ctx.id
            # Not decorated: the steps see what the consumer's context holds.
            yield ctx.id

    first, second = rows(), rows()
    first_id, second_id = next(first), next(second)
    assert first_id != second_id
    assert next(first) == first_id
    assert next(first, None) is None  # its block exits; the second's stays open
    assert current_session_id() == second_id
    assert next(second) == second_id
    assert next(second, None) is None
    assert current_session() is None


@pytest.mark.anyio
async def test_one_scope_object_open_in_async_generators_stepped_in_turn() -> None:
    shared = session()

    async def rows() -> AsyncIterator[str]:
        async with shared as ctx:
            yield ctx.id
            yield ctx.id

    first, second = rows(), rows()
    first_id, second_id = await first.__anext__(), await second.__anext__()
    assert await first.__anext__() == first_id
    with pytest.raises(StopAsyncIteration):
        await first.__anext__()
    assert current_session_id() == second_id
    assert await second.__anext__() == second_id
    with pytest.raises(StopAsyncIteration):
        await second.__anext__()
    assert current_session() is None


def test_a_function_and_a_generator_it_steps_each_exit_their_own_entry() -> None:
    shared = session()

    def rows() -> Generator[str | None, None, None]:
        with shared as mine:
            yield mine.id
            yield current_session_id()

    gen = rows()
    with shared as outer:
        first = next(gen)  # the generator's block opens inside this one
    # This block's own entry exited: the generator's block stays open.
    assert current_session_id() == first != outer.id
    assert next(gen) == first
    gen.close()
    assert current_session() is None


@pytest.mark.parametrize("use_stack", [False, True], ids=["with", "ExitStack"])
def test_a_generator_exits_its_own_entry_also_through_an_exit_stack(use_stack: bool) -> None:
    shared = session()

    def rows() -> Generator[str | None, None, None]:
        if use_stack:
            with contextlib.ExitStack() as stack:
                stack.enter_context(shared)
                yield current_session_id()
        else:
            with shared:
                yield current_session_id()
        yield current_session_id()

    gen = rows()
    generators = next(gen)  # the generator's block is open
    with shared as mine:  # the consumer's, entered last
        assert next(gen) == mine.id  # the generator's block exited
        assert current_session_id() == mine.id != generators
    assert current_session() is None
    gen.close()


@pytest.mark.anyio
@pytest.mark.parametrize("use_stack", [False, True], ids=["async-with", "AsyncExitStack"])
async def test_a_generator_exits_its_own_entry_also_through_an_async_exit_stack(
    use_stack: bool,
) -> None:
    shared = session("s")

    async def rows() -> AsyncIterator[str | None]:
        async with shared:
            set_session_id("generator")
            yield current_session_id()
        yield current_session_id()

    async with session("outer"):
        agen = rows()
        stack = contextlib.AsyncExitStack()
        if use_stack:
            await stack.enter_async_context(shared)
        else:
            await shared.__aenter__()
        set_session_id("consumer")
        assert await agen.__anext__() == "generator"  # entered after the consumer's
        if use_stack:
            await stack.aclose()
        else:
            await shared.__aexit__(None, None, None)
        # The consumer's block exited: the generator's, entered later, stays.
        assert current_session_id() == "generator"
        assert await agen.__anext__() == "outer"
    assert current_session() is None


def test_a_scope_exited_by_hand_from_another_function_exits_its_innermost_entry() -> None:
    shared = session()

    def open_shared() -> SessionContext:
        return shared.__enter__()

    with shared as outer:
        inner = open_shared()
        assert current_session() is inner
        shared.__exit__(None, None, None)
        assert current_session() is outer
    assert current_session() is None


def test_an_open_block_keeps_no_frame_alive() -> None:
    # Contexts copied in the block (snapshots, tasks) hold the open entries:
    # they must not hold the entering frame, and so its locals.
    class Payload:
        pass

    def handler() -> tuple[weakref.ref[Payload], Callable[[], str | None]]:
        payload = Payload()
        with session("s1"):
            snapshot = wrap_context(current_session_id)
        return weakref.ref(payload), snapshot

    def rows() -> Generator[weakref.ref[Payload], None, None]:
        payload = Payload()
        with session("s2"):
            yield weakref.ref(payload)

    ref, snapshot = handler()
    gc.collect()
    assert ref() is None
    assert snapshot() == "s1"
    gen = rows()
    ref = next(gen)
    kept = copy_context()  # holds the generator's open entry
    gen.close()
    del gen
    gc.collect()
    assert ref() is None
    assert kept.run(current_session_id) == "s2"


def test_an_outer_block_exited_first_leaves_the_inner_ones_theirs() -> None:
    outer, middle, inner = session("outer"), session("middle"), session("inner")
    with session("caller"):
        outer.__enter__()
        middle.__enter__()
        inner.__enter__()
        middle.__exit__(None, None, None)
        assert current_session_id() == "inner"
        inner.__exit__(None, None, None)
        # What middle would have restored.
        assert current_session_id() == "outer"
        outer.__exit__(None, None, None)
        assert current_session_id() == "caller"
    assert current_session() is None


def test_exiting_a_scope_twice_raises() -> None:
    scope = session("abc")
    scope.__enter__()
    scope.__exit__(None, None, None)
    with pytest.raises(RuntimeError, match="exited twice"):
        scope.__exit__(None, None, None)
    assert current_session() is None


@pytest.mark.anyio
async def test_decorator_above_staticmethod_and_classmethod() -> None:
    class Jobs:
        @session("static")
        @staticmethod
        def static_job() -> str | None:
            return current_session_id()

        @session("static-async")
        @staticmethod
        async def static_async_job() -> str | None:
            return current_session_id()

        @session("class")
        @classmethod
        def class_job(cls) -> tuple[str, str | None]:
            return cls.__name__, current_session_id()

    for owner in (Jobs, Jobs()):
        assert owner.static_job() == "static"
        assert await owner.static_async_job() == "static-async"
        assert owner.class_job() == ("Jobs", "class")
    assert isinstance(inspect.getattr_static(Jobs, "static_job"), staticmethod)
    assert isinstance(inspect.getattr_static(Jobs, "class_job"), classmethod)
    assert current_session() is None


@pytest.mark.anyio
async def test_decorator_on_a_method_that_is_an_async_generator() -> None:
    class Feed:
        @session("feed")
        async def items(self, n: int) -> Any:
            for i in range(n):
                await asyncio.sleep(0)
                yield i, current_session_id()

    assert [item async for item in Feed().items(2)] == [(0, "feed"), (1, "feed")]


@pytest.mark.anyio
async def test_decorator_on_plain_callables_whose_work_runs_later() -> None:
    async def fetch() -> str | None:
        await asyncio.sleep(0)
        return current_session_id()

    class Handler:
        async def __call__(self) -> str | None:
            return await fetch()

    def numbers() -> Iterator[str | None]:
        yield current_session_id()

    async def events() -> AsyncIterator[str | None]:
        yield current_session_id()

    def returns_coroutine() -> Awaitable[str | None]:
        return fetch()

    def returns_generator() -> Iterator[str | None]:
        return numbers()

    def returns_async_generator() -> AsyncIterator[str | None]:
        return events()

    returns_coroutine = session("coro")(returns_coroutine)
    handler = session("object")(Handler())
    returns_generator = session("gen")(returns_generator)
    returns_async_generator = session("agen")(returns_async_generator)

    assert await returns_coroutine() == "coro"
    assert await handler() == "object"
    assert list(returns_generator()) == ["gen"]
    assert [item async for item in returns_async_generator()] == ["agen"]
    assert current_session_id() is None


# --------------------------------------------------------------------------- #
# inject_session_headers
# --------------------------------------------------------------------------- #


def test_inject_writes_in_place_and_returns_the_same_object() -> None:
    headers = {"Accept": "text/plain"}
    with session("abc"):
        result = inject_session_headers(headers)
    assert result is headers
    assert headers == {"Accept": "text/plain", SESSION_HEADER_NAME: "abc"}
    assert extract_session_id(headers) == "abc"


def test_inject_fills_an_empty_dict_in_place() -> None:
    headers: dict[str, str] = {}
    with session("abc"):
        assert inject_session_headers(headers) is headers
    assert headers == {"X-Session-Id": "abc"}


def test_inject_without_headers_returns_a_new_dict() -> None:
    with session("abc"):
        first = inject_session_headers()
        second = inject_session_headers(None)
    assert first == second == {"X-Session-Id": "abc"}
    assert first is not second


def test_inject_writes_nothing_without_a_session() -> None:
    headers: dict[str, str] = {"Accept": "text/plain"}
    assert inject_session_headers(headers) is headers
    assert headers == {"Accept": "text/plain"}
    assert inject_session_headers() == {}


def test_inject_with_a_custom_header_name() -> None:
    with session("abc"):
        headers = inject_session_headers({}, header_name="X-TraceCtrl-Session")
    assert headers == {"X-TraceCtrl-Session": "abc"}


def test_inject_replaces_other_spellings_in_a_plain_dict() -> None:
    """A plain dict is case-sensitive: leaving ``x-session-id`` next to
    ``X-Session-Id`` would send two conflicting headers."""
    headers = {"x-session-id": "stale", "X-SESSION-ID": "stale", "Accept": "*/*"}
    with session("abc"):
        inject_session_headers(headers)
    assert headers == {"Accept": "*/*", "X-Session-Id": "abc"}
    assert extract_session_id(headers) == "abc"


def test_inject_compares_no_str_with_bytes() -> None:
    """Under ``python -bb`` comparing a str key with bytes raises BytesWarning."""
    script = (
        "from sessionctx import inject_session_headers, session\n"
        "with session('abc'):\n"
        "    print(inject_session_headers({'Accept': '*/*', b'x-session-id': b'old'}))\n"
    )
    done = run_python("-bb", "-c", script)
    assert done.stdout.strip() == "{'Accept': '*/*', 'X-Session-Id': 'abc'}"


def test_inject_replaces_bytes_spellings_in_a_plain_dict() -> None:
    """Raw names (as an ASGI scope holds them) are spellings too: both would
    be sent, and a receiver takes two session headers for none."""
    headers: Any = {b"x-session-id": b"stale", b"X-Session-ID": b"stale", b"accept": b"*/*"}
    with session("abc"):
        inject_session_headers(headers)
    assert headers == {b"accept": b"*/*", "X-Session-Id": "abc"}
    assert extract_session_id(headers) == "abc"
    sent = httpx.Request("GET", "http://127.0.0.1/", headers=headers).headers
    assert sent.get_list("x-session-id") == ["abc"]


@pytest.mark.parametrize(
    ("header_name", "error"),
    [
        (5, TypeError),
        (b"X-Session-Id", TypeError),
        ("", ValueError),
        ("X Session", ValueError),
        ("X-A\r\nSet-Cookie: x=1", ValueError),
    ],
)
@pytest.mark.parametrize("active", [True, False], ids=["in-a-session", "no-session"])
def test_inject_rejects_a_bad_header_name(header_name: Any, error: type, active: bool) -> None:
    scope = session("abc") if active else contextlib.nullcontext()
    with scope, pytest.raises(error, match=re.escape(repr(header_name))):
        inject_session_headers({}, header_name=header_name)


@pytest.mark.parametrize("headers", [[("x-session-id", "a")], "X-Session-Id: a", 5])
@pytest.mark.parametrize("active", [True, False], ids=["in-a-session", "no-session"])
def test_inject_rejects_headers_that_are_not_a_mapping(headers: Any, active: bool) -> None:
    scope = session("abc") if active else contextlib.nullcontext()
    expected = "headers must be a mutable mapping.*" + type(headers).__name__
    with scope, pytest.raises(TypeError, match=expected):
        inject_session_headers(headers)


def test_inject_into_httpx_headers() -> None:
    headers = httpx.Headers({"x-session-id": "stale"})
    with session("abc"):
        assert inject_session_headers(headers) is headers
    assert headers.get_list("X-Session-Id") == ["abc"]


# --------------------------------------------------------------------------- #
# wrap_context and ContextThreadPoolExecutor
# --------------------------------------------------------------------------- #


def test_a_plain_thread_sees_no_session() -> None:
    with session("submitter"):
        assert run_in_thread(current_session_id) is None


def test_wrap_context_carries_the_callers_session_into_a_thread() -> None:
    with session("submitter"):
        wrapped = wrap_context(current_session_id)
        assert run_in_thread(wrapped) == "submitter"
    # The snapshot was taken when wrapping, not when calling.
    assert wrapped() == "submitter"
    assert current_session() is None


def test_wrap_context_passes_arguments_and_keeps_the_name() -> None:
    def describe(prefix: str, *, suffix: str) -> str:
        return f"{prefix}{current_session_id()}{suffix}"

    with session("abc"):
        wrapped = wrap_context(describe)
    assert wrapped("<", suffix=">") == "<abc>"
    assert wrapped.__name__ == "describe"


def test_signatures_type_check_in_callers_code() -> None:
    # mypy --strict runs over the tests (make test), with warn_unused_ignores:
    # the annotations below are the check, the asserts the same at run time.
    def add(a: int, b: int) -> int:
        return a + b

    wrapped: Callable[[int, int], int] = wrap_context(add)
    # Refused, so the ignore is used: the wrapper keeps add's parameters.
    mistyped: Callable[[str], int] = wrap_context(add)  # type: ignore[arg-type]
    assert wrapped(1, 2) == 3
    assert mistyped.__wrapped__ is add  # type: ignore[attr-defined]
    # A token is stored under whatever type the caller's code names for it.
    token: Token[str | None] = set_session_id("abc")
    reset_session(token)
    assert current_session() is None


def test_wrap_context_calls_leak_into_nothing() -> None:
    def replace_session() -> str | None:
        before = current_session_id()
        set_session_id("set-inside")
        return before

    with session("caller"):
        wrapped = wrap_context(replace_session)
        assert wrapped() == "caller"
        assert wrapped() == "caller"
        assert run_in_thread(wrapped) == "caller"
        assert current_session_id() == "caller"


@pytest.mark.anyio
async def test_wrap_context_with_run_in_executor() -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as pool:
        async with session("request"):
            plain = await loop.run_in_executor(pool, current_session_id)
            wrapped = await loop.run_in_executor(pool, wrap_context(current_session_id))
    assert plain is None
    assert wrapped == "request"


@pytest.mark.anyio
async def test_wrap_context_runs_a_coroutine_function_in_the_snapshot() -> None:
    other: ContextVar[str] = ContextVar("other", default="unset")

    async def job(suffix: str) -> tuple[str | None, str]:
        await asyncio.sleep(0)
        set_session_id("set-inside")
        await asyncio.sleep(0)
        # What the coroutine set is still there after an await.
        return current_session_id(), other.get() + suffix

    with session("captured"):
        token = other.set("captured-too")
        wrapped = wrap_context(job)
        other.reset(token)
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "job"
    # Awaited later, outside the session, and in a task of its own.
    assert await wrapped("!") == ("set-inside", "captured-too!")
    assert await asyncio.create_task(wrapped("?")) == ("set-inside", "captured-too?")
    assert current_session() is None
    assert other.get() == "unset"


@pytest.mark.anyio
async def test_wrap_context_passes_exceptions_and_cancellation_through_a_coroutine() -> None:
    started = asyncio.Event()

    async def fail() -> None:
        await asyncio.sleep(0)
        raise LookupError(current_session_id())

    async def wait() -> None:
        started.set()
        await asyncio.sleep(THREAD_TIMEOUT)

    with session("captured"):
        failing, waiting = wrap_context(fail), wrap_context(wait)
    with pytest.raises(LookupError, match="captured"):
        await failing()
    task = asyncio.create_task(waiting())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert current_session() is None


def test_wrap_context_steps_a_generator_function_in_the_snapshot() -> None:
    def steps() -> Generator[str | None, str, str]:
        received = yield current_session_id()
        set_session_id("set-inside")
        yield f"{received}:{current_session_id()}"
        return "done"

    with session("captured"):
        wrapped = wrap_context(steps)
    assert inspect.isgeneratorfunction(wrapped)
    gen = wrapped()
    assert next(gen) == "captured"
    assert current_session() is None
    assert gen.send("sent") == "sent:set-inside"
    assert current_session() is None
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"


@pytest.mark.anyio
async def test_wrap_context_steps_an_async_generator_function_in_the_snapshot() -> None:
    cleanup: list[str | None] = []

    async def rows() -> AsyncIterator[str | None]:
        try:
            yield current_session_id()
            await asyncio.sleep(0)
            yield current_session_id()
        finally:
            cleanup.append(current_session_id())

    with session("captured"):
        wrapped = wrap_context(rows)
    assert inspect.isasyncgenfunction(wrapped)
    assert [sid async for sid in wrapped()] == ["captured", "captured"]
    agen = wrapped()
    assert await agen.__anext__() == "captured"
    await agen.aclose()
    assert cleanup == ["captured", "captured"]
    assert current_session() is None


@pytest.mark.anyio
async def test_wrap_context_steps_what_a_plain_callable_returns() -> None:
    class Job:
        async def __call__(self) -> str | None:
            await asyncio.sleep(0)
            return current_session_id()

    def rows() -> Iterator[str | None]:
        return iter_ids()

    def iter_ids() -> Iterator[str | None]:
        yield current_session_id()

    async def agen_ids() -> AsyncIterator[str | None]:
        yield current_session_id()

    with session("captured"):
        job, gen, agen = wrap_context(Job()), wrap_context(rows), wrap_context(lambda: agen_ids())
    # A coroutine, so that asyncio.create_task takes it.
    assert await asyncio.create_task(job()) == "captured"
    assert list(gen()) == ["captured"]
    assert [sid async for sid in agen()] == ["captured"]
    assert current_session() is None


@pytest.mark.anyio
async def test_generator_based_coroutines_stay_awaitable() -> None:
    @types.coroutine
    def legacy() -> Generator[None, None, str | None]:
        yield  # what asyncio.sleep(0) does
        return current_session_id()

    with session("captured"):
        wrapped, returned = wrap_context(legacy), wrap_context(lambda: legacy())
    decorated = session("decorated")(legacy)
    assert await wrapped() == "captured"
    assert await returned() == "captured"
    assert await decorated() == "decorated"
    assert current_session() is None


@pytest.mark.parametrize("how", ["session", "wrap_context"])
def test_an_async_generator_left_by_break_at_the_end_of_asyncio_run(how: str) -> None:
    # asyncio.run closes the async generators left open when it ends: only the
    # wrapper is the loop's to close (before Python 3.13 it could otherwise
    # close the wrapped one a second time, while the wrapper was closing it).
    errors: list[dict[str, Any]] = []
    cleanup: list[str | None] = []

    async def rows() -> AsyncIterator[int]:
        try:
            yield 1
        finally:
            # asyncio.run cancels this cleanup at its first await, as it does
            # a generator's that is not wrapped.
            cleanup.append(current_session_id())
            await asyncio.sleep(0)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: errors.append(context)
        )
        with session("captured"):
            wrapped = session("decorated")(rows) if how == "session" else wrap_context(rows)
        async for _ in wrapped():
            break

    asyncio.run(main())
    assert errors == []
    assert cleanup == ["decorated" if how == "session" else "captured"]


def test_executor_submit_and_map_see_the_submitters_session() -> None:
    def describe(prefix: str, *, suffix: str = "") -> str:
        return f"{prefix}{current_session_id()}{suffix}"

    with ContextThreadPoolExecutor(max_workers=2) as pool:
        assert pool.submit(current_session_id).result(THREAD_TIMEOUT) is None
        with session("submitter"):
            submitted = pool.submit(describe, "<", suffix=">")
            mapped = pool.map(describe, ["a:", "b:", "c:"], timeout=THREAD_TIMEOUT)
            assert submitted.result(THREAD_TIMEOUT) == "<submitter>"
            assert list(mapped) == ["a:submitter", "b:submitter", "c:submitter"]
        assert pool.submit(current_session_id).result(THREAD_TIMEOUT) is None


def test_executor_uses_the_context_at_submit_time() -> None:
    release = threading.Event()
    with ContextThreadPoolExecutor(max_workers=1) as pool:
        blocker = pool.submit(release.wait, THREAD_TIMEOUT)
        with session("at-submit"):
            later = pool.submit(current_session_id)
        with session("at-run"):
            release.set()
            assert blocker.result(THREAD_TIMEOUT) is True
            assert later.result(THREAD_TIMEOUT) == "at-submit"


def test_nothing_set_in_an_executor_call_leaks() -> None:
    with ContextThreadPoolExecutor(max_workers=1) as pool:
        with session("submitter"):
            pool.submit(set_session_id, "set-in-worker").result(THREAD_TIMEOUT)
            pool.submit(new_session).result(THREAD_TIMEOUT)
            assert current_session_id() == "submitter"
            assert pool.submit(current_session_id).result(THREAD_TIMEOUT) == "submitter"
        # The same worker thread, with nothing left behind by earlier calls.
        assert pool.submit(current_session_id).result(THREAD_TIMEOUT) is None


def test_a_plain_thread_pool_sees_no_session() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, session("submitter"):
        assert pool.submit(current_session_id).result(THREAD_TIMEOUT) is None


# --------------------------------------------------------------------------- #
# Isolation
# --------------------------------------------------------------------------- #


@pytest.mark.anyio
async def test_concurrent_tasks_see_only_their_own_session() -> None:
    async def request(index: int) -> list[str | None]:
        seen = []
        async with session(f"task-{index}"):
            for step in range(4):
                seen.append(current_session_id())
                await asyncio.sleep(0 if (index + step) % 2 else 0.001)
            seen.append(current_session_id())
        seen.append(current_session_id())
        return seen

    results = await asyncio.gather(*(request(i) for i in range(20)))
    for index, seen in enumerate(results):
        assert seen == [f"task-{index}"] * 5 + [None]


@pytest.mark.anyio
async def test_a_child_task_inherits_the_session_but_changes_do_not_flow_back() -> None:
    async def child() -> tuple[str | None, str | None]:
        inherited = current_session_id()
        set_session_id("set-in-child")
        await asyncio.sleep(0)
        return inherited, current_session_id()

    async with session("parent"):
        task = asyncio.create_task(child())
        assert await task == ("parent", "set-in-child")
        assert current_session_id() == "parent"


def test_threads_see_only_their_own_session() -> None:
    count = 8
    barrier = threading.Barrier(count, timeout=THREAD_TIMEOUT)
    seen: dict[int, list[str | None]] = {}

    def worker(index: int) -> None:
        record = [current_session_id()]
        with session(f"thread-{index}"):
            barrier.wait()
            record.append(current_session_id())
            barrier.wait()
            record.append(current_session_id())
        record.append(current_session_id())
        seen[index] = record

    with session("main"):
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(THREAD_TIMEOUT)
        assert current_session_id() == "main"
    assert seen == {i: [None, f"thread-{i}", f"thread-{i}", None] for i in range(count)}


# --------------------------------------------------------------------------- #
# session() blocks of generators stepped in turn, against a model
# --------------------------------------------------------------------------- #


def _nested_blocks(
    blocks: list[tuple[Any, bool]], opened: list[str], closed: list[str]
) -> Generator[None, None, None]:
    """Open ``blocks`` (scope, through an ``ExitStack`` or not) nested, one
    generator frame per block, yielding after each entry and after each exit."""
    if not blocks:
        return
    (scope, use_stack), inner = blocks[0], blocks[1:]
    if use_stack:
        with contextlib.ExitStack() as stack:
            yield from _inside_block(stack.enter_context(scope), inner, opened, closed)
    else:
        with scope as ctx:
            yield from _inside_block(ctx, inner, opened, closed)
    yield


def _inside_block(
    ctx: SessionContext, inner: list[tuple[Any, bool]], opened: list[str], closed: list[str]
) -> Generator[None, None, None]:
    opened.append(ctx.id)
    yield
    yield from _nested_blocks(inner, opened, closed)
    closed.append(ctx.id)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(data=st.data())
def test_blocks_of_generators_stepped_in_turn_follow_the_model(data: st.DataObject) -> None:
    """Undecorated generators and the consumer share one context: the session
    is always the one of the block entered last among those still open, and
    nothing is left when all are closed, whichever order they exit in and
    whichever scope objects they share."""
    # A context of its own per example: a failing one leaves blocks open.
    Context().run(_follow_the_model, data)


def _follow_the_model(data: st.DataObject) -> None:
    pool = [session() for _ in range(data.draw(st.integers(1, 3), label="scope objects"))]
    pick = st.integers(0, len(pool) - 1)
    block = st.tuples(pick, st.booleans())  # a scope object, through an ExitStack or not
    depths = data.draw(st.lists(st.lists(block, min_size=1, max_size=3), min_size=1, max_size=4))
    opened: list[str] = []
    closed: list[str] = []
    gens = [
        _nested_blocks([(pool[i], use_stack) for i, use_stack in depth], opened, closed)
        for depth in depths
    ]
    live = list(range(len(gens)))
    consumer: list[tuple[Any, str]] = []  # the consumer's own blocks, innermost last
    model: list[str] = []  # open blocks, in the order they were entered
    try:
        _play(data, pool, gens, live, consumer, model, opened, closed)
    finally:
        # Hypothesis may stop an example at any draw: what is open closes here,
        # in the example's context, not later in the garbage collector's.
        for gen in gens:
            gen.close()
        while consumer:
            consumer.pop()[0].__exit__(None, None, None)
    assert model == []
    assert current_session() is None


def _play(
    data: st.DataObject,
    pool: list[Any],
    gens: list[Generator[None, None, None]],
    live: list[int],
    consumer: list[tuple[Any, str]],
    model: list[str],
    opened: list[str],
    closed: list[str],
) -> None:
    pick = st.integers(0, len(pool) - 1)

    def check() -> None:
        assert current_session_id() == (model[-1] if model else None)

    while live or consumer:
        moves = [f"step {i}" for i in live] + ["open", "close" if consumer else "open"]
        move = data.draw(st.sampled_from(moves))
        if move.startswith("step"):
            gen = gens[int(move.split()[1])]
            before_opened, before_closed = len(opened), len(closed)
            if next(gen, StopIteration) is StopIteration:
                live.remove(gens.index(gen))
            model.extend(opened[before_opened:])
            for sid in closed[before_closed:]:
                model.remove(sid)
        elif move == "open":
            if len(consumer) >= 3:
                continue
            scope = pool[data.draw(pick)]
            consumer.append((scope, scope.__enter__().id))
            model.append(consumer[-1][1])
        else:
            scope, sid = consumer.pop()
            scope.__exit__(None, None, None)
            model.remove(sid)
        check()


class Failed(Exception):
    pass


@session("deco")
def failing_function() -> None:
    raise Failed


@session("deco")
def failing_generator() -> Iterator[int]:
    yield 1
    raise Failed


@session("deco")
async def failing_coroutine() -> None:
    raise Failed


async def failing_async_with() -> None:
    async with session("deco"):
        raise Failed


async def logged_in_the_task(fail: Callable[[], Awaitable[None]]) -> str:
    """What a record made in the task, outside the session, shows for the error."""
    try:
        await fail()
    except Failed as error:
        assert current_session() is None
        return logged_session_id(error)
    raise AssertionError("did not fail")


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(failing_function, id="function"),
        pytest.param(lambda: list(failing_generator()), id="generator-step"),
    ],
)
def test_an_exception_that_leaves_a_session_notes_its_id_for_logs_outside(
    run: Callable[[], object],
) -> None:
    with pytest.raises(Failed) as raised:
        run()

    assert current_session() is None
    assert logged_session_id(raised.value) == "deco"


def run_as_trio_guest(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``fn(*args)`` in trio run as a guest of an asyncio event loop, where
    asyncio has a running loop but no task."""
    import trio

    async def host() -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            fn,
            *args,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
        )
        return cast(T, (await done).unwrap())

    return asyncio.run(host())


def run_on(backend: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    if backend == "trio-guest":
        return run_as_trio_guest(fn, *args)
    return anyio.run(fn, *args, backend=backend)


#: Tasks are told apart under asyncio and under trio alike.
EVENT_LOOPS = pytest.mark.parametrize("backend", ["asyncio", "trio", "trio-guest"])


@EVENT_LOOPS
@pytest.mark.parametrize(
    "fail",
    [
        pytest.param(failing_coroutine, id="coroutine"),
        pytest.param(failing_async_with, id="async-with"),
    ],
)
def test_an_exception_that_leaves_a_session_in_a_task_notes_its_id_for_that_task(
    fail: Callable[[], Awaitable[None]], backend: str
) -> None:
    assert run_on(backend, logged_in_the_task, fail) == "deco"


@EVENT_LOOPS
def test_a_record_made_in_another_task_shows_no_id_for_the_exception(backend: str) -> None:
    async def main() -> str:
        failed: list[Failed] = []

        async def fail() -> None:
            try:
                await failing_coroutine()
            except Failed as error:
                failed.append(error)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(fail)
        # Logged in a task that was in no session.
        return logged_session_id(failed[0])

    assert run_on(backend, main) == "-"


@EVENT_LOOPS
def test_one_exception_that_left_sessions_in_two_tasks_shows_no_id(backend: str) -> None:
    """The one exception a failed shared computation raises in every request
    awaiting it: which request a record is about cannot be told."""
    shared = Failed("the shared computation failed")
    logged: list[str] = []

    async def request(sid: str) -> None:
        try:
            async with session(sid):
                await anyio.sleep(0)
                raise shared
        except Failed as error:
            await anyio.sleep(0.01)  # both requests have left their sessions
            logged.append(logged_session_id(error))

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(request, "req-a")
            tasks.start_soon(request, "req-b")

    run_on(backend, main)
    assert logged == ["-", "-"]


def test_a_task_that_takes_no_weak_reference_leaves_the_note_to_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (``sessionctx.session`` as an attribute is the function of that name.)
    session_module = sys.modules["sessionctx.session"]
    monkeypatch.setattr(session_module, "_current_task", lambda: 1)  # an int takes none

    with pytest.raises(Failed) as raised:
        failing_function()

    assert logged_session_id(raised.value) == "deco"


def test_an_exception_leaving_a_session_that_was_cleared_notes_no_id() -> None:
    @session("cleared")
    def clears_then_fails() -> None:
        set_session_id(None)
        raise Failed

    with pytest.raises(Failed) as raised:
        clears_then_fails()

    assert logged_session_id(raised.value) == "-"


@pytest.mark.parametrize(
    ("copy_of", "expected"),
    [
        # Another process cannot tell where the exception left the session.
        pytest.param(lambda error: pickle.loads(pickle.dumps(error)), "-", id="pickle"),
        pytest.param(copy.deepcopy, "-", id="deepcopy"),
        pytest.param(copy.copy, "deco", id="copy"),
    ],
)
def test_an_exception_that_left_a_session_can_still_be_pickled_and_copied(
    copy_of: Callable[[BaseException], BaseException], expected: str
) -> None:
    with pytest.raises(Failed) as raised:
        failing_function()

    copied = copy_of(raised.value)

    assert type(copied) is Failed
    assert logged_session_id(copied) == expected
    # A copy that leaves a session again gets a note it can tell, or none.
    with pytest.raises(Failed) as again, session("again"):
        raise copied
    assert logged_session_id(again.value) in ("again", "-")


def test_session_id_of_reads_the_session_an_exception_left() -> None:
    with pytest.raises(Failed) as raised:
        failing_function()
    assert current_session_id() is None
    assert session_id_of(raised.value) == "deco"
    # An exception raised from it, or while handling it, leads back to it.
    later = KeyError("while handling")
    later.__cause__ = raised.value
    assert session_id_of(later) == "deco"
    later.__cause__ = None
    later.__context__ = raised.value
    assert session_id_of(later) == "deco"


def test_session_id_of_an_exception_raised_from_another_while_handling_the_noted_one() -> None:
    """``raise X from Y`` in ``except``: the noted exception is the context, not the cause."""
    with pytest.raises(Failed) as raised:
        failing_function()
    later = KeyError("raised from another")
    later.__cause__ = ValueError("unrelated")
    later.__context__ = raised.value
    assert session_id_of(later) == "deco"
    assert logged_session_id(later) == "deco"


def test_session_id_of_looks_through_causes_first_then_contexts() -> None:
    with pytest.raises(Failed) as raised:
        failing_function()
    top, cause, deeper = KeyError("top"), ValueError("cause"), ValueError("deeper")
    top.__cause__, top.__context__ = cause, raised.value
    cause.__cause__, cause.__context__ = deeper, TypeError("another context")
    assert session_id_of(top) == "deco"
    assert logged_session_id(top) == "deco"


def test_session_id_of_looks_at_eight_exceptions_at_most() -> None:
    with pytest.raises(Failed) as raised:
        failing_function()
    chain: list[BaseException] = [raised.value]
    for depth in range(8):
        wrapper = KeyError(depth)
        wrapper.__context__ = chain[-1]
        chain.append(wrapper)
    assert session_id_of(chain[-2]) == "deco"  # the noted one is the eighth looked at
    assert session_id_of(chain[-1]) is None


def test_session_id_of_walks_a_cycle_of_causes_once() -> None:
    # A cause set by hand can point back up the chain: each exception in the
    # cycle is looked at once, and the context beside it is looked at next.
    with pytest.raises(Failed) as raised:
        failing_function()
    top, cause = KeyError("top"), ValueError("cause")
    top.__cause__, top.__context__ = cause, raised.value
    cause.__cause__ = top
    assert session_id_of(top) == "deco"
    assert logged_session_id(top) == "deco"
    cause.__cause__ = cause  # its own cause
    assert session_id_of(top) == "deco"
    # With nothing noted anywhere: no id.
    top.__context__ = None
    assert session_id_of(top) is None


def test_session_id_of_an_exception_noted_in_a_task_that_is_gone_is_none() -> None:
    async def fail() -> tuple[Failed, str | None]:
        with pytest.raises(Failed) as raised:
            await failing_coroutine()
        return raised.value, session_id_of(raised.value)

    error, in_the_task = asyncio.run(fail())
    assert in_the_task == "deco"
    gc.collect()
    # The same thread, outside any task: not the task that left the session.
    assert session_id_of(error) is None
    assert logged_session_id(error) == "-"


def test_session_id_of_is_the_last_session_the_exception_left() -> None:
    with session("outer"):
        with pytest.raises(Failed) as raised, session("inner"):
            raise Failed
        assert current_session_id() == "outer"
        assert session_id_of(raised.value) == "inner"


def test_session_id_of_an_exception_that_left_no_session_is_none() -> None:
    assert session_id_of(Failed()) is None
    with session("sess-1"):
        error = Failed()  # made in a session, never raised out of it
    assert session_id_of(error) is None


def test_session_id_of_in_another_thread_is_none() -> None:
    with pytest.raises(Failed) as raised:
        failing_function()
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(session_id_of, raised.value).result(timeout=10) is None


@pytest.mark.parametrize("value", [None, "sess-1", Failed])
def test_session_id_of_needs_an_exception(value: object) -> None:
    words = f"error must be an exception, not .*{re.escape(repr(value))}"
    with pytest.raises(TypeError, match=words):
        session_id_of(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, 5, "name"])
def test_what_cannot_be_called_is_refused_when_it_is_wrapped(value: object) -> None:
    """Not at its first call, in a worker thread or a callback far from the cause."""
    with pytest.raises(
        TypeError, match=f"wrap_context wraps a callable, not {type(value).__name__}"
    ):
        wrap_context(value)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=f"session\\(\\) wraps a callable, not {type(value).__name__}"
    ):
        session("abc")(value)  # type: ignore[type-var]
