from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from sessionctx import current_session


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_session_leaks() -> Iterator[None]:
    """Every test starts and ends with no session in the test's own context."""
    assert current_session() is None, "a previous test leaked a session"
    yield
    assert current_session() is None, "this test leaked a session into its context"


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of its own for each test, not propagating to the root."""
    log = logging.getLogger(f"tests.logger.{request.node.nodeid}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    for log_filter in list(log.filters):
        log.removeFilter(log_filter)
