"""How big the reliability runs are: small in ``make test``, large in ``make stress``.

``make stress`` sets ``SESSIONCTX_STRESS=1``; every size the suite uses is read
from :data:`SIZES`, so the two runs differ only here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import HealthCheck, settings

__all__ = ["FUZZ_SETTINGS", "SIZES", "Sizes"]


@dataclass(frozen=True)
class Sizes:
    """One set of run sizes."""

    name: str
    #: Requests sent to each real server in the cross-talk test.
    load_requests: int
    #: Requests in flight at once against each server (also the client's pool size).
    load_concurrency: int
    #: Requests sent over HTTP/2 to hypercorn with each worker class (trio: a quarter).
    h2_requests: int
    #: HTTP/2 connections those requests share.
    h2_connections: int
    #: Streams in flight at once on each HTTP/2 connection.
    h2_streams: int
    #: Requests of the HTTP/2 reset test, a third of them reset by the client.
    h2_reset_requests: int
    #: Requests driven through each middleware in-process by the leak test.
    leak_requests: int
    #: Examples per hypothesis property.
    fuzz_examples: int
    #: Upper bound for one test, in seconds (pytest-timeout).
    test_timeout: float


SMALL = Sizes(
    name="make test",
    load_requests=2_000,
    load_concurrency=50,
    h2_requests=1_000,
    h2_connections=4,
    h2_streams=50,
    h2_reset_requests=300,
    leak_requests=50_000,
    fuzz_examples=150,
    test_timeout=120,
)
STRESS = Sizes(
    name="make stress",
    load_requests=100_000,
    load_concurrency=100,
    h2_requests=20_000,
    h2_connections=4,
    h2_streams=250,
    h2_reset_requests=5_000,
    leak_requests=1_000_000,
    fuzz_examples=2_000,
    test_timeout=1_800,
)


def _stress_requested() -> bool:
    return os.environ.get("SESSIONCTX_STRESS", "").strip() not in ("", "0")


SIZES = STRESS if _stress_requested() else SMALL

# Derandomized and without an example database, so a CI run is reproducible and
# writes nothing to the checkout; no deadline, since the machine is shared.
FUZZ_SETTINGS = settings(
    max_examples=SIZES.fuzz_examples,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
