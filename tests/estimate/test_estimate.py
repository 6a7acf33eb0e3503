"""`paygate estimate`: the capacity plan scales what one bench run measured per payment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from paygate import estimate
from paygate.cli import app

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def process(name: str, cpu_s: float) -> dict[str, Any]:
    return {"name": name, "cpu_s": cpu_s, "peak_rss_mb": 100.0, "pid": 1}


def results(footprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """A scale-out run: 100 payments in 10 s end to end, 1,000 reads in 10 s."""
    e2e = {
        "completed_per_s": 10.0,
        "seconds": 10.0,
        "db": {"commits_per_s": 90.0},
        "server": {
            "processes": [
                process("server worker", 0.6),
                process("server worker", 0.4),  # the API: 10 ms per payment
                process("paygate worker processor", 2.0),  # 20 ms
                process("paygate worker fraud", 0.5),
                process("paygate worker relay", 0.3),
                process("paygate worker notifier", 0.2),
                process("paygate worker scheduler", 0.1),
                process("postgres", 0.5),
                process("postgres", 0.5),  # 10 ms
                process("nats-server", 0.2),
                process("redis-server", 0.1),
                process("paygate bank-sim", 9.0),  # the bank's, not ours
                process("paygate cluster", 0.0),
            ]
        },
    }
    reads = {
        "ops_per_s": 100.0,
        "seconds": 10.0,
        "server": {"processes": [process("server worker", 1.0), process("postgres", 0.5)]},
    }
    mode: dict[str, Any] = {"scenarios": {"end_to_end": e2e, "status_reads": reads}}
    if footprint is not None:
        mode["footprint"] = footprint
    return {"modes": {"scaleout": mode}}


FOOTPRINT = {
    "database_bytes_per_payment": 5000,
    "events_per_payment": 4.0,
    "event_bytes": 1000,
    "payment_json_bytes": 1200,
    "redis": {
        "long": {"bytes_per_payment": 200, "ttl_s": 10 * 86400},
        "short": {"bytes_per_payment": 1000, "ttl_s": 300},
    },
}


def lines_by_item(lines: list[estimate.Line]) -> dict[str, estimate.Line]:
    return {f"{line.section}/{line.item}": line for line in lines}


def test_per_payment_figures_come_from_the_run() -> None:
    m = estimate.Measured.from_results(results(FOOTPRINT))
    assert m.cpu_ms["api"] == pytest.approx(10.0)
    assert m.cpu_ms["processor"] == pytest.approx(20.0)
    assert m.cpu_ms["postgresql"] == pytest.approx(10.0)
    assert "bank-sim" not in m.cpu_ms and None not in m.cpu_ms
    assert m.read_cpu_ms == pytest.approx({"api": 1.0, "postgresql": 0.5})
    assert m.commits_per_payment == pytest.approx(9.0)


def test_processes_scale_with_the_rate_at_the_planned_utilization() -> None:
    m = estimate.Measured.from_results(results(FOOTPRINT))
    plan = lines_by_item(estimate.plan(m, estimate.Target(tps=1000, reads_per_payment=2)))
    # The processor: 1,000 x 20 ms = 20 cores, at 60 %: 34 processes.
    assert plan["processes/paygate processor"].value == "34"
    # The API: 1,000 x 10 ms + 2,000 reads x 1 ms = 12 cores: 20 processes.
    assert plan["processes/paygate api"].value == "20"
    assert plan["processes/paygate scheduler"].value == "2"
    # PostgreSQL: 10 cores of writes on 8-core machines at 60 %: 3 primaries.
    assert plan["postgresql/primaries (partitioned by merchant)"].value == "3"
    assert plan["postgresql/commits per second"].value.startswith("9,000 ")
    assert plan["nats/messages per second"].value == "4,000 in, 12,000 out"


def test_storage_and_redis_follow_the_footprint() -> None:
    m = estimate.Measured.from_results(results(FOOTPRINT))
    target = estimate.Target(tps=100, retention_days=10, average_share=0.5)
    plan = lines_by_item(estimate.plan(m, target))
    # 100/s at half the peak all day: 4.32 million payments a day, 5 kB each.
    assert plan["storage/database per day"].value == "21.6 GB"
    assert plan["storage/database for 10 days"].value == "216.0 GB"
    # 200 B per payment for 10 days at the day's average rate, 1 kB for 300 s at the peak.
    assert (
        plan["redis/memory"].value == f"{(200 * 50 * 10 * 86400 + 1000 * 100 * 300) / 1e9:.1f} GB"
    )


def test_redis_memory_follows_each_kind_of_key() -> None:
    day = 86400
    kinds = [
        {"owner": "payment", "ttl_s": 2 * day, "bytes_per_owner": 200, "bytes": 2000},
        {"owner": "payment", "ttl_s": 300, "bytes_per_owner": 100, "bytes": 1000},
        {"owner": "card", "ttl_s": 39 * day, "bytes_per_owner": 600, "bytes": 600},
        {"owner": "merchant", "ttl_s": 39 * day, "bytes_per_owner": 300, "bytes": 300},
        {"owner": "other", "ttl_s": -1, "bytes_per_owner": 1000, "bytes": 1000},
    ]
    m = estimate.Measured.from_results(results({**FOOTPRINT, "redis": {"kinds": kinds}}))
    target = estimate.Target(tps=100, average_share=0.5, merchants=10)
    line = lines_by_item(estimate.plan(m, target))["redis/memory"]
    # Kept over a day: at the day's average rate (50/s); the cached reads at the peak; a card
    # per payment; ten merchants, one set of counters an hour for 39 days; the rest as it is.
    held = 200 * 50 * 2 * day + 100 * 100 * 300 + 600 * 50 * 39 * day + 300 * 10 * 39 * 24 + 1000
    assert line.value == f"{held / 1e9:.1f} GB"
    assert "600 B a card for 39 days" in line.basis and "upper bound" in line.basis


def test_an_older_run_without_kinds_still_plans_and_says_so() -> None:
    m = estimate.Measured.from_results(results(FOOTPRINT))
    line = lines_by_item(estimate.plan(m, estimate.Target(tps=100)))["redis/memory"]
    assert "rerun make bench" in line.basis


def test_redis_shards_hold_the_memory_or_the_load_whichever_needs_more() -> None:
    m = estimate.Measured.from_results(results(FOOTPRINT))
    plan = lines_by_item(estimate.plan(m, estimate.Target(tps=100, redis_shard_gb=1)))
    # 17.28 GB kept + 0.03 GB cached on 1 GB shards; the CPU (10 ms a second) needs one.
    assert plan["redis/shards"].value == "18"
    plan = lines_by_item(estimate.plan(m, estimate.Target(tps=100, redis_shard_gb=1000)))
    assert plan["redis/shards"].value == "1"


def test_a_run_without_a_footprint_says_what_it_lacks() -> None:
    plan = lines_by_item(
        estimate.plan(estimate.Measured.from_results(results()), estimate.Target(tps=10))
    )
    assert plan["storage/database"].value == "not measured"
    assert plan["redis/memory"].value == "not measured"


def test_results_without_a_scale_out_run_are_refused() -> None:
    with pytest.raises(ValueError, match="no scale-out run"):
        estimate.Measured.from_results({"modes": {"embedded": {}}})
    with pytest.raises(ValueError, match="tps"):
        estimate.plan(estimate.Measured.from_results(results()), estimate.Target(tps=0))


def test_the_newest_full_run_is_read(tmp_path: Path) -> None:
    for name in ("2026-01-01-both.json", "2026-02-01-scaleout.json", "2026-03-01-both-smoke.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "2026-04-01-embedded.json").write_text("{}")
    assert estimate.latest_results(tmp_path).name == "2026-02-01-scaleout.json"
    with pytest.raises(FileNotFoundError):
        estimate.latest_results(tmp_path / "none")
    # Two runs of one day: the one that started later, whatever its name.
    (tmp_path / "2026-05-01-scaleout.json").write_text('{"started": "2026-05-01T16:00:00+00:00"}')
    (tmp_path / "2026-05-01-both-a.json").write_text('{"started": "2026-05-01T09:00:00+00:00"}')
    assert estimate.latest_results(tmp_path).name == "2026-05-01-scaleout.json"
    (tmp_path / "2026-05-01-both-b.json").write_text('{"started": "2026-05-01T18:30:00+00:00"}')
    assert estimate.latest_results(tmp_path).name == "2026-05-01-both-b.json"


def _timed(started: str, **speeds: float) -> str:
    """A results file whose scale-out figures carry the host's speed (bench/machine.py)."""
    scenarios = {name: {"host_speed": speed} for name, speed in speeds.items()}
    return json.dumps({"started": started, "modes": {"scaleout": {"scenarios": scenarios}}})


def test_a_run_the_host_slowed_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / "2026-06-01-both-a.json").write_text(
        _timed("2026-06-01T09:00:00+00:00", end_to_end=0.97, status_reads=0.9)
    )
    (tmp_path / "2026-06-01-both-b.json").write_text(
        _timed("2026-06-01T10:00:00+00:00", end_to_end=0.46, status_reads=0.99)
    )
    assert estimate.latest_results(tmp_path).name == "2026-06-01-both-a.json"
    (tmp_path / "2026-06-01-both-c.json").write_text(
        _timed("2026-06-01T11:00:00+00:00", end_to_end=0.8, status_reads=0.95)
    )
    assert estimate.latest_results(tmp_path).name == "2026-06-01-both-c.json"
    assert estimate.host_speed(json.loads(_timed("x", end_to_end=0.8, status_reads=0.7))) == 0.7
    assert estimate.host_speed({"modes": {"scaleout": {"scenarios": {}}}}) is None


def test_a_plan_from_a_slowed_run_says_so(tmp_path: Path) -> None:
    slowed = results(FOOTPRINT)
    for name in ("end_to_end", "status_reads"):
        slowed["modes"]["scaleout"]["scenarios"][name]["host_speed"] = 0.46
    path = tmp_path / "2026-12-01-scaleout.json"
    path.write_text(json.dumps(slowed))
    assert not estimate.load_results(path).calm
    assert estimate.load_results(path).host_speed == 0.46
    out = CliRunner().invoke(app, ["estimate", "--tps", "1000", "--results", str(path)])
    assert out.exit_code == 0, out.output
    assert "measured while the host ran at 46% of the run's fastest" in out.output
    calm = tmp_path / "2026-12-02-scaleout.json"
    calm.write_text(json.dumps(results(FOOTPRINT)))
    assert estimate.load_results(calm).calm
    out = CliRunner().invoke(app, ["estimate", "--tps", "1000", "--results", str(calm)])
    assert "measured while the host" not in out.output


def test_the_committed_results_plan_a_black_friday() -> None:
    """The figures in bench/results load and give a plan for every component."""
    plan = estimate.plan(
        estimate.load_results(estimate.latest_results(RESULTS)), estimate.Target(tps=2300)
    )
    assert {line.section for line in plan} >= {"processes", "postgresql", "nats", "redis"}


def test_the_command_prints_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-01-scaleout.json"
    path.write_text(json.dumps(results(FOOTPRINT)))
    out = CliRunner().invoke(app, ["estimate", "--tps", "1000", "--results", str(path)])
    assert out.exit_code == 0, out.output
    assert "paygate processor" in out.output and "34" in out.output
    bad = CliRunner().invoke(app, ["estimate", "--tps", "10", "--results", str(tmp_path / "x")])
    assert bad.exit_code == 2
