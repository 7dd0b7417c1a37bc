"""Views that report the session id they see."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse

from sessionctx import current_session_id

log = logging.getLogger(__name__)


def whoami(request: HttpRequest) -> JsonResponse:
    log.info("whoami")
    return JsonResponse({"session_id": current_session_id()})


async def whoami_async(request: HttpRequest) -> JsonResponse:
    log.info("whoami-async")
    return JsonResponse({"session_id": current_session_id()})
