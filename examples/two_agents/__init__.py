"""``make demo``: two real services on 127.0.0.1 that share one session id.

Agent A is a FastAPI app on uvicorn with the ASGI ``SessionIdMiddleware`` outermost;
agent B is a Flask app on werkzeug's threaded server wrapped with the WSGI
``SessionIdMiddleware``. A calls B through ``SessionTransport`` and
``inject_trace_headers``; B joins the session and the trace with
``propagated_context``. Both log through ``SessionIdFilter`` and record spans through
``SessionSpanProcessor`` into an in-memory exporter.

:mod:`examples.two_agents.story` plays five scripted steps against the running
services, prints what each service saw and checks it; the process exits non-zero,
naming the step, when any step does not hold. Run it with ``make demo`` or
``python -m examples.two_agents`` from the repository root.
"""
