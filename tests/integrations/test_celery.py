"""``connect`` / ``disconnect`` with a real Celery worker on the in-memory broker."""

from __future__ import annotations

import io
import itertools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import celery
import pytest
from celery import Celery, signals
from celery.app.log import TaskFormatter
from celery.contrib.testing.worker import start_worker
from celery.local import Proxy
from celery.utils.log import ColorFormatter, get_multiprocessing_logger

from sessionctx import (
    current_session,
    current_session_id,
    is_valid_session_id,
    session,
    set_session_id,
)
from sessionctx.integrations import celery as sessionctx_celery
from sessionctx.log_filters import SessionIdFilter

TIMEOUT = 10
_names = itertools.count()


def make_app() -> Celery:
    """A fresh app with its own queue (the in-memory broker is shared by the process)."""
    name = f"tests-celery-{next(_names)}"
    app = Celery(name, broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        task_default_queue=name,
        broker_transport_options={"polling_interval": 0.01},
        worker_hijack_root_logger=False,
        task_store_eager_result=False,
    )
    return app


def task(app: Celery, name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``app.task`` for this app only (not shared with every app), under ``name``."""
    decorator: Callable[[Callable[..., Any]], Any] = app.task(name=name, shared=False, **options)
    return decorator


def _keep_logging(**kwargs: Any) -> None:
    pass


@contextmanager
def running_worker(app: Celery) -> Iterator[None]:
    """A worker thread for ``app`` that leaves the process's logging setup alone."""
    # While a setup_logging receiver is connected Celery configures no logging;
    # otherwise it adds a root handler and sets the root level to ERROR, which
    # would hide warnings from every later test.
    signals.setup_logging.connect(_keep_logging, weak=False, dispatch_uid="tests.keep_logging")
    try:
        with start_worker(app, perform_ping_check=False, shutdown_timeout=30):
            yield
    finally:
        signals.setup_logging.disconnect(dispatch_uid="tests.keep_logging")


def session_seen_by_task() -> list[object]:
    """The id and attributes of the session a task runs in, as JSON returns them."""
    active = current_session()
    if active is None:
        return [None, None]
    return [active.id, None if active.attributes is None else dict(active.attributes)]


def session_header(request: Any) -> object:
    return request.get("X-Session-Id")


#: Names a session header given to apply_async may have: any accepted one, any case.
EXPLICIT_NAMES = [
    pytest.param("X-Session-Id", id="x-session-id"),
    pytest.param("x-session-id", id="lower-case"),
    pytest.param("X-SESSION-ID", id="upper-case"),
    pytest.param("X-TraceCtrl-Session", id="tracectrl"),
    pytest.param("mirascope-session-id", id="mirascope-lower-case"),
]


class Probe:
    """What the worker thread saw around each task, keyed by task id."""

    def __init__(self) -> None:
        self.before: dict[str, list[str | None]] = defaultdict(list)
        self.early: dict[str, list[str | None]] = defaultdict(list)
        self.during: dict[str, list[str | None]] = defaultdict(list)
        self.after: dict[str, list[str | None]] = defaultdict(list)
        self.headers: dict[str, list[object]] = defaultdict(list)
        self.on_failure: dict[str, str | None] = {}
        self._ran = threading.Condition()

    def record_before(self, task_id: str, **kwargs: Any) -> None:
        self.before[task_id].append(current_session_id())

    def record_early(self, task_id: str, **kwargs: Any) -> None:
        self.early[task_id].append(current_session_id())

    def record_after(self, task_id: str, **kwargs: Any) -> None:
        with self._ran:
            self.after[task_id].append(current_session_id())
            self._ran.notify_all()

    def after_runs(self, task_id: str, runs: int = 1) -> list[str | None]:
        """What ``task_postrun`` saw for ``runs`` runs of a task, waiting for them.

        A worker stores the result before it sends ``task_postrun``, so a
        caller's ``result.get()`` can return before the last run is recorded.
        """
        with self._ran:
            self._ran.wait_for(lambda: len(self.after[task_id]) >= runs, timeout=TIMEOUT)
            return list(self.after[task_id])

    def record_failure(self, task_id: str, **kwargs: Any) -> None:
        self.on_failure[task_id] = current_session_id()


class Worker:
    def __init__(self, app: Celery, probe: Probe) -> None:
        self.app = app
        self.probe = probe

        @task(app, "report", bind=True)
        def report(task: Any) -> tuple[str | None, object]:
            probe.during[task.request.id].append(current_session_id())
            return current_session_id(), session_header(task.request)

        @task(app, "fail", bind=True)
        def fail(task: Any) -> None:
            probe.during[task.request.id].append(current_session_id())
            raise ValueError("task failed")

        @task(app, "retry_once", bind=True, max_retries=1)
        def retry_once(task: Any) -> int:
            probe.during[task.request.id].append(current_session_id())
            probe.headers[task.request.id].append(session_header(task.request))
            if task.request.retries == 0:
                raise task.retry(countdown=0)
            return int(task.request.retries)

        @task(app, "spawn")
        def spawn() -> str:
            return str(report.delay().id)

        @task(app, "session_seen")
        def session_seen() -> list[object]:
            return session_seen_by_task()

        self.report = report
        self.fail = fail
        self.retry_once = retry_once
        self.spawn = spawn
        self.session_seen = session_seen


@pytest.fixture(scope="class")
def worker() -> Iterator[Worker]:
    app = make_app()
    probe = Probe()
    w = Worker(app, probe)
    # A task_prerun handler connected before sessionctx's, as an instrumentation
    # is (OpenTelemetry's starts the task's span in one): sessionctx's runs first.
    signals.task_prerun.connect(probe.record_early, weak=False, dispatch_uid="tests.early")
    signals.task_failure.connect(probe.record_failure, weak=False, dispatch_uid="tests.failure")
    sessionctx_celery.connect(app)
    # Put ahead of sessionctx's and after it, so that they see the worker
    # thread just before the task's session is set and just after it is reset.
    signals.task_prerun.connect(probe.record_before, weak=False, dispatch_uid="tests.before")
    sessionctx_celery._run_first(signals.task_prerun, "tests.before")
    signals.task_postrun.connect(probe.record_after, weak=False, dispatch_uid="tests.after")
    try:
        with running_worker(app):
            yield w
    finally:
        sessionctx_celery.disconnect(app)
        signals.task_prerun.disconnect(dispatch_uid="tests.before")
        signals.task_prerun.disconnect(dispatch_uid="tests.early")
        signals.task_failure.disconnect(dispatch_uid="tests.failure")
        signals.task_postrun.disconnect(dispatch_uid="tests.after")


class TestWorker:
    def test_the_task_runs_in_the_publishers_session(self, worker: Worker) -> None:
        with session("sess-1"):
            result = worker.report.delay()
        assert result.get(timeout=TIMEOUT, interval=0.01) == ["sess-1", "sess-1"]
        assert worker.probe.before[result.id] == [None]
        assert worker.probe.after_runs(result.id) == [None]

    def test_a_prerun_handler_connected_earlier_sees_the_tasks_session(
        self, worker: Worker
    ) -> None:
        with session("sess-early"):
            result = worker.report.delay()
        assert result.get(timeout=TIMEOUT, interval=0.01)[0] == "sess-early"
        assert worker.probe.early[result.id] == ["sess-early"]
        assert worker.probe.before[result.id] == [None]

    def test_tasks_from_different_sessions_see_their_own(self, worker: Worker) -> None:
        with session("sess-a"):
            a = worker.report.delay()
        with session("sess-b"):
            b = worker.report.delay()
        assert a.get(timeout=TIMEOUT, interval=0.01)[0] == "sess-a"
        assert b.get(timeout=TIMEOUT, interval=0.01)[0] == "sess-b"
        assert worker.probe.after_runs(a.id) == worker.probe.after_runs(b.id) == [None]

    def test_without_a_publisher_session_each_task_gets_a_new_one(self, worker: Worker) -> None:
        first, second = worker.report.delay(), worker.report.delay()
        sid1, header1 = first.get(timeout=TIMEOUT, interval=0.01)
        sid2, _ = second.get(timeout=TIMEOUT, interval=0.01)
        # Made when published, so that a redelivery of the message keeps it.
        assert header1 == sid1
        assert is_valid_session_id(sid1)
        assert is_valid_session_id(sid2)
        assert sid1 != sid2
        assert worker.probe.after_runs(first.id) == [None]

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            pytest.param("explicit", "explicit", id="valid-wins-over-publisher"),
            pytest.param("bad value", None, id="invalid-means-new-session"),
            pytest.param(None, None, id="none-means-new-session"),
            pytest.param(123, None, id="a-number-means-new-session"),
        ],
    )
    @pytest.mark.parametrize("name", EXPLICIT_NAMES)
    def test_an_explicit_message_header(
        self, worker: Worker, name: str, header: object, expected: str | None
    ) -> None:
        with session("publisher"):
            result = worker.report.apply_async(headers={name: header})
        sid, seen_header = result.get(timeout=TIMEOUT, interval=0.01)
        # Sent as it was given, and no second one added.
        assert seen_header == (header if name == "X-Session-Id" else None)
        if expected is None:
            assert is_valid_session_id(sid)
            assert sid not in (header, "publisher")
        else:
            assert sid == expected

    def test_a_failing_task_restores_the_worker_thread(self, worker: Worker) -> None:
        with session("sess-fail"):
            result = worker.fail.delay()
        assert result.get(timeout=TIMEOUT, interval=0.01, propagate=False) is not None
        assert result.failed()
        assert worker.probe.during[result.id] == ["sess-fail"]
        after = worker.probe.after_runs(result.id)  # task_failure is sent before task_postrun
        # task_failure handlers (error reporting) still see the session.
        assert worker.probe.on_failure[result.id] == "sess-fail"
        assert after == [None]

    def test_a_retried_task_keeps_its_session_and_restores_the_thread(self, worker: Worker) -> None:
        with session("sess-retry"):
            result = worker.retry_once.delay()
        assert result.get(timeout=TIMEOUT, interval=0.01) == 1
        assert worker.probe.during[result.id] == ["sess-retry", "sess-retry"]
        assert worker.probe.before[result.id] == [None, None]
        assert worker.probe.after_runs(result.id, runs=2) == [None, None]

    @pytest.mark.parametrize("name", EXPLICIT_NAMES)
    def test_a_retried_task_with_an_invalid_header_keeps_the_session_it_started(
        self, worker: Worker, name: str
    ) -> None:
        with session("publisher"):
            result = worker.retry_once.apply_async(headers={name: "bad value"})
        assert result.get(timeout=TIMEOUT, interval=0.01) == 1
        first, retried = worker.probe.during[result.id]
        assert is_valid_session_id(first)
        assert first not in ("bad value", "publisher")
        assert retried == first
        # The retry message carries the id the first attempt started, not the invalid one.
        exact = "bad value" if name == "X-Session-Id" else None
        assert worker.probe.headers[result.id] == [exact, first]
        assert worker.probe.after_runs(result.id, runs=2) == [None, None]

    def test_tasks_published_by_a_task_carry_its_session(self, worker: Worker) -> None:
        with session("sess-parent"):
            parent = worker.spawn.delay()
        child_id = parent.get(timeout=TIMEOUT, interval=0.01)
        child = worker.app.AsyncResult(child_id)
        assert child.get(timeout=TIMEOUT, interval=0.01) == ["sess-parent", "sess-parent"]

    def test_a_workflow_sent_in_a_session_runs_in_it(self, worker: Worker) -> None:
        steps = worker.report.si(), worker.report.si()
        with session("sess-flow"):
            chained = celery.chain(*steps).apply_async()
            grouped = celery.group(*steps).apply_async()
            chord = celery.chord(steps, worker.session_seen.si()).apply_async()
        assert chained.get(timeout=TIMEOUT, interval=0.01)[0] == "sess-flow"
        assert chained.parent is not None
        assert chained.parent.get(timeout=TIMEOUT, interval=0.01)[0] == "sess-flow"
        assert [sid for sid, _ in grouped.get(timeout=TIMEOUT, interval=0.01)] == ["sess-flow"] * 2
        assert chord.get(timeout=TIMEOUT, interval=0.01) == ["sess-flow", None]

    def test_only_the_id_travels(self, worker: Worker) -> None:
        with session("sess-attrs", attributes={"user": "u1"}):
            result = worker.session_seen.delay()
        assert result.get(timeout=TIMEOUT, interval=0.01) == ["sess-attrs", None]


def test_an_app_that_is_not_connected_is_unaffected() -> None:
    connected, plain = make_app(), make_app()

    @task(plain, "report", bind=True)
    def report(task: Any) -> tuple[str | None, object]:
        return current_session_id(), session_header(task.request)

    sessionctx_celery.connect(connected)
    try:
        with running_worker(plain):
            with session("sess-1"):
                result = report.delay()
            # The publish signal does not say which app publishes, so the
            # header travels; the worker of an app that is not connected ignores it.
            assert result.get(timeout=TIMEOUT, interval=0.01) == [None, "sess-1"]
    finally:
        sessionctx_celery.disconnect(connected)


# --------------------------------------------------------------------------- #
# Eager runs (task.apply, task_always_eager): the task runs in the caller's thread
# --------------------------------------------------------------------------- #


@pytest.fixture
def eager_app() -> Iterator[Celery]:
    app = make_app()
    app.conf.task_always_eager = True
    sessionctx_celery.connect(app)
    try:
        yield app
    finally:
        sessionctx_celery.disconnect(app)


def test_eager_task_keeps_the_callers_session_and_restores_it(eager_app: Celery) -> None:
    @task(eager_app, "leaky")
    def leaky() -> str | None:
        seen = current_session_id()
        set_session_id("set-by-task")
        return seen

    with session("caller"):
        assert leaky.delay().get() == "caller"
        assert current_session_id() == "caller"


def test_eager_task_sees_what_a_worker_sees_the_callers_id_only(eager_app: Celery) -> None:
    """Tests run with task_always_eager must not see attributes a worker never gets."""

    @task(eager_app, "session_seen")
    def session_seen() -> list[object]:
        return session_seen_by_task()

    with session("caller", attributes={"user": "u1"}) as caller:
        assert session_seen.delay().get() == ["caller", None]
        assert session_seen.apply().get() == ["caller", None]
        assert current_session() is caller


def test_an_eager_workflow_runs_in_the_callers_session(eager_app: Celery) -> None:
    @task(eager_app, "report")
    def report() -> str | None:
        return current_session_id()

    with session("caller"):
        assert celery.chain(report.si(), report.si()).apply_async().get() == "caller"
        assert celery.group(report.si(), report.si()).apply_async().get() == ["caller"] * 2
        assert current_session_id() == "caller"


@pytest.mark.parametrize("name", EXPLICIT_NAMES)
def test_eager_task_with_a_header_runs_in_that_session(eager_app: Celery, name: str) -> None:
    @task(eager_app, "report")
    def report() -> str | None:
        return current_session_id()

    with session("caller"):
        assert report.apply(headers={name: "from-header"}).get() == "from-header"
        assert current_session_id() == "caller"


@pytest.mark.parametrize("value", ["bad value", None, 123])
@pytest.mark.parametrize("name", ["X-Session-Id", "x-session-id"])
def test_eager_task_with_an_invalid_header_gets_a_new_session(
    eager_app: Celery, name: str, value: object
) -> None:
    """As on a worker: the caller's session is for a run with no header."""

    @task(eager_app, "report")
    def report() -> str | None:
        return current_session_id()

    with session("caller"):
        sid = report.apply(headers={name: value}).get()
        assert current_session_id() == "caller"
    assert is_valid_session_id(sid)
    assert sid != "caller"


def test_eager_task_header_beside_a_header_of_another_kind_is_read(eager_app: Celery) -> None:
    """Only the session headers are read: a name that is no str elsewhere is no concern."""

    @task(eager_app, "report")
    def report() -> str | None:
        return current_session_id()

    with session("caller"):
        assert report.apply(headers={"x-session-id": "good-id", 1: "other"}).get() == "good-id"


def test_eager_task_without_any_session_gets_a_new_one(eager_app: Celery) -> None:
    @task(eager_app, "report")
    def report() -> str | None:
        return current_session_id()

    assert is_valid_session_id(report.apply().get())
    assert current_session_id() is None


def caller_session(sid: str | None) -> AbstractContextManager[object]:
    """The caller's session ``sid``, or no session at all for ``None``."""
    return session(sid) if sid is not None else nullcontext()


CALLER_SESSIONS = [
    pytest.param(None, id="no-caller-session"),
    pytest.param("caller", id="caller-session"),
]


@pytest.mark.parametrize("caller", CALLER_SESSIONS)
def test_eager_task_replaced_by_another_restores_the_callers_session(
    eager_app: Celery, caller: str | None
) -> None:
    @task(eager_app, "target")
    def target() -> str | None:
        return current_session_id()

    @task(eager_app, "replaced", bind=True)
    def replaced(task: Any) -> Any:
        set_session_id("set-by-task")
        # Eagerly, Celery runs the replacement nested, in this thread, under this task id.
        return task.replace(target.s())

    with caller_session(caller):
        assert replaced.apply().get() == "set-by-task"
        assert current_session_id() == caller


@pytest.mark.parametrize(
    ("caller", "headers"),
    [
        pytest.param(None, None, id="no-caller-session"),
        pytest.param(None, {"X-Session-Id": "bad value"}, id="no-caller-session-invalid-header"),
        pytest.param("caller", None, id="caller-session"),
    ],
)
def test_eager_retried_task_runs_every_attempt_in_one_session(
    eager_app: Celery, caller: str | None, headers: dict[str, str] | None
) -> None:
    seen: list[str | None] = []

    @task(eager_app, "retry_twice", bind=True, max_retries=2)
    def retry_twice(task: Any) -> int:
        seen.append(current_session_id())
        if task.request.retries < 2:
            raise task.retry(countdown=0)
        return int(task.request.retries)

    with caller_session(caller):
        assert retry_twice.apply(headers=headers).get() == 2
        assert current_session_id() == caller
    assert len(seen) == 3
    assert seen == [seen[0]] * 3
    assert is_valid_session_id(seen[0])
    if caller is not None:
        assert seen[0] == caller


def test_connecting_while_a_task_runs_leaves_that_task_alone() -> None:
    app = make_app()

    @task(app, "connects")
    def connects() -> str | None:
        sessionctx_celery.connect(app)
        return current_session_id()

    try:
        assert connects.apply().get() is None
        assert is_valid_session_id(connects.apply().get())
    finally:
        sessionctx_celery.disconnect(app)


# --------------------------------------------------------------------------- #
# connect / disconnect
# --------------------------------------------------------------------------- #

SIGNALS = (
    signals.before_task_publish,
    signals.task_prerun,
    signals.task_postrun,
    signals.after_setup_logger,
    signals.after_setup_task_logger,
)


def receiver_counts() -> list[int]:
    return [len(signal.receivers) for signal in SIGNALS]


def test_connect_twice_adds_the_handlers_once_and_disconnect_removes_them() -> None:
    app, other = make_app(), make_app()
    before = receiver_counts()
    sessionctx_celery.connect(app)
    sessionctx_celery.connect(app)
    assert receiver_counts() == [n + 1 for n in before]
    sessionctx_celery.connect(other)
    assert receiver_counts() == [n + 2 for n in before]
    sessionctx_celery.disconnect(app)
    assert receiver_counts() == [n + 1 for n in before]
    sessionctx_celery.disconnect(app)
    sessionctx_celery.disconnect(other)
    assert receiver_counts() == before


@pytest.mark.parametrize("signal", [signals.after_setup_logger, signals.after_setup_task_logger])
def test_the_handlers_a_worker_sets_up_get_the_filter_once(signal: Any) -> None:
    """What lets %(session_id)s go in worker_log_format (a real worker runs it in
    test_celery_worker.py). Celery's handlers are the ones with its formatter."""
    app = make_app()
    logger = logging.getLogger(f"tests.celery.{signal.name}")

    def celerys(formatter: type[ColorFormatter] = ColorFormatter) -> logging.Handler:
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(formatter("%(session_id)s %(message)s", use_color=False))
        return handler

    first, second, tasks = celerys(), celerys(), celerys(TaskFormatter)
    kept = SessionIdFilter(default="?")
    second.addFilter(kept)
    foreign = logging.StreamHandler(io.StringIO())  # the application's own
    foreign.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [first, second, tasks, foreign]
    mp_logger = get_multiprocessing_logger()
    mp_handler = celerys()
    mp_logger.addHandler(mp_handler)
    try:
        signal.send(sender=None, logger=logger, loglevel=logging.INFO)
        assert first.filters == mp_handler.filters == []  # not connected yet
        sessionctx_celery.connect(app)
        for _ in range(2):
            signal.send(sender=None, logger=logger, loglevel=logging.INFO)
    finally:
        sessionctx_celery.disconnect(app)
        mp_logger.removeHandler(mp_handler)
        logger.handlers = []
    for handler in (first, tasks, mp_handler):
        assert len(handler.filters) == 1
        assert isinstance(handler.filters[0], SessionIdFilter)
    assert second.filters == [kept]  # a filter already there is kept
    assert foreign.filters == []


def test_a_disconnected_app_runs_tasks_without_sessions() -> None:
    app = make_app()

    @task(app, "report")
    def report() -> str | None:
        return current_session_id()

    sessionctx_celery.connect(app)
    sessionctx_celery.connect(app)
    sessionctx_celery.disconnect(app)
    assert report.apply(headers={"X-Session-Id": "from-header"}).get() is None


def test_a_message_published_outside_any_session_carries_an_id_of_its_own() -> None:
    # What a redelivery (acks_late, a worker lost mid-task) sends again.
    app = make_app()
    published: list[dict[str, Any]] = []

    def record(headers: dict[str, Any], **kwargs: Any) -> None:
        published.append(dict(headers))

    @task(app, "report")
    def report() -> str | None:
        return current_session_id()

    sessionctx_celery.connect(app)
    signals.before_task_publish.connect(record, weak=False, dispatch_uid="tests.record")
    try:
        report.apply_async()
        report.apply_async()
        with session("publisher"):
            report.apply_async()
        report.apply_async(headers={"X-Session-Id": "explicit"})
    finally:
        signals.before_task_publish.disconnect(dispatch_uid="tests.record")
        sessionctx_celery.disconnect(app)
    ids = [headers["X-Session-Id"] for headers in published]
    assert is_valid_session_id(ids[0])
    assert is_valid_session_id(ids[1])
    assert ids[0] != ids[1]
    assert ids[2:] == ["publisher", "explicit"]


def test_connect_takes_celery_current_app() -> None:
    # celery.current_app and friends are proxies: the app's tasks see the app.
    app = make_app()
    proxy = Proxy(lambda: app)
    assert isinstance(proxy, Celery)

    @task(app, "report")
    def report() -> str | None:
        return current_session_id()

    before = receiver_counts()
    sessionctx_celery.connect(proxy)
    try:
        sessionctx_celery.connect(app)  # the same app: nothing more
        assert receiver_counts() == [n + 1 for n in before]
        assert report.apply(headers={"X-Session-Id": "from-header"}).get() == "from-header"
    finally:
        sessionctx_celery.disconnect(proxy)
    assert receiver_counts() == before
    assert report.apply(headers={"X-Session-Id": "from-header"}).get() is None


def test_connect_needs_a_celery_app() -> None:
    with pytest.raises(TypeError, match=r"expected a celery\.Celery app"):
        sessionctx_celery.connect("proj")
