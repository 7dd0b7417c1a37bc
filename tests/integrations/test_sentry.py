"""The README's Sentry recipe: every captured error is tagged with its request's
session, in every placement, with a real sentry-sdk (``sentry_scenario.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrations.sentry_scenario import ASGI_PLACEMENTS, WSGI_PLACEMENTS, request_ids

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT = 120


@pytest.mark.parametrize("placement", [*ASGI_PLACEMENTS, *WSGI_PLACEMENTS])
def test_every_error_event_carries_its_requests_session(placement: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.integrations.sentry_scenario", placement],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])

    failed = [sid for sid, path in request_ids() if path == "/boom"]
    for response, (sid, path) in zip(report["responses"], request_ids(), strict=True):
        assert response["sent"] == sid
        assert response["status"] == (500 if path == "/boom" else 200)
        # Starlette's own 500, outside an add_middleware one, has no header.
        no_header = placement == "asgi-add-middleware" and path == "/boom"
        assert response["headers"] == ([] if no_header else [sid])
    # One event per failed request, tagged with the id its handler saw.
    events = sorted((event["tag"], event["message"]) for event in report["events"])
    assert events == [(sid, f"boom in {sid}") for sid in failed], report["version"]
