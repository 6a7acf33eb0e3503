"""Fixtures: a simulator app on a fresh data folder, a client calling it in-process, and `ops`,
shorthands for the usual calls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from paygate.banksim import BankSimSettings, create_app

API_KEY = "bank_sk_dev"


@pytest.fixture
def bank_settings(tmp_path: Path) -> BankSimSettings:
    return BankSimSettings(
        data_dir=tmp_path, api_key=API_KEY, latency_median_ms=0, seed=7, fingerprint_key="fp-test"
    )


class Clock:
    """The bank's clock in tests: real time until a test sets `now`."""

    def __init__(self) -> None:
        self.now: float | None = None

    def __call__(self) -> float:
        return time.time() if self.now is None else self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def bank_app(bank_settings: BankSimSettings, clock: Clock) -> AsyncIterator[FastAPI]:
    app = create_app(bank_settings, clock=clock)
    yield app
    await app.state.bank.aclose()


@pytest.fixture
async def bank(bank_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bank_app),
        base_url="http://bank",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


def card_json(number: str = "4242424242424242", **changes: Any) -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123", **changes}


class Ops:
    """The usual calls with contract references; each asserts a 200 and returns the body."""

    def __init__(self, bank: httpx.AsyncClient) -> None:
        self.bank = bank

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.bank.post(path, json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def pay(
        self,
        payment: str,
        amount: int = 1000,
        *,
        operation: str = "authorize",
        number: str = "4242424242424242",
        currency: str = "usd",
        **card: Any,
    ) -> dict[str, Any]:
        return await self.post(
            f"/v1/{operation}",
            {
                "reference": f"{payment}:{operation}",
                "amount": amount,
                "currency": currency,
                "card": card_json(number, **card),
            },
        )

    async def capture(self, payment: str, amount: int, *, ref: str = "capture") -> dict[str, Any]:
        return await self.post(
            "/v1/capture",
            {
                "reference": f"{payment}:{ref}",
                "authorization": f"{payment}:authorize",
                "amount": amount,
            },
        )

    async def void(self, payment: str, *, ref: str = "void") -> dict[str, Any]:
        return await self.post(
            "/v1/void",
            {"reference": f"{payment}:{ref}", "authorization": f"{payment}:authorize"},
        )

    async def refund(
        self, payment: str, refund_id: str, amount: int, *, of: str = "capture"
    ) -> dict[str, Any]:
        return await self.post(
            "/v1/refund",
            {
                "reference": f"{payment}:refund:{refund_id}",
                "payment_reference": f"{payment}:{of}",
                "amount": amount,
            },
        )

    async def listing(self, payment: str) -> list[dict[str, Any]]:
        response = await self.bank.get(
            "/v1/operations", params={"payment": payment}, headers={"Authorization": ""}
        )
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest.fixture
def ops(bank: httpx.AsyncClient) -> Ops:
    return Ops(bank)
