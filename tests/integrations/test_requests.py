"""``SessionIdAdapter`` / ``instrument_session`` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gc
import pickle
import weakref
from collections.abc import Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPDigestAuth

import sessionctx.integrations.requests
from sessionctx import ContextThreadPoolExecutor, session
from sessionctx.integrations.requests import SessionIdAdapter, instrument_session
from tests.integrations.outgoing import (
    BAD_HOSTS,
    EXPLICIT_HEADERS,
    HOST_MATCHES,
    HOSTS,
    NEXT_REQUESTS,
    REDIRECTED,
    RESENT,
    EchoHandler,
    in_session,
    session_header,
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


@pytest.mark.parametrize(("hosts", "url", "sent"), HOST_MATCHES)
def test_hosts_decide_which_hosts_get_the_id(hosts: list[str], url: str, sent: bool) -> None:
    """What the adapter adds to a request prepared as ``requests`` sends it."""
    adapter = SessionIdAdapter(hosts=hosts)
    prepared = requests.Request("GET", url).prepare()
    with session("sess-1"):
        adapter.add_headers(prepared)
    assert prepared.headers.get("X-Session-Id") == ("sess-1" if sent else None)
    adapter.close()


def test_an_x_session_id_holding_the_active_id_is_not_sent_to_an_unlisted_host() -> None:
    """It counts as the adapter's own (a copy of it), whoever set it."""
    adapter = SessionIdAdapter(hosts=["a.example"])
    for url, expected in [("http://b.example/", None), ("http://a.example/", "sess-1")]:
        prepared = requests.Request("GET", url, headers={"x-session-id": "sess-1"}).prepare()
        with session("sess-1"):
            adapter.add_headers(prepared)
        assert prepared.headers.get("X-Session-Id") == expected
    adapter.close()


def test_a_url_urllib_cannot_parse_gets_no_id() -> None:
    adapter = SessionIdAdapter(hosts=["127.0.0.1", "::1"])
    prepared = requests.Request("GET", "http://127.0.0.1/").prepare()
    prepared.url = "http://[::1/"
    with session("sess-1"):
        adapter.add_headers(prepared)
    assert "X-Session-Id" not in prepared.headers
    adapter.close()


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://Example.COM:8080/x", "example.com"),
        ("http://[::1]:8080/", "::1"),
        ("http://user@127.0.0.1/", "127.0.0.1"),
        ("http://127.0.0.2:1\\@127.0.0.1:2/", None),  # urllib3 reads 127.0.0.2
        ("http://[::1/", None),
    ],
)
def test_before_requests_2_32_a_host_counts_when_urllib_and_urllib3_agree(
    monkeypatch: pytest.MonkeyPatch, url: str, host: str | None
) -> None:
    """Older requests connect to the host urllib3 reads (make test-oldest runs them)."""
    monkeypatch.setattr(sessionctx.integrations.requests, "_URLLIB3_PICKS_THE_HOST", True)
    assert sessionctx.integrations.requests._request_host(url) == host


def test_a_punycode_name_idna_2008_refuses_may_be_listed() -> None:
    """requests sends to it as it is (httpx refuses such a URL)."""
    adapter = SessionIdAdapter(hosts=["xn--ls8h.la"])
    prepared = requests.Request("GET", "http://xn--ls8h.la/").prepare()
    with session("sess-1"):
        adapter.add_headers(prepared)
    assert prepared.headers["X-Session-Id"] == "sess-1"
    adapter.close()


def test_setting_hosts_changes_them_and_checks_them() -> None:
    adapter = SessionIdAdapter(hosts=["a.example"])
    adapter.hosts = iter(["b.example"])
    assert adapter.hosts == ("b.example",)
    for url, expected in [("http://a.example/", None), ("http://b.example/", "sess-1")]:
        prepared = requests.Request("GET", url).prepare()
        with session("sess-1"):
            adapter.add_headers(prepared)
        assert prepared.headers.get("X-Session-Id") == expected
    with pytest.raises(ValueError, match="hosts"):
        adapter.hosts = ["http://c.example"]
    assert adapter.hosts == ("b.example",)
    adapter.close()


@pytest.mark.parametrize(("hosts", "error", "words"), BAD_HOSTS)
def test_bad_hosts_are_refused(hosts: object, error: type, words: str) -> None:
    with pytest.raises(error, match="hosts") as raised:
        SessionIdAdapter(hosts=hosts)  # type: ignore[arg-type]
    assert words in str(raised.value)
    with requests.Session() as s:
        before = dict(s.adapters)
        with pytest.raises(error, match="hosts"):
            instrument_session(s, hosts=hosts)  # type: ignore[arg-type]
        assert s.adapters == before


@pytest.mark.parametrize(("hosts", "sent", "sent_away"), HOSTS)
def test_hosts_on_a_real_server_and_a_redirect_to_another_host(
    url: str, other_host_url: str, hosts: list[str] | None, sent: bool, sent_away: bool
) -> None:
    """127.0.0.1 redirects to the other loopback address."""
    away = other_host_url.removeprefix("http://").rstrip("/")
    with instrument_session(requests.Session(), hosts=hosts) as s, session("sess-1"):
        first = s.get(url, timeout=10).json()
        response = s.get(f"{url}redirect-to/{away}", timeout=10)
    assert first == session_header(sent)
    assert [hop.status_code for hop in response.history] == [302]
    assert response.url == other_host_url
    assert response.json() == session_header(sent_away)


@pytest.mark.parametrize("hosts", [None, ["127.0.0.1"]], ids=["every-host", "listed"])
def test_a_redirect_to_a_host_of_a_plain_adapter_gets_no_id(
    url: str, other_host_url: str, hosts: list[str] | None
) -> None:
    """requests copies the first request into the redirect's; the other host's
    own adapter adds nothing, and must find no copy of the id."""
    away = other_host_url.removeprefix("http://").rstrip("/")
    with requests.Session() as s:
        s.mount(f"http://{away}", HTTPAdapter())
        instrument_session(s, hosts=hosts)
        with session("sess-1"):
            response = s.get(f"{url}redirect-to/{away}", timeout=10)
    assert [hop.status_code for hop in response.history] == [302]
    assert response.url == other_host_url
    assert response.json() == {}


@pytest.mark.parametrize("hosts", [None, ["127.0.0.1"]], ids=["every-host", "listed"])
def test_a_redirect_after_digest_authentication_carries_no_stale_id(
    url: str, other_host_url: str, hosts: list[str] | None
) -> None:
    """requests' digest auth resends a copy of the request; the redirect that
    answers it is built from the first request, whose answer was the 401."""
    away = other_host_url.removeprefix("http://").rstrip("/")
    redirect = f"{url}digest/redirect-to/{away}"
    auth = HTTPDigestAuth("user", "password")
    with requests.Session() as s:
        s.mount(f"http://{away}", HTTPAdapter())
        instrument_session(s, hosts=hosts)
        with session("sess-1"):
            followed = s.get(redirect, auth=auth, timeout=10)
            stopped = s.get(redirect, auth=auth, allow_redirects=False, timeout=10)
        assert followed.history[-1].status_code == 302
        assert followed.json() == {}
        assert stopped.next is not None
        assert s.send(stopped.next, timeout=10).json() == {}


@pytest.mark.parametrize(("later", "hosts", "received"), NEXT_REQUESTS)
def test_a_redirects_next_request_sent_later_carries_no_stale_id(
    url: str,
    other_host_url: str,
    later: str | None,
    hosts: list[str] | None,
    received: dict[str, list[str]],
) -> None:
    away = other_host_url.removeprefix("http://").rstrip("/")
    with instrument_session(requests.Session(), hosts=hosts) as s:
        with session("sess-1"):
            response = s.get(f"{url}redirect-to/{away}", allow_redirects=False, timeout=10)
        next_request = response.next
        assert next_request is not None
        assert next_request.url == other_host_url
        with in_session(later):
            assert s.send(next_request, timeout=10).json() == received


def test_a_url_whose_host_requests_and_urllib3_read_apart_gets_the_id_only_where_it_goes(
    url: str, other_host_url: str
) -> None:
    """A URL set on a prepared request by hand, with a raw backslash: requests
    before 2.32 connect to the host urllib3 reads (the other one), which gets
    no id; newer ones to the host urllib.parse reads (the listed one)."""
    listed = url.removeprefix("http://").rstrip("/")
    to_the_listed_host = hasattr(HTTPAdapter, "get_connection_with_tls_context")
    with instrument_session(requests.Session(), hosts=["127.0.0.1"]) as s:
        prepared = s.prepare_request(requests.Request("GET", url))
        prepared.url = f"{other_host_url.rstrip('/')}\\@{listed}/"
        with session("sess-1"):
            received = s.send(prepared, timeout=10).json()
    assert received == session_header(to_the_listed_host)


def test_a_header_of_the_callers_own_reaches_any_host(url: str, other_host_url: str) -> None:
    away = other_host_url.removeprefix("http://").rstrip("/")
    with instrument_session(requests.Session(), hosts=["127.0.0.1"]) as s, session("sess-1"):
        response = s.get(
            f"{url}redirect-to/{away}", headers={"X-Session-Id": "explicit"}, timeout=10
        )
        unlisted = s.get(other_host_url, headers={"Mirascope-Session-Id": "sess-1"}, timeout=10)
    assert response.json() == {"x-session-id": ["explicit"]}
    assert unlisted.json() == {"mirascope-session-id": ["sess-1"]}


def test_instrument_session_reads_an_iterator_of_hosts_once(url: str) -> None:
    with instrument_session(requests.Session(), hosts=iter(["127.0.0.1"])) as s:
        assert s.adapters["http://"].hosts == ("127.0.0.1",)  # type: ignore[attr-defined]
        assert s.adapters["https://"].hosts == ("127.0.0.1",)  # type: ignore[attr-defined]
        with session("sess-1"):
            assert s.get(url, timeout=10).json() == {"x-session-id": ["sess-1"]}


def test_instrument_session_again_with_other_hosts_is_refused() -> None:
    with instrument_session(requests.Session(), hosts=["a.example", ".b.example"]) as s:
        before = dict(s.adapters)
        # The same hosts, in another order or spelling, are no change.
        instrument_session(s, hosts=("*.B.example.", "A.example"))
        assert s.adapters == before
        for hosts in (None, ["b.example"]):
            with pytest.raises(ValueError, match=r"has hosts=\('a.example', '.b.example'\)"):
                instrument_session(s, hosts=hosts)
        assert s.adapters == before


def test_instrument_session_keeps_the_adapter_settings_with_hosts() -> None:
    with requests.Session() as s:
        s.mount("https://", HTTPAdapter(max_retries=3))
        instrument_session(s, hosts=["a.example"])
        adapter = s.adapters["https://"]
        assert isinstance(adapter, SessionIdAdapter)
        assert adapter.max_retries.total == 3
        assert adapter.hosts == ("a.example",)


@pytest.mark.parametrize("hosts", [None, ["127.0.0.1"], ["a.example"]])
def test_a_pickled_session_keeps_its_hosts(url: str, hosts: list[str] | None) -> None:
    with instrument_session(requests.Session(), hosts=hosts) as s:
        copy = pickle.loads(pickle.dumps(s))
    with copy, session("sess-1"):
        adapter = copy.adapters["http://"]
        assert isinstance(adapter, SessionIdAdapter)
        assert adapter.hosts == (None if hosts is None else tuple(hosts))
        sent = hosts is None or "127.0.0.1" in hosts
        assert copy.get(url, timeout=10).json() == session_header(sent)


def test_an_adapter_pickled_without_hosts_sends_to_every_host(url: str) -> None:
    """The state an adapter pickled before the option existed holds no ``hosts``."""
    adapter = SessionIdAdapter.__new__(SessionIdAdapter)
    pickled = SessionIdAdapter(hosts=["a.example"])
    state = pickled.__getstate__()  # type: ignore[attr-defined]
    pickled.close()
    del state["hosts"]
    adapter.__setstate__(state)
    assert adapter.hosts is None
    with requests.Session() as s:
        s.mount("http://", adapter)
        with session("sess-1"):
            assert s.get(url, timeout=10).json() == {"x-session-id": ["sess-1"]}
