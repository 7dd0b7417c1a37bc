"""What the demo records while it runs: the agents' log lines and their spans.

Log records of the ``agent-a`` and ``agent-b`` loggers pass through
``SessionIdFilter`` and are kept as formatted lines (``session=<id>`` in each).
Spans go through ``SessionSpanProcessor``, which sets ``session.id`` at span start
from the session active in the code that starts the span, and then to an
``InMemorySpanExporter``. Each agent has its own tracer, named after it, so a span's
instrumentation scope says which service recorded it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from sessionctx.integrations.opentelemetry import SessionSpanProcessor
from sessionctx.log_filters import SessionIdFilter

__all__ = ["LOG_FORMAT", "SERVICES", "LogLines", "Telemetry", "recording"]

SERVICES = ("agent-a", "agent-b")
LOG_FORMAT = "%(name)s %(levelname)s session=%(session_id)s %(message)s"
_SESSION_IN_LINE = re.compile(r"session=(\S+)")


class LogLines(logging.Handler):
    """Keeps each formatted record, so the story can print and check them."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(SessionIdFilter())
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def drain(self) -> list[str]:
        """The lines logged since the last call."""
        self.acquire()
        try:
            lines, self.lines = self.lines, []
        finally:
            self.release()
        return lines

    @staticmethod
    def session_of(line: str) -> str | None:
        """The ``session=<id>`` value of a line."""
        match = _SESSION_IN_LINE.search(line)
        return match.group(1) if match else None


class Telemetry:
    """The demo's tracer provider, span exporter and log capture."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SessionSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.logs = LogLines()
        self.spans: list[ReadableSpan] = []

    def tracer(self, service: str) -> Tracer:
        """The tracer of one service; its spans' instrumentation scope is ``service``."""
        return self.provider.get_tracer(service)

    def drain_spans(self) -> list[ReadableSpan]:
        """The spans finished since the last call (all are also kept in ``spans``)."""
        finished = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        self.spans.extend(finished)
        return finished


@contextmanager
def recording() -> Iterator[Telemetry]:
    """Capture the agents' logs and spans for the duration of the block."""
    telemetry = Telemetry()
    loggers = [logging.getLogger(name) for name in SERVICES]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(telemetry.logs)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield telemetry
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(telemetry.logs)
            logger.setLevel(level)
            logger.propagate = propagate
        telemetry.provider.shutdown()
