"""``sessionctx.wsgi.SessionIdMiddleware`` around Flask's and Django's WSGI applications.

Django settings can be configured once per process and another test module
may get there first, so this module configures them only when nobody has,
and runs every request under ``override_settings`` with its own
``ROOT_URLCONF`` (``tests.django_wsgi_urls``) and ``MIDDLEWARE``.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.util import FileWrapper

import pytest
from a2wsgi import WSGIMiddleware as A2WSGIMiddleware
from django.core.signals import request_finished
from django.core.wsgi import get_wsgi_application
from django.test import override_settings
from flask import Flask, Response, g, request, stream_with_context
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug.test import Client, EnvironBuilder

from sessionctx import current_session_id
from sessionctx.asgi import SessionIdMiddleware as AsgiSessionIdMiddleware
from sessionctx.log_filters import SessionIdFilter
from sessionctx.wsgi import SessionIdMiddleware
from tests import django_wsgi_urls
from tests.support import ASGIApp, Receive, Scope, Send, asgi_client, configure_django, is_generated

with warnings.catch_warnings():
    # Deprecated in favour of a2wsgi, and still what many apps mount with.
    warnings.simplefilter("ignore")
    from starlette.middleware.wsgi import WSGIMiddleware as StarletteWSGIMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

SCOPE_KEY = "sessionctx.session_id"


class RecordingHandler(logging.Handler):
    """Keeps ``"%(session_id)s %(name)s %(message)s"`` of every record (no traceback);
    ``SessionIdFilter`` puts the id on each record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.addFilter(SessionIdFilter())
        self.setFormatter(logging.Formatter("%(session_id)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        record.exc_info = record.exc_text = None
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[RecordingHandler]:
    """A handler on the loggers the apps below use, removed again afterwards."""
    handler = RecordingHandler()
    loggers = [logging.getLogger(name) for name in ("tests.flask_wsgi", "tests.django_wsgi")]
    loggers += [logging.getLogger("django.request")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


# --------------------------------------------------------------------------- #
# Flask
# --------------------------------------------------------------------------- #


@pytest.fixture
def flask_app() -> Flask:
    """A Flask app with the middleware around ``app.wsgi_app``, as the README shows."""
    app = Flask("tests.flask_wsgi")
    app.wsgi_app = SessionIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def test_flask_view_reads_the_session(flask_app: Flask) -> None:
    @flask_app.get("/")
    def view() -> dict[str, Any]:
        return {"sid": current_session_id(), "environ": request.environ[SCOPE_KEY]}

    response = flask_app.test_client().get("/", headers={"X-Session-Id": "flask-1"}, buffered=True)

    assert response.json == {"sid": "flask-1", "environ": "flask-1"}
    assert response.headers.getlist("X-Session-Id") == ["flask-1"]


def test_flask_generates_an_id_and_echoes_it(flask_app: Flask) -> None:
    @flask_app.get("/")
    def view() -> str:
        return current_session_id() or "-"

    response = flask_app.test_client().get("/", buffered=True)

    assert response.text == response.headers["X-Session-Id"]
    assert len(response.text) == 36


def test_flask_request_hooks_see_the_session(flask_app: Flask) -> None:
    seen: list[tuple[str, str | None]] = []

    @flask_app.before_request
    def before() -> None:
        g.at_start = current_session_id()
        seen.append(("before_request", current_session_id()))

    @flask_app.after_request
    def after(response: Response) -> Response:
        seen.append(("after_request", current_session_id()))
        return response

    @flask_app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        seen.append(("teardown_request", current_session_id()))

    @flask_app.get("/")
    def view() -> str:
        seen.append(("view", g.at_start))
        return "ok"

    flask_app.test_client().get("/", headers={"X-Session-Id": "hooks"}, buffered=True)

    assert seen == [
        ("before_request", "hooks"),
        ("view", "hooks"),
        ("after_request", "hooks"),
        ("teardown_request", "hooks"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bridge", "options"),
    [
        pytest.param(A2WSGIMiddleware, {}, id="a2wsgi"),
        # Its environ keeps nothing of the scope: the outer middleware's id
        # reaches the inner one as the request header.
        pytest.param(StarletteWSGIMiddleware, {"update_request_header": True}, id="starlette-wsgi"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="generated"),
        pytest.param({"X-Session-Id": "bad value"}, id="invalid"),
        pytest.param({"X-Session-Id": "mounted-1"}, id="continued"),
    ],
)
async def test_flask_mounted_in_an_asgi_app_shares_the_requests_session(
    flask_app: Flask, bridge: Any, options: dict[str, Any], headers: dict[str, str]
) -> None:
    # Both apps wrapped, as each README placement says: one request, one id.
    @flask_app.get("/")
    def view() -> dict[str, Any]:
        return {"sid": current_session_id(), "environ": request.environ[SCOPE_KEY]}

    outer_saw: list[str | None] = []
    mounted = Starlette(routes=[Mount("/legacy", app=bridge(flask_app))])

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        outer_saw.append(current_session_id())
        await mounted(scope, receive, send)

    app: ASGIApp = AsgiSessionIdMiddleware(recording, **options)
    async with asgi_client(app) as http:
        response = await http.get("/legacy/", headers=headers)

    sid = outer_saw[0]
    assert response.json() == {"sid": sid, "environ": sid}
    assert response.headers.get_list("x-session-id") == [sid]
    assert sid == "mounted-1" if headers.get("X-Session-Id") == "mounted-1" else is_generated(sid)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"trust_incoming": False}, id="trust-incoming-false"),
        pytest.param({"validator": lambda sid: sid.startswith("ok-")}, id="validator"),
    ],
)
async def test_flask_behind_a2wsgi_keeps_the_outer_middlewares_decision(
    flask_app: Flask, options: dict[str, Any]
) -> None:
    # The outer middleware refuses the client's valid id; the mounted app's own
    # middleware, with default options, must not continue it.
    @flask_app.get("/")
    def view() -> dict[str, Any]:
        return {"sid": current_session_id()}

    mounted = Starlette(routes=[Mount("/legacy", app=A2WSGIMiddleware(flask_app))])  # type: ignore[arg-type]
    async with asgi_client(AsgiSessionIdMiddleware(mounted, **options)) as http:
        response = await http.get("/legacy/", headers={"X-Session-Id": "client-chosen"})

    sid = response.headers["x-session-id"]
    assert is_generated(sid)
    assert response.json() == {"sid": sid}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="generated"), pytest.param({"X-Session-Id": "bad value"}, id="invalid")],
)
async def test_flask_behind_a2wsgi_alone_decides_its_own_session(
    flask_app: Flask, headers: dict[str, str]
) -> None:
    # Served by an ASGI server through a2wsgi, with no ASGI middleware around.
    @flask_app.get("/")
    def view() -> dict[str, Any]:
        return {"sid": current_session_id(), "environ": request.environ[SCOPE_KEY]}

    bridge: Any = A2WSGIMiddleware  # typed for a2wsgi's own scope and environ types
    async with asgi_client(bridge(flask_app)) as http:
        response = await http.get("/", headers=headers)

    sid = response.headers["x-session-id"]
    assert is_generated(sid)
    assert response.json() == {"sid": sid, "environ": sid}


def test_flask_streaming_bodies_see_the_session_on_every_chunk(flask_app: Flask) -> None:
    @flask_app.get("/with-context")
    def with_context() -> Response:
        def chunks() -> Iterator[str]:
            for _ in range(3):
                yield f"{request.args['n']}:{current_session_id()}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @flask_app.get("/plain")
    def plain() -> Response:
        def chunks() -> Iterator[str]:
            for _ in range(3):
                yield f"{current_session_id()}\n"

        return Response(chunks(), mimetype="text/plain")

    client = flask_app.test_client()
    streamed = client.get("/with-context?n=7", headers={"X-Session-Id": "s-1"}, buffered=False)
    chunks = list(streamed.response)
    streamed.close()
    plain_response = client.get("/plain", headers={"X-Session-Id": "s-2"}, buffered=True)

    assert chunks == [b"7:s-1\n"] * 3
    assert streamed.headers["X-Session-Id"] == "s-1"
    assert plain_response.text == "s-2\n" * 3


@pytest.mark.parametrize("options", [{}, {"handle_errors": True}], ids=["default", "handle-errors"])
def test_flask_test_client_keeping_the_context_reads_a_stream_buffered(
    options: dict[str, Any],
) -> None:
    # ``with client:`` pushes the request's contexts again in the test's own
    # context once the app returns; a stream_with_context body, stepped in the
    # request's context, must be read before that: buffered=True.
    app = Flask("tests.flask_wsgi")
    app.wsgi_app = SessionIdMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for _ in range(2):
                yield f"{request.path} {current_session_id()}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    with app.test_client() as client:
        response = client.get("/stream", headers={"X-Session-Id": "kept-1"}, buffered=True)
        assert response.text == "/stream kept-1\n" * 2
        assert request.path == "/stream"  # the context the client kept
        assert current_session_id() is None  # the test's own context is left as it was
    assert response.headers.getlist("X-Session-Id") == ["kept-1"]


@pytest.mark.parametrize("with_handler", [True, False], ids=["errorhandler-500", "flask-default"])
def test_flask_500_carries_the_header_and_its_error_log_the_id(
    flask_app: Flask, log_lines: RecordingHandler, with_handler: bool
) -> None:
    if with_handler:

        @flask_app.errorhandler(500)
        def internal_error(error: Exception) -> tuple[str, int]:
            return f"failed in {current_session_id()}", 500

    @flask_app.get("/")
    def view() -> str:
        raise RuntimeError("view failed")

    response = flask_app.test_client().get("/", headers={"X-Session-Id": "err-1"}, buffered=True)

    assert response.status_code == 500
    assert response.headers.getlist("X-Session-Id") == ["err-1"]
    if with_handler:
        assert response.text == "failed in err-1"
    assert "err-1 tests.flask_wsgi Exception on / [GET]" in log_lines.lines


def test_flask_logging_with_the_session_filter(
    flask_app: Flask, log_lines: RecordingHandler
) -> None:
    logger = logging.getLogger("tests.flask_wsgi")

    @flask_app.get("/")
    def view() -> str:
        logger.info("in the view")
        return "ok"

    flask_app.test_client().get("/", headers={"X-Session-Id": "log-1"}, buffered=True)
    logger.info("outside any request")

    assert log_lines.lines == [
        "log-1 tests.flask_wsgi in the view",
        "- tests.flask_wsgi outside any request",
    ]


# --------------------------------------------------------------------------- #
# Django
# --------------------------------------------------------------------------- #

DJANGO_SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "ROOT_URLCONF": "tests.django_wsgi_urls",
    "ALLOWED_HOSTS": ["localhost", "testserver"],
    "MIDDLEWARE": ["tests.django_wsgi_urls.SessionLoggingMiddleware"],
}


@pytest.fixture
def django_app() -> Iterator[WSGIApplication]:
    """``SessionIdMiddleware(get_wsgi_application())``, built and run under these settings."""
    configure_django(DJANGO_SETTINGS)
    with override_settings(**DJANGO_SETTINGS):
        yield SessionIdMiddleware(get_wsgi_application())


@pytest.fixture
def finished_in() -> Iterator[list[str | None]]:
    """The session seen by each ``request_finished`` signal (sent by ``response.close()``)."""
    seen: list[str | None] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(current_session_id())

    request_finished.connect(receiver)
    yield seen
    request_finished.disconnect(receiver)


@pytest.mark.parametrize("url", ["/function/", "/class/"])
def test_django_views_read_the_session(
    django_app: WSGIApplication, finished_in: list[str | None], url: str
) -> None:
    response = Client(django_app).get(url, headers={"X-Session-Id": "dj-1"}, buffered=True)

    assert response.status_code == 200
    assert json.loads(response.text) == {"sid": "dj-1", "environ": "dj-1"}
    assert response.headers.getlist("X-Session-Id") == ["dj-1"]
    assert finished_in == ["dj-1"]


def test_django_middleware_entry_logs_with_the_session(
    django_app: WSGIApplication, log_lines: RecordingHandler
) -> None:
    response = Client(django_app).get("/function/", headers={"X-Session-Id": "dj-2"}, buffered=True)

    assert response.headers["X-Middleware-Saw"] == "dj-2"
    assert log_lines.lines == [
        "dj-2 tests.django_wsgi request /function/",
        "dj-2 tests.django_wsgi function view",
    ]


def test_django_streaming_response_sees_the_session_after_the_middleware_returned(
    django_app: WSGIApplication, finished_in: list[str | None]
) -> None:
    response = Client(django_app).get("/stream/", headers={"X-Session-Id": "dj-3"}, buffered=True)

    assert response.text == "dj-3\n" * django_wsgi_urls.CHUNKS
    assert response.headers["X-Session-Id"] == "dj-3"
    assert finished_in == ["dj-3"]


def test_django_file_response_keeps_the_servers_file_wrapper(
    django_app: WSGIApplication, finished_in: list[str | None]
) -> None:
    environ = EnvironBuilder("/file/", headers=[("X-Session-Id", "dj-4")]).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return None

    body = django_app(environ, start_response)
    content = b"".join(body)
    body.close()  # type: ignore[attr-defined]

    # The server can still see its own wrapper (and use sendfile()), and
    # Django's response.close() ran in the request's context.
    assert type(body) is FileWrapper
    assert content == django_wsgi_urls.FILE_CONTENT
    assert ("X-Session-Id", "dj-4") in started[0][1]
    assert finished_in == ["dj-4"]


def test_django_context_locals_are_made_per_request_and_connections_per_thread(
    django_app: WSGIApplication,
) -> None:
    """What the README says of Django's state in a fresh ``Context`` per request.

    Objects Django keeps in context-locals (``asgiref.local.Local``), the cache
    backends among them, are made anew for each request, as under Django's
    ASGI handler; database connections are thread-local and stay the thread's.
    """
    django_wsgi_urls.RESOURCES.clear()

    def serve_two() -> None:
        # A new thread starts with an empty context, as a server's worker does.
        client = Client(django_app)
        for _ in range(2):
            assert client.get("/resources/").status_code == 200

    worker = threading.Thread(target=serve_two)
    worker.start()
    worker.join(timeout=30)

    (cache_1, connection_1), (cache_2, connection_2) = django_wsgi_urls.RESOURCES
    assert cache_1 is not cache_2
    assert connection_1 is connection_2


def test_django_views_own_header_wins(django_app: WSGIApplication) -> None:
    response = Client(django_app).get(
        "/own-header/", headers={"X-Session-Id": "dj-5"}, buffered=True
    )

    assert response.headers.getlist("X-Session-Id") == ["from-view"]


def test_django_500_carries_the_header_and_its_error_log_the_id(
    django_app: WSGIApplication, log_lines: RecordingHandler
) -> None:
    response = Client(django_app).get("/error/", headers={"X-Session-Id": "dj-6"}, buffered=True)

    assert response.status_code == 500
    assert response.headers.getlist("X-Session-Id") == ["dj-6"]
    assert "dj-6 django.request Internal Server Error: /error/" in log_lines.lines
