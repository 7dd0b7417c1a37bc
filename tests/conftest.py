from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionctx import current_session
from sessionctx._validation import known_ids, known_raw_ids


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
def forget_known_ids() -> Iterator[None]:
    """The middlewares' sets of ids seen lately start (and are left) empty."""
    known_ids.clear()
    known_raw_ids.clear()
    yield
    known_ids.clear()
    known_raw_ids.clear()
