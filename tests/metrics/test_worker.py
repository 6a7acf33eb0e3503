"""`paygate worker NAME` serves /metrics beside /healthz and /readyz on its health port."""

from __future__ import annotations

import httpx

from paygate.runtime import Runtime
from paygate.workers import health_app
from tests.metrics.support import Samples


async def test_a_worker_serves_metrics(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=health_app(runtime, "relay"))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = Samples.parse(r.text)
    assert samples.get("paygate_outbox_unpublished_events") == 0
    assert samples.has("paygate_db_pool_size_connections")
    assert "# TYPE paygate_payments_total counter" in r.text
