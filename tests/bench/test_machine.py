"""bench/machine.py: the probe of the machine's speed, and the report's warning when the host
lent the run less than most of a core."""

from __future__ import annotations

import io
import multiprocessing
import os

import machine
import report
from rich.console import Console


def _printed(m: dict[str, object]) -> str:
    out = io.StringIO()
    report._machine_speed(Console(file=out, width=300), m)
    return out.getvalue()


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
    assert machine.lent(fig) < machine.LENT_AT_LEAST
    assert machine.lent({"wall_per_cpu": 2.0}) == 0.5 and machine.lent({}) == 0.0


def test_the_report_warns_when_the_host_lent_less_than_most_of_a_core() -> None:
    calm = {"cpu_ms_per_unit": 1.8, "wall_per_cpu": 1.02}
    busy = {"cpu_ms_per_unit": 3.4, "wall_per_cpu": 1.9}
    text = _printed({"speed_start": calm, "speed_end": calm})
    assert "start 1.80 ms CPU, wall/CPU 1.02; end 1.80 ms CPU" in text
    assert "lent less" not in text
    text = _printed({"speed_start": calm, "speed_end": busy})
    assert "the host lent less than 80% of a core at the run's end" in text
    assert _printed({}) == ""  # a results file from before the probe


def test_the_report_names_the_figures_the_host_slowed() -> None:
    calm = {"cpu_ms_per_unit": 1.8, "wall_per_cpu": 1.0}
    busy = {"cpu_ms_per_unit": 3.4, "wall_per_cpu": 2.5}
    res = {
        "limits": {"bare_json": {"machine": calm}, "batched_insert_sqlite": {"rows_per_s": 1}},
        "scenarios": {"accept": {"machine": busy}, "end_to_end": {"machine": calm}},
        "sustained": {"steps": [{"offered_per_s": 12.5, "machine": busy}]},
    }
    out = io.StringIO()
    report._short_host(Console(file=out, width=300), res)
    assert "before accept (40%), sustained 12.5/s (40%)" in out.getvalue()
    assert "bare_json" not in out.getvalue() and "end_to_end" not in out.getvalue()
    assert report._host({"machine": busy}) == "40%" and report._host({}) == "—"
