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
the previous one has drained: the report shows the share of a core the host lent each figure
(`host`) and warns when it was under `LENT_AT_LEAST`.
"""

from __future__ import annotations

import time

UNITS = 60
LENT_AT_LEAST = 0.8


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


def lent(figures: dict[str, float]) -> float:
    """The share of a core the probe had: 1 / wall_per_cpu."""
    ratio = figures.get("wall_per_cpu") or 0.0
    return 1.0 / ratio if ratio > 0 else 0.0
