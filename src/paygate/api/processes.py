"""Several API server processes on one port (`paygate api --workers N`), each accepting on a
listening socket of its own.

uvicorn's own `--workers` has every process accept from one shared socket: whichever process
the kernel wakes first takes the connection, so the connections a load balancer or client keeps
open pile up unevenly (measured: 35 of 40 on one of two idle processes, and 96 % of a bench's
load on one of two). Here each process binds the port itself with `SO_REUSEPORT`, and the
kernel spreads new connections over the sockets by their addresses, evenly whatever each process
is doing. Before starting them, the supervisor checks that nothing else holds the port: with
`SO_REUSEPORT` a second gateway started by mistake would otherwise share it silently.

The supervisor restarts a process that dies, and one that hangs: each process's event loop
beats every second or two (uvicorn's `callback_notify`) into a value the supervisor reads, and
a process silent for `PAYGATE_API_STALL_S` (30 s; two minutes to start) is killed and replaced.
A hung process would otherwise keep its socket, and the kernel would keep handing it its share
of new connections. The supervisor stops them all, gracefully, on SIGTERM or SIGINT. A process
that fails to start (its lifespan refused: a bad setting, a database it cannot reach) stops the
whole service with an error, as uvicorn does. Off Linux, where `SO_REUSEPORT` is missing or
does not spread connections, uvicorn's workers serve.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("paygate.api")

APP = "paygate.cli:api_app"
# How uvicorn serves it either way: an app factory, the gateway's own logging, no Server header.
SERVER: dict[str, Any] = {"factory": True, "log_config": None, "server_header": False}
# uvicorn's exit code for a server whose start-up failed.
STARTUP_FAILURE = 3
STOP_GRACE_S = 30.0
# A process that dies sooner than this after its start waits this long before its restart.
RESTART_PAUSE_S = 1.0
# How long a process may take from its start to its first beat (imports, the app's start-up).
START_S = 120.0


def serve(host: str, port: int, workers: int, *, stall_s: float = 30.0) -> None:
    """Serve the API on `host`:`port` with `workers` processes until SIGTERM or SIGINT."""
    if workers <= 1 or not _spreads():
        _uvicorn(host, port, workers)
        return
    _check_free(host, port)
    Supervisor(host, port, workers, stall_s=stall_s).run()


def _spreads() -> bool:
    """Whether the kernel spreads connections over sockets sharing a port: Linux's
    `SO_REUSEPORT` does; elsewhere it is missing (Windows) or hands them to one socket."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _uvicorn(host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        APP,
        host=host,
        port=port,
        workers=workers,
        # A server process still importing on a busy machine is not a dead one.
        timeout_worker_healthcheck=30,
        **SERVER,
    )


def _listener(host: str, port: int, *, shared: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _check_free(host: str, port: int) -> None:
    """Fail now, with the reason, if another program holds the port."""
    try:
        _listener(host, port, shared=False).close()
    except OSError as exc:
        raise SystemExit(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def _serve_one(host: str, port: int, beat: ctypes.c_double) -> None:
    """One server process: its own socket on the shared port, then uvicorn on it, its event
    loop writing the time into `beat` as it turns."""
    import uvicorn

    async def alive() -> None:
        beat.value = time.monotonic()  # the same clock in every process of the machine

    try:
        sock = _listener(host, port, shared=True)
    except OSError as exc:  # taken since the check: as much a failed start as a refused app
        log.error("api.bind_failed", host=host, port=port, error=exc.strerror)
        sys.exit(STARTUP_FAILURE)
    config = uvicorn.Config(
        APP, host=host, port=port, callback_notify=alive, timeout_notify=1, **SERVER
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


@dataclass
class _Running:
    process: BaseProcess
    beat: ctypes.c_double
    started: float = field(default_factory=time.monotonic)

    def stalled(self, now: float, stall_s: float) -> bool:
        """Silent for longer than `stall_s` since its last beat, or than `START_S` since its
        start when it has not beaten yet."""
        if self.beat.value:
            return now - self.beat.value > stall_s
        return now - self.started > START_S


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, *, stall_s: float = 30.0) -> None:
        self.host, self.port, self.workers, self.stall_s = host, port, workers, stall_s
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[_Running] = []
        self._stopping = False
        self.failed = False

    def _start(self) -> _Running:
        beat = self._context.RawValue(ctypes.c_double, 0.0)  # a double both processes see
        process = self._context.Process(
            target=_serve_one, args=(self.host, self.port, beat), name="paygate-api"
        )
        process.start()
        return _Running(process, beat)

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._processes = [self._start() for _ in range(self.workers)]
            log.info("api.processes_started", workers=self.workers, port=self.port)
            while not self._stopping:
                time.sleep(0.2)
                self._keep_alive()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failed:
            raise SystemExit(STARTUP_FAILURE)

    def _keep_alive(self) -> None:
        now = time.monotonic()
        for i, running in enumerate(self._processes):
            if self._stopping:
                return
            process = running.process
            if process.is_alive():
                if not running.stalled(now, self.stall_s):
                    continue
                log.error("api.process_stalled", pid=process.pid, stall_s=self.stall_s)
                process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                log.error("api.process_failed_to_start", pid=process.pid)
                self.failed = self._stopping = True
                return
            log.warning("api.process_died", pid=process.pid, exitcode=process.exitcode)
            if now - running.started < RESTART_PAUSE_S:
                time.sleep(RESTART_PAUSE_S)
            self._processes[i] = self._start()

    def _stop_all(self) -> None:
        """SIGTERM to each (uvicorn finishes the requests in flight), SIGKILL to any left after
        the grace period."""
        for running in self._processes:
            if running.process.is_alive() and running.process.pid is not None:
                _signal(running.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for running in self._processes:
            process = running.process
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
