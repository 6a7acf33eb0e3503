"""Merchants' bank accounts and terms through the admin API: IBANs checked (schwifty) and never
shown, logged or stored in plain text; pricing, payout delay, tier and API version updatable and
audit-logged; refusals name the field and write nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.merchants import terms
from paygate.platform.db.tables import merchants
from paygate.runtime import Runtime
from paygate.settlements.tables import merchant_bank_accounts
from tests.support import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
IBAN = "DE89370400440532013000"
ACCOUNT = {"iban": "de89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX", "account_holder": "Acme"}


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/merchants", json={"name": "Acme", **body}, headers=ADMIN)


async def test_a_bank_account_is_sealed_and_shown_by_its_last_four_only(
    client: httpx.AsyncClient, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    r = await create(client, bank_account=ACCOUNT)
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["bank_account"] == {
        "object": "bank_account",
        "iban_last4": "3000",
        "country": "DE",
        "bic": "COBADEFFXXX",
        "account_holder": "Acme",
    }
    shown = (await client.get(f"/v1/merchants/{m['id']}", headers=ADMIN)).text
    listed = (await client.get("/v1/merchants", headers=ADMIN)).text
    audit = (await client.get("/v1/audit_log", headers=ADMIN)).text
    for text in (r.text, shown, listed, audit, capsys.readouterr().out):
        assert IBAN not in text and "0532013000" not in text
    async with runtime.db.read() as conn:
        row = (await conn.execute(sa.select(merchant_bank_accounts))).mappings().one()
        assert all(IBAN not in str(v) for v in row.values())
        assert IBAN.encode() not in bytes(row["iban_sealed"])
        # ...and the vault's keyring opens it for the payout file.
        assert terms.open_bank_account(runtime.keyring, row).iban == IBAN


@pytest.mark.parametrize(
    ("account", "param", "code"),
    [
        (
            {**ACCOUNT, "iban": "DE89370400440532013001"},
            "bank_account[iban]",
            "invalid_iban_checksum",
        ),
        ({**ACCOUNT, "iban": "DE8937040044053201300"}, "bank_account[iban]", "invalid_iban_length"),
        (
            {**ACCOUNT, "iban": "XX89370400440532013000"},
            "bank_account[iban]",
            "invalid_iban_country",
        ),
        ({**ACCOUNT, "iban": "4242424242424242"}, "bank_account[iban]", "invalid_iban_format"),
        ({**ACCOUNT, "bic": "COBA"}, "bank_account[bic]", "invalid_bic"),
        ({**ACCOUNT, "account_holder": "  "}, "bank_account[account_holder]", "parameter_invalid"),
    ],
)
async def test_a_bad_bank_account_is_refused_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime, account: dict[str, Any], param: str, code: str
) -> None:
    r = await create(client, bank_account=account)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert account["iban"] not in r.text and account["iban"][4:] not in r.text
    async with runtime.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(merchants)) == 0


async def test_terms_tier_and_version_are_updated_and_audited(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    m = (await create(client)).json()
    assert m["bank_account"] is None
    assert m["payout_delay_days"] == runtime.settings.payout_delay_days
    assert m["pricing"] == {
        "percent_bps": 290,
        "fixed": {"usd": 30, "eur": 25, "gbp": 20},
        "refund_fees": True,
    }
    update = {
        "tier": "premium",
        "api_version": m["api_version"],
        "pricing": {"percent_bps": 150, "fixed": {"EUR": 10}},
        "payout_delay_days": 0,
        "bank_account": ACCOUNT,
    }
    r = await client.post(f"/v1/merchants/{m['id']}", json=update, headers=ADMIN)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["tier"] == "premium" and got["payout_delay_days"] == 0
    assert got["pricing"] == {"percent_bps": 150, "fixed": {"eur": 10}, "refund_fees": True}
    assert got["bank_account"]["iban_last4"] == "3000"
    assert (await client.get(f"/v1/merchants/{m['id']}", headers=ADMIN)).json() == got
    async with runtime.db.read() as conn:
        t = await terms.terms_for(conn, m["id"], 2)
    assert (t.pricing.percent_bps, t.pricing.fixed, t.payout_delay_days) == (150, {"eur": 10}, 0)

    audit = (await client.get("/v1/audit_log?action=merchant.updated", headers=ADMIN)).json()
    [entry] = audit["data"]
    assert entry["object_id"] == m["id"]
    assert entry["details"]["tier"] == "premium"
    assert entry["details"]["bank_account"] == {"iban_last4": "3000", "country": "DE"}
    assert entry["details"]["payout_delay_days"] == 0

    r = await client.post(f"/v1/merchants/{m['id']}", json={"bank_account": None}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["bank_account"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tier": "gold"}, "tier"),
        ({"pricing": {"percent_bps": 10_001}}, "pricing[percent_bps]"),
        ({"pricing": {"fixed": {"xyz": 10}}}, "pricing[fixed]"),
        ({"pricing": {"fixed": {"usd": -1}}}, "pricing[fixed][usd]"),
        ({"payout_delay_days": 31}, "payout_delay_days"),
        ({"payout_delay_days": "2"}, "payout_delay_days"),
        ({"api_version": "1999-01-01"}, "api_version"),
        ({"bank_account": {"iban": IBAN}}, "bank_account.account_holder"),
    ],
)
async def test_a_bad_update_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], param: str
) -> None:
    m = (await create(client)).json()
    before = (await client.get(f"/v1/merchants/{m['id']}", headers=ADMIN)).json()
    r = await client.post(
        f"/v1/merchants/{m['id']}", json={"tier": "premium", **body}, headers=ADMIN
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert (await client.get(f"/v1/merchants/{m['id']}", headers=ADMIN)).json() == before


async def test_updates_need_the_admin_key_and_an_existing_merchant(
    client: httpx.AsyncClient,
) -> None:
    m = (await create(client)).json()
    auth = {"Authorization": f"Bearer {m['api_key']}"}
    assert (await client.post(f"/v1/merchants/{m['id']}", json={}, headers=auth)).status_code == 403
    r = await client.post("/v1/merchants/acct_nope", json={"tier": "premium"}, headers=ADMIN)
    assert r.status_code == 404


async def test_creation_with_bad_terms_creates_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for body, param in (
        ({"payout_delay_days": -1}, "payout_delay_days"),
        ({"pricing": {"percent_bps": -5}}, "pricing[percent_bps]"),
    ):
        r = await create(client, bank_account=ACCOUNT, **body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    async with runtime.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(merchants)) == 0
        assert (
            await conn.scalar(sa.select(sa.func.count()).select_from(merchant_bank_accounts)) == 0
        )
