"""Durable state and the settlement report: what survives, what is never kept."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from paygate.banksim.report import iso_utc
from paygate.banksim.store import Store

PANS = ["4242424242424242", "5555555555554444", "4000000000000002", "4000000000009995"]


async def test_no_card_number_or_cvc_in_the_files(ops, bank_app, bank_settings) -> None:
    for i, pan in enumerate(PANS):
        await ops.pay(f"pay_{i}", 1000, number=pan, cvc="987")
        await ops.pay(f"pay_{i}", 1000, operation="sale", number=pan, cvc="987")
    await ops.capture("pay_0", 1000)
    await bank_app.state.bank.aclose()
    files = [p for p in Path(bank_settings.data_dir).iterdir() if p.name.startswith("bank.db")]
    blob = b"".join(p.read_bytes() for p in files)
    assert b"pay_0:capture" in blob  # the files do hold the traffic
    for pan in PANS:
        assert pan.encode() not in blob
    # The CVC has no column at all (a byte search for three digits would match by chance).
    store = Store(bank_settings.db_path)
    try:
        columns = await store._run(
            lambda conn: [row[1] for row in conn.execute("PRAGMA table_info(operations)")]
        )
    finally:
        await store.close()
    assert not {"number", "card_number", "cvc", "pan"} & set(columns)


async def test_reopened_store_keeps_every_operation(ops, bank_app, bank_settings) -> None:
    await ops.pay("pay_keep", 1000)
    await ops.capture("pay_keep", 900)
    await ops.refund("pay_keep", "re_1", 100)
    await bank_app.state.bank.aclose()
    store = Store(bank_settings.db_path)
    try:
        kept = await store.by_payment("pay_keep")
        assert [(o.operation, o.amount, o.status) for o in kept] == [
            ("authorize", 1000, "approved"),
            ("capture", 900, "approved"),
            ("refund", 100, "approved"),
        ]
        assert (await store.get("pay_keep:capture")) == kept[1]
    finally:
        await store.close()


def _day_ms(day: dt.date, hour: int) -> float:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC).timestamp()


async def test_settlement_report(ops, bank, clock) -> None:
    day, next_day = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    clock.now = _day_ms(day, 10)
    await ops.pay("pay_s1", 1000, operation="sale")
    await ops.pay("pay_s2", 2000)
    await ops.capture("pay_s2", 1500)
    await ops.pay("pay_s3", 3000)  # authorized only: moves no money
    await ops.pay("pay_s4", 500, operation="sale", number="4000000000000002")  # declined
    await ops.refund("pay_s1", "re_1", 250, of="sale")
    clock.now = _day_ms(next_day, 0)
    await ops.refund("pay_s1", "re_2", 250, of="sale")

    response = await bank.get("/v1/reports/settlement", params={"date": day.isoformat()})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert response.text.splitlines()[0] == "reference,operation,amount,currency,time"
    assert [(r["reference"], r["operation"], r["amount"]) for r in rows] == [
        ("pay_s1:sale", "sale", "1000"),
        ("pay_s2:capture", "capture", "1500"),
        ("pay_s1:refund:re_1", "refund", "250"),
    ]
    assert rows[0]["time"] == "2026-03-01T10:00:00.000Z"
    assert dt.datetime.fromisoformat(rows[0]["time"]).tzinfo is not None

    other = await bank.get("/v1/reports/settlement", params={"date": next_day.isoformat()})
    assert other.text.splitlines()[1:] == [
        "pay_s1:refund:re_2,refund,250,usd,2026-03-02T00:00:00.000Z"
    ]
    assert (
        await bank.get("/v1/reports/settlement", params={"date": "yesterday"})
    ).status_code == 400
    no_key = await bank.get(
        "/v1/reports/settlement", params={"date": "2026-03-01"}, headers={"Authorization": ""}
    )
    assert no_key.status_code == 401


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
async def test_approved_operation_survives_kill_9(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PAYGATE_BANK_DATA_DIR": str(tmp_path),
        "PAYGATE_BANK_LATENCY_MEDIAN_MS": "0",
        "PAYGATE_BANK_API_KEY": "bank_sk_kill",
    }
    code = f"from paygate.banksim.app import run; run(port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": "Bearer bank_sk_kill"},
        ) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.05)
            card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}
            answer = await client.post(
                "/v1/sale",
                json={"reference": "pay_k:sale", "amount": 4200, "currency": "eur", "card": card},
            )
            assert answer.json()["status"] == "approved"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    store = Store(tmp_path / "bank.db")
    try:
        kept = await store.get("pay_k:sale")
        assert kept is not None and (kept.status, kept.amount) == ("approved", 4200)
    finally:
        await store.close()
