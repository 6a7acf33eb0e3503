"""`bench/servers.Redis.memory`: the keys a run leaves in Redis, by what owns them (a payment, a
card, a merchant, nothing) and how long they live, for `paygate estimate`'s memory plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import servers

pytestmark = pytest.mark.slow

DAY = 86_400


def test_keys_are_counted_by_owner_and_lifetime(tmp_path: Path) -> None:

    server = servers.Redis(tmp_path / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        for n in range(4):  # a payment's mark, kept two days, and its cached read, 300 s
            client.set(f"paygate:fraud:seen:pay_{n}", b"1", ex=2 * DAY - 5)
            client.set(f"paygate:read:pay_{n}", b"x" * 100, ex=300)
        for bucket in ("h1", "q1", "d1"):  # one card's counters of one hour, 39 days
            client.set(f"paygate:fraud:card:fp_1:n:{bucket}", 1, ex=39 * DAY)
            client.set(f"paygate:fraud:vel:acct_1:test:card:fp_1:n:{bucket}", 1, ex=2 * DAY)
        client.set("paygate:fraud:term:acct_1:n:h1", 1, ex=39 * DAY)  # the merchant's
        client.set("paygate:unowned", 1)
        client.close()
        memory = server.memory(payments=4)
    finally:
        server.stop()
    kinds = {(k["owner"], k["ttl_s"]): k for k in memory["kinds"]}
    assert set(kinds) == {
        ("payment", 2 * DAY),  # 2 days less 5 s, rounded up to the hour
        ("payment", 300),
        ("card", 39 * DAY),
        ("card", 2 * DAY),  # the velocity counters name the card, not the merchant
        ("merchant", 39 * DAY),
        ("other", -1),
    }
    assert [kinds[("payment", 2 * DAY)][f] for f in ("keys", "owners")] == [4, 4]
    assert [kinds[("card", 39 * DAY)][f] for f in ("keys", "owners")] == [3, 1]
    cached = kinds[("payment", 300)]
    assert cached["bytes_per_owner"] == cached["bytes"] // 4 > 100
    assert memory["long"]["keys"] == 4 + 6 + 1 + 1  # the older view: kept over a day
