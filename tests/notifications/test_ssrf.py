"""Webhook URLs cannot reach the gateway's own network: private, loopback, link-local,
multicast and reserved targets are refused when the endpoint is saved and again on every
connection (after DNS resolution), unless `PAYGATE_WEBHOOK_ALLOW_PRIVATE` is set."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygate.config import Settings
from paygate.notifications.guard import (
    DestinationRefused,
    GuardedResolver,
    literal_refused,
    url_refused,
)
from paygate.notifications.models import new_secret
from paygate.notifications.webhooks import Job, Outcome, WebhookClient
from tests.conftest import make_settings
from tests.notifications.support import Receiver

REFUSED = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1:8443/hook",
    "http://10.0.0.5/hook",
    "http://10.255.1.1:8080/hook",
    "http://172.16.3.4/hook",
    "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.251/hook",
    "http://localhost/hook",
    "http://localhost:8080/hook",
    "http://api.localhost/hook",
]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)  # the default: private targets refused


async def test_the_api_refuses_non_public_targets(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for url in REFUSED:
        r = await client.post(
            "/v1/webhook_endpoints", json={"url": url, "enabled_events": ["*"]}, headers=auth
        )
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["param"] == "url" and r.json()["error"]["code"] == "url_invalid"
    ok = await client.post(
        "/v1/webhook_endpoints",
        json={"url": "https://93.184.216.34/hook", "enabled_events": ["*"]},
        headers=auth,
    )
    assert ok.status_code == 201, ok.text
    moved = await client.post(
        f"/v1/webhook_endpoints/{ok.json()['id']}", json={"url": REFUSED[6]}, headers=auth
    )
    assert moved.status_code == 400 and moved.json()["error"]["param"] == "url"


async def test_the_switch_allows_private_targets() -> None:
    for url in REFUSED:
        assert await url_refused(url, allow_private=False) is not None, url
        assert await url_refused(url, allow_private=True) is None, url
    # The switch never allows what is not an http(s) URL.
    assert await url_refused("file:///etc/passwd", allow_private=True) is not None


async def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_when_sending() -> None:
    assert await url_refused("https://hooks.example.invalid/x", allow_private=False) is None


async def test_every_connection_is_checked_after_resolution() -> None:
    guarded = GuardedResolver()
    for host in ("127.0.0.1", "::1", "10.1.2.3", "169.254.169.254", "localhost"):
        with pytest.raises(DestinationRefused):
            await guarded.resolve(host, 80, socket.AF_UNSPEC)
    with pytest.raises(OSError) as raised:
        await guarded.resolve("name.invalid", 80)
    assert not isinstance(raised.value, DestinationRefused)
    # aiohttp never asks a resolver about an address written in the URL: checked apart.
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "fe80::1", "10.0.0.5"):
        assert literal_refused(host) is not None, host
    assert literal_refused("93.184.216.34") is None and literal_refused("hooks.example") is None


async def test_a_name_that_resolves_to_an_internal_address_is_refused_when_sending(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name passed the API's check once; now it resolves to this machine (DNS rebinding).
    port = receiver.server.server_address[1]

    async def rebound(host: str, port_: int, **_: Any) -> list[Any]:
        assert host == "hooks.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebound)
    job = Job("whq_1", "evt_1", "we_1", 0, 0.0, f"http://hooks.example:{port}/in", b"{}", ("s",))
    outcome = await send_once(job, allow_private=False)
    assert not outcome.ok and outcome.response_status is None
    assert outcome.error == "refused: the host hooks.example resolves to a loopback address"
    assert receiver.requests == []

    outcome = await send_once(job, allow_private=True)  # the same look-up, let through
    assert outcome.ok and [r.path for r in receiver.requests] == ["/in"]
    assert receiver.requests[0].headers["Host"] == f"hooks.example:{port}"


async def test_a_send_to_a_refused_target_never_connects(receiver: Receiver) -> None:
    job = Job(
        delivery_id="whq_1",
        event_id="evt_1",
        endpoint_id="we_1",
        attempts=0,
        give_up_at=0.0,
        url=receiver.url("/internal"),
        body=b"{}",
        secrets=(new_secret(),),
    )
    outcome = await send_once(job, allow_private=False)
    assert not outcome.ok and outcome.response_status is None
    assert outcome.error is not None and outcome.error.startswith("refused:")
    assert (
        "127.0.0.1" in outcome.error and str(receiver.server.server_address[1]) not in outcome.error
    )
    assert receiver.requests == []

    outcome = await send_once(job, allow_private=True)
    assert outcome.ok and outcome.response_status == 200
    assert [r.path for r in receiver.requests] == ["/internal"]


async def send_once(job: Job, *, allow_private: bool) -> Outcome:
    client = WebhookClient(allow_private=allow_private, timeout_s=2)
    try:
        return await client.send(job)
    finally:
        await client.aclose()


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.behave("/moved", status=307)
    client = WebhookClient(allow_private=True, timeout_s=2)
    job = Job("whq_1", "evt_1", "we_1", 0, 0.0, receiver.url("/moved"), b"{}", (new_secret(),))
    try:
        outcome = await client.send(job)
    finally:
        await client.aclose()
    assert not outcome.ok and outcome.response_status == 307
    assert outcome.error is not None and "redirects are not followed" in outcome.error
    assert [r.path for r in receiver.requests] == ["/moved"]
