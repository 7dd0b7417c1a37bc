from __future__ import annotations

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
