"""Cases and a server handler shared by the tests of the outgoing-request integrations
(httpx, requests)."""

from __future__ import annotations

import ipaddress
from contextlib import AbstractContextManager, nullcontext

import pytest

from sessionctx import ACCEPTED_HEADER_NAMES, session
from tests.support import QuietHandler, send_json

__all__ = [
    "BAD_HOSTS",
    "EXPLICIT_HEADERS",
    "HOSTS",
    "HOST_MATCHES",
    "NEXT_REQUESTS",
    "OTHER_HOST",
    "REDIRECTED",
    "RESENT",
    "SESSION_NAMES",
    "EchoHandler",
    "in_session",
    "session_header",
]

#: Every accepted session header name, lower case, in priority order.
SESSION_NAMES = tuple(name.lower() for name in ACCEPTED_HEADER_NAMES)

#: (headers the caller sets, session headers the server receives): the caller's wins.
EXPLICIT_HEADERS = [
    pytest.param({"X-Session-Id": "explicit"}, {"x-session-id": ["explicit"]}, id="same-name"),
    pytest.param({"x-session-id": "explicit"}, {"x-session-id": ["explicit"]}, id="lower-case"),
    pytest.param(
        {"X-TraceCtrl-Session": "explicit"}, {"x-tracectrl-session": ["explicit"]}, id="other-name"
    ),
    pytest.param(
        {"Mirascope-Session-Id": "explicit"},
        {"mirascope-session-id": ["explicit"]},
        id="lowest-priority-name",
    ),
]

#: One request object sent twice: (session of the first send, headers the caller sets on
#: the request between the sends, session of the second send, session headers the server
#: receives the second time). ``None``: no session active.
RESENT = [
    pytest.param("sess-a", {}, "sess-b", {"x-session-id": ["sess-b"]}, id="another-session"),
    pytest.param("sess-a", {}, None, {}, id="no-session"),
    pytest.param("sess-a", {}, "sess-a", {"x-session-id": ["sess-a"]}, id="same-session"),
    pytest.param(None, {}, "sess-b", {"x-session-id": ["sess-b"]}, id="first-sent-outside"),
    pytest.param(
        "sess-a",
        {"X-Session-Id": "explicit"},
        "sess-b",
        {"x-session-id": ["explicit"]},
        id="caller-replaced-ours",
    ),
    pytest.param(
        "sess-a",
        {"x-session-id": "explicit"},
        None,
        {"x-session-id": ["explicit"]},
        id="caller-replaced-ours-then-no-session",
    ),
    pytest.param(
        "sess-a",
        {"Mirascope-Session-Id": "explicit"},
        "sess-b",
        {"mirascope-session-id": ["explicit"]},
        id="caller-added-another-name",
    ),
]


#: The request of a redirect's last hop, built by the client from the first request, sent
#: again: (headers the caller sets on the first request, sent in ``sess-a``, session of
#: the second send, session headers the server receives the second time).
REDIRECTED = [
    pytest.param({}, "sess-b", {"x-session-id": ["sess-b"]}, id="another-session"),
    pytest.param({}, None, {}, id="no-session"),
    pytest.param({}, "sess-a", {"x-session-id": ["sess-a"]}, id="same-session"),
    pytest.param(
        {"X-Session-Id": "explicit"}, None, {"x-session-id": ["explicit"]}, id="caller-header"
    ),
    pytest.param(
        {"Mirascope-Session-Id": "sess-a"},
        "sess-b",
        {"mirascope-session-id": ["sess-a"]},
        id="caller-header-another-name",
    ),
]


#: The second loopback address, for a redirect that leaves the first host.
OTHER_HOST = "127.0.0.2"

#: (``hosts`` option, whether a request to ``127.0.0.1`` gets the id, whether one to
#: ``OTHER_HOST`` does).
HOSTS = [
    pytest.param(None, True, True, id="every-host"),
    pytest.param(["127.0.0.1"], True, False, id="listed"),
    pytest.param(("example.com", "127.0.0.1"), True, False, id="listed-among-others"),
    pytest.param([OTHER_HOST], False, True, id="the-other-one"),
    pytest.param(["localhost"], False, False, id="a-name-is-not-its-address"),
    pytest.param([], False, False, id="none"),
]

#: (``hosts`` option, URL, whether a request to that URL gets the id).
HOST_MATCHES = [
    pytest.param(["api.example.com"], "http://api.example.com/", True, id="exact"),
    pytest.param([" API.Example.COM. "], "http://api.example.com/", True, id="case-and-dot"),
    pytest.param(["api.example.com"], "http://API.EXAMPLE.COM./", True, id="url-case-and-dot"),
    pytest.param(["api.example.com"], "https://api.example.com:8443/x", True, id="any-port"),
    pytest.param(["example.com"], "http://api.example.com/", False, id="no-subdomains"),
    pytest.param(["api.example.com"], "http://example.com/", False, id="no-parent"),
    pytest.param([".example.com"], "http://example.com/", True, id="domain-itself"),
    pytest.param([".example.com"], "http://a.b.example.com/", True, id="domain-below"),
    pytest.param(["*.example.com"], "http://api.example.com/", True, id="star-domain"),
    pytest.param([".example.com"], "http://notexample.com/", False, id="domain-whole-labels"),
    pytest.param(["10.0.0.1"], "http://10.0.0.10/", False, id="ip-whole"),
    pytest.param(["::1"], "http://[::1]:8000/", True, id="ipv6"),
    pytest.param(["[::1]"], "http://[::1]/", True, id="ipv6-brackets"),
    pytest.param(["bücher.example"], "http://bücher.example/", True, id="idn"),
    pytest.param(["xn--bcher-kva.example"], "http://bücher.example/", True, id="idn-punycode"),
    pytest.param(["a" * 63 + ".example"], f"http://{'a' * 63}.example/", True, id="longest-label"),
    # IDNA 2008, as the clients encode it: not "fass.de", as Python's own codec has it.
    pytest.param(["faß.de"], "http://faß.de/", True, id="idna-2008"),
    pytest.param(["faß.de"], "http://fass.de/", False, id="idna-2008-not-2003"),
    pytest.param(["0:0:0:0:0:0:0:1"], "http://[::1]/", True, id="ipv6-any-form"),
    pytest.param(["::1"], "http://[0:0:0:0:0:0:0:1]/", True, id="ipv6-url-any-form"),
    pytest.param(["::1"], "http://[::2]/", False, id="ipv6-another"),
    # The clients look this up as a name, which may lead anywhere.
    pytest.param(["127.0.0.1"], "http://127.0.0.1./", False, id="ipv4-with-a-final-dot"),
]

#: A redirect's next request, built in ``sess-1`` by a client that does not follow
#: redirects, sent later from 127.0.0.1 to the other host: (session it is sent in,
#: ``hosts``, session headers the other host receives).
NEXT_REQUESTS = [
    pytest.param(None, ["127.0.0.1"], {}, id="unlisted-outside-any-session"),
    pytest.param("sess-2", ["127.0.0.1"], {}, id="unlisted-in-another-session"),
    pytest.param("sess-1", ["127.0.0.1"], {}, id="unlisted-in-the-same-session"),
    pytest.param(None, None, {}, id="every-host-outside-any-session"),
    pytest.param("sess-2", None, {"x-session-id": ["sess-2"]}, id="every-host-another-session"),
]

#: ``hosts`` values refused: (value, error, words the message holds).
BAD_HOSTS = [
    pytest.param("127.0.0.1", TypeError, "single str", id="a-str"),
    pytest.param(b"127.0.0.1", TypeError, "single bytes", id="bytes"),
    pytest.param(42, TypeError, "not int", id="an-int"),
    pytest.param([b"127.0.0.1"], TypeError, "hold str", id="bytes-entry"),
    # Refused at its first address, not after reading all 16,777,216 of them.
    pytest.param(
        ipaddress.ip_network("10.0.0.0/8"), TypeError, "not IPv4Address", id="an-ip-network"
    ),
    pytest.param(["http://127.0.0.1"], ValueError, "'http://127.0.0.1'", id="a-url"),
    pytest.param(["127.0.0.1:8000"], ValueError, "'127.0.0.1:8000'", id="a-port"),
    pytest.param(["a.example, b.example"], ValueError, "b.example", id="two-in-one"),
    pytest.param([""], ValueError, "''", id="empty"),
    pytest.param(["*"], ValueError, "'*'", id="a-wildcard"),
    pytest.param([".0.0.1"], ValueError, "'.0.0.1'", id="under-an-ipv4-address"),
    pytest.param([".::1"], ValueError, "'.::1'", id="under-an-ipv6-address"),
    pytest.param(["ü" * 70 + ".example"], ValueError, "IDNA", id="label-too-long-for-idna"),
    pytest.param(["..example.com"], ValueError, "'..example.com'", id="empty-label-first"),
    pytest.param(["a..b"], ValueError, "'a..b'", id="empty-label"),
    pytest.param(["a\nb.com"], ValueError, "'a\\nb.com'", id="a-line-break"),
    pytest.param(["exa mple.com"], ValueError, "'exa mple.com'", id="a-space"),
    pytest.param(["fe80::1%eth0"], ValueError, "'fe80::1%eth0'", id="ipv6-zone"),
    pytest.param(["1:2:3"], ValueError, "'1:2:3'", id="not-ipv6"),
    pytest.param(["a" * 64 + ".example"], ValueError, "63 characters", id="label-too-long"),
    pytest.param([("a" * 63 + ".") * 4 + "com"], ValueError, "253 in all", id="name-too-long"),
]


def session_header(sent: bool) -> dict[str, list[str]]:
    """What the echo server receives from a request sent in ``sess-1``: the id, or nothing."""
    return {"x-session-id": ["sess-1"]} if sent else {}


def in_session(sid: str | None) -> AbstractContextManager[object]:
    """``session(sid)``, or no session at all for ``None``."""
    return nullcontext() if sid is None else session(sid)


class EchoHandler(QuietHandler):
    """Answers with the session headers it received, as a list per lower-case name;
    ``/redirect`` redirects to ``/``, ``/redirect-to/HOST:PORT`` to ``http://HOST:PORT/``;
    ``/digest/redirect-to/HOST:PORT`` does so once a request has an ``Authorization``
    header, and asks for HTTP Digest authentication before."""

    def do_GET(self) -> None:
        if self.path.startswith("/digest/"):
            if "Authorization" not in self.headers:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.path = self.path.removeprefix("/digest")
        if self.path == "/redirect" or self.path.startswith("/redirect-to/"):
            target = self.path.removeprefix("/redirect-to/")
            self.send_response(302)
            self.send_header("Location", "/" if target == "/redirect" else f"http://{target}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        received = {
            name.lower(): self.headers.get_all(name)
            for name in dict.fromkeys(self.headers.keys())
            if name.lower() in SESSION_NAMES
        }
        send_json(self, received)
