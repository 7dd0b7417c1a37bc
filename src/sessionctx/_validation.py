"""The session id rule, and the default id generator.

This module is the only place that defines what a valid session id is. The core
API and header extraction call into it; the middlewares' fast paths write the
rule out with its table and length bound (a call would cost more than the
check).

The rule: a ``str`` of 1-200 characters, each printable ASCII (0x21-0x7E) except
``"`` ``,`` ``;`` and ``\\``. Values are never stripped.
"""

from __future__ import annotations

import os
import re
from collections import deque
from os import urandom

__all__ = [
    "MAX_SESSION_ID_LENGTH",
    "generate_session_id",
    "is_valid_session_id",
    "validate_session_id",
]

MAX_SESSION_ID_LENGTH = 200

# Printable ASCII without space, '"' (0x22), ',' (0x2C), ';' (0x3B) and '\' (0x5C):
# the characters that can break a header value, a cookie or a baggage list.
_ALLOWED = r"\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e"
_ID_PATTERN = re.compile(f"[{_ALLOWED}]{{1,{MAX_SESSION_ID_LENGTH}}}")
_BAD_CHAR = re.compile(f"[^{_ALLOWED}]")

#: ``_match_id(value)`` is truthy exactly when ``value`` (a str) follows the rule.
_match_id = _ID_PATTERN.fullmatch

#: The rule for raw (latin-1) header bytes, and for ASCII str once encoded, as a
#: ``bytes.translate`` table that maps every byte the rule allows to a non-zero
#: byte and every other byte to 0.
_RAW_ID_TABLE = bytes(c if 0x21 <= c <= 0x7E and c not in b'",;\\' else 0 for c in range(256))


def _raw_id_ok(value: bytes) -> bool:
    """The id rule for raw header bytes; several times faster there than the regex.

    One table pass in C: a 0 in the translated value marks a byte the rule
    does not allow.
    """
    return 0 < len(value) <= MAX_SESSION_ID_LENGTH and 0 not in value.translate(_RAW_ID_TABLE)


def is_valid_session_id(value: object) -> bool:
    """Return whether ``value`` is a valid session id.

    >>> is_valid_session_id("user-session-abc123"), is_valid_session_id(" abc")
    (True, False)
    """
    return isinstance(value, str) and _match_id(value) is not None


def validate_session_id(value: object) -> str:
    """Return ``value`` unchanged if it is a valid session id, else raise.

    Raises ``TypeError`` when ``value`` is not a ``str`` and ``ValueError`` naming
    the rule that failed otherwise (the value is shown via ``repr``, cut to 50
    characters).

    >>> validate_session_id("0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69")
    '0b7e3f0e-5a1c-4b8e-9a57-1f2d3c4b5a69'
    """
    if not isinstance(value, str):
        raise TypeError(f"session id must be a str, not {type(value).__name__}: {_shown(value)}")
    if _match_id(value) is not None:
        return value
    if not value:
        raise ValueError("session id must not be empty")
    if len(value) > MAX_SESSION_ID_LENGTH:
        raise ValueError(
            f"session id must be at most {MAX_SESSION_ID_LENGTH} characters, "
            f"got {len(value)}: {_shown(value)}"
        )
    bad = _BAD_CHAR.search(value)
    if bad is None:  # the pattern failed on length or on a character, both handled above
        raise AssertionError(f"unreachable: {value!r} fails the id pattern for no known reason")
    raise ValueError(
        "session id may contain only printable ASCII except space and "
        f"'\"', ',', ';', '\\'; found {bad.group()!r} at index {bad.start()}: {_shown(value)}"
    )


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        # The error about a value must not fail on its repr() in turn.
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 50 else text[:47] + "..."


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}

# Ids are made 64 at a time from one ``os.urandom`` call: the system call costs
# more than formatting an id, and ids are made on the request path. The pool
# is a deque because ``popleft`` is atomic, so threads never share an id.
_BATCH_BYTES = 16 * 64
_pool: deque[str] = deque()
_take = _pool.popleft


def _refill() -> None:
    h = urandom(_BATCH_BYTES).hex()
    # Version nibble (offset 12) becomes 4; the variant nibble (offset 16) gets
    # its top two bits set to 10, i.e. one of 8, 9, a, b.
    _pool.extend(
        [
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
            f"{_VARIANT[h[i + 16]]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, len(h), 32)
        ]
    )


# A forked child must never hand out ids its parent also holds (gunicorn
# workers forked from a parent that made ids, for one).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.clear)


def generate_session_id() -> str:
    """Return a random version-4 UUID string with dashes (36 characters).

    Built straight from ``os.urandom`` bytes with the version and variant bits
    set, which costs a fraction of ``str(uuid.uuid4())``; the result parses as
    ``uuid.UUID(...)`` with ``version == 4``. Safe to call from any thread,
    and across ``fork()``.
    """
    while True:
        try:
            return _take()
        except IndexError:
            _refill()
