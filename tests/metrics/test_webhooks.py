"""Webhook delivery metrics through the real pipeline and a real receiver: each recorded attempt
counted once by result (succeeded, failed and retried, dead)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from paygate.config import Settings
from paygate.notifications.worker import NotificationService
from paygate.pipeline import Pipeline
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.metrics.support import Samples, scrape
from tests.notifications.support import Receiver
from tests.support import idem, payment_body


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # The 3-day retry window shrinks to about 2.6 s: a failing endpoint is dead-lettered soon.
    return make_settings(
        tmp_path, database_url, webhook_allow_private=True, webhook_backoff_scale=1e-5
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
async def notifier(runtime: Runtime, pipeline: Pipeline) -> AsyncIterator[NotificationService]:
    service = NotificationService(runtime, poll_s=0.05)
    service.register(pipeline.bus)
    task = asyncio.create_task(service.run(), name="notifications")
    yield service
    # Bounded: a stop that never returns fails this test instead of stalling the suite.
    async with asyncio.timeout(30):
        await service.stop()
    assert task.done()


async def test_deliveries_counted_by_result(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    notifier: NotificationService,
    receiver: Receiver,
) -> None:
    receiver.behave("/bad", status=500)
    for path in ("/ok", "/bad"):
        r = await client.post(
            "/v1/webhook_endpoints",
            json={"url": receiver.url(path), "enabled_events": ["*"]},
            headers=auth,
        )
        assert r.status_code == 201, r.text
    before = await scrape(client)
    r = await client.post(
        "/v1/payments", json=payment_body(), headers={**auth, **idem(), "Prefer": "wait=10"}
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    events = 3  # payment.created, payment.processing, payment.succeeded

    deadline = time.monotonic() + 30
    while True:
        after: Samples = await scrape(client)
        dead = after.delta(before, "paygate_webhook_deliveries_total", result="dead")
        if dead >= events or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert dead == events
    assert after.delta(before, "paygate_webhook_deliveries_total", result="succeeded") == events
    assert len(receiver.at("/ok", ok_only=True)) == events
    failed = after.delta(before, "paygate_webhook_deliveries_total", result="failed")
    assert failed >= 1
    assert failed + dead == len(receiver.at("/bad"))
    total = after.delta(before, "paygate_webhook_delivery_duration_seconds_count")
    assert total == len(receiver.requests)
