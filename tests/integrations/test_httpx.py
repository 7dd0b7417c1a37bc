"""``SessionTransport`` / ``AsyncSessionTransport`` wrapping httpx's ``MockTransport``, and
httpx's own transports talking to servers on 127.0.0.1, one of them a forward proxy."""

from __future__ import annotations

import asyncio
import gc
import inspect
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx
import pytest

from sessionctx import session
from sessionctx.integrations.httpx import AsyncSessionTransport, SessionTransport
from tests.integrations.outgoing import (
    BAD_HOSTS,
    EXPLICIT_HEADERS,
    HOST_MATCHES,
    HOSTS,
    NEXT_REQUESTS,
    REDIRECTED,
    RESENT,
    SESSION_NAMES,
    EchoHandler,
    in_session,
    session_header,
)
from tests.support import QuietHandler, send_json, serving_http


def echo(request: httpx.Request) -> httpx.Response:
    """Answer with the session headers the server received, as a list per name."""
    return httpx.Response(
        200,
        json={
            name: request.headers.get_list(name)
            for name in SESSION_NAMES
            if name in request.headers
        },
    )


def sync_client() -> httpx.Client:
    return httpx.Client(transport=SessionTransport(httpx.MockTransport(echo)))


def async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncSessionTransport(httpx.MockTransport(echo)))


def test_sync_requests_in_a_session_carry_its_id() -> None:
    with sync_client() as client:
        with session("sess-1"):
            inside = client.get("http://svc/").json()
        outside = client.get("http://svc/").json()
    assert inside == {"x-session-id": ["sess-1"]}
    assert outside == {}


@pytest.mark.parametrize(("headers", "received"), EXPLICIT_HEADERS)
def test_sync_explicit_header_wins(headers: dict[str, str], received: dict[str, object]) -> None:
    with sync_client() as client, session("sess-1"):
        assert client.get("http://svc/", headers=headers).json() == received


def test_sync_client_default_headers_count_as_explicit() -> None:
    transport = SessionTransport(httpx.MockTransport(echo))
    client = httpx.Client(transport=transport, headers={"X-Session-Id": "fixed"})
    with client, session("sess-1"):
        assert client.get("http://svc/").json() == {"x-session-id": ["fixed"]}


@pytest.mark.anyio
async def test_async_requests_in_a_session_carry_its_id() -> None:
    async with async_client() as client:
        async with session("sess-1"):
            inside = (await client.get("http://svc/")).json()
        outside = (await client.get("http://svc/")).json()
    assert inside == {"x-session-id": ["sess-1"]}
    assert outside == {}


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "received"), EXPLICIT_HEADERS)
async def test_async_explicit_header_wins(
    headers: dict[str, str], received: dict[str, object]
) -> None:
    async with async_client() as client, session("sess-1"):
        assert (await client.get("http://svc/", headers=headers)).json() == received


@pytest.mark.anyio
async def test_concurrent_tasks_send_their_own_ids() -> None:
    async def call(client: httpx.AsyncClient, sid: str) -> object:
        async with session(sid):
            await asyncio.sleep(0)
            return (await client.get("http://svc/")).json()

    async with async_client() as client:
        results = await asyncio.gather(*(call(client, f"sess-{i}") for i in range(5)))
    assert results == [{"x-session-id": [f"sess-{i}"]} for i in range(5)]


def test_defaults_wrap_httpx_own_transports() -> None:
    assert isinstance(SessionTransport().transport, httpx.HTTPTransport)
    assert isinstance(AsyncSessionTransport().transport, httpx.AsyncHTTPTransport)


@pytest.mark.parametrize(
    ("cls", "transport"),
    [
        pytest.param(SessionTransport, httpx.AsyncHTTPTransport(), id="sync-given-async"),
        pytest.param(AsyncSessionTransport, httpx.HTTPTransport(), id="async-given-sync"),
        pytest.param(SessionTransport, echo, id="sync-given-handler"),
    ],
)
def test_wrong_transport_type_is_rejected(cls: type, transport: object) -> None:
    with pytest.raises(TypeError, match="transport must be"):
        cls(transport)


class RecordingTransport(httpx.MockTransport):
    """Records the lifecycle calls that reach it."""

    def __init__(self) -> None:
        super().__init__(echo)
        self.calls: list[str] = []

    def __enter__(self) -> RecordingTransport:
        self.calls.append("enter")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.calls.append("exit")

    def close(self) -> None:
        self.calls.append("close")

    async def __aenter__(self) -> RecordingTransport:
        self.calls.append("aenter")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.calls.append("aexit")

    async def aclose(self) -> None:
        self.calls.append("aclose")


def test_sync_lifecycle_reaches_the_wrapped_transport() -> None:
    inner = RecordingTransport()
    with httpx.Client(transport=SessionTransport(inner)) as client:
        client.get("http://svc/")
    httpx.Client(transport=SessionTransport(inner)).close()
    assert inner.calls == ["enter", "exit", "close"]


@pytest.mark.anyio
async def test_async_lifecycle_reaches_the_wrapped_transport() -> None:
    inner = RecordingTransport()
    async with httpx.AsyncClient(transport=AsyncSessionTransport(inner)) as client:
        await client.get("http://svc/")
    await httpx.AsyncClient(transport=AsyncSessionTransport(inner)).aclose()
    assert inner.calls == ["aenter", "aexit", "aclose"]


class ProxyHandler(QuietHandler):
    """A forward proxy for plain HTTP that answers itself: with the request target
    (absolute, as clients send to a proxy) and the session header it received."""

    def do_GET(self) -> None:
        send_json(self, {"target": self.path, "session": self.headers.get_all("X-Session-Id")})


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    with serving_http(ProxyHandler) as url:
        yield url


@pytest.mark.server
def test_a_proxy_is_given_to_the_wrapped_transport(proxy_url: str) -> None:
    # What the README and the module say: the client's own proxy= goes around
    # the session transport; the wrapped transport's proxy goes through it.
    # httpx < 0.26 names the client's argument proxies=.
    client_proxy = "proxy" if "proxy" in inspect.signature(httpx.Client).parameters else "proxies"
    options: dict[str, Any] = {client_proxy: proxy_url}
    around = httpx.Client(transport=SessionTransport(), timeout=10, **options)
    through = httpx.Client(
        transport=SessionTransport(httpx.HTTPTransport(proxy=httpx.Proxy(proxy_url))), timeout=10
    )
    with around, through, session("sess-proxy"):
        sent_around = around.get("http://service.invalid/a").json()
        sent_through = through.get("http://service.invalid/b").json()

    assert sent_around == {"target": "http://service.invalid/a", "session": None}
    assert sent_through == {"target": "http://service.invalid/b", "session": ["sess-proxy"]}


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serving_http(EchoHandler) as base:
        yield f"{base}/"


@pytest.mark.server
def test_the_sent_request_shows_the_header(echo_url: str) -> None:
    with httpx.Client(transport=SessionTransport(), timeout=10) as client:
        request = client.build_request("GET", echo_url)
        with session("sess-1"):
            response = client.send(request)
    assert response.request is request
    assert request.headers["X-Session-Id"] == "sess-1"


@pytest.mark.server
@pytest.mark.parametrize(("first", "between", "second", "received"), RESENT)
def test_sync_resent_request_carries_the_session_it_is_sent_in(
    echo_url: str,
    first: str | None,
    between: dict[str, str],
    second: str | None,
    received: dict[str, object],
) -> None:
    with httpx.Client(transport=SessionTransport(), timeout=10) as client:
        request = client.build_request("GET", echo_url)
        with in_session(first):
            client.send(request)
        request.headers.update(between)
        with in_session(second):
            assert client.send(request).json() == received


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize(("first", "between", "second", "received"), RESENT)
async def test_async_resent_request_carries_the_session_it_is_sent_in(
    echo_url: str,
    first: str | None,
    between: dict[str, str],
    second: str | None,
    received: dict[str, object],
) -> None:
    async with httpx.AsyncClient(transport=AsyncSessionTransport(), timeout=10) as client:
        request = client.build_request("GET", echo_url)
        with in_session(first):
            await client.send(request)
        request.headers.update(between)
        with in_session(second):
            assert (await client.send(request)).json() == received


@pytest.mark.server
@pytest.mark.parametrize(("headers", "second", "received"), REDIRECTED)
def test_sync_resent_request_of_a_redirect_carries_the_session_it_is_sent_in(
    echo_url: str, headers: dict[str, str], second: str | None, received: dict[str, object]
) -> None:
    with httpx.Client(transport=SessionTransport(), follow_redirects=True, timeout=10) as client:
        with session("sess-a"):
            response = client.get(f"{echo_url}redirect", headers=headers)
        assert [hop.status_code for hop in response.history] == [302]
        with in_session(second):
            assert client.send(response.request).json() == received


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "second", "received"), REDIRECTED)
async def test_async_resent_request_of_a_redirect_carries_the_session_it_is_sent_in(
    echo_url: str, headers: dict[str, str], second: str | None, received: dict[str, object]
) -> None:
    async with httpx.AsyncClient(
        transport=AsyncSessionTransport(), follow_redirects=True, timeout=10
    ) as client:
        async with session("sess-a"):
            response = await client.get(f"{echo_url}redirect", headers=headers)
        assert [hop.status_code for hop in response.history] == [302]
        with in_session(second):
            assert (await client.send(response.request)).json() == received


@pytest.mark.server
@pytest.mark.parametrize(("headers", "received"), EXPLICIT_HEADERS)
def test_sync_explicit_header_wins_on_every_send(
    echo_url: str, headers: dict[str, str], received: dict[str, object]
) -> None:
    with httpx.Client(transport=SessionTransport(), timeout=10) as client:
        request = client.build_request("GET", echo_url, headers=headers)
        sent = []
        for sid in ("sess-a", "sess-b", None):
            with in_session(sid):
                sent.append(client.send(request).json())
    assert sent == [received] * 3


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "received"), EXPLICIT_HEADERS)
async def test_async_explicit_header_wins_on_every_send(
    echo_url: str, headers: dict[str, str], received: dict[str, object]
) -> None:
    async with httpx.AsyncClient(transport=AsyncSessionTransport(), timeout=10) as client:
        request = client.build_request("GET", echo_url, headers=headers)
        sent = []
        for sid in ("sess-a", "sess-b", None):
            with in_session(sid):
                sent.append((await client.send(request)).json())
    assert sent == [received] * 3


@pytest.mark.server
@pytest.mark.anyio
async def test_concurrent_tasks_resend_their_own_requests(echo_url: str) -> None:
    async def call(client: httpx.AsyncClient, index: int) -> list[object]:
        request = client.build_request("GET", echo_url)
        sent = []
        for sid in (f"a-{index}", f"b-{index}", None):
            with in_session(sid):
                await asyncio.sleep(0)
                sent.append((await client.send(request)).json())
        return sent

    async with httpx.AsyncClient(transport=AsyncSessionTransport(), timeout=10) as client:
        results = await asyncio.gather(*(call(client, i) for i in range(5)))
    assert results == [
        [{"x-session-id": [f"a-{i}"]}, {"x-session-id": [f"b-{i}"]}, {}] for i in range(5)
    ]


@pytest.mark.server
@pytest.mark.anyio
async def test_a_sent_request_is_not_kept_alive(echo_url: str) -> None:
    with httpx.Client(transport=SessionTransport(), timeout=10) as client:
        request = client.build_request("GET", echo_url)
        with session("sess-1"):
            response = client.send(request)
        sent = [weakref.ref(request)]
        del request, response
    async with httpx.AsyncClient(transport=AsyncSessionTransport(), timeout=10) as async_client:
        request = async_client.build_request("GET", echo_url)
        async with session("sess-1"):
            response = await async_client.send(request)
        sent.append(weakref.ref(request))
        del request, response
    gc.collect()
    assert [ref() for ref in sent] == [None, None]


@pytest.mark.parametrize(("hosts", "url", "sent"), HOST_MATCHES)
def test_hosts_decide_which_hosts_get_the_id(hosts: list[str], url: str, sent: bool) -> None:
    received = session_header(sent)
    sync = httpx.Client(transport=SessionTransport(httpx.MockTransport(echo), hosts=hosts))
    with sync, session("sess-1"):
        assert sync.get(url).json() == received

    async def send_async() -> object:
        transport = AsyncSessionTransport(httpx.MockTransport(echo), hosts=hosts)
        async with httpx.AsyncClient(transport=transport) as client, session("sess-1"):
            return (await client.get(url)).json()

    assert asyncio.run(send_async()) == received


@pytest.mark.parametrize(("hosts", "error", "words"), BAD_HOSTS)
@pytest.mark.parametrize("cls", [SessionTransport, AsyncSessionTransport])
def test_bad_hosts_are_refused(cls: type, hosts: object, error: type, words: str) -> None:
    with pytest.raises(error, match="hosts") as raised:
        cls(hosts=hosts)
    assert words in str(raised.value)


@pytest.mark.parametrize("cls", [SessionTransport, AsyncSessionTransport])
def test_hosts_are_shown_as_a_tuple_and_cannot_be_set(cls: type) -> None:
    assert cls().hosts is None
    transport = cls(hosts=["a.example", ".b.example"])
    assert transport.hosts == ("a.example", ".b.example")
    with pytest.raises(AttributeError):
        transport.hosts = ["c.example"]


def test_an_x_session_id_holding_the_active_id_is_not_sent_to_an_unlisted_host() -> None:
    """It counts as the transport's own (a copy of it), whoever set it."""
    transport = SessionTransport(httpx.MockTransport(echo), hosts=["a.example"])
    with httpx.Client(transport=transport) as client, session("sess-1"):
        for header in ("X-Session-Id", "x-session-id"):
            unlisted = client.get("http://b.example/", headers={header: "sess-1"})
            listed = client.get("http://a.example/", headers={header: "sess-1"})
            assert unlisted.json() == {}
            assert listed.json() == {"x-session-id": ["sess-1"]}
        other = client.get("http://b.example/", headers={"X-Session-Id": "explicit"})
        assert other.json() == {"x-session-id": ["explicit"]}


def test_hosts_may_be_an_iterator() -> None:
    transport = SessionTransport(httpx.MockTransport(echo), hosts=iter(["a.example"]))
    assert transport.hosts == ("a.example",)
    with httpx.Client(transport=transport) as client, session("sess-1"):
        assert client.get("http://a.example/").json() == {"x-session-id": ["sess-1"]}
        assert client.get("http://b.example/").json() == {}


@pytest.mark.server
@pytest.mark.parametrize(("hosts", "sent", "sent_away"), HOSTS)
def test_sync_hosts_on_a_real_server_and_a_redirect_to_another_host(
    echo_url: str, other_host_url: str, hosts: list[str] | None, sent: bool, sent_away: bool
) -> None:
    """127.0.0.1 redirects to the other loopback address."""
    transport = SessionTransport(hosts=hosts)
    away = other_host_url.removeprefix("http://").rstrip("/")
    client = httpx.Client(transport=transport, follow_redirects=True, timeout=10)
    with client, session("sess-1"):
        assert client.get(echo_url).json() == session_header(sent)
        response = client.get(f"{echo_url}redirect-to/{away}")
    assert [hop.status_code for hop in response.history] == [302]
    assert response.url == other_host_url
    # The id is taken off a redirect's request once its response is in; the
    # last request keeps the one it was sent with.
    assert "x-session-id" not in response.history[0].request.headers
    assert response.request.headers.get("x-session-id") == ("sess-1" if sent_away else None)
    assert response.json() == session_header(sent_away)


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize(("hosts", "sent", "sent_away"), HOSTS)
async def test_async_hosts_on_a_real_server_and_a_redirect_to_another_host(
    echo_url: str, other_host_url: str, hosts: list[str] | None, sent: bool, sent_away: bool
) -> None:
    transport = AsyncSessionTransport(hosts=hosts)
    away = other_host_url.removeprefix("http://").rstrip("/")
    client = httpx.AsyncClient(transport=transport, follow_redirects=True, timeout=10)
    async with client, session("sess-1"):
        first = (await client.get(echo_url)).json()
        response = await client.get(f"{echo_url}redirect-to/{away}")
    assert first == session_header(sent)
    assert response.url == other_host_url
    assert response.json() == session_header(sent_away)


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize("hosts", [None, ["127.0.0.1"]], ids=["every-host", "listed"])
async def test_a_redirect_to_a_host_of_a_plain_mount_gets_no_id(
    echo_url: str, other_host_url: str, hosts: list[str] | None
) -> None:
    """The client copies the first request's headers into the redirect's; the
    other host's own transport adds nothing, and must find no copy of the id."""
    away = other_host_url.removeprefix("http://").rstrip("/")
    redirect = f"{echo_url}redirect-to/{away}"
    sync = httpx.Client(
        transport=SessionTransport(hosts=hosts),
        mounts={f"http://{away}": httpx.HTTPTransport()},
        follow_redirects=True,
        timeout=10,
    )
    async_client = httpx.AsyncClient(
        transport=AsyncSessionTransport(hosts=hosts),
        mounts={f"http://{away}": httpx.AsyncHTTPTransport()},
        follow_redirects=True,
        timeout=10,
    )
    async with async_client:
        with sync, session("sess-1"):
            response = sync.get(redirect)
            async_response = await async_client.get(redirect)
    for each in (response, async_response):
        assert [hop.status_code for hop in each.history] == [302]
        assert each.url == other_host_url
        assert each.json() == {}


@pytest.mark.server
@pytest.mark.parametrize("hosts", [None, ["127.0.0.1"]], ids=["every-host", "listed"])
def test_a_redirect_after_digest_authentication_carries_no_stale_id(
    echo_url: str, other_host_url: str, hosts: list[str] | None
) -> None:
    away = other_host_url.removeprefix("http://").rstrip("/")
    client = httpx.Client(
        transport=SessionTransport(hosts=hosts),
        mounts={f"http://{away}": httpx.HTTPTransport()},
        auth=httpx.DigestAuth("user", "password"),
        follow_redirects=True,
        timeout=10,
    )
    with client, session("sess-1"):
        response = client.get(f"{echo_url}digest/redirect-to/{away}")
    assert [hop.status_code for hop in response.history] == [401, 302]
    assert response.url == other_host_url
    assert response.json() == {}


@pytest.mark.server
@pytest.mark.parametrize(("later", "hosts", "received"), NEXT_REQUESTS)
def test_a_redirects_next_request_sent_later_carries_no_stale_id(
    echo_url: str,
    other_host_url: str,
    later: str | None,
    hosts: list[str] | None,
    received: dict[str, list[str]],
) -> None:
    away = other_host_url.removeprefix("http://").rstrip("/")
    with httpx.Client(transport=SessionTransport(hosts=hosts), timeout=10) as client:
        with session("sess-1"):
            response = client.get(f"{echo_url}redirect-to/{away}")
        next_request = response.next_request
        assert next_request is not None
        assert str(next_request.url) == other_host_url
        with in_session(later):
            assert client.send(next_request).json() == received


@pytest.mark.server
def test_a_header_of_the_callers_own_reaches_any_host(echo_url: str, other_host_url: str) -> None:
    away = other_host_url.removeprefix("http://").rstrip("/")
    transport = SessionTransport(hosts=["127.0.0.1"])
    client = httpx.Client(transport=transport, follow_redirects=True, timeout=10)
    with client, session("sess-1"):
        response = client.get(f"{echo_url}redirect-to/{away}", headers={"X-Session-Id": "explicit"})
        unlisted = client.get(other_host_url, headers={"Mirascope-Session-Id": "sess-1"})
    assert response.json() == {"x-session-id": ["explicit"]}
    assert unlisted.json() == {"mirascope-session-id": ["sess-1"]}
