"""A Django project called in-process: sessionctx against django-guid.

    python -m benchmarks --only django                  # this part alone, in the table
    python -m benchmarks.django_inprocess ROUNDS CHUNK_NS MIN MAX CLOCK
                                                        # one child run (what the part starts)

The same loop as the ``wsgi`` part (``wsgi_inprocess.runner``: a fresh
``environ`` per request, the body read and closed), serving Django's
``WSGIHandler`` for a project with one view and no ``MIDDLEWARE``:

- ``bare app``: the project as it is;
- ``floor`` and ``sessionctx``: the ``wsgi`` part's hand-written floor and
  sessionctx's WSGI middleware, each wrapping the project's handler, as
  ``wsgi.py`` deploys them;
- ``django-guid``: the project with ``django_guid.middleware.guid_middleware``
  in ``MIDDLEWARE``, as its documentation deploys it, configured to do
  sessionctx's default work: it reads ``X-Session-Id`` (its check accepts
  UUIDs only, which is what the cases send), makes ``str(uuid.uuid4())`` ids,
  and does not add ``Access-Control-Expose-Headers`` (its default would add
  it to every response).

Django is configured once per process and django-guid must be in
``INSTALLED_APPS``, so the part runs in a child Python of its own; the parent
turns the child's samples (JSON on stdout) into rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks import wsgi_inprocess
from benchmarks.apps import BODY
from benchmarks.floor import WsgiFloorMiddleware
from benchmarks.report import Row, inprocess_rows
from benchmarks.timing import Budget
from sessionctx.wsgi import SessionIdMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "BARE",
    "CASES",
    "DJANGO_GUID",
    "FLOOR",
    "OURS",
    "VALID",
    "apps",
    "child",
    "run",
    "urlpatterns",
]

BARE = wsgi_inprocess.BARE
FLOOR = wsgi_inprocess.FLOOR
OURS = wsgi_inprocess.OURS
DJANGO_GUID = "django-guid"
CASES = wsgi_inprocess.CASES
VALID = wsgi_inprocess.VALID
_ROOT = Path(__file__).resolve().parent.parent
_CLOCKS: dict[str, Callable[[], int]] = {
    clock.__name__: clock for clock in (time.perf_counter_ns, time.thread_time_ns)
}


def _view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="text/plain")


#: The project's ``ROOT_URLCONF`` is this module: one view at ``/``.
urlpatterns = [path("", _view)]


def _configure() -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="sessionctx-benchmarks-only",
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django_guid"],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
        DJANGO_GUID={
            "GUID_HEADER_NAME": "X-Session-Id",
            "UUID_FORMAT": "string",
            "EXPOSE_HEADER": False,
        },
    )
    django.setup()
    # An invalid or missing id makes django-guid log; a NullHandler keeps that
    # cost (building the record) without writing to stderr.
    logger = logging.getLogger("django_guid")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def apps() -> dict[str, WSGIApplication]:
    """Configure Django in this process (once only) and return every candidate's handler."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    _configure()
    # A handler reads MIDDLEWARE when it is made.
    project = WSGIHandler()
    settings.MIDDLEWARE = ["django_guid.middleware.guid_middleware"]
    with_guid = WSGIHandler()
    settings.MIDDLEWARE = []
    return {
        BARE: project,
        FLOOR: WsgiFloorMiddleware(project),
        OURS: SessionIdMiddleware(project),
        DJANGO_GUID: with_guid,
    }


def child(argv: list[str]) -> None:
    """Time every candidate in every case with the budget given; print the samples as JSON."""
    if len(argv) != 5 or argv[4] not in _CLOCKS:
        raise SystemExit(
            "usage: python -m benchmarks.django_inprocess ROUNDS CHUNK_NS MIN MAX CLOCK "
            f"(CLOCK: {' or '.join(_CLOCKS)})"
        )
    rounds, chunk_ns, least, most = map(int, argv[:4])
    budget = Budget(rounds, chunk_ns, least, most, _CLOCKS[argv[4]])
    candidates = apps()
    samples: dict[str, dict[str, list[float]]] = {}
    for case in CASES:
        samples[case.name] = wsgi_inprocess.measure(candidates, case, budget)
    json.dump(samples, sys.stdout)


def run(budget: Budget) -> list[Row]:
    """Rows for every case: the bare project, floor, sessionctx and django-guid."""
    clock = budget.clock.__name__
    if clock not in _CLOCKS:
        raise ValueError(f"the django part times with {' or '.join(_CLOCKS)}, not {clock}")
    command = [
        sys.executable,
        "-m",
        "benchmarks.django_inprocess",
        *map(str, (budget.rounds, budget.chunk_ns, budget.min_iterations, budget.max_iterations)),
        clock,
    ]
    done = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"the Django child exited {done.returncode}: {tail}")
    samples: dict[str, dict[str, list[float]]] = json.loads(done.stdout)
    rows: list[Row] = []
    for case in CASES:
        case_rows = inprocess_rows("django", case.name, samples[case.name], bare=BARE, floor=FLOOR)
        added = {row.candidate: row.added for row in case_rows if row.added is not None}
        rows += [
            dataclasses.replace(
                row, note=f"{added[DJANGO_GUID] / added[OURS]:.1f}x sessionctx's added time"
            )
            if row.candidate == DJANGO_GUID and added[OURS] > 0
            else row
            for row in case_rows
        ]
    return rows


if __name__ == "__main__":
    child(sys.argv[1:])
