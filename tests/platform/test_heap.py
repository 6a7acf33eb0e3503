"""A server process freezes its start-up objects once started (`paygate.platform.heap`), so that
the collector's full collections stop walking them. Each case runs in a process of its own: a
frozen object stays frozen for the life of its process, and this one must not be frozen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from paygate.platform import heap

SETTLE = """
import gc, json, weakref
from paygate.platform import heap

class Thing:
    pass

kept = Thing()
cycle = Thing()
cycle.me = cycle
gone = weakref.ref(cycle)
del cycle
frozen = heap.settle()
made_after = Thing()
walked = gc.get_objects()
print(json.dumps({
    "frozen": frozen,
    "count": gc.get_freeze_count(),
    "young": gc.get_threshold()[0],
    "cycle_collected": gone() is None,
    "kept_walked": any(o is kept for o in walked),
    "after_walked": any(o is made_after for o in walked),
}))
"""

APP = """
import gc, json, sys
from fastapi.testclient import TestClient
from paygate.api.app import create_app
from paygate.cli import api_app
from paygate.config import get_settings

which = sys.argv[1]
app = api_app() if which == "cli" else create_app(get_settings(), settle_heap=which == "on")
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    print(json.dumps({"frozen": gc.get_freeze_count()}))
"""


def run(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_settle_collects_startups_garbage_then_freezes_the_rest() -> None:
    out = run(SETTLE)
    assert out["cycle_collected"] is True  # garbage is collected first, never frozen
    assert out["frozen"] == out["count"]
    assert out["young"] == heap.YOUNG_THRESHOLD
    assert isinstance(out["frozen"], int) and out["frozen"] > 10_000  # the imported modules
    assert out["kept_walked"] is False  # a start-up object is out of the collector's walks
    assert out["after_walked"] is True  # what the process makes later is walked as before


def app_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env.update(
        PAYGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'heap.db'}",
        PAYGATE_DATA_DIR=str(tmp_path),
        PAYGATE_ADMIN_KEY="sk_admin_heap_test",
    )
    return env


def test_a_server_processs_app_settles_once_started(tmp_path: Path) -> None:
    env = app_env(tmp_path)
    assert run(APP, "off", env=env)["frozen"] == 0  # as tests build it: nothing frozen
    on = run(APP, "on", env=env)["frozen"]
    assert isinstance(on, int) and on > 10_000
    cli = run(APP, "cli", env=env)["frozen"]  # `paygate api`'s app, in each server process
    assert isinstance(cli, int) and cli > 10_000
