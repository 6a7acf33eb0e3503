"""Settlement use cases: the daily run and what merchants read of it.

Each (merchant, mode, currency) settles in a transaction of its own, under the merchant's
balance lock (paygate.ledger.repository.lock_balance), which a refund's reservation takes too:
the available balance read inside it is the one the payout leaves. Running a day again changes
nothing: a settlement already made for the day is found under the lock (and the unique
constraint per merchant, mode, currency and day backs that up).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.config import Settings
from paygate.errors import InvalidRequest, NotFound
from paygate.ids import new_id, now_s
from paygate.ledger import repository as ledger_repository
from paygate.ledger import service as ledger
from paygate.merchants import profile, terms
from paygate.platform import outbox
from paygate.platform.logging import log
from paygate.platform.tasks import reraise_if_cancelling
from paygate.runtime import Runtime
from paygate.settlements import models, pain001, repository
from paygate.settlements.store import ObjectStore, object_store


def render(row: Mapping[Any, Any], covered: list[str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "settlement",
        "livemode": row["livemode"],
        "merchant": row["merchant_id"],
        "currency": row["currency"],
        "date": row["date"],
        "cutoff": row["cutoff"],
        "gross": row["gross"],
        "refunds": row["refunds"],
        "fees": row["fees"],
        "net": row["net"],
        "status": row["status"],
        "payout_amount": row["payout_amount"],
        "payout_file": (
            f"/v1/settlements/{row['id']}/payout_file" if row["payout_file"] is not None else None
        ),
        "balance_transactions": covered,
        "created": row["created"],
    }


async def render_row(conn: AsyncConnection, row: Mapping[Any, Any]) -> dict[str, Any]:
    return render(row, await repository.covered(conn, row["id"]))


def platform_account(settings: Settings) -> profile.BankAccount:
    """The debtor of every payout file: the platform's own account, from the settings."""
    return profile.bank_account(
        settings.platform_iban, settings.platform_bic or None, settings.platform_name
    )


def parse_date(text: str, now: int) -> dt.date:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or len(text) != 10:
        raise InvalidRequest("Invalid date: a day as YYYY-MM-DD (UTC).", param="date")
    if day > dt.datetime.fromtimestamp(now, dt.UTC).date():
        raise InvalidRequest("Invalid date: a day in the future cannot be settled.", param="date")
    return day


async def run_day(
    rt: Runtime, day: dt.date, *, store: ObjectStore | None = None, now: int | None = None
) -> list[dict[str, Any]]:
    """Settle `day` (UTC) for every merchant, mode and currency with something available by the
    day's cut-off; returns every settlement of the day, those made before included."""
    now = now_s() if now is None else now
    if day > dt.datetime.fromtimestamp(now, dt.UTC).date():
        raise InvalidRequest("Invalid date: a day in the future cannot be settled.", param="date")
    store = store or object_store(rt.settings)
    cutoff = models.cutoff_of(day, rt.settings.settlement_cutoff, now)
    # First what is due becomes available (in batches, each its own transaction).
    while True:
        async with rt.db.transaction() as conn:
            released = await ledger.release_due(conn, cutoff)
        if not released:
            break
    async with rt.db.read() as conn:
        scopes = await repository.scopes(conn, cutoff)
    for merchant_id, livemode, currency in scopes:
        try:
            made = await _settle_scope(rt, store, day, cutoff, now, merchant_id, livemode, currency)
        except sa.exc.IntegrityError:
            made = None  # made by a run beside this one: the day is settled once
        if made is not None:
            rt.changed(made)
    async with rt.db.read() as conn:
        return [await render_row(conn, r) for r in await repository.of_date(conn, day.isoformat())]


async def _settle_scope(
    rt: Runtime,
    store: ObjectStore,
    day: dt.date,
    cutoff: int,
    now: int,
    merchant_id: str,
    livemode: bool,
    currency: str,
) -> str | None:
    date = day.isoformat()
    async with rt.db.transaction() as conn:
        await ledger_repository.lock_balance(conn, merchant_id, currency)
        if await repository.find(conn, merchant_id, livemode, currency, date) is not None:
            return None
        txns = await repository.unsettled(conn, merchant_id, livemode, currency, cutoff)
        if not txns:
            return None
        totals = models.Totals.of(txns)
        account = await terms.bank_account_row(conn, merchant_id)
        available = await ledger.available(conn, merchant_id, currency, livemode=livemode)
        status, amount = models.decide(totals.net, available, account is not None)
        settlement_id = new_id("stl")
        row: dict[str, Any] = {
            "id": settlement_id,
            "merchant_id": merchant_id,
            "livemode": livemode,
            "currency": currency,
            "date": date,
            "cutoff": cutoff,
            "gross": totals.gross,
            "refunds": totals.refunds,
            "fees": totals.fees,
            "net": totals.net,
            "status": status,
            "payout_amount": amount,
            "payout_file": None,
            "created": now_s(),
        }
        covered: list[str] = []
        if status == models.PAID:
            assert account is not None
            covered = [t["id"] for t in txns]
            row["payout_file"] = f"payout_files/{settlement_id}.xml"
            await repository.insert(conn, row)
            if await repository.claim(conn, settlement_id, covered) != len(covered):
                raise RuntimeError("balance transactions settled twice")  # rolls back
            await ledger.record_payout(
                conn,
                merchant_id=merchant_id,
                livemode=livemode,
                currency=currency,
                settlement_id=settlement_id,
                amount=amount,
            )
            transfer = pain001.Transfer(
                reference=settlement_id,
                amount=amount,
                currency=currency,
                execution_date=dt.datetime.fromtimestamp(now, dt.UTC).date(),
                remittance=f"Paygate settlement {date} {settlement_id}",
                created=dt.datetime.fromtimestamp(now, dt.UTC),
            )
            creditor = terms.open_bank_account(rt.keyring, account)
            document = pain001.build(transfer, platform_account(rt.settings), creditor)
            # Written before the commit: a settlement that commits always has its file.
            await store.put(row["payout_file"], document)
        else:
            await repository.insert(conn, row)
        await outbox.emit(
            conn,
            type="settlement.created",
            obj=render(row, covered),
            merchant_id=merchant_id,
            sequence=1,
        )
    log.info(
        "settlement.created",
        settlement_id=settlement_id,
        merchant_id=merchant_id,
        currency=currency,
        date=date,
        status=status,
        net=totals.net,
        payout_amount=amount,
    )
    return settlement_id


async def get(
    conn: AsyncConnection, settlement_id: str, *, merchant_id: str | None, livemode: bool | None
) -> Mapping[Any, Any]:
    """A settlement the caller may see (a merchant its own, in its key's mode; admin all)."""
    row = await repository.get(conn, settlement_id)
    if (
        row is None
        or (merchant_id is not None and row["merchant_id"] != merchant_id)
        or (livemode is not None and row["livemode"] != livemode)
    ):
        raise NotFound("No such settlement.", param="id")
    return row


async def payout_file(store: ObjectStore, row: Mapping[Any, Any]) -> bytes:
    if row["payout_file"] is None:
        raise NotFound(
            f"This settlement has no payout file: it paid nothing (status {row['status']}).",
            param="id",
            code="payout_file_missing",
        )
    data = await store.get(row["payout_file"])
    if data is None:
        raise NotFound("The payout file is missing from the object store.", param="id")
    return data


async def daily(rt: Runtime) -> None:
    """The scheduler's job: settle yesterday (UTC). Checked every hour; a day already settled
    changes nothing, so a run that failed is simply made again. Never raises."""
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    try:
        await run_day(rt, yesterday)
    except Exception as exc:
        reraise_if_cancelling(exc)
        log.error("settlement.daily_failed", error=f"{type(exc).__name__}: {exc}"[:300])
