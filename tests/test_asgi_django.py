"""``SessionIdMiddleware`` around Django's ASGI application (``get_asgi_application``).

Django settings can be configured once per process and other test modules
may get there first, so this module configures them only when nobody has,
and runs every request under ``override_settings`` with its own
``ROOT_URLCONF`` (``tests.django_urls``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.test import AsyncClient, Client, override_settings

from sessionctx import session
from sessionctx.asgi import SessionIdMiddleware
from tests import django_urls
from tests.support import ASGIApp, asgi_client, assert_session, configure_django

pytestmark = pytest.mark.anyio


PROJECT_SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "ROOT_URLCONF": "tests.django_urls",
    "ALLOWED_HOSTS": ["testserver"],
    "MIDDLEWARE": [],
}

configure_django(PROJECT_SETTINGS)


@pytest.fixture
def django_asgi() -> Iterator[ASGIApp]:
    """Django's ASGI handler for ``tests.django_urls``, built under its settings."""
    with override_settings(**PROJECT_SETTINGS):
        yield get_asgi_application()


@pytest.mark.parametrize("path", ["/async/", "/sync/"])
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"X-Session-Id": "dj-1"}, "dj-1", id="continued"),
        pytest.param({"X-TraceCtrl-Session": "tc-1"}, "tc-1", id="tracectrl-header"),
        pytest.param({"X-Session-Id": "a\tb"}, None, id="invalid-replaced"),
        pytest.param({}, None, id="generated"),
    ],
)
async def test_django_views_see_the_session(
    django_asgi: ASGIApp, path: str, headers: dict[str, str], expected: str | None
) -> None:
    async with asgi_client(SessionIdMiddleware(django_asgi)) as http:
        response = await http.get(path, headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert_session(body["sid"], expected)
    assert body["scope"] == body["sid"]
    assert response.headers.get_list("x-session-id") == [body["sid"]]


async def test_django_streaming_chunks_see_the_session(django_asgi: ASGIApp) -> None:
    async with asgi_client(SessionIdMiddleware(django_asgi)) as http:
        response = await http.get("/stream/", headers={"X-Session-Id": "djs-1"})

    assert response.text.splitlines() == ["djs-1"] * django_urls.CHUNKS
    assert response.headers["x-session-id"] == "djs-1"


async def test_django_views_own_header_is_kept(django_asgi: ASGIApp) -> None:
    async with asgi_client(SessionIdMiddleware(django_asgi)) as http:
        response = await http.get("/own-header/", headers={"X-Session-Id": "djh-1"})

    assert response.headers.get_list("x-session-id") == ["from-view"]


async def test_djangos_own_500_carries_the_header(django_asgi: ASGIApp) -> None:
    async with asgi_client(SessionIdMiddleware(django_asgi)) as http:
        response = await http.get("/error/", headers={"X-Session-Id": "dje-1"})

    assert response.status_code == 500
    assert response.headers["x-session-id"] == "dje-1"


async def test_django_request_rejected_before_django_runs(django_asgi: ASGIApp) -> None:
    async with asgi_client(SessionIdMiddleware(django_asgi, on_missing="reject")) as http:
        response = await http.get("/async/")

    assert response.status_code == 400
    assert response.text == "Missing X-Session-Id header"


# Django's test clients build a handler of their own and never call asgi.py or
# wsgi.py: the README says so, and that a session opened around them is seen.


@pytest.mark.parametrize("path", ["/async/", "/sync/"])
def test_djangos_client_sees_a_session_opened_around_it(path: str) -> None:
    with override_settings(**PROJECT_SETTINGS):
        assert Client().get(path).json()["sid"] is None
        with session("test-id"):
            assert Client().get(path).json()["sid"] == "test-id"


@pytest.mark.parametrize("path", ["/async/", "/sync/"])
async def test_djangos_async_client_sees_a_session_opened_around_it(path: str) -> None:
    with override_settings(**PROJECT_SETTINGS):
        assert (await AsyncClient().get(path)).json()["sid"] is None
        with session("test-id"):
            assert (await AsyncClient().get(path)).json()["sid"] == "test-id"
