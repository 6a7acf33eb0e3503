"""Rate limits and quotas through the API: tiers from settings, 429 with Retry-After, the IETF
RateLimit fields on every limited response, and API instances sharing one Redis."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest

from paygate.api.app import create_app
from paygate.edge.gcra import MemoryLimiter
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.edge.conftest import ADMIN, Api, Serve
from tests.support import idem, payment_body

ITEM = r'"[a-z]+";q=\d+;w=\d+'
STATE = r'"[a-z]+";r=\d+;t=\d+'


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def controlled(api: Api) -> Clock:
    """The instance's real limiter, on a clock the test moves."""
    clock = Clock()
    api.edge.limiter = MemoryLimiter(clock)
    api.edge.clock = clock
    return clock


def fields(r: httpx.Response) -> dict[str, tuple[str, str]]:
    """policy name → (its RateLimit-Policy item, its RateLimit item)."""
    policy = dict(re.findall(r'"([a-z]+)";(q=\d+;w=\d+)', r.headers["ratelimit-policy"]))
    state = dict(re.findall(r'"([a-z]+)";(r=\d+;t=\d+)', r.headers["ratelimit"]))
    assert policy.keys() == state.keys()
    return {name: (policy[name], state[name]) for name in policy}


async def test_every_limited_response_carries_the_ratelimit_fields(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        _, auth = await api.merchant()
        pay = await api.client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
        assert fields(pay) == {
            "requests": ("q=100;w=1", "r=99;t=1"),
            "payments": ("q=25;w=1", "r=24;t=1"),
            "daily": ("q=1000000;w=86400", fields(pay)["daily"][1]),
        }
        assert re.fullmatch(rf"{ITEM}(, {ITEM})*", pay.headers["ratelimit-policy"])
        assert re.fullmatch(rf"{STATE}(, {STATE})*", pay.headers["ratelimit"])
        # Errors too, and only card intake counts against `payments`.
        missing = await api.client.get("/v1/payments/pay_missing", headers=auth)
        assert missing.status_code == 404
        assert set(fields(missing)) == {"requests", "daily"}
        assert fields(missing)["daily"][1].startswith("r=999998;")
        # Requests before authentication have no key to count against.
        anonymous = await api.client.get("/v1/payments")
        assert anonymous.status_code == 401 and "ratelimit" not in anonymous.headers


async def test_a_used_up_limit_is_429_with_retry_after(serve_sqlite: Serve) -> None:
    tiers = {"standard": {"requests_per_s": 2, "burst": 3}}
    async with serve_sqlite(tiers=tiers) as api:
        _, auth = await api.merchant()
        clock = controlled(api)
        answers = [await api.client.get("/v1/payments", headers=auth) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        refused = answers[3]
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "1"
        assert fields(refused)["requests"] == ("q=3;w=2", "r=0;t=2")
        clock.now += 0.5  # one interval
        assert (await api.client.get("/v1/payments", headers=auth)).status_code == 200
        assert (await api.client.get("/v1/payments", headers=auth)).status_code == 429
        # Another key of the same merchant has its own limit.
        other = await api.client.post(
            "/v1/api_keys",
            json={"type": "secret"},
            headers={**auth, "Paygate-Version": "2026-01-01"},
        )
        assert other.status_code == 429
        clock.now += 10
        other = await api.client.post("/v1/api_keys", json={"type": "secret"}, headers=auth)
        key = {"Authorization": f"Bearer {other.json()['secret']}"}
        assert all(
            [
                (await api.client.get("/v1/payments", headers=key)).status_code == 200
                for _ in range(3)
            ]
        )


async def test_payment_creation_has_a_stricter_limit(serve_sqlite: Serve) -> None:
    tiers = {"standard": {"requests_per_s": 100, "payments_per_s": 1, "payments_burst": 2}}
    async with serve_sqlite(tiers=tiers) as api:
        _, auth = await api.merchant()
        controlled(api)
        answers = [
            await api.client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
            for _ in range(3)
        ]
        assert [r.status_code for r in answers] == [202, 202, 429]
        assert "payment" in answers[2].json()["error"]["message"]
        # Nothing was written for the refused one; reads still go through.
        listed = await api.client.get("/v1/payments", headers=auth)
        assert listed.status_code == 200 and len(listed.json()["data"]) == 2


async def test_the_daily_quota_counts_every_key_and_resets_at_utc_midnight(
    serve_sqlite: Serve,
) -> None:
    async with serve_sqlite(tiers={"standard": {"daily_quota": 3}}) as api:
        merchant, auth = await api.merchant()
        clock = controlled(api)
        pk = {"Authorization": f"Bearer {merchant['publishable_key']}"}
        card = payment_body()["payment_method"]
        answers = [
            await api.client.get("/v1/payments", headers=auth),
            await api.client.post("/v1/tokens", json=card, headers=pk),
            await api.client.get("/v1/payments", headers=auth),
            await api.client.get("/v1/payments", headers=auth),
        ]
        assert [r.status_code for r in answers] == [200, 201, 200, 429]
        refused = answers[3].json()["error"]
        assert refused["type"] == "rate_limit_error" and "daily" in refused["message"]
        until_midnight = 86_400 - clock.now % 86_400
        assert int(answers[3].headers["retry-after"]) == pytest.approx(until_midnight, abs=1)
        clock.now += until_midnight
        assert (await api.client.get("/v1/payments", headers=auth)).status_code == 200


async def test_the_unlimited_tier_is_not_counted(serve_sqlite: Serve) -> None:
    async with serve_sqlite(default_tier="unlimited") as api:
        merchant, auth = await api.merchant()
        assert merchant["tier"] == "unlimited"
        r = await api.client.get("/v1/payments", headers=auth)
        assert r.status_code == 200
        assert "ratelimit" not in r.headers and "ratelimit-policy" not in r.headers
        # The admin key has a tier of its own.
        r = await api.client.get("/v1/merchants", headers=ADMIN)
        assert fields(r) == {"requests": ("q=100;w=2", fields(r)["requests"][1])}


async def test_tiers_are_settings(serve_sqlite: Serve, tmp_path: Path, sqlite_url: str) -> None:
    tiers = {"gold": {"requests_per_s": 1000, "burst": 2000, "daily_quota": None}}
    async with serve_sqlite(tiers=tiers) as api:
        _, auth = await api.merchant(tier="gold")
        r = await api.client.get("/v1/payments", headers=auth)
        assert fields(r)["requests"][0] == "q=2000;w=2"
        assert "daily" not in fields(r)
        unknown = await api.client.post(
            "/v1/merchants", json={"name": "X", "tier": "platinum"}, headers=ADMIN
        )
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "tier"
    for bad in ({"standard": {"requests_per_s": -1}}, {"standard": {"rate": 1}}):
        settings = make_settings(tmp_path, sqlite_url, tiers=bad)
        with pytest.raises(ValueError, match="PAYGATE_TIERS"):
            create_app(settings, Runtime.from_settings(settings))
    settings = make_settings(tmp_path, sqlite_url, default_tier="nope")
    with pytest.raises(ValueError, match="PAYGATE_DEFAULT_TIER"):
        create_app(settings, Runtime.from_settings(settings))


@pytest.mark.redis
async def test_instances_sharing_redis_stay_within_the_limit_together(
    serve_sqlite: Serve, redis_url: str
) -> None:
    tiers = {"standard": {"requests_per_s": 5, "burst": 5}}
    async with (
        serve_sqlite(redis_url=redis_url, tiers=tiers) as first,
        serve_sqlite(redis_url=redis_url, tiers=tiers) as second,
    ):
        assert first.edge.limiter.backend == "redis"
        _, auth = await first.merchant()
        started = time.monotonic()
        answers = await asyncio.gather(
            *(api.client.get("/v1/customers", headers=auth) for api in [first, second] * 10)
        )
        elapsed = time.monotonic() - started
        allowed = sum(r.status_code == 200 for r in answers)
        # The burst, and what the rate earned back while the requests ran: never 5 per instance.
        assert 5 <= allowed <= 5 + int(elapsed * 5) + 1, (allowed, elapsed)
        assert {r.status_code for r in answers} == {200, 429}
        for r in answers:
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1"


async def test_an_unreachable_limiter_lets_requests_through(
    serve_sqlite: Serve,
) -> None:
    # Nothing listens on port 1: limits are skipped (and logged), payments are not stopped.
    async with serve_sqlite(redis_url="redis://127.0.0.1:1/0") as api:
        _, auth = await api.merchant()
        r = await api.client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
        assert r.status_code == 202 and "ratelimit" not in r.headers
        got = await api.client.get(f"/v1/payments/{r.json()['id']}", headers=auth)
        assert got.status_code == 200 and got.json() == r.json()


async def test_key_guessing_from_one_address_is_throttled(serve_sqlite: Serve) -> None:
    async with serve_sqlite(auth_failures_per_min=5) as api:
        clock = controlled(api)
        _, auth = await api.merchant()
        wrong = {"Authorization": "Bearer sk_test_" + "x" * 32}
        for _ in range(5):
            assert (await api.client.get("/v1/payments", headers=wrong)).status_code == 401
        refused = await api.client.get("/v1/payments", headers=wrong)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["retry-after"]) >= 1
        # While blocked, even a right key from that address is not looked at.
        assert (await api.client.get("/v1/payments", headers=auth)).status_code == 429
        # Another address is not affected.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app, client=("203.0.113.9", 4000)),
            base_url="http://paygate.test",
        )
        async with other:
            assert (await other.get("/v1/payments", headers=auth)).status_code == 200
        # The allowance comes back with time: one failure per 12 s at 5 per minute.
        clock.now += 13
        assert (await api.client.get("/v1/payments", headers=auth)).status_code == 200
        assert (await api.client.get("/v1/payments", headers=wrong)).status_code == 401
        assert (await api.client.get("/v1/payments", headers=wrong)).status_code == 429


async def test_failed_authentications_can_be_left_unthrottled(serve_sqlite: Serve) -> None:
    async with serve_sqlite(auth_failures_per_min=None) as api:
        controlled(api)
        wrong = {"Authorization": "Bearer sk_test_" + "y" * 32}
        for _ in range(40):
            assert (await api.client.get("/v1/payments", headers=wrong)).status_code == 401
