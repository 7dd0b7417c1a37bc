"""URLs and views of the Django project the ASGI tests run (``ROOT_URLCONF``).

Each view reports the session id it sees, so a test can compare it with the
response header.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from sessionctx import current_session_id

SCOPE_KEY = "sessionctx.session_id"
CHUNKS = 5


async def async_view(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    scope = getattr(request, "scope", {})
    return JsonResponse({"sid": current_session_id(), "scope": scope.get(SCOPE_KEY)})


def sync_view(request: HttpRequest) -> HttpResponse:
    # Under ASGI Django runs this in a worker thread (``sync_to_async``).
    scope = getattr(request, "scope", {})
    return JsonResponse({"sid": current_session_id(), "scope": scope.get(SCOPE_KEY)})


async def stream_view(request: HttpRequest) -> HttpResponse:
    async def chunks() -> AsyncIterator[str]:
        for _ in range(CHUNKS):
            await asyncio.sleep(0)
            yield f"{current_session_id()}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def own_header_view(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("set by the view")
    response["X-Session-Id"] = "from-view"
    return response


def error_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("unhandled in a Django view")


urlpatterns = [
    path("async/", async_view),
    path("sync/", sync_view),
    path("stream/", stream_view),
    path("own-header/", own_header_view),
    path("error/", error_view),
]
