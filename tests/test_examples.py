"""Smoke tests of everything under ``examples/``, run the way their docstrings say.

In-process where the app is a plain object (FastAPI, Starlette, Flask); in a
subprocess where the example holds process-wide state (Django settings, Celery
signals) or is a program (``make demo``), with real servers on 127.0.0.1.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionctx import SESSION_HEADER_NAME, is_valid_session_id
from tests.support import HOST, REPO_ROOT, asgi_client, free_port, server_process

HEADER = SESSION_HEADER_NAME


def run_example(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python <args>`` from the repository root, as the examples' docstrings run them."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        return client.get(url, headers=headers)


def assert_session(response: httpx.Response, sent: str | None) -> None:
    """The response continues ``sent``, or carries a fresh id when nothing was sent."""
    assert response.status_code == 200, response.text
    sid = response.headers[HEADER]
    if sent is None:
        assert is_valid_session_id(sid)
    else:
        assert sid == sent
    assert response.json() == {"session_id": sid}


# --------------------------------------------------------------------------- #
# ASGI and WSGI apps, in process
# --------------------------------------------------------------------------- #


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "sent"),
    [
        pytest.param("/whoami", None, id="async-endpoint-new-session"),
        pytest.param("/whoami", "user-session-abc123", id="async-endpoint-continues"),
        pytest.param("/whoami-sync", "user-session-abc123", id="sync-endpoint-continues"),
    ],
)
async def test_fastapi_example(path: str, sent: str | None) -> None:
    from examples.fastapi_app import app

    headers = {HEADER: sent} if sent else {}
    async with asgi_client(app) as client:
        assert_session(await client.get(path, headers=headers), sent)


@pytest.mark.anyio
async def test_starlette_example_answers_with_the_session() -> None:
    from examples.starlette_app import app

    async with asgi_client(app) as client:
        assert_session(await client.get("/whoami", headers={HEADER: "abc"}), "abc")


@pytest.mark.anyio
async def test_starlette_example_keeps_the_header_on_a_500() -> None:
    from examples.starlette_app import app

    async with asgi_client(app) as client:
        response = await client.get("/boom", headers={HEADER: "abc"})
    assert response.status_code == 500
    assert response.headers[HEADER] == "abc"


def test_flask_example_answers_and_logs_with_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from examples.flask_app import app

    with caplog.at_level(logging.INFO, logger="examples.flask_app"):
        response = app.test_client().get("/whoami", headers={HEADER: "abc"})
    assert response.status_code == 200
    assert response.headers[HEADER] == "abc"
    assert response.get_json() == {"session_id": "abc"}
    # The example's own handler, with SessionIdFilter, saw the record first.
    assert [getattr(r, "session_id", None) for r in caplog.records] == ["abc"]


# --------------------------------------------------------------------------- #
# Django over WSGI and ASGI, Celery, the demo: subprocesses
# --------------------------------------------------------------------------- #

DJANGO_SERVERS = [
    pytest.param(
        ["-m", "examples.django_project", "runserver", "{addr}", "--noreload"],
        id="wsgi-runserver",
    ),
    pytest.param(
        [
            "-m",
            "uvicorn",
            "examples.django_project.asgi:application",
            "--host",
            HOST,
            "--port",
            "{port}",
        ],
        id="asgi-uvicorn",
    ),
]


@pytest.mark.server
@pytest.mark.parametrize("args", DJANGO_SERVERS)
@pytest.mark.parametrize(
    ("path", "sent"),
    [
        pytest.param("/whoami", "user-session-abc123", id="sync-view"),
        pytest.param("/whoami-async", None, id="async-view"),
    ],
)
def test_django_example(args: list[str], path: str, sent: str | None, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, *(a.format(addr=f"{HOST}:{port}", port=port) for a in args)]
    log = tmp_path / "server.log"
    with server_process(command, port, log):
        response = get(f"http://{HOST}:{port}{path}", headers={HEADER: sent} if sent else None)
        assert_session(response, sent)
    sid = response.headers[HEADER]
    assert f"session={sid} whoami" in log.read_text()


def test_celery_example_runs_each_task_in_the_senders_session() -> None:
    done = run_example("-m", "examples.celery_app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sent inside session 'celery-example': the task ran in session 'celery-example'" in (
        done.stdout
    )


@pytest.mark.server
def test_demo_tells_the_whole_story() -> None:
    done = run_example("-m", "examples.two_agents")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    from examples.two_agents.story import TITLES

    for number, title in enumerate(TITLES, 1):
        assert f"{number}. {title}" in out
    assert f"All {len(TITLES)} steps hold" in out
    # Step 1 as printed: A's header, both handlers, B's log line and both spans agree.
    step_1 = out.split("\n2. ")[0]
    sid = re.search(rf"response +200  {HEADER}: (\S+)", step_1)
    assert sid is not None
    trace = re.search(r"A handler +session=\S+ +trace=(\w+)", step_1)
    assert trace is not None
    assert f"A handler  session={sid[1]}  trace={trace[1]}" in step_1
    assert f"B handler  session={sid[1]}  trace={trace[1]}" in step_1
    assert f"B reply    {HEADER}: {sid[1]}" in step_1
    assert f"B /whoami  session={sid[1]} " in step_1
    assert f"agent-b INFO session={sid[1]} " in step_1
    spans = re.findall(rf"(agent-[ab]) +GET /\w+ +{trace[1]} +(\S+)", out)
    assert sorted(spans) == [("agent-a", sid[1]), ("agent-b", sid[1])]


@pytest.mark.server
def test_demo_names_the_step_that_fails() -> None:
    """Served without the middleware, agent A breaks step 1, and the story says so."""
    from examples.two_agents import agent_a, agent_b
    from examples.two_agents.servers import serve_asgi, serve_wsgi
    from examples.two_agents.story import Story, StoryFailure
    from examples.two_agents.telemetry import recording

    with (
        recording() as telemetry,
        serve_wsgi(agent_b.create_app(telemetry.tracer("agent-b"))) as b_url,
        agent_a.b_client(b_url) as b,
        serve_asgi(agent_a.create_api(b, telemetry.tracer("agent-a"))) as a_url,
        httpx.Client(base_url=a_url, timeout=10.0, trust_env=False) as client,
        pytest.raises(StoryFailure, match=rf"^step 1 \(.*\): no valid {HEADER} header") as failure,
    ):
        Story(telemetry).play(client)
    assert failure.value.step == 1


@pytest.mark.server
@pytest.mark.parametrize(
    ("left_out", "message"),
    [
        pytest.param(
            "SessionTransport", r"B saw '\S+' on a call without headers of A's own", id="transport"
        ),
        pytest.param(
            "B's SessionIdMiddleware", rf"B's response carried {HEADER}: None", id="b-middleware"
        ),
    ],
)
def test_the_demo_checks_each_part_it_shows(left_out: str, message: str) -> None:
    """A's trace headers carry the session as well, and B's propagated_context
    sets it: the story still notices either part missing."""
    from examples.two_agents import agent_a, agent_b
    from examples.two_agents.servers import serve_asgi, serve_wsgi
    from examples.two_agents.story import Story, StoryFailure
    from examples.two_agents.telemetry import recording

    with recording() as telemetry:
        b_tracer = telemetry.tracer("agent-b")
        b_app: Any = (
            agent_b.create_flask_app(b_tracer)
            if left_out == "B's SessionIdMiddleware"
            else agent_b.create_app(b_tracer)
        )
        with serve_wsgi(b_app) as b_url:
            b = (
                httpx.Client(base_url=b_url, timeout=5.0, trust_env=False)
                if left_out == "SessionTransport"
                else agent_a.b_client(b_url)
            )
            with (
                b,
                serve_asgi(agent_a.create_app(b, telemetry.tracer("agent-a"))) as a_url,
                httpx.Client(base_url=a_url, timeout=10.0, trust_env=False) as client,
                pytest.raises(StoryFailure, match=rf"^step 1 \(.*\): {message}") as failure,
            ):
                Story(telemetry).play(client)
    assert failure.value.step == 1
