"""Idempotency keys across a server crash: a real `paygate serve` process dies hard (as `kill -9`
would) just before or just after the commit of a keyed payment; a retry with the same key after
the restart replays the committed answer, or runs the request fresh, and never charges twice.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_KEY, HMAC_SECRET, VAULT_KEYS, payment_body

pytestmark = pytest.mark.slow

REPLAYED = "Idempotent-Replayed"
CRASH_EXIT = 137  # paygate.platform.faults exits with the status of a SIGKILL
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Gateway:
    """`paygate serve` subprocesses over one data folder and database, killed at teardown."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.data_dir = tmp_path / "data"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
        env.update(
            PAYGATE_DATA_DIR=str(self.data_dir),
            PAYGATE_ADMIN_KEY=ADMIN_KEY,
            PAYGATE_HMAC_SECRET=HMAC_SECRET,
            PAYGATE_VAULT_KEYS=VAULT_KEYS,
            PAYGATE_LOG_FORMAT="json",
        )
        # SQLite is the embedded default (a file in the data folder); PostgreSQL is given.
        if database_url.startswith("postgresql"):
            env["PAYGATE_DATABASE_URL"] = database_url
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def start(self, fault: str = "") -> subprocess.Popen[bytes]:
        port = _free_port()
        log = (self.logs / f"serve-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "paygate.cli", "serve", "--port", str(port)],
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
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
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


def _crash_on_keyed_payment(gw: Gateway, fault: str) -> tuple[dict[str, str], str]:
    """Start with `fault` armed, create a merchant, send a keyed payment: the process dies."""
    proc = gw.start(fault)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    merchant = gw.request("POST", "/v1/merchants", json={"name": "Acme"}, headers=admin)
    assert merchant.status_code == 201, merchant.text  # no key: no crash point on this path
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    key = str(uuid.uuid4())
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        gw.request(
            "POST", "/v1/payments", json=payment_body(), headers={**auth, "Idempotency-Key": key}
        )
    assert proc.wait(timeout=10) == CRASH_EXIT, gw.log_text()
    return auth, key


def _payments(gw: Gateway, auth: dict[str, str]) -> list[dict[str, Any]]:
    r = gw.request("GET", "/v1/payments", headers=auth)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_crash_after_commit_then_retry_replays(gateway: Gateway) -> None:
    auth, key = _crash_on_keyed_payment(gateway, "idempotency.after_commit")
    gateway.start()
    [committed] = _payments(gateway, auth)  # the payment committed before the process died

    # The very first retry after the restart: no key is left in flight, the answer is replayed.
    retry = gateway.request(
        "POST", "/v1/payments", json=payment_body(), headers={**auth, "Idempotency-Key": key}
    )
    assert retry.status_code == 202, retry.text
    assert retry.headers[REPLAYED] == "true"
    # The answer as it was first sent (the payment may have moved on since, in a full pipeline).
    assert retry.json()["id"] == committed["id"] and retry.json()["status"] == "pending"
    assert [p["id"] for p in _payments(gateway, auth)] == [committed["id"]]


def test_crash_before_commit_then_retry_executes_once(gateway: Gateway) -> None:
    auth, key = _crash_on_keyed_payment(gateway, "idempotency.before_commit")
    gateway.start()
    assert _payments(gateway, auth) == []  # the transaction died with the process

    headers = {**auth, "Idempotency-Key": key}
    retry = gateway.request("POST", "/v1/payments", json=payment_body(), headers=headers)
    assert retry.status_code == 202, retry.text
    assert REPLAYED not in retry.headers
    assert [p["id"] for p in _payments(gateway, auth)] == [retry.json()["id"]]
    again = gateway.request("POST", "/v1/payments", json=payment_body(), headers=headers)
    assert again.headers[REPLAYED] == "true" and again.content == retry.content
    assert len(_payments(gateway, auth)) == 1
