"""`paygate settle --date YYYY-MM-DD`: settle a day (UTC) for every merchant, as
`POST /v1/settlements/run` does; the day's settlements as JSON on standard output.

Exit status: 0 done (running a day again changes nothing), 2 a bad date.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import typer

from paygate.config import Settings
from paygate.errors import InvalidRequest
from paygate.ids import now_s
from paygate.runtime import Runtime
from paygate.settlements import service

DONE, BAD_DATE = 0, 2


def settle_command(settings: Settings, date: str | None) -> int:
    now = now_s()
    if date is None:
        date = (dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    try:
        day = service.parse_date(date, now)
    except InvalidRequest as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        return BAD_DATE
    made = asyncio.run(_run(settings, day))
    typer.echo(
        json.dumps({"object": "settlement_run", "date": date, "settlements": made}, indent=2)
    )
    return DONE


async def _run(settings: Settings, day: dt.date) -> list[dict[str, Any]]:
    rt = Runtime.from_settings(settings)
    try:
        return await service.run_day(rt, day)
    finally:
        await rt.close()
