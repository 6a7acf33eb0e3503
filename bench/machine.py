"""How fast this machine is right now: a fixed unit of pure-Python work, timed.

A shared or virtual machine's speed moves from hour to hour, and within a run: the same code
cost 6.5 ms of CPU a payment on one machine and 10 ms on another (docs/performance.md). Two
figures tell what a run had:

- `cpu_ms_per_unit`: the CPU time the unit took. It grows when the host runs the machine's
  cores slower (shared caches, frequency).
- `wall_per_cpu`: wall time over CPU time for the same unit, on a machine the run has left
  idle. About 1.0 when the process had a core to itself; 2.0 when it ran half the time, the
  host having lent the core elsewhere (steal that the guest may not see).

The run takes this at its start and its end, and before each measured load (`measure`), after
the previous one has drained. The report's `host` column is each figure's `share`: its probe's
speed over the run's fastest probe, both slowdowns counted (CPU a unit, and wall over CPU). It
names the figures under `SPEED_AT_LEAST`: the host's as much as the gateway's.
"""

from __future__ import annotations

import time

UNITS = 60
SPEED_AT_LEAST = 0.8


def _unit() -> int:
    total = 0
    seen: dict[int, int] = {}
    for i in range(20_000):
        seen[i % 512] = total
        total += i * 3
    return total


def speed(units: int = UNITS) -> dict[str, float]:
    """Time `units` units of work (about 0.1 to 0.3 s): CPU ms a unit, and wall time over CPU."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(units):
        _unit()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return {
        "cpu_ms_per_unit": round(1000 * cpu / units, 3),
        "wall_per_cpu": round(wall / cpu, 2) if cpu > 0 else 0.0,
    }


def share(probe: dict[str, float], fastest_cpu_ms: float) -> float:
    """This probe's speed over the run's fastest: 1.0 for the fastest probe, 0.5 for one that
    took twice its CPU, or ran half the time."""
    cost = probe.get("cpu_ms_per_unit", 0.0) * probe.get("wall_per_cpu", 0.0)
    return fastest_cpu_ms / cost if cost > 0 else 0.0


def fastest(probes: list[dict[str, float]]) -> float:
    """The least CPU a unit among `probes` (0.0 without any)."""
    return min((p["cpu_ms_per_unit"] for p in probes if p.get("cpu_ms_per_unit")), default=0.0)
