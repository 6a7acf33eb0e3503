"""`paygate settle --date`: the day's settlements as JSON, idempotent; a bad date exits 2."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from paygate.ledger.models import Pricing
from paygate.runtime import Runtime
from paygate.settlements.cli import BAD_DATE, DONE, settle_command
from tests.conftest import make_settings
from tests.ledger import books


def printed(out: str) -> dict[str, Any]:
    """The JSON document on standard output (log lines go to standard error once `paygate`
    configures logging; unconfigured, as here, they are printed before it)."""
    document: dict[str, Any] = json.loads(out[out.index("{\n") :])
    return document


def test_settle_prints_the_days_settlements_once(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, sqlite_url)

    async def books_of_the_day() -> str:
        rt = Runtime.from_settings(settings)
        try:
            merchant_id = await books.new_merchant(rt)
            pid = await books.new_payment(rt, merchant_id, 2_500, "gbp")
            await books.capture(rt, pid, 2_500, pricing=Pricing(percent_bps=0, fixed={}))
            return merchant_id
        finally:
            await rt.close()

    merchant_id = asyncio.run(books_of_the_day())
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert settle_command(settings, today) == DONE
    first = printed(capsys.readouterr().out)
    [s] = first["settlements"]
    assert (s["merchant"], s["status"], s["payout_amount"]) == (merchant_id, "paid", 2_500)
    assert (tmp_path / "objects" / "payout_files" / f"{s['id']}.xml").exists()
    assert settle_command(settings, today) == DONE
    assert printed(capsys.readouterr().out) == first

    assert settle_command(settings, "2026-02-30") == BAD_DATE
    assert "YYYY-MM-DD" in capsys.readouterr().err
