"""Cases shared by the tests of the outgoing-request integrations (httpx, requests)."""

from __future__ import annotations

import pytest

from sessionctx import ACCEPTED_HEADER_NAMES

__all__ = ["EXPLICIT_HEADERS", "SESSION_NAMES"]

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
