"""Reconciliation use cases: run a UTC day against the bank's report, read a day's result.

The bank's reports (the day and both neighbours, which tell timing from missing) are fetched
before the transaction opens, so no database lock is held across the network. Our side is read,
matched and the result stored in one transaction: a day's result is replaced whole, never mixed
with an earlier run's breaks.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import InvalidRequest, NotFound
from paygate.ids import now_s
from paygate.platform.logging import log
from paygate.platform.tasks import reraise_if_cancelling
from paygate.reconciliation import models, repository
from paygate.reconciliation.fetch import BankReportUnavailable, HttpReportFetcher, ReportFetcher
from paygate.runtime import Runtime

FIRST_DAY = dt.date(2000, 1, 1)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def parse_day(value: str, *, param: str = "date") -> dt.date:
    """A `YYYY-MM-DD` day from 2000-01-01 to today (UTC), or a 400 naming `param`."""
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)  # ISO 8601's other forms (20261124, 2026-W47-2) are refused
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{param} must be a day as YYYY-MM-DD.", param=param) from None
    if not FIRST_DAY <= day <= today():
        raise InvalidRequest(
            f"{param} must be a day from {FIRST_DAY} to today (UTC); a later day has no report.",
            param=param,
        )
    return day


async def fetch_bank(day: dt.date, fetch: ReportFetcher) -> list[models.Movement]:
    """The bank's lines of `day` and its neighbours (a day after today has none)."""
    lines: list[models.Movement] = []
    for offset in (-1, 0, 1):
        other = day + dt.timedelta(days=offset)
        if other > today():
            continue
        text = await fetch(other)
        try:
            lines += models.parse_report(text)
        except models.ReportInvalid as exc:
            raise BankReportUnavailable(
                f"The bank's settlement report of {other} cannot be read: {exc}."
            ) from None
    return lines


async def reconcile_in(
    conn: AsyncConnection, day: dt.date, bank: list[models.Movement]
) -> dict[str, Any]:
    """Match `bank` against our movements of the day and its neighbours, store the result in
    place of the day's previous one, and answer it."""
    start, _ = models.day_bounds(day - dt.timedelta(days=1))
    _, end = models.day_bounds(day + dt.timedelta(days=1))
    ours = await repository.our_movements(conn, start, end)
    result = models.reconcile(day, ours, bank)
    await repository.save(conn, result, now_s())
    log.info(
        "reconciliation.completed",
        date=day.isoformat(),
        status=result.status,
        matched=result.matched,
        breaks={k: n for k, n in result.by_kind().items() if n},
    )
    found = await get(conn, day)
    return found


async def reconcile_day(rt: Runtime, day: dt.date, fetch: ReportFetcher) -> dict[str, Any]:
    """Reconcile one UTC day: `fetch(day)` answers the bank's settlement CSV of a day. Running a
    day again replaces its result. Raises `BankReportUnavailable` (nothing stored) when a report
    cannot be had or read."""
    bank = await fetch_bank(day, fetch)
    async with rt.db.transaction() as conn:
        return await reconcile_in(conn, day, bank)


async def daily(rt: Runtime, fetch: ReportFetcher | None = None) -> None:
    """The scheduler's job: reconcile yesterday once (a day already run is left as it is; run
    it again by hand with `paygate reconcile` or the admin endpoint). Never raises: a failure is
    logged and the next check tries again."""
    day = today() - dt.timedelta(days=1)
    own = None
    try:
        async with rt.db.read() as conn:
            if await repository.get_run(conn, day) is not None:
                return
        if fetch is None:
            fetch = own = HttpReportFetcher.from_settings(rt.settings)
        await reconcile_day(rt, day, fetch)
    except Exception as exc:
        reraise_if_cancelling(exc)
        log.warning(
            "reconciliation.daily_failed",
            date=day.isoformat(),
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
    finally:
        if own is not None:
            await own.aclose()


async def get(conn: AsyncConnection, day: dt.date) -> dict[str, Any]:
    """The day's latest run with its breaks, or a 404."""
    run = await repository.get_run(conn, day)
    if run is None:
        raise NotFound(f"No reconciliation has run for {day}.", param="date")
    return render(run, await repository.breaks_of(conn, day))


def render(run: Mapping[Any, Any], breaks: Any) -> dict[str, Any]:
    return {
        "id": run["id"],
        "object": "reconciliation",
        "date": run["date"],
        "status": run["status"],
        "matched": run["matched"],
        "bank_rows": run["bank_rows"],
        "ledger_rows": run["ledger_rows"],
        "totals": [{**t, "difference": t["bank"] - t["ours"]} for t in run["totals"]],
        "breaks_by_kind": run["breaks_by_kind"],
        "breaks": [render_break(b) for b in breaks],
        "created": run["created"],
    }


def render_break(b: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": b["id"],
        "object": "reconciliation_break",
        "kind": b["kind"],
        "reference": b["reference"],
        "payment": b["payment_id"],
        "refund": b["refund_id"],
        "operation": b["operation"],
        "our_amount": b["our_amount"],
        "our_currency": b["our_currency"],
        "bank_amount": b["bank_amount"],
        "bank_currency": b["bank_currency"],
        "details": b["details"],
    }
