"""`paygate top`: the pure computation (rates between two scrapes, percentiles from histogram
buckets, several processes merged), and `--once` against a real `paygate serve`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from paygate import top
from paygate.cli import app
from tests.e2e.serve import Gateway
from tests.support import ADMIN_KEY, idem, payment_body

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def exposition(
    created: float, succeeded: float, failed: float, buckets: dict[str, float], outbox: float
) -> str:
    lines = [
        "# TYPE paygate_payments_total counter",
        f'paygate_payments_total{{status="pending",failure_code=""}} {created}',
        f'paygate_payments_total{{status="succeeded",failure_code=""}} {succeeded}',
        f'paygate_payments_total{{status="failed",failure_code="card_declined"}} {failed}',
        "# TYPE paygate_payment_outcome_seconds histogram",
    ]
    lines += [
        f'paygate_payment_outcome_seconds_bucket{{status="succeeded",le="{le}"}} {n}'
        for le, n in buckets.items()
    ]
    count = buckets["+Inf"]
    lines += [
        f'paygate_payment_outcome_seconds_count{{status="succeeded"}} {count}',
        f'paygate_payment_outcome_seconds_sum{{status="succeeded"}} {count}',
        "# TYPE paygate_outbox_unpublished_events gauge",
        f"paygate_outbox_unpublished_events {outbox}",
        "# TYPE paygate_bus_consumer_pending_messages gauge",
        f'paygate_bus_consumer_pending_messages{{stream="PAYGATE_PAYMENT",consumer="processor"}} '
        f"{outbox}",
    ]
    return "\n".join(lines) + "\n"


def test_a_frame_is_the_rates_between_two_scrapes() -> None:
    before = top.parse(exposition(10, 6, 2, {"1.0": 4, "2.0": 8, "+Inf": 8}, 3), at=100.0)
    after = top.parse(exposition(30, 21, 7, {"1.0": 14, "2.0": 28, "+Inf": 28}, 5), at=110.0)
    f = top.frame(before, after)
    assert f.seconds == 10
    assert f.payments_per_s == 2.0  # 20 created in 10 s
    assert f.outcomes_per_s["succeeded"] == 1.5
    assert f.success_rate == 15 / 20  # of the outcomes in the interval, not since the start
    # 20 new observations: 10 under 1 s, 10 between 1 and 2 s.
    assert f.outcome_latency[0.5] == pytest.approx(1.0)
    assert f.outcome_latency[0.95] == pytest.approx(1.9)
    assert f.outbox_unpublished == 5
    assert f.consumer_lag == {"processor": 5}
    assert f.api_latency == {0.5: None, 0.95: None, 0.99: None}  # no API traffic reported


def test_a_restarted_process_counts_from_zero() -> None:
    before = top.parse(exposition(100, 90, 5, {"1.0": 95, "+Inf": 95}, 0), at=0.0)
    after = top.parse(exposition(4, 3, 1, {"1.0": 4, "+Inf": 4}, 0), at=2.0)
    f = top.frame(before, after)
    assert f.payments_per_s == 2.0
    assert f.success_rate == 0.75


def test_several_processes_sum_counts_and_share_backlogs() -> None:
    a = top.parse(exposition(10, 5, 5, {"1.0": 10, "+Inf": 10}, 7), at=1.0)
    b = top.parse(exposition(30, 20, 0, {"1.0": 20, "+Inf": 20}, 7), at=2.0)
    merged = top.merge([a, b])
    assert merged.at == 2.0
    assert merged.total("paygate_payments_total", status="pending") == 40
    assert merged.total("paygate_payment_outcome_seconds_bucket", le="+Inf") == 30
    # Both report the same outbox: it is not twice as long.
    assert merged.total("paygate_outbox_unpublished_events") == 7


def test_quantile_edges() -> None:
    assert top.quantile(0.5, {}) is None
    assert top.quantile(0.5, {1.0: 0, math.inf: 0}) is None
    assert top.quantile(0.5, {1.0: 10, math.inf: 10}) == 0.5
    assert top.quantile(0.99, {1.0: 0, 2.0: 0, math.inf: 5}) == 2.0  # all above the last bound


@given(
    st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=200),
    st.sampled_from((0.5, 0.9, 0.95, 0.99)),
)
def test_quantile_falls_in_the_bucket_of_the_true_quantile(
    observations: list[float], q: float
) -> None:
    """What `histogram_quantile` promises: the estimate lies in the bucket that holds the
    true quantile (the largest finite bound when that is the +Inf bucket)."""
    bounds = (*BOUNDS, math.inf)
    buckets = {b: float(sum(1 for o in observations if o <= b)) for b in bounds}
    estimate = top.quantile(q, buckets)
    assert estimate is not None
    ordered = sorted(observations)
    true = ordered[max(math.ceil(q * len(ordered)) - 1, 0)]
    upper = next(b for b in bounds if true <= b)
    lower = max((b for b in bounds if b < upper), default=0.0)
    if math.isinf(upper):
        assert estimate == BOUNDS[-1]
    else:
        assert lower <= estimate <= upper


def test_metrics_url() -> None:
    assert top.metrics_url("http://h:8080") == "http://h:8080/metrics"
    assert top.metrics_url("http://h:8081/") == "http://h:8081/metrics"
    assert top.metrics_url("http://h:8081/metrics") == "http://h:8081/metrics"


def test_once_with_no_process_answering_exits_1() -> None:
    result = CliRunner().invoke(
        app, ["top", "--once", "--interval", "0", "--url", "http://127.0.0.1:1/metrics"]
    )
    assert result.exit_code == 1
    assert "ConnectError" in result.output


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, "sqlite")  # `paygate serve` on the embedded default
    try:
        gw.start()
        yield gw
    finally:
        gw.kill_all()


def test_once_shows_a_real_gateway(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    r = gateway.request(
        "POST",
        "/v1/merchants",
        json={"name": "Top"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"Bearer {r.json()['api_key']}"}

    def pay_between_scrapes(_seconds: float) -> None:
        for number in ("4242424242424242", "4242424242424242", "4000000000000002"):
            body = payment_body(card={"number": number})
            headers = {**auth, **idem(), "Prefer": "wait=20"}
            r = httpx.post(f"{gateway.url}/v1/payments", json=body, headers=headers, timeout=30)
            assert r.status_code == 200, r.text

    status = top.run([gateway.url], once=True, sleep=pay_between_scrapes)
    assert status == 0
    out = capsys.readouterr().out
    assert "success rate" in out and "66.7%" in out, out  # 2 of the 3 succeeded
    assert "outbox" in out and "consumer all" in out, out
    # The command's own --once: a frame of the same gateway, exit status 0.
    result = CliRunner().invoke(app, ["top", "--once", "--interval", "0.2", "--url", gateway.url])
    assert result.exit_code == 0, result.output
    assert "payments/s" in result.output and "creation → outcome" in result.output
