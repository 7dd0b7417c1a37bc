"""Fixtures shared by the tests of the outgoing-request integrations."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.integrations.outgoing import OTHER_HOST, EchoHandler
from tests.support import serving_http


@pytest.fixture(scope="module")
def other_host_url() -> Iterator[str]:
    """An ``EchoHandler`` on the second loopback address, ``http://127.0.0.2:PORT/``."""
    try:
        with socket.socket() as probe:
            probe.bind((OTHER_HOST, 0))
    except OSError as error:  # macOS configures 127.0.0.1 alone
        pytest.skip(f"{OTHER_HOST} is not a loopback address here: {error}")
    with serving_http(EchoHandler, OTHER_HOST) as base:
        yield f"{base}/"
