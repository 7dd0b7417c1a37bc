"""``sessionctx.log_filters.SessionIdFilter`` (SPEC §5)."""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import io
import logging
import logging.handlers
import queue
import textwrap
import threading
import time
import uuid

import pytest

from sessionctx import session
from sessionctx.log_filters import SessionIdFilter
from tests.support import run_python


class ListHandler(logging.Handler):
    """Keeps the records it handles."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def session_id_of(record: logging.LogRecord) -> object:
    """The attribute the filter adds (``LogRecord`` does not declare it)."""
    return record.__dict__["session_id"]


def id_lines() -> tuple[logging.Handler, io.StringIO]:
    """A handler with the filter that writes ``session_id message`` lines into the stream."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(logging.Formatter("%(session_id)s %(message)s"))
    return handler, stream


def make_record(message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, message, None, None)


@pytest.mark.parametrize("on", ["handler", "logger"])
def test_sets_the_session_id_or_the_default_on_the_record(logger: logging.Logger, on: str) -> None:
    handler = ListHandler()
    logger.addHandler(handler)
    (handler if on == "handler" else logger).addFilter(SessionIdFilter())
    logger.info("outside")
    with session("abc"):
        logger.info("inside")
    assert [(session_id_of(r), r.getMessage()) for r in handler.records] == [
        ("-", "outside"),
        ("abc", "inside"),
    ]


def test_a_record_filtered_at_the_top_of_a_script_gets_the_session() -> None:
    # A stack shorter than a logging call's: the script gives the record itself.
    script = textwrap.dedent(
        """
        import logging
        from sessionctx import session
        from sessionctx.log_filters import SessionIdFilter

        with session("abc"):
            record = logging.makeLogRecord({"msg": "by hand"})
            SessionIdFilter().filter(record)
            logging.basicConfig(format="%(session_id)s %(message)s")
            logging.getLogger().handlers[0].addFilter(SessionIdFilter())
            logging.warning("logged")
        print(record.session_id)
        """
    )
    result = run_python("-c", script)
    assert result.stdout.split() == ["abc"]
    assert result.stderr.split() == ["abc", "logged"]


def test_a_filter_called_with_no_python_frame_above_it_writes_the_session() -> None:
    # A thread started from C on the filter itself, in a session's context;
    # the record names no thread (logging.logThreads off).
    record = make_record()
    record.thread = None
    with session("abc"):
        run = contextvars.copy_context().run
    _thread.start_new_thread(run, (SessionIdFilter().filter, record))
    deadline = time.monotonic() + 10
    while "session_id" not in record.__dict__ and time.monotonic() < deadline:
        time.sleep(0.001)
    assert session_id_of(record) == "abc"


def test_a_record_given_to_the_filter_directly_gets_the_session_it_is_given_in() -> None:
    """``log_filter.filter(record)`` called by code, not by logging: that code
    knows the session (a unit test)."""
    log_filter = SessionIdFilter()
    with session("abc"):
        record = make_record()
        assert log_filter.filter(record) is True
    assert session_id_of(record) == "abc"
    record = make_record()
    log_filter.filter(record)
    assert session_id_of(record) == "-"
    with session("outer"), session("inner"):
        record = make_record()
        log_filter.filter(record)
    assert session_id_of(record) == "inner"


def test_a_record_handed_to_a_logger_or_handler_by_other_code_gets_the_default() -> None:
    """Logging hands it on (replayed, flushed, from a listener): where it was
    made is not known, even in a session."""
    handler = ListHandler()
    handler.addFilter(SessionIdFilter())
    logger = logging.getLogger(f"handed.{uuid.uuid4()}")
    logger.propagate = False
    logger.addHandler(handler)
    with session("abc"):
        handler.handle(make_record())
        logger.handle(make_record())
        through_filterer = make_record()
        assert handler.filter(through_filterer)
    assert [session_id_of(r) for r in handler.records] == ["-", "-"]
    assert session_id_of(through_filterer) == "-"


def test_a_custom_default() -> None:
    record = make_record()
    SessionIdFilter(default="no-session").filter(record)
    assert session_id_of(record) == "no-session"
    record = make_record()
    SessionIdFilter(default="").filter(record)
    assert session_id_of(record) == ""


def test_the_default_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="default"):
        SessionIdFilter(default=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [None, 5, b"app"])
def test_the_name_must_be_a_str(name: object) -> None:
    with pytest.raises(TypeError, match=f"name must be a str, not {type(name).__name__}"):
        SessionIdFilter(name=name)  # type: ignore[arg-type]


def test_formats_through_a_handler(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s session=%(session_id)s %(message)s"))
    logger.addHandler(handler)

    logger.info("before")
    with session("abc"):
        logger.warning("during")
    logger.info("after")

    assert stream.getvalue().splitlines() == [
        "INFO session=- before",
        "WARNING session=abc during",
        "INFO session=- after",
    ]


def test_keeps_a_session_id_given_with_extra(logger: logging.Logger) -> None:
    handler = ListHandler()
    handler.addFilter(SessionIdFilter())
    logger.addHandler(handler)

    logger.info("outside", extra={"session_id": "job-42"})
    with session("abc"):
        logger.info("inside", extra={"session_id": "job-43"})
        logger.info("plain")

    assert [(r.getMessage(), session_id_of(r)) for r in handler.records] == [
        ("outside", "job-42"),
        ("inside", "job-43"),
        ("plain", "abc"),
    ]


def test_a_queue_keeps_the_id_of_the_thread_that_logged(logger: logging.Logger) -> None:
    # The filter on both sides of a queue, as dictConfig setups often have it:
    # the listener's thread has no session, and must not replace the id.
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = logging.handlers.QueueHandler(records)
    queue_handler.addFilter(SessionIdFilter())
    logger.addHandler(queue_handler)
    output, stream = id_lines()
    listener = logging.handlers.QueueListener(records, output, respect_handler_level=True)

    listener.start()
    try:
        with session("abc"):
            logger.info("queued")
        logger.info("no session")
    finally:
        listener.stop()

    assert stream.getvalue().splitlines() == ["abc queued", "- no session"]


def test_never_drops_a_record_whatever_its_name(logger: logging.Logger) -> None:
    handler = ListHandler()
    logger.addHandler(handler)
    # A plain logging.Filter with this name would drop every record of ``logger``.
    logger.addFilter(SessionIdFilter("some.other.logger"))
    logger.debug("one")
    with session("abc"):
        logger.error("two")
    assert [(r.getMessage(), session_id_of(r)) for r in handler.records] == [
        ("one", "-"),
        ("two", "abc"),
    ]


def test_each_thread_and_task_logs_its_own_session(logger: logging.Logger) -> None:
    handler = ListHandler()
    handler.addFilter(SessionIdFilter())
    logger.addHandler(handler)

    def in_thread(index: int) -> None:
        with session(f"thread-{index}"):
            logger.info("thread %d", index)

    async def in_task(index: int) -> None:
        async with session(f"task-{index}"):
            await asyncio.sleep(0)
            logger.info("task %d", index)

    async def tasks() -> None:
        await asyncio.gather(*(in_task(i) for i in range(3)))

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    asyncio.run(tasks())
    logger.info("main")

    seen = {r.getMessage(): session_id_of(r) for r in handler.records}
    assert seen == {
        **{f"thread {i}": f"thread-{i}" for i in range(3)},
        **{f"task {i}": f"task-{i}" for i in range(3)},
        "main": "-",
    }


class PresetFilter(SessionIdFilter):
    """A filter preset for ``dictConfig``, its default given as a class attribute."""

    default = "none"


class PresetFilterOwnInit(PresetFilter):
    """The same, with an ``__init__`` that leaves the default to the class attribute."""

    def __init__(self) -> None:
        logging.Filter.__init__(self)


@pytest.mark.parametrize(
    ("filter_class", "placeholder"),
    [
        # SessionIdFilter.__init__ sets its own ``default="-"`` on the instance.
        pytest.param(PresetFilter, "-", id="init-argument"),
        pytest.param(PresetFilterOwnInit, "none", id="class-attribute"),
    ],
)
def test_a_subclass_with_a_class_level_default_logs(
    logger: logging.Logger, filter_class: type[SessionIdFilter], placeholder: str
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(filter_class())
    handler.setFormatter(logging.Formatter("%(session_id)s %(message)s"))
    logger.addHandler(handler)
    next_handler = ListHandler()
    next_handler.addFilter(SessionIdFilter(default="n/a"))
    logger.addHandler(next_handler)

    logger.warning("outside")
    with session("abc"):
        logger.warning("inside")

    assert stream.getvalue().splitlines() == [f"{placeholder} outside", "abc inside"]
    assert [session_id_of(r) for r in next_handler.records] == ["n/a", "abc"]


def test_a_memory_handler_with_the_filter_keeps_each_records_session(
    logger: logging.Logger,
) -> None:
    # The filter on the buffering handler itself: each record keeps the
    # session it was logged in, whichever request fills the buffer.
    output, stream = id_lines()
    buffered = logging.handlers.MemoryHandler(capacity=100, target=output)
    buffered.addFilter(SessionIdFilter())
    logger.addHandler(buffered)

    with session("alice"):
        logger.info("from alice")
    logger.info("outside")
    with session("bob"):
        logger.error("from bob, flushes")

    assert stream.getvalue().splitlines() == [
        "alice from alice",
        "- outside",
        "bob from bob, flushes",
    ]


def test_a_record_made_in_another_thread_gets_the_default_not_this_threads_session(
    logger: logging.Logger,
) -> None:
    # A MemoryHandler without the filter, flushed by another thread's request:
    # the filter behind it must not write that request's id on the records
    # the first thread logged.
    output, stream = id_lines()
    logger.addHandler(logging.handlers.MemoryHandler(capacity=100, target=output))

    def alice() -> None:
        with session("alice"):
            logger.info("from alice")

    thread = threading.Thread(target=alice)
    thread.start()
    thread.join()
    with session("bob"):
        logger.error("from bob, flushes")

    assert stream.getvalue().splitlines() == ["- from alice", "bob from bob, flushes"]


def test_without_thread_ids_on_records_the_session_is_written(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "logThreads", False)
    handler = ListHandler()
    handler.addFilter(SessionIdFilter())
    logger.addHandler(handler)
    with session("abc"):
        logger.info("inside")
    (record,) = handler.records
    assert record.thread is None
    assert session_id_of(record) == "abc"


def test_the_thread_id_is_read_as_logging_reads_it(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gevent and eventlet patch threading.get_ident, maybe after sessionctx
    # was imported: the filter compares with what logging put on the record.
    # current_thread() looks itself up by get_ident(): kept as it is, so that
    # no dummy thread is made for the made-up id.
    this_thread = threading.current_thread()
    monkeypatch.setattr(threading, "current_thread", lambda: this_thread)
    monkeypatch.setattr(threading, "get_ident", lambda: 424242)
    handler = ListHandler()
    handler.addFilter(SessionIdFilter())
    logger.addHandler(handler)
    with session("abc"):
        logger.info("patched")
    assert handler.records[0].thread == 424242
    assert session_id_of(handler.records[0]) == "abc"


def _filtered_here() -> logging.LogRecord:
    record = make_record()
    SessionIdFilter().filter(record)
    return record


def _takes_a_logger_first(log: logging.Logger) -> logging.LogRecord:
    return _filtered_here()


def test_a_function_that_takes_a_logger_or_handler_is_no_handler_of_ones_own(
    logger: logging.Logger,
) -> None:
    """Only a method of a handler's or logger's own class hands records on: a
    test with a logger fixture, or a helper taking one, gives the record itself."""
    with session("sess-1"):
        direct = make_record()
        SessionIdFilter().filter(direct)
        through_helper = _takes_a_logger_first(logger)
        through_handler_arg = (lambda handler: _filtered_here())(logging.NullHandler())
    assert [session_id_of(r) for r in (direct, through_helper, through_handler_arg)] == [
        "sess-1",
        "sess-1",
        "sess-1",
    ]


def test_the_walk_up_the_stack_evaluates_no_lazy_object() -> None:
    """It reads each caller's first argument by type(), which a lazy proxy
    (Django's SimpleLazyObject, as request.user) answers without loading."""
    from django.utils.functional import SimpleLazyObject

    loaded: list[object] = []

    def view(user: object) -> logging.LogRecord:
        return _filtered_here()

    with session("sess-1"):
        record = view(SimpleLazyObject(lambda: loaded.append(1)))
    assert loaded == []
    assert session_id_of(record) == "sess-1"


@pytest.mark.parametrize(
    "exc_info",
    [
        pytest.param(True, id="true"),
        pytest.param((ValueError,), id="one-item"),
        pytest.param(5, id="an-int"),
        pytest.param((None, None, None), id="nones"),
        pytest.param((ValueError, "not an exception", None), id="not-an-exception"),
    ],
)
def test_a_record_with_an_odd_exc_info_gets_the_default_outside_a_session(
    exc_info: object,
) -> None:
    """A record made by hand with what logging would not make of exc_info: the
    filter neither raises (the formatter is where logging reports it) nor
    finds a session in it."""
    handler = ListHandler()
    handler.addFilter(SessionIdFilter())
    record = make_record()
    record.exc_info = exc_info  # type: ignore[assignment]
    handler.handle(record)
    assert [session_id_of(r) for r in handler.records] == ["-"]
