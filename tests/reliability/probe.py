"""What the ASGI and WSGI reliability apps share: their fault and the state ``/probe`` reports."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppFault", "ProbeState"]


class AppFault(Exception):
    """Raised on purpose by a fault endpoint."""


@dataclass
class ProbeState:
    pid: int
    #: The thread that served the latest request other than ``/probe``.
    request_thread: int = 0
    requests: int = 0
    in_flight: int = 0
    dirty_entries: int = 0
    dirty_exits: int = 0
    last_dirty: str | None = None
