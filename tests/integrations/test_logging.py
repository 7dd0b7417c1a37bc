"""Stdlib logging setups with ``SessionIdFilter``: the README's ``dictConfig``, run in a fresh
interpreter (``dictConfig`` closes every existing handler, so it runs in a subprocess rather
than in the test process), and several handlers, each with a filter and a default of its own,
on one logger or on both sides of a queue between threads or processes.
"""

from __future__ import annotations

import copy
import io
import logging
import logging.handlers
import multiprocessing
import pickle
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

from sessionctx import session
from sessionctx.log_filters import SessionIdFilter
from tests.support import SessionRecords, logged_session_id, run_python

SCRIPT = textwrap.dedent(
    """
    import logging
    import logging.config
    import sys

    from sessionctx import session

    session_filter = {"()": "sessionctx.log_filters.SessionIdFilter"}
    if len(sys.argv) > 1:
        session_filter["default"] = sys.argv[1]

    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"session_id": session_filter},
        "formatters": {
            "plain": {"format": "%(levelname)s [%(session_id)s] %(name)s: %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["session_id"],
                "formatter": "plain",
            },
        },
        "root": {"level": "INFO", "handlers": ["console"]},
    })

    log = logging.getLogger("app")
    log.info("before")
    with session("sess-1"):
        log.info("inside")
        logging.getLogger("app.db").warning("query")
    log.info("after")
    """
)


@pytest.mark.parametrize(
    ("argv", "placeholder"),
    [pytest.param([], "-", id="default-dash"), pytest.param(["none"], "none", id="custom-default")],
)
def test_dictconfig_filter_puts_the_id_on_every_line(argv: list[str], placeholder: str) -> None:
    done = run_python("-c", SCRIPT, *argv)
    assert done.stdout.splitlines() == [
        f"INFO [{placeholder}] app: before",
        "INFO [sess-1] app: inside",
        "WARNING [sess-1] app.db: query",
        f"INFO [{placeholder}] app: after",
    ]


def handler_with(log_filter: SessionIdFilter) -> tuple[logging.Handler, io.StringIO]:
    """A handler with ``log_filter``, and the stream it writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(log_filter)
    handler.setFormatter(logging.Formatter("%(session_id)s %(message)s"))
    return handler, stream


def formatting_handler(default: str) -> tuple[logging.Handler, io.StringIO]:
    """A handler with its own ``SessionIdFilter(default=default)``, and the stream it writes."""
    return handler_with(SessionIdFilter(default=default))


def log_three_records(log: logging.Logger) -> None:
    log.info("outside")
    with session("sess-1"):
        log.info("inside")
    log.info("extra", extra={"session_id": "job-42"})


#: What a handler whose filter has the default ``none`` writes for ``log_three_records``.
THREE_LINES = ["none outside", "sess-1 inside", "job-42 extra"]


def test_each_handler_writes_its_own_default(logger: logging.Logger) -> None:
    first, first_lines = formatting_handler("-")
    second, second_lines = formatting_handler("none")
    logger.addHandler(first)
    logger.addHandler(second)
    log_three_records(logger)
    assert first_lines.getvalue().splitlines() == ["- outside", "sess-1 inside", "job-42 extra"]
    assert second_lines.getvalue().splitlines() == THREE_LINES


def pickled(log_filter: SessionIdFilter) -> SessionIdFilter:
    """``log_filter`` after a pickle round trip, as a spawned process gets it."""
    loaded: SessionIdFilter = pickle.loads(pickle.dumps(log_filter))
    return loaded


@pytest.mark.parametrize(
    "copy_filter",
    [
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
        pytest.param(pickled, id="pickle"),
    ],
)
def test_a_copied_filter_writes_its_own_default(
    logger: logging.Logger, copy_filter: Callable[[SessionIdFilter], SessionIdFilter]
) -> None:
    copied, copied_lines = handler_with(copy_filter(SessionIdFilter(default="none")))
    other, other_lines = formatting_handler("-")
    logger.addHandler(copied)
    logger.addHandler(other)
    log_three_records(logger)
    assert copied_lines.getvalue().splitlines() == THREE_LINES
    assert other_lines.getvalue().splitlines() == ["- outside", "sess-1 inside", "job-42 extra"]


def test_a_default_set_later_is_the_filters_own(logger: logging.Logger) -> None:
    changed = SessionIdFilter()
    first, first_lines = handler_with(changed)
    second, second_lines = formatting_handler("-")
    logger.addHandler(first)
    logger.addHandler(second)
    changed.default = "none"
    log_three_records(logger)
    assert first_lines.getvalue().splitlines() == THREE_LINES
    assert second_lines.getvalue().splitlines() == ["- outside", "sess-1 inside", "job-42 extra"]


def test_a_queue_listener_handler_writes_its_own_default(logger: logging.Logger) -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = logging.handlers.QueueHandler(records)
    queue_handler.addFilter(SessionIdFilter())
    logger.addHandler(queue_handler)
    output, lines = formatting_handler("none")
    listener = logging.handlers.QueueListener(records, output)
    listener.start()
    try:
        log_three_records(logger)
    finally:
        listener.stop()
    assert lines.getvalue().splitlines() == THREE_LINES


def test_a_default_is_not_replaced_by_the_session_of_the_handling_thread(
    logger: logging.Logger,
) -> None:
    # A listener thread that happens to run in a session has not logged the record.
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = logging.handlers.QueueHandler(records)
    queue_handler.addFilter(SessionIdFilter())
    logger.addHandler(queue_handler)
    output, lines = formatting_handler("none")
    logger.info("outside")
    with session("listener"):
        output.handle(records.get_nowait())
    assert lines.getvalue().splitlines() == ["none outside"]


def log_through_a_queue(records: multiprocessing.Queue[logging.LogRecord]) -> None:
    """The child process of the test below: logs into the parent's queue."""
    log = logging.getLogger("tests.integrations.logging.child")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = logging.handlers.QueueHandler(records)
    handler.addFilter(SessionIdFilter())
    log.addHandler(handler)
    log_three_records(log)


def test_a_record_from_another_process_keeps_what_its_filter_wrote() -> None:
    # The records cross the process boundary pickled, as multiprocessing logging does;
    # the child's default arrives as a plain str, kept like an extra= value.
    context = multiprocessing.get_context("spawn")
    records: multiprocessing.Queue[logging.LogRecord] = context.Queue()
    output, lines = formatting_handler("none")
    listener = logging.handlers.QueueListener(records, output)
    listener.start()
    try:
        child = context.Process(target=log_through_a_queue, args=(records,))
        child.start()
        child.join(60)
    finally:
        listener.stop()
    assert child.exitcode == 0
    assert lines.getvalue().splitlines() == ["- outside", "sess-1 inside", "job-42 extra"]


LOAD_WITHOUT_SESSIONCTX = textwrap.dedent(
    """
    import pickle
    import sys

    data = sys.stdin.buffer.read()
    print(repr(pickle.loads(data[4:])["session_id"]))  # after SocketHandler's length prefix
    """
)


def test_a_pickled_record_loads_where_sessionctx_is_not_installed() -> None:
    # A SocketHandler's receiver, say a log server, need not have sessionctx.
    record = logging.makeLogRecord({"msg": "outside"})
    SessionIdFilter(default="none").filter(record)
    data = logging.handlers.SocketHandler("127.0.0.1", 9).makePickle(record)
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", LOAD_WITHOUT_SESSIONCTX],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "'none'"


def test_the_filter_adds_no_attribute_but_session_id(logger: logging.Logger) -> None:
    # JSON formatters write every attribute of a record.
    plain = logging.makeLogRecord({"msg": "plain"})
    first, _ = formatting_handler("-")
    second, _ = formatting_handler("none")
    record = logging.makeLogRecord({"msg": "filtered"})
    first.handle(record)
    second.handle(record)
    assert set(record.__dict__) - set(plain.__dict__) == {"session_id", "message"}


def test_the_default_can_be_changed() -> None:
    log_filter = SessionIdFilter(default="none")
    assert log_filter.default == "none"
    log_filter.default = "n/a"
    record = logging.makeLogRecord({"msg": "changed"})
    log_filter.filter(record)
    assert (log_filter.default, record.__dict__["session_id"]) == ("n/a", "n/a")
    with pytest.raises(TypeError, match="default must be a str"):
        log_filter.default = None  # type: ignore[assignment]
    assert log_filter.default == "n/a"


class Boom(Exception):
    pass


def raise_in_session(sid: str) -> Boom:
    """The exception that left ``session(sid)``, as a server catches it."""
    try:
        with session(sid):
            raise Boom("boom")
    except Boom as error:
        return error


def test_an_exception_that_left_a_session_carries_its_id_to_a_record_made_outside(
    logger: logging.Logger,
) -> None:
    handler = SessionRecords()
    logger.addHandler(handler)
    error = raise_in_session("sess-1")

    logger.error("with exc_info", exc_info=error)
    logger.error("without")
    try:
        raise RuntimeError("while handling") from error
    except RuntimeError:
        # A server that writes the traceback as text from its except block.
        logger.error("text only")
        logger.exception("a later exception, caused by it")
    with session("sess-2"):
        logger.error("in another session", exc_info=error)

    assert [f"{sid} {message}" for sid, message, _ in handler.records] == [
        "sess-1 with exc_info",
        "- without",
        "sess-1 text only",
        "sess-1 a later exception, caused by it",
        "sess-2 in another session",
    ]


def test_the_last_session_an_exception_left_is_noted() -> None:
    # A request's id, which its response carries, over a block inside it.
    with pytest.raises(Boom) as raised, session("outer"), session("inner"):
        raise Boom("boom")

    assert logged_session_id(raised.value) == "outer"

    # An exception object raised again: the latest session it left.
    with pytest.raises(Boom), session("again"):
        raise raised.value

    assert logged_session_id(raised.value) == "again"


def test_an_exception_that_takes_no_attributes_goes_on_unnoted() -> None:
    class Frozen(Exception):
        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(name)

    with pytest.raises(Frozen) as raised, session("sess-1"):
        raise Frozen("frozen")

    assert logged_session_id(raised.value) == "-"


def test_records_held_back_get_no_id_of_the_exception_handled_when_they_are_passed_on(
    logger: logging.Logger,
) -> None:
    # "Buffer, and write it all on an error": the error record flushes the
    # buffer while its exception is being handled; records made earlier, in
    # another thread or outside any session, are not about it.
    target = SessionRecords()
    logger.addHandler(
        logging.handlers.MemoryHandler(capacity=100, flushLevel=logging.ERROR, target=target)
    )

    def another_request() -> None:
        with session("user-a"):
            logger.info("user a's line")

    thread = threading.Thread(target=another_request)
    thread.start()
    thread.join(10)
    logger.info("outside any session")
    try:
        raise_in_session_and_reraise("user-b")
    except Boom:
        logger.exception("error handling request")

    assert [(sid, message) for sid, message, _ in target.records] == [
        ("-", "user a's line"),
        ("-", "outside any session"),
        ("user-b", "error handling request"),
    ]


@pytest.mark.parametrize("passed_on_by", ["flush", "capacity", "close"])
def test_records_held_back_and_passed_on_in_a_later_request_get_the_default(
    logger: logging.Logger, passed_on_by: str
) -> None:
    # The same thread serves both requests: one after the other, as any
    # server thread does, or one greenlet after another, which gevent gives
    # the same thread id. Only the logging call that made a record knows its
    # session.
    target = SessionRecords()
    memory = logging.handlers.MemoryHandler(capacity=2, flushLevel=logging.CRITICAL, target=target)
    logger.addHandler(memory)
    with session("user-a"):
        logger.info("user a's line")
    with session("user-b"):
        if passed_on_by == "capacity":
            # Fills the buffer: both records are passed on in this call.
            logger.info("user b's line")
        elif passed_on_by == "flush":
            memory.flush()
        else:
            memory.close()

    expected = [("-", "user a's line")]
    if passed_on_by == "capacity":
        expected.append(("user-b", "user b's line"))
    assert [(sid, message) for sid, message, _ in target.records] == expected


def test_a_handler_of_ones_own_that_filters_held_records_later(logger: logging.Logger) -> None:
    class Batching(logging.Handler):
        """Holds records and runs them through its filters when it has two."""

        def __init__(self) -> None:
            super().__init__()
            self.held: list[logging.LogRecord] = []
            self.lines: list[tuple[str, str]] = []

        def handle(self, record: logging.LogRecord) -> bool:
            self.held.append(record)
            if len(self.held) == 2:
                for held in self.held:
                    super().handle(held)
            return True

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append((record.__dict__["session_id"], record.getMessage()))

    handler = Batching()
    handler.addFilter(SessionIdFilter())
    logger.addHandler(handler)
    with session("user-a"):
        logger.info("user a's line")
    with session("user-b"):
        logger.info("user b's line")

    assert handler.lines == [("-", "user a's line"), ("user-b", "user b's line")]


def test_a_handler_of_ones_own_that_runs_its_filters_itself_later(
    logger: logging.Logger,
) -> None:
    """It calls each filter's filter() from a method of its own, with no
    logging code on the stack: still a record passed on later."""

    class Releasing(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.pending: list[logging.LogRecord] = []
            self.lines: list[tuple[str, str]] = []

        def handle(self, record: logging.LogRecord) -> bool:
            self.pending.append(record)
            return True

        def release(self) -> None:
            for record in self.pending:
                if all(f.filter(record) for f in self.filters):  # type: ignore[union-attr]
                    self.lines.append((record.__dict__["session_id"], record.getMessage()))
            self.pending.clear()

    handler = Releasing()
    handler.addFilter(SessionIdFilter())
    logger.addHandler(handler)
    with session("user-a"):
        logger.info("user a's line")
    with session("user-b"):
        handler.release()

    assert handler.lines == [("-", "user a's line")]


class HandlesItself(logging.Logger):
    """Runs records through its handlers without Logger.handle, as absl's ABSLLogger does."""

    def handle(self, record: logging.LogRecord) -> None:
        if self.filter(record):
            self.callHandlers(record)


@pytest.mark.parametrize("filtered_by", ["handler", "logger"])
def test_a_logger_class_with_a_handle_of_its_own_keeps_the_id(filtered_by: str) -> None:
    log = HandlesItself("tests.integrations.handles_itself")
    target = SessionRecords()
    log.addHandler(target)
    if filtered_by == "logger":
        target.filters.clear()
        log.addFilter(SessionIdFilter())
    with session("sess-1"):
        log.info("inside")
    assert [(sid, message) for sid, message, _ in target.records] == [("sess-1", "inside")]


def test_a_patched_logger_handle_keeps_the_id(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An APM agent's documented snippet replaces Logger.handle with its own.
    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        record.msg = f"[traced] {record.msg}"
        self.callHandlers(record)

    monkeypatch.setattr(logging.Logger, "handle", handle)
    target = SessionRecords()
    logger.addHandler(target)
    with session("sess-1"):
        logger.info("inside")
    assert [(sid, message) for sid, message, _ in target.records] == [("sess-1", "[traced] inside")]


def test_a_record_replayed_through_logger_handle_later_gets_the_default(
    logger: logging.Logger,
) -> None:
    target = SessionRecords()
    logger.addHandler(target)
    with session("user-a"):
        held = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "user a's", (), None)
    with session("user-b"):
        logger.handle(held)
    assert [(sid, message) for sid, message, _ in target.records] == [("-", "user a's")]


def test_records_of_one_clock_tick_are_not_taken_for_each_other(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coarse clock (Windows before Python 3.13) gives two records the same
    # time: the one a logging call made is still told from one held back.
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000 * 10**9)  # 3.13's clock
    target = SessionRecords()
    logger.addHandler(
        logging.handlers.MemoryHandler(capacity=2, flushLevel=logging.CRITICAL, target=target)
    )
    with session("user-a"):
        logger.info("user a's line")
    with session("user-b"):
        logger.info("user b's line")
    assert [(sid, message) for sid, message, _ in target.records] == [
        ("-", "user a's line"),
        ("user-b", "user b's line"),
    ]


def raise_in_session_and_reraise(sid: str) -> None:
    with session(sid):
        raise Boom("boom")


def test_a_record_not_being_logged_takes_no_id_from_the_exception_handled() -> None:
    # Filtered by hand, not in a Logger's call: not made while handling it.
    record = logging.LogRecord("server", logging.ERROR, __file__, 0, "error", None, None)
    try:
        raise_in_session_and_reraise("sess-1")
    except Boom:
        SessionIdFilter().filter(record)
    assert record.__dict__["session_id"] == "-"


def test_the_note_works_in_a_process_that_never_imported_asyncio() -> None:
    run_python(
        "-c",
        textwrap.dedent(
            """
            import logging, sys
            from sessionctx import session
            from sessionctx.log_filters import SessionIdFilter
            assert "asyncio" not in sys.modules
            try:
                with session("sess-1"):
                    raise ValueError("boom")
            except ValueError as error:
                record = logging.LogRecord("x", 40, "f", 0, "m", None, (ValueError, error, None))
            SessionIdFilter().filter(record)
            assert record.session_id == "sess-1", record.session_id
            assert "asyncio" not in sys.modules
            """
        ),
    )
