"""One trace per payment: the API request, the relay, fraud screening, the processor, the bank
simulator's side of the bank call and every webhook delivery share one trace id, over the
in-process bus and over NATS JetStream alike."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from paygate.pipeline import Pipeline
from tests.notifications.support import Receiver, eventually
from tests.processor.conftest import hold_sales
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}


def named(spans: Sequence[ReadableSpan], name: str, **attributes: Any) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.name == name and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]


def one(spans: Sequence[ReadableSpan], name: str, **attributes: Any) -> ReadableSpan:
    found = named(spans, name, **attributes)
    assert len(found) == 1, (name, attributes, [s.name for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_spans_the_whole_payment(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    receiver: Receiver,
    spans: InMemorySpanExporter,
) -> None:
    r = await client.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url("/hooks"), "enabled_events": ["*"]},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem(), **WAIT})
    assert r.status_code == 200, r.text
    payment = r.json()
    assert payment["status"] == "succeeded"

    def delivered() -> list[dict[str, Any]]:
        bodies = [orjson.loads(x.body) for x in receiver.at("/hooks", ok_only=True)]
        return [e for e in bodies if e["data"]["object"]["id"] == payment["id"]]

    await eventually(
        lambda: {"payment.created", "payment.succeeded"} <= {e["type"] for e in delivered()}
    )
    events = {e["type"]: e["id"] for e in delivered()}
    # The webhook span ends just after the receiver answered.
    await eventually(
        lambda: all(
            named(spans.get_finished_spans(), "webhook POST", **{"messaging.message.id": i})
            for i in events.values()
        )
    )
    finished = spans.get_finished_spans()

    api = one(finished, "POST /v1/payments")
    assert api.kind == SpanKind.SERVER
    trace_id = api.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]

    def the(name: str, **attributes: Any) -> ReadableSpan:
        return one(in_trace, name, **attributes)

    # API → outbox → relay: the relay's span for payment.created is the request span's child.
    created = the("publish payment.created")
    assert created.kind == SpanKind.PRODUCER
    assert parent_of(created) == api.context.span_id
    # Each event's span is linked to its relay batch, a trace of its own.
    assert created.links and created.links[0].context.trace_id != trace_id
    # → fraud, in a span whose parent is the event's context.
    fraud = the("fraud process payment.created")
    assert fraud.kind == SpanKind.CONSUMER
    assert parent_of(fraud) == created.context.span_id
    assert fraud.attributes and fraud.attributes["paygate.payment_id"] == payment["id"]
    # → the fraud decision, emitted inside fraud's span, → the processor.
    assessed = the("publish payment.fraud_assessed")
    assert parent_of(assessed) == fraud.context.span_id
    processor = the("processor process payment.fraud_assessed")
    assert parent_of(processor) == assessed.context.span_id
    # → the bank call, whose request carries the trace into the bank simulator.
    bank_call = the("bank POST /v1/sale")
    assert bank_call.kind == SpanKind.CLIENT
    assert parent_of(bank_call) == processor.context.span_id
    bank_side = the("POST /v1/sale")
    assert bank_side.kind == SpanKind.SERVER
    assert parent_of(bank_side) == bank_call.context.span_id
    # → the outcome, emitted by the processor, → the notifier and the webhook delivery.
    succeeded = the("publish payment.succeeded")
    assert parent_of(succeeded) == processor.context.span_id
    the("notifications process payment.succeeded")
    for event_id in events.values():
        webhook = the("webhook POST", **{"messaging.message.id": event_id})
        assert webhook.kind == SpanKind.CLIENT
        assert webhook.attributes and webhook.attributes["http.response.status_code"] == 200
    # Every span of the payment is in that one trace: none of its events started another.
    for s in finished:
        if (s.attributes or {}).get("paygate.payment_id") == payment["id"]:
            assert s.context.trace_id == trace_id, s.name
    # The gateway's trace ids stay inside it: the merchant's endpoint gets no traceparent.
    assert all("traceparent" not in {k.lower() for k in x.headers} for x in receiver.at("/hooks"))


async def test_answers_applied_together_stay_in_their_own_payments_traces(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bank's answers to three payments are held until all are back, so the processor
    applies them in one transaction (and screens and decides them in batches): each payment's
    outcome event is still published in its own payment's trace, as the child of its own
    processor span."""
    count = 3
    # Over NATS the processor takes the next decisions only once a fetched batch is done, so
    # the answers cannot always wait for each other: after a while, they go on alone.
    hold_sales(pipeline.processor, monkeypatch, count, give_up_s=2.0)
    replies = await asyncio.gather(
        *(
            client.post("/v1/payments", json=payment_body(), headers={**auth, **idem(), **WAIT})
            for _ in range(count)
        )
    )
    assert [r.json()["status"] for r in replies] == ["succeeded"] * count
    pids = [r.json()["id"] for r in replies]

    def in_trace_of(pid: str) -> list[ReadableSpan]:
        """The finished spans in the trace of the payment's processor span, which ends after
        its delivery's handler, just after the answer was told."""
        finished = spans.get_finished_spans()
        processor = named(
            finished, "processor process payment.fraud_assessed", **{"paygate.payment_id": pid}
        )
        if not processor:
            return []
        return [s for s in finished if s.context.trace_id == processor[0].context.trace_id]

    # Spans end in no fixed order: the relay publishes the outcome after the processor's
    # commit, and on the in-process bus a publish span ends only once its consumers are done.
    needed = (
        "POST /v1/payments",
        "fraud process payment.created",
        "publish payment.fraud_assessed",
        "publish payment.succeeded",
    )
    await eventually(lambda: all(named(in_trace_of(pid), name) for pid in pids for name in needed))
    for pid in pids:
        in_trace = in_trace_of(pid)
        processor = one(in_trace, "processor process payment.fraud_assessed")
        succeeded = one(in_trace, "publish payment.succeeded")
        assert parent_of(succeeded) == processor.context.span_id
        # The trace is the payment's whole one, from its API request through screening.
        one(in_trace, "POST /v1/payments")
        fraud = one(in_trace, "fraud process payment.created")
        assert parent_of(one(in_trace, "publish payment.fraud_assessed")) == fraud.context.span_id
