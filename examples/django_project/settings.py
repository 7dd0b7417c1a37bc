"""Settings of the example project: no database, no apps, one view module."""

from __future__ import annotations

from typing import Any

SECRET_KEY = "example-project-key-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_project.urls"
WSGI_APPLICATION = "examples.django_project.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, Any] = {}
USE_TZ = True

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"session_id": {"()": "sessionctx.log_filters.SessionIdFilter"}},
    "formatters": {"session": {"format": "%(levelname)s session=%(session_id)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["session_id"],
            "formatter": "session",
        }
    },
    "loggers": {"examples.django_project": {"handlers": ["console"], "level": "INFO"}},
}
