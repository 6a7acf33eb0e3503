"""The admin endpoints and the `paygate reconcile` command, end to end against the real bank
simulator over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.ledger.tables import balance_transactions, ledger_entries, ledger_postings
from paygate.payments import attempts
from paygate.pipeline import Pipeline
from paygate.reconciliation.cli import reconcile_command
from paygate.reconciliation.fetch import HttpReportFetcher
from paygate.reconciliation.service import reconcile_day
from paygate.runtime import Runtime
from tests.e2e.conftest import BANK_KEY
from tests.reconciliation.conftest import BankStore
from tests.reconciliation.test_reconcile import day_of_payments, pay
from tests.support import ADMIN_KEY, HMAC_SECRET, VAULT_KEYS, idem

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@pytest.fixture
def with_bank(runtime: Runtime, bank_url: str) -> str:
    """The API's settings name the simulator as the bank (PAYGATE_BANK_URL)."""
    runtime.settings = runtime.settings.model_copy(update={"bank_url": bank_url})
    return bank_url


async def test_run_then_read_a_day(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    with_bank: str,
    bank_store: BankStore,
) -> None:
    ids = await day_of_payments(client, auth)
    r = await client.post("/v1/reconciliation/run", json={"date": today()}, headers=ADMIN)
    assert r.status_code == 200, r.text
    run = r.json()
    assert (run["object"], run["date"], run["status"], run["matched"]) == (
        "reconciliation",
        today(),
        "balanced",
        3,
    )
    got = await client.get(f"/v1/reconciliation/{today()}", headers=ADMIN)
    assert got.status_code == 200 and got.json() == run

    bank_store.execute("DELETE FROM operations WHERE reference = ?", f"{ids['sale']}:sale")
    r = await client.post(
        "/v1/reconciliation/run", json={"date": today()}, headers={**ADMIN, **idem()}
    )
    assert r.status_code == 200, r.text
    again = (await client.get(f"/v1/reconciliation/{today()}", headers=ADMIN)).json()
    assert again == r.json() and again["id"] != run["id"]
    assert again["status"] == "breaks"
    assert again["breaks_by_kind"]["missing_at_bank"] == 1
    [found] = again["breaks"]
    assert found["object"] == "reconciliation_break"
    assert (found["kind"], found["payment"], found["our_amount"]) == (
        "missing_at_bank",
        ids["sale"],
        1999,
    )
    assert again["totals"] == [{"currency": "usd", "ours": 2999, "bank": 1000, "difference": -1999}]


async def test_admin_only(
    client: httpx.AsyncClient, auth: dict[str, str], merchant: dict[str, Any]
) -> None:
    for r in (
        await client.post("/v1/reconciliation/run", json={"date": today()}, headers=auth),
        await client.get(f"/v1/reconciliation/{today()}", headers=auth),
        await client.get(
            f"/v1/reconciliation/{today()}",
            headers={"Authorization": f"Bearer {merchant['publishable_key']}"},
        ),
    ):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["type"] == "permission_error"
    r = await client.get(f"/v1/reconciliation/{today()}")
    assert r.status_code == 401


@pytest.mark.parametrize(
    "date",
    [
        "2026-13-01",
        "2026-1-1",
        "yesterday",
        "20261124",
        "2026-W47-2",
        "2026-11-24T00:00",
        "1999-12-31",
    ],
)
async def test_a_bad_date_is_a_400_naming_it(client: httpx.AsyncClient, date: str) -> None:
    post = await client.post("/v1/reconciliation/run", json={"date": date}, headers=ADMIN)
    get = await client.get(f"/v1/reconciliation/{date}", headers=ADMIN)
    for r in (post, get):
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "date")


async def test_other_refusals(client: httpx.AsyncClient) -> None:
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    for body in ({"date": tomorrow}, {}, {"date": 20261124}, {"date": today(), "extra": 1}):
        r = await client.post("/v1/reconciliation/run", json=body, headers=ADMIN)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] in ("date", "extra")
    r = await client.get("/v1/reconciliation/2026-01-01", headers=ADMIN)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "resource_missing"


async def test_an_unreachable_bank_is_a_502(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"bank_url": "http://127.0.0.1:9"})
    r = await client.post("/v1/reconciliation/run", json={"date": today()}, headers=ADMIN)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "bank_report_unavailable"
    assert (await client.get(f"/v1/reconciliation/{today()}", headers=ADMIN)).status_code == 404


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paygate.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_reconcile_command(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    runtime: Runtime,
    bank_url: str,
    bank_store: BankStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await day_of_payments(client, auth)
    env = {
        "PAYGATE_DATA_DIR": str(tmp_path),
        "PAYGATE_DATABASE_URL": runtime.settings.resolved_database_url,
        "PAYGATE_BANK_URL": bank_url,
        "PAYGATE_BANK_API_KEY": BANK_KEY,
        "PAYGATE_ADMIN_KEY": ADMIN_KEY,
        "PAYGATE_HMAC_SECRET": HMAC_SECRET,
        "PAYGATE_VAULT_KEYS": VAULT_KEYS,
        "PAYGATE_LOG_FORMAT": "json",
    }
    code, out, err = await cli("reconcile", "--date", today(), env=env)
    assert code == 0, err
    result = json.loads(out)
    assert (result["status"], result["matched"], result["breaks"]) == ("balanced", 3, [])
    # Stored as the endpoint stores it.
    r = await client.get(f"/v1/reconciliation/{today()}", headers=ADMIN)
    assert r.json() == result

    bank_store.execute(
        "UPDATE operations SET amount = 1 WHERE reference = ?", f"{ids['captured']}:capture"
    )
    code, out, err = await cli("reconcile", "--date", today(), env=env)
    assert code == 1, err
    [found] = json.loads(out)["breaks"]
    assert (found["kind"], found["our_amount"], found["bank_amount"]) == (
        "amount_mismatch",
        1500,
        1,
    )

    # Refused before anything runs (the command's body, in-process: no process start needed).
    assert reconcile_command(runtime.settings, "2026-02-30") == 2
    assert "--date" in capsys.readouterr().err
    code, out, err = await cli(
        "reconcile", "--date", today(), env={**env, "PAYGATE_BANK_URL": "http://127.0.0.1:9"}
    )
    assert (code, out) == (3, "")
    assert "unavailable" in err


async def test_a_late_sale_and_its_reversal_match(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    runtime: Runtime,
    bank: httpx.AsyncClient,
    bank_url: str,
) -> None:
    """An approval that lands after its payment failed is refunded at once
    (`<payment>:refund:reversal`): both legs move money at the bank, the ledger books neither,
    and the bank attempts account for both. Built here from a real sale: its booking is taken
    out of the ledger and the reversal applied at the bank and recorded as the processor
    records it."""
    pid = (await pay(client, auth, amount=1200))["id"]
    r = await bank.post(
        "/v1/refund",
        json={
            "reference": f"{pid}:refund:reversal",
            "payment_reference": f"{pid}:sale",
            "amount": 1200,
        },
    )
    assert r.json()["status"] == "approved", r.text
    async with runtime.db.transaction() as conn:
        entry = ledger_entries.c.payment_id == pid
        ids = sa.select(ledger_entries.c.id).where(entry).scalar_subquery()
        await conn.execute(ledger_postings.delete().where(ledger_postings.c.entry_id.in_(ids)))
        await conn.execute(ledger_entries.delete().where(entry))
        await conn.execute(
            balance_transactions.delete().where(balance_transactions.c.source == pid)
        )
        reversal = await attempts.create(
            conn,
            payment_id=pid,
            operation="refund",
            amount=1200,
            currency="usd",
            ref_suffix="reversal",
        )
        await attempts.update(conn, reversal["id"], status="succeeded")
    fetch = HttpReportFetcher(bank_url, BANK_KEY)
    try:
        day = dt.datetime.now(dt.UTC).date()
        result = await reconcile_day(runtime, day, fetch)
        assert (result["status"], result["matched"]) == ("balanced", 2), result["breaks"]
        assert result["totals"] == [{"currency": "usd", "ours": 0, "bank": 0, "difference": 0}]
        # Without the attempt that records it, the reversal is money we know nothing of.
        async with runtime.db.transaction() as conn:
            await attempts.update(conn, reversal["id"], status="unknown")
        result = await reconcile_day(runtime, day, fetch)
        kinds = sorted((b["kind"], b["operation"]) for b in result["breaks"])
        assert kinds == [("missing_in_ledger", "refund"), ("missing_in_ledger", "sale")]
    finally:
        await fetch.aclose()
