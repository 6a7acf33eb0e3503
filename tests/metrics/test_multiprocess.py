"""`paygate api --workers 2` as a real subprocess: both server processes answer requests, and a
scrape of `/metrics`, whichever process answers it, counts the requests of both."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.e2e.serve import START_TIMEOUT_S, _free_port, gateway_env
from tests.metrics.support import Samples

HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}


def pids_of(run_dir: Path) -> set[str]:
    return {p.stem.rsplit("_", 1)[-1] for p in run_dir.glob("*.db")}


def served_by(run_dir: Path, pid: str, into: Path) -> float:
    """The `/healthz` requests one server process counted: its files alone, merged by the
    client's own multiprocess collector."""
    into.mkdir(parents=True, exist_ok=True)
    for old in into.iterdir():
        old.unlink()
    for path in run_dir.glob(f"*_{pid}.db"):
        shutil.copy(path, into / path.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(into))  # type: ignore[no-untyped-call]
    return registry.get_sample_value("paygate_http_requests_total", HEALTHZ) or 0.0


def get(url: str) -> int:
    # A new connection per request, so that the kernel hands them to either process.
    return httpx.get(url, timeout=10, headers={"Connection": "close"}).status_code


def test_metrics_aggregate_every_server_process(tmp_path: Path, sqlite_url: str) -> None:
    base = tmp_path / "prometheus"
    base.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = gateway_env(tmp_path / "data", sqlite_url, PROMETHEUS_MULTIPROC_DIR=str(base))
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paygate.cli", "api", "--workers", "2", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def fail(why: str) -> None:
        pytest.fail(f"{why}:\n{log_path.read_text(errors='replace')[-4000:]}")

    healthz = 0
    try:
        deadline = time.monotonic() + START_TIMEOUT_S * 2
        run_dirs: list[Path] = []
        while True:
            if proc.poll() is not None:
                fail(f"paygate api exited with {proc.returncode}")
            run_dirs = list(base.iterdir())
            if len(run_dirs) == 1 and len(pids_of(run_dirs[0])) == 2:
                try:
                    if get(f"{url}/healthz") == 200:
                        healthz += 1
                        break
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                fail("two server processes not up in time")
            time.sleep(0.1)
        run_dir = run_dirs[0]  # fresh for this run, inside the folder given
        pids = sorted(pids_of(run_dir))

        # Until each process has answered some: the kernel spreads new connections.
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(20):
                statuses = list(pool.map(get, [f"{url}/healthz"] * 16))
                assert statuses == [200] * 16
                healthz += len(statuses)
                per_process = [served_by(run_dir, pid, tmp_path / "one" / pid) for pid in pids]
                if all(n > 0 for n in per_process):
                    break
        assert all(n > 0 for n in per_process), per_process
        assert sum(per_process) == healthz

        # Every scrape, whichever process answers it, counts the requests of both.
        for _ in range(6):
            r = httpx.get(f"{url}/metrics", timeout=10, headers={"Connection": "close"})
            assert r.status_code == 200
            samples = Samples.parse(r.text)
            assert samples.get("paygate_http_requests_total", **HEALTHZ) == healthz
            assert samples.get("paygate_http_requests_in_flight") >= 1  # the scrape itself
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # The run's folder goes with the run.
    assert list(base.iterdir()) == []
