"""gunicorn settings for the WSGI server tests (``-c``): its error log goes
through ``SessionIdFilter`` to stderr, as the README's logging setup does."""

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
    },
}
