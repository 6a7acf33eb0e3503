"""Injected faults: hangs after applying, errors before, outages, and their run-time control."""

from __future__ import annotations

import asyncio
import time

import pytest

from paygate.banksim import BankSimSettings, FaultConfig
from paygate.banksim.faults import FaultInjector


def test_fault_settings_and_run_time_config_have_the_same_knobs() -> None:
    assert set(FaultConfig.model_fields) <= set(BankSimSettings.model_fields)
    settings = BankSimSettings(timeout_rate=0.25, down=True, data_dir="/nonexistent")
    assert settings.faults().timeout_rate == 0.25 and settings.faults().down


def test_env_names(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PAYGATE_BANK_PORT", "9191")
    monkeypatch.setenv("PAYGATE_BANK_ERROR_RATE", "0.5")
    monkeypatch.setenv("PAYGATE_DATA_DIR", str(tmp_path))
    settings = BankSimSettings()
    assert (settings.port, settings.error_rate, settings.data_dir) == (9191, 0.5, tmp_path)
    assert settings.db_path == tmp_path / "bank.db"
    monkeypatch.setenv("PAYGATE_BANK_DATA_DIR", str(tmp_path / "bank"))
    assert BankSimSettings().data_dir == tmp_path / "bank"


def test_seeded_draws_repeat() -> None:
    config = FaultConfig(latency_median_ms=5, error_rate=0.3, timeout_rate=0.3, slow_rate=0.2)
    first = [FaultInjector(config, seed=42).draw(can_hang=True) for _ in range(1)]
    a, b = FaultInjector(config, seed=42), FaultInjector(config, seed=42)
    assert [a.draw(can_hang=True) for _ in range(50)] == [b.draw(can_hang=True) for _ in range(50)]
    assert first[0].delay_s > 0
    draws = [a.draw(can_hang=False) for _ in range(200)]
    assert all(d.hang_s == 0 for d in draws)
    assert 20 < sum(d.error for d in draws) < 100


async def test_timeout_applies_then_hangs(ops, bank) -> None:
    await bank.put("/v1/admin/faults", json={"timeout_rate": 1, "hang_s": 5})
    body = {
        "reference": "pay_t:authorize",
        "amount": 1000,
        "currency": "usd",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030},
    }
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bank.post("/v1/authorize", json=body), 0.5)
    assert time.monotonic() - started < 2
    found = await bank.get("/v1/operations/pay_t:authorize")
    assert found.status_code == 200 and found.json()["status"] == "approved"


async def test_short_hang_still_answers(bank) -> None:
    await bank.put("/v1/admin/faults", json={"timeout_rate": 1, "hang_s": 0.2})
    body = {
        "reference": "pay_h:sale",
        "amount": 10,
        "currency": "usd",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030},
    }
    started = time.monotonic()
    response = await bank.post("/v1/sale", json=body)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


async def test_errors_apply_nothing(ops, bank) -> None:
    await bank.put("/v1/admin/faults", json={"error_rate": 1})
    body = {
        "reference": "pay_e:authorize",
        "amount": 1000,
        "currency": "usd",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030},
    }
    response = await bank.post("/v1/authorize", json=body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert await ops.listing("pay_e") == []
    await bank.patch("/v1/admin/faults", json={"error_rate": 0})
    assert (await bank.get("/v1/operations/pay_e:authorize")).status_code == 404


async def test_down_switch(ops, bank) -> None:
    await ops.pay("pay_d", 1000)
    turned = await bank.put("/v1/admin/faults", json={"down": True})
    assert turned.json()["down"] is True
    assert (await bank.post("/v1/capture", json={})).status_code == 503
    assert (await bank.get("/v1/operations/pay_d:authorize")).status_code == 503
    assert (await bank.get("/healthz")).status_code == 503
    # The audit listing and the admin endpoint still answer.
    assert len(await ops.listing("pay_d")) == 1
    assert (await bank.get("/v1/admin/faults")).json()["down"] is True
    await bank.put("/v1/admin/faults", json={"down": False})
    assert (await ops.capture("pay_d", 1000))["status"] == "approved"


async def test_admin_put_resets_patch_merges(bank, bank_settings) -> None:
    await bank.put("/v1/admin/faults", json={"error_rate": 0.5, "slow_rate": 0.1})
    patched = (await bank.patch("/v1/admin/faults", json={"down": True})).json()
    assert (patched["error_rate"], patched["slow_rate"], patched["down"]) == (0.5, 0.1, True)
    replaced = (await bank.put("/v1/admin/faults", json={"slow_ms": 10})).json()
    assert replaced == {**bank_settings.faults().model_dump(), "slow_ms": 10}
    assert (await bank.put("/v1/admin/faults", json={"error_rate": 2})).status_code == 400
    assert (await bank.put("/v1/admin/faults", json={"nonsense": 1})).status_code == 400
    assert (await bank.put("/v1/admin/faults", json=[1])).status_code == 400
    no_key = await bank.put("/v1/admin/faults", json={}, headers={"Authorization": ""})
    assert no_key.status_code == 401


async def test_slow_calls_are_delayed(bank) -> None:
    await bank.put("/v1/admin/faults", json={"slow_rate": 1, "slow_ms": 150})
    started = time.monotonic()
    await bank.get("/v1/operations/pay_z:authorize")
    assert time.monotonic() - started >= 0.15
