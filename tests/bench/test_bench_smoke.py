"""`bench/run.py --smoke`: the benchmark harness runs end to end (the embedded gateway, its
limits, the durability check, the localstripe peer), prints its table and writes a JSON with
every figure. Never a speed threshold: only that each figure is there, of a sane type, and that
each scenario did something."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("accept", "end_to_end", "status_reads", "mixed_day")
FIGURES = {
    "scenario": str,
    "seconds": float,
    "clients": int,
    "requests": int,
    "ops": int,
    "ops_per_s": float,
    "status_codes": dict,
    "outcomes": dict,
    "errors": dict,
    "generator": dict,
    "server": dict,
    "loadavg_1m": list,
    "machine": dict,  # bench/machine.py's probe before the load
    "host_speed": float,  # that probe over the run's fastest
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads(out.read_text()) if out.exists() else None
    return proc, results


def _is(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)


def _latency(lat: Any) -> None:
    assert set(lat) == {"p50", "p95", "p99", "max", "n"}
    assert lat["n"] > 0
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def _figures(fig: dict[str, Any]) -> None:
    for key, kind in FIGURES.items():
        assert _is(fig[key], kind), (key, fig[key])
    assert fig["ops"] > 0, fig  # the scenario did something (no speed is judged)
    assert fig["create_ms"] or fig["outcome_ms"]
    assert 0 < fig["host_speed"] <= 1
    for key in ("create_ms", "outcome_ms"):
        if fig[key] is not None:
            _latency(fig[key])
    gen = fig["generator"]
    assert gen["processes"] == 1 and _is(gen["cpu_s"], float)
    assert _is(gen["busiest_process_cpu_pct"], float)
    server = fig["server"]
    assert _is(server["cpu_s"], float) and server["peak_rss_mb"] > 0
    assert server["processes"] and all(
        {"pid", "name", "cpu_s", "peak_rss_mb"} <= set(p) for p in server["processes"]
    )


def test_smoke_run_exits_0_and_prints_the_table(smoke: Any) -> None:
    proc, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for text in ("scenario", "accept", "end_to_end", "status_reads", "mixed_day", "limit: "):
        assert text in proc.stdout
    assert "peer: localstripe" in proc.stdout
    assert "durability: " in proc.stdout and "acknowledged payments present" in proc.stdout


def test_smoke_json_holds_every_figure(smoke: Any) -> None:
    _, results = smoke
    assert results is not None
    assert results["options"]["smoke"] is True
    assert _is(results["machine"]["cpus"], int) and len(results["machine"]["loadavg_start"]) == 3
    for end in ("speed_start", "speed_end"):  # bench/machine.py's probe
        assert set(results["machine"][end]) == {"cpu_ms_per_unit", "wall_per_cpu"}
        assert results["machine"][end]["cpu_ms_per_unit"] > 0
    embedded = results["modes"]["embedded"]
    assert embedded["database"] == "sqlite" and embedded["startup_s"] > 0

    limits = embedded["limits"]
    for name in ("bare_json", "durable_insert_sqlite"):
        _figures(limits[name])
    assert limits["batched_insert_sqlite"]["rows_per_s"] > 0

    assert set(embedded["scenarios"]) == set(SCENARIOS)
    for name in SCENARIOS:
        fig = embedded["scenarios"][name]
        _figures(fig)
        assert set(fig["ratios"]) == {
            "ops_vs_bare_json",
            "ops_vs_durable_insert",
            "p99_vs_durable_insert",
            "db_writes_vs_durable_insert",
            "outbox_rows_vs_batched_insert",
        }
        assert _is(fig["ratios"]["ops_vs_bare_json"], float)
        db = fig["db"]
        assert db["commits_per_s"] is None  # SQLite: only the labelled proxy
        assert _is(db["outbox_rows_per_s"], float) and _is(db["payment_rows_per_s"], float)
        assert _is(fig["drain"]["drain_s"], float)
    assert embedded["scenarios"]["accept"]["create_ms"] is not None
    assert embedded["scenarios"]["end_to_end"]["outcome_ms"] is not None
    assert _is(embedded["scenarios"]["accept"]["accepted_per_s"], float)
    assert _is(embedded["scenarios"]["end_to_end"]["completed_per_s"], float)
    assert embedded["scenarios"]["status_reads"]["accepted_per_s"] is None
    # The merchant's endpoint takes the outcome events: the payments' webhooks reached it.
    assert "payment.succeeded" in embedded["webhook_events"]
    assert all(_is(embedded["scenarios"][n]["webhooks_received"], int) for n in SCENARIOS)
    assert sum(embedded["scenarios"][n]["webhooks_received"] for n in SCENARIOS) > 0


def test_smoke_sustained_step(smoke: Any) -> None:
    """One step of the open loop (a smoke run takes no more): payments offered on the clock to
    the real gateway, its figures and its verdict recorded."""
    proc, results = smoke
    assert "sustained: " in proc.stdout and "payments/s held" in proc.stdout
    found = results["modes"]["embedded"]["sustained"]
    assert found["criteria"]["create_p99_ms"] == 50
    (step,) = found["steps"]
    _figures(step)
    offered = step["outcomes"]["offered"]
    due = step["offered_per_s"] * found["criteria"]["seconds_per_step"]
    assert abs(offered - due) <= max(1.0, 0.1 * due)  # on the clock, give or take a stall
    assert _is(step["in_flight_at_end"], int) and isinstance(step["held"], bool)
    assert step["held"] == (not step["why_not"])
    assert found["held_per_s"] == (step["offered_per_s"] if step["held"] else None)


def test_smoke_durability_and_peer(smoke: Any) -> None:
    _, results = smoke
    d = results["modes"]["embedded"]["durability"]
    assert d["ok"] is True and d["missing"] == []
    assert d["acknowledged"] > 0 and d["present"] == d["acknowledged"]
    assert d["api_sample_checked"] > 0 and d["api_sample_missing"] == []

    peer = results["peer"]
    assert peer["name"] == "localstripe"
    _figures(peer["accept"])
    _figures(peer["end_to_end"])
    vs = results["vs_peer"]["embedded"]
    assert set(vs) == {"accept_rate", "accept_p99", "end_to_end_rate", "end_to_end_p99"}
    assert all(_is(v, float) for v in vs.values())
