"""bench/growth.py's table, its ratios to the first stage, and its failures.

Flatness is read from ratios, not from absolute figures: each stage's rate, latencies and CPU
per operation over the first stage's (`vs_first`) and over the first stage of its own axis
(`vs_axis_first`: 10^6 stored against 10^4 stored).
"""

from __future__ import annotations

import shutil
from typing import Any

from rich.console import Console
from rich.table import Table


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _lat(fig: dict[str, Any], q: str) -> float | None:
    lat = fig.get("create_ms")
    return lat[q] if lat else None


def _ratios(fig: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float | None] | None:
    if base is None:
        return None
    return {
        "ops_per_s": _ratio(fig["ops_per_s"], base["ops_per_s"]),
        **{q: _ratio(_lat(fig, q), _lat(base, q)) for q in ("p50", "p95", "p99")},
        "cpu_ms_per_op": _ratio(
            fig["server"].get("cpu_ms_per_op"), base["server"].get("cpu_ms_per_op")
        ),
    }


def add_ratios(results: dict[str, Any]) -> None:
    """Each scenario's figures over the same scenario's in the first stage, and in the first
    stage of the same axis."""
    for res in results["databases"].values():
        stages = res["stages"]
        for stage in stages:
            axis_first = next(s for s in stages if s["axis"] == stage["axis"])
            for label, fig in stage["scenarios"].items():
                fig["vs_first"] = _ratios(fig, stages[0]["scenarios"].get(label))
                fig["vs_axis_first"] = _ratios(fig, axis_first["scenarios"].get(label))


def _n(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def _x(x: float | None) -> str:
    return "—" if x is None else f"×{x:.2f}"  # noqa: RUF001


def _pages(fig: dict[str, Any]) -> str:
    o = fig.get("outcomes") or {}
    if not o:
        return ""
    return f"{o.get('page_full', 0)}/{o.get('page_short', 0)}"


COLUMNS = (
    "stage",
    "merchants",
    "stored",
    "db MB",
    "scenario",
    "ok/s",
    "ok/s ×first",  # noqa: RUF001
    "ms p50/95/99",
    "p50 ×first",  # noqa: RUF001
    "p99 ×first",  # noqa: RUF001
    "CPU ms/op",
    "CPU ×first",  # noqa: RUF001
    "pages full/short",
    "key writes",
    "load 1m",
)


def _table(title: str, res: dict[str, Any]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for name in COLUMNS:
        t.add_column(name, justify="left" if name in ("stage", "scenario") else "right")
    for stage in res["stages"]:
        first = True
        for label, fig in stage["scenarios"].items():
            r = fig.get("vs_first") or {}
            lat = fig.get("create_ms")
            lead = (
                [
                    stage["stage"],
                    f"{stage['merchants_active']:,} of {stage['merchants_total']:,}",
                    f"{stage['payments_stored']:,}",
                    f"{stage['database_bytes'] / 1e6:,.1f}",
                ]
                if first
                else ["", "", "", ""]
            )
            first = False
            t.add_row(
                *lead,
                label,
                _n(fig["ops_per_s"]),
                _x(r.get("ops_per_s")),
                "—" if not lat else f"{lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f}",
                _x(r.get("p50")),
                _x(r.get("p99")),
                _n(fig["server"].get("cpu_ms_per_op")),
                _x(r.get("cpu_ms_per_op")),
                _pages(fig),
                str(fig.get("api_key_touches", "")),
                f"{fig['loadavg_1m'][1]:.1f}",
            )
    return t


def _seeding(stage: dict[str, Any]) -> str:
    parts = []
    for what in ("merchants", "payments"):
        s = stage["seeding"].get(what)
        if s:
            parts.append(f"{s['rows']:,} {what} in {s['seconds']:.1f} s ({s['rows_per_s']:,}/s)")
    if "analyze_s" in stage["seeding"]:
        parts.append(f"ANALYZE {stage['seeding']['analyze_s']:.1f} s")
    return f"seeding before {stage['stage']}: " + ", ".join(parts) if parts else ""


def print_report(results: dict[str, Any]) -> None:
    width = max(250, shutil.get_terminal_size((250, 40)).columns)
    console = Console(width=width, highlight=False)
    o, m = results["options"], results["machine"]
    console.print(
        f"[bold]make bench-growth[/] {results['started']}  {o['seconds']:g} s per scenario, "
        f"{o['clients']} clients in {o['processes']} generator process(es), {m['cpus']} CPUs, "
        f"load average at start {m['loadavg_start'][0]:.2f} / end {m['loadavg_end'][0]:.2f}"
    )
    for db, res in results["databases"].items():
        title = f"growth: {db} (paygate serve, read cache off, startup {res['startup_s']:.1f} s)"
        console.print(_table(title, res))
        for stage in res["stages"]:
            line = _seeding(stage)
            if line:
                console.print(line)
        console.print(
            "ms = latency of each request; ×first = over the same scenario in the first stage; "  # noqa: RUF001
            "pages full/short = list pages with 10 rows / fewer; key writes = API keys whose "
            "last_used_at the gateway wrote during the scenario (once a minute per key at most)"
        )


def failures(results: dict[str, Any]) -> list[str]:
    """What makes the run fail: a scenario where nothing worked (seeding raises on its own)."""
    out = []
    for db, res in results["databases"].items():
        for stage in res["stages"]:
            for label, fig in stage["scenarios"].items():
                if not fig["ops"]:
                    out.append(
                        f"{db} {stage['stage']}: {label} completed no request "
                        f"({fig['status_codes']}, {fig['errors']})"
                    )
            if not stage["scenarios"]:
                out.append(f"{db} {stage['stage']}: no scenario ran")
    return out
