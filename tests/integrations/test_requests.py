"""``SessionIdAdapter`` / ``instrument_session`` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from sessionctx import ContextThreadPoolExecutor, session
from sessionctx.integrations.requests import SessionIdAdapter, instrument_session
from tests.integrations.outgoing import (
    EXPLICIT_HEADERS,
    REDIRECTED,
    RESENT,
    EchoHandler,
    in_session,
)
from tests.support import serving_http

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serving_http(EchoHandler) as base:
        yield f"{base}/"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with instrument_session(requests.Session()) as s:
        yield s


def test_requests_in_a_session_carry_its_id(http: requests.Session, url: str) -> None:
    with session("sess-1"):
        inside = http.get(url, timeout=10).json()
    outside = http.get(url, timeout=10).json()
    assert inside == {"x-session-id": ["sess-1"]}
    assert outside == {}


@pytest.mark.parametrize(("headers", "received"), EXPLICIT_HEADERS)
def test_explicit_header_wins(
    http: requests.Session, url: str, headers: dict[str, str], received: dict[str, object]
) -> None:
    with session("sess-1"):
        assert http.get(url, headers=headers, timeout=10).json() == received


def test_session_level_headers_count_as_explicit(http: requests.Session, url: str) -> None:
    http.headers["X-Session-Id"] = "fixed"
    with session("sess-1"):
        assert http.get(url, timeout=10).json() == {"x-session-id": ["fixed"]}


def test_the_sent_request_shows_the_header(http: requests.Session, url: str) -> None:
    prepared = http.prepare_request(requests.Request("GET", url))
    with session("sess-1"):
        response = http.send(prepared, timeout=10)
    assert response.request is prepared
    assert prepared.headers["X-Session-Id"] == "sess-1"


@pytest.mark.parametrize(("first", "between", "second", "received"), RESENT)
def test_a_resent_request_carries_the_session_it_is_sent_in(
    http: requests.Session,
    url: str,
    first: str | None,
    between: dict[str, str],
    second: str | None,
    received: dict[str, object],
) -> None:
    prepared = http.prepare_request(requests.Request("GET", url))
    with in_session(first):
        http.send(prepared, timeout=10)
    prepared.headers.update(between)
    with in_session(second):
        assert http.send(prepared, timeout=10).json() == received


@pytest.mark.parametrize(("headers", "second", "received"), REDIRECTED)
def test_a_resent_request_of_a_redirect_carries_the_session_it_is_sent_in(
    http: requests.Session,
    url: str,
    headers: dict[str, str],
    second: str | None,
    received: dict[str, object],
) -> None:
    with session("sess-a"):
        response = http.get(f"{url}redirect", headers=headers, timeout=10)
    assert [hop.status_code for hop in response.history] == [302]
    with in_session(second):
        assert http.send(response.request, timeout=10).json() == received


@pytest.mark.parametrize(("headers", "received"), EXPLICIT_HEADERS)
def test_explicit_header_wins_on_every_send(
    http: requests.Session, url: str, headers: dict[str, str], received: dict[str, object]
) -> None:
    prepared = http.prepare_request(requests.Request("GET", url, headers=headers))
    sent = []
    for sid in ("sess-a", "sess-b", None):
        with in_session(sid):
            sent.append(http.send(prepared, timeout=10).json())
    assert sent == [received] * 3


def test_a_sent_request_is_not_kept_alive(http: requests.Session, url: str) -> None:
    prepared = http.prepare_request(requests.Request("GET", url))
    with session("sess-1"):
        response = http.send(prepared, timeout=10)
    sent = weakref.ref(prepared)
    del prepared, response
    gc.collect()
    assert sent() is None


def test_each_thread_sends_its_own_session(http: requests.Session, url: str) -> None:
    def call(sid: str) -> object:
        with session(sid):
            return http.get(url, timeout=10).json()

    with ContextThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, [f"sess-{i}" for i in range(8)], timeout=30))
    assert results == [{"x-session-id": [f"sess-{i}"]} for i in range(8)]


def test_each_thread_resends_its_own_request(http: requests.Session, url: str) -> None:
    def call(index: int) -> list[object]:
        prepared = http.prepare_request(requests.Request("GET", url))
        sent = []
        for sid in (f"a-{index}", f"b-{index}", None):
            with in_session(sid):
                sent.append(http.send(prepared, timeout=10).json())
        return sent

    with ContextThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, range(8), timeout=30))
    assert results == [
        [{"x-session-id": [f"a-{i}"]}, {"x-session-id": [f"b-{i}"]}, {}] for i in range(8)
    ]


def test_the_adapter_mounted_by_hand_works(url: str) -> None:
    with requests.Session() as s:
        s.mount("http://", SessionIdAdapter(max_retries=2))
        with session("sess-1"):
            assert s.get(url, timeout=10).json() == {"x-session-id": ["sess-1"]}


def test_instrument_session_returns_the_session_and_mounts_both_schemes() -> None:
    with requests.Session() as s:
        assert instrument_session(s) is s
        assert isinstance(s.get_adapter("http://example.test/"), SessionIdAdapter)
        assert isinstance(s.get_adapter("https://example.test/"), SessionIdAdapter)


def test_instrument_session_keeps_the_adapter_settings() -> None:
    with requests.Session() as s:
        s.mount("https://", HTTPAdapter(max_retries=3, pool_maxsize=7, pool_block=True))
        instrument_session(s)
        adapter = s.adapters["https://"]
        assert isinstance(adapter, SessionIdAdapter)
        assert adapter.max_retries.total == 3
        # What a plain adapter with those settings gives its pools (requests
        # < 2.30 adds strict=True).
        plain = HTTPAdapter(pool_maxsize=7, pool_block=True).poolmanager.connection_pool_kw
        assert adapter.poolmanager.connection_pool_kw == plain
        assert plain["maxsize"] == 7
        assert plain["block"] is True


def test_instrument_session_twice_changes_nothing() -> None:
    with requests.Session() as s:
        instrument_session(s)
        first = dict(s.adapters)
        instrument_session(s)
        assert s.adapters == first


def test_instrument_session_mounts_where_nothing_was_mounted(url: str) -> None:
    with requests.Session() as s:
        s.adapters.clear()
        instrument_session(s)
        assert list(s.adapters) == ["https://", "http://"]
        with session("sess-1"):
            assert s.get(url, timeout=10).json() == {"x-session-id": ["sess-1"]}


def test_instrument_session_refuses_to_replace_a_custom_adapter() -> None:
    class CustomAdapter(HTTPAdapter):
        pass

    with requests.Session() as s:
        custom = CustomAdapter()
        s.mount("https://", custom)
        before = dict(s.adapters)
        with pytest.raises(TypeError, match="CustomAdapter mounted on 'https://'"):
            instrument_session(s)
        assert s.adapters == before


def test_instrument_session_needs_a_session() -> None:
    with pytest.raises(TypeError, match=r"expected a requests\.Session"):
        instrument_session(HTTPAdapter())  # type: ignore[arg-type]
