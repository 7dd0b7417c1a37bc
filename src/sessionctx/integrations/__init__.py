"""Optional integrations, one module per library, each imported only by you.

- :mod:`sessionctx.integrations.structlog`: ``add_session_id`` processor
- :mod:`sessionctx.integrations.httpx`: ``SessionTransport``, ``AsyncSessionTransport``
- :mod:`sessionctx.integrations.requests`: ``SessionIdAdapter``, ``instrument_session``
- :mod:`sessionctx.integrations.opentelemetry`: ``SessionSpanProcessor``
- :mod:`sessionctx.integrations.celery`: ``connect``, ``disconnect``

Importing this package imports none of them. A module whose library is not
installed raises ``ImportError`` naming the extra to install, e.g.
``pip install "sessionctx[httpx]"``.
"""

from __future__ import annotations

__all__: list[str] = []
