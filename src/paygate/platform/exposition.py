"""The `/metrics` answer of a process: its metrics (paygate.platform.metrics), or in
multiprocess mode those of every server process, plus the values read at scrape time: the
outbox backlog (database), the bus consumers' backlog (JetStream, or the outbox on the local
bus) and the bank circuit breakers of this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from paygate.platform import metrics
from paygate.platform.logging import log


def breaker_family() -> Metric:
    family = _gauge("paygate_bank_circuit_state", ["state"])
    states = metrics.breaker_states()
    for state in metrics.BREAKER_STATES:
        family.add_metric([state], states.count(state))
    return family


async def outbox_families(db: Any) -> list[Metric]:
    """The outbox backlog: how many events wait for the relay, and how long the oldest has."""
    from paygate.platform.db.tables import outbox

    query = sa.select(sa.func.count(), sa.func.min(outbox.c.created)).where(
        outbox.c.published_at.is_(None)
    )
    async with db.read() as conn:
        count, oldest = (await conn.execute(query)).one()
    age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
    unpublished = _gauge("paygate_outbox_unpublished_events")
    unpublished.add_metric([], count)
    oldest_age = _gauge("paygate_outbox_oldest_unpublished_age_seconds")
    oldest_age.add_metric([], age)
    return [unpublished, oldest_age]


async def bus_families(bus: Any, unpublished: float | None) -> list[Metric]:
    """The consumers' backlog. On NATS: each durable consumer's undelivered and unacknowledged
    messages, from JetStream. The local bus keeps no queue of its own: an event waits in the
    outbox until every consumer applied it, so its backlog is the unpublished outbox."""
    pending = _gauge("paygate_bus_consumer_pending_messages", ["stream", "consumer"])
    if bus is None or getattr(bus, "backend", "local") == "local":
        if unpublished is not None:
            pending.add_metric(["local", "all"], unpublished)
        return [pending]
    ack_pending = _gauge("paygate_bus_consumer_ack_pending_messages", ["stream", "consumer"])
    from paygate.platform.nats_bus import DOMAINS, stream_of

    for domain in DOMAINS:
        stream = stream_of(domain, bus.prefix)
        for info in await bus.js.consumers_info(stream):
            name = info.name or info.config.durable_name or ""
            pending.add_metric([stream, name], info.num_pending or 0)
            ack_pending.add_metric([stream, name], info.num_ack_pending or 0)
    return [pending, ack_pending]


async def scrape_families(db: Any, bus: Any, timeout_s: float = 3.0) -> list[Metric]:
    """Every scrape-time value this process can read; one that fails or is slow is left out
    of this scrape (and logged), never failing the others."""
    families = [breaker_family()]
    unpublished: float | None = None
    try:
        async with asyncio.timeout(timeout_s):
            outbox = await outbox_families(db)
        families += outbox
        unpublished = outbox[0].samples[0].value
    except Exception as exc:
        log.warning("metrics.outbox_failed", error=f"{type(exc).__name__}: {exc}"[:200])
    try:
        async with asyncio.timeout(timeout_s):
            families += await bus_families(bus, unpublished)
    except Exception as exc:
        log.warning("metrics.bus_failed", error=f"{type(exc).__name__}: {exc}"[:200])
    return families


def _gauge(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, metrics.SCRAPED[name][1], labels=list(labels))


# Exposition


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get(metrics.MULTIPROC_ENV) or None


def render(scraped: list[Metric]) -> bytes:
    """The exposition text: this process's metrics (or, in multiprocess mode, every server
    process's), and the scrape-time families."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path is not None:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(_Fixed(scraped))
    return generate_latest(registry)


async def metrics_text(db: Any, bus: Any) -> bytes:
    """What `GET /metrics` answers in a process over `db` and `bus`."""
    metrics.track_pool(db.engine)  # samples the pools
    return render(await scrape_families(db, bus))


def reap_dead_processes(path: str | None = None) -> None:
    """Drop the live gauges of server processes that died (the server restarts them under new
    ids): their in-flight requests and connections are gone with them."""
    path = path or multiprocess_dir()
    if path is None:
        return
    pids = {f.stem.rsplit("_", 1)[-1] for f in Path(path).glob("gauge_live*_*.db")}
    for pid in pids:
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
