"""An ASGI app served for real: uvicorn on a free loopback port, in a thread of its own, for
clients that speak HTTP over sockets (the bank connector, timeouts that must really pass)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class LiveServer:
    """`options`: more of uvicorn's settings (`timeout_keep_alive`, …)."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=1,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        """Serve, and the base URL once the port listens."""
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: ASGIApp, **options: Any) -> Iterator[str]:
    """`app` served while the block runs; yields its base URL."""
    server = LiveServer(app, **options)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
