"""`bench/growth.py --smoke`: the growth benchmark runs end to end on SQLite (seeding merchants
and payment clones, every stage and scenario against a real `paygate serve`), prints its table
and writes a JSON with every figure and its ratios. Never a speed threshold: only that each
figure is there, of a sane type, and that each scenario did something."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["merchants_1", "merchants_3", "merchants_30", "stored_1000", "stored_3000"]
SCENARIOS = ["create", "read", "list_first", "list_deep", "list_deep_big"]
RATIOS = {"ops_per_s", "p50", "p95", "p99", "cpu_ms_per_op"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path_factory.mktemp("growth") / "smoke.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    proc = subprocess.run(
        [sys.executable, "bench/growth.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    results = json.loads(out.read_text()) if out.exists() else None
    return proc, results


def test_smoke_run_exits_0_and_prints_the_table(smoke: Any) -> None:
    proc, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for text in ("growth: sqlite", "ok/s ×first", "p99 ×first", "key writes", *STAGES, *SCENARIOS):  # noqa: RUF001
        assert text in proc.stdout, text
    assert "seeding before stored_1000: " in proc.stdout and "payments in" in proc.stdout
    assert "seeding before merchants_30: 27 merchants in" in proc.stdout


def test_smoke_json_holds_every_stage_and_figure(smoke: Any) -> None:
    _, results = smoke
    assert results is not None
    assert results["options"]["smoke"] is True and results["options"]["read_cache"] == "off"
    sqlite = results["databases"]["sqlite"]
    assert sqlite["database"] == "sqlite" and sqlite["startup_s"] > 0
    stages = sqlite["stages"]
    assert [s["stage"] for s in stages] == STAGES
    assert [s["merchants_active"] for s in stages] == [1, 3, 30, 4, 4]
    for stage in stages:
        assert stage["merchants_total"] >= stage["merchants_active"]
        assert stage["database_bytes"] > 0
        assert stage["database_bytes_after"] >= stage["database_bytes"]
        assert stage["payments_after"] > stage["payments_stored"]  # the stage's creates
        assert sorted(stage["scenarios"]) == sorted(SCENARIOS)  # the JSON sorts its keys
        for label, fig in stage["scenarios"].items():
            assert fig["scenario"] == label
            assert fig["ops"] > 0 and fig["ops_per_s"] > 0, (stage["stage"], label)
            lat = fig["create_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert fig["server"]["cpu_s"] >= 0 and fig["api_key_touches"] >= 0
            assert set(fig["vs_first"]) == RATIOS and set(fig["vs_axis_first"]) == RATIOS
        assert stage["scenarios"]["create"]["accepted_per_s"] > 0
        assert stage["scenarios"]["create"]["drain"]["backlog_left"] == 0
        assert stage["scenarios"]["list_first"]["outcomes"]  # pages counted full / short
    assert stages[0]["scenarios"]["read"]["vs_first"]["ops_per_s"] == 1.0
    # The data only grows, and the stored stages hold what they asked for.
    assert [s["payments_stored"] for s in stages[3:]] == [1000, 3000]
    assert all(a["payments_after"] <= b["payments_stored"] for a, b in itertools.pairwise(stages))
    for stage in stages[3:]:
        seeded = stage["seeding"]["payments"]
        assert seeded["rows"] > 0 and seeded["rows_per_s"] > 0
    assert stages[2]["seeding"]["merchants"]["rows"] == 27
