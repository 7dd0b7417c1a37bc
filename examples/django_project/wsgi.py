"""WSGI entry point: Django's handler inside the WSGI ``SessionIdMiddleware``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from sessionctx.wsgi import SessionIdMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = SessionIdMiddleware(get_wsgi_application())
