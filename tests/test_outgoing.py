"""The hosts option's matcher, on what no URL parser hands over (the
integrations' tests cover it through real clients)."""

from __future__ import annotations

from sessionctx._outgoing import hosts_option


def test_the_hosts_option_turns_down_a_host_that_is_no_ipv6_address() -> None:
    _, sends_to = hosts_option(["::1"])
    assert sends_to is not None
    assert sends_to("0::1") is True
    assert sends_to("not:an:address") is False
