"""`paygate serve` as a real subprocess, for tests that kill it, restart it, or drive it over
real HTTP from the outside."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_KEY, HMAC_SECRET, VAULT_KEYS, healthy

CRASH_EXIT = 137  # paygate.platform.faults exits with the status of a SIGKILL
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gateway_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a gateway process: this one's without its PAYGATE_ settings, the test
    secrets, JSON logs, the data folder, the database when given, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env.update(
        PAYGATE_DATA_DIR=str(data_dir),
        PAYGATE_ADMIN_KEY=ADMIN_KEY,
        PAYGATE_HMAC_SECRET=HMAC_SECRET,
        PAYGATE_VAULT_KEYS=VAULT_KEYS,
        PAYGATE_LOG_FORMAT="json",
        **extra,
    )
    if database_url is not None:
        env["PAYGATE_DATABASE_URL"] = database_url
    return env


class Gateway:
    """`paygate serve` subprocesses over one data folder and database, killed at teardown."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.data_dir = tmp_path / "data"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        # SQLite is the embedded default (a file in the data folder); PostgreSQL is given.
        given = database_url if database_url.startswith("postgresql") else None
        self.env = gateway_env(self.data_dir, given)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def start(self, fault: str = "", *, demo: bool = False) -> subprocess.Popen[bytes]:
        port = _free_port()
        log = (self.logs / f"serve-{len(self.procs)}.log").open("wb")
        command = [sys.executable, "-m", "paygate.cli", "serve", "--port", str(port)]
        proc = subprocess.Popen(
            command + (["--demo"] if demo else []),
            env={**self.env, "PAYGATE_FAULT_POINTS": fault},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"paygate serve exited with {proc.returncode}:\n{self.log_text()}")
            if healthy(self.url, 1):
                return proc
            time.sleep(0.05)
        pytest.fail(f"paygate serve not healthy in {START_TIMEOUT_S} s:\n{self.log_text()}")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10, **kwargs)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.logs.iterdir()))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, database_url)
    try:
        yield gw
    finally:
        gw.kill_all()
