"""Fixtures: the real bank simulator on a loopback port (uvicorn in a thread), connectors pointed
at it, and an in-process (ASGI) client of the same app for its admin and audit endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.live import serving

from paygate.banksim import BankSimSettings, create_app
from paygate.connectors import Card, HttpBankConnector, RetryPolicy

API_KEY = "bank_sk_test"
GOOD_CARD = Card("4242424242424242", 12, 2030, "123")


class Sleeps:
    """A stand-in for `asyncio.sleep` that records the delays and does not wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bank_settings(data_dir: Path) -> BankSimSettings:
    return BankSimSettings(
        data_dir=data_dir, api_key=API_KEY, latency_median_ms=0, seed=3, fingerprint_key="fp"
    )


@pytest.fixture
async def bank_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_app(bank_settings(tmp_path))
    yield app
    await app.state.bank.aclose()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def bank_url(bank_app: FastAPI) -> Iterator[str]:
    """The test's own simulator, served on a loopback port."""
    with serving(bank_app) as url:
        yield url


@pytest.fixture
async def connector(bank_url: str, sleeps: Sleeps) -> AsyncIterator[HttpBankConnector]:
    bank = HttpBankConnector(
        bank_url,
        API_KEY,
        retry=RetryPolicy(attempts=3, base_delay_s=0.1, max_delay_s=1.0),
        sleep=sleeps,
    )
    yield bank
    await bank.aclose()


@pytest.fixture
async def admin(bank_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A raw client of the in-process bank, for the admin and audit endpoints."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bank_app),
        base_url="http://bank",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


@dataclass
class LiveBank:
    url: str

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5
        )


@pytest.fixture(scope="module")
def live_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBank]:
    """One simulator for a module's tests, for real timeouts and outages."""
    with serving(create_app(bank_settings(tmp_path_factory.mktemp("live-bank")))) as url:
        yield LiveBank(url)
