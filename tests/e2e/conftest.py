"""The whole pipeline in-process: API, relay, fraud, processor and recovery, calling the bank
simulator over real HTTP on a loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from paygate.banksim.app import create_app as create_bank_app
from paygate.banksim.settings import BankSimSettings
from paygate.connectors.breaker import CircuitBreaker
from paygate.connectors.http import HttpBankConnector, RetryPolicy
from paygate.pipeline import ROLES, Pipeline
from paygate.runtime import Runtime

BANK_KEY = "bank_sk_dev"


class BankServer:
    """The bank simulator on a real loopback port, served by uvicorn in a thread of its own."""

    def __init__(self, data_dir: Path) -> None:
        self.app = create_bank_app(
            BankSimSettings(data_dir=data_dir, api_key=BANK_KEY, latency_median_ms=0, hang_s=1.0)
        )
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the bank simulator did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def bank_url(tmp_path: Path) -> Iterator[str]:
    server = BankServer(tmp_path / "bank")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
async def bank(bank_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The bank's own HTTP API, for audits (`/v1/operations`) and fault switches."""
    async with httpx.AsyncClient(
        base_url=bank_url, headers={"Authorization": f"Bearer {BANK_KEY}"}
    ) as c:
        yield c


@pytest.fixture
async def pipeline(runtime: Runtime, bank_url: str) -> AsyncIterator[Pipeline]:
    connector = HttpBankConnector(
        bank_url,
        BANK_KEY,
        read_timeout=0.5,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02),
        breaker=CircuitBreaker(failure_threshold=1000, reset_timeout_s=0.1),
    )
    # The notification service is wired by the tests that exercise it (tests/e2e/test_webhooks).
    pipeline = Pipeline(runtime, connector, roles=[r for r in ROLES if r != "notifier"])
    pipeline.recovery.interval_s = 0.1
    pipeline.start()
    yield pipeline
    await pipeline.stop()


async def operations(bank: httpx.AsyncClient, payment_id: str) -> list[dict[str, Any]]:
    r = await bank.get("/v1/operations", params={"payment": payment_id})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data
