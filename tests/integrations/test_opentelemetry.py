"""``SessionSpanProcessor`` on a real SDK ``TracerProvider``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from sessionctx import ContextThreadPoolExecutor, session
from sessionctx.integrations.opentelemetry import SessionSpanProcessor
from tests.tracing import Tracing


@pytest.fixture
def recorder() -> Iterator[Tracing]:
    r = Tracing(SessionSpanProcessor())
    yield r
    r.provider.shutdown()


def test_spans_in_a_session_carry_its_id_and_attributes(recorder: Tracing) -> None:
    attributes = {"user": "u1", "plan": {"tier": "pro", "seats": [1, 2]}}
    tracer = recorder.tracer
    with (
        session("sess-1", attributes),
        tracer.start_as_current_span("outer"),
        tracer.start_as_current_span("inner"),
    ):
        pass
    for name in ("outer", "inner"):
        got = recorder.attributes(name)
        assert got["session.id"] == "sess-1"
        assert got["session.attributes"] == '{"user":"u1","plan":{"tier":"pro","seats":[1,2]}}'
        assert json.loads(str(got["session.attributes"])) == attributes


def test_a_session_without_attributes_sets_only_the_id(recorder: Tracing) -> None:
    with session("sess-1"), recorder.tracer.start_as_current_span("span"):
        pass
    assert recorder.attributes("span") == {"session.id": "sess-1"}


def test_spans_outside_a_session_get_nothing(recorder: Tracing) -> None:
    with recorder.tracer.start_as_current_span("span", attributes={"k": "v"}):
        pass
    assert recorder.attributes("span") == {"k": "v"}


def test_the_session_is_read_when_each_span_starts(recorder: Tracing) -> None:
    with recorder.tracer.start_as_current_span("parent"):
        with session("one"), recorder.tracer.start_as_current_span("first"):
            pass
        with session("two"), recorder.tracer.start_as_current_span("second"):
            pass
    assert "session.id" not in recorder.attributes("parent")
    assert recorder.attributes("first")["session.id"] == "one"
    assert recorder.attributes("second")["session.id"] == "two"


def test_spans_in_threads_see_the_session_only_through_a_context_copy(
    recorder: Tracing,
) -> None:
    def work(name: str) -> None:
        with recorder.tracer.start_as_current_span(name):
            pass

    with session("sess-1"):
        plain = threading.Thread(target=work, args=("plain-thread",))
        plain.start()
        plain.join(timeout=10)
        with ContextThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(work, "copied-context").result(timeout=10)
    assert "session.id" not in recorder.attributes("plain-thread")
    assert recorder.attributes("copied-context")["session.id"] == "sess-1"


def test_alias_names_and_a_custom_attributes_key() -> None:
    processor = SessionSpanProcessor(
        attribute_names=("session.id", "tracectrl.session_id", "mirascope.session.id"),
        attributes_key="app.session",
    )
    recorder = Tracing(processor)
    with session("sess-1", {"a": 1}), recorder.tracer.start_as_current_span("span"):
        pass
    assert recorder.attributes("span") == {
        "session.id": "sess-1",
        "tracectrl.session_id": "sess-1",
        "mirascope.session.id": "sess-1",
        "app.session": '{"a":1}',
    }


def test_attributes_key_none_leaves_the_attributes_out() -> None:
    recorder = Tracing(SessionSpanProcessor(attributes_key=None))
    with session("sess-1", {"a": 1}), recorder.tracer.start_as_current_span("span"):
        pass
    assert recorder.attributes("span") == {"session.id": "sess-1"}


@pytest.mark.parametrize(
    ("started_with", "expected"),
    [
        pytest.param(
            {"session.id": "explicit"},
            {
                "session.id": "explicit",
                "tracectrl.session_id": "ambient",
                "session.attributes": '{"a":1}',
            },
            id="id",
        ),
        pytest.param(
            {"tracectrl.session_id": "explicit"},
            {
                "session.id": "ambient",
                "tracectrl.session_id": "explicit",
                "session.attributes": '{"a":1}',
            },
            id="alias",
        ),
        pytest.param(
            {"session.attributes": "{}"},
            {
                "session.id": "ambient",
                "tracectrl.session_id": "ambient",
                "session.attributes": "{}",
            },
            id="attributes-key",
        ),
        pytest.param(
            {"session.id": "x", "tracectrl.session_id": "y", "session.attributes": "{}"},
            {"session.id": "x", "tracectrl.session_id": "y", "session.attributes": "{}"},
            id="every-name",
        ),
    ],
)
def test_a_value_the_span_was_started_with_wins(
    started_with: dict[str, str], expected: dict[str, str]
) -> None:
    recorder = Tracing(SessionSpanProcessor(attribute_names=("session.id", "tracectrl.session_id")))
    with (
        session("ambient", {"a": 1}),
        recorder.tracer.start_as_current_span("span", attributes=started_with),
    ):
        pass
    assert recorder.attributes("span") == expected


def test_options_are_kept_in_order_without_duplicates() -> None:
    processor = SessionSpanProcessor(attribute_names=["b", "a", "b"], attributes_key=None)
    assert processor.attribute_names == ("b", "a")
    assert processor.attributes_key is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"attribute_names": "session.id"}, TypeError, "not a single name", id="str"),
        pytest.param({"attribute_names": ()}, ValueError, "at least one", id="empty"),
        pytest.param({"attribute_names": ("",)}, ValueError, "must not be empty", id="blank"),
        pytest.param({"attribute_names": (1,)}, TypeError, "must be a str", id="not-str"),
        pytest.param({"attributes_key": ""}, ValueError, "must not be empty", id="blank-key"),
        pytest.param({"attributes_key": b"k"}, TypeError, "must be a str", id="bytes-key"),
        pytest.param(
            {"attributes_key": "session.id"}, ValueError, "also in attribute_names", id="clash"
        ),
    ],
)
def test_invalid_options_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SessionSpanProcessor(**kwargs)  # type: ignore[arg-type]
