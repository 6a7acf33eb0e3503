"""The end-to-end suites run in both modes of DESIGN.md section 3: this shows which engines each
mode really ran on, as the API's own readiness check names them."""

from __future__ import annotations

import httpx
import pytest

from paygate.pipeline import Pipeline
from paygate.platform.nats_bus import NatsBus
from paygate.runtime import Runtime
from tests.e2e.test_payment_flow import pay

MODES = {
    "sqlite": {"database": "sqlite", "bus": "local", "cache": "memory"},
    "postgresql": {"database": "postgresql", "bus": "nats", "cache": "redis"},
}


async def test_the_pipeline_runs_on_the_engines_of_its_mode(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    database_url: str,
) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    assert {name: check["backend"] for name, check in checks.items()} == MODES[backend]
    assert all(check["ok"] for check in checks.values())
    assert pipeline.bus.backend == MODES[backend]["bus"]

    # A payment through that bus, and its velocity counted in that mode's store.
    payment = await pay(client, auth)
    assert payment["status"] == "succeeded"
    assert pipeline.fraud is not None
    assert pipeline.fraud.store.backend == MODES[backend]["cache"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_scale_out_keys_live_under_the_namespace(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, pipeline: Pipeline
) -> None:
    """Two gateways (or two tests) share one NATS and one Redis without seeing each other."""
    import redis.asyncio as redis

    namespace = runtime.settings.namespace
    assert namespace != "paygate"
    await pay(client, auth)
    assert runtime.settings.redis_url is not None
    r = redis.from_url(runtime.settings.redis_url)
    try:
        ours = [k async for k in r.scan_iter(match=f"{namespace}:*")]
    finally:
        await r.aclose()
    assert ours, "velocity counters and rate limits are kept under the namespace"
    assert isinstance(pipeline.bus, NatsBus)
    info = await pipeline.bus.js.stream_info(f"{namespace.upper()}_PAYMENT")
    assert info.config.subjects == [f"{namespace}.payment.>"]
    assert info.state.messages > 0  # this payment's events went through it
