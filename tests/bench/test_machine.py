"""bench/machine.py: the probe of the machine's speed, and the report's warning when the host
lent the run less than most of a core."""

from __future__ import annotations

import io
import multiprocessing
import os

import machine
import report
from rich.console import Console


def test_the_probe_times_a_fixed_unit() -> None:
    fig = machine.speed(units=5)
    assert fig["cpu_ms_per_unit"] > 0
    assert fig["wall_per_cpu"] >= 0.5  # wall time is never much under CPU time for one thread


def _spin() -> None:
    while True:
        pass


def test_a_probe_that_shares_its_core_sees_half_of_it() -> None:
    """Another process spinning on the probe's one core: the probe runs about half the time,
    and says so (wall/CPU near 2, a lent share near 0.5)."""
    core = min(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    spinner = multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
    spinner.start()
    try:
        assert spinner.pid is not None
        os.sched_setaffinity(spinner.pid, {core})
        os.sched_setaffinity(0, {core})
        fig = machine.speed(units=20)
    finally:
        os.sched_setaffinity(0, mine)
        spinner.kill()
        spinner.join()
    assert fig["wall_per_cpu"] >= 1.5
    assert machine.share(fig, fig["cpu_ms_per_unit"]) < machine.SPEED_AT_LEAST


def test_a_probe_is_judged_against_the_runs_fastest() -> None:
    fast = {"cpu_ms_per_unit": 2.0, "wall_per_cpu": 1.0}
    slower = {"cpu_ms_per_unit": 4.0, "wall_per_cpu": 1.0}  # twice the CPU a unit
    shared = {"cpu_ms_per_unit": 2.0, "wall_per_cpu": 2.0}  # half the time on its core
    assert machine.fastest([slower, fast, shared]) == 2.0 and machine.fastest([]) == 0.0
    assert machine.share(fast, 2.0) == 1.0
    assert machine.share(slower, 2.0) == machine.share(shared, 2.0) == 0.5
    assert machine.share({}, 2.0) == 0.0


def _results() -> dict[str, object]:
    calm = {"cpu_ms_per_unit": 1.8, "wall_per_cpu": 1.0}
    busy = {"cpu_ms_per_unit": 3.6, "wall_per_cpu": 1.25}
    mode = {
        "limits": {"bare_json": {"machine": calm}, "batched_insert_sqlite": {"rows_per_s": 1}},
        "scenarios": {"accept": {"machine": busy}, "end_to_end": {"machine": calm}},
        "sustained": {"steps": [{"offered_per_s": 12.5, "machine": busy}]},
    }
    return {
        "machine": {"speed_start": calm, "speed_end": busy},
        "modes": {"embedded": mode},
        "peer": {"name": "localstripe", "accept": {"machine": calm}},
    }


def test_the_report_names_the_figures_the_host_slowed() -> None:
    results = _results()
    assert len(report.probes(results)) == 7
    out = io.StringIO()
    report._short_host(Console(file=out, width=300), results["modes"]["embedded"], 1.8)
    assert "before accept (40%), sustained 12.5/s (40%)" in out.getvalue()
    assert "bare_json" not in out.getvalue() and "end_to_end" not in out.getvalue()
    assert report._host({"machine": {"cpu_ms_per_unit": 3.6, "wall_per_cpu": 1.25}}, 1.8) == "40%"
    assert report._host({}, 1.8) == "—"
    out = io.StringIO()
    report._machine_speed(Console(file=out, width=300), results["machine"], 1.8)
    assert "start 1.80 ms CPU, wall/CPU 1.00; end 3.60 ms CPU, wall/CPU 1.25" in out.getvalue()
