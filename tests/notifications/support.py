"""Real servers on loopback ports for the notification tests: an HTTP receiver of webhooks (and
of SMS provider calls), an SMTP server; and the signature verifier proposed to merchants."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def verify(header: str, body: bytes, secret: str, tolerance_s: int = 300) -> bool:
    """Check a `Paygate-Signature` header with the standard library alone (the README's)."""
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamp = next((v for k, v in pairs if k == "t"), "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance_s:
        return False  # too old (or from the future): a replay
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in pairs if k == "v1")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class Behaviour:
    status: int = 200
    delay_s: float = 0.0
    fail_first: int = 0  # answer 500 to this many requests first
    seen: int = 0
    busy: int = 0  # requests being answered now
    peak: int = 0  # the most ever answered at once


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 in a thread of its own: records every request and answers
    each path as told (`behave`)."""

    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._answer(self.path)
                # Recorded before the answer goes out: once the sender has it, so does the test.
                receiver.requests.append(
                    Received(self.path, dict(self.headers.items()), body, status, time.time())
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting (a timeout, or it stopped)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def _answer(self, path: str) -> int:
        with self.lock:
            b = self.behaviours.setdefault(path.split("?", 1)[0], Behaviour())
            b.seen += 1
            b.busy += 1
            b.peak = max(b.peak, b.busy)
            failing = b.seen <= b.fail_first
        if b.delay_s:
            time.sleep(b.delay_s)
        with self.lock:
            b.busy -= 1
        return 500 if failing else b.status

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def behave(self, path: str, **kw: Any) -> None:
        self.behaviours[path] = Behaviour(**kw)

    def at(self, path: str, ok_only: bool = False) -> list[Received]:
        return [
            r for r in list(self.requests) if r.path == path and (not ok_only or r.status < 300)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.fail_first = 0  # answer "try again later" to this many messages first

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_first > 0:
            self.fail_first -= 1
            return "451 4.3.0 Try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a loopback port; `messages` is what arrived."""

    def __init__(self) -> None:
        self.inbox = _Inbox()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=free_port())

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return self.inbox.messages

    def start(self) -> str:
        self.controller.start()
        return f"smtp://127.0.0.1:{self.controller.port}?from=receipts@shop.example"

    def stop(self) -> None:
        self.controller.stop()


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until `check()` holds (polling), or fail."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.02)
