"""The scripted story of ``make demo``: five steps, each printed and then checked.

:func:`main` starts agent B (Flask on werkzeug) and agent A (FastAPI on uvicorn) on
127.0.0.1, plays :class:`Story` against A with httpx, prints every span the two
services recorded, and stops both servers. It returns 0 when every step held, and 1
with a message naming the failed step otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_trace_id

from examples.two_agents import agent_a, agent_b
from examples.two_agents.servers import quiet_expected_errors, serve_asgi, serve_wsgi
from examples.two_agents.telemetry import LogLines, Telemetry, recording
from sessionctx import SESSION_HEADER_NAME, is_valid_session_id

__all__ = ["TITLES", "Story", "StoryFailure", "main"]

HEADER = SESSION_HEADER_NAME
TIMEOUT = 5.0
#: How long B works for each of the two concurrent users: long enough to overlap.
CONCURRENT_PAUSE = 0.3

TITLES = (
    f"A request without {HEADER}: A starts a session and calls B",
    "The same client again, sending that id: the session continues",
    "Two users at once, through A's one shared client to B",
    'Invalid inbound ids: a fresh id instead, or 400 under /strict (on_invalid="reject")',
    "A handler that raises: the 500 still carries the session",
)


class StoryFailure(Exception):
    """A step of the story did not hold."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(f"step {step} ({TITLES[step - 1]}): {message}")
        self.step = step


def row(label: str, text: str) -> None:
    print(f"   {label:<11}{text}")


def short(value: str, width: int = 12) -> str:
    """``value`` cut to ``width`` characters for display, with its length when cut."""
    return repr(value) if len(value) <= width else f"{value[:width]!r}... ({len(value)} chars)"


class Story:
    """The five steps, played against agent A through an httpx client for A's base URL.

    ``telemetry`` is what the two agents record to; each step reads and clears it.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.step = 0
        self.first_id = ""

    def play(self, client: httpx.Client) -> None:
        steps: tuple[Callable[[httpx.Client], None], ...] = (
            self.new_visitor,
            self.returning_visitor,
            self.concurrent_users,
            self.invalid_ids,
            self.failing_handler,
        )
        for number, step in enumerate(steps, 1):
            self.step = number
            print(f"\n{self.step}. {TITLES[self.step - 1]}")
            try:
                step(client)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise StoryFailure(self.step, f"{type(exc).__name__}: {exc}") from exc

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise StoryFailure(self.step, message)

    def ok(self, message: str) -> None:
        print(f"   ok         {message}")

    def answered(self, response: httpx.Response, status: int = 200) -> str:
        """The valid session id on ``response``, after checking its status."""
        self.check(
            response.status_code == status,
            f"{response.request.url.path} answered {response.status_code}, not {status}: "
            f"{response.text[:200]!r}",
        )
        sid: str | None = response.headers.get(HEADER)
        if sid is None or not is_valid_session_id(sid):
            raise StoryFailure(self.step, f"no valid {HEADER} header on the response: {sid!r}")
        return sid

    def check_trace(self, sid: str, body: dict[str, Any], spans: list[ReadableSpan]) -> None:
        """A, B and both spans of one ``/ask`` request share ``sid`` and one trace."""
        b = body["b"]
        self.check(body["session_id"] == sid, f"A's handler saw {body['session_id']!r}")
        self.check(b["session_id"] == sid, f"B's handler saw {b['session_id']!r}, not {sid!r}")
        self.check(
            body["b_echoed"] == sid,
            f"B's response carried {HEADER}: {body['b_echoed']!r} "
            "(its SessionIdMiddleware echoes it)",
        )
        self.check(
            body["b_plain"] == sid,
            f"B saw {body['b_plain']!r} on a call without headers of A's own "
            "(SessionTransport adds the session header)",
        )
        self.check(
            b["trace_id"] == body["trace_id"],
            f"B's span is in trace {b['trace_id']}, A's in {body['trace_id']}",
        )
        mine = [s for s in spans if trace_of(s) == body["trace_id"]]
        by_service = {service_of(s): s for s in mine}
        self.check(
            sorted(by_service) == ["agent-a", "agent-b"] and len(mine) == 2,
            f"expected one span of each agent in trace {body['trace_id']}, got "
            f"{[(service_of(s), s.name) for s in mine]}",
        )
        for span in mine:
            self.check(
                session_of(span) == sid,
                f"{service_of(span)} span {span.name!r} has session.id={session_of(span)!r}",
            )
        a_span, b_span = by_service["agent-a"], by_service["agent-b"]
        self.check(
            b_span.parent is not None and b_span.parent.span_id == a_span.context.span_id,
            "B's span is not a child of A's span",
        )

    def new_visitor(self, client: httpx.Client) -> None:
        response = client.get("/ask")
        sid = self.answered(response)
        body = response.json()
        logs = self.telemetry.logs.drain()
        spans = self.telemetry.drain_spans()
        row("response", f"200  {HEADER}: {sid}")
        row("A handler", f"session={body['session_id']}  trace={body['trace_id']}")
        row("B handler", f"session={body['b']['session_id']}  trace={body['b']['trace_id']}")
        row("B reply", f"{HEADER}: {body['b_echoed']}")
        row("B /whoami", f"session={body['b_plain']}  (A sent no header of its own)")
        for line in logs:
            row("log", line)
        self.check_trace(sid, body, spans)
        b_lines = [line for line in logs if line.startswith("agent-b ")]
        self.check(
            len(b_lines) == 1 and LogLines.session_of(b_lines[0]) == sid,
            f"B's log line does not show session={sid}: {b_lines}",
        )
        self.first_id = sid
        self.ok("A, B, B's reply, B's log line and both spans: one session id, one trace id")

    def returning_visitor(self, client: httpx.Client) -> None:
        sid = self.first_id
        response = client.get("/ask", headers={HEADER: sid})
        echoed = self.answered(response)
        body = response.json()
        spans = self.telemetry.drain_spans()
        self.telemetry.logs.drain()
        row("sent", f"{HEADER}: {sid}")
        row("response", f"200  {HEADER}: {echoed}")
        row("A and B", f"session={body['b']['session_id']}  trace={body['trace_id']}")
        self.check(echoed == sid, f"A answered with {echoed!r} instead of continuing {sid!r}")
        self.check_trace(sid, body, spans)
        self.ok("same session as step 1, in a new trace")

    def concurrent_users(self, client: httpx.Client) -> None:
        def ask(_: int) -> httpx.Response:
            return client.get("/ask", params={"pause": CONCURRENT_PAUSE})

        with ThreadPoolExecutor(max_workers=2) as pool:
            responses = list(pool.map(ask, range(2)))
        spans = self.telemetry.drain_spans()
        logs = [line for line in self.telemetry.logs.drain() if line.startswith("agent-b ")]
        ids = []
        for user, response in enumerate(responses, 1):
            sid = self.answered(response)
            body = response.json()
            self.check_trace(sid, body, spans)
            row(f"user {user}", f"{HEADER}: {sid}  (A, B and B's log saw it too)")
            ids.append(sid)
        self.check(ids[0] != ids[1], f"both users got the same session id {ids[0]!r}")
        logged = sorted(LogLines.session_of(line) or "" for line in logs)
        self.check(logged == sorted(ids), f"B logged sessions {logged}, expected {sorted(ids)}")
        a_spans = [s for s in spans if service_of(s) == "agent-a"]
        starts = [s.start_time or 0 for s in a_spans]
        ends = [s.end_time or 0 for s in a_spans]
        self.check(max(starts) < min(ends), "the two requests did not overlap in time")
        self.ok("two different ids, each seen only by its own request in A, B and B's log")

    def invalid_ids(self, client: httpx.Client) -> None:
        cases = [("x" * 300, "300 characters"), ("has space", "a space"), ("abc;def", "a ';'")]
        for bad, why in cases:
            response = client.get("/whoami", headers={HEADER: bad})
            sid = self.answered(response)
            row("sent", f"{short(bad):<30}-> 200, fresh id {sid}")
            self.check(sid != bad, f"the invalid id {short(bad)} ({why}) was kept")
            seen = response.json()["session_id"]
            self.check(seen == sid, f"the handler saw {seen!r}, the header says {sid!r}")
        for bad, _ in cases[:2]:
            response = client.get("/strict/whoami", headers={HEADER: bad})
            body = response.text
            row("/strict", f"{short(bad):<30}-> {response.status_code} {body!r}")
            self.check(response.status_code == 400, f"/strict answered {response.status_code}")
            self.check(HEADER in body, f"the 400 body does not name {HEADER}: {body!r}")
            self.check(HEADER not in response.headers, f"the 400 carries {HEADER}")
        sid = self.first_id
        response = client.get("/strict/whoami", headers={HEADER: sid})
        echoed = self.answered(response)
        row("/strict", f"{'step 1 id':<30}-> 200, continues {echoed}")
        self.check(echoed == sid, f"/strict answered {echoed!r} for the valid id {sid!r}")
        self.telemetry.drain_spans()
        self.ok("an invalid id is never used: replaced by a fresh one, or a 400 in reject mode")

    def failing_handler(self, client: httpx.Client) -> None:
        response = client.get("/boom")
        sid = self.answered(response, status=500)
        spans = self.telemetry.drain_spans()
        self.telemetry.logs.drain()
        row("GET /boom", f"-> 500  {HEADER}: {sid}")
        self.check(
            [session_of(s) for s in spans] == [sid],
            f"expected the one span of /boom with session.id={sid}, got "
            f"{[(s.name, session_of(s)) for s in spans]}",
        )
        self.ok("the failed request keeps its session id, in the header and its span")


def service_of(span: ReadableSpan) -> str:
    scope = span.instrumentation_scope
    return scope.name if scope is not None else "?"


def trace_of(span: ReadableSpan) -> str:
    return format_trace_id(span.context.trace_id) if span.context is not None else "?"


def session_of(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("session.id")


def print_spans(spans: list[ReadableSpan]) -> None:
    print("\nSpans recorded by both services (SessionSpanProcessor sets session.id):")
    print(f"   {'service':<9}{'span':<11}{'trace id':<34}session.id")
    first_start: dict[str, int] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        first_start.setdefault(trace_of(span), span.start_time or 0)
    for span in sorted(spans, key=lambda s: (first_start[trace_of(s)], s.start_time or 0)):
        print(f"   {service_of(span):<9}{span.name:<11}{trace_of(span):<34}{session_of(span)}")


def main() -> int:
    """Run the demo; return the process exit status."""
    started = time.monotonic()
    print("sessionctx demo: agent A calls agent B, and every hop sees the same session")
    try:
        with (
            recording() as telemetry,
            quiet_expected_errors(agent_a.ScriptedFailure),
            serve_wsgi(agent_b.create_app(telemetry.tracer("agent-b")), "agent-b") as b_url,
            agent_a.b_client(b_url) as b,
            serve_asgi(agent_a.create_app(b, telemetry.tracer("agent-a")), "agent-a") as a_url,
            httpx.Client(base_url=a_url, timeout=TIMEOUT, trust_env=False) as client,
        ):
            row("agent A", f"FastAPI on uvicorn, ASGI SessionIdMiddleware outermost  {a_url}")
            row("agent B", f"Flask on werkzeug, WSGI SessionIdMiddleware             {b_url}")
            Story(telemetry).play(client)
            telemetry.drain_spans()
            print_spans(telemetry.spans)
    except StoryFailure as failure:
        print(f"\nFAILED at {failure}", file=sys.stderr)
        return 1
    print(
        f"\nAll {len(TITLES)} steps hold ({time.monotonic() - started:.1f}s); both servers stopped."
    )
    return 0
