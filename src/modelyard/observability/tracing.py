"""OpenTelemetry traces of requests, following the GenAI semantic conventions (``tracing:``).

Off unless ``tracing.otlp_endpoint`` is set: then nothing of the OpenTelemetry SDK is imported and
the request path pays one ``is None`` check.  On, each request is a span named ``{operation}
{model}`` (kind server) with the GenAI attributes (operation, requested and answering model,
provider, tokens, finish reasons) and modelyard's own (route, cost, fallback, attempts, cache),
and each upstream attempt is a child span (kind client) with its model, provider, latency and
error type.  An incoming ``traceparent`` is continued, and the request span's own
``traceparent`` is sent upstream.  Prompt and answer text go into spans only with
``tracing.capture_content: true``.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from modelyard.providers.base import TRACEPARENT

if TYPE_CHECKING:
    from modelyard.config.schema import TracingConfig
    from modelyard.errors import ModelyardError
    from modelyard.routing.router import Attempt

__all__ = ["INCOMING_TRACEPARENT", "RequestSpan", "Tracing", "make_tracing"]

#: the ``traceparent`` header of the request being served (set by the HTTP front end)
INCOMING_TRACEPARENT: ContextVar[str | None] = ContextVar("modelyard_incoming_traceparent", default=None)


class RequestSpan:
    """One request's span, ended by :meth:`Tracing.end` or :meth:`Tracing.fail`."""

    __slots__ = ("span", "start_ns")

    def __init__(self, span: Any, start_ns: int) -> None:
        self.span = span
        self.start_ns = start_ns


class Tracing:
    """The tracer of one gateway (its own TracerProvider: no global state is changed)."""

    def __init__(self, config: TracingConfig, processor: Any = None) -> None:
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.capture_content = config.capture_content
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        if processor is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("modelyard")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._set_span_in_context = otel_trace.set_span_in_context

    def begin(self, operation: str, model: str, attrs: dict[str, Any], content: str | None = None) -> RequestSpan:
        incoming = INCOMING_TRACEPARENT.get()
        parent = self._propagator.extract({"traceparent": incoming}) if incoming else None
        span = self.tracer.start_span(f"{operation} {model}", context=parent, kind=self._server)
        span.set_attribute("gen_ai.operation.name", operation)
        span.set_attribute("gen_ai.request.model", model)
        for key, value in attrs.items():
            if value is not None:
                span.set_attribute(key, value)
        if content is not None and self.capture_content:
            span.set_attribute("gen_ai.input.messages", content[:8192])
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._set_span_in_context(span))
        TRACEPARENT.set(carrier.get("traceparent"))  # sent upstream with each attempt
        return RequestSpan(span, time.time_ns())

    def end(
        self,
        handle: RequestSpan,
        *,
        route: str,
        model: str,
        provider: str,
        attempts: list[Attempt],
        fallback: bool,
        cost_usd: float,
        input_tokens: int | None,
        output_tokens: int | None,
        finish_reasons: list[str] | None = None,
        cache: str | None = None,
        answer: str | None = None,
    ) -> None:
        span = handle.span
        span.set_attribute("gen_ai.response.model", model)
        span.set_attribute("gen_ai.provider.name", provider)
        span.set_attribute("modelyard.route", route)
        span.set_attribute("modelyard.cost_usd", cost_usd)
        span.set_attribute("modelyard.fallback", fallback)
        span.set_attribute("modelyard.attempts", len(attempts))
        if cache is not None:
            span.set_attribute("modelyard.cache", cache)
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", finish_reasons)
        if answer is not None and self.capture_content:
            span.set_attribute("gen_ai.output.messages", answer[:8192])
        self._attempts(handle, attempts)
        span.end()
        TRACEPARENT.set(None)

    def fail(self, handle: RequestSpan, exc: ModelyardError, attempts: list[Attempt]) -> None:
        span = handle.span
        span.set_attribute("error.type", exc.code or type(exc).__name__)
        span.set_attribute("http.response.status_code", exc.status)
        span.set_status(self._error)
        self._attempts(handle, attempts)
        span.end()
        TRACEPARENT.set(None)

    def _attempts(self, handle: RequestSpan, attempts: list[Attempt]) -> None:
        parent = self._set_span_in_context(handle.span)
        for a in attempts:
            start = a.start_ns or handle.start_ns
            child = self.tracer.start_span(f"chat {a.model}", context=parent, kind=self._client, start_time=start)
            child.set_attribute("gen_ai.request.model", a.model)
            child.set_attribute("gen_ai.provider.name", a.provider)
            child.set_attribute("modelyard.attempt", a.number)
            if not a.ok:
                child.set_attribute("error.type", a.error_class or "error")
                if a.status is not None:
                    child.set_attribute("http.response.status_code", a.status)
                child.set_status(self._error)
            child.end(end_time=start + int(a.latency_ms * 1_000_000))

    def shutdown(self) -> None:
        self.provider.shutdown()


def make_tracing(config: TracingConfig, processor: Any = None) -> Tracing | None:
    """A tracer when ``tracing.otlp_endpoint`` is set (or a span processor is given); else None."""
    if not config.otlp_endpoint and processor is None:
        return None
    return Tracing(config, processor)
