"""The session id rule, written again from the text of SPEC §1 with plain loops.

The tests compare the library against this, so it must not share code (or a
regular expression) with ``sessionctx._validation``.

    a ``str`` of 1-200 characters, each printable ASCII (0x21-0x7E) except
    ``"`` ``,`` ``;`` ``\\``.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Sequence

__all__ = ["EXCLUDED", "MAX_LENGTH", "echoed_session", "follows_id_rule", "looks_generated"]

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


def echoed_session(
    key: str,
    status: int | None,
    echoed: Sequence[bytes],
    continued: str | None,
    refused: Container[str],
    problems: list[str],
) -> str | None:
    """The one session id (``echoed``) a response to the request ``key`` carried,
    or ``None`` when it carried none or several, or its status was not 200.

    Each fault goes into ``problems``: an id other than the ``continued`` one the
    request sent, or, where the server had to make one, an id that breaks the
    rule, is not the default generator's, or is one of the ``refused`` inbound
    values.
    """
    if status != 200 or len(echoed) != 1:
        problems.append(f"{key}: status {status}, session headers {list(echoed)}")
        return None
    sid = echoed[0].decode("latin-1")
    if continued is not None and sid != continued:
        problems.append(f"{key}: sent {continued!r}, got back {sid!r}")
    if continued is None and (
        not follows_id_rule(sid) or not looks_generated(sid) or sid in refused
    ):
        problems.append(f"{key}: generated id {sid!r} is invalid or a refused value")
    return sid
