"""URLs, views and a ``MIDDLEWARE`` entry of the Django project the WSGI tests run.

Used as ``ROOT_URLCONF`` by ``tests/test_wsgi_frameworks.py``. Each view
reports the session id it sees, so a test can compare it with the response
header.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path
from django.views import View

from sessionctx import current_session_id
from tests.django_urls import error_view

SCOPE_KEY = "sessionctx.session_id"
CHUNKS = 4
FILE_CONTENT = b"0123456789" * 3
logger = logging.getLogger("tests.django_wsgi")


class SessionLoggingMiddleware:
    """A Django ``MIDDLEWARE`` entry that logs, and names the session it saw in a header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        logger.info("request %s", request.path)
        response = self.get_response(request)
        response["X-Middleware-Saw"] = current_session_id() or "-"
        return response


def function_view(request: HttpRequest) -> HttpResponse:
    logger.info("function view")
    return JsonResponse({"sid": current_session_id(), "environ": request.META.get(SCOPE_KEY)})


class ClassView(View):  # type: ignore[misc]  # django is untyped here
    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"sid": current_session_id(), "environ": request.META.get(SCOPE_KEY)})


def stream_view(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[str]:
        # Runs while the server iterates the body, after every middleware returned.
        for _ in range(CHUNKS):
            yield f"{current_session_id()}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def file_view(request: HttpRequest) -> FileResponse:
    return FileResponse(io.BytesIO(FILE_CONTENT), content_type="application/octet-stream")


def own_header_view(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("set by the view")
    response["X-Session-Id"] = "from-view"
    return response


#: What ``resources_view`` saw on each call: Django's cache backend and database connection.
RESOURCES: list[tuple[object, object]] = []


def resources_view(request: HttpRequest) -> HttpResponse:
    from django.core.cache import caches
    from django.db import connections

    RESOURCES.append((caches["default"], connections["default"]))
    return HttpResponse("ok")


urlpatterns = [
    path("function/", function_view),
    path("class/", ClassView.as_view()),
    path("stream/", stream_view),
    path("file/", file_view),
    path("own-header/", own_header_view),
    path("error/", error_view),
    path("resources/", resources_view),
]
