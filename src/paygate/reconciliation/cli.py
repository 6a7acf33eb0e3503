"""`paygate reconcile --date YYYY-MM-DD`: the day's result as JSON on standard output.

Exit status: 0 balanced, 1 breaks found (listed in the output), 2 a bad date, 3 the bank's
report unavailable (nothing stored). The result is stored as the admin endpoint stores it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import typer

from paygate.config import Settings
from paygate.errors import InvalidRequest
from paygate.reconciliation.fetch import BankReportUnavailable, HttpReportFetcher
from paygate.reconciliation.service import parse_day, reconcile_day
from paygate.runtime import Runtime

BALANCED, BREAKS, BAD_DATE, NO_REPORT = 0, 1, 2, 3


def reconcile_command(settings: Settings, date: str) -> int:
    try:
        day = parse_day(date, param="--date")
    except InvalidRequest as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        return BAD_DATE
    try:
        result = asyncio.run(_run(settings, day))
    except BankReportUnavailable as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        return NO_REPORT
    typer.echo(json.dumps(result, indent=2))
    return BALANCED if result["status"] == "balanced" else BREAKS


async def _run(settings: Settings, day: dt.date) -> dict[str, Any]:
    rt = Runtime.from_settings(settings)
    fetch = HttpReportFetcher.from_settings(settings)
    try:
        return await reconcile_day(rt, day, fetch)
    finally:
        await fetch.aclose()
        await rt.close()
