"""Fetching the bank's daily settlement report over HTTP, as the connector reaches the bank.

`GET {bank}/v1/reports/settlement?date=YYYY-MM-DD` with the bank API key answers the day's CSV.
Reading is safe to repeat, so transient failures (no connection, a timeout, a 5xx) are retried
a few times with back-off; what still fails raises `BankReportUnavailable`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from paygate.config import Settings
from paygate.errors import PaygateError


class BankReportUnavailable(PaygateError):
    """The bank's report could not be had, or not read: nothing was reconciled."""

    status = 502
    type = "api_error"
    code = "bank_report_unavailable"


class ReportFetcher(Protocol):
    """The CSV text of the bank's settlement report of one UTC day."""

    def __call__(self, day: dt.date, /) -> Awaitable[str]: ...


def bank_url(settings: Settings) -> str:
    """The bank the gateway calls: `PAYGATE_BANK_URL`, else the simulator mounted under `/bank`
    of this server (as `paygate serve` runs it)."""
    return settings.bank_url or f"http://127.0.0.1:{settings.port}/bank"


class HttpReportFetcher:
    """Fetches reports from `base_url` with `api_key`. Pass `client` to share a pool."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        attempts: int = 3,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/reports/settlement"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._attempts = max(1, attempts)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpReportFetcher:
        return cls(bank_url(settings), settings.bank_api_key)

    async def __call__(self, day: dt.date) -> str:
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(0.2 * 2**attempt)
            try:
                r = await self._client.get(
                    self._url, params={"date": day.isoformat()}, headers=self._headers
                )
            except httpx.HTTPError as exc:
                problem = f"no answer from the bank ({type(exc).__name__})"
                continue
            if r.status_code == 200:
                return r.text
            problem = f"the bank answered {r.status_code}"
            if r.status_code < 500:
                break  # a refusal (a wrong key, say) does not change on a retry
        raise BankReportUnavailable(
            f"The bank's settlement report of {day} is unavailable: {problem}."
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
