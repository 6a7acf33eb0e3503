"""A small load generator for `paygate serve` (the full harness is bench/run.py, `make bench`):
N concurrent clients create payments (each with its own Idempotency-Key) for a fixed time, then
the figures are printed.

    python bench/load.py --url http://127.0.0.1:8080 --key sk_test_... --seconds 10 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx

BODY = {
    "amount": 1999,
    "currency": "usd",
    "payment_method": {
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    },
}


async def client(
    c: httpx.AsyncClient,
    key: str,
    until: float,
    lat: list[float],
    codes: dict[int, int],
    wait: float | None,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    if wait:
        headers["Prefer"] = f"wait={wait:g}"
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        r = await c.post(
            "/v1/payments", json=BODY, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
        )
        lat.append(time.perf_counter() - t0)
        codes[r.status_code] = codes.get(r.status_code, 0) + 1


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--key", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--wait", type=float, default=None, help="send Prefer: wait=N")
    a = ap.parse_args()
    lat: list[float] = []
    codes: dict[int, int] = {}
    limits = httpx.Limits(max_connections=a.clients, max_keepalive_connections=a.clients)
    async with httpx.AsyncClient(base_url=a.url, limits=limits, timeout=60) as c:
        until = time.perf_counter() + a.seconds
        await asyncio.gather(
            *(client(c, a.key, until, lat, codes, a.wait) for _ in range(a.clients))
        )
    q = statistics.quantiles(lat, n=100)
    print(f"requests {len(lat)}  rate {len(lat) / a.seconds:.0f}/s  codes {codes}")
    p50, p95, p99 = (q[i] * 1000 for i in (49, 94, 98))
    print(f"latency p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
