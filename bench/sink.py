"""The merchant's webhook endpoint in a benchmark: answers every POST with 200 and counts them.

    python bench/sink.py --port 9100

A full payment ends with its webhook queued (and sent): `bench/run.py` registers this endpoint
for the bench merchant's outcome events (servers.OUTCOME_EVENTS), so that the notifier does a
merchant's work under load. It runs in its own process, outside the gateway's process tree:
its CPU is not counted as the gateway's. `GET /count` answers how many POSTs it received.
"""

from __future__ import annotations

import argparse

from aiohttp import web


def create_app() -> web.Application:
    received = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.json_response({"received": True})

    async def count(_request: web.Request) -> web.Response:
        return web.json_response({"received": received})

    app = web.Application()
    app.router.add_get("/count", count)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency of the gateway
        pass
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
