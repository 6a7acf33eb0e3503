"""Prometheus metrics: every definition in one place (`paygate.platform.exposition` answers
`/metrics`).

Names start with `paygate_` and carry their unit; labels stay low-cardinality (a route template,
never a path; a status or a code, never an id). Three kinds of values:

- counters and histograms bumped where things happen (HTTP requests, payment transitions, bank
  calls, webhook deliveries, cached reads);
- gauges kept by events or sampled (requests in flight, database connections checked out);
- gauges computed at scrape time (`SCRAPED`): the outbox backlog, the bus consumers' backlog,
  the bank circuit breaker's state, read from the database, the broker and this process.

A process with several server processes (`paygate api --workers N`) runs prometheus_client's
multiprocess mode: `PROMETHEUS_MULTIPROC_DIR` names a fresh folder, set before the servers start,
and every scrape merges the values of all of them (`MultiProcessCollector`).

Changes inside a database transaction are counted once it commits (`on_commit`): a rolled-back
transaction, a savepoint rolled back, or a redelivered event that finds the work already done
counts nothing.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.platform.logging import log

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# `_created` series double every counter's output and no dashboard reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Resting states: the payment waits for nobody but a person (DESIGN.md section 1).
RESTING = frozenset({"succeeded", "failed", "requires_capture", "requires_review", "canceled"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "paygate_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "paygate_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
HTTP_IN_FLIGHT = Gauge(
    "paygate_http_requests_in_flight",
    "HTTP requests being answered now.",
    multiprocess_mode="livesum",
)
PAYMENTS = Counter(
    "paygate_payments",
    "Payments that entered a status (pending: created), counted once per committed change.",
    ["status", "failure_code"],
)
PAYMENT_OUTCOME = Histogram(
    "paygate_payment_outcome_seconds",
    "Time from a payment's creation to its first resting status (whole-second timestamps).",
    ["status"],
    buckets=(0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
FRAUD_DECISIONS = Counter(
    "paygate_fraud_decisions",
    "Screening decisions the processor applied, by decision.",
    ["decision"],
)
BANK_DURATION = Histogram(
    "paygate_bank_request_duration_seconds",
    "Time of one bank operation (retries included), by operation and outcome.",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BANK_ERRORS = Counter(
    "paygate_bank_errors",
    "Bank operations without a final answer, by operation and kind of failure.",
    ["operation", "kind"],
)
WEBHOOK_DELIVERIES = Counter(
    "paygate_webhook_deliveries",
    "Webhook delivery attempts, by result: succeeded, failed (retried later) or dead.",
    ["result"],
)
WEBHOOK_DURATION = Histogram(
    "paygate_webhook_delivery_duration_seconds",
    "Time of one webhook delivery attempt.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BUS_DEAD_LETTERS = Counter(
    "paygate_bus_dead_letters",
    "Events a consumer gave up on after its retries (kept in dead_letters), by consumer.",
    ["consumer"],
)
CACHE_HITS = Counter(
    "paygate_read_cache_hits", "Status reads answered from the read cache.", ["object"]
)
CACHE_MISSES = Counter(
    "paygate_read_cache_misses", "Status reads the read cache did not hold.", ["object"]
)
GROUP_COMMIT_WRITERS = Histogram(
    "paygate_db_group_commit_writers",
    "Write transactions that shared one commit (SQLite group commit), per commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
DB_CHECKED_OUT = Gauge(
    "paygate_db_pool_checked_out_connections",
    "Database connections in use.",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "paygate_db_pool_size_connections",
    "Database connections the pools keep (overflow comes on top).",
    multiprocess_mode="livesum",
)

# Computed at scrape time: name -> (type, help).
SCRAPED: dict[str, tuple[str, str]] = {
    "paygate_outbox_unpublished_events": ("gauge", "Outbox events not yet handed to the bus."),
    "paygate_outbox_oldest_unpublished_age_seconds": (
        "gauge",
        "Age of the oldest outbox event not yet handed to the bus (0 when none).",
    ),
    "paygate_bus_consumer_pending_messages": (
        "gauge",
        "Events waiting for a consumer: undelivered on NATS, or unapplied on the local bus.",
    ),
    "paygate_bus_consumer_ack_pending_messages": (
        "gauge",
        "Events delivered to a NATS consumer and not yet acknowledged.",
    ),
    "paygate_bank_circuit_state": (
        "gauge",
        "Bank connectors of this process in each circuit-breaker state.",
    ),
}
BREAKER_STATES = ("closed", "open", "half_open")


# Counting after commit

_PENDING = "paygate_metrics_pending"
_SAVEPOINTS = "paygate_metrics_savepoints"


def on_commit(conn: Any, count: Callable[[], None]) -> None:
    """Run `count` once the transaction of `conn` (a SQLAlchemy connection, sync or async)
    commits; nothing if it rolls back."""
    conn.info.setdefault(_PENDING, []).append(count)


def _info(conn: Any) -> dict[Any, Any]:
    """The connection's info, or an empty dict while the connection is invalidated (the server
    dropped it): the counts pending on it went with its DBAPI connection, and asking for its
    info then would raise, in place of the connection error being handled."""
    if conn.invalidated:
        return {}
    info: dict[Any, Any] = conn.info
    return info


def _clear(conn: Any, *_args: Any) -> None:
    info = _info(conn)
    info.pop(_PENDING, None)
    info.pop(_SAVEPOINTS, None)


def _committed(conn: Any) -> None:
    info = _info(conn)
    pending: list[Callable[[], None]] = info.pop(_PENDING, [])
    info.pop(_SAVEPOINTS, None)
    for count in pending:
        try:
            count()
        except Exception as exc:  # a metric never fails a commit
            log.warning("metrics.count_failed", error=f"{type(exc).__name__}: {exc}"[:200])


def _savepoint(conn: Any, _name: str | None) -> None:
    # Savepoints nest (SQLAlchemy names them only after this event): a stack of marks.
    info = _info(conn)
    info.setdefault(_SAVEPOINTS, []).append(len(info.get(_PENDING, [])))


def _savepoint_released(conn: Any, _name: str, _context: Any) -> None:
    marks = _info(conn).get(_SAVEPOINTS)
    if marks:
        marks.pop()


def _savepoint_rolled_back(conn: Any, _name: str, _context: Any) -> None:
    info = _info(conn)
    marks = info.get(_SAVEPOINTS)
    if marks:
        del info.get(_PENDING, [])[marks.pop() :]


event.listen(Engine, "begin", _clear)
event.listen(Engine, "rollback", _clear)
event.listen(Engine, "commit", _committed)
event.listen(Engine, "savepoint", _savepoint)
event.listen(Engine, "rollback_savepoint", _savepoint_rolled_back)
event.listen(Engine, "release_savepoint", _savepoint_released)


# Database pools (every engine of the process)
#
# Read from the pools (`checkedout()`), not kept by pool events: a connection can be checked in
# by the garbage collector, at any point of the program, and a metric's lock taken there could
# be the one its own thread already holds.

_engines: weakref.WeakSet[Any] = weakref.WeakSet()
_sampled_at = 0.0


def track_pool(engine: AsyncEngine) -> None:
    """Report this engine's pool (one engine per process in production) from now on."""
    _engines.add(engine)
    sample_pools()


def sample_pools(min_interval_s: float = 0.0) -> None:
    """Set the pool gauges from the pools now (at most every `min_interval_s`). Each server
    process samples after its requests and at scrape time: in multiprocess mode the gauges
    add up the processes' last samples."""
    global _sampled_at
    now = time.monotonic()
    if now - _sampled_at < min_interval_s:
        return
    _sampled_at = now
    checked_out = size = 0
    for engine in list(_engines):
        pool = engine.pool
        checked_out += pool.checkedout() if hasattr(pool, "checkedout") else 0
        size += pool.size() if hasattr(pool, "size") else 0
    DB_CHECKED_OUT.set(checked_out)
    DB_POOL_SIZE.set(size)


# Domain events


def payment_changed(
    conn: Any, status: str, failure_code: str | None, *, before: str | None, created: int
) -> None:
    """A payment entered `status` in the transaction of `conn` (`before` None: it was
    created). The first resting status also records the time since creation."""
    if status == before:
        return
    outcome = status in RESTING and (before is None or before not in RESTING)

    code = (failure_code or "") if status == "failed" else ""

    def count() -> None:
        PAYMENTS.labels(status, code).inc()
        if outcome:
            PAYMENT_OUTCOME.labels(status).observe(max(0.0, time.time() - created))

    on_commit(conn, count)


def fraud_decided(conn: Any, decision: str) -> None:
    on_commit(conn, lambda: FRAUD_DECISIONS.labels(decision).inc())


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def object_kind(object_id: str) -> str:
    """`payment` for `pay_…`, `refund` for `re_…`: the label of a cached read."""
    return {"pay": "payment", "re": "refund"}.get(object_id.split("_", 1)[0], "other")


# Bank circuit breakers, reported at scrape time (paygate.platform.exposition)


class _HasState(Protocol):
    @property
    def state(self) -> Any: ...


_breakers: weakref.WeakSet[Any] = weakref.WeakSet()


def track_breaker(breaker: _HasState) -> None:
    """Report `breaker.state` (closed, open, half_open) at every scrape of this process."""
    _breakers.add(breaker)


def breaker_states() -> list[str]:
    """The state of every tracked breaker still alive."""
    return [str(b.state) for b in list(_breakers)]


def family_types() -> dict[str, str]:
    """Every metric family this code exports, with its type: what dashboards and alert rules
    may name."""
    found = {m.name: m.type for m in REGISTRY.collect() if m.name.startswith("paygate_")}
    found.update({name: kind for name, (kind, _help) in SCRAPED.items()})
    return found


def webhook_attempt(status: str, duration_ms: int) -> None:
    """A delivery attempt was recorded with the delivery's new `status` (pending: it failed and
    is retried later)."""
    WEBHOOK_DELIVERIES.labels("failed" if status == "pending" else status).inc()
    WEBHOOK_DURATION.observe(duration_ms / 1000)
