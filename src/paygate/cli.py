"""Commands (DESIGN.md section 4): `paygate serve | api | migrate | bank-sim`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from paygate.config import Settings, get_settings
from paygate.platform.logging import configure_logging
from paygate.platform.tracing import configure_tracing

app = typer.Typer(
    help="Paygate: a self-hostable payment gateway.", no_args_is_help=True, add_completion=False
)
console = Console(stderr=True)


def _mount_fraud() -> None:
    from paygate.fraud.cli import app as fraud_app

    app.add_typer(fraud_app, name="fraud", help="Train and evaluate the fraud model.")


_mount_fraud()


def _settings(**overrides: Any) -> Settings:
    base = get_settings()
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=given) if given else base


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (SQLite or PostgreSQL, from PAYGATE_DATABASE_URL)."""
    from paygate.platform.db.migrate import upgrade

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    upgrade(settings.resolved_database_url)
    console.print(f"schema up to date ({settings.resolved_database_url.split(':', 1)[0]})")


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="HTTP port (PAYGATE_PORT).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    demo: Annotated[bool, typer.Option(help="Create a demo merchant and print its keys.")] = False,
) -> None:
    """The whole gateway in one process on the embedded default (SQLite)."""
    import uvicorn

    from paygate.api.app import create_app
    from paygate.platform.db.migrate import upgrade

    settings = _settings(port=port, host=host)
    if not settings.admin_key:
        settings = settings.model_copy(update={"admin_key": "sk_admin_" + secrets.token_hex(16)})
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing("paygate")
    upgrade(settings.resolved_database_url)
    demo_keys = asyncio.run(_demo_merchant(settings)) if demo else None
    _banner(settings, demo_keys)
    uvicorn.run(
        create_app(settings, embedded=True, settle_heap=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        server_header=False,
    )


@app.command()
def api(
    port: Annotated[int | None, typer.Option(help="HTTP port (PAYGATE_PORT).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    workers: Annotated[int, typer.Option(help="Server processes sharing the port.")] = 1,
) -> None:
    """The API service alone, for scale-out deployments (schema migrated by `paygate migrate`)."""
    settings = _settings(port=port, host=host)
    if not settings.admin_key:
        raise typer.BadParameter("PAYGATE_ADMIN_KEY must be set for `paygate api`")
    configure_logging(settings.log_format, settings.log_level)
    # Each server process writes its metrics here and a scrape of any of them merges all
    # (prometheus_client's multiprocess mode, named before the client is imported); fresh per
    # run, so that no count of an earlier run is added in.
    base = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    metrics_dir = tempfile.mkdtemp(prefix="paygate-metrics-", dir=base)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        from paygate.api import processes

        processes.serve(settings.host, settings.port, workers, stall_s=settings.api_stall_s)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def api_app() -> Any:
    """The app of one `paygate api` server process. With several workers each process starts
    afresh, so logging (and its redaction of card data) is configured here, where it serves."""
    from paygate.api.app import create_app
    from paygate.platform import exposition, metrics

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing("paygate-api")
    exposition.reap_dead_processes()  # a restarted server process replaces one that died
    application = create_app(settings, settle_heap=True)
    metrics.track_pool(application.state.runtime.db.engine)
    return application


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="relay | fraud | processor | notifier | scheduler")],
    health_port: Annotated[
        int | None, typer.Option(help="Serve /healthz, /readyz and /metrics on this port.")
    ] = None,
) -> None:
    """One role of the pipeline, for scale-out deployments (needs PAYGATE_BUS_URL)."""
    from paygate.workers import WORKERS, run_worker

    if name not in WORKERS:
        raise typer.BadParameter(f"one of {', '.join(WORKERS)}", param_hint="NAME")
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing(f"paygate-worker-{name}")
    # On uvloop, the loop uvicorn runs the API on (docs/performance.md: a few per cent less CPU),
    # where it is installed (not on Windows: pyproject.toml).
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - the standard library's loop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run_worker(name, settings, health_port=health_port))


@app.command()
def cluster(
    port: Annotated[int | None, typer.Option(help="HTTP port (PAYGATE_PORT).")] = None,
    api_processes: Annotated[int, typer.Option(help="API processes sharing the port.")] = 2,
) -> None:
    """The scale-out topology on this machine: PostgreSQL, NATS, Redis and every process."""
    from paygate.cluster import Cluster

    settings = _settings(port=port)
    if not settings.admin_key:
        settings = settings.model_copy(update={"admin_key": "sk_admin_" + secrets.token_hex(16)})
    configure_logging(settings.log_format, settings.log_level)
    Cluster(settings, api_processes=api_processes).run()


@app.command()
def top(
    url: Annotated[
        list[str] | None,
        typer.Option(help="A process's /metrics URL; repeat for several (default: this host's)."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between scrapes.")] = 2.0,
    once: Annotated[bool, typer.Option(help="Print one frame (two scrapes) and exit.")] = False,
) -> None:
    """A live view of payments/s, success rate, latency percentiles and lag, from /metrics."""
    from paygate.top import run

    urls = url or [f"http://127.0.0.1:{_settings().port}/metrics"]
    raise typer.Exit(run(urls, interval_s=interval, once=once))


@app.command()
def estimate(
    tps: Annotated[float, typer.Option(help="Target payments per second (the peak).")],
    retention_days: Annotated[int, typer.Option(help="How long payments are kept.")] = 2555,
    reads_per_payment: Annotated[float, typer.Option(help="Status reads per payment.")] = 2.0,
    average_share: Annotated[
        float, typer.Option(help="Share of the peak sustained over a day (storage).")
    ] = 1.0,
    cores_per_machine: Annotated[int, typer.Option(help="Cores of one machine.")] = 8,
    utilization: Annotated[float, typer.Option(help="Plan to run this busy at the peak.")] = 0.6,
    redis_shard_gb: Annotated[float, typer.Option(help="Memory of one Redis shard.")] = 64.0,
    merchants: Annotated[int, typer.Option(help="Merchants taking payments.")] = 10_000,
    results: Annotated[
        Path | None,
        typer.Option(help="A `make bench` results file (default: the newest in bench/results)."),
    ] = None,
) -> None:
    """The capacity plan for a target load, from the figures `make bench` measured."""
    from rich.table import Table

    from paygate import estimate as capacity

    try:
        path = results or capacity.latest_results(Path("bench/results"))
        measured = capacity.load_results(path)
        lines = capacity.plan(
            measured,
            capacity.Target(
                tps=tps,
                retention_days=retention_days,
                reads_per_payment=reads_per_payment,
                average_share=average_share,
                cores_per_machine=cores_per_machine,
                utilization=utilization,
                redis_shard_gb=redis_shard_gb,
                merchants=merchants,
            ),
        )
    except (OSError, ValueError, KeyError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--results") from None
    table = Table(title=f"Capacity for {tps:,g} payments/s, from {path}")
    for column in ("", "what", "needs", "from the measured"):
        table.add_column(column)
    for i, line in enumerate(lines):
        first = i == 0 or lines[i - 1].section != line.section
        last = i + 1 == len(lines) or lines[i + 1].section != line.section
        section = line.section if first else ""
        table.add_row(section, line.item, line.value, line.basis, end_section=last)
    console = Console()
    console.print(table)
    if not measured.calm:
        console.print(
            f"[bold yellow]measured while the host ran at {measured.host_speed:.0%} of the run's "
            "fastest[/]: the figures are the host's as much as the gateway's (make bench again)"
        )


@app.command("bank-sim")
def bank_sim(
    port: Annotated[int | None, typer.Option(help="HTTP port (PAYGATE_BANK_PORT).")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """The external bank simulator, on its own port."""
    from paygate.banksim.app import run

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    run(host=host, port=port)


@app.command()
def reconcile(
    date: Annotated[str, typer.Option(help="The UTC day to reconcile, YYYY-MM-DD.")],
) -> None:
    """Reconcile a day's ledger against the bank's settlement report (PAYGATE_BANK_URL); the
    result as JSON. Exit status 0 balanced, 1 breaks, 2 a bad date, 3 no report."""
    from paygate.reconciliation.cli import reconcile_command

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    raise typer.Exit(reconcile_command(settings, date))


@app.command()
def settle(
    date: Annotated[
        str | None, typer.Option(help="The UTC day to settle, YYYY-MM-DD (default yesterday).")
    ] = None,
) -> None:
    """Settle a day for every merchant (idempotent); the day's settlements as JSON. Exit status
    0 done, 2 a bad date."""
    from paygate.settlements.cli import settle_command

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    raise typer.Exit(settle_command(settings, date))


async def _demo_merchant(settings: Settings) -> dict[str, str]:
    """The demo merchant's keys: created on the first run, then read back from the data folder."""
    from paygate.merchants.service import create_merchant
    from paygate.runtime import Runtime

    path = settings.data_dir / "demo-merchant.json"
    if path.exists():
        keys: dict[str, str] = json.loads(path.read_text())
        return keys
    rt = Runtime.from_settings(settings)
    try:
        async with rt.db.transaction() as conn:
            merchant = await create_merchant(
                conn,
                rt.hmac_key,
                name="Demo Shop",
                email="demo@example.com",
                tier=settings.default_tier,
                api_version=settings.default_api_version,
            )
    finally:
        await rt.close()
    keys = {k: merchant[k] for k in ("id", "api_key", "publishable_key")}
    _write_private(path, json.dumps(keys))
    return keys


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _banner(settings: Settings, demo: dict[str, str] | None) -> None:
    url = f"http://{settings.host}:{settings.port}"
    console.rule("[bold]Paygate")
    console.print(f"API        {url}/v1   docs {url}/docs")
    console.print(f"data       {settings.data_dir.resolve()}")
    console.print(f"admin key  {settings.admin_key}")
    if demo:
        console.print(f"demo merchant {demo['id']}")
        console.print(f"  secret key       {demo['api_key']}")
        console.print(f"  publishable key  {demo['publishable_key']}")
        body = (
            '{"amount": 1999, "currency": "usd", "payment_method": {"card": {"number": '
            '"4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}}}'
        )
        console.print("create a payment:")
        console.print(
            f"  curl -s {url}/v1/payments -H 'Authorization: Bearer {demo['api_key']}' "
            f'-H "Idempotency-Key: $(uuidgen || date +%s%N)" '
            f"-H 'Content-Type: application/json' -d '{body}'",
            soft_wrap=True,
            highlight=False,
        )
    console.rule()


if __name__ == "__main__":
    app()
