"""Training labels from the gateway's own payments and fraud reports (`paygate fraud train
--from-db`), on a real migrated database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paygate.config import get_settings
from paygate.fraud.cli import app
from paygate.fraud.labels import read_labelled_history
from paygate.fraud.model import load_default
from paygate.fraud.simulator import SimulatedData
from paygate.fraud.tables import fraud_reports
from paygate.platform.db import Database
from paygate.platform.db.tables import merchants, payment_methods, payments, vault_cards

runner = CliRunner()


def _payment(
    i: int, *, created: int, card: str, merchant: str, amount: int, **kw: object
) -> dict[str, object]:
    return {
        "id": f"pay_{i:08d}",
        "merchant_id": merchant,
        "livemode": kw.get("livemode", True),
        "amount": amount,
        "amount_capturable": 0,
        "amount_captured": amount,
        "amount_refunded": 0,
        "amount_refund_pending": 0,
        "currency": "usd",
        "status": kw.get("status", "succeeded"),
        "capture": True,
        "failure_code": kw.get("failure_code"),
        "failure_message": None,
        "payment_method_id": "pm_1",
        "payment_method": {"type": "card", "card": {"fingerprint": card}},
        "customer_id": None,
        "description": None,
        "metadata": {},
        "risk": None,
        "version": 1,
        "created": created,
        "updated": created,
    }


async def _seed(url: str, rows: list[dict[str, object]], frauds: list[str]) -> None:
    db = Database(url)
    async with db.transaction() as conn:
        merchant_ids = sorted({str(r["merchant_id"]) for r in rows})
        await conn.execute(
            merchants.insert(),
            [{"id": m, "name": m, "tier": "standard", "created": 0} for m in merchant_ids],
        )
        await conn.execute(
            vault_cards.insert().values(
                token="tok_1", key_id="k1", pan_sealed=b"x", fingerprint="fp", created=0
            )
        )
        await conn.execute(
            payment_methods.insert().values(
                id="pm_1",
                merchant_id=merchant_ids[0],
                livemode=True,
                card_token="tok_1",
                brand="visa",
                last4="4242",
                exp_month=12,
                exp_year=2030,
                fingerprint="fp",
                created=0,
            )
        )
        await conn.execute(payments.insert(), rows)
        if frauds:
            await conn.execute(
                fraud_reports.insert(),
                [
                    {
                        "id": f"frr_{i:08d}",
                        "payment_id": p,
                        "merchant_id": "mer_a",
                        "livemode": True,
                        "type": "chargeback",
                        "reason": None,
                        "created": 0,
                    }
                    for i, p in enumerate(frauds)
                ],
            )
    await db.dispose()


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_labels_are_reports_and_undecided_payments_are_left_out(sqlite_url: str) -> None:
    rows = [
        _payment(1, created=100, card="c1", merchant="mer_a", amount=500),
        _payment(2, created=200, card="c2", merchant="mer_a", amount=900),
        _payment(3, created=300, card="c1", merchant="mer_a", amount=5, status="pending"),
        _payment(
            4,
            created=400,
            card="c3",
            merchant="mer_a",
            amount=7,
            status="failed",
            failure_code="fraud_suspected",
        ),
        _payment(
            5,
            created=500,
            card="c3",
            merchant="mer_a",
            amount=8,
            status="failed",
            failure_code="card_declined",
        ),
        _payment(6, created=600, card="c4", merchant="mer_a", amount=9, livemode=False),
    ]
    await _seed(sqlite_url, rows, frauds=["pay_00000002", "pay_00000002"])
    frame = await read_labelled_history(sqlite_url)
    assert frame["id"].tolist() == ["pay_00000001", "pay_00000002", "pay_00000005"]
    assert frame["is_fraud"].tolist() == [0, 1, 0]
    assert frame["card"].tolist() == ["c1", "c2", "c3"]
    with_test = await read_labelled_history(sqlite_url, include_test=True)
    assert with_test["id"].tolist()[-1] == "pay_00000006"


def test_train_from_db(
    sqlite_url: str, reduced: SimulatedData, tmp_path: Path, fresh_settings: None
) -> None:
    tx = reduced.transactions
    rows = [
        _payment(
            i,
            created=int(t),
            card=f"fp_{c}",
            merchant=f"mer_{m % 40}",
            amount=round(a * 100),
        )
        for i, (t, c, m, a) in enumerate(
            zip(tx["time"], tx["customer_id"], tx["terminal_id"], tx["amount"], strict=True)
        )
    ]
    frauds = [f"pay_{i:08d}" for i in range(len(tx)) if tx["is_fraud"].iloc[i]]
    asyncio.run(_seed(sqlite_url, rows, frauds))  # the command runs its own event loop
    args = [
        "train",
        "--from-db",
        "--out",
        str(tmp_path / "model"),
        "--ensemble",
        "1",
        "--max-iter",
        "40",
    ]
    result = runner.invoke(app, args, env={"PAYGATE_DATABASE_URL": sqlite_url})
    assert result.exit_code == 0, result.output
    model = load_default(tmp_path / "model")
    assert model.trained_on["history_rows"] == len(tx)
    assert runner.invoke(app, [*args, "--history", __file__]).exit_code != 0
