"""Distributed tracing (OpenTelemetry): one trace per payment, across every service.

How a payment's trace is carried (docs/observability.md draws it):

- the API request span (FastAPI instrumentation) is current while the request writes its outbox
  event; `outbox.emit` stores the W3C trace context (`traceparent`, `tracestate`) beside the
  event;
- the relay publishes outbox rows in batches: each event gets a span of its own, a child of the
  context stored with it and linked to the batch's span, and the bus carries that span's context
  (NATS message headers; the in-process bus passes it along with the event);
- each consumer runs its handler in a span whose parent is the event's context, so the events it
  emits (and its bank calls, whose HTTP requests carry `traceparent`) continue the trace;
- a webhook delivery runs in a span of the event's trace.

Configuration is the standard OpenTelemetry environment, read once per process by
`configure_tracing`: `OTEL_TRACES_EXPORTER` (`none` by default, `otlp`, `console`),
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP over HTTP),
`OTEL_SERVICE_NAME` (default: the process's role, e.g. `paygate-worker-processor`),
`OTEL_TRACES_SAMPLER`, `OTEL_SDK_DISABLED`. With no exporter, spans are neither recorded nor
exported, but their ids are still made and propagated, so that log lines carry trace and span
ids.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygate.platform.logging import log

TRACER = trace.get_tracer("paygate")
# The key under which a published event carries its transport headers (trace context, merchant)
# from the relay to the bus; the in-process bus hands it to consumers, NATS sends it as headers.
CARRIER_KEY = "_trace"
MERCHANT_HEADER = "paygate-merchant"
REMEMBERED = 10_000

_configured = False
_remembered: dict[str, dict[str, str]] = {}


def configure_tracing(service_name: str) -> None:
    """Install the tracer provider of this process (once; later calls do nothing).

    `service_name` is the default for `OTEL_SERVICE_NAME`. Exporters follow
    `OTEL_TRACES_EXPORTER` (a comma-separated list; `none` when unset)."""
    global _configured
    if _configured:
        return
    _configured = True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    from paygate import __version__

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    resource = Resource.create({"service.name": name, "service.version": __version__}).merge(
        OTELResourceDetector().detect()
    )
    wanted = os.environ.get("OTEL_TRACES_EXPORTER", "none").lower()
    kinds = [k for k in (k.strip() for k in wanted.split(",")) if k and k != "none"]
    sampler = None  # the SDK's: OTEL_TRACES_SAMPLER, else parent-based always-on
    if not kinds and not os.environ.get("OTEL_TRACES_SAMPLER"):
        # Nothing is exported: spans are not recorded either, only their ids made and passed
        # on (log lines still carry them), which keeps the cost of tracing near nothing.
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        sampler = ALWAYS_OFF
    provider = TracerProvider(resource=resource, sampler=sampler)
    for kind in kinds:
        exporter: SpanExporter
        if kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
        elif kind == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:
            log.warning("tracing.unknown_exporter", exporter=kind)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.debug("tracing.configured", service=name, exporters=wanted)


def shutdown_tracing() -> None:
    """Flush what the exporters still hold (graceful stop)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()


# Propagation


def current_carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (`traceparent`, `tracestate`), or None when no
    span is current (tracing off, or outside any request or event)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_of(carrier: Mapping[str, str] | None) -> Context:
    """The context that `carrier` names; an empty one (a new trace) when it names none. Never
    the current context: a consumer's span must not become the child of whatever happens to be
    current in the worker."""
    if not carrier:
        return Context()
    return propagate.extract(carrier, context=Context())


def headers_of(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return carrier


def link_to(span: Span | None) -> list[Link] | None:
    if span is None or not span.get_span_context().is_valid:
        return None
    return [Link(span.get_span_context())]


# Spans of the pipeline


def start_batch(name: str, size: int, **attributes: Any) -> Span:
    """The span of a batch (relay publish, NATS fetch): a trace of its own, which each event's
    span links to, while each event's span stays in its payment's trace. Not made current."""
    return TRACER.start_span(
        name,
        context=Context(),
        kind=SpanKind.INTERNAL,
        attributes={"messaging.batch.message_count": size, **attributes},
    )


def start_publish(
    event: Mapping[str, Any], parent: Mapping[str, str] | None, batch: Span | None
) -> Span:
    """The span of one event leaving the outbox: a child of the context stored with it."""
    return TRACER.start_span(
        f"publish {event['type']}",
        context=context_of(parent),
        kind=SpanKind.PRODUCER,
        links=link_to(batch),
        attributes={
            "messaging.operation.type": "send",
            "messaging.destination.name": event["type"],
            "messaging.message.id": event["id"],
        },
    )


def finish(span: Span, error: BaseException | str | None = None) -> None:
    if error is not None and span.is_recording():
        span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
    span.end()


@contextlib.contextmanager
def consuming(
    consumer: str,
    event: Mapping[str, Any],
    carrier: Mapping[str, str] | None,
    *,
    system: str,
    batch: Span | None = None,
    attempt: int | None = None,
) -> Iterator[Span]:
    """Run a consumer's handler for `event` in a span whose parent is the event's context, with
    the event's payment and merchant bound to every log line; both are undone afterwards."""
    span = _start_consuming(consumer, event, carrier, system=system, batch=batch, attempt=attempt)
    with (
        trace.use_span(span, end_on_exit=True),
        log_scope(**_scope_fields(event, carrier)),
    ):
        yield span


@contextlib.contextmanager
def consuming_batch(
    consumer: str,
    events: Sequence[Mapping[str, Any]],
    carriers: Sequence[Mapping[str, str] | None],
    *,
    system: str,
    batch: Span | None = None,
) -> Iterator[None]:
    """Run a consumer's batch handler for `events`: each event gets the span it gets alone (a
    child of its own context, linked to the batch), none of them current. The handler makes a
    payment's span current while it works on that payment (`payment_scope`), so that what it
    emits for the payment stays in the payment's trace."""
    spans: list[Span] = []
    scopes: dict[str, tuple[Span, dict[str, Any]]] = {}
    for event, carrier in zip(events, carriers, strict=True):
        span = _start_consuming(consumer, event, carrier, system=system, batch=batch)
        spans.append(span)
        fields = _scope_fields(event, carrier)
        if fields["payment_id"]:
            scopes.setdefault(fields["payment_id"], (span, fields))
    token = _batch_scopes.set(scopes)
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        _batch_scopes.reset(token)
        for span in spans:
            finish(span, error)


@contextlib.contextmanager
def payment_scope(payment_id: str) -> Iterator[None]:
    """Inside a batch handler (`consuming_batch`): the span of the batch's event about
    `payment_id` made current, and its fields bound to log lines. Elsewhere: nothing."""
    found = (_batch_scopes.get() or {}).get(payment_id)
    if found is None:
        yield
        return
    span, fields = found
    # The batch's end sets its spans' status (`consuming_batch`).
    with (
        trace.use_span(span, record_exception=False, set_status_on_exception=False),
        log_scope(**fields),
    ):
        yield


# The spans of a batch being handled, by payment (`consuming_batch`).
_batch_scopes: ContextVar[dict[str, tuple[Span, dict[str, Any]]] | None] = ContextVar(
    "paygate_batch_scopes", default=None
)


def _start_consuming(
    consumer: str,
    event: Mapping[str, Any],
    carrier: Mapping[str, str] | None,
    *,
    system: str,
    batch: Span | None,
    attempt: int | None = None,
) -> Span:
    payment_id = payment_of(event)
    merchant_id = carrier.get(MERCHANT_HEADER) if carrier else None
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": consumer,
        "messaging.destination.name": str(event.get("type")),
        "messaging.message.id": str(event.get("id")),
    }
    if attempt is not None:
        attributes["messaging.message.delivery_attempt"] = attempt
    if payment_id:
        attributes["paygate.payment_id"] = payment_id
    if merchant_id:
        attributes["paygate.merchant_id"] = merchant_id
    if carrier and "traceparent" in carrier and event.get("id"):
        remember(str(event["id"]), carrier)
    return TRACER.start_span(
        f"{consumer} process {event.get('type')}",
        context=context_of(carrier),
        kind=SpanKind.CONSUMER,
        links=link_to(batch),
        attributes=attributes,
    )


def _scope_fields(event: Mapping[str, Any], carrier: Mapping[str, str] | None) -> dict[str, Any]:
    return {
        "event_id": event.get("id"),
        "payment_id": payment_of(event),
        "merchant_id": carrier.get(MERCHANT_HEADER) if carrier else None,
    }


def payment_of(event: Mapping[str, Any]) -> str | None:
    """The payment an event is about: the object itself, or the payment a refund refers to."""
    obj = event.get("data", {}).get("object", {})
    if not isinstance(obj, Mapping):
        return None
    oid = obj.get("id")
    if isinstance(oid, str) and oid.startswith("pay_"):
        return oid
    payment = obj.get("payment")
    return payment if isinstance(payment, str) else None


# The context an event was delivered with, by event id, for work done later in this process on
# that event (a webhook delivery): bounded, oldest forgotten first.


def remember(event_id: str, carrier: Mapping[str, str]) -> None:
    if event_id in _remembered:
        return
    if len(_remembered) >= REMEMBERED:
        _remembered.pop(next(iter(_remembered)))
    _remembered[event_id] = {k: v for k, v in carrier.items() if k != MERCHANT_HEADER}


def recall(event_id: str) -> dict[str, str] | None:
    return _remembered.get(event_id)


# Log context: payment and merchant ids on every line of a request or an event's handling.

_SCOPED = ("event_id", "payment_id", "merchant_id")
_in_scope: ContextVar[bool] = ContextVar("paygate_log_scope", default=False)


@contextlib.contextmanager
def log_scope(**fields: Any) -> Iterator[None]:
    """Bind `fields` (those not None; the others of `event_id`, `payment_id`, `merchant_id`
    unbound) to every log line inside, and put back what was bound before on the way out."""
    # Ellipsis is structlog's "unbound": a scope never shows an outer scope's payment.
    given = {k: fields.get(k) for k in _SCOPED}
    tokens = structlog.contextvars.bind_contextvars(
        **{k: ... if v is None else v for k, v in given.items()}
    )
    token = _in_scope.set(True)
    try:
        yield
    finally:
        _in_scope.reset(token)
        structlog.contextvars.reset_contextvars(**tokens)


def annotate(*, payment_id: str | None, merchant_id: str | None) -> None:
    """The current request or event concerns this payment and merchant: tag the current span,
    and log lines while inside a `log_scope` (outside one, nothing would unbind them)."""
    span = trace.get_current_span()
    if span.is_recording():
        if payment_id:
            span.set_attribute("paygate.payment_id", payment_id)
        if merchant_id:
            span.set_attribute("paygate.merchant_id", merchant_id)
    if _in_scope.get():
        bound = structlog.contextvars.get_contextvars()
        fields = {"payment_id": payment_id, "merchant_id": merchant_id}
        structlog.contextvars.bind_contextvars(
            **{k: v for k, v in fields.items() if v is not None and k not in bound}
        )


class LogScopeMiddleware:
    """Each HTTP request is a log scope: the payment and merchant it turns out to concern are
    bound to its log lines (`annotate`), and unbound when it ends. Inside the request's server
    span, it names the span after the route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = trace.get_current_span()
        if not span.is_recording():
            with log_scope():
                await self.app(scope, receive, send)
            return

        async def naming_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The router recorded the route it chose in the scope: the span takes its path
                # template as its name (`POST /v1/payments/{payment_id}/capture`), so that
                # names stay few.
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{scope.get('method', 'HTTP')} {route}")
                    span.set_attribute("http.route", route)
            await send(message)

        with log_scope():
            await self.app(scope, receive, naming_send)


def instrument_app(app: Any, *, excluded_urls: str = "") -> None:
    """Trace every HTTP request `app` (a Starlette or FastAPI app) serves: a server span per
    request, named after its route and a child of the request's `traceparent` when it has one,
    around everything the app runs (its own middleware included). Each request is also a log
    scope (`LogScopeMiddleware`). `excluded_urls`: comma-separated regular expressions of URLs
    left untraced (probes, metrics).

    The app's middleware stack is wrapped rather than built by the FastAPI instrumentation,
    which refuses a stack that does not start with Starlette's own error middleware."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import parse_excluded_urls

    build = app.build_middleware_stack
    excluded = parse_excluded_urls(excluded_urls) if excluded_urls else None

    def span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
        # Named after its route once routing found it (`LogScopeMiddleware`).
        return str(scope.get("method", "HTTP")), {}

    def traced_stack() -> ASGIApp:
        return OpenTelemetryMiddleware(
            LogScopeMiddleware(build()),
            excluded_urls=excluded,
            default_span_details=span_details,
            exclude_spans=["receive", "send"],
        )

    app.build_middleware_stack = traced_stack
