"""The session id rule, written again from the text of SPEC §1 with plain loops.

The tests compare the library against this, so it must not share code (or a
regular expression) with ``sessionctx._validation``.

    a ``str`` of 1-200 characters, each printable ASCII (0x21-0x7E) except
    ``"`` ``,`` ``;`` ``\\``.
"""

from __future__ import annotations

import uuid

__all__ = ["EXCLUDED", "MAX_LENGTH", "follows_id_rule", "looks_generated"]

MAX_LENGTH = 200
EXCLUDED = ('"', ",", ";", "\\")


def follows_id_rule(value: object) -> bool:
    """Whether ``value`` is a valid session id according to SPEC §1."""
    if not isinstance(value, str):
        return False
    if len(value) < 1 or len(value) > MAX_LENGTH:
        return False
    for char in value:
        code = ord(char)
        if code < 0x21 or code > 0x7E:
            return False
        if char in EXCLUDED:
            return False
    return True


def looks_generated(value: str) -> bool:
    """Whether ``value`` has the shape of the default generator's ids: a canonical uuid4."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return str(parsed) == value and parsed.version == 4
