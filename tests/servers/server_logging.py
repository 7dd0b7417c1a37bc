"""Logging for the WSGI server tests: the servers' error logs go through
``SessionIdFilter`` to stderr, as the README's logging setup does.

gunicorn reads ``logconfig_dict`` as a setting (``-c python:tests.servers.server_logging``);
:mod:`tests.servers.waitress_server` and :mod:`tests.servers.gevent_server` apply it
with ``logging.config.dictConfig``.
"""

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"session_id": {"()": "sessionctx.log_filters.SessionIdFilter"}},
    "formatters": {"plain": {"format": "%(levelname)s [%(session_id)s] %(name)s: %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "filters": ["session_id"],
            "formatter": "plain",
        },
    },
    "loggers": {
        "gunicorn.error": {"level": "WARNING", "handlers": ["console"], "propagate": False},
        # waitress.queue warns when every thread is busy: not an error of a request.
        "waitress": {"level": "ERROR", "handlers": ["console"], "propagate": False},
        # gevent's pywsgi: its error_log (bad requests; not the app's exceptions).
        "gevent.pywsgi": {"level": "ERROR", "handlers": ["console"], "propagate": False},
    },
}
