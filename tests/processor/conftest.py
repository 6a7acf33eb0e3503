"""The processor's tests' fixtures: settings, the bank simulator on a loopback port, processors
with a patient and a hasty connector, and payments screened by the real fraud consumer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygate.config import Settings
from paygate.connectors import PaymentRequest
from paygate.fraud.worker import FraudWorker
from paygate.platform.bus import Event
from paygate.processor.service import Processor
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.e2e import conftest as e2e
from tests.e2e.conftest import quick_connector
from tests.processor.records import event_payload
from tests.support import idem, payment_body

# The read timeout of the tests that make the bank hang, and how long it hangs: past that timeout,
# so a hung call is a timeout; short, because the simulator's server waits for it when it stops.
# Every other test reads patiently: on a loaded machine an answer can take a second, and a test
# that expects an answer must not see a timeout instead.
READ_TIMEOUT_S = 1.5
HANG_S = 3.0
PATIENT_READ_S = 10.0


# The bank simulator on a loopback port, and a client of its own API, as in the end-to-end tests.
bank_url, bank = e2e.bank_url, e2e.bank


@pytest.fixture
def settings_extra() -> dict[str, Any]:
    """Settings a test changes, by parametrizing this fixture."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_extra: dict[str, Any]) -> Settings:
    return make_settings(
        tmp_path, database_url, **{"recovery_backoff_scale": 1e-5, **settings_extra}
    )


@pytest.fixture
async def processor(runtime: Runtime, bank_url: str) -> AsyncIterator[Processor]:
    connector = quick_connector(bank_url, PATIENT_READ_S)
    yield Processor(runtime, connector)
    await connector.aclose()


@pytest.fixture
async def hasty_processor(runtime: Runtime, bank_url: str) -> AsyncIterator[Processor]:
    """A processor that gives up on the bank before a hung answer arrives."""
    connector = quick_connector(bank_url, READ_TIMEOUT_S)
    yield Processor(runtime, connector)
    await connector.aclose()


async def create(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> str:
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    payment_id: str = r.json()["id"]
    return payment_id


async def assessed(rt: Runtime, payment_id: str) -> Event:
    """The screening decision as the real fraud consumer emits it, read back from the outbox."""
    await FraudWorker(rt).on_payment_created(
        await event_payload(rt.db, payment_id, "payment.created")
    )
    return await event_payload(rt.db, payment_id, "payment.fraud_assessed")


async def payment_of(client: httpx.AsyncClient, auth: dict[str, str], pid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/payments/{pid}", headers=auth)
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


def hold_sales(
    processor: Processor,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    *,
    give_up_s: float | None = None,
) -> None:
    """Hold the bank's answers to sales until `count` have come back, then let them all go on
    at once: they reach the processor while none of them has been applied. `give_up_s`: let
    each go on alone after that long, where the answers cannot always wait for each other."""
    real_sale = processor.bank.sale
    back: list[str] = []
    all_back = asyncio.Event()

    async def sale(request: PaymentRequest) -> Any:
        result = await real_sale(request)
        back.append(request.reference)
        if len(back) == count:
            all_back.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_back.wait(), give_up_s)
        return result

    monkeypatch.setattr(processor.bank, "sale", sale)
