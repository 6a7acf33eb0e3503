"""Spans in memory: the process's tracer provider (installed here when nothing installed one)
gets an exporter that keeps what one test finished."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paygate.config import Settings
from paygate.connectors.breaker import CircuitBreaker
from paygate.connectors.http import HttpBankConnector, RetryPolicy
from paygate.pipeline import Pipeline
from paygate.platform.bus import Bus
from paygate.platform.nats_bus import NatsBus
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.e2e.conftest import BANK_KEY, bank_url  # noqa: F401  (a fixture)
from tests.notifications.support import Receiver


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # keeps nothing more; the processor stays, idle


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path, database_url, webhook_allow_private=True, webhook_backoff_scale=1e-4
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(params=["local", pytest.param("nats", marks=pytest.mark.nats)])
async def pipeline(
    request: pytest.FixtureRequest,
    runtime: Runtime,
    bank_url: str,  # noqa: F811
    spans: InMemorySpanExporter,
) -> AsyncIterator[Pipeline]:
    """The pipeline with every consumer (fraud, processor, notifier) over the in-process bus or
    NATS JetStream, calling the bank simulator over HTTP."""
    bus: Bus | None = None
    if request.param == "nats":
        nats_bus = NatsBus(request.getfixturevalue("nats_url"), prefix=f"t{uuid.uuid4().hex[:10]}")
        await nats_bus.connect()
        bus = nats_bus
    connector = HttpBankConnector(
        bank_url,
        BANK_KEY,
        read_timeout=2.0,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02),
        breaker=CircuitBreaker(failure_threshold=1000, reset_timeout_s=0.1),
    )
    pipeline = Pipeline(
        runtime, connector, bus=bus, roles=["relay", "fraud", "processor", "notifier"]
    )
    # The delivery loop wakes for new rows; no polling besides, so that at the end it rests in
    # its wait, where stopping it cancels nothing else (on PostgreSQL a cancel that lands inside
    # a query comes back as a database error, which the loop would take for a passing fault).
    assert pipeline.notifications is not None
    pipeline.notifications.loop.poll_s = 30.0
    pipeline.start()
    yield pipeline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while pipeline.notifications.loop._sending and loop.time() < deadline:
        await asyncio.sleep(0.02)  # sends finishing, their outcomes being recorded
    await asyncio.sleep(0.2)  # and the pass that follows them
    await pipeline.stop()
