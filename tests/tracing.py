"""An OpenTelemetry SDK tracer of its own (the global provider is left alone) that keeps
what it exported, with ``SessionSpanProcessor`` installed."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessionctx.integrations.opentelemetry import SessionSpanProcessor

__all__ = ["Tracing"]


class Tracing:
    """``tracer`` starts spans; :meth:`span` finds a finished one by name."""

    def __init__(self, processor: SessionSpanProcessor | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(processor or SessionSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.exporter.get_finished_spans() if s.name == name]
        return found

    def attributes(self, name: str) -> dict[str, object]:
        return dict(self.span(name).attributes or {})
