"""Celery: each task runs in the session of the code that sent it.

``connect(app)`` puts the sender's session id into the task message headers and
makes the worker run the task inside that session (a fresh one when the sender had
none), resetting it afterwards. Here the broker and the result backend live in
memory, and running the module starts a worker in a thread of the same process,
sends one task from inside a session and one from outside any session, and prints
the session each task saw::

    .venv/bin/python -m examples.celery_app

With a real broker, build the app the same way, call ``connect(app)`` where tasks
are sent and where the worker runs (importing this module does both), and start the
worker with ``celery -A <module> worker``.
"""

from __future__ import annotations

from celery import Celery
from celery.contrib.testing.worker import start_worker

from sessionctx import current_session_id, is_valid_session_id, session
from sessionctx.integrations.celery import connect

app = Celery("examples.celery_app", broker="memory://localhost/", backend="cache+memory://")
# The in-memory broker is polled; the default of once a second makes a demo slow.
app.conf.broker_transport_options = {"polling_interval": 0.05}
connect(app)


@app.task  # type: ignore[untyped-decorator]
def report_session() -> str | None:
    """The session id the task runs in."""
    return current_session_id()


def main() -> int:
    """Send two tasks to an in-process worker; return 0 when each saw the right session."""
    with start_worker(app, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        with session("celery-example"):
            sent_in_session = report_session.delay()
        sent_outside = report_session.delay()
        inside = sent_in_session.get(timeout=10, interval=0.05)
        outside = sent_outside.get(timeout=10, interval=0.05)
    print(f"sent inside session 'celery-example': the task ran in session {inside!r}")
    print(f"sent outside any session:           the task ran in session {outside!r} (new)")
    return 0 if inside == "celery-example" and is_valid_session_id(outside) else 1


if __name__ == "__main__":
    raise SystemExit(main())
