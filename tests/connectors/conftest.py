"""Fixtures: the real bank simulator, in-process (ASGI) and on a loopback port (uvicorn in a
thread), and connectors pointed at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

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
async def connector(bank_app: FastAPI, sleeps: Sleeps) -> AsyncIterator[HttpBankConnector]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=bank_app))
    bank = HttpBankConnector(
        "http://bank",
        API_KEY,
        client=client,
        retry=RetryPolicy(attempts=3, base_delay_s=0.1, max_delay_s=1.0),
        sleep=sleeps,
    )
    yield bank
    await bank.aclose()
    await client.aclose()


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
    server: uvicorn.Server
    thread: threading.Thread

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5
        )


@pytest.fixture(scope="module")
def live_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBank]:
    """The simulator served by uvicorn on a free loopback port, for real timeouts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(bank_settings(tmp_path_factory.mktemp("live-bank")))
    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.01)
    try:
        yield LiveBank(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
