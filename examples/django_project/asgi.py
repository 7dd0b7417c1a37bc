"""ASGI entry point: Django's handler inside the ASGI ``SessionIdMiddleware``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from sessionctx.asgi import SessionIdMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = SessionIdMiddleware(get_asgi_application())
