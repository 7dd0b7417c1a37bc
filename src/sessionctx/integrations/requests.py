"""A ``requests`` transport adapter that sends the active session id.

::

    import requests
    from sessionctx.integrations.requests import instrument_session

    http = instrument_session(requests.Session())
    http.get("https://api.example.com/items")   # carries X-Session-Id inside a session

or mount the adapter yourself, with any ``HTTPAdapter`` options::

    from sessionctx.integrations.requests import SessionIdAdapter

    http.mount("https://", SessionIdAdapter(max_retries=3, pool_maxsize=20))

The header is written into the ``PreparedRequest`` being sent, so
``response.request.headers`` shows it. A prepared request sent again
(``http.send(prepared)``) carries the id of the session it is sent in then, or
none outside a session, not the one it was first sent in.
"""

from __future__ import annotations

import weakref
from typing import Any

from sessionctx._extras import missing_library

try:
    import requests
    from requests.adapters import HTTPAdapter
except ImportError as _error:
    missing_library(_error, __name__, "requests", "pip install 'sessionctx[requests]'")


from sessionctx.session import _add_outgoing_header

__all__ = ["SessionIdAdapter", "instrument_session"]

_PREFIXES = ("http://", "https://")

# The id an adapter put on each request it sent, kept as long as the request.
_added: weakref.WeakKeyDictionary[requests.PreparedRequest, str] = weakref.WeakKeyDictionary()


class SessionIdAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that adds ``X-Session-Id`` while a session is active.

    The id is read in the thread that sends the request. A request on which
    the caller set one of the accepted session headers is left as it is, so
    an explicit header wins. A prepared request sent again gets the id of the
    session active then (none outside a session) in place of the one added
    before. Takes the same options as ``HTTPAdapter``.
    """

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        """Add the session header unless the request carries one of the accepted names."""
        super().add_headers(request, **kwargs)
        _add_outgoing_header(request, request.headers, _added)


def _copy_settings(source: object, target: SessionIdAdapter) -> None:
    # An HTTPAdapter pickles exactly its settings (max_retries, pool sizes,
    # pool_block); the type stubs leave these two methods out.
    source_any: Any = source
    target_any: Any = target
    target_any.__setstate__(source_any.__getstate__())


def instrument_session(s: requests.Session) -> requests.Session:
    """Mount :class:`SessionIdAdapter` on ``s`` for ``http://`` and ``https://``; return ``s``.

    A plain ``HTTPAdapter`` mounted there is replaced by a ``SessionIdAdapter``
    with the same ``max_retries`` and pool settings (and then closed). Calling
    it again changes nothing. Any other adapter class mounted there raises
    ``TypeError``: mount a subclass of it that also derives from
    ``SessionIdAdapter`` instead. Adapters mounted on longer prefixes (one
    host, say) are not touched.
    """
    if not isinstance(s, requests.Session):
        raise TypeError(f"expected a requests.Session, not {type(s).__name__}: {s!r}")
    current = {prefix: s.adapters.get(prefix) for prefix in _PREFIXES}
    for prefix, adapter in current.items():
        if adapter is None or type(adapter) is HTTPAdapter:
            continue
        if not isinstance(adapter, SessionIdAdapter):
            raise TypeError(
                f"cannot instrument the {type(adapter).__name__} mounted on {prefix!r}; "
                "mount a subclass of it and SessionIdAdapter instead"
            )
    for prefix, adapter in current.items():
        if isinstance(adapter, SessionIdAdapter):
            continue
        replacement = SessionIdAdapter()
        if adapter is not None:
            _copy_settings(adapter, replacement)
        s.mount(prefix, replacement)
        if adapter is not None:
            adapter.close()
    return s
