"""Cases and a server handler shared by the tests of the outgoing-request integrations
(httpx, requests)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import pytest

from sessionctx import ACCEPTED_HEADER_NAMES, session
from tests.support import QuietHandler, send_json

__all__ = [
    "EXPLICIT_HEADERS",
    "REDIRECTED",
    "RESENT",
    "SESSION_NAMES",
    "EchoHandler",
    "in_session",
]

#: Every accepted session header name, lower case, in priority order.
SESSION_NAMES = tuple(name.lower() for name in ACCEPTED_HEADER_NAMES)

#: (headers the caller sets, session headers the server receives): the caller's wins.
EXPLICIT_HEADERS = [
    pytest.param({"X-Session-Id": "explicit"}, {"x-session-id": ["explicit"]}, id="same-name"),
    pytest.param({"x-session-id": "explicit"}, {"x-session-id": ["explicit"]}, id="lower-case"),
    pytest.param(
        {"X-TraceCtrl-Session": "explicit"}, {"x-tracectrl-session": ["explicit"]}, id="other-name"
    ),
    pytest.param(
        {"Mirascope-Session-Id": "explicit"},
        {"mirascope-session-id": ["explicit"]},
        id="lowest-priority-name",
    ),
]

#: One request object sent twice: (session of the first send, headers the caller sets on
#: the request between the sends, session of the second send, session headers the server
#: receives the second time). ``None``: no session active.
RESENT = [
    pytest.param("sess-a", {}, "sess-b", {"x-session-id": ["sess-b"]}, id="another-session"),
    pytest.param("sess-a", {}, None, {}, id="no-session"),
    pytest.param("sess-a", {}, "sess-a", {"x-session-id": ["sess-a"]}, id="same-session"),
    pytest.param(None, {}, "sess-b", {"x-session-id": ["sess-b"]}, id="first-sent-outside"),
    pytest.param(
        "sess-a",
        {"X-Session-Id": "explicit"},
        "sess-b",
        {"x-session-id": ["explicit"]},
        id="caller-replaced-ours",
    ),
    pytest.param(
        "sess-a",
        {"x-session-id": "explicit"},
        None,
        {"x-session-id": ["explicit"]},
        id="caller-replaced-ours-then-no-session",
    ),
    pytest.param(
        "sess-a",
        {"Mirascope-Session-Id": "explicit"},
        "sess-b",
        {"mirascope-session-id": ["explicit"]},
        id="caller-added-another-name",
    ),
]


#: The request of a redirect's last hop, built by the client from the first request, sent
#: again: (headers the caller sets on the first request, sent in ``sess-a``, session of
#: the second send, session headers the server receives the second time).
REDIRECTED = [
    pytest.param({}, "sess-b", {"x-session-id": ["sess-b"]}, id="another-session"),
    pytest.param({}, None, {}, id="no-session"),
    pytest.param({}, "sess-a", {"x-session-id": ["sess-a"]}, id="same-session"),
    pytest.param(
        {"X-Session-Id": "explicit"}, None, {"x-session-id": ["explicit"]}, id="caller-header"
    ),
    pytest.param(
        {"Mirascope-Session-Id": "sess-a"},
        "sess-b",
        {"mirascope-session-id": ["sess-a"]},
        id="caller-header-another-name",
    ),
]


def in_session(sid: str | None) -> AbstractContextManager[object]:
    """``session(sid)``, or no session at all for ``None``."""
    return nullcontext() if sid is None else session(sid)


class EchoHandler(QuietHandler):
    """Answers with the session headers it received, as a list per lower-case name;
    ``/redirect`` redirects to ``/``."""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        received = {
            name.lower(): self.headers.get_all(name)
            for name in dict.fromkeys(self.headers.keys())
            if name.lower() in SESSION_NAMES
        }
        send_json(self, received)
