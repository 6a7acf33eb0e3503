"""`paygate top`: a live terminal view of the gateway, read from the `/metrics` of one or more
processes. Rates are computed between two scrapes, latency percentiles from the histogram
buckets the same way PromQL's `histogram_quantile` does (linear within a bucket).

The computation (`parse`, `merge`, `frame`, `quantile`) is pure; fetching and drawing are the
thin parts around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

Key = tuple[str, frozenset[tuple[str, str]]]
QUANTILES = (0.5, 0.95, 0.99)
# Series summed across processes (counts); every other one (a gauge of a shared backlog, which
# each process reports alike) takes the largest value.
_SUMMED = ("_total", "_bucket", "_count", "_sum")
_SUMMED_GAUGES = ("paygate_http_requests_in_flight", "paygate_bank_circuit_state")
NONE = "-"  # no value: nothing observed in the interval, or not reported


@dataclass(frozen=True)
class Scrape:
    """The samples of one or more processes at one moment."""

    at: float
    values: Mapping[Key, float]
    errors: tuple[str, ...] = ()

    def total(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= ls)

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.values.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = max(out.get(key, v), v)
        return out


def parse(text: str, at: float) -> Scrape:
    """Exposition text → a scrape (prometheus_client's own parser)."""
    values: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(at, values)


def merge(scrapes: Iterable[Scrape]) -> Scrape:
    """Several processes as one gateway: counts summed, shared backlogs the largest."""
    values: dict[Key, float] = {}
    ats: list[float] = []
    errors: list[str] = []
    for scrape in scrapes:
        ats.append(scrape.at)
        errors += scrape.errors
        for key, value in scrape.values.items():
            name = key[0]
            if name.endswith(_SUMMED) or name in _SUMMED_GAUGES:
                values[key] = values.get(key, 0.0) + value
            else:
                values[key] = max(values.get(key, value), value)
    return Scrape(max(ats, default=0.0), values, tuple(errors))


def increase(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a counter grew; a series that went down (its process restarted) counts from
    zero, as PromQL's `increase` does."""
    wanted = set(labels.items())
    grown = 0.0
    for (n, ls), value in after.values.items():
        if n == name and wanted <= ls:
            previous = before.values.get((n, ls), 0.0)
            grown += value - previous if value >= previous else value
    return grown


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts {upper bound: count}, None without
    observations. Linear within a bucket; in the +Inf bucket, the largest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def bucket_increase(
    before: Scrape, after: Scrape, name: str, where: Callable[[dict[str, str]], bool] | None = None
) -> dict[float, float]:
    """The growth of a histogram's buckets, summed over the series `where` keeps, by bound."""
    out: dict[float, float] = {}
    for n, ls in after.values:
        labels = dict(ls)
        if n == f"{name}_bucket" and (where is None or where(labels)):
            le = float(labels["le"])
            out[le] = out.get(le, 0.0) + increase(before, after, n, **labels)
    return out


def _api(labels: dict[str, str]) -> bool:
    return labels.get("route", "").startswith("/v1/")


@dataclass(frozen=True)
class Frame:
    seconds: float
    payments_per_s: float
    outcomes_per_s: dict[str, float]
    success_rate: float | None
    outcome_latency: dict[float, float | None]
    requests_per_s: float
    api_latency: dict[float, float | None]
    bank_latency: dict[float, float | None]
    bank_errors_per_s: float
    breakers_open: float
    outbox_unpublished: float | None
    outbox_age_s: float | None
    consumer_lag: dict[str, float]
    errors: tuple[str, ...] = field(default=())


def frame(before: Scrape, after: Scrape) -> Frame:
    """What happened between two scrapes of the same processes."""
    seconds = max(after.at - before.at, 1e-9)

    def rate(name: str, **labels: str) -> float:
        return increase(before, after, name, **labels) / seconds

    def percentiles(
        name: str, where: Callable[[dict[str, str]], bool] | None = None
    ) -> dict[float, float | None]:
        buckets = bucket_increase(before, after, name, where)
        return {q: quantile(q, buckets) for q in QUANTILES}

    succeeded = increase(before, after, "paygate_payments_total", status="succeeded")
    failed = increase(before, after, "paygate_payments_total", status="failed")
    outcomes = {
        status: rate("paygate_payments_total", status=status)
        for status in ("succeeded", "failed", "requires_capture", "requires_review", "canceled")
    }
    has = {k[0] for k in after.values}
    return Frame(
        seconds=seconds,
        payments_per_s=rate("paygate_payments_total", status="pending"),
        outcomes_per_s=outcomes,
        success_rate=succeeded / (succeeded + failed) if succeeded + failed else None,
        outcome_latency=percentiles("paygate_payment_outcome_seconds"),
        requests_per_s=rate("paygate_http_requests_total"),
        api_latency=percentiles("paygate_http_request_duration_seconds", _api),
        bank_latency=percentiles("paygate_bank_request_duration_seconds"),
        bank_errors_per_s=rate("paygate_bank_errors_total"),
        breakers_open=after.total("paygate_bank_circuit_state", state="open"),
        outbox_unpublished=(
            after.total("paygate_outbox_unpublished_events")
            if "paygate_outbox_unpublished_events" in has
            else None
        ),
        outbox_age_s=(
            after.total("paygate_outbox_oldest_unpublished_age_seconds")
            if "paygate_outbox_oldest_unpublished_age_seconds" in has
            else None
        ),
        consumer_lag=after.by("paygate_bus_consumer_pending_messages", "consumer"),
        errors=after.errors,
    )


# Fetching and drawing


def metrics_url(url: str) -> str:
    """`http://host:8080` → `http://host:8080/metrics`; a URL with a path is kept."""
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics"


def fetch(client: httpx.Client, urls: list[str], clock: Callable[[], float] = time.time) -> Scrape:
    scrapes = []
    for url in urls:
        try:
            response = client.get(url)
            response.raise_for_status()
            scrapes.append(parse(response.text, clock()))
        except (httpx.HTTPError, ValueError) as exc:
            scrapes.append(Scrape(clock(), {}, (f"{url}: {type(exc).__name__}: {exc}"[:200],)))
    return merge(scrapes)


def _ms(seconds: float | None) -> str:
    return NONE if seconds is None else f"{seconds * 1000:,.0f} ms"


def _row(values: Mapping[float, float | None]) -> list[str]:
    return [_ms(values[q]) for q in QUANTILES]


def render(f: Frame, urls: list[str]) -> Group:
    head = Text.assemble(
        ("paygate top", "bold"), f"  {', '.join(urls)}  over {f.seconds:.1f} s", style="dim"
    )
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("payments/s", f"{f.payments_per_s:,.2f}")
    rate = NONE if f.success_rate is None else f"{f.success_rate:.1%}"
    summary.add_row("success rate", rate)
    summary.add_row(
        "outcomes/s", "  ".join(f"{k} {v:,.2f}" for k, v in f.outcomes_per_s.items() if v) or NONE
    )
    summary.add_row("API requests/s", f"{f.requests_per_s:,.2f}")
    summary.add_row("bank errors/s", f"{f.bank_errors_per_s:,.2f}")
    summary.add_row("circuit", "OPEN" if f.breakers_open else "closed")
    latency = Table(title="latency", title_justify="left")
    latency.add_column("")
    for q in QUANTILES:
        latency.add_column(f"p{q * 100:g}", justify="right")
    latency.add_row("creation → outcome", *_row(f.outcome_latency))
    latency.add_row("API request (/v1)", *_row(f.api_latency))
    latency.add_row("bank call", *_row(f.bank_latency))
    lag = Table(title="lag", title_justify="left")
    lag.add_column("")
    lag.add_column("waiting", justify="right")
    lag.add_column("oldest", justify="right")
    unpublished = NONE if f.outbox_unpublished is None else f"{f.outbox_unpublished:,.0f}"
    age = NONE if f.outbox_age_s is None else f"{f.outbox_age_s:,.1f} s"
    lag.add_row("outbox", unpublished, age)
    for consumer, pending in sorted(f.consumer_lag.items()):
        lag.add_row(f"consumer {consumer}", f"{pending:,.0f}", "")
    parts: list[Text | Table] = [head, summary, latency, lag]
    parts += [Text(e, style="red") for e in f.errors]
    return Group(*parts)


def run(
    urls: list[str],
    *,
    interval_s: float = 2.0,
    once: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll `urls` every `interval_s` and draw; with `once`, two scrapes `interval_s` apart,
    one frame printed, exit status 1 if no process answered."""
    urls = [metrics_url(u) for u in urls]
    console = Console()
    try:
        with httpx.Client(timeout=5.0) as client:
            before = fetch(client, urls)
            sleep(interval_s)
            after = fetch(client, urls)
            if once:
                console.print(render(frame(before, after), urls))
                return 1 if len(after.errors) == len(urls) else 0
            with Live(render(frame(before, after), urls), console=console) as live:
                while True:
                    sleep(interval_s)
                    before, after = after, fetch(client, urls)
                    live.update(render(frame(before, after), urls))
    except KeyboardInterrupt:
        return 0
