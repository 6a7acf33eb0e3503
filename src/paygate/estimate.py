"""Capacity planning (`paygate estimate`): what a target load needs, worked out from what
`make bench` measured on the scale-out topology (`bench/results/*.json`), never from guesses.

Per payment, the bench's `end_to_end` scenario gives the CPU each component spent (the API's
server processes, each worker role, PostgreSQL, NATS, Redis), the database commits, and, from
its `footprint`, the bytes a payment leaves in the database and in Redis and the size of its
events. `status_reads` gives the CPU of one status read. The plan scales those linearly to the
target rate: a component that needs N cores at the target runs as N / utilization processes
(a Python process uses one core), and the engines get machines of `cores_per_machine`.

Linear scaling is what the architecture is built for (stateless processes, a database
partitioned by merchant, a partitioned stream per domain); the plan says where that assumption
carries most weight, so that an architect knows what to measure next. Pure: no I/O but
`load_results`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATEWAY_ROLES = ("api", "relay", "fraud", "processor", "notifier", "scheduler")
ENGINES = ("postgresql", "nats", "redis")
DAY_S = 86_400
# The consumers of the payment stream: fraud, processor and notifications.
CONSUMERS_PER_EVENT = 3
# A figure measured while the host ran the bench's probe under this share of the run's fastest
# (`host_speed`, bench/machine.py) is the host's as much as the gateway's: not planned from.
HOST_SPEED_AT_LEAST = 0.8
PLANNED_FROM = ("end_to_end", "status_reads")


def component_of(process_name: str) -> str | None:
    """The component a process of the bench's table belongs to; None for what a deployment
    does not run (the bank simulator stands in for the bank, `paygate cluster` for a
    supervisor)."""
    if process_name in ("server worker", "paygate api"):
        return "api"
    if process_name.startswith("paygate worker "):
        return process_name.removeprefix("paygate worker ")
    return {"postgres": "postgresql", "nats-server": "nats", "redis-server": "redis"}.get(
        process_name
    )


def _cpu_ms_per_op(scenario: dict[str, Any], ops: float) -> dict[str, float]:
    cpu: dict[str, float] = {}
    for process in scenario["server"]["processes"]:
        component = component_of(process["name"])
        if component is not None:
            cpu[component] = cpu.get(component, 0.0) + process["cpu_s"] * 1000 / ops
    return cpu


@dataclass(frozen=True)
class Measured:
    """Per payment (or per read), from one scale-out bench run."""

    source: str
    cpu_ms: dict[str, float]
    read_cpu_ms: dict[str, float]
    commits_per_payment: float
    footprint: dict[str, Any] = field(default_factory=dict)
    # The least `host_speed` of the figures planned from; None for a run from before the probe.
    host_speed: float | None = None

    @classmethod
    def from_results(cls, results: dict[str, Any], source: str = "") -> Measured:
        mode = results.get("modes", {}).get("scaleout")
        if not mode or "scenarios" not in mode:
            raise ValueError(f"{source or 'the results'}: no scale-out run (make bench)")
        e2e = mode["scenarios"]["end_to_end"]
        done = e2e.get("completed_per_s") or 0
        if not done:
            raise ValueError(f"{source}: the end_to_end scenario completed no payment")
        payments = done * e2e["seconds"]
        reads = mode["scenarios"]["status_reads"]
        commits = (e2e.get("db") or {}).get("commits_per_s") or 0.0
        return cls(
            source=source,
            cpu_ms=_cpu_ms_per_op(e2e, payments),
            read_cpu_ms=_cpu_ms_per_op(reads, reads["ops_per_s"] * reads["seconds"]),
            commits_per_payment=commits / done,
            footprint=mode.get("footprint") or {},
            host_speed=host_speed(results),
        )

    @property
    def calm(self) -> bool:
        """Measured while the host ran at speed (or before the bench probed it)."""
        return _calm(self.host_speed)


def host_speed(results: dict[str, Any]) -> float | None:
    """The least `host_speed` of the scale-out figures a plan is made from, if recorded."""
    scenarios = results.get("modes", {}).get("scaleout", {}).get("scenarios", {})
    speeds = [
        scenarios[n]["host_speed"] for n in PLANNED_FROM if "host_speed" in scenarios.get(n, {})
    ]
    return min(speeds) if speeds else None


@dataclass(frozen=True)
class Target:
    tps: float
    retention_days: int = 2555
    reads_per_payment: float = 2.0
    # The share of the peak rate sustained over a day (1: the peak all day long).
    average_share: float = 1.0
    cores_per_machine: int = 8
    # Plan every process and machine to run at most this busy at the target rate.
    utilization: float = 0.6
    # Memory of one Redis shard (a machine's worth, with room for forks and fragmentation).
    redis_shard_gb: float = 64.0
    # Merchants taking payments (each keeps fraud counters per hour in Redis).
    merchants: int = 10_000


@dataclass(frozen=True)
class Line:
    section: str
    item: str
    value: str
    basis: str


def _count(x: float) -> int:
    return max(1, math.ceil(x - 1e-9))


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def plan(m: Measured, t: Target) -> list[Line]:
    """The capacity plan for `t`, from `m`."""
    if t.tps <= 0 or not 0 < t.utilization <= 1 or t.cores_per_machine < 1:
        raise ValueError("tps must be positive, utilization in (0, 1], cores at least 1")
    lines: list[Line] = []
    reads_per_s = t.tps * t.reads_per_payment
    gateway_cores = 0.0
    for role in GATEWAY_ROLES:
        cores = t.tps * m.cpu_ms.get(role, 0.0) / 1000
        basis = f"{m.cpu_ms.get(role, 0.0):.1f} ms CPU per payment"
        if role == "api":
            cores += reads_per_s * m.read_cpu_ms.get("api", 0.0) / 1000
            basis += f", {m.read_cpu_ms.get('api', 0.0):.2f} ms per read"
        if role == "scheduler":  # one holds the lease; a second stands by
            standby = "one holds the lease, one stands by"
            lines.append(Line("processes", f"paygate {role}", "2", standby))
            continue
        gateway_cores += cores
        processes = _count(cores / t.utilization)
        lines.append(Line("processes", f"paygate {role}", f"{processes:,}", basis))
    machines = _count(gateway_cores / (t.cores_per_machine * t.utilization))
    lines.append(
        Line(
            "processes",
            "gateway machines",
            f"{machines:,}",
            f"{gateway_cores:,.0f} cores busy, {t.cores_per_machine} cores each",
        )
    )

    pg_write = t.tps * m.cpu_ms.get("postgresql", 0.0) / 1000
    pg_read = reads_per_s * m.read_cpu_ms.get("postgresql", 0.0) / 1000
    per_machine = t.cores_per_machine * t.utilization
    primaries = _count(pg_write / per_machine)
    commits = t.tps * m.commits_per_payment
    lines += [
        Line(
            "postgresql",
            "primaries (partitioned by merchant)",
            f"{primaries:,}",
            f"{m.cpu_ms.get('postgresql', 0.0):.1f} ms CPU per payment",
        ),
        Line(
            "postgresql",
            "read replicas",
            f"{max(primaries, _count(pg_read / per_machine)):,}",
            f"at least one per primary; {m.read_cpu_ms.get('postgresql', 0.0):.2f} ms per read",
        ),
        Line(
            "postgresql",
            "commits per second",
            f"{commits:,.0f} ({commits / primaries:,.0f} per primary)",
            f"{m.commits_per_payment:.1f} per payment",
        ),
    ]

    events = m.footprint.get("events_per_payment")
    nats_cores = t.tps * m.cpu_ms.get("nats", 0.0) / 1000
    partitions = _count(nats_cores / t.utilization)
    lines.append(
        Line(
            "nats",
            "stream partitions per domain",
            f"{partitions:,}",
            f"{m.cpu_ms.get('nats', 0.0):.2f} ms CPU per payment; subjects split by merchant",
        )
    )
    lines.append(
        Line("nats", "cluster nodes", f"{3 * _count(partitions / per_machine):,}", "3 replicas")
    )
    if events:
        lines.append(
            Line(
                "nats",
                "messages per second",
                f"{t.tps * events:,.0f} in, {t.tps * events * CONSUMERS_PER_EVENT:,.0f} out",
                f"{events:.1f} events per payment, {CONSUMERS_PER_EVENT} consumers",
            )
        )

    redis = m.footprint.get("redis") or {}
    redis_cores = t.tps * m.cpu_ms.get("redis", 0.0) / 1000
    shards = _count(redis_cores / t.utilization)
    shard_basis = f"{m.cpu_ms.get('redis', 0.0):.2f} ms CPU per payment"
    memory = _redis_memory(redis, t)
    if memory is not None:
        total, basis = memory
        lines.append(Line("redis", "memory", _bytes(total), basis))
        by_memory = _count(total / (t.redis_shard_gb * 1e9))
        shard_basis += f"; {t.redis_shard_gb:g} GB each"
        shards = max(shards, by_memory)
    else:
        lines.append(Line("redis", "memory", "not measured", "run make bench"))
    lines.append(Line("redis", "shards", f"{shards:,}", shard_basis))

    per_payment = m.footprint.get("database_bytes_per_payment")
    daily = t.tps * t.average_share * DAY_S
    if per_payment:
        lines += [
            Line(
                "storage",
                "database per day",
                _bytes(per_payment * daily),
                f"{per_payment:,} B per payment, {daily:,.0f} payments a day",
            ),
            Line("storage", "database per year", _bytes(per_payment * daily * 365), ""),
            Line(
                "storage",
                f"database for {t.retention_days:,} days",
                _bytes(per_payment * daily * t.retention_days),
                "before compression and archiving",
            ),
        ]
    else:
        lines.append(Line("storage", "database", "not measured", "run make bench"))

    body = m.footprint.get("payment_json_bytes")
    event_bytes = m.footprint.get("event_bytes")
    if body and events and event_bytes:
        api = t.tps * (1 + t.reads_per_payment) * body * 2  # request and answer, about a body
        bus = t.tps * events * event_bytes * (1 + CONSUMERS_PER_EVENT)
        db = t.tps * (per_payment or 0) * 2  # rows and the write-ahead log
        lines.append(
            Line(
                "network",
                "per second",
                f"{_bytes(api + bus + db)}/s",
                f"API {_bytes(api)}/s, bus {_bytes(bus)}/s, database {_bytes(db)}/s",
            )
        )
    return lines


def latest_results(folder: Path) -> Path:
    """The newest results file of a run with the scale-out mode (smoke runs left out): by the
    date its name begins with, then, for runs of the same day, by when the run started. A run
    whose host slowed the figures planned from (`Measured.calm`) is passed over."""
    found = sorted(
        (
            (p, results)
            for p in folder.glob("*.json")
            if "-smoke" not in p.name and ("scaleout" in p.name or "both" in p.name)
            for results in [_read(p)]
            if results is not None
        ),
        key=lambda pair: (pair[0].name[:10], _started(pair[1]), pair[0].name),
    )
    calm = [p for p, results in found if _calm(host_speed(results))]
    if not calm:
        raise FileNotFoundError(f"no scale-out results in {folder}: run make bench")
    return calm[-1]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def _calm(speed: float | None) -> bool:
    """A host speed to plan from: at least `HOST_SPEED_AT_LEAST`, or not recorded."""
    return speed is None or speed >= HOST_SPEED_AT_LEAST


def _started(results: dict[str, Any]) -> str:
    started = results.get("started")
    return started if isinstance(started, str) else ""


def _redis_memory(redis: dict[str, Any], t: Target) -> tuple[float, str] | None:
    """Redis memory as rate times lifetime, per kind of key (`bench/servers.Redis.memory`):

    - a payment's keys (its once-per-payment marks, its cached read), one set per payment;
    - a card's counters, one set per card and hour bucket: planned as if every payment brought
      a card not yet counted in its hour, an upper bound (a card paying twice in an hour shares
      them);
    - a merchant's counters, one set per merchant and hour: `merchants` of them, each counted
      every hour, again an upper bound;
    - anything else, as much as the run left.

    Keys kept longer than a day fill at the day's average rate, shorter ones at the peak. A run
    from before the breakdown has only two classes (kept more or less than a day), each at its
    longest lifetime: less exact, and said so."""
    kinds = redis.get("kinds")
    if kinds:
        total, parts = 0.0, []
        for kind in kinds:
            ttl, per_owner, owner = kind["ttl_s"], kind["bytes_per_owner"], kind["owner"]
            if ttl <= 0 or owner == "other":
                held = float(kind["bytes"])
            elif owner == "merchant":
                held = per_owner * t.merchants * max(1.0, ttl / 3_600)
            else:
                rate = t.tps * (t.average_share if ttl > DAY_S else 1.0)
                held = per_owner * rate * ttl
            total += held
            if owner != "other":
                parts.append(f"{per_owner:,} B a {owner} for {_lifetime(ttl)} ({_bytes(held)})")
        basis = "; ".join(parts)
        if any(kind["owner"] in ("card", "merchant") for kind in kinds):
            basis += f" (each payment a card new to its hour, {t.merchants:,} merchants each"
            basis += " hour: an upper bound)"
        return total, basis
    if "long" in redis and "short" in redis:
        long, short = redis["long"], redis["short"]
        kept = long["bytes_per_payment"] * t.tps * t.average_share * long["ttl_s"]
        cached = short["bytes_per_payment"] * t.tps * short["ttl_s"]
        basis = (
            f"{long['bytes_per_payment']:,} B per payment kept {long['ttl_s'] / DAY_S:.0f}"
            f" days ({_bytes(kept)}), {short['bytes_per_payment']:,} B kept"
            f" {short['ttl_s']:,} s ({_bytes(cached)}); a run without the breakdown per kind"
            " of key: rerun make bench"
        )
        return kept + cached, basis
    return None


def _lifetime(ttl_s: float) -> str:
    if ttl_s >= DAY_S:
        return f"{ttl_s / DAY_S:g} days"
    if ttl_s >= 3_600:
        return f"{ttl_s / 3_600:g} h"
    return f"{ttl_s:g} s"


def load_results(path: Path) -> Measured:
    return Measured.from_results(json.loads(path.read_text()), source=str(path))
