"""The whole pipeline in-process: API, relay, fraud, processor and recovery, calling the bank
simulator over real HTTP on a loopback port. On SQLite it runs as `paygate serve` does, over the
in-process bus and a memory cache; on PostgreSQL as the scale-out processes do, over NATS
JetStream and Redis (`tests.conftest.scale_out`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from paygate.banksim.app import create_app as create_bank_app
from paygate.banksim.settings import BankSimSettings
from paygate.config import Settings
from paygate.connectors.base import BankConnector
from paygate.connectors.breaker import CircuitBreaker
from paygate.connectors.http import HttpBankConnector, RetryPolicy
from paygate.pipeline import ROLES, Pipeline
from paygate.platform.nats_bus import connect_bus
from paygate.runtime import Runtime
from tests.conftest import make_settings, scale_out
from tests.live import serving

BANK_KEY = "bank_sk_dev"


def bank_app(data_dir: Path) -> FastAPI:
    """The bank simulator answering at once, its faults hanging for a second."""
    return create_bank_app(
        BankSimSettings(data_dir=data_dir, api_key=BANK_KEY, latency_median_ms=0, hang_s=1.0)
    )


@pytest.fixture
def bank_url(tmp_path: Path) -> Iterator[str]:
    """The bank simulator on a real loopback port."""
    with serving(bank_app(tmp_path / "bank")) as url:
        yield url


@pytest.fixture
async def bank(bank_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The bank's own HTTP API, for audits (`/v1/operations`) and fault switches."""
    async with httpx.AsyncClient(
        base_url=bank_url, headers={"Authorization": f"Bearer {BANK_KEY}"}
    ) as c:
        yield c


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url, **scale_out(request, database_url))


def quick_connector(bank_url: str, read_timeout: float = 0.5) -> HttpBankConnector:
    """A connector that retries quickly, with a breaker that never opens in a test's life."""
    return HttpBankConnector(
        bank_url,
        BANK_KEY,
        read_timeout=read_timeout,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02),
        breaker=CircuitBreaker(failure_threshold=1000, reset_timeout_s=0.1),
    )


# The notification service is wired by the tests that exercise it (tests/e2e/test_webhooks).
WITHOUT_NOTIFIER = tuple(r for r in ROLES if r != "notifier")


@contextlib.asynccontextmanager
async def running_pipeline(
    rt: Runtime,
    bank: BankConnector,
    *,
    roles: Iterable[str] = WITHOUT_NOTIFIER,
    wire: Callable[[Pipeline], None] | None = None,
) -> AsyncIterator[Pipeline]:
    """The pipeline over the bus the settings name (NATS JetStream in the scale-out mode, else
    in-process), started after `wire` has registered any extra consumer on it, as a scale-out
    process starts its consumers once they are all registered."""
    bus = None
    if rt.settings.bus_url:
        # Shared with the API, whose /readyz names it, as in a scale-out process.
        bus = rt.bus = await connect_bus(rt.settings.bus_url, rt.settings.namespace)
    pipeline = Pipeline(rt, bank, bus=bus, roles=roles)
    if bus is not None:
        bus.dead_letter = pipeline.dead_letter
    pipeline.recovery.interval_s = 0.1
    if wire is not None:
        wire(pipeline)
    pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()


@pytest.fixture
async def pipeline(runtime: Runtime, bank_url: str) -> AsyncIterator[Pipeline]:
    async with running_pipeline(runtime, quick_connector(bank_url)) as pipeline:
        yield pipeline


async def operations(bank: httpx.AsyncClient, payment_id: str) -> list[dict[str, Any]]:
    r = await bank.get("/v1/operations", params={"payment": payment_id})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data
